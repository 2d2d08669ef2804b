package controllers

import (
	"context"
	"fmt"
	"sort"
	"strings"

	accessv1alpha2 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/access/v1alpha2"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/smi2istio/smi2istio/internal/cache"
	"github.com/smi2istio/smi2istio/internal/membership"
	"github.com/smi2istio/smi2istio/translate"
)

// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=gateways,verbs=get;list;watch

// gatewayServiceAccountAnnotation names the ServiceAccount of a Gateway's pods when it is not the
// Gateway's name (Istio's GatewaySA).
const gatewayServiceAccountAnnotation = "gateway.istio.io/service-account"

// translateAmbient translates a destination of an ambient namespace (DESIGN §10): ztunnel's L4
// policies, or the waypoint's policies for its Services and ztunnel admitting only the waypoint.
// note tells the status which: "ambient data plane, ...".
func (r *AccessReconciler) translateAmbient(ctx context.Context, req reconcile.Request, targets []*accessv1alpha2.TrafficTarget, mesh translate.Mesh, rootNamespaces []string) (*translate.AccessResult, string, error) {
	base, err := r.fetch(ctx, req.Namespace, req.Name, targets, mesh)
	if err != nil {
		return nil, "", err
	}
	in := translate.AmbientAccessInput{AccessInput: base}
	ns := &corev1.Namespace{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: req.Namespace}, ns); err != nil {
		return nil, "", fmt.Errorf("get namespace %s: %w", req.Namespace, err)
	}
	in.NamespaceLabels = ns.Labels
	var svcs corev1.ServiceList
	if err := r.Client.List(ctx, &svcs, client.InNamespace(req.Namespace)); err != nil {
		return nil, "", fmt.Errorf("list the Services of %s: %w", req.Namespace, err)
	}
	for i := range svcs.Items {
		in.Services = append(in.Services, &svcs.Items[i])
	}
	if in.ServiceBackends, err = r.serviceBackends(ctx, req.Namespace, mesh); err != nil {
		return nil, "", err
	}
	note := "ambient data plane, no waypoint (ztunnel enforces identities and ports only)"
	if key := translate.DestinationWaypoint(in.Services, ns.Labels, base.Workloads, req.Name); key != "" {
		w, why, err := r.waypoint(ctx, key, rootNamespaces)
		if err != nil {
			return nil, "", err
		}
		if w != nil {
			in.Waypoint = w
			note = fmt.Sprintf("ambient data plane, through waypoint %s (ServiceAccount %s)", key, w.ServiceAccount)
		} else {
			note = fmt.Sprintf("ambient data plane; waypoint %s is not used: %s, so nothing passes through it (ztunnel enforces identities and ports only)", key, why)
		}
	}
	res, err := translate.TranslateAmbientAccess(in)
	if err != nil {
		return nil, "", err
	}
	out := res.AccessResult
	out.SelectorFindings = append(append([]translate.Finding(nil), out.SelectorFindings...), res.ServiceFindings...)
	for _, w := range base.Workloads {
		if w.ServiceAccount == req.Name && w.Labels[membership.DataplaneModeLabel] == "none" {
			// ztunnel leaves the pod alone: nothing smi2istio writes is enforced for it.
			out.SelectorFindings = append(out.SelectorFindings, translate.Finding{Field: "spec.destination", Reason: ReasonNotCaptured,
				Message: fmt.Sprintf("%s runs as ServiceAccount %s/%s with %s=none: ztunnel does not capture it, so every source reaches it whatever the TrafficTargets say (remove the label)", w.Name, req.Namespace, req.Name, membership.DataplaneModeLabel)})
		}
	}
	return &out, note, nil
}

