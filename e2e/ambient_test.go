//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	xdscore "github.com/cncf/xds/go/xds/core/v3"
	xdsmatcher "github.com/cncf/xds/go/xds/type/matcher/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/internal/testing/proc"
)

// Tests of the ambient harness itself: the ztunnel evaluator and the waypoint's chain matcher
// against truth tables from ztunnel's and Envoy's documented semantics (no cluster), then the fake
// ztunnel and the waypoint proxy against the real istiod, with hand-written Istio and Gateway API
// objects (no operator).

// --- ztunnel's RBAC (src/rbac.rs and its tests) ---

func exactSM(s string) *security.StringMatch {
	return &security.StringMatch{MatchType: &security.StringMatch_Exact{Exact: s}}
}

// ztPolicy is an ALLOW policy (rbac.rs tests' allow_policy).
func ztPolicy(groups ...*security.Group) *security.Authorization {
	return &security.Authorization{Name: "p", Namespace: "namespace", Scope: security.Scope_GLOBAL, Action: security.Action_ALLOW, Groups: groups}
}

// group is one group of rules, each rule a list of matches.
func group(rules ...[]*security.Match) *security.Group {
	g := &security.Group{}
	for _, r := range rules {
		g.Rules = append(g.Rules, &security.Rules{Matches: r})
	}
	return g
}

func addr(prefix string) *security.Address {
	p := netip.MustParsePrefix(prefix)
	return &security.Address{Address: p.Addr().AsSlice(), Length: uint32(p.Bits())}
}

// The connections of rbac.rs's tests (trust domain cluster.local here).
var (
	ztPlain  = rbacConn{src: netip.MustParseAddr("127.0.0.1"), dst: netip.MustParseAddr("127.0.0.2"), dstPort: 8080}
	ztTLS    = rbacConn{src: netip.MustParseAddr("127.0.0.1"), dst: netip.MustParseAddr("127.0.0.2"), dstPort: 8080, id: &identity{"namespace", "account"}}
	ztTLSAlt = rbacConn{src: netip.MustParseAddr("127.0.0.3"), dst: netip.MustParseAddr("127.0.0.4"), dstPort: 9090, id: &identity{"ns-alt", "sa=alt"}}
)

