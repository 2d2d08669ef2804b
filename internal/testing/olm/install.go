package olm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"time"

	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/internal/certs"
)

// Labels OLM puts on what it creates for a CSV (ownerutil's owner labels).
const (
	OwnerLabel          = "olm.owner"
	OwnerNamespaceLabel = "olm.owner.namespace"
	OwnerKindLabel      = "olm.owner.kind"
)

// InstallBundle installs (or upgrades to) the bundle in namespace as OLM's InstallPlan and CSV
// install strategy do (see the package doc), and returns its Deployment as a process of pod, not
// started. RBAC of an earlier CSV of the same namespace is removed after the new one is granted, as
// when OLM deletes the replaced CSV. The webhook's CA is made anew, as OLM does for each CSV.
func InstallBundle(ctx context.Context, c client.Client, b *Bundle, namespace string, pod Pod) (*Running, error) {
	csv := b.CSV
	strategy := csv.Spec.InstallStrategy
	if strategy.StrategyName != operatorsv1alpha1.InstallStrategyNameDeployment {
		return nil, fmt.Errorf("CSV %s: install strategy %q, want deployment", csv.Name, strategy.StrategyName)
	}
	deps := strategy.StrategySpec.DeploymentSpecs
	if len(deps) != 1 {
		return nil, fmt.Errorf("CSV %s has %d deployments, the harness runs exactly 1", csv.Name, len(deps))
	}
	dep := deps[0]
	if err := ensureNamespace(ctx, c, namespace); err != nil {
		return nil, err
	}

	// The InstallPlan: the bundle's CRDs, created or updated as the bundle has them.
	for _, crd := range b.CRDs {
		if !owned(csv, crd.Name) {
			return nil, fmt.Errorf("CSV %s does not list CRD %s as owned", csv.Name, crd.Name)
		}
	}
	warnings, err := installCRDs(ctx, c, b.CRDs, csv.Name, namespace)
	if err != nil {
		return nil, err
	}
	// The olm-operator's requirement check of the CSV, before it installs anything of it.
	if err := requirements(ctx, c, csv); err != nil {
		return nil, err
	}

	// The CSV's ServiceAccounts and RBAC.
	owner := ownerLabels(csv.Name, namespace)
	grants := map[string]bool{dep.Spec.Template.Spec.ServiceAccountName: true}
	for _, p := range strategy.StrategySpec.ClusterPermissions {
		grants[p.ServiceAccountName] = true
	}
	for _, p := range strategy.StrategySpec.Permissions {
		grants[p.ServiceAccountName] = true
	}
	for sa := range grants {
		if sa == "" {
			continue
		}
		if err := createOrKeep(ctx, c, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: namespace}}); err != nil {
			return nil, err
		}
	}
	for i, p := range strategy.StrategySpec.ClusterPermissions {
		name := fmt.Sprintf("%s-%s-cluster-%d", csv.Name, p.ServiceAccountName, i)
		role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: owner}, Rules: p.Rules}
		binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: owner},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: p.ServiceAccountName, Namespace: namespace}}}
		if err := replace(ctx, c, role); err != nil {
			return nil, err
		}
		if err := replace(ctx, c, binding); err != nil {
			return nil, err
		}
	}
	for i, p := range strategy.StrategySpec.Permissions {
		name := fmt.Sprintf("%s-%s-%d", csv.Name, p.ServiceAccountName, i)
		role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: owner}, Rules: p.Rules}
		binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: owner},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: p.ServiceAccountName, Namespace: namespace}}}
		if err := replace(ctx, c, role); err != nil {
			return nil, err
		}
		if err := replace(ctx, c, binding); err != nil {
			return nil, err
		}
	}

	// The other bundle objects, as they are (namespaced ones in the operator's namespace).
	for _, o := range b.Objects {
		o = o.DeepCopy()
		if o.GetNamespace() == "" && namespacedKind(o.GetKind()) {
			o.SetNamespace(namespace)
		}
		labels := o.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		for k, v := range owner {
			labels[k] = v
		}
		o.SetLabels(labels)
		if err := replace(ctx, c, o); err != nil {
			return nil, err
		}
	}

	run, err := Process(dep.Name, dep.Spec, namespace, pod)
	if err != nil {
		return nil, err
	}
	run.InstallWarnings = warnings

	// The webhooks: Service, certificate (mounted where OLM mounts it), the CRDs' conversion.
	for _, w := range csv.Spec.WebhookDefinitions {
		if w.DeploymentName != dep.Name {
			return nil, fmt.Errorf("webhook %s names deployment %s, the CSV has %s", w.GenerateName, w.DeploymentName, dep.Name)
		}
		if err := installWebhook(ctx, c, csv, w, dep, namespace, run); err != nil {
			return nil, err
		}
	}

	// The replaced CSV's RBAC goes with it.
	if err := removeOthers(ctx, c, csv.Name, namespace); err != nil {
		return nil, err
	}
	return run, nil
}

