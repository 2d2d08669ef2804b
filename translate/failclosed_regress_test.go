// Regressions found by the red team of issue 16 (holes a short input opened).
package translate_test

import (
	"strings"
	"testing"

	accessv1alpha2 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/access/v1alpha2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/smi2istio/smi2istio/translate"
)

func rtInput(m translate.HTTPMatch, extraRules ...accessv1alpha2.TrafficTargetRule) translate.AccessInput {
	in := translate.AccessInput{Namespace: "shop", ServiceAccount: "api",
		RouteGroups: map[string]*translate.HTTPRouteGroup{"g": {ObjectMeta: metav1.ObjectMeta{Name: "g", Namespace: "shop"}, Matches: []translate.HTTPMatch{m}}},
		PortRoutes: map[string]*translate.PortRoute{
			"UDPRoute/dns": {ObjectMeta: metav1.ObjectMeta{Name: "dns", Namespace: "shop"}, Kind: "UDPRoute", Ports: []int{53}},
		},
		Workloads: []translate.Workload{{Name: "Deployment/api", ServiceAccount: "api", Labels: map[string]string{"app": "api"}}},
	}
	tt := &accessv1alpha2.TrafficTarget{ObjectMeta: metav1.ObjectMeta{Name: "t", Namespace: "shop"}}
	tt.Spec.Destination = accessv1alpha2.IdentityBindingSubject{Kind: "ServiceAccount", Name: "api"}
	tt.Spec.Sources = []accessv1alpha2.IdentityBindingSubject{{Kind: "ServiceAccount", Name: "web"}}
	tt.Spec.Rules = append([]accessv1alpha2.TrafficTargetRule{{Kind: "HTTPRouteGroup", Name: "g"}}, extraRules...)
	in.Targets = []*accessv1alpha2.TrafficTarget{tt}
	return in
}

func rtAuthz(t *testing.T, res *translate.AccessResult) *workloadAuthz {
	t.Helper()
	var aps = res.Targets[0].AuthorizationPolicies
	w, err := newWorkloadAuthz(aps, res.EnvoyFilters, "shop", map[string]string{"app": "api"})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// A short regex whose RE2 program exceeds Envoy's re2.max_program_size.error_level (32768 in
// Istio's bootstrap): istiod accepts the EnvoyFilter, Envoy NACKs the inbound listener.
func TestEnvoyRungRegexTooLargeForRE2(t *testing.T) {
	for _, re := range []string{`/\pL{40}`, `/(?i)\pL{100}`, `/(?:a{1000}|b{1000}|c{1000}|d{1000}|e{1000}|f{1000}|g{1000}|h{1000}|i{1000}|j{1000}|k{1000}|l{1000}|m{1000}|n{1000}|o{1000}|p{1000}|q{1000}|r{1000}|s{1000}|t{1000}|u{1000}|v{1000}|w{1000}|x{1000}|y{1000}|z{1000}|A{1000}|B{1000}|C{1000}|D{1000}|E{1000}|F{1000}|G{1000}|H{1000})`} {
		res, err := translate.TranslateAccess(rtInput(translate.HTTPMatch{Name: "m", PathRegex: re}))
		if err != nil {
			t.Fatal(err)
		}
		if res.Targets[0].Err == nil && len(res.EnvoyFilters) > 0 && translate.ValidateOutput(res.EnvoyFilters[0]) == nil {
			t.Errorf("%q (RE2 program > 32768 instructions) accepted: EnvoyFilter emitted and ValidateOutput passes", re)
		}
	}
}

// Go accepts (?<name>...), RE2 before 2023 (Envoy of Istio 1.16-1.18, the default
// minIstioVersion 1.16) does not.
func TestEnvoyRungNamedGroupForOldRE2(t *testing.T) {
	res, err := translate.TranslateAccess(rtInput(translate.HTTPMatch{Name: "m", PathRegex: `(?<v>/api)/[0-9]+`}))
	if err != nil {
		t.Fatal(err)
	}
	if res.Targets[0].Err == nil && len(res.EnvoyFilters) > 0 {
		t.Errorf("(?<v>...) accepted into safe_regex with minIstioVersion 1.16")
	}
}

// HTTPRouteGroup + UDPRoute(53) in one TrafficTarget are ANDed: no HTTP request uses a UDP port.
func TestUDPRouteRestrictsHTTPRules(t *testing.T) {
	res, err := translate.TranslateAccess(rtInput(translate.HTTPMatch{Name: "m", PathRegex: "/x"}, accessv1alpha2.TrafficTargetRule{Kind: "UDPRoute", Name: "dns"}))
	if err != nil {
		t.Fatal(err)
	}
	w := rtAuthz(t, res)
	c := &conn{peer: "spiffe://cluster.local/ns/shop/sa/web", port: 9090, headers: map[string]string{":method": "GET", ":path": "/x", ":authority": "a"}}
	if ok, _ := w.allowHTTP(c); ok {
		t.Errorf("GET /x on port 9090 allowed although the TrafficTarget's only port rule is UDPRoute port 53 (ANDed: nothing)")
	}
}

// A TCPRoute that exists but cannot be read (a field of the wrong type kept by a CRD that does
// not validate) makes its TrafficTarget not accepted, naming the route and field: not "not found"
// (which would keep the target's other rules, and say nothing of the field).
func TestUnreadablePortRouteRefusesTheTarget(t *testing.T) {
	in := rtInput(translate.HTTPMatch{Name: "m", PathRegex: "/x"}, accessv1alpha2.TrafficTargetRule{Kind: "TCPRoute", Name: "db"})
	in.PortRouteErrors = map[string]*translate.FieldError{"TCPRoute/db": {Field: "spec.matches.ports", Reason: "InvalidField", Message: "ports cannot be read"}}
	res, err := translate.TranslateAccess(in)
	if err != nil {
		t.Fatal(err)
	}
	tr := res.Targets[0]
	if tr.Err == nil || !strings.Contains(tr.Err.Error(), "TCPRoute db spec.matches.ports") {
		t.Fatalf("target error %v, want one naming TCPRoute db spec.matches.ports", tr.Err)
	}
	if len(tr.AuthorizationPolicies) > 0 {
		t.Errorf("policies written for a target that is not accepted: %d", len(tr.AuthorizationPolicies))
	}
}