func TestZtunnelRBACTruthTable(t *testing.T) {
	matches := func(p *security.Authorization, c rbacConn) bool {
		t.Helper()
		ok, err := policyMatches(p, c)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	// rbac_empty_policy
	if matches(ztPolicy(group([]*security.Match{{}})), ztPlain) {
		t.Error("a rule whose only match is empty matched")
	}
	if !matches(ztPolicy(group([]*security.Match{})), ztPlain) {
		t.Error("a rule without matches did not match")
	}
	if !matches(ztPolicy(group()), ztPlain) {
		t.Error("a group without rules did not match")
	}
	if matches(ztPolicy(), ztPlain) {
		t.Error("a policy without groups matched")
	}
	// rbac_nesting: namespace a or b, and port 80
	nested := ztPolicy(group(
		[]*security.Match{{Namespaces: []*security.StringMatch{exactSM("a")}}, {Namespaces: []*security.StringMatch{exactSM("b")}}},
		[]*security.Match{{DestinationPorts: []uint32{80}}}))
	conn := func(ns string, port uint16) rbacConn {
		return rbacConn{src: ztPlain.src, dst: ztPlain.dst, dstPort: port, id: &identity{ns, "account"}}
	}
	for _, row := range []struct {
		c    rbacConn
		want bool
	}{{conn("a", 80), true}, {conn("b", 80), true}, {conn("bad", 80), false}, {conn("b", 12345), false}} {
		if got := matches(nested, row.c); got != row.want {
			t.Errorf("nested, %+v: got %v, want %v", row.c.id, got, row.want)
		}
	}
	// rbac_multi_rule: groups are OR-ed
	multi := ztPolicy(
		group([]*security.Match{{Namespaces: []*security.StringMatch{exactSM("a")}}}),
		group([]*security.Match{{Namespaces: []*security.StringMatch{exactSM("b")}}}))
	if !matches(multi, conn("a", 80)) || !matches(multi, conn("b", 80)) || matches(multi, conn("bad", 80)) {
		t.Error("multi-group policy: want a and b, not bad")
	}
	// one field at a time, positive and negative: plaintext, tls, tls_alt
	fields := []struct {
		name string
		m    *security.Match
		want [3]bool
	}{
		{"namespaces", &security.Match{Namespaces: []*security.StringMatch{exactSM("namespace")}}, [3]bool{false, true, false}},
		{"not_namespaces", &security.Match{NotNamespaces: []*security.StringMatch{exactSM("namespace")}}, [3]bool{true, false, true}},
		{"service_accounts", &security.Match{ServiceAccounts: []*security.ServiceAccountMatch{{Namespace: "namespace", ServiceAccount: "account"}}}, [3]bool{false, true, false}},
		{"not_service_accounts", &security.Match{NotServiceAccounts: []*security.ServiceAccountMatch{{Namespace: "namespace", ServiceAccount: "account"}}}, [3]bool{true, false, true}},
		{"principals", &security.Match{Principals: []*security.StringMatch{exactSM("cluster.local/ns/namespace/sa/account")}}, [3]bool{false, true, false}},
		{"not_principals", &security.Match{NotPrincipals: []*security.StringMatch{exactSM("cluster.local/ns/namespace/sa/account")}}, [3]bool{true, false, true}},
		{"principal presence (STRICT)", &security.Match{NotPrincipals: []*security.StringMatch{{MatchType: &security.StringMatch_Presence{Presence: &emptypb.Empty{}}}}}, [3]bool{true, false, false}},
		{"principal with the spiffe:// prefix never matches", &security.Match{Principals: []*security.StringMatch{exactSM("spiffe://cluster.local/ns/namespace/sa/account")}}, [3]bool{false, false, false}},
		{"principal suffix", &security.Match{Principals: []*security.StringMatch{{MatchType: &security.StringMatch_Suffix{Suffix: "/sa/account"}}}}, [3]bool{false, true, false}},
		{"source_ips", &security.Match{SourceIps: []*security.Address{addr("127.0.0.1/32")}}, [3]bool{true, true, false}},
		{"not_source_ips", &security.Match{NotSourceIps: []*security.Address{addr("127.0.0.1/32")}}, [3]bool{false, false, true}},
		{"destination_ips", &security.Match{DestinationIps: []*security.Address{addr("127.0.0.2/32")}}, [3]bool{true, true, false}},
		{"not_destination_ips", &security.Match{NotDestinationIps: []*security.Address{addr("127.0.0.2/32")}}, [3]bool{false, false, true}},
		{"cidr_range", &security.Match{DestinationIps: []*security.Address{{Address: netip.MustParseAddr("127.0.0.1").AsSlice(), Length: 24}}}, [3]bool{true, true, true}},
		{"destination_ports", &security.Match{DestinationPorts: []uint32{8080}}, [3]bool{true, true, false}},
		{"not_destination_ports", &security.Match{NotDestinationPorts: []uint32{8080}}, [3]bool{false, false, true}},
		{"ports are u16 (65536+8080 truncates to 8080)", &security.Match{DestinationPorts: []uint32{65536 + 8080}}, [3]bool{true, true, false}},
		{"a string match without a type is dropped: empty match", &security.Match{Namespaces: []*security.StringMatch{{}}}, [3]bool{false, false, false}},
		{"an invalid address is dropped", &security.Match{SourceIps: []*security.Address{{Address: []byte{1, 2, 3}, Length: 8}}, DestinationPorts: []uint32{8080}}, [3]bool{true, true, false}},
	}
	for _, f := range fields {
		p := ztPolicy(group([]*security.Match{f.m}))
		for i, c := range []rbacConn{ztPlain, ztTLS, ztTLSAlt} {
			if got := matches(p, c); got != f.want[i] {
				t.Errorf("%s, connection %d: got %v, want %v", f.name, i, got, f.want[i])
			}
		}
	}
	// string_match
	for _, row := range []struct {
		m    *security.StringMatch
		v    string
		want bool
	}{
		{exactSM("foo"), "foo", true}, {exactSM("foo"), "not", false}, {exactSM("foo"), "", false},
		{&security.StringMatch{MatchType: &security.StringMatch_Prefix{Prefix: "foo"}}, "foobar", true},
		{&security.StringMatch{MatchType: &security.StringMatch_Prefix{Prefix: "foo"}}, "notfoo", false},
		{&security.StringMatch{MatchType: &security.StringMatch_Suffix{Suffix: "foo"}}, "barfoo", true},
		{&security.StringMatch{MatchType: &security.StringMatch_Suffix{Suffix: "foo"}}, "foonot", false},
		{&security.StringMatch{MatchType: &security.StringMatch_Presence{}}, "foo", true},
		{&security.StringMatch{MatchType: &security.StringMatch_Presence{}}, "", false},
	} {
		if got := stringMatches(row.m, row.v); got != row.want {
			t.Errorf("%v on %q: got %v, want %v", row.m, row.v, got, row.want)
		}
	}
}

// TestZtunnelVerdict: which policies apply to a workload (namespace scope, global scope, the
// workload's list) and how ALLOW and DENY combine (state.rs assert_rbac).
func TestZtunnelVerdict(t *testing.T) {
	buyerP := Proxy{Pod: "buyer-e2e", Namespace: "shop", ServiceAccount: "buyer", IP: "10.244.0.11"}
	thiefP := Proxy{Pod: "thief-e2e", Namespace: "shop", ServiceAccount: "thief", IP: "10.244.0.12"}
	storeP := Proxy{Pod: "store-e2e", Namespace: "shop", ServiceAccount: "store", IP: "10.244.0.13"}
	otherP := Proxy{Pod: "other-e2e", Namespace: "other", ServiceAccount: "other", IP: "10.244.0.14"}
	wl := func(p Proxy, captured bool, policies ...string) *workloadapi.Workload {
		w := &workloadapi.Workload{Uid: p.Pod, Name: p.Pod, Namespace: p.Namespace, ServiceAccount: p.ServiceAccount,
			Addresses: [][]byte{netip.MustParseAddr(p.IP).AsSlice()}, AuthorizationPolicies: policies}
		if captured {
			w.TunnelProtocol = workloadapi.TunnelProtocol_HBONE
		}
		return w
	}
	fromBuyer := []*security.Match{{Principals: []*security.StringMatch{exactSM("cluster.local/ns/shop/sa/buyer")}}}
	port := func(p uint32) []*security.Match { return []*security.Match{{DestinationPorts: []uint32{p}}} }
	pol := func(ns, name string, scope security.Scope, action security.Action, groups ...*security.Group) *security.Authorization {
		return &security.Authorization{Name: name, Namespace: ns, Scope: scope, Action: action, Groups: groups}
	}
	state := func(pols map[string]*security.Authorization, wls ...*workloadapi.Workload) *ZtunnelState {
		s := newZtunnelState()
		for _, w := range wls {
			s.Workloads[w.Uid] = w
		}
		for k, p := range pols {
			s.Policies[k] = p
		}
		return s
	}
	allowBuyer3306 := pol("shop", "allow", security.Scope_WORKLOAD_SELECTOR, security.Action_ALLOW, group(fromBuyer, port(3306)))
	stripped := pol("shop", "l7", security.Scope_WORKLOAD_SELECTOR, security.Action_ALLOW) // an ALLOW whose rules istiod dropped (L7 fields)
	denyThief := pol("shop", "deny", security.Scope_NAMESPACE, security.Action_DENY, group([]*security.Match{{Principals: []*security.StringMatch{exactSM("cluster.local/ns/shop/sa/thief")}}}))
	globalAllowNothing := pol("istio-system", "global", security.Scope_GLOBAL, security.Action_ALLOW)
	rows := []struct {
		name string
		s    *ZtunnelState
		c    L4
		want bool
	}{
		{"no policy: allowed", state(nil, wl(storeP, true)), L4{From: thiefP, To: storeP, Port: 8080}, true},
		{"workload ALLOW: the source and port", state(map[string]*security.Authorization{"shop/allow": allowBuyer3306}, wl(storeP, true, "shop/allow")), L4{From: buyerP, To: storeP, Port: 3306}, true},
		{"workload ALLOW: another port", state(map[string]*security.Authorization{"shop/allow": allowBuyer3306}, wl(storeP, true, "shop/allow")), L4{From: buyerP, To: storeP, Port: 8080}, false},
		{"workload ALLOW: another source", state(map[string]*security.Authorization{"shop/allow": allowBuyer3306}, wl(storeP, true, "shop/allow")), L4{From: thiefP, To: storeP, Port: 3306}, false},
		{"workload ALLOW: plaintext", state(map[string]*security.Authorization{"shop/allow": allowBuyer3306}, wl(storeP, true, "shop/allow")), L4{From: buyerP, Plaintext: true, To: storeP, Port: 3306}, false},
		{"a workload policy not listed by the workload does not apply", state(map[string]*security.Authorization{"shop/allow": allowBuyer3306}, wl(storeP, true)), L4{From: thiefP, To: storeP, Port: 3306}, true},
		{"a listed policy not received is skipped", state(nil, wl(storeP, true, "shop/allow")), L4{From: thiefP, To: storeP, Port: 3306}, true},
		{"an ALLOW without rules allows nothing", state(map[string]*security.Authorization{"shop/l7": stripped}, wl(storeP, true, "shop/l7")), L4{From: buyerP, To: storeP, Port: 8080}, false},
		{"DENY wins over ALLOW", state(map[string]*security.Authorization{"shop/deny": denyThief, "shop/allow": pol("shop", "allow", security.Scope_WORKLOAD_SELECTOR, security.Action_ALLOW, group())}, wl(storeP, true, "shop/allow")), L4{From: thiefP, To: storeP, Port: 3306}, false},
		{"namespace DENY applies in its namespace only", state(map[string]*security.Authorization{"shop/deny": denyThief}, wl(otherP, true)), L4{From: thiefP, To: otherP, Port: 3306}, true},
		{"namespace DENY, not matching", state(map[string]*security.Authorization{"shop/deny": denyThief}, wl(storeP, true)), L4{From: buyerP, To: storeP, Port: 3306}, true},
		{"global ALLOW applies everywhere", state(map[string]*security.Authorization{"istio-system/global": globalAllowNothing}, wl(otherP, true)), L4{From: buyerP, To: otherP, Port: 80}, false},
		{"any ALLOW allows", state(map[string]*security.Authorization{"istio-system/global": globalAllowNothing, "shop/allow": allowBuyer3306}, wl(storeP, true, "shop/allow")), L4{From: buyerP, To: storeP, Port: 3306}, true},
	}
	for _, row := range rows {
		v, err := row.s.Verdict(row.c)
		if err != nil {
			t.Errorf("%s: %v", row.name, err)
			continue
		}
		if v.Allowed != row.want {
			t.Errorf("%s: %s: got %+v, want allowed=%v", row.name, row.c, v, row.want)
		}
	}
	// refused: not captured, unknown destination, dry-run
	if _, err := state(nil, wl(storeP, false)).Verdict(L4{From: buyerP, To: storeP, Port: 80}); err == nil {
		t.Error("a workload ztunnel does not capture: judged, want refused")
	}
	if _, err := state(nil).Verdict(L4{From: buyerP, To: storeP, Port: 80}); err == nil {
		t.Error("an unknown destination: judged, want refused")
	}
	dry := pol("shop", "dry", security.Scope_NAMESPACE, security.Action_DENY)
	dry.DryRun = true
	if _, err := state(map[string]*security.Authorization{"shop/dry": dry}, wl(storeP, true)).Verdict(L4{From: buyerP, To: storeP, Port: 80}); err == nil {
		t.Error("a dry-run policy: judged, want refused")
	}
	// Lines reports a plaintext over-allow of a connection expected denied
	s := state(map[string]*security.Authorization{"shop/deny": denyThief}, wl(storeP, true))
	lines, err := s.Lines(denyL4(L4{From: thiefP, To: storeP, Port: 3306}))
	if err != nil || len(lines) != 1 || !strings.Contains(lines[0], "over-allow: plaintext") {
		t.Errorf("DENY by principal only, plaintext: %v %v, want an over-allow", lines, err)
	}
}

// --- the waypoint's main_internal matcher and RBAC on the peer principal ---

func toChain(name string) *xdsmatcher.Matcher_OnMatch {
	return &xdsmatcher.Matcher_OnMatch{OnMatch: &xdsmatcher.Matcher_OnMatch_Action{Action: &xdscore.TypedExtensionConfig{
		Name: name, TypedConfig: mustAnyOf(wrapperspb.String(name))}}}
}

func exactMap(input string, m map[string]*xdsmatcher.Matcher_OnMatch, onNoMatch *xdsmatcher.Matcher_OnMatch) *xdsmatcher.Matcher {
	return &xdsmatcher.Matcher{OnNoMatch: onNoMatch, MatcherType: &xdsmatcher.Matcher_MatcherTree_{MatcherTree: &xdsmatcher.Matcher_MatcherTree{
		Input:    &xdscore.TypedExtensionConfig{Name: "in", TypedConfig: &anypb.Any{TypeUrl: input}},
		TreeType: &xdsmatcher.Matcher_MatcherTree_ExactMatchMap{ExactMatchMap: &xdsmatcher.Matcher_MatcherTree_MatchMap{Map: m}},
	}}}
}

func ipTree(ranges map[string]*xdsmatcher.Matcher_OnMatch) *xdsmatcher.Matcher {
	ipm := &xdsmatcher.IPMatcher{}
	for cidr, om := range ranges {
		p := netip.MustParsePrefix(cidr)
		ipm.RangeMatchers = append(ipm.RangeMatchers, &xdsmatcher.IPMatcher_IPRangeMatcher{
			Ranges: []*xdscore.CidrRange{{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))}}, OnMatch: om})
	}
	return &xdsmatcher.Matcher{MatcherType: &xdsmatcher.Matcher_MatcherTree_{MatcherTree: &xdsmatcher.Matcher_MatcherTree{
		Input:    &xdscore.TypedExtensionConfig{Name: "ip", TypedConfig: &anypb.Any{TypeUrl: typeDstIPInput}},
		TreeType: &xdsmatcher.Matcher_MatcherTree_CustomMatch{CustomMatch: &xdscore.TypedExtensionConfig{Name: "ip", TypedConfig: mustAnyOf(ipm)}},
	}}}
}

