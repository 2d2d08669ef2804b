package translate_test

// Red team of TranslateAmbientAccess (helper H7): attacks on the ambient access path that fail.
// They stay as regression tests. Each evaluates the outputs with the ztunnel and waypoint model of
// ztunnel_eval_test.go (ported from istiod and ztunnel) with the namespace's allow-nothing baseline
// and, when the translation returns one, the waypoint's.

import (
	"strings"
	"testing"

	accessv1alpha2 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/access/v1alpha2"
	securityv1beta1 "istio.io/client-go/pkg/apis/security/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/smi2istio/smi2istio/internal/testing/istiocheck"
	"github.com/smi2istio/smi2istio/translate"
)

// redTeamOutputs gathers every policy the translation asks for, with the namespace's baseline and
// the waypoint's, as istiod would see them once applied.
type redTeamOutputs struct {
	res *translate.AmbientAccessResult
	aps []*securityv1beta1.AuthorizationPolicy
	pas []*securityv1beta1.PeerAuthentication
}

func redTeamTranslate(t *testing.T, in translate.AmbientAccessInput) *redTeamOutputs {
	t.Helper()
	res, err := translate.TranslateAmbientAccess(in)
	if err != nil {
		t.Fatalf("TranslateAmbientAccess: %v", err)
	}
	o := &redTeamOutputs{res: res}
	for _, tr := range res.Targets {
		o.aps = append(o.aps, tr.AuthorizationPolicies...)
		o.pas = append(o.pas, tr.PeerAuthentications...)
		for _, ob := range tr.Objects() {
			if err := istiocheck.Validate(ob); err != nil {
				t.Errorf("%s: output fails Istio's validation: %v", tr.Name, err)
			}
		}
	}
	if len(res.EnvoyFilters) > 0 {
		t.Errorf("EnvoyFilters in ambient mode: a waypoint ignores them")
	}
	o.aps = append(o.aps, &securityv1beta1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "smi2istio-default-deny", Namespace: in.Namespace}})
	if res.WaypointBaseline != nil {
		o.aps = append(o.aps, res.WaypointBaseline)
	}
	return o
}

// ztunnel is the verdict of the pod's ztunnel (pod labels) for a connection from identity (a
// ServiceAccount of ns "shop", or a full "spiffe://" URI; "" for no mTLS) on a pod port.
func (o *redTeamOutputs) ztunnel(t *testing.T, labels map[string]string, identity string, port uint32) (bool, string) {
	t.Helper()
	z, err := newZtunnelAuthz(o.aps, o.pas, "shop", labels)
	if err != nil {
		t.Fatal(err)
	}
	if identity != "" && !strings.HasPrefix(identity, "spiffe://") {
		identity = "spiffe://cluster.local/ns/shop/sa/" + identity
	}
	return z.allows(ztConn{identity: identity, port: port})
}

// waypoint is the verdict of the waypoint's chain of Service svc ("" for the direct-to-pod chain)
// for a request from ServiceAccount sa of "shop" on a Service port: method and path, or a raw TCP
// connection when method is "".
func (o *redTeamOutputs) waypoint(t *testing.T, w waypointRef, svc, sa string, port uint32, method, path string) (bool, string) {
	t.Helper()
	ch, err := newWaypointChain(o.aps, w, "shop", svc)
	if err != nil {
		t.Fatal(err)
	}
	c := &conn{peer: "spiffe://cluster.local/ns/shop/sa/" + sa, port: port}
	if method != "" {
		c.headers = map[string]string{":method": method, ":path": path, ":authority": svc, ":scheme": "http"}
	}
	return ch.allows(c)
}

var redTeamWaypoint = waypointRef{namespace: "shop", name: "waypoint", principal: "cluster.local/ns/shop/sa/waypoint-sa"}