// waypoint reads a waypoint: its Gateway must exist with class istio-waypoint, and its
// deny-by-default policy must be smi2istio's and in force (BaselineReconciler writes it in member
// namespaces in Enforcing mode): without it the waypoint allows every request it has no policy for
// (direct to a pod), and admitting its identity would let those through. nil and why when not.
func (r *AccessReconciler) waypoint(ctx context.Context, key string, rootNamespaces []string) (*translate.Waypoint, string, error) {
	ns, name, _ := strings.Cut(key, "/")
	if !r.gateways {
		return nil, "the Gateway API's Gateway CRD is not served", nil
	}
	// Read uncached, once: the cache keeps a Gateway's class only, and its listeners decide too.
	gw := &unstructured.Unstructured{}
	gw.SetGroupVersionKind(GatewayGVK)
	err := r.reader.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, gw)
	class, _, _ := unstructured.NestedString(gw.Object, "spec", "gatewayClassName")
	switch {
	case apierrors.IsNotFound(err):
		return nil, "its Gateway does not exist", nil
	case err != nil:
		return nil, "", fmt.Errorf("get waypoint %s: %w", key, err)
	case class != WaypointClass:
		return nil, fmt.Sprintf("its Gateway's class is %q, not %s", class, WaypointClass), nil
	case !gw.GetDeletionTimestamp().IsZero():
		return nil, "its Gateway is being deleted", nil
	}
	sa := gw.GetAnnotations()[gatewayServiceAccountAnnotation]
	if sa == "" {
		sa = name
	}
	// Routes, ServiceEntries and policies of other namespaces attach to a waypoint whose listeners
	// accept them (allowedRoutes): the waypoint would then tunnel their traffic to our pods as
	// itself.
	listeners, _, _ := unstructured.NestedSlice(gw.Object, "spec", "listeners")
	for _, l := range listeners {
		from, _, _ := unstructured.NestedString(l.(map[string]any), "allowedRoutes", "namespaces", "from")
		if from != "" && from != "Same" {
			return nil, fmt.Sprintf("its listeners accept routes from other namespaces (allowedRoutes.namespaces.from: %s), whose traffic it would bring to the destination as itself", from), nil
		}
	}
	ap := cache.New(AuthorizationPolicyGVK)
	err = r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: translate.WaypointBaselinePrefix + name}, ap)
	if apierrors.IsNotFound(err) {
		return nil, fmt.Sprintf("its deny-by-default AuthorizationPolicy %s%s is missing (namespace %s must be a mesh member in Enforcing mode)", translate.WaypointBaselinePrefix, name, ns), nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("get the baseline of waypoint %s: %w", key, err)
	}
	set, err := waypointBaselineSet(ns, nil, false, nil)
	if err != nil {
		return nil, "", err
	}
	if !set.Owns(ap) || !ap.GetDeletionTimestamp().IsZero() || !enforcedByIstio(ap) {
		return nil, fmt.Sprintf("its deny-by-default AuthorizationPolicy %s%s is not smi2istio's, is being deleted or is not enforced", translate.WaypointBaselinePrefix, name), nil
	}
	want, err := waypointBaselineSpec(ns, name)
	if err != nil {
		return nil, "", err
	}
	if ap.SpecHash() != want {
		return nil, waypointBaselineWidened(name), nil
	}
	// An ALLOW policy of someone else's attached to the waypoint (its Gateway, or the istio-waypoint
	// GatewayClass from a root namespace) is ORed into every chain of it, the direct-to-pod one
	// included: what it allows would pass the waypoint, which ztunnel admits.
	if why, err := r.foreignWaypointPolicy(ctx, ns, name, want, rootNamespaces); err != nil || why != "" {
		return nil, why, err
	}
	return &translate.Waypoint{Namespace: ns, Name: name, ServiceAccount: sa}, "", nil
}

// waypointBaselineWidened says why waypoint name is not used when its baseline holds another spec.
func waypointBaselineWidened(name string) string {
	return fmt.Sprintf("its deny-by-default AuthorizationPolicy %s%s does not hold the spec smi2istio wrote (it was widened, and an admission step keeps it so: see the operator's log)", translate.WaypointBaselinePrefix, name)
}

