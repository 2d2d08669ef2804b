package install_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/internal/build/install"
	"github.com/smi2istio/smi2istio/internal/localcp"
	"github.com/smi2istio/smi2istio/internal/testing/testenv"
)

// dist/install.yaml (config/default) applies to a bare cluster: CRDs established, the manager
// Deployment, its RBAC, the metrics-reader ClusterRole and the webhook and metrics Services accepted.
func TestInstallManifestApplies(t *testing.T) {
	objs, err := install.Objects(filepath.Join(testenv.RepoRoot(), "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	cp, err := localcp.Start("")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cp.Stop() }()
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = apiextv1.AddToScheme(scheme)
	c, err := client.New(cp.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.GetKind()]++
	}
	// Istio comes first: its namespace, where the manifest grants the read of mesh configs.
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "istio-system"}}); err != nil {
		t.Fatal(err)
	}
	if err := install.Apply(ctx, c, objs); err != nil {
		t.Error(err)
	}
	for kind, n := range map[string]int{"CustomResourceDefinition": 6, "Deployment": 1, "Service": 2, "ServiceAccount": 1,
		"ClusterRole": 3, "ClusterRoleBinding": 1, "Role": 1, "RoleBinding": 2, "Namespace": 1} {
		if kinds[kind] != n {
			t.Errorf("%d %s in the manifest, want %d", kinds[kind], kind, n)
		}
	}

	deadline := time.Now().Add(time.Minute)
	var crds apiextv1.CustomResourceDefinitionList
	for {
		if err := c.List(ctx, &crds); err != nil {
			t.Fatal(err)
		}
		established := 0
		for _, crd := range crds.Items {
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextv1.Established && cond.Status == apiextv1.ConditionTrue {
					established++
				}
			}
		}
		if established == 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 6 CRDs established", established)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, crd := range crds.Items {
		if conv := crd.Spec.Conversion; conv != nil && conv.Strategy == apiextv1.WebhookConverter {
			svc := conv.Webhook.ClientConfig.Service
			if svc == nil || svc.Name != "smi2istio-webhook-service" || svc.Namespace != "smi2istio-system" {
				t.Errorf("CRD %s converts through %+v, want the installed webhook Service", crd.Name, conv.Webhook.ClientConfig)
			}
		}
	}
	svc := &corev1.Service{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "smi2istio-system", Name: "smi2istio-webhook-service"}, svc); err != nil {
		t.Errorf("webhook Service: %v", err)
	}
	dep := &appsv1.Deployment{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "smi2istio-system", Name: "smi2istio-controller-manager"}, dep); err != nil {
		t.Fatal(err)
	}
	pod := dep.Spec.Template.Spec
	sc := pod.Containers[0].SecurityContext
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot ||
		sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("the manager must run non-root, read-only, without privilege escalation: %+v %+v", pod.SecurityContext, sc)
	}
	if pod.ServiceAccountName != "smi2istio-controller-manager" {
		t.Errorf("service account %q", pod.ServiceAccountName)
	}
	if !strings.Contains(strings.Join(pod.Containers[0].Args, " "), "--local-control-plane=never") {
		t.Errorf("in a cluster the manager must never start a local control plane: %v", pod.Containers[0].Args)
	}
}

func TestWithImage(t *testing.T) {
	data, err := install.Render(filepath.Join(testenv.RepoRoot(), "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := install.WithImage(data, "registry.example/smi2istio:dev")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "image: registry.example/smi2istio:dev\n") || strings.Contains(string(out), "ghcr.io/smi2istio") {
		t.Errorf("image not replaced")
	}
}
