//go:build e2e

package e2e

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	httpinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Unit tests of the Envoy evaluator, without a cluster: hand-built listeners and filters judged
// against truth tables taken from Envoy's documented semantics (the proto comments of
// go-control-plane and the behaviour of Envoy's matchers and filter chain match).

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

var (
	buyer = Proxy{Pod: "buyer-e2e", Namespace: "shop", ServiceAccount: "buyer", IP: "10.244.0.11"}
	thief = Proxy{Pod: "thief-e2e", Namespace: "shop", ServiceAccount: "thief", IP: "10.244.0.12"}
)

const buyerID = "spiffe://cluster.local/ns/shop/sa/buyer"

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func regex(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: s}}}
}

func principalID(id string) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: exact(id)}}}
}

func anyPrincipalRule() *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
}
func anyPermissionRule() *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}
}

func pathPermission(m *matcherv3.StringMatcher) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: m}}}}
}

func headerPermission(h *routev3.HeaderMatcher) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: h}}
}

// allowRules is an ALLOW RBAC with one policy.
func allowRules(perm *rbacv3.Permission, prin *rbacv3.Principal) *rbacv3.RBAC {
	return &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
		"p": {Permissions: []*rbacv3.Permission{perm}, Principals: []*rbacv3.Principal{prin}},
	}}
}

func netRBAC(t *testing.T, name string, rules *rbacv3.RBAC) *listenerv3.Filter {
	t.Helper()
	return &listenerv3.Filter{Name: name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, &rbacnetv3.RBAC{StatPrefix: "x", Rules: rules})}}
}

func tcpProxy(t *testing.T, cluster string) *listenerv3.Filter {
	t.Helper()
	return &listenerv3.Filter{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t,
		&tcpproxyv3.TcpProxy{StatPrefix: "x", ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster}})}}
}

func httpRBAC(t *testing.T, name string, rules *rbacv3.RBAC) *hcmv3.HttpFilter {
	t.Helper()
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &rbachttpv3.RBAC{Rules: rules})}}
}

func inboundRoutes() *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: "inbound|8080||", VirtualHosts: []*routev3.VirtualHost{{
		Name: "inbound|http|8080", Domains: []string{"*"},
		Routes: []*routev3.Route{{
			Name:   "default",
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "inbound|8080||"}}},
		}},
	}}}
}

// hcm is an HTTP connection manager with the given filters, then the router, and inline routes.
func hcm(t *testing.T, rc *routev3.RouteConfiguration, filters ...*hcmv3.HttpFilter) *listenerv3.Filter {
	t.Helper()
	if rc == nil {
		rc = inboundRoutes()
	}
	filters = append(filters, &hcmv3.HttpFilter{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{})}})
	h := &hcmv3.HttpConnectionManager{StatPrefix: "x", HttpFilters: filters, RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc}}
	return &listenerv3.Filter{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, h)}}
}

func mtlsSocket(t *testing.T, requireCert bool) *corev3.TransportSocket {
	t.Helper()
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t,
		&tlsv3.DownstreamTlsContext{RequireClientCertificate: wrapperspb.Bool(requireCert)})}}
}

type chainSpec struct {
	name      string
	port      uint32 // 0: any
	transport string
	alpn      []string
	sni       []string
	tls       *corev3.TransportSocket
	filters   []*listenerv3.Filter
}

func (s chainSpec) build() *listenerv3.FilterChain {
	m := &listenerv3.FilterChainMatch{TransportProtocol: s.transport, ApplicationProtocols: s.alpn, ServerNames: s.sni}
	if s.port != 0 {
		m.DestinationPort = wrapperspb.UInt32(s.port)
	}
	return &listenerv3.FilterChain{Name: s.name, FilterChainMatch: m, TransportSocket: s.tls, Filters: s.filters}
}

// inspectors are Istio's listener filters: TLS and HTTP inspectors on every port.
func inspectors(t *testing.T) []*listenerv3.ListenerFilter {
	t.Helper()
	return []*listenerv3.ListenerFilter{
		{Name: "envoy.filters.listener.tls_inspector", ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(t, &tlsinspectorv3.TlsInspector{})}},
		{Name: "envoy.filters.listener.http_inspector", ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(t, &httpinspectorv3.HttpInspector{})}},
	}
}

func config(t *testing.T, lfs []*listenerv3.ListenerFilter, chains ...chainSpec) *ProxyConfig {
	t.Helper()
	l := &listenerv3.Listener{Name: "virtualInbound", ListenerFilters: lfs, ContinueOnListenerFiltersTimeout: true}
	for _, c := range chains {
		l.FilterChains = append(l.FilterChains, c.build())
	}
	return &ProxyConfig{Listeners: map[string]*listenerv3.Listener{"virtualInbound": l}, Routes: map[string]*routev3.RouteConfiguration{}}
}

func reqGet(from Proxy, port uint32, path string, headers ...string) Request {
	r := get(from, port, path, headers...)
	r.To = "10.244.0.100"
	return r
}

func tcpConn(from Proxy, port uint32) Request {
	r := tcp(from, port)
	r.To = "10.244.0.100"
	return r
}