func redTeamTarget(name string, rules ...accessv1alpha2.TrafficTargetRule) *accessv1alpha2.TrafficTarget {
	tt := &accessv1alpha2.TrafficTarget{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"}}
	tt.Spec.Destination = accessv1alpha2.IdentityBindingSubject{Kind: "ServiceAccount", Name: "api"}
	tt.Spec.Sources = []accessv1alpha2.IdentityBindingSubject{{Kind: "ServiceAccount", Name: "web"}}
	tt.Spec.Rules = rules
	return tt
}

// A TCPRoute next to an HTTPRouteGroup in one TrafficTarget restricts the HTTP rules to its port
// (FAIL-CLOSED §2): without a waypoint nothing at all is allowed (ztunnel cannot tell requests
// apart); with one, the waypoint allows exactly the HTTP rule on the Service port mapped from the
// TCPRoute's pod port, never a raw TCP connection, and ztunnel admits the waypoint on that pod port
// only, never web directly, never a peer without mTLS (STRICT, as in sidecar mode).
func TestRedTeamAmbientTCPRouteRestrictsHTTPRules(t *testing.T) {
	for _, waypoint := range []bool{false, true} {
		in := ambientInput(waypoint)
		in.Targets = []*accessv1alpha2.TrafficTarget{redTeamTarget("mixed",
			accessv1alpha2.TrafficTargetRule{Kind: "TCPRoute", Name: "tcp"},
			accessv1alpha2.TrafficTargetRule{Kind: "HTTPRouteGroup", Name: "routes", Matches: []string{"b"}})}
		o := redTeamTranslate(t, in)
		api := map[string]string{"app": "api"}
		for _, port := range []uint32{8080, 80, 9999} {
			if ok, why := o.ztunnel(t, api, "web", port); ok {
				t.Errorf("waypoint=%v: web connects directly to api's pod port %d: %s", waypoint, port, why)
			}
			if ok, why := o.ztunnel(t, api, "", port); ok {
				t.Errorf("waypoint=%v: a peer without mTLS reaches api's pod port %d: %s", waypoint, port, why)
			}
		}
		if !waypoint {
			if len(o.res.Targets[0].Objects()) > 0 {
				t.Errorf("no waypoint: the mixed TrafficTarget must allow nothing, got %v", o.res.Targets[0].Objects())
			}
			if w := o.res.Targets[0].Warnings; len(w) != 1 || w[0].Reason != translate.ReasonWaypointRequired {
				t.Errorf("no waypoint: want one WaypointRequired, got %v", w)
			}
			continue
		}
		w := redTeamWaypoint
		for _, c := range []struct {
			method, path string
			port         uint32
			want         bool
		}{
			{"GET", "/b", 80, true},
			{"POST", "/b", 80, false},
			{"GET", "/a/1", 80, false},
			{"", "", 80, false}, // a raw TCP connection: the HTTP rule must not apply on the TCP chain
			{"GET", "/b", 8080, false},
		} {
			if ok, why := o.waypoint(t, w, "api", "web", c.port, c.method, c.path); ok != c.want {
				t.Errorf("waypoint, Service api port %d, web %s %s: got %v (%s), want %v", c.port, c.method, c.path, ok, why, c.want)
			}
		}
		if ok, why := o.waypoint(t, w, "api", "thief", 80, "GET", "/b"); ok {
			t.Errorf("the waypoint lets another source through Service api: %s", why)
		}
		if ok, why := o.waypoint(t, w, "", "web", 8080, "GET", "/b"); ok {
			t.Errorf("the waypoint's direct-to-pod chain lets web through: %s", why)
		}
		if ok, why := o.ztunnel(t, api, "waypoint-sa", 8080); !ok {
			t.Errorf("ztunnel must admit the waypoint on pod port 8080: %s", why)
		}
		if ok, why := o.ztunnel(t, api, "waypoint-sa", 5432); ok {
			t.Errorf("ztunnel admits the waypoint on pod port 5432, which no rule allows: %s", why)
		}
	}
}

// Regexes in ambient mode: never the Envoy rung (a waypoint silently ignores EnvoyFilters), even
// when the mesh asks for it; a regex that is not exact is left out (denied), and no superset of it
// is allowed at the waypoint.
func TestRedTeamAmbientRegexNeverEnvoyRung(t *testing.T) {
	in := ambientInput(true)
	in.Mesh.RegexPolicy = translate.RegexEnvoy
	in.RouteGroups["routes"].Matches = []translate.HTTPMatch{
		{Name: "a", PathRegex: "/a/[0-9]+"},
		{Name: "h", PathRegex: "/h", Headers: []translate.Header{{Name: "x-user", Value: "jas.n"}}},
		{Name: "ok", PathRegex: "/ok"},
	}
	in.Targets = in.Targets[:1]
	o := redTeamTranslate(t, in)
	for _, f := range o.res.Targets[0].Rungs {
		if f.Reason == translate.RungEnvoy {
			t.Errorf("Envoy rung in ambient mode: %v", f)
		}
	}
	for _, req := range []struct{ path string }{{"/a/1"}, {"/a/x"}, {"/a/"}, {"/h"}} {
		if ok, why := o.waypoint(t, redTeamWaypoint, "api", "web", 80, "GET", req.path); ok {
			t.Errorf("GET %s allowed at the waypoint although its regex is not exact: %s", req.path, why)
		}
	}
	if ok, why := o.waypoint(t, redTeamWaypoint, "api", "web", 80, "GET", "/ok"); !ok {
		t.Errorf("GET /ok (an exact regex) must pass the waypoint: %s", why)
	}
}

// Names that reach a principal or a targetRef are validated: a waypoint whose Gateway, namespace
// or ServiceAccount (the gateway.istio.io/service-account annotation is free text) is not a name
// makes the translation fail (nothing is applied for the destination), never a wildcard principal.
func TestRedTeamAmbientHostileWaypointNames(t *testing.T) {
	for _, w := range []translate.Waypoint{
		{Namespace: "shop", Name: "waypoint", ServiceAccount: "*"},
		{Namespace: "shop", Name: "waypoint", ServiceAccount: "*-sa"},
		{Namespace: "shop", Name: "waypoint", ServiceAccount: ""},
		{Namespace: "shop", Name: "waypoint", ServiceAccount: "a/sa/b"},
		{Namespace: "shop", Name: "waypoint", ServiceAccount: "WAYPOINT"},
		{Namespace: "shop", Name: "waypoint", ServiceAccount: strings.Repeat("s", 254)},
		{Namespace: "*", Name: "waypoint", ServiceAccount: "waypoint"},
		{Namespace: "", Name: "waypoint", ServiceAccount: "waypoint"},
		{Namespace: "a.b", Name: "waypoint", ServiceAccount: "waypoint"},
		{Namespace: "shop", Name: "*", ServiceAccount: "waypoint"},
		{Namespace: "shop", Name: "way point", ServiceAccount: "waypoint"},
		{Namespace: "shop", Name: strings.Repeat("w", 64), ServiceAccount: "waypoint"},
	} {
		in := ambientInput(true)
		in.Waypoint = &w
		if res, err := translate.TranslateAmbientAccess(in); err == nil {
			t.Errorf("waypoint %+v accepted: %v", w, res.Targets)
		}
	}
	// A hostile use-waypoint label binds nothing that could widen: "none" and "" mean no waypoint,
	// as istiod reads them; the namespace's use-waypoint-namespace goes with its own label only.
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "shop", Labels: map[string]string{
		translate.UseWaypointLabel: "", translate.UseWaypointNamespaceLabel: "platform"}}}
	if got := translate.ServiceWaypoint(svc, map[string]string{translate.UseWaypointLabel: "waypoint"}); got != "" {
		t.Errorf("use-waypoint=\"\" on the Service: got waypoint %q, want none (istiod finds no waypoint named \"\")", got)
	}
}

