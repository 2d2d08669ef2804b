package translate

// What the operator and the offline CLI read from an ambient namespace's objects to translate its
// TrafficTargets: the destination's waypoint, and where each Service's requests may go.

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
)

// DestinationWaypoint is the waypoint ("namespace/name") of the Services that select the
// destination's workloads: the one most of them use (name order breaks ties); "" for none.
// Services bound to another waypoint (or to none) reach the workloads only through ztunnel, which
// admits the chosen waypoint alone: their traffic is denied, never allowed without a check.
func DestinationWaypoint(svcs []*corev1.Service, nsLabels map[string]string, workloads []Workload, sa string) string {
	counts := map[string]int{}
	for _, svc := range svcs {
		key := ServiceWaypoint(svc, nsLabels)
		if key == "" || len(svc.Spec.Selector) == 0 {
			continue
		}
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		for _, w := range workloads {
			if w.ServiceAccount == sa && sel.Matches(labels.Set(w.Labels)) {
				counts[key]++
				break
			}
		}
	}
	best := ""
	for key, n := range counts {
		if best == "" || n > counts[best] || (n == counts[best] && key < best) {
			best = key
		}
	}
	return best
}

// RouteParents are the Services of a Gateway API route's parentRefs, as "namespace/name" (a
// parent without a namespace is in the route's); Gateways and other kinds are left out.
func RouteParents(u *unstructured.Unstructured) []string {
	var out []string
	for _, p := range serviceParents(u) {
		out = append(out, p.key)
	}
	return out
}

// serviceParent is a Service parentRef of a route: "namespace/name", and whether it names a port.
type serviceParent struct {
	key    string
	ported bool
}

func serviceParents(u *unstructured.Unstructured) []serviceParent {
	parents, _, _ := unstructured.NestedSlice(u.Object, "spec", "parentRefs")
	var out []serviceParent
	for _, p := range parents {
		m, _ := p.(map[string]any)
		group, _ := m["group"].(string)
		kind, _ := m["kind"].(string)
		name, _ := m["name"].(string)
		ns, _ := m["namespace"].(string)
		if name == "" || kind != "Service" || (group != "" && group != "core") {
			continue
		}
		if ns == "" {
			ns = u.GetNamespace()
		}
		_, ported := m["port"]
		out = append(out, serviceParent{key: ns + "/" + name, ported: ported})
	}
	return out
}

// RouteBackends are the Services a Gateway API route may send a request to: each rule's
// backendRefs and the backends of every requestMirror filter (a rule's or a backend's: a mirrored
// request reaches those workloads too). A backend that is not a Service of the route's namespace
// is named so that it matches no Service there (AmbientAccessInput.ServiceBackends).
func RouteBackends(u *unstructured.Unstructured) []string {
	ns := u.GetNamespace()
	var out []string
	add := func(m map[string]any) {
		group, _ := m["group"].(string)
		kind, _ := m["kind"].(string)
		name, _ := m["name"].(string)
		refNS, _ := m["namespace"].(string)
		if (kind != "" && kind != "Service") || (group != "" && group != "core") || (refNS != "" && refNS != ns) {
			name = fmt.Sprintf("%s/%s.%s/%s", group, kind, refNS, name)
		}
		out = append(out, name)
	}
	mirrors := func(filters []any) {
		for _, f := range filters {
			fm, _ := f.(map[string]any)
			if m, ok, _ := unstructured.NestedMap(fm, "requestMirror", "backendRef"); ok {
				add(m)
			}
		}
	}
	rules, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules")
	for _, rule := range rules {
		rm, _ := rule.(map[string]any)
		refs, _, _ := unstructured.NestedSlice(rm, "backendRefs")
		for _, ref := range refs {
			m, _ := ref.(map[string]any)
			add(m)
			filters, _, _ := unstructured.NestedSlice(m, "filters")
			mirrors(filters)
		}
		filters, _, _ := unstructured.NestedSlice(rm, "filters")
		mirrors(filters)
	}
	return out
}

// RouteSends is where a Gateway API route makes each of its Service parents ("namespace/name")
// send requests, for AmbientAccessInput.ServiceBackends: its backends (RouteBackends); the parent
// itself too when the parentRef names a port (the Service's other ports still go to its own
// endpoints); and, for a route smi2istio did not write, a name that matches no Service (its ports
// and filters are not modelled: a Service it is attached to allows nothing through a waypoint).
func RouteSends(u *unstructured.Unstructured) map[string][]string {
	backends := RouteBackends(u)
	if u.GetLabels()[ManagedByLabel] != ManagedByValue {
		backends = append(backends, fmt.Sprintf("%s %s/%s (a route smi2istio did not write)", u.GetKind(), u.GetNamespace(), u.GetName()))
	}
	out := map[string][]string{}
	for _, p := range serviceParents(u) {
		out[p.key] = append(out[p.key], backends...)
		if p.ported {
			_, name, _ := strings.Cut(p.key, "/")
			out[p.key] = append(out[p.key], name)
		}
	}
	return out
}