// TestHeaderMatcherTruthTable: Envoy's HeaderMatcher (route_components.proto and
// HeaderUtility::matchHeaders), including the documented examples of treat_missing_header_as_empty.
func TestHeaderMatcherTruthTable(t *testing.T) {
	rng := func(start, end int64) *routev3.HeaderMatcher {
		return &routev3.HeaderMatcher{Name: "h", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: start, End: end}}}
	}
	str := func(m *matcherv3.StringMatcher) *routev3.HeaderMatcher {
		return &routev3.HeaderMatcher{Name: "h", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: m}}
	}
	present := func(p bool) *routev3.HeaderMatcher {
		return &routev3.HeaderMatcher{Name: "h", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: p}}
	}
	invert := func(h *routev3.HeaderMatcher) *routev3.HeaderMatcher { h.InvertMatch = true; return h }
	empty := func(h *routev3.HeaderMatcher) *routev3.HeaderMatcher { h.TreatMissingHeaderAsEmpty = true; return h }
	const missing = "\x00missing"
	rows := []struct {
		name  string
		m     *routev3.HeaderMatcher
		value string
		want  bool
	}{
		// the proto's examples of treat_missing_header_as_empty
		{"header1: range inverted, missing treated as empty", empty(invert(rng(0, 10))), missing, true},
		{"header2: range inverted, missing not treated as empty", invert(rng(0, 10)), missing, false},
		{"header3: regex ^$, missing treated as empty", empty(str(regex("^$"))), missing, true},
		{"header4: regex ^$, missing not treated as empty", str(regex("^$")), missing, false},
		// a missing header under invert_match does not match (the audited over-allow)
		{"exact inverted, missing", invert(str(exact("a"))), missing, false},
		{"exact inverted, other value", invert(str(exact("a"))), "b", true},
		{"exact inverted, same value", invert(str(exact("a"))), "a", false},
		{"exact inverted, missing treated as empty", empty(invert(str(exact("a")))), missing, true},
		{"exact, missing", str(exact("a")), missing, false},
		{"exact, empty value", str(exact("")), "", true},
		// present_match
		{"present, missing", present(true), missing, false},
		{"present, there", present(true), "x", true},
		{"present inverted, missing", invert(present(true)), missing, true},
		{"present inverted, there", invert(present(true)), "x", false},
		{"absent, missing", present(false), missing, true},
		{"absent, there", present(false), "x", false},
		{"absent inverted, missing", invert(present(false)), missing, false},
		{"absent inverted, there", invert(present(false)), "x", true},
		{"present, missing treated as empty", empty(present(true)), missing, true},
		{"no specifier, there", &routev3.HeaderMatcher{Name: "h"}, "x", true},
		{"no specifier, missing", &routev3.HeaderMatcher{Name: "h"}, missing, false},
		// range_match: [-10,0) matches -1, not 0, "somestring", 10.9, "-1somestring"
		{"range -1", rng(-10, 0), "-1", true},
		{"range 0", rng(-10, 0), "0", false},
		{"range somestring", rng(-10, 0), "somestring", false},
		{"range 10.9", rng(-10, 0), "10.9", false},
		{"range -1somestring", rng(-10, 0), "-1somestring", false},
		{"range inverted -1", invert(rng(-10, 0)), "-1", false},
		// the deprecated specifiers, still served
		{"exact_match empty: any value", &routev3.HeaderMatcher{Name: "h", HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: ""}}, "x", true},
		{"prefix_match", &routev3.HeaderMatcher{Name: "h", HeaderMatchSpecifier: &routev3.HeaderMatcher_PrefixMatch{PrefixMatch: "ab"}}, "abcd", true},
		{"suffix_match", &routev3.HeaderMatcher{Name: "h", HeaderMatchSpecifier: &routev3.HeaderMatcher_SuffixMatch{SuffixMatch: "cd"}}, "abc", false},
		{"contains_match", &routev3.HeaderMatcher{Name: "h", HeaderMatchSpecifier: &routev3.HeaderMatcher_ContainsMatch{ContainsMatch: "bc"}}, "abcd", true},
		{"safe_regex_match is a full match", &routev3.HeaderMatcher{Name: "h", HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &matcherv3.RegexMatcher{Regex: `\d{3}`}}}, "1234", false},
		{"safe_regex_match inverted", invert(&routev3.HeaderMatcher{Name: "h", HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &matcherv3.RegexMatcher{Regex: `\d{3}`}}}), "1234", true},
	}
	for _, row := range rows {
		cx := &rbacContext{headers: map[string]string{}}
		if row.value != missing {
			cx.headers["h"] = row.value
		}
		got, err := headerMatch(row.m, cx)
		if err != nil {
			t.Errorf("%s: %v", row.name, err)
			continue
		}
		if got != row.want {
			t.Errorf("%s: got %v, want %v", row.name, got, row.want)
		}
	}
	// header names are case-insensitive; "host" is :authority
	cx := (&rbacContext{}).withHeaders(Request{Method: "GET", Path: "/", Headers: map[string]string{"Host": "a.example", "X-Y": "1"}})
	for name, want := range map[string]bool{":authority": true, "host": false, "x-y": true, "X-Y": true} {
		got, _ := headerMatch(&routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}, cx)
		if got != want {
			t.Errorf("header %q present: got %v, want %v", name, got, want)
		}
	}
}