// A Service bound to the waypoint that may also send to other workloads (no selector, a volatile
// selector label, a route to a Service that does not exist) gets an allow-nothing policy; so does
// one whose routes send to another ServiceAccount's workloads. The destination's rules are only
// on the Service that sends to it alone.
func TestRedTeamAmbientImpreciseServicesAllowNothing(t *testing.T) {
	in := ambientInput(true)
	in.Targets = in.Targets[:1]
	port := []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}
	for _, s := range []struct {
		name string
		sel  map[string]string
	}{{"manual", nil}, {"hash", map[string]string{"pod-template-hash": "x"}}, {"routed", map[string]string{"app": "api"}}, {"gone", map[string]string{"app": "api"}}, {"db", map[string]string{"app": "db"}}} {
		in.Services = append(in.Services, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: s.name, Namespace: "shop"},
			Spec: corev1.ServiceSpec{Selector: s.sel, Ports: port}})
	}
	in.Workloads = append(in.Workloads, translate.Workload{Name: "Deployment/db", ServiceAccount: "db", Labels: map[string]string{"app": "db"}})
	in.ServiceBackends = map[string][]string{"routed": {"api", "db"}, "gone": {"api", "missing"}}
	o := redTeamTranslate(t, in)
	for _, svc := range []string{"manual", "hash", "routed", "gone"} {
		if ok, why := o.waypoint(t, redTeamWaypoint, svc, "web", 80, "GET", "/b"); ok {
			t.Errorf("Service %s (may send elsewhere) lets web's GET /b through the waypoint: %s", svc, why)
		}
	}
	if ok, why := o.waypoint(t, redTeamWaypoint, "api", "web", 80, "GET", "/b"); !ok {
		t.Errorf("Service api sends only to api: web's GET /b must pass, got %s", why)
	}
	if ok, why := o.waypoint(t, redTeamWaypoint, "db", "web", 80, "GET", "/b"); ok {
		t.Errorf("Service db lets web through: %s", why)
	}
}

