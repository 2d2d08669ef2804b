//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Issue 18's scenarios on the real istiod with the operator running: OSM 1.2's bookstore in
// namespaces labelled only for ambient mode (without, then with a waypoint), a mesh with sidecar
// and ambient namespaces, and namespaces moved between the modes while every state istiod pushes
// to ztunnel, the waypoint and the old sidecar is judged. The verdicts are ztunnel's (fake
// ztunnel, L4) and the waypoint's and sidecars' (their LDS/RDS as Envoy runs them).

// ambientNamespaces creates namespaces labelled only istio.io/dataplane-mode=ambient (what
// `kubectl label namespace X istio.io/dataplane-mode=ambient` leaves on a new namespace).
func (cl *cluster) ambientNamespaces(names ...string) {
	cl.t.Helper()
	for _, n := range names {
		cl.namespace(n, map[string]string{labelDataplaneMode: "ambient"})
	}
}

// osm12Ambient registers OSM 1.2's demo pods enrolled in ambient mode by istio-cni.
func (cl *cluster) osm12Ambient() osm12 {
	return osm12{
		buyer:     cl.registerAmbient("bookbuyer", "bookbuyer"),
		thief:     cl.registerAmbient("bookthief", "bookthief"),
		store:     cl.registerAmbient("bookstore", "bookstore"),
		warehouse: cl.registerAmbient("bookwarehouse", "bookwarehouse"),
		mysql:     cl.registerAmbient("bookwarehouse", "mysql"),
	}
}

// exactRungRoutes is OSM 1.2's bookstore-service-routes as a user rewrites them once smi2istio
// reports that a waypoint cannot check their regexes (the Reject rung): the same two routes with
// regexes an AuthorizationPolicy expresses exactly (a suffix path, a prefix header value).
const exactRungRoutes = `
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata:
  name: bookstore-service-routes
  namespace: bookstore
spec:
  matches:
  - name: books-bought
    pathRegex: /books-bought
    methods: [GET]
    headers:
    - user-agent: "Go-http-client/.*"
    - client-app: bookbuyer
  - name: buy-a-book
    pathRegex: ".*/buy-a-book/new"
    methods: [GET]
`

// bookstoreRequests are the demo's requests to the bookstore Service (port 14001) and the ones the
// exact-rung routes must refuse.
type bookstoreRequests struct{ w osm12 }

func (b bookstoreRequests) allowed(p Proxy) []Request {
	return []Request{b.w.booksBought(p), b.w.buyABook(p)}
}

func (b bookstoreRequests) refused(p Proxy) []Request {
	return []Request{
		get(p, 14001, "/books-bought", "user-agent", "curl/8.0", "client-app", "bookbuyer"),
		get(p, 14001, "/books-bought", "user-agent", "Go-http-client/1.1", "client-app", "bookthief"),
		httpReq(p, 14001, "POST", "/books-bought", "user-agent", "Go-http-client/1.1", "client-app", "bookbuyer"),
		get(p, 14001, "/buy-a-book/old"),
		httpReq(p, 14001, "DELETE", "/buy-a-book/new"),
		tcp(p, 14001),
	}
}

// concat joins lists of checks.
func concat(cs ...[]check) []check {
	var out []check
	for _, c := range cs {
		out = append(out, c...)
	}
	return out
}

func checks(verdict func(Request) check, rs ...[]Request) []check {
	var out []check
	for _, r := range rs {
		for _, q := range r {
			out = append(out, verdict(q))
		}
	}
	return out
}

// gvkTCPRoute is the Gateway API TCPRoute (standard channel, v1).
var gvkTCPRoute = schema.GroupVersionKind{Group: "gateway.networking.k8s.io", Version: "v1", Kind: "TCPRoute"}

// outputsIn lists every object smi2istio manages in a namespace, Gateway API routes included, as
// "Kind/name" lines, sorted.
func (cl *cluster) outputsIn(namespace string) []string {
	cl.t.Helper()
	var out []string
	for _, gvk := range append(append([]schema.GroupVersionKind(nil), istioKinds...), gvkHTTPRoute, gvkTCPRoute) {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		must(cl.t, cl.c.List(context.Background(), list, client.InNamespace(namespace), client.MatchingLabels{"app.kubernetes.io/managed-by": "smi2istio"}))
		for _, o := range list.Items {
			out = append(out, gvk.Kind+"/"+o.GetName())
		}
	}
	sort.Strings(out)
	return out
}