// TestStringMatcherTruthTable: StringMatcherImpl: ignore_case folds ASCII only; safe_regex is RE2
// over the whole value and refuses ignore_case.
func TestStringMatcherTruthTable(t *testing.T) {
	ic := func(m *matcherv3.StringMatcher) *matcherv3.StringMatcher { m.IgnoreCase = true; return m }
	rows := []struct {
		name  string
		m     *matcherv3.StringMatcher
		value string
		want  bool
	}{
		{"exact", exact("abc"), "abc", true},
		{"exact is case-sensitive", exact("abc"), "ABC", false},
		{"exact ignore_case", ic(exact("abc")), "AbC", true},
		{"ignore_case does not fold the Kelvin sign", ic(exact("k")), "\u212a", false},
		{"ignore_case does not fold non-ASCII letters", ic(exact("é")), "É", false},
		{"ignore_case does not fold ß", ic(exact("ss")), "ß", false},
		{"prefix ignore_case", ic(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "/API"}}), "/api/x", true},
		{"prefix ignore_case, non-ASCII", ic(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "/Ä"}}), "/ä", false},
		{"suffix", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".json"}}, "/a.json", true},
		{"contains ignore_case", ic(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "container"}}), "abc-ContAineR-str-def", true},
		{"contains", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "container"}}, "other", false},
		{"safe_regex foo.* on foo", regex("foo.*"), "foo", true},
		{"safe_regex foo.* on foobar", regex("foo.*"), "foobar", true},
		{"safe_regex foo.* on bar", regex("foo.*"), "bar", false},
		{"safe_regex is a full match", regex("foo"), "foobar", false},
		{"safe_regex alternation is anchored as a whole", regex("a.*|b"), "ab", true},
		{"safe_regex alternation is anchored as a whole (no)", regex("a|b"), "ab", false},
	}
	for _, row := range rows {
		got, err := stringMatch(row.m, row.value)
		if err != nil {
			t.Errorf("%s: %v", row.name, err)
			continue
		}
		if got != row.want {
			t.Errorf("%s: got %v, want %v", row.name, got, row.want)
		}
	}
	if _, err := stringMatch(ic(regex("foo")), "foo"); err == nil || !strings.Contains(err.Error(), "ignore_case has no effect for safe_regex") {
		t.Errorf("safe_regex with ignore_case: got %v, want Envoy's rejection", err)
	}
}

// TestAuthenticatedTruthTable: AuthenticatedMatcher: no TLS never matches; no name matches any TLS
// peer (one without certificate too); a name matches a URI SAN, a DNS SAN or the subject.
func TestAuthenticatedTruthTable(t *testing.T) {
	withCert := &tlsPeer{uriSANs: []string{buyerID}}
	noCert := &tlsPeer{}
	rows := []struct {
		name string
		m    *matcherv3.StringMatcher
		ssl  *tlsPeer
		want bool
	}{
		{"no TLS, any name", nil, nil, false},
		{"no TLS, a name", exact(buyerID), nil, false},
		{"TLS without certificate, any name", nil, noCert, true},
		{"TLS without certificate, a name", exact(buyerID), noCert, false},
		{"TLS without certificate, a regex matching the empty subject", regex(".*"), noCert, true},
		{"certificate, its name", exact(buyerID), withCert, true},
		{"certificate, another name", exact("spiffe://cluster.local/ns/shop/sa/thief"), withCert, false},
		{"certificate, a prefix", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://cluster.local/ns/shop/"}}, withCert, true},
		{"certificate, DNS SAN", exact("buyer.shop"), &tlsPeer{dnsSANs: []string{"buyer.shop"}}, true},
	}
	for _, row := range rows {
		got, err := authenticated(row.m, row.ssl)
		if err != nil {
			t.Errorf("%s: %v", row.name, err)
			continue
		}
		if got != row.want {
			t.Errorf("%s: got %v, want %v", row.name, got, row.want)
		}
	}
}

// TestRBACActions: no rules = not enforced; ALLOW needs a matching policy; DENY needs none; LOG
// allows; a CEL condition is refused.
func TestRBACActions(t *testing.T) {
	cx := (&rbacContext{ssl: &tlsPeer{uriSANs: []string{buyerID}}, dstPort: 80}).withHeaders(Request{Method: "GET", Path: "/a"})
	matching := allowRules(pathPermission(exact("/a")), principalID(buyerID))
	other := allowRules(pathPermission(exact("/b")), principalID(buyerID))
	deny := func(r *rbacv3.RBAC) *rbacv3.RBAC {
		r = proto.Clone(r).(*rbacv3.RBAC)
		r.Action = rbacv3.RBAC_DENY
		return r
	}
	log := func(r *rbacv3.RBAC) *rbacv3.RBAC {
		r = proto.Clone(r).(*rbacv3.RBAC)
		r.Action = rbacv3.RBAC_LOG
		return r
	}
	rows := []struct {
		name  string
		rules *rbacv3.RBAC
		want  bool
	}{
		{"no rules", nil, true},
		{"ALLOW without policies", &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW}, false},
		{"DENY without policies", &rbacv3.RBAC{Action: rbacv3.RBAC_DENY}, true},
		{"ALLOW, a policy matches", matching, true},
		{"ALLOW, no policy matches", other, false},
		{"DENY, a policy matches", deny(matching), false},
		{"DENY, no policy matches", deny(other), true},
		{"LOG, a policy matches", log(matching), true},
		{"ALLOW, permission matches but not the principal", allowRules(pathPermission(exact("/a")), principalID("spiffe://cluster.local/ns/shop/sa/thief")), false},
		{"ALLOW, not_rule", allowRules(&rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: pathPermission(exact("/b"))}}, principalID(buyerID)), true},
		{"ALLOW, destination port", allowRules(&rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 80}}, anyPrincipalRule()), true},
		{"ALLOW, destination port range excludes its end", allowRules(&rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPortRange{DestinationPortRange: &typev3.Int32Range{Start: 70, End: 80}}}, anyPrincipalRule()), false},
	}
	for _, row := range rows {
		got, err := evalRBAC(row.rules, cx)
		if err != nil {
			t.Errorf("%s: %v", row.name, err)
			continue
		}
		if got != row.want {
			t.Errorf("%s: got %v, want %v", row.name, got, row.want)
		}
	}
	cel := proto.Clone(matching).(*rbacv3.RBAC)
	setEmpty(cel.Policies["p"], "condition")
	if _, err := evalRBAC(cel, cx); err == nil {
		t.Error("a CEL condition was evaluated, want it refused")
	}
	meta := proto.Clone(other).(*rbacv3.RBAC)
	meta.Policies["q"] = &rbacv3.Policy{Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Metadata{}}}, Principals: []*rbacv3.Principal{anyPrincipalRule()}}
	if _, err := evalRBAC(meta, cx); err == nil {
		t.Error("a metadata permission was evaluated, want it refused")
	}
}