func peerPrincipal(id string) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_FilterState{FilterState: &matcherv3.FilterStateMatcher{
		Key: peerPrincipalKey, Matcher: &matcherv3.FilterStateMatcher_StringMatch{StringMatch: exact(id)}}}}
}

// waypointConfig is a waypoint as listener_waypoint.go builds it, for one Service VIP 10.96.0.10:
// port 8080 HTTP (no sniffing), port 9000 sniffed (HTTP or TCP chain), with RBAC filters that
// allow buyer GET /ok (HTTP) and nothing (TCP), principals read from filter state.
func waypointConfig(t *testing.T) *ProxyConfig {
	t.Helper()
	httpRules := allowRules(pathPermission(exact("/ok")), peerPrincipal(buyerID))
	nothing := &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW}
	connectRoutes := &routev3.RouteConfiguration{Name: "default", VirtualHosts: []*routev3.VirtualHost{{Name: "default", Domains: []string{"*"},
		Routes: []*routev3.Route{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_ConnectMatcher_{ConnectMatcher: &routev3.RouteMatch_ConnectMatcher{}}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: listenerMainInternal}}}}}}}}
	terminate := &listenerv3.Listener{Name: listenerConnectTerminate, FilterChains: []*listenerv3.FilterChain{{Name: "default",
		TransportSocket: mtlsSocket(t, true), Filters: []*listenerv3.Filter{hcm(t, connectRoutes)}}}}
	svc := "svc.shop.svc.cluster.local"
	chain := func(name string, filters ...*listenerv3.Filter) *listenerv3.FilterChain {
		return &listenerv3.FilterChain{Name: name, Filters: filters}
	}
	main := &listenerv3.Listener{Name: listenerMainInternal,
		ListenerFilters: []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.http_inspector", ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: typeHTTPInspector}}}},
		FilterChains: []*listenerv3.FilterChain{
			chain(WaypointChain("http", svc, 8080), hcm(t, nil, httpRBAC(t, "envoy.filters.http.rbac", httpRules))),
			chain(WaypointChain("http", svc, 9000), hcm(t, nil, httpRBAC(t, "envoy.filters.http.rbac", httpRules))),
			chain(WaypointChain("tcp", svc, 9000), netRBAC(t, "envoy.filters.network.rbac", nothing), tcpProxy(t, "inbound-vip|9000|tcp|"+svc)),
		},
		FilterChainMatcher: ipTree(map[string]*xdsmatcher.Matcher_OnMatch{
			"10.96.0.10/32": {OnMatch: &xdsmatcher.Matcher_OnMatch_Matcher{Matcher: exactMap(typeDstPortInput, map[string]*xdsmatcher.Matcher_OnMatch{
				"8080": toChain(WaypointChain("http", svc, 8080)),
				"9000": {OnMatch: &xdsmatcher.Matcher_OnMatch_Matcher{Matcher: exactMap(typeAppProtocolInput, map[string]*xdsmatcher.Matcher_OnMatch{
					"'http/1.1'": toChain(WaypointChain("http", svc, 9000)), "'h2c'": toChain(WaypointChain("http", svc, 9000)),
				}, toChain(WaypointChain("tcp", svc, 9000)))}},
			}, nil)}},
		}),
	}
	return &ProxyConfig{Listeners: map[string]*listenerv3.Listener{listenerConnectTerminate: terminate, listenerMainInternal: main}, Routes: map[string]*routev3.RouteConfiguration{}}
}

