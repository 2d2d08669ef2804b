package offline

// Ambient namespaces and Gateway API routes (DESIGN §10), as the operator translates them:
// controllers/config.go (State.Ambient, GatewayRoutes), controllers/trafficsplit.go (translate),
// controllers/ambient.go (translateAmbient, waypoint) and controllers/baseline.go (waypoint
// baselines).

import (
	"fmt"
	"sort"
	"strings"

	splitv1alpha4 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/split/v1alpha4"
	securityv1beta1 "istio.io/client-go/pkg/apis/security/v1beta1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/smi2istio/smi2istio/api/v1alpha1"
	"github.com/smi2istio/smi2istio/internal/membership"
	"github.com/smi2istio/smi2istio/translate"
)

const (
	gatewayGroup = "gateway.networking.k8s.io"
	// WaypointClass is the GatewayClass of Istio's waypoint proxies (controllers.WaypointClass).
	WaypointClass = "istio-waypoint"
	// gatewayServiceAccountAnnotation names the ServiceAccount of a Gateway's pods when it is not
	// the Gateway's name (Istio's GatewaySA; controllers/ambient.go).
	gatewayServiceAccountAnnotation = "gateway.istio.io/service-account"
)

// gatewayRouteKinds are the Gateway API routes a waypoint applies to a Service they are attached
// to (any version): where the Service sends, and a Conflict for a TrafficSplit of that Service.
var gatewayRouteKinds = map[string]bool{"HTTPRoute": true, "GRPCRoute": true, "TCPRoute": true}

// dataplanes decides each namespace's data plane as the operator's State does.
type dataplanes struct {
	mode     v1alpha1.DataplaneMode
	routeAPI v1alpha1.RouteAPI
	// labels of the input's Namespaces, and those that are ambient by them (Auto).
	labels    map[string]map[string]string
	ambientNS map[string]bool
}

func (s *Set) dataplanes(o Options) dataplanes {
	d := dataplanes{mode: o.Dataplane, routeAPI: o.RouteAPI, labels: map[string]map[string]string{}, ambientNS: map[string]bool{}}
	for i := range s.NamespaceObjects {
		ns := &s.NamespaceObjects[i]
		d.labels[ns.Name] = ns.Labels
		d.ambientNS[ns.Name] = membership.IsAmbient(ns)
	}
	return d
}

// ambient: the namespace's outputs are for ztunnel and waypoints (controllers State.Ambient).
func (d dataplanes) ambient(ns string) bool {
	switch d.mode {
	case v1alpha1.DataplaneAmbient:
		return true
	case v1alpha1.DataplaneSidecar:
		return false
	}
	return d.ambientNS[ns]
}

// gatewayRoutes: the namespace's TrafficSplits become Gateway API routes (State.GatewayRoutes).
func (d dataplanes) gatewayRoutes(ns string) bool {
	return d.ambient(ns) || d.routeAPI == v1alpha1.RouteGatewayAPI
}

func (d dataplanes) describe(ns string) string {
	if d.ambient(ns) {
		return "ambient"
	}
	return "sidecar"
}

// finding tells the report that a namespace is ambient, and why; sidecar namespaces are not named
// (the output is the one before ambient support).
func (d dataplanes) finding(ns string) (translate.Finding, bool) {
	if !d.ambient(ns) {
		return translate.Finding{}, false
	}
	const effect = "TrafficSplits become Gateway API routes; TrafficTargets become policies for ztunnel (identities and ports) or for the destination's waypoint"
	if d.mode == v1alpha1.DataplaneAmbient {
		return translate.Finding{Field: "spec.dataplaneMode", Reason: "Dataplane", Message: "ambient data plane (dataplaneMode Ambient): " + effect}, true
	}
	return translate.Finding{Field: fmt.Sprintf("metadata.labels[%s]", membership.DataplaneModeLabel), Reason: "Dataplane",
		Message: fmt.Sprintf("ambient data plane (%s=%s): %s", membership.DataplaneModeLabel, membership.DataplaneAmbient, effect)}, true
}