// TestNetworkRBACSeesNoHeaders: a network RBAC filter is given no headers, whatever the client
// sends: header and path permissions see nothing, and a missing header under invert_match does not
// match.
func TestNetworkRBACSeesNoHeaders(t *testing.T) {
	for _, tc := range []struct {
		name string
		perm *rbacv3.Permission
		want bool
	}{
		{":method present", headerPermission(&routev3.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}), false},
		{":path exact", headerPermission(&routev3.HeaderMatcher{Name: ":path", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("/ok")}}), false},
		{"url_path", pathPermission(exact("/ok")), false},
		{"not url_path", &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: pathPermission(exact("/ok"))}}, true},
		{"inverted exact on a header", headerPermission(&routev3.HeaderMatcher{Name: "x-user", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("evil")}}), false},
		{"header absent", headerPermission(&routev3.HeaderMatcher{Name: "x-user", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}}), true},
	} {
		cfg := config(t, inspectors(t), chainSpec{name: "tcp", port: 9000, transport: "tls", tls: mtlsSocket(t, true),
			filters: []*listenerv3.Filter{netRBAC(t, "rbac", allowRules(tc.perm, principalID(buyerID))), tcpProxy(t, "inbound|9000||")}})
		// an HTTP request whose bytes reach the TCP chain: the filter still sees no header
		r := reqGet(buyer, 9000, "/ok", "x-user", "good")
		for _, req := range []Request{r, tcpConn(buyer, 9000)} {
			got, err := cfg.Verdict(req)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if got != tc.want {
				t.Errorf("%s, %s: got %v, want %v", tc.name, req, got, tc.want)
			}
		}
	}
	m := &rbacnetv3.RBAC{StatPrefix: "x"}
	cfg := config(t, inspectors(t), chainSpec{name: "tcp", port: 9000, transport: "tls", tls: mtlsSocket(t, true), filters: []*listenerv3.Filter{
		{Name: "rbac", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, m)}}, tcpProxy(t, "inbound|9000||")}})
	if ok, err := cfg.Verdict(tcpConn(buyer, 9000)); err != nil || !ok {
		t.Errorf("network RBAC without rules: got %v, %v; want allowed (not enforced)", ok, err)
	}
	setEmpty(m, "matcher")
	cfg = config(t, inspectors(t), chainSpec{name: "tcp", port: 9000, transport: "tls", tls: mtlsSocket(t, true), filters: []*listenerv3.Filter{
		{Name: "rbac", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, m)}}, tcpProxy(t, "inbound|9000||")}})
	if ok, err := cfg.Verdict(tcpConn(buyer, 9000)); err == nil {
		t.Errorf("network RBAC with the matcher API: judged (allowed=%v), want refused", ok)
	}
}

// setEmpty sets a message field to an empty message (present, nothing in it), by name.
func setEmpty(m proto.Message, field string) {
	r := m.ProtoReflect()
	fd := r.Descriptor().Fields().ByName(protoreflect.Name(field))
	r.Set(fd, r.NewField(fd))
}