func TestWaypointEvaluator(t *testing.T) {
	cfg := waypointConfig(t)
	in, err := cfg.WaypointInbound()
	if err != nil {
		t.Fatal(err)
	}
	vip := "10.96.0.10"
	to := func(r Request) Request { r.To = vip; return r }
	for _, row := range []struct {
		r       Request
		version string
		chain   string
		allowed bool
	}{
		{to(get(buyer, 8080, "/ok")), "http/1.1", WaypointChain("http", "svc.shop.svc.cluster.local", 8080), true},
		{to(get(buyer, 8080, "/nope")), "http/1.1", WaypointChain("http", "svc.shop.svc.cluster.local", 8080), false},
		{to(get(thief, 8080, "/ok")), "http/1.1", WaypointChain("http", "svc.shop.svc.cluster.local", 8080), false},
		{to(tcp(buyer, 8080)), "", WaypointChain("http", "svc.shop.svc.cluster.local", 8080), false}, // bytes the connection manager cannot parse
		{to(get(buyer, 9000, "/ok")), "h2c", WaypointChain("http", "svc.shop.svc.cluster.local", 9000), true},
		{to(get(buyer, 9000, "/ok")), "http/1.0", WaypointChain("tcp", "svc.shop.svc.cluster.local", 9000), false},
		{to(get(buyer, 9000, "/ok")), "", WaypointChain("tcp", "svc.shop.svc.cluster.local", 9000), false},
		{to(get(buyer, 7000, "/ok")), "http/1.1", "", false}, // no such port: no chain
	} {
		o, err := in.Judge(row.r, row.version)
		if err != nil {
			t.Errorf("%s as %q: %v", row.r, row.version, err)
			continue
		}
		if o.Chain != row.chain || o.Allowed != row.allowed {
			t.Errorf("%s as %q: %s, want chain %q allowed=%v", row.r, row.version, o, row.chain, row.allowed)
		}
	}
	other := get(buyer, 8080, "/ok")
	other.To = "10.96.0.11"
	if o, err := in.Judge(other, "http/1.1"); err != nil || o.Chain != "" || o.Allowed {
		t.Errorf("another VIP: %s %v, want no chain", o, err)
	}
	// the sweep finds the sniffed port's undetected shapes, which land on the TCP chain (denied here)
	out, err := in.Sweep(to(get(buyer, 9000, "/ok")))
	if err != nil {
		t.Fatal(err)
	}
	chains := map[string]bool{}
	for _, o := range out {
		chains[o.Chain] = o.Allowed
	}
	if len(chains) != 2 || !chains[WaypointChain("http", "svc.shop.svc.cluster.local", 9000)] || chains[WaypointChain("tcp", "svc.shop.svc.cluster.local", 9000)] {
		t.Errorf("sweep of port 9000: %v", out)
	}

	// refused: an authenticated principal on main_internal, another filter state key, a plaintext HBONE listener
	for name, mutate := range map[string]func(*ProxyConfig){
		"authenticated principal": func(c *ProxyConfig) {
			c.Listeners[listenerMainInternal].FilterChains[0] = &listenerv3.FilterChain{Name: WaypointChain("http", "svc.shop.svc.cluster.local", 8080),
				Filters: []*listenerv3.Filter{hcm(t, nil, httpRBAC(t, "rbac", allowRules(anyPermissionRule(), principalID(buyerID))))}}
		},
		"other filter state": func(c *ProxyConfig) {
			p := peerPrincipal(buyerID)
			p.GetFilterState().Key = "other"
			c.Listeners[listenerMainInternal].FilterChains[0] = &listenerv3.FilterChain{Name: WaypointChain("http", "svc.shop.svc.cluster.local", 8080),
				Filters: []*listenerv3.Filter{hcm(t, nil, httpRBAC(t, "rbac", allowRules(anyPermissionRule(), p)))}}
		},
		"plaintext HBONE": func(c *ProxyConfig) {
			c.Listeners[listenerConnectTerminate].FilterChains[0].TransportSocket = nil
		},
		"RBAC on connect_terminate": func(c *ProxyConfig) {
			rc := c.Listeners[listenerConnectTerminate].FilterChains[0]
			rc.Filters = []*listenerv3.Filter{hcm(t, &routev3.RouteConfiguration{}, httpRBAC(t, "rbac", allowRules(anyPermissionRule(), anyPrincipalRule())))}
		},
	} {
		c := waypointConfig(t)
		mutate(c)
		in, err := c.WaypointInbound()
		if err == nil {
			_, err = in.Judge(to(get(buyer, 8080, "/ok")), "http/1.1")
		}
		if err == nil {
			t.Errorf("%s: judged, want refused", name)
		} else {
			t.Logf("%s: refused: %v", name, err)
		}
	}
}

