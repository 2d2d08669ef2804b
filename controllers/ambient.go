package controllers

import (
	"context"
	"fmt"
	"sort"
	"strings"

	accessv1alpha2 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/access/v1alpha2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/smi2istio/smi2istio/internal/cache"
	"github.com/smi2istio/smi2istio/translate"
)

// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=gateways,verbs=get;list;watch

// gatewayServiceAccountAnnotation names the ServiceAccount of a Gateway's pods when it is not the
// Gateway's name (Istio's GatewaySA).
const gatewayServiceAccountAnnotation = "gateway.istio.io/service-account"

// translateAmbient translates a destination of an ambient namespace (DESIGN §10): ztunnel's L4
// policies, or the waypoint's policies for its Services and ztunnel admitting only the waypoint.
// note tells the status which: "ambient data plane, ...".
func (r *AccessReconciler) translateAmbient(ctx context.Context, req reconcile.Request, targets []*accessv1alpha2.TrafficTarget, mesh translate.Mesh) (*translate.AccessResult, string, error) {
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
	if in.ServiceBackends, err = r.serviceBackends(ctx, req.Namespace); err != nil {
		return nil, "", err
	}
	note := "ambient data plane, no waypoint (ztunnel enforces identities and ports only)"
	if key := translate.DestinationWaypoint(in.Services, ns.Labels, base.Workloads, req.Name); key != "" {
		w, why, err := r.waypoint(ctx, key)
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
	return &out, note, nil
}

// waypoint reads a waypoint: its Gateway must exist with class istio-waypoint, and its
// deny-by-default policy must be smi2istio's and in force (BaselineReconciler writes it in member
// namespaces in Enforcing mode): without it the waypoint allows every request it has no policy for
// (direct to a pod), and admitting its identity would let those through. nil and why when not.
func (r *AccessReconciler) waypoint(ctx context.Context, key string) (*translate.Waypoint, string, error) {
	ns, name, _ := strings.Cut(key, "/")
	if !r.gateways {
		return nil, "the Gateway API's Gateway CRD is not served", nil
	}
	gw := cache.New(GatewayGVK)
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, gw)
	switch {
	case apierrors.IsNotFound(err):
		return nil, "its Gateway does not exist", nil
	case err != nil:
		return nil, "", fmt.Errorf("get waypoint %s: %w", key, err)
	case gw.Class() != WaypointClass:
		return nil, fmt.Sprintf("its Gateway's class is %q, not %s", gw.Class(), WaypointClass), nil
	case !gw.GetDeletionTimestamp().IsZero():
		return nil, "its Gateway is being deleted", nil
	}
	sa := gw.GetAnnotations()[gatewayServiceAccountAnnotation]
	if sa == "" {
		sa = name
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
	return &translate.Waypoint{Namespace: ns, Name: name, ServiceAccount: sa}, "", nil
}

// serviceBackends reads the Gateway API routes of a namespace (uncached: their rules are not kept
// by the cache): for each Service a route is attached to, the Services its rules send to. A route
// that cannot be read makes the reconcile fail (retried), never a guess.
func (r *AccessReconciler) serviceBackends(ctx context.Context, ns string) (map[string][]string, error) {
	out := map[string][]string{}
	for _, gvk := range r.routeKinds {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := r.reader.List(ctx, list, client.InNamespace(ns)); err != nil {
			return nil, fmt.Errorf("list %s in %s: %w", gvk.Kind, ns, err)
		}
		for i := range list.Items {
			u := &list.Items[i]
			backends := translate.RouteBackends(u)
			for _, parent := range translate.RouteParents(u) {
				if pNS, name, _ := strings.Cut(parent, "/"); pNS == ns {
					out[name] = append(out[name], backends...)
				}
			}
		}
	}
	for k, v := range out {
		sort.Strings(v)
		out[k] = v
	}
	return out, nil
}