// TestChainSelection: Envoy's filter chain match: port first, then transport, then ALPN; the most
// specific value wins and a step that leaves no chain closes the connection: no backtracking to a
// less specific port or transport.
func TestChainSelection(t *testing.T) {
	allowAll := func() []*listenerv3.Filter { return []*listenerv3.Filter{tcpProxy(t, "InboundPassthroughCluster")} }
	denyAll := func() []*listenerv3.Filter {
		return []*listenerv3.Filter{netRBAC(t, "deny", &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW}), tcpProxy(t, "inbound|80||")}
	}
	httpOnly := func() []*listenerv3.Filter {
		return []*listenerv3.Filter{hcm(t, nil, httpRBAC(t, "rbac", allowRules(pathPermission(exact("/ok")), principalID(buyerID))))}
	}

	t.Run("a port's chains, never the catch-all", func(t *testing.T) {
		cfg := config(t, inspectors(t),
			chainSpec{name: "80-http", port: 80, transport: "tls", alpn: mtlsHTTP, tls: mtlsSocket(t, true), filters: httpOnly()},
			chainSpec{name: "catchall", transport: "tls", tls: mtlsSocket(t, true), filters: allowAll()})
		// a TCP client's ALPN matches no chain of port 80: the connection is closed, the
		// catch-all is not tried
		o := judge(t, cfg, tcpConn(buyer, 80), sidecarConn(tcpConn(buyer, 80)))
		if o.Allowed || o.Chain != "" {
			t.Errorf("TCP on an HTTP-only port: %s; want no chain", o)
		}
		// a port without chains uses the catch-all
		if o := judge(t, cfg, tcpConn(buyer, 81), sidecarConn(tcpConn(buyer, 81))); o.Chain != "catchall" || !o.Allowed {
			t.Errorf("port without chains: %s; want the catch-all", o)
		}
	})

	t.Run("the port's TCP chain judges an HTTP request sent as TCP", func(t *testing.T) {
		cfg := config(t, inspectors(t),
			chainSpec{name: "80-http", port: 80, transport: "tls", alpn: mtlsHTTP, tls: mtlsSocket(t, true), filters: httpOnly()},
			chainSpec{name: "80-tcp", port: 80, transport: "tls", tls: mtlsSocket(t, true), filters: denyAll()},
			chainSpec{name: "catchall-http", transport: "tls", alpn: mtlsHTTP, tls: mtlsSocket(t, true), filters: []*listenerv3.Filter{hcm(t, nil)}})
		r := reqGet(buyer, 80, "/ok")
		if o := judge(t, cfg, r, Conn{TLS: true, Cert: true, ALPN: sidecarTCPALPN}); o.Chain != "80-tcp" || o.Allowed {
			t.Errorf("HTTP bytes with a TCP ALPN: %s; want denied on 80-tcp", o)
		}
		if o := judge(t, cfg, r, sidecarConn(r)); o.Chain != "80-http" || !o.Allowed {
			t.Errorf("HTTP with Istio's HTTP ALPN: %s; want allowed on 80-http", o)
		}
	})

	t.Run("transport before ALPN, no backtracking", func(t *testing.T) {
		cfg := config(t, inspectors(t),
			chainSpec{name: "tls-h2", port: 80, transport: "tls", alpn: []string{"h2"}, filters: allowAll()},
			chainSpec{name: "plain", port: 80, transport: "raw_buffer", filters: allowAll()},
			chainSpec{name: "any-transport", port: 80, alpn: []string{"http/1.1"}, filters: allowAll()})
		r := tcpConn(buyer, 80)
		for _, tc := range []struct {
			conn Conn
			want string
		}{
			{Conn{TLS: true, ALPN: []string{"h2"}}, "tls-h2"},
			{Conn{TLS: true, ALPN: []string{"http/1.1"}}, ""}, // "tls" is more specific than any transport: any-transport is not tried
			{Conn{}, "plain"},
			{Conn{TLS: true, Slow: true}, "plain"}, // the TLS inspector saw nothing: raw_buffer
		} {
			if o := judge(t, cfg, r, tc.conn); o.Chain != tc.want {
				t.Errorf("%s: chain %q, want %q", tc.conn, o.Chain, tc.want)
			}
		}
	})

	t.Run("ALPN: the first offered protocol a chain names", func(t *testing.T) {
		cfg := config(t, inspectors(t),
			chainSpec{name: "x", port: 80, transport: "tls", alpn: []string{"x"}, filters: allowAll()},
			chainSpec{name: "y", port: 80, transport: "tls", alpn: []string{"y"}, filters: allowAll()},
			chainSpec{name: "any", port: 80, transport: "tls", filters: allowAll()})
		for _, tc := range []struct {
			alpn []string
			want string
		}{{[]string{"y", "x"}, "y"}, {[]string{"z", "x"}, "x"}, {[]string{"z"}, "any"}, {nil, "any"}} {
			if o := judge(t, cfg, tcpConn(buyer, 80), Conn{TLS: true, ALPN: tc.alpn}); o.Chain != tc.want {
				t.Errorf("alpn %v: chain %q, want %q", tc.alpn, o.Chain, tc.want)
			}
		}
	})

	t.Run("server name: exact, then wildcard, then any", func(t *testing.T) {
		cfg := config(t, inspectors(t),
			chainSpec{name: "exact", port: 443, transport: "tls", sni: []string{"www.example.com"}, filters: allowAll()},
			chainSpec{name: "wild", port: 443, transport: "tls", sni: []string{"*.example.com"}, filters: allowAll()},
			chainSpec{name: "com", port: 443, transport: "tls", sni: []string{"*.com"}, filters: allowAll()},
			chainSpec{name: "any", port: 443, transport: "tls", filters: allowAll()})
		for sni, want := range map[string]string{"www.example.com": "exact", "api.example.com": "wild", "a.b.example.com": "wild", "other.com": "com", "example.org": "any", "": "any"} {
			if o := judge(t, cfg, tcpConn(buyer, 443), Conn{TLS: true, SNI: sni}); o.Chain != want {
				t.Errorf("sni %q: chain %q, want %q", sni, o.Chain, want)
			}
		}
	})

	t.Run("TLS inspector disabled on the port", func(t *testing.T) {
		lfs := inspectors(t)
		lfs[0].FilterDisabled = &listenerv3.ListenerFilterChainMatchPredicate{Rule: &listenerv3.ListenerFilterChainMatchPredicate_DestinationPortRange{
			DestinationPortRange: &typev3.Int32Range{Start: 80, End: 81}}}
		cfg := config(t, lfs,
			chainSpec{name: "tls", port: 80, transport: "tls", filters: allowAll()},
			chainSpec{name: "plain", port: 80, transport: "raw_buffer", filters: allowAll()})
		if o := judge(t, cfg, tcpConn(buyer, 80), Conn{TLS: true, Cert: true}); o.Chain != "plain" {
			t.Errorf("TLS with the inspector off: chain %q, want plain", o.Chain)
		}
	})

	t.Run("HTTP inspector: plaintext HTTP by version", func(t *testing.T) {
		cfg := config(t, inspectors(t),
			chainSpec{name: "http", port: 80, transport: "raw_buffer", alpn: []string{"http/1.1", "h2c"}, filters: []*listenerv3.Filter{hcm(t, nil)}},
			chainSpec{name: "tcp", port: 80, transport: "raw_buffer", filters: denyAll()})
		r := reqGet(buyer, 80, "/")
		for v, want := range map[string]string{"http/1.1": "http", "h2c": "http", "http/1.0": "tcp", "": "tcp"} {
			if o := judge(t, cfg, r, Conn{HTTPVersion: v}); o.Chain != want {
				t.Errorf("plaintext %q: chain %q, want %q", v, o.Chain, want)
			}
		}
		// a non-HTTP client is never detected as HTTP
		if o := judge(t, cfg, tcpConn(buyer, 80), Conn{HTTPVersion: "http/1.1"}); o.Chain != "tcp" {
			t.Errorf("plaintext TCP: chain %q, want tcp", o.Chain)
		}
	})

	t.Run("default filter chain", func(t *testing.T) {
		cfg := config(t, inspectors(t), chainSpec{name: "80", port: 80, transport: "tls", filters: allowAll()})
		cfg.Listeners["virtualInbound"].DefaultFilterChain = chainSpec{name: "default", filters: denyAll()}.build()
		if o := judge(t, cfg, tcpConn(buyer, 80), Conn{}); o.Chain != "default" {
			t.Errorf("no chain matches: chain %q, want default", o.Chain)
		}
	})

	t.Run("destination IP: longest prefix", func(t *testing.T) {
		cfg := config(t, inspectors(t),
			chainSpec{name: "any", port: 80, filters: allowAll()},
			chainSpec{name: "pod", port: 80, filters: denyAll()})
		cfg.Listeners["virtualInbound"].FilterChains[1].FilterChainMatch.PrefixRanges = []*corev3.CidrRange{{AddressPrefix: "10.244.0.100", PrefixLen: wrapperspb.UInt32(32)}}
		if o := judge(t, cfg, tcpConn(buyer, 80), Conn{}); o.Chain != "pod" {
			t.Errorf("to the pod IP: chain %q, want pod", o.Chain)
		}
		r := tcpConn(buyer, 80)
		r.To = "10.244.0.101"
		if o := judge(t, cfg, r, Conn{}); o.Chain != "any" {
			t.Errorf("to another IP: chain %q, want any", o.Chain)
		}
		r.To = ""
		if _, err := cfg.Verdict(r); err == nil {
			t.Error("a chain matching on the destination IP judged without one")
		}
	})

	t.Run("refused", func(t *testing.T) {
		dup := config(t, inspectors(t), chainSpec{name: "a", port: 80, filters: allowAll()}, chainSpec{name: "b", port: 80, filters: denyAll()})
		if _, err := dup.Verdict(tcpConn(buyer, 80)); err == nil {
			t.Error("two chains with the same match: judged, want refused (Envoy rejects the listener)")
		}
		fcm := config(t, inspectors(t), chainSpec{name: "a", port: 80, filters: allowAll()})
		setEmpty(fcm.Listeners["virtualInbound"], "filter_chain_matcher")
		if _, err := fcm.Verdict(tcpConn(buyer, 80)); err == nil {
			t.Error("filter_chain_matcher: judged, want refused")
		}
		odd := config(t, append(inspectors(t), &listenerv3.ListenerFilter{Name: "proxy_protocol", ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{})}}),
			chainSpec{name: "a", port: 80, filters: allowAll()})
		if _, err := odd.Verdict(tcpConn(buyer, 80)); err == nil {
			t.Error("an unknown listener filter: judged, want refused")
		}
	})
}