// installWebhook does for one webhook definition what OLM's certresources.go and webhook.go do.
func installWebhook(ctx context.Context, c client.Client, csv *operatorsv1alpha1.ClusterServiceVersion, w operatorsv1alpha1.WebhookDescription,
	dep operatorsv1alpha1.StrategyDeploymentSpec, namespace string, run *Running) error {
	if w.Type != operatorsv1alpha1.ConversionWebhook {
		return fmt.Errorf("webhook %s: type %s: the harness wires conversion webhooks only", w.GenerateName, w.Type)
	}
	if !singleton(csv) {
		return fmt.Errorf("CSV %s: conversion webhooks need AllNamespaces as the only install mode (OLM refuses otherwise)", csv.Name)
	}
	if len(w.ConversionCRDs) == 0 {
		return fmt.Errorf("webhook %s: no conversionCRDs", w.GenerateName)
	}
	target := w.ContainerPort
	if w.TargetPort != nil {
		target = int32(w.TargetPort.IntValue())
	}
	addr, ok := run.Listen[target]
	if !ok {
		return fmt.Errorf("webhook %s: targetPort %d is no port the deployment's container listens on (its args)", w.GenerateName, target)
	}
	svcName := w.DomainName() + "-service"
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: svcName, Namespace: namespace, Labels: ownerLabels(csv.Name, namespace)},
		Spec: corev1.ServiceSpec{Selector: dep.Spec.Selector.MatchLabels,
			Ports: []corev1.ServicePort{{Name: fmt.Sprint(w.ContainerPort), Port: w.ContainerPort, TargetPort: intstr.FromInt32(target)}}}}
	if err := replace(ctx, c, svc); err != nil {
		return err
	}
	// OLM's serving certificate names the Service; 127.0.0.1 stands in for it here.
	bundle, err := certs.SelfSigned([]string{svcName + "." + namespace, svcName + "." + namespace + ".svc"},
		[]net.IP{net.ParseIP("127.0.0.1")}, time.Now(), 730*24*time.Hour)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(bundle.CAPEM)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: svcName + "-cert", Namespace: namespace,
		Labels: ownerLabels(csv.Name, namespace), Annotations: map[string]string{"olmcahash": hex.EncodeToString(sum[:])}},
		Type: corev1.SecretTypeTLS, Data: map[string][]byte{"tls.crt": bundle.CertPEM, "tls.key": bundle.KeyPEM}}
	if err := replace(ctx, c, secret); err != nil {
		return err
	}
	// The Role OLM adds so that the ServiceAccount may read its certificate's Secret.
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: secret.Name, Namespace: namespace, Labels: ownerLabels(csv.Name, namespace)},
		Rules: []rbacv1.PolicyRule{{Verbs: []string{"get"}, APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{secret.Name}}}}
	binding := &rbacv1.RoleBinding{ObjectMeta: role.ObjectMeta,
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: run.ServiceAccount, Namespace: namespace}}}
	if err := replace(ctx, c, role); err != nil {
		return err
	}
	if err := replace(ctx, c, binding); err != nil {
		return err
	}
	// The kubelet mounts the Secret's tls.crt and tls.key there.
	if err := bundle.WriteServing(run.Pod.HostPath(WebhookCertDir)); err != nil {
		return err
	}
	path := "/"
	if w.WebhookPath != nil {
		path = *w.WebhookPath
	}
	url := "https://" + addr + path
	for _, name := range w.ConversionCRDs {
		if !owned(csv, name) {
			return fmt.Errorf("CSV %s does not own CRD %s, which its conversion webhook names", csv.Name, name)
		}
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			crd := &apiextv1.CustomResourceDefinition{}
			if err := c.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
				return fmt.Errorf("get CRD %s of the conversion webhook: %w", name, err)
			}
			if crd.Spec.PreserveUnknownFields {
				return fmt.Errorf("CRD %s preserves unknown fields: OLM refuses a conversion webhook for it", name)
			}
			crd.Spec.Conversion = &apiextv1.CustomResourceConversion{
				Strategy: apiextv1.WebhookConverter,
				Webhook: &apiextv1.WebhookConversion{
					ClientConfig:             &apiextv1.WebhookClientConfig{URL: ptr.To(url), CABundle: bundle.CAPEM},
					ConversionReviewVersions: w.AdmissionReviewVersions,
				},
			}
			return c.Update(ctx, crd)
		})
		if err != nil {
			return fmt.Errorf("wire the conversion webhook of CRD %s: %w", name, err)
		}
	}
	return nil
}