// Sidecar outputs on a pod that ztunnel serves (a pod labelled istio.io/dataplane-mode=ambient in a
// namespace smi2istio treats as sidecar, or dataplaneMode: Sidecar on ambient namespaces): every
// HTTPRouteGroup rule keeps an HTTP-only field, so ztunnel drops it (deny), and the Envoy rung's
// superset never becomes an L4 allow. Only the TCPRoute's port is allowed at L4.
func TestRedTeamAmbientSidecarOutputsOnZtunnel(t *testing.T) {
	in := ambientInput(false).AccessInput
	in.Mesh.RegexPolicy = translate.RegexEnvoy
	in.RouteGroups["routes"].Matches = []translate.HTTPMatch{
		{Name: "a", PathRegex: "/a/[0-9]+"},
		{Name: "any", PathRegex: ".*"},
		{Name: "get", Methods: []string{"*"}},
		{Name: "h", Headers: []translate.Header{{Name: "x-user", Value: ".*"}}},
	}
	res, err := translate.TranslateAccess(in)
	if err != nil {
		t.Fatal(err)
	}
	o := &redTeamOutputs{}
	for _, tr := range res.Targets {
		if tr.Err != nil {
			t.Fatalf("%s: %v", tr.Name, tr.Err)
		}
		o.aps = append(o.aps, tr.AuthorizationPolicies...)
		o.pas = append(o.pas, tr.PeerAuthentications...)
	}
	o.aps = append(o.aps, &securityv1beta1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "smi2istio-default-deny", Namespace: "shop"}})
	api := map[string]string{"app": "api"}
	for _, port := range []uint32{80, 5432, 9090} {
		if ok, why := o.ztunnel(t, api, "web", port); ok {
			t.Errorf("ztunnel lets web connect to pod port %d (only HTTP requests, and TCP on 8080, are allowed): %s", port, why)
		}
	}
	if ok, why := o.ztunnel(t, api, "web", 8080); !ok {
		t.Errorf("the TCPRoute's port 8080 must stay allowed at L4: %s", why)
	}
}