var mtlsHTTP = []string{"istio-http/1.0", "istio-http/1.1", "istio-h2"}

func judge(t *testing.T, cfg *ProxyConfig, r Request, conn Conn) Outcome {
	t.Helper()
	in, err := cfg.Inbound()
	if err != nil {
		t.Fatal(err)
	}
	o, err := in.Judge(r, conn)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// TestTransportSocket: a chain terminating TLS refuses plaintext and, when it requires one,
// clients without a certificate; a chain that does not terminate TLS forwards the TLS stream (no
// principal), which an HTTP connection manager cannot parse.
func TestTransportSocket(t *testing.T) {
	open := []*listenerv3.Filter{netRBAC(t, "rbac", allowRules(anyPermissionRule(), anyPrincipalRule())), tcpProxy(t, "inbound|80||")}
	authn := []*listenerv3.Filter{netRBAC(t, "rbac", allowRules(anyPermissionRule(), &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{}}})), tcpProxy(t, "inbound|80||")}
	for _, tc := range []struct {
		name    string
		chain   chainSpec
		conn    Conn
		allowed bool
	}{
		{"mTLS chain, plaintext client", chainSpec{name: "c", port: 80, tls: mtlsSocket(t, true), filters: open}, Conn{}, false},
		{"mTLS chain, no certificate", chainSpec{name: "c", port: 80, tls: mtlsSocket(t, true), filters: open}, Conn{TLS: true}, false},
		{"mTLS chain, certificate", chainSpec{name: "c", port: 80, tls: mtlsSocket(t, true), filters: open}, Conn{TLS: true, Cert: true}, true},
		{"TLS chain not requiring a certificate, plaintext client", chainSpec{name: "c", port: 80, tls: mtlsSocket(t, false), filters: open}, Conn{}, false},
		{"TLS chain not requiring a certificate, none: authenticated", chainSpec{name: "c", port: 80, tls: mtlsSocket(t, false), filters: authn}, Conn{TLS: true}, true},
		{"passthrough chain, TLS client: not authenticated", chainSpec{name: "c", port: 80, filters: authn}, Conn{TLS: true, Cert: true}, false},
		{"passthrough chain, TLS client: bytes forwarded", chainSpec{name: "c", port: 80, filters: open}, Conn{TLS: true, Cert: true}, true},
	} {
		cfg := config(t, inspectors(t), tc.chain)
		if o := judge(t, cfg, tcpConn(buyer, 80), tc.conn); o.Allowed != tc.allowed {
			t.Errorf("%s: %s, want allowed=%v", tc.name, o, tc.allowed)
		}
	}
	cfg := config(t, inspectors(t), chainSpec{name: "c", port: 80, filters: []*listenerv3.Filter{hcm(t, nil)}})
	if o := judge(t, cfg, reqGet(buyer, 80, "/"), Conn{TLS: true, Cert: true}); o.Allowed {
		t.Errorf("HTTP over TLS to a connection manager that does not terminate TLS: %s, want denied", o)
	}
}