// expectOutputs waits until the kinds of the namespace's outputs are exactly want ("Kind" ->
// count; kinds not named must have none).
func (cl *cluster) expectOutputs(step, namespace string, want map[string]int) {
	cl.t.Helper()
	eventually(cl.t, step+": the outputs in "+namespace, func() error {
		got := map[string]int{}
		objs := cl.outputsIn(namespace)
		for _, o := range objs {
			kind, _, _ := strings.Cut(o, "/")
			got[kind]++
		}
		for k, n := range want {
			if got[k] != n {
				return fmt.Errorf("%s: %d, want %d (outputs: %v)", k, got[k], n, objs)
			}
		}
		for k, n := range got {
			if _, named := want[k]; !named {
				return fmt.Errorf("%s: %d, want none (outputs: %v)", k, n, objs)
			}
		}
		return nil
	})
}

// TestAmbientOSM12Bookstore: OSM 1.2's getting-started demo (its manifests unchanged) in
// namespaces labelled only for ambient mode. Without a waypoint, ztunnel enforces the L4
// TrafficTarget (mysql) exactly and the HTTP ones allow nothing, reported WaypointRequired; with a
// waypoint for the bookstore namespace, the routes are the waypoint's (regexes it cannot check are
// refused and reported; once rewritten, exactly the demo's requests pass), nothing bypasses the
// waypoint, and the TrafficSplit's weights are the waypoint's routes, accepted by istiod.
func TestAmbientOSM12Bookstore(t *testing.T) {
	cl := newAmbientCluster(t, true)
	cl.ambientNamespaces("bookstore", "bookbuyer", "bookthief", "bookwarehouse")
	for _, f := range []string{"bookbuyer", "bookthief", "bookstore", "bookwarehouse", "mysql"} {
		cl.applyFile(fixture("osm-v1.2-bookstore/apps/" + f + ".yaml"))
	}
	w := cl.osm12Ambient()
	b := bookstoreRequests{w}
	mysql := func(from Proxy) L4 { return L4{From: from, To: w.mysql, Port: 3306} }
	store := func(from Proxy) L4 { return L4{From: from, To: w.store, Port: 14001} }
	warehouse := func(from Proxy) L4 { return L4{From: from, To: w.warehouse, Port: 14001} }

	// Enforcing (the default) and no TrafficTarget: the namespaces are members, ztunnel denies all.
	cl.expectL4("ambient, enforcing, no TrafficTarget",
		denyL4(mysql(w.warehouse)), denyL4(mysql(w.thief)), denyL4(store(w.buyer)), denyL4(warehouse(w.store)))

	// 1. traffic-access-v1.yaml without a waypoint: mysql's TCPRoute is ztunnel's; the HTTP routes
	// cannot be checked at L4 and allow nothing.
	cl.applyFile(fixture("osm-v1.2-bookstore/access/traffic-access-v1.yaml"))
	cl.expectReady("TrafficTarget", "bookwarehouse", "mysql")
	cl.expectTargetCondition("bookstore", "bookstore", "Ready", "False", "WaypointRequired")
	cl.expectTargetCondition("bookwarehouse", "bookstore-access-bookwarehouse", "Ready", "False", "WaypointRequired")
	cl.expectL4("no waypoint: mysql for bookwarehouse only, HTTP routes nowhere",
		allowL4(mysql(w.warehouse)),
		denyL4(L4{From: w.warehouse, Plaintext: true, To: w.mysql, Port: 3306}),
		denyL4(L4{From: w.warehouse, To: w.mysql, Port: 3307}),
		denyL4(mysql(w.store)), denyL4(mysql(w.buyer)), denyL4(mysql(w.thief)),
		denyL4(store(w.buyer)), denyL4(store(w.thief)),
		denyL4(warehouse(w.store)), denyL4(warehouse(w.thief)))
	cl.expectOutputs("no waypoint", "bookstore", map[string]int{"AuthorizationPolicy": 1}) // the baseline only
	// the split is an HTTPRoute, accepted by istiod, which says no waypoint applies it yet
	cl.applyFile(fixture("osm-v1.2-bookstore/split/traffic-split-v1.yaml"))
	cl.expectReady("TrafficSplit", "bookstore", "bookstore-split")
	parents := cl.expectRouteAccepted("HTTPRoute", "bookstore", "bookstore")
	if len(parents) != 1 || !strings.Contains(parents[0].Conditions["ResolvedWaypoints"], "istio.io/use-waypoint label missing") {
		t.Errorf("HTTPRoute bookstore/bookstore without a waypoint: parents %+v, want istiod to say the route is not respected", parents)
	}
	cl.expectOutputs("the split without a waypoint", "bookstore", map[string]int{"AuthorizationPolicy": 1, "HTTPRoute": 1})

	// 2. a waypoint for the bookstore namespace (istioctl waypoint apply -n bookstore
	// --enroll-namespace). Its deny-by-default policy first: then every state is watched.
	wp := cl.addWaypoint("bookstore", "waypoint")
	cl.expectPolicyCondition("bookstore", "smi2istio-default-deny-waypoint-waypoint", "WaypointAccepted", "True", "bound to bookstore/waypoint")
	guardedL4 := []L4{store(w.buyer), store(w.thief), mysql(w.thief), mysql(w.buyer)}
	gL4 := cl.guardL4(guardedL4...)
	gWP := cl.guardWaypoint(wp, "bookstore", "bookstore", append(append(b.allowed(w.thief), b.refused(w.buyer)...), b.refused(w.thief)...)...)
	cl.useWaypoint("bookstore", "", wp)

	// OSM's regexes (".*a-book.*new", ".*-http-client/*.*") are neither exact, prefix nor suffix
	// patterns, and a waypoint ignores EnvoyFilters: both routes are refused, and said so.
	cl.expectTargetCondition("bookstore", "bookstore", "Accepted", "True", "Rejected: 2")
	cl.expectWaypointAccess("waypoint, OSM's regexes", wp, "bookstore", "bookstore",
		checks(deny, b.allowed(w.buyer), b.allowed(w.thief))...)

	// the user rewrites the routes as exact patterns: exactly the demo's requests pass
	cl.applyYAML(exactRungRoutes)
	cl.expectReady("TrafficTarget", "bookstore", "bookstore")
	cl.expectWaypointAccess("waypoint, exact-rung routes", wp, "bookstore", "bookstore",
		concat(checks(allow, b.allowed(w.buyer)), checks(deny, b.refused(w.buyer), b.allowed(w.thief), b.refused(w.thief)))...)
	cl.expectWaypointAccess("waypoint, through bookstore-v1", wp, "bookstore", "bookstore-v1",
		concat(checks(allow, b.allowed(w.buyer)), checks(deny, b.refused(w.buyer), b.allowed(w.thief)))...)
	// a request a client sends to the waypoint addressed to the pod (not a Service): no chain of
	// the waypoint (it serves Services) lets it through
	toPod := func(rs []Request) []Request {
		out := make([]Request, len(rs))
		for i, r := range rs {
			r.To = w.store.IP
			out[i] = r
		}
		return out
	}
	cl.expectWaypointAccess("waypoint, addressed to the pod", wp, "bookstore", "bookstore",
		checks(deny, toPod(b.allowed(w.thief)), toPod(b.refused(w.buyer)))...)
	// ztunnel admits the waypoint only: no client reaches the pod around it
	cl.expectL4("waypoint: nothing bypasses it",
		allowL4(store(wp.Proxy)),
		denyL4(store(w.buyer)), denyL4(store(w.thief)), denyL4(store(w.warehouse)),
		allowL4(mysql(w.warehouse)), denyL4(mysql(w.thief)))

	// bookstore-v2 (its TrafficTarget included) and the 50/50 split edited to 25/75: the weights
	// are the waypoint's routes, and istiod accepts the HTTPRoute on its parent
	cl.applyFile(fixture("osm-v1.2-bookstore/apps/bookstore-v2.yaml"))
	store2 := cl.registerAmbient("bookstore", "bookstore-v2")
	split := cl.applyFile(fixture("osm-v1.2-bookstore/split/traffic-split-50-50.yaml"))[0]
	setWeights(t, split, 25, 75)
	cl.apply(split)
	cl.expectWaypointRoutes("25/75 at the waypoint", wp, "bookstore.bookstore.svc.cluster.local", 14001,
		"default -> "+waypointCluster("bookstore-v1", "bookstore", 14001, true)+"=25 "+waypointCluster("bookstore-v2", "bookstore", 14001, true)+"=75")
	cl.expectRouteAccepted("HTTPRoute", "bookstore", "bookstore")
	cl.expectReady("TrafficSplit", "bookstore", "bookstore-split")
	cl.expectReady("TrafficTarget", "bookstore", "bookstore-v2")
	cl.expectWaypointAccess("bookstore-v2 through its Service", wp, "bookstore", "bookstore-v2",
		concat(checks(allow, b.allowed(w.buyer)), checks(deny, b.refused(w.buyer), b.allowed(w.thief)))...)
	// The root Service now sends to two ServiceAccounts' pods; the waypoint checks a request per
	// Service before routing it, so neither TrafficTarget may speak for the root: nothing passes
	// through it (fail closed, reported), though both TrafficTargets allow the demo's requests.
	cl.expectTargetCondition("bookstore", "bookstore", "ResolvedRefs", "False", "ServiceSelectsOtherServiceAccounts")
	cl.expectWaypointAccess("the root Service after the split", wp, "bookstore", "bookstore",
		checks(deny, b.allowed(w.buyer), b.allowed(w.thief))...)
	cl.expectL4("bookstore-v2: the waypoint only",
		allowL4(L4{From: wp.Proxy, To: store2, Port: 14001}), denyL4(L4{From: w.buyer, To: store2, Port: 14001}))

	// The OpenShift Service Mesh canary (end-user: jason to v3) in an ambient namespace with its
	// own waypoint: the match, then every other request to the root, in the waypoint's routes.
	cl.applyFile("testdata/openshift-canary.yaml")
	cl.joinAmbient("bookinfo")
	for _, d := range []string{"productpage-v1", "reviews-v1", "reviews-v3"} {
		cl.registerAmbient("bookinfo", d)
	}
	wpInfo := cl.addWaypoint("bookinfo", "bookinfo-waypoint")
	cl.useWaypoint("bookinfo", "", wpInfo)
	cl.expectReady("TrafficSplit", "bookinfo", "reviews-canary")
	cl.expectRouteAccepted("HTTPRoute", "bookinfo", "reviews")
	cl.expectWaypointRoutes("end-user: jason to v3 at the waypoint", wpInfo, "reviews.bookinfo.svc.cluster.local", 9080,
		"header end-user=~jason -> "+waypointCluster("reviews-v3", "bookinfo", 9080, true)+"=100",
		"path ~ .* -> "+waypointCluster("reviews", "bookinfo", 9080, true)+"=100")

	t.Logf("guards: %d ztunnel states, %d waypoint configs judged", gL4.w.Updates(), gWP.w.Updates())
	violations, unjudged := gL4.Stop()
	if len(violations) > 0 || len(unjudged) > 0 {
		t.Errorf("ztunnel guard of %v: violations %q, unjudged %q", guardedL4, violations, unjudged)
	}
	if v := gWP.Stop(); len(v) > 0 {
		t.Errorf("waypoint guard: %q", v)
	}
	cl.expectNoXDSRejects()
}