// --- the harness against istiod ---

// shopApps creates a namespace's apps: Deployments buyer, thief (own service accounts), store-v1
// and store-v2 (service account store); Services store (both versions), store-v1, store-v2, each
// with http 8080 and tcp-mysql 3306.
func (cl *cluster) shopApps(ns string) {
	cl.t.Helper()
	ctx := context.Background()
	deploy := func(name, sa string, lbls map[string]string) {
		d := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To[int32](1),
				Selector: &metav1.LabelSelector{MatchLabels: lbls},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: lbls},
					Spec: corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app", Image: "app",
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "mysql", ContainerPort: 3306}}}}},
				},
			},
		}
		must(cl.t, cl.c.Create(ctx, d))
	}
	service := func(name string, sel map[string]string) {
		s := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.ServiceSpec{Selector: sel, Ports: []corev1.ServicePort{
				{Name: "http", Port: 8080, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP},
				{Name: "tcp-mysql", Port: 3306, TargetPort: intstr.FromInt32(3306), Protocol: corev1.ProtocolTCP},
			}},
		}
		must(cl.t, cl.c.Create(ctx, s))
	}
	deploy("buyer", "buyer", map[string]string{"app": "buyer"})
	deploy("thief", "thief", map[string]string{"app": "thief"})
	deploy("store-v1", "store", map[string]string{"app": "store", "version": "v1"})
	deploy("store-v2", "store", map[string]string{"app": "store", "version": "v2"})
	service("store", map[string]string{"app": "store"})
	service("store-v1", map[string]string{"app": "store", "version": "v1"})
	service("store-v2", map[string]string{"app": "store", "version": "v2"})
}