// foreignWaypointPolicy names an ALLOW (or CUSTOM) AuthorizationPolicy smi2istio did not write that
// is attached to waypoint ns/name or to the istio-waypoint GatewayClass (read uncached: the cache
// keeps no targetRefs); "" when there is none. baseline is the hash of the spec smi2istio writes for
// the waypoint's own baseline, which is skipped only when it holds that spec.
func (r *AccessReconciler) foreignWaypointPolicy(ctx context.Context, ns, name, baseline string, rootNamespaces []string) (string, error) {
	for _, where := range append([]string{ns}, rootNamespaces...) {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(AuthorizationPolicyGVK.GroupVersion().WithKind("AuthorizationPolicyList"))
		if err := r.reader.List(ctx, list, client.InNamespace(where)); err != nil {
			return "", fmt.Errorf("list AuthorizationPolicies in %s: %w", where, err)
		}
		for i := range list.Items {
			ap := &list.Items[i]
			if action, _, _ := unstructured.NestedString(ap.Object, "spec", "action"); action == "DENY" || action == "AUDIT" {
				continue // restricts, never allows
			}
			if ap.GetNamespace() == ns && ap.GetName() == translate.WaypointBaselinePrefix+name && ap.GetLabels()[translate.ManagedByLabel] == translate.ManagedByValue {
				// Ours, if it holds what we write (the cache may not have seen a widening yet).
				if spec, err := cache.SpecHash(ap.Object["spec"]); err == nil && spec == baseline {
					continue
				}
				return waypointBaselineWidened(name), nil
			}
			refs, _, _ := unstructured.NestedSlice(ap.Object, "spec", "targetRefs")
			if ref, ok, _ := unstructured.NestedMap(ap.Object, "spec", "targetRef"); ok {
				refs = append(refs, ref)
			}
			for _, ref := range refs {
				m, _ := ref.(map[string]any)
				kind, _ := m["kind"].(string)
				refName, _ := m["name"].(string)
				if (kind == "Gateway" && refName == name && ap.GetNamespace() == ns) || (kind == "GatewayClass" && refName == WaypointClass) {
					return fmt.Sprintf("AuthorizationPolicy %s/%s, which smi2istio did not write, is attached to it (%s %s) and would let what it allows through", ap.GetNamespace(), ap.GetName(), kind, refName), nil
				}
			}
		}
	}
	return "", nil
}

// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=tlsroutes;udproutes,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list

// serviceBackends is where each Service of an ambient namespace may send a request, for
// translate.AmbientAccessInput.ServiceBackends: the Gateway API routes attached to it
// (translate.RouteSends: backends, mirrors; a route smi2istio did not write counts as unknown), and,
// as unknown, a VirtualService for its host (a waypoint applies those too) and an EndpointSlice
// for it that Kubernetes' controllers did not write (its endpoints are not told by the selector).
// Routes and slices are read uncached (the cache keeps a route's parents only); anything that
// cannot be read fails the reconcile, never a guess.
func (r *AccessReconciler) serviceBackends(ctx context.Context, ns string, mesh translate.Mesh) (map[string][]string, error) {
	out := map[string][]string{}
	for _, gvk := range r.routeKinds {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := r.reader.List(ctx, list, client.InNamespace(ns)); err != nil {
			return nil, fmt.Errorf("list %s in %s: %w", gvk.Kind, ns, err)
		}
		for i := range list.Items {
			for parent, backends := range translate.RouteSends(&list.Items[i]) {
				if pNS, name, _ := strings.Cut(parent, "/"); pNS == ns {
					out[name] = append(out[name], backends...)
				}
			}
		}
	}
	vss := cache.NewList(VirtualServiceGVK)
	if err := r.Client.List(ctx, vss, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("list VirtualServices: %w", err)
	}
	for _, vs := range vss.Objects() {
		for _, h := range vs.Hosts() {
			if name, hostNS, ok := serviceOfHost(qualifyHost(h, vs.GetNamespace(), mesh), mesh); ok && hostNS == ns {
				out[name] = append(out[name], fmt.Sprintf("VirtualService %s/%s (routes of Istio's API are not modelled)", vs.GetNamespace(), vs.GetName()))
			}
		}
	}
	var slices discoveryv1.EndpointSliceList
	if err := r.reader.List(ctx, &slices, client.InNamespace(ns), client.HasLabels{discoveryv1.LabelServiceName}); err != nil {
		return nil, fmt.Errorf("list EndpointSlices in %s: %w", ns, err)
	}
	for _, es := range slices.Items {
		switch es.Labels[discoveryv1.LabelManagedBy] {
		case "endpointslice-controller.k8s.io", "endpointslicemirroring-controller.k8s.io":
			continue
		}
		name := es.Labels[discoveryv1.LabelServiceName]
		out[name] = append(out[name], fmt.Sprintf("EndpointSlice %s (endpoints Kubernetes did not derive from the selector)", es.Name))
	}
	for k, v := range out {
		sort.Strings(v)
		out[k] = v
	}
	return out, nil
}