// tcpEchoAccess admits bookbuyer to OSM's tcp-echo demo server on its TCP port (OSM's TCP traffic
// demo, with bookbuyer's sidecar as the client).
const tcpEchoAccess = `
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: tcp-echo, namespace: tcp-demo}
spec:
  matches:
    ports: [9000]
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: tcp-echo, namespace: tcp-demo}
spec:
  destination: {kind: ServiceAccount, name: tcp-echo, namespace: tcp-demo}
  rules:
  - {kind: TCPRoute, name: tcp-echo}
  sources:
  - {kind: ServiceAccount, name: bookbuyer, namespace: bookbuyer}
`

// expectKinds waits until the namespace has outputs of the kinds in present and none of those in
// absent.
func (cl *cluster) expectKinds(step, namespace string, present, absent []string) {
	cl.t.Helper()
	eventually(cl.t, step+": the outputs in "+namespace, func() error {
		objs := cl.outputsIn(namespace)
		got := map[string]bool{}
		for _, o := range objs {
			kind, _, _ := strings.Cut(o, "/")
			got[kind] = true
		}
		for _, k := range present {
			if !got[k] {
				return fmt.Errorf("no %s (outputs: %v)", k, objs)
			}
		}
		for _, k := range absent {
			if got[k] {
				return fmt.Errorf("a %s is left (outputs: %v)", k, objs)
			}
		}
		return nil
	})
}