// expectNoXDSRejects: istiod counted no NACK from the harness's proxies.
func (cl *cluster) expectNoXDSRejects() {
	cl.t.Helper()
	ms, err := proc.Metrics("http://" + cl.istiodMon + "/metrics")
	must(cl.t, err)
	for _, s := range ms["pilot_total_xds_rejects"] {
		if s.Value != 0 {
			cl.t.Errorf("istiod reports pilot_total_xds_rejects{%s} %v", s.Labels, s.Value)
		}
	}
}

// deleteObject deletes an object if it exists.
func (cl *cluster) deleteObject(gvk schema.GroupVersionKind, namespace, name string) {
	cl.t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	u.SetNamespace(namespace)
	u.SetName(name)
	must(cl.t, client.IgnoreNotFound(cl.c.Delete(context.Background(), u)))
}

// TestAmbientHarness proves the harness on istiod, each verdict both ways: the fake ztunnel's L4
// verdicts for selector policies (an L4 ALLOW; an ALLOW with an HTTP field, which istiod drops
// for ztunnel), the waypoint's RBAC for a targetRefs policy, the waypoint's routes for an
// HTTPRoute attached to a Service and istiod's status on it, and the ztunnel watch.
func TestAmbientHarness(t *testing.T) {
	cl := newAmbientCluster(t, false)
	cl.namespace("shop", nil)
	cl.shopApps("shop")
	cl.joinAmbient("shop")
	buyerP := cl.registerAmbient("shop", "buyer")
	thiefP := cl.registerAmbient("shop", "thief")
	v1 := cl.registerAmbient("shop", "store-v1")
	cl.registerAmbient("shop", "store-v2")
	// a namespace outside ambient mode: istio-cni leaves its pods alone, ztunnel does not capture them
	cl.namespace("outside", nil)
	cl.shopApps("outside")
	outsider := cl.registerAmbient("outside", "buyer")

	// ztunnel, no policy: everything gets through
	cl.expectL4("ambient, no policy",
		allowL4(L4{From: buyerP, To: v1, Port: 3306}), allowL4(L4{From: thiefP, To: v1, Port: 8080}),
		allowL4(L4{From: thiefP, Plaintext: true, To: v1, Port: 3306}))

	// an L4 ALLOW: buyer to store on 3306 only
	cl.applyYAML(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: store-l4, namespace: shop}
spec:
  selector: {matchLabels: {app: store}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/buyer"]}}]
    to: [{operation: {ports: ["3306"]}}]
`)
	cl.expectL4("L4 ALLOW buyer -> store:3306",
		allowL4(L4{From: buyerP, To: v1, Port: 3306}),
		denyL4(L4{From: buyerP, To: v1, Port: 8080}),
		denyL4(L4{From: thiefP, To: v1, Port: 3306}),
		denyL4(L4{From: buyerP, Plaintext: true, To: v1, Port: 3306}),
		allowL4(L4{From: thiefP, To: buyerP, Port: 8080}), // not selected
		denyL4(L4{From: outsider, Plaintext: true, To: v1, Port: 3306}))
	s0, err := fetchZtunnel(context.Background(), cl.istiodGRPC)
	must(t, err)
	if v, err := s0.Verdict(L4{From: buyerP, To: outsider, Port: 8080}); err == nil || !strings.Contains(err.Error(), "not captured") {
		t.Errorf("to a pod outside ambient mode: %+v %v, want refused as not captured", v, err)
	}
	cl.expectPolicyCondition("shop", "store-l4", "ZtunnelAccepted", "True/Accepted")

	// an ALLOW with an HTTP field: istiod drops the rule for ztunnel (ambient/authorization.go
	// handleRule: "L7 policies never match for ALLOW") and says so on the policy
	l7 := `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: store-l7, namespace: shop}
spec:
  selector: {matchLabels: {app: store}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/buyer"]}}]
    to: [{operation: {ports: ["8080"]%s}}]
`
	cl.applyYAML(fmt.Sprintf(l7, `, paths: ["/ok"]`))
	cl.expectPolicyCondition("shop", "store-l7", "ZtunnelAccepted", "UnsupportedValue", "ztunnel does not support HTTP attributes (found: paths)")
	cl.expectL4("ALLOW with paths: nothing more at L4",
		denyL4(L4{From: buyerP, To: v1, Port: 8080}), allowL4(L4{From: buyerP, To: v1, Port: 3306}))
	s, err := fetchZtunnel(context.Background(), cl.istiodGRPC)
	must(t, err)
	if p := s.Policies["shop/store-l7"]; p == nil || len(p.Groups) != 0 {
		t.Errorf("istiod sent ztunnel %v for the ALLOW with paths, want the policy without groups", p)
	}
	cl.applyYAML(fmt.Sprintf(l7, ""))
	cl.expectL4("the same ALLOW without paths",
		allowL4(L4{From: buyerP, To: v1, Port: 8080}), denyL4(L4{From: thiefP, To: v1, Port: 8080}))

	// a waypoint for the store Service
	wp := cl.addWaypoint("shop", "waypoint")
	cl.useWaypoint("shop", "store", wp)
	storeHost := "store.shop.svc.cluster.local"
	// PILOT_AUTO_ALLOW_WAYPOINT_POLICY is off by default: the waypoint's identity is one more
	// source the workload's ALLOW policies must admit (the waypoint -> pod hop)
	cl.expectL4("waypoint -> store, not admitted by the selector policies",
		denyL4(L4{From: wp.Proxy, To: v1, Port: 8080}), allowL4(L4{From: buyerP, To: v1, Port: 8080}))
	okReq := get(buyerP, 8080, "/ok")
	cl.expectWaypointAccess("waypoint, no policy on it", wp, "shop", "store",
		allow(okReq), allow(get(buyerP, 8080, "/nope")), allow(get(thiefP, 8080, "/ok")))
	cl.expectWaypointRoutes("waypoint, no route", wp, storeHost, 8080, "default -> "+waypointCluster("store", "shop", 8080, true)+"=100")

	cl.applyYAML(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: store-http, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: store}]
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/buyer"]}}]
    to: [{operation: {methods: [GET], paths: ["/ok"]}}]
`)
	cl.expectWaypointAccess("targetRefs ALLOW buyer GET /ok", wp, "shop", "store",
		allow(okReq),
		deny(get(buyerP, 8080, "/nope")),
		deny(httpReq(buyerP, 8080, "POST", "/ok")),
		deny(get(thiefP, 8080, "/ok")),
		deny(tcp(buyerP, 3306))) // the TCP chain's RBAC: the HTTP rule allows nothing there
	cl.expectPolicyCondition("shop", "store-http", "WaypointAccepted", "True", "bound to shop/waypoint")
	cfg, err := fetchWaypoint(context.Background(), cl.istiodGRPC, wp)
	must(t, err)
	if !cfg.HasWaypointRBAC(storeHost, 8080) {
		t.Error("the waypoint's chain for store:8080 has no RBAC filter")
	}

	// an HTTPRoute attached to the Service: weighted backends at the waypoint, Accepted by istiod
	cl.applyYAML(`
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: store, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: store, port: 8080}]
  rules:
  - backendRefs:
    - {name: store-v1, port: 8080, weight: 25}
    - {name: store-v2, port: 8080, weight: 75}
`)
	// the backends have no waypoint of their own (only store is labelled): outbound clusters
	cl.expectWaypointRoutes("HTTPRoute 25/75", wp, storeHost, 8080,
		"default -> "+waypointCluster("store-v1", "shop", 8080, false)+"=25 "+waypointCluster("store-v2", "shop", 8080, false)+"=75")
	parents := cl.expectRouteAccepted("HTTPRoute", "shop", "store")
	t.Logf("HTTPRoute shop/store parents: %+v", parents)

	// the guards see every state istiod pushes: a change that allows a guarded connection or
	// request, even for a moment, is a violation; one that does not leaves the guard clean
	thiefDB := L4{From: thiefP, To: v1, Port: 3306}
	gDB, gHTTP := cl.guardL4(thiefDB), cl.guardL4(L4{From: thiefP, To: v1, Port: 8080})
	gWP := cl.guardWaypoint(wp, "shop", "store", get(thiefP, 8080, "/ok"))
	cl.applyYAML(`
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: thief-3306, namespace: shop}
spec:
  selector: {matchLabels: {app: store}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/thief"]}}]
    to: [{operation: {ports: ["3306"]}}]
`)
	cl.expectL4("thief allowed on 3306", allowL4(thiefDB))
	cl.deleteObject(gvkAuthzPol, "shop", "thief-3306")
	cl.expectL4("thief denied on 3306 again", denyL4(thiefDB))
	violations, unjudged := gDB.Stop()
	if len(violations) == 0 || len(unjudged) > 0 {
		t.Errorf("guard of %s: violations %q, unjudged %q; want violations (it was allowed for a while)", thiefDB, violations, unjudged)
	}
	if violations, unjudged := gHTTP.Stop(); len(violations) > 0 || len(unjudged) > 0 {
		t.Errorf("guard of thief -> store:8080: violations %q, unjudged %q; want none", violations, unjudged)
	}
	if v := gWP.Stop(); len(v) > 0 {
		t.Errorf("guard of thief GET /ok at the waypoint while ztunnel policies changed: %q", v)
	}
	gWP = cl.guardWaypoint(wp, "shop", "store", get(thiefP, 8080, "/ok"))
	cl.deleteObject(gvkAuthzPol, "shop", "store-http")
	cl.expectWaypointAccess("targetRefs policy deleted", wp, "shop", "store", allow(get(thiefP, 8080, "/ok")))
	if v := gWP.Stop(); len(v) == 0 {
		t.Error("guard of thief GET /ok at the waypoint while its policy was deleted: no violation, want one")
	}
	// removing the waypoint: the Service goes direct again, nothing is left behind
	cl.removeWaypoint(wp)
	eventually(t, "istiod unbinds store from the removed waypoint", func() error {
		s, err := fetchZtunnel(context.Background(), cl.istiodGRPC)
		if err != nil {
			return err
		}
		if svc := s.Services["shop/"+storeHost]; svc == nil || svc.Waypoint != nil {
			return fmt.Errorf("store: %v", svc)
		}
		if w := s.Workloads["Kubernetes//Pod/shop/"+wp.Pod]; w != nil {
			return fmt.Errorf("the waypoint's pod is still a workload")
		}
		return nil
	})
	cl.expectNoXDSRejects()
}