// TestRefusals: what the evaluator cannot model is an error, never a verdict.
func TestRefusals(t *testing.T) {
	rules := allowRules(pathPermission(exact("/ok")), principalID(buyerID))
	r := reqGet(buyer, 80, "/ok")
	chainWith := func(filters ...*listenerv3.Filter) *ProxyConfig {
		return config(t, inspectors(t), chainSpec{name: "http", port: 80, transport: "tls", tls: mtlsSocket(t, true), filters: filters})
	}
	disabled := httpRBAC(t, "rbac", rules)
	disabled.Disabled = true
	ecds := &hcmv3.HttpFilter{Name: "rbac", ConfigType: &hcmv3.HttpFilter_ConfigDiscovery{ConfigDiscovery: &corev3.ExtensionConfigSource{}}}
	perRoute := inboundRoutes()
	perRoute.VirtualHosts[0].Routes[0].TypedPerFilterConfig = map[string]*anypb.Any{"rbac": mustAny(t, &rbachttpv3.RBACPerRoute{})}
	perVhost := inboundRoutes()
	perVhost.VirtualHosts[0].TypedPerFilterConfig = map[string]*anypb.Any{"rbac": mustAny(t, &routev3.FilterConfig{Disabled: true})}
	withMatcher := &rbachttpv3.RBAC{}
	setEmpty(withMatcher, "matcher")
	rbacMatcher := &hcmv3.HttpFilter{Name: "rbac", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, withMatcher)}}
	unknown := &hcmv3.HttpFilter{Name: "lua", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &tlsv3.DownstreamTlsContext{})}}
	icRegex := allowRules(pathPermission(&matcherv3.StringMatcher{IgnoreCase: true, MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/ok"}}}), principalID(buyerID))
	netECDS := &listenerv3.Filter{Name: "rbac", ConfigType: &listenerv3.Filter_ConfigDiscovery{ConfigDiscovery: &corev3.ExtensionConfigSource{}}}
	for name, cfg := range map[string]*ProxyConfig{
		"disabled HTTP RBAC filter":          chainWith(hcm(t, nil, disabled)),
		"HTTP filter from discovery":         chainWith(hcm(t, nil, ecds)),
		"per-route RBAC override":            chainWith(hcm(t, perRoute, httpRBAC(t, "rbac", rules))),
		"per-virtual-host disabled RBAC":     chainWith(hcm(t, perVhost, httpRBAC(t, "rbac", rules))),
		"HTTP RBAC matcher API":              chainWith(hcm(t, nil, rbacMatcher)),
		"unknown HTTP filter":                chainWith(hcm(t, nil, unknown)),
		"network filter from discovery":      chainWith(netECDS, hcm(t, nil)),
		"safe_regex with ignore_case":        chainWith(hcm(t, nil, httpRBAC(t, "rbac", icRegex))),
		"network RBAC after the HTTP filter": chainWith(hcm(t, nil), netRBAC(t, "rbac", rules)),
	} {
		if ok, err := cfg.Verdict(r); err == nil {
			t.Errorf("%s: judged (allowed=%v), want refused", name, ok)
		}
	}
	// safe_regex with ignore_case on a chain the request never reaches: Envoy rejects the whole listener
	cfg := config(t, inspectors(t),
		chainSpec{name: "http", port: 80, transport: "tls", tls: mtlsSocket(t, true), filters: []*listenerv3.Filter{hcm(t, nil, httpRBAC(t, "rbac", rules))}},
		chainSpec{name: "other", port: 81, transport: "tls", tls: mtlsSocket(t, true), filters: []*listenerv3.Filter{hcm(t, nil, httpRBAC(t, "rbac", icRegex))}})
	if _, err := cfg.Verdict(r); err == nil {
		t.Error("a listener Envoy rejects (safe_regex with ignore_case on another chain): judged, want refused")
	}
}

// istioPort is a sniffed port in PERMISSIVE mode as Istio builds it (filterchain_options.go:
// inboundPermissiveFilterChainMatchWithMxcOptions), with the given filters on each chain.
func istioPort(t *testing.T, port uint32, mtlsHTTPRules, plainHTTPRules, mtlsTCPRules, plainTCPRules, plainTLSRules *rbacv3.RBAC) []chainSpec {
	cluster := "inbound|8080||"
	tcpChain := func(rules *rbacv3.RBAC) []*listenerv3.Filter {
		return []*listenerv3.Filter{netRBAC(t, "envoy.filters.network.rbac", rules), tcpProxy(t, cluster)}
	}
	return []chainSpec{
		{name: "mtls-http", port: port, transport: "tls", alpn: mtlsHTTP, tls: mtlsSocket(t, true), filters: []*listenerv3.Filter{hcm(t, nil, httpRBAC(t, "envoy.filters.http.rbac", mtlsHTTPRules))}},
		{name: "plain-http", port: port, transport: "raw_buffer", alpn: []string{"http/1.1", "h2c"}, filters: []*listenerv3.Filter{hcm(t, nil, httpRBAC(t, "envoy.filters.http.rbac", plainHTTPRules))}},
		{name: "mtls-tcp", port: port, transport: "tls", alpn: []string{"istio-peer-exchange", "istio"}, tls: mtlsSocket(t, true), filters: tcpChain(mtlsTCPRules)},
		{name: "plain-tcp", port: port, transport: "raw_buffer", filters: tcpChain(plainTCPRules)},
		{name: "plain-tls", port: port, transport: "tls", filters: tcpChain(plainTLSRules)},
	}
}

// TestSweep: the verdict is the chain Envoy picks for the client's connection; the sweep judges
// every chain of the port and reports each connection that gets through.
func TestSweep(t *testing.T) {
	httpRule := allowRules(pathPermission(exact("/ok")), principalID(buyerID))
	widened := allowRules(anyPermissionRule(), principalID(buyerID)) // an HTTP rule that lost its HTTP fields
	nothing := &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW}

	leaky := config(t, inspectors(t), istioPort(t, 8080, httpRule, httpRule, widened, nil, nothing)...)
	if ok, err := leaky.Verdict(reqGet(buyer, 8080, "/ok")); err != nil || !ok {
		t.Errorf("buyer GET /ok over its sidecar: %v %v, want allowed", ok, err)
	}
	if ok, err := leaky.Verdict(reqGet(buyer, 8080, "/nope")); err != nil || ok {
		t.Errorf("buyer GET /nope over its sidecar: %v %v, want denied", ok, err)
	}
	allowedOn := func(cfg *ProxyConfig, r Request) map[string]bool {
		t.Helper()
		out, err := cfg.Sweep(r)
		if err != nil {
			t.Fatal(err)
		}
		chains := map[string]bool{}
		for _, o := range out {
			if o.Allowed {
				chains[o.Chain] = true
			}
		}
		return chains
	}
	// buyer's GET /nope gets through on the TCP chain (the widened rule) and, for anybody, on the
	// plaintext TCP chain (no RBAC filter rules)
	got := allowedOn(leaky, reqGet(buyer, 8080, "/nope"))
	if !got["mtls-tcp"] || !got["plain-tcp"] || got["mtls-http"] || got["plain-http"] || got["plain-tls"] {
		t.Errorf("buyer GET /nope gets through on %v, want mtls-tcp and plain-tcp", got)
	}
	got = allowedOn(leaky, reqGet(thief, 8080, "/ok"))
	if !got["plain-tcp"] || len(got) != 1 {
		t.Errorf("thief GET /ok gets through on %v, want plain-tcp only", got)
	}
	got = allowedOn(leaky, tcpConn(thief, 8080))
	if !got["plain-tcp"] || len(got) != 1 {
		t.Errorf("thief's TCP connection gets through on %v, want plain-tcp only", got)
	}

	// fixed: TCP chains allow nothing; plaintext HTTP needs a principal, which plaintext never has
	tight := config(t, inspectors(t), istioPort(t, 8080, httpRule, httpRule, nothing, nothing, nothing)...)
	for _, r := range []Request{reqGet(buyer, 8080, "/nope"), reqGet(thief, 8080, "/ok"), tcpConn(buyer, 8080)} {
		if got := allowedOn(tight, r); len(got) != 0 {
			t.Errorf("%s gets through on %v, want nowhere", r, got)
		}
	}
	if got := allowedOn(tight, reqGet(buyer, 8080, "/ok")); !got["mtls-http"] || len(got) != 1 {
		t.Errorf("buyer GET /ok gets through on %v, want mtls-http only", got)
	}

	// a TLS chain that does not require a certificate, denying thief by name: thief without its
	// certificate gets through
	denyThief := &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{
		"thief": {Permissions: []*rbacv3.Permission{anyPermissionRule()}, Principals: []*rbacv3.Principal{principalID("spiffe://cluster.local/ns/shop/sa/thief")}},
	}}
	optional := config(t, inspectors(t), chainSpec{name: "tls-optional", port: 9443, transport: "tls", tls: mtlsSocket(t, false),
		filters: []*listenerv3.Filter{netRBAC(t, "rbac", denyThief), tcpProxy(t, "inbound|9443||")}})
	if ok, err := optional.Verdict(tcpConn(thief, 9443)); err != nil || ok {
		t.Errorf("thief over its sidecar to a chain denying it: %v %v, want denied", ok, err)
	}
	if got := allowedOn(optional, tcpConn(thief, 9443)); !got["tls-optional"] {
		t.Errorf("thief without a certificate gets through on %v, want tls-optional", got)
	}

	// every chain of the port is reached by some shape of an HTTP request
	out, err := tight.Sweep(reqGet(buyer, 8080, "/ok"))
	if err != nil {
		t.Fatal(err)
	}
	reached := map[string]bool{}
	for _, o := range out {
		reached[o.Chain] = true
	}
	for _, c := range []string{"mtls-http", "plain-http", "mtls-tcp", "plain-tcp", "plain-tls"} {
		if !reached[c] {
			t.Errorf("the sweep never reaches chain %s (reached %v)", c, reached)
		}
	}
}

// TestNamesObject: an analyzer message is about one of our objects when it names it whole.
func TestNamesObject(t *testing.T) {
	for msg, want := range map[string]bool{
		"The VirtualServices bookstore/bookstore,foo/bar define the same host": true,
		"conflicts with VirtualService bookstore/bookstore.":                   true,
		"The pod bookstore/bookstore-v1-e2e is missing the Istio proxy.":       false,
		"host bookstore/bookstore.bookstore.svc.cluster.local":                 false,
		"see other-bookstore/bookstore":                                        false,
	} {
		if got := namesObject(msg, "bookstore/bookstore"); got != want {
			t.Errorf("%q: got %v, want %v", msg, got, want)
		}
	}
}