// InstallManifest applies an install manifest (dist/install.yaml) as `kubectl apply
// --server-side` does, except its Deployment, which it returns as a process of pod (not started).
// The CRDs' conversion webhook, pointed at a Service in the manifest, points at the process
// instead (URL; caBundle as the manifest has it).
func InstallManifest(ctx context.Context, c client.Client, objs []*unstructured.Unstructured, pod Pod) (*Running, error) {
	var dep *appsv1.Deployment
	for _, o := range objs {
		if o.GetKind() != "Deployment" {
			continue
		}
		if dep != nil {
			return nil, fmt.Errorf("the manifest has more than one Deployment (%s, %s)", dep.Name, o.GetName())
		}
		dep = &appsv1.Deployment{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, dep); err != nil {
			return nil, fmt.Errorf("decode Deployment %s: %w", o.GetName(), err)
		}
	}
	if dep == nil {
		return nil, errors.New("the manifest has no Deployment")
	}
	run, err := Process(dep.Name, dep.Spec, dep.Namespace, pod)
	if err != nil {
		return nil, err
	}
	for _, o := range objs {
		if o.GetKind() == "Deployment" {
			continue
		}
		o = o.DeepCopy()
		if o.GetKind() == "CustomResourceDefinition" {
			if err := pointConversionAt(o, objs, run, dep); err != nil {
				return nil, err
			}
		}
		//nolint:staticcheck // SSA of an unstructured object, as kubectl apply --server-side does.
		if err := c.Patch(ctx, o, client.Apply, client.FieldOwner("kubectl"), client.ForceOwnership, client.FieldValidation("Strict")); err != nil {
			return nil, fmt.Errorf("apply %s %s: %w", o.GetKind(), o.GetName(), err)
		}
	}
	return run, nil
}