// waypointOutputs lists the namespace's outputs that only a waypoint uses: AuthorizationPolicies
// attached with targetRefs (to a Service or a waypoint's Gateway).
func (cl *cluster) waypointOutputs(namespace string) []string {
	cl.t.Helper()
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(gvkAuthzPol.GroupVersion().WithKind("AuthorizationPolicyList"))
	must(cl.t, cl.c.List(context.Background(), list, client.InNamespace(namespace), client.MatchingLabels{"app.kubernetes.io/managed-by": "smi2istio"}))
	var out []string
	for _, o := range list.Items {
		if refs, _, _ := unstructured.NestedSlice(o.Object, "spec", "targetRefs"); len(refs) > 0 {
			out = append(out, o.GetName())
		}
	}
	return out
}

// TestAmbientMixedMeshMigration: OSM 1.2's bookstore in one mesh of sidecar namespaces (bookbuyer,
// bookthief) and ambient ones (bookwarehouse), sidecars calling ambient pods; then the bookstore
// namespace moves live from sidecars to ambient mode, gets a waypoint, and moves back, while
// guards judge every state istiod pushes to ztunnel, to the waypoint and to the bookstore pod's
// old sidecar (kept until the pod restarts): no state lets bookthief in or bookbuyer's refused
// requests through, and each mode's outputs are pruned when the namespace leaves it.
func TestAmbientMixedMeshMigration(t *testing.T) {
	cl := newAmbientCluster(t, true)
	cl.createNamespaces("bookstore", "bookbuyer", "bookthief")
	cl.joinMesh("bookstore", "bookbuyer", "bookthief")
	cl.ambientNamespaces("bookwarehouse", "tcp-demo")
	for _, f := range []string{"bookbuyer", "bookthief", "bookstore", "bookwarehouse", "mysql", "tcp-echo"} {
		cl.applyFile(fixture("osm-v1.2-bookstore/apps/" + f + ".yaml"))
	}
	cl.applyYAML(tcpEchoAccess)
	cl.applyFile(fixture("osm-v1.2-bookstore/access/traffic-access-v1.yaml"))
	cl.applyFile(fixture("osm-v1.2-bookstore/split/traffic-split-v1.yaml"))
	w := osm12{
		buyer:     cl.register("bookbuyer", "bookbuyer"),
		thief:     cl.register("bookthief", "bookthief"),
		store:     cl.register("bookstore", "bookstore"),
		warehouse: cl.registerAmbient("bookwarehouse", "bookwarehouse"),
		mysql:     cl.registerAmbient("bookwarehouse", "mysql"),
	}
	echo := cl.registerAmbient("tcp-demo", "tcp-echo")
	b := bookstoreRequests{w}
	mysql := func(from Proxy) L4 { return L4{From: from, To: w.mysql, Port: 3306} }
	store := func(from Proxy) L4 { return L4{From: from, To: w.store, Port: 14001} }
	warehouse := func(from Proxy) L4 { return L4{From: from, To: w.warehouse, Port: 14001} }
	never := append(append(b.allowed(w.thief), b.refused(w.thief)...), b.refused(w.buyer)...)

	// 3. one mesh, two data planes. bookstore's sidecar: OSM's regexes on the Envoy rung.
	ctl := cl.guardSidecar(w.store, b.allowed(w.buyer)...) // the guard's control: these get through
	cl.expectAccess("sidecar bookstore", w.store, concat(checks(allow, b.allowed(w.buyer)), checks(deny, never))...)
	cl.expectFilter("sidecar bookstore: the Envoy rung", w.store, "smi2istio.rbac", true)
	cl.expectKinds("sidecar bookstore", "bookstore", []string{"AuthorizationPolicy", "PeerAuthentication", "EnvoyFilter", "VirtualService"}, []string{"HTTPRoute"})
	// sidecars calling ambient pods (HBONE with their own certificates): ztunnel judges their
	// identities at L4; tcp-echo admits bookbuyer's sidecar on 9000 only
	cl.expectReady("TrafficTarget", "tcp-demo", "tcp-echo")
	cl.expectL4("sidecars to ambient pods",
		allowL4(L4{From: w.buyer, To: echo, Port: 9000}),
		denyL4(L4{From: w.buyer, Plaintext: true, To: echo, Port: 9000}),
		denyL4(L4{From: w.buyer, To: echo, Port: 9001}),
		denyL4(L4{From: w.thief, To: echo, Port: 9000}), denyL4(L4{From: w.store, To: echo, Port: 9000}),
		allowL4(mysql(w.warehouse)), denyL4(mysql(w.store)), denyL4(mysql(w.thief)), denyL4(mysql(w.buyer)),
		denyL4(warehouse(w.store)), denyL4(warehouse(w.thief)))
	cl.expectTargetCondition("bookwarehouse", "bookstore-access-bookwarehouse", "Ready", "False", "WaypointRequired")
	if v := ctl.Stop(); len(v) == 0 {
		t.Fatal("the sidecar guard's control saw bookbuyer's allowed requests denied in every config")
	}

	gSide := cl.guardSidecar(w.store, never...)
	gMySQL := cl.guardL4(mysql(w.thief), mysql(w.buyer), mysql(w.store))
	gStore := cl.guardL4(store(w.thief), store(w.buyer)) // judged while ztunnel captures the pod

	// 4a. bookstore moves to ambient mode (no waypoint): its HTTP TrafficTarget needs one; the
	// sidecar mode's outputs (EnvoyFilter, VirtualService, DestinationRule) go.
	cl.relabel(&corev1.Namespace{}, "", "bookstore", map[string]string{"istio-injection": "", labelDataplaneMode: "ambient"})
	cl.expectTargetCondition("bookstore", "bookstore", "Ready", "False", "WaypointRequired")
	cl.expectKinds("bookstore in ambient mode", "bookstore", []string{"AuthorizationPolicy", "HTTPRoute"},
		[]string{"EnvoyFilter", "VirtualService", "DestinationRule", "PeerAuthentication"})
	cl.expectL4("bookstore in ambient mode", denyL4(store(w.buyer)), denyL4(store(w.thief)), allowL4(mysql(w.warehouse)))

	// 4b. a waypoint for bookstore
	wp := cl.addWaypoint("bookstore", "waypoint")
	cl.expectPolicyCondition("bookstore", "smi2istio-default-deny-waypoint-waypoint", "WaypointAccepted", "True", "bound to bookstore/waypoint")
	gWP := cl.guardWaypoint(wp, "bookstore", "bookstore", never...)
	cl.useWaypoint("bookstore", "", wp)
	cl.expectTargetCondition("bookstore", "bookstore", "Accepted", "True", "Rejected: 2")
	cl.expectWaypointAccess("waypoint, OSM's regexes", wp, "bookstore", "bookstore", checks(deny, b.allowed(w.buyer), never)...)
	cl.applyYAML(exactRungRoutes)
	cl.expectReady("TrafficTarget", "bookstore", "bookstore")
	cl.expectWaypointAccess("waypoint, exact-rung routes", wp, "bookstore", "bookstore",
		concat(checks(allow, b.allowed(w.buyer)), checks(deny, never))...)
	cl.expectL4("through the waypoint only", allowL4(store(wp.Proxy)), denyL4(store(w.buyer)), denyL4(store(w.thief)))
	cl.expectRouteAccepted("HTTPRoute", "bookstore", "bookstore")
	// The waypoint would let bookbuyer's identity through, but bookbuyer's sidecar never calls it:
	// istiod gives a sidecar the pods of a Service with a waypoint (HBONE straight to them; only
	// gateways call waypoints: endpoint_builder.go findServiceWaypoint), the sidecar applying the
	// route itself. ztunnel admits only the waypoint there, so in a mixed mesh the HTTP rules of
	// a sidecar source allow it nothing (the ztunnel verdict above): fail closed.
	cl.expectRoutes("bookbuyer's sidecar applies the HTTPRoute", w.buyer, "bookstore.bookstore.svc.cluster.local", 14001,
		"default -> outbound|14001||bookstore-v1.bookstore.svc.cluster.local=100")
	cl.expectEndpoints("bookbuyer's sidecar sends to the pod, not the waypoint", w.buyer,
		"outbound|14001||bookstore-v1.bookstore.svc.cluster.local", "connect_originate "+w.store.IP+":14001")

	// 4c. back to sidecars: the namespace leaves the waypoint, then ambient mode, then the waypoint
	// goes; nothing of ambient mode is left.
	cl.useWaypoint("bookstore", "", Waypoint{})
	cl.expectTargetCondition("bookstore", "bookstore", "Ready", "False", "WaypointRequired")
	if v := gWP.Stop(); len(v) > 0 {
		t.Errorf("waypoint guard: %q", v)
	}
	cl.relabel(&corev1.Namespace{}, "", "bookstore", map[string]string{"istio-injection": "enabled", labelDataplaneMode: ""})
	cl.removeWaypoint(wp)
	cl.expectAccess("sidecar bookstore again", w.store, concat(checks(allow, b.allowed(w.buyer)), checks(deny, never))...)
	cl.expectFilter("sidecar bookstore again: exact rung", w.store, "smi2istio.rbac", false)
	cl.expectKinds("sidecar bookstore again", "bookstore", []string{"AuthorizationPolicy", "PeerAuthentication", "VirtualService"},
		[]string{"HTTPRoute", "EnvoyFilter"})
	cl.expectReady("TrafficTarget", "bookstore", "bookstore")
	eventually(t, "no waypoint policy left in bookstore", func() error {
		if left := cl.waypointOutputs("bookstore"); len(left) > 0 {
			return fmt.Errorf("left: %v", left)
		}
		return nil
	})
	if v, u := gMySQL.Stop(); len(v) > 0 || len(u) > 0 {
		t.Errorf("ztunnel guard of mysql: violations %q, unjudged %q", v, u)
	}

	// 4d. bookwarehouse (an L4 and an HTTP TrafficTarget) moves to sidecars and back, its old
	// sidecars and ztunnel guarded.
	mysqlNever := []Request{tcp(w.thief, 3306), tcp(w.buyer, 3306), tcp(w.store, 3306)}
	restock := func(p Proxy) Request { return httpReq(p, 14001, "POST", "/restock-books") }
	warehouseNever := []Request{restock(w.buyer), restock(w.thief), get(w.store, 14001, "/restock-books"), tcp(w.store, 14001)}
	gSideMySQL, gSideWarehouse := cl.guardSidecar(w.mysql, mysqlNever...), cl.guardSidecar(w.warehouse, warehouseNever...)
	gMySQL = cl.guardL4(mysql(w.thief), mysql(w.buyer), mysql(w.store))
	cl.relabel(&corev1.Namespace{}, "", "bookwarehouse", map[string]string{"istio-injection": "enabled", labelDataplaneMode: ""})
	cl.expectReady("TrafficTarget", "bookwarehouse", "bookstore-access-bookwarehouse")
	cl.expectAccess("sidecar mysql", w.mysql, allow(tcp(w.warehouse, 3306)), deny(tcp(w.warehouse, 3307)), deny(tcp(w.thief, 3306)), deny(tcp(w.store, 3306)))
	cl.expectAccess("sidecar bookwarehouse", w.warehouse, concat([]check{allow(restock(w.store))}, checks(deny, warehouseNever))...)
	cl.relabel(&corev1.Namespace{}, "", "bookwarehouse", map[string]string{"istio-injection": "", labelDataplaneMode: "ambient"})
	cl.expectTargetCondition("bookwarehouse", "bookstore-access-bookwarehouse", "Ready", "False", "WaypointRequired")
	cl.expectL4("bookwarehouse in ambient mode again", allowL4(mysql(w.warehouse)), denyL4(mysql(w.thief)), denyL4(mysql(w.store)), denyL4(warehouse(w.store)))
	cl.expectKinds("bookwarehouse in ambient mode again", "bookwarehouse", []string{"AuthorizationPolicy", "PeerAuthentication"}, []string{"EnvoyFilter", "VirtualService", "HTTPRoute"})

	t.Logf("guards: %d + %d + %d sidecar configs, %d + %d ztunnel states judged", gSide.Configs(), gSideMySQL.Configs(), gSideWarehouse.Configs(), gMySQL.w.Updates(), gStore.w.Updates())
	for name, g := range map[string]*SidecarGuard{"bookstore": gSide, "mysql": gSideMySQL, "bookwarehouse": gSideWarehouse} {
		if v := g.Stop(); len(v) > 0 {
			t.Errorf("%s sidecar guard: %q", name, v)
		}
	}
	if v, _ := gMySQL.Stop(); len(v) > 0 {
		t.Errorf("ztunnel guard of mysql: violations %q", v)
	}
	v, u := gStore.Stop()
	if len(v) > 0 {
		t.Errorf("ztunnel guard of bookstore: violations %q", v)
	}
	t.Logf("ztunnel guard of bookstore: %d checks unjudged (the pod outside ambient mode)", len(u))
	cl.expectNoXDSRejects()
}