// waypointsOf are the names of the namespace's waypoints: Gateways of class istio-waypoint not
// being deleted (controllers BaselineReconciler.waypointsOf), sorted.
func (s *Set) waypointsOf(ns string) []string {
	var out []string
	for name, gw := range s.Gateways[ns] {
		if gw.Class == WaypointClass && !gw.Deleting {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// WaypointBaseline is the allow-nothing AuthorizationPolicy the operator writes for a waypoint of a
// member namespace in Enforcing mode (controllers/baseline.go waypointBaselineSet: labelled as the
// namespace's Waypoints), without its owner reference.
func WaypointBaseline(namespace, name string) *securityv1beta1.AuthorizationPolicy {
	ap := translate.WaypointBaseline(translate.Waypoint{Namespace: namespace, Name: name, ServiceAccount: name})
	ap.Labels = map[string]string{translate.ManagedByLabel: translate.ManagedByValue, translate.SourceKindLabel: "Waypoints", translate.SourceNameLabel: namespace}
	return ap
}

// translateAmbient translates a destination of an ambient namespace as the operator does
// (controllers/ambient.go translateAmbient): the namespace's Services and labels, where its
// Services send, and the waypoint of the Services that select the destination's workloads when
// the input holds it and its baseline is printed. note says which, for the report.
func (s *Set) translateAmbient(base translate.AccessInput, o accessOptions) (*translate.AccessResult, string, error) {
	ns := base.Namespace
	in := translate.AmbientAccessInput{AccessInput: base, NamespaceLabels: o.dp.labels[ns], ServiceBackends: o.backends[ns]}
	names := make([]string, 0, len(s.Services[ns]))
	for name := range s.Services[ns] {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		in.Services = append(in.Services, s.Services[ns][name])
	}
	note := "ambient data plane, no waypoint (ztunnel enforces identities and ports only)"
	if key := translate.DestinationWaypoint(in.Services, in.NamespaceLabels, base.Workloads, base.ServiceAccount); key != "" {
		if w, why := s.waypoint(key, o.waypoints); w != nil {
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

// waypoint is the waypoint key names when the input holds its Gateway, of class istio-waypoint and
// not being deleted, and its baseline is printed (controllers AccessReconciler.waypoint); else nil
// and why not.
func (s *Set) waypoint(key string, printed map[string]bool) (*translate.Waypoint, string) {
	ns, name, _ := strings.Cut(key, "/")
	gw := s.Gateways[ns][name]
	switch {
	case gw == nil:
		return nil, "its Gateway is not in the input"
	case gw.Class != WaypointClass:
		return nil, fmt.Sprintf("its Gateway's class is %q, not %s", gw.Class, WaypointClass)
	case gw.Deleting:
		return nil, "its Gateway is being deleted"
	case !printed[key]:
		return nil, fmt.Sprintf("its deny-by-default AuthorizationPolicy %s%s is not printed (namespace %s must be a mesh member in Enforcing mode, not Istio's root namespace)",
			translate.WaypointBaselinePrefix, name, ns)
	}
	return &translate.Waypoint{Namespace: ns, Name: name, ServiceAccount: gw.ServiceAccount}, ""
}

// generatedRoute: a route of the input that smi2istio wrote for a TrafficSplit (a dump of a cluster
// where it runs): this run's routes replace it.
func generatedRoute(labels map[string]string) bool {
	return labels[translate.ManagedByLabel] == translate.ManagedByValue && labels[translate.SourceKindLabel] == "TrafficSplit"
}

// routeConflict: a Gateway API route of the input (not smi2istio's) is attached to the split's
// root Service; it routes the Service for every client, in either route API, and Istio would merge
// both in an order of its own. The operator then applies nothing for the split (Conflict).
func (s *Set) routeConflict(ts *splitv1alpha4.TrafficSplit, mesh translate.Mesh) error {
	root, err := translate.ParseServiceRef(ts.Spec.Service, ts.Namespace, mesh)
	if err != nil {
		return nil // TranslateSplit reports it
	}
	for _, u := range s.Routes {
		if generatedRoute(u.GetLabels()) {
			continue
		}
		for _, p := range translate.RouteParents(u) {
			if p == ts.Namespace+"/"+root {
				return &translate.InvalidError{Finding: translate.Finding{Field: "spec.service", Reason: "Conflict",
					Message: fmt.Sprintf("%s %s/%s already routes Service %s and is not managed by this TrafficSplit: nothing is applied for it", u.GetKind(), u.GetNamespace(), u.GetName(), p)}}
			}
		}
	}
	return nil
}

// serviceBackends is translate.AmbientAccessInput.ServiceBackends of every namespace: for each
// Service a Gateway API route of its namespace is attached to, the Services its rules send to —
// the input's routes and the routes this run prints (controllers/ambient.go serviceBackends,
// which reads both from the cluster).
func (s *Set) serviceBackends(splits []Outcome) map[string]map[string][]string {
	out := map[string]map[string][]string{}
	add := func(u *unstructured.Unstructured) {
		ns := u.GetNamespace()
		for p, backends := range translate.RouteSends(u) {
			pns, name, _ := strings.Cut(p, "/")
			if pns != ns {
				continue
			}
			if out[ns] == nil {
				out[ns] = map[string][]string{}
			}
			out[ns][name] = append(out[ns][name], backends...)
		}
	}
	for _, u := range s.Routes {
		if !generatedRoute(u.GetLabels()) {
			add(u)
		}
	}
	for _, o := range splits {
		if o.GatewaySplit == nil || o.Err != nil {
			continue
		}
		for _, obj := range o.GatewaySplit.Objects() {
			u, err := translate.ToUnstructured(obj)
			if err != nil {
				continue // Render fails on it
			}
			add(u)
		}
	}
	for _, m := range out {
		for k, v := range m {
			sort.Strings(v)
			m[k] = v
		}
	}
	return out
}