// pointConversionAt replaces a CRD's conversion webhook Service by the URL of the process behind it:
// the Service of the manifest, its port's targetPort, resolved on the container.
func pointConversionAt(o *unstructured.Unstructured, objs []*unstructured.Unstructured, run *Running, dep *appsv1.Deployment) error {
	ref, found, _ := unstructured.NestedMap(o.Object, "spec", "conversion", "webhook", "clientConfig", "service")
	if !found {
		return nil
	}
	path, _ := ref["path"].(string)
	port := int64(443)
	if p, ok := ref["port"].(int64); ok {
		port = p
	}
	var svc *corev1.Service
	for _, s := range objs {
		if s.GetKind() == "Service" && s.GetName() == ref["name"] && s.GetNamespace() == ref["namespace"] {
			svc = &corev1.Service{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(s.Object, svc); err != nil {
				return fmt.Errorf("decode Service %s: %w", s.GetName(), err)
			}
		}
	}
	if svc == nil {
		return fmt.Errorf("CRD %s: its conversion webhook's Service %s/%s is not in the manifest", o.GetName(), ref["namespace"], ref["name"])
	}
	var addr string
	for _, p := range svc.Spec.Ports {
		if int64(p.Port) != port {
			continue
		}
		target := p.TargetPort.String()
		if p.TargetPort.IntValue() == 0 && p.TargetPort.Type == intstr.Int {
			target = fmt.Sprint(p.Port)
		}
		n, err := containerPort(dep.Spec.Template.Spec.Containers[0], target)
		if err != nil {
			return fmt.Errorf("CRD %s: Service %s port %d: %w", o.GetName(), svc.Name, port, err)
		}
		addr = run.Listen[n]
	}
	if addr == "" {
		return fmt.Errorf("CRD %s: Service %s's port %d leads to no port the deployment's args listen on", o.GetName(), svc.Name, port)
	}
	if dep.Namespace != svc.Namespace || !selects(svc.Spec.Selector, dep.Spec.Template.Labels) {
		return fmt.Errorf("CRD %s: Service %s/%s does not select the deployment's pods", o.GetName(), svc.Namespace, svc.Name)
	}
	unstructured.RemoveNestedField(o.Object, "spec", "conversion", "webhook", "clientConfig", "service")
	return unstructured.SetNestedField(o.Object, "https://"+addr+path, "spec", "conversion", "webhook", "clientConfig", "url")
}

func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func ownerLabels(csvName, namespace string) map[string]string {
	return map[string]string{OwnerLabel: csvName, OwnerNamespaceLabel: namespace, OwnerKindLabel: operatorsv1alpha1.ClusterServiceVersionKind}
}

func owned(csv *operatorsv1alpha1.ClusterServiceVersion, crd string) bool {
	for _, o := range csv.Spec.CustomResourceDefinitions.Owned {
		if o.Name == crd {
			return true
		}
	}
	return false
}

// singleton: AllNamespaces is the only supported install mode (OLM's isSingletonOperator).
func singleton(csv *operatorsv1alpha1.ClusterServiceVersion) bool {
	all := false
	for _, m := range csv.Spec.InstallModes {
		if m.Type == operatorsv1alpha1.InstallModeTypeAllNamespaces {
			all = m.Supported
		} else if m.Supported {
			return false
		}
	}
	return all
}

func namespacedKind(kind string) bool {
	switch kind {
	case "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Namespace", "PriorityClass", "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration":
		return false
	}
	return true
}

func ensureNamespace(ctx context.Context, c client.Client, name string) error {
	return createOrKeep(ctx, c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
}

func createOrKeep(ctx context.Context, c client.Client, o client.Object) error {
	if err := c.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create %T %s: %w", o, o.GetName(), err)
	}
	return nil
}

// replace creates o, or updates the existing object to o.
func replace(ctx context.Context, c client.Client, o client.Object) error {
	err := c.Create(ctx, o)
	if !apierrors.IsAlreadyExists(err) {
		if err != nil {
			return fmt.Errorf("create %T %s: %w", o, o.GetName(), err)
		}
		return nil
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur := o.DeepCopyObject().(client.Object)
		if err := c.Get(ctx, client.ObjectKeyFromObject(o), cur); err != nil {
			return err
		}
		o.SetResourceVersion(cur.GetResourceVersion())
		if svc, ok := o.(*corev1.Service); ok { // the apiserver's allocations stay
			svc.Spec.ClusterIP, svc.Spec.ClusterIPs = cur.(*corev1.Service).Spec.ClusterIP, cur.(*corev1.Service).Spec.ClusterIPs
		}
		if err := c.Update(ctx, o); err != nil {
			return fmt.Errorf("update %T %s: %w", o, o.GetName(), err)
		}
		return nil
	})
}

// removeOthers deletes the RBAC OLM created for another CSV in the namespace (the replaced one).
func removeOthers(ctx context.Context, c client.Client, csvName, namespace string) error {
	lists := []client.ObjectList{&rbacv1.ClusterRoleList{}, &rbacv1.ClusterRoleBindingList{}, &rbacv1.RoleList{}, &rbacv1.RoleBindingList{}}
	for _, l := range lists {
		if err := c.List(ctx, l, client.MatchingLabels{OwnerNamespaceLabel: namespace, OwnerKindLabel: operatorsv1alpha1.ClusterServiceVersionKind}); err != nil {
			return err
		}
		items, err := metaItems(l)
		if err != nil {
			return err
		}
		for _, o := range items {
			if o.GetLabels()[OwnerLabel] == csvName {
				continue
			}
			if err := c.Delete(ctx, o); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("delete %T %s of the replaced CSV: %w", o, o.GetName(), err)
			}
		}
	}
	return nil
}

func metaItems(l client.ObjectList) ([]client.Object, error) {
	var out []client.Object
	switch l := l.(type) {
	case *rbacv1.ClusterRoleList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *rbacv1.ClusterRoleBindingList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *rbacv1.RoleList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *rbacv1.RoleBindingList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	default:
		return nil, fmt.Errorf("unexpected list %T", l)
	}
	return out, nil
}
