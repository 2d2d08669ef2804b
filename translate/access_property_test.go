package translate_test

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"strconv"
	"strings"
	"testing"

	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	accessv1alpha2 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/access/v1alpha2"
	"google.golang.org/protobuf/encoding/protojson"
	securityapi "istio.io/api/security/v1beta1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/smi2istio/smi2istio/internal/smi/normalize"
	"github.com/smi2istio/smi2istio/translate"
	"github.com/smi2istio/smi2istio/translate/regex"
)

// request is what an access decision depends on.
type request struct {
	principal string // ns/<ns>/sa/<name> (no trust domain)
	method    string
	path      string
	headers   map[string]string // lower-case names; "host" is the authority
	port      int
}

var (
	sources  = []string{"web", "batch", "audit"}
	paths    = []string{"/api/orders", "/api/orders/7", "/api/orders/7/items", "/buy-a-book/new", "/books-bought", "/x.css", "/", "/api/"}
	pathREs  = []string{"", "/api/orders", "/api/.*", ".*a-book.*new", "/books-bought", ".*\\.css", "/api/orders/[0-9]+", "/api/orders/[^/]+/items", ".*"}
	methods  = []string{"GET", "POST", "PUT", "DELETE"}
	headerRE = []string{"bookbuyer", ".*-http-client/.*", "pay.*", ".*"}
	hdrVals  = []string{"bookbuyer", "go-http-client/1.1", "payments", "other", ""}
	hosts    = []string{"api.shop", "api.shop:8080", "apiXshop", "other"}
	hostREs  = []string{"api.shop", "api\\.shop", "api.*"}
	ports    = []int{8080, 9090, 3306}
)

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.Intn(len(xs))] }

// genInput generates TrafficTargets for ServiceAccount "api" with route groups and TCP routes.
func genInput(r *rand.Rand, policy translate.RegexPolicy) translate.AccessInput {
	in := translate.AccessInput{
		Namespace: "shop", ServiceAccount: "api",
		RouteGroups: map[string]*normalize.HTTPRouteGroup{},
		PortRoutes:  map[string]*normalize.PortRoute{},
		Workloads:   []translate.Workload{{Name: "Deployment/api", ServiceAccount: "api", Labels: map[string]string{"app": "api"}}},
		Mesh:        translate.Mesh{RegexPolicy: policy, PathTemplates: r.Intn(2) == 0},
	}
	g := &normalize.HTTPRouteGroup{ObjectMeta: metav1.ObjectMeta{Name: "routes", Namespace: "shop"}}
	for i := 0; i < 1+r.Intn(3); i++ {
		m := normalize.HTTPMatch{Name: fmt.Sprintf("m%d", i), PathRegex: pick(r, pathREs)}
		for _, meth := range methods {
			if r.Intn(3) == 0 {
				m.Methods = append(m.Methods, meth)
			}
		}
		if r.Intn(3) == 0 {
			m.Headers = append(m.Headers, normalize.Header{Name: "user-agent", Value: pick(r, headerRE)})
		}
		if r.Intn(4) == 0 {
			m.Headers = append(m.Headers, normalize.Header{Name: "host", Value: pick(r, hostREs)})
		}
		g.Matches = append(g.Matches, m)
	}
	in.RouteGroups["routes"] = g
	var tcpPorts []int
	if r.Intn(2) == 0 {
		tcpPorts = []int{pick(r, ports)}
	}
	in.PortRoutes["TCPRoute/tcp"] = &normalize.PortRoute{ObjectMeta: metav1.ObjectMeta{Name: "tcp"}, Kind: "TCPRoute", Ports: tcpPorts}
	for t := 0; t < 1+r.Intn(2); t++ {
		tt := &accessv1alpha2.TrafficTarget{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("t%d", t), Namespace: "shop"}}
		tt.Spec.Destination = accessv1alpha2.IdentityBindingSubject{Kind: "ServiceAccount", Name: "api", Namespace: "shop"}
		if r.Intn(4) == 0 {
			p := pick(r, ports)
			tt.Spec.Destination.Port = &p
		}
		for _, s := range sources {
			if r.Intn(2) == 0 {
				tt.Spec.Sources = append(tt.Spec.Sources, accessv1alpha2.IdentityBindingSubject{Kind: "ServiceAccount", Name: s, Namespace: "shop"})
			}
		}
		rule := accessv1alpha2.TrafficTargetRule{Kind: "HTTPRouteGroup", Name: "routes"}
		for _, m := range g.Matches {
			if r.Intn(2) == 0 {
				rule.Matches = append(rule.Matches, m.Name)
			}
		}
		tt.Spec.Rules = append(tt.Spec.Rules, rule)
		if r.Intn(3) == 0 {
			tt.Spec.Rules = append(tt.Spec.Rules, accessv1alpha2.TrafficTargetRule{Kind: "TCPRoute", Name: "tcp"})
		}
		in.Targets = append(in.Targets, tt)
	}
	return in
}

func genRequest(r *rand.Rand) request {
	req := request{principal: "ns/shop/sa/" + pick(r, sources), method: pick(r, methods), path: pick(r, paths),
		headers: map[string]string{}, port: pick(r, ports)}
	if v := pick(r, hdrVals); v != "" {
		req.headers["user-agent"] = v
	}
	req.headers["host"] = pick(r, hosts)
	return req
}

func fullMatch(t *testing.T, expr, s string) bool {
	re, err := regex.FullMatcher(expr)
	if err != nil {
		t.Fatal(err)
	}
	return re.MatchString(s)
}

func stripPort(host string) string {
	if i := strings.LastIndex(host, ":"); i >= 0 {
		return host[:i]
	}
	return host
}

// smiAllows is the SMI meaning (OSM's regex semantics: RE2 full match; the host without its port).
func smiAllows(t *testing.T, in translate.AccessInput, req request) bool {
	for _, tt := range in.Targets {
		src := false
		for _, s := range tt.Spec.Sources {
			src = src || req.principal == "ns/"+s.Namespace+"/sa/"+s.Name
		}
		if !src || (tt.Spec.Destination.Port != nil && *tt.Spec.Destination.Port != req.port) {
			continue
		}
		for _, rule := range tt.Spec.Rules {
			if rule.Kind == "TCPRoute" {
				pr := in.PortRoutes["TCPRoute/"+rule.Name]
				if len(pr.Ports) == 0 || pr.Ports[0] == req.port {
					return true
				}
				continue
			}
			g := in.RouteGroups[rule.Name]
			for _, m := range g.Matches {
				selected := len(rule.Matches) == 0
				for _, n := range rule.Matches {
					selected = selected || n == m.Name
				}
				if selected && httpMatchAllows(t, m, req) {
					return true
				}
			}
		}
	}
	return false
}

func httpMatchAllows(t *testing.T, m normalize.HTTPMatch, req request) bool {
	if len(m.Methods) > 0 {
		ok := false
		for _, meth := range m.Methods {
			ok = ok || meth == req.method || meth == "*"
		}
		if !ok {
			return false
		}
	}
	if m.PathRegex != "" && !fullMatch(t, m.PathRegex, req.path) {
		return false
	}
	for _, h := range m.Headers {
		v, ok := req.headers[h.Name]
		if h.Name == "host" {
			v = stripPort(v)
		}
		if !ok || !fullMatch(t, h.Value, v) {
			return false
		}
	}
	return true
}

// istioString applies Istio's string matching: exact, "prefix*", "*suffix", "*", or a {*} template.
func istioString(pattern, s string) bool {
	switch {
	case pattern == "*":
		return true
	case strings.Contains(pattern, "{*}"):
		return regex.Pattern{Kind: regex.Template, Literal: pattern}.Match(s)
	case strings.HasSuffix(pattern, "*"):
		return strings.HasPrefix(s, strings.TrimSuffix(pattern, "*"))
	case strings.HasPrefix(pattern, "*"):
		return strings.HasSuffix(s, strings.TrimPrefix(pattern, "*"))
	}
	return s == pattern
}

func anyOf(patterns []string, s string) bool {
	for _, p := range patterns {
		if istioString(p, s) {
			return true
		}
	}
	return false
}

// istioAllows evaluates ALLOW AuthorizationPolicies with Istio's documented rules (fields ANDed,
// values ORed, rules ORed; hosts compared without port, case-insensitively).
func istioAllows(aps []*securityapi.AuthorizationPolicy, req request) bool {
	for _, ap := range aps {
		for _, rule := range ap.Rules {
			if ruleMatches(rule, req) {
				return true
			}
		}
	}
	return false
}

func ruleMatches(rule *securityapi.Rule, req request) bool {
	for _, f := range rule.From {
		if len(f.Source.Principals) > 0 && !anyOf(f.Source.Principals, "cluster.local/"+req.principal) {
			return false
		}
	}
	for _, to := range rule.To {
		op := to.Operation
		if len(op.Methods) > 0 && !anyOf(op.Methods, req.method) {
			return false
		}
		if len(op.Paths) > 0 && !anyOf(op.Paths, req.path) {
			return false
		}
		if len(op.Hosts) > 0 && !anyOf(op.Hosts, strings.ToLower(stripPort(req.headers["host"]))) {
			return false
		}
		if len(op.Ports) > 0 && !anyOf(op.Ports, strconv.Itoa(req.port)) {
			return false
		}
	}
	for _, c := range rule.When {
		name := strings.TrimSuffix(strings.TrimPrefix(c.Key, "request.headers["), "]")
		v, ok := req.headers[name]
		if !ok || !anyOf(c.Values, v) {
			return false
		}
	}
	return true
}

// envoyAllows evaluates the Envoy rung's RBAC filter (parsed into go-control-plane's types).
func envoyAllows(t *testing.T, cfg *rbacv3.RBAC, req request) bool {
	for _, p := range cfg.GetRules().GetPolicies() {
		okPrincipal := false
		for _, pr := range p.Principals {
			okPrincipal = okPrincipal || pr.GetAuthenticated().GetPrincipalName().GetExact() == "spiffe://cluster.local/"+req.principal
		}
		okPerm := false
		for _, perm := range p.Permissions {
			okPerm = okPerm || permission(t, perm, req)
		}
		if okPrincipal && okPerm {
			return true
		}
	}
	return false
}

func permission(t *testing.T, p *rbacconfigv3.Permission, req request) bool {
	switch r := p.Rule.(type) {
	case *rbacconfigv3.Permission_Any:
		return r.Any
	case *rbacconfigv3.Permission_AndRules:
		for _, c := range r.AndRules.Rules {
			if !permission(t, c, req) {
				return false
			}
		}
		return true
	case *rbacconfigv3.Permission_OrRules:
		for _, c := range r.OrRules.Rules {
			if permission(t, c, req) {
				return true
			}
		}
		return false
	case *rbacconfigv3.Permission_DestinationPort:
		return int(r.DestinationPort) == req.port
	case *rbacconfigv3.Permission_UrlPath:
		return stringMatch(t, r.UrlPath.GetPath(), req.path)
	case *rbacconfigv3.Permission_Header:
		name := r.Header.Name
		switch name {
		case ":method":
			return stringMatch(t, r.Header.GetStringMatch(), req.method)
		case ":authority":
			name = "host"
		}
		v, ok := req.headers[name]
		return ok && stringMatch(t, r.Header.GetStringMatch(), v)
	}
	t.Fatalf("unexpected permission %T", p.Rule)
	return false
}

func stringMatch(t *testing.T, m *matcherv3.StringMatcher, s string) bool {
	switch mt := m.MatchPattern.(type) {
	case *matcherv3.StringMatcher_Exact:
		return s == mt.Exact
	case *matcherv3.StringMatcher_SafeRegex:
		return fullMatch(t, mt.SafeRegex.Regex, s)
	}
	t.Fatalf("unexpected string matcher %T", m.MatchPattern)
	return false
}

func envoyConfigs(t *testing.T, res *translate.AccessResult) []*rbacv3.RBAC {
	var out []*rbacv3.RBAC
	for _, ef := range res.EnvoyFilters {
		tc := ef.Spec.ConfigPatches[0].Patch.Value.AsMap()["typed_config"].(map[string]any)
		delete(tc, "@type")
		js, _ := json.Marshal(tc)
		cfg := &rbacv3.RBAC{}
		if err := protojson.Unmarshal(js, cfg); err != nil {
			t.Fatalf("EnvoyFilter %s: %v", ef.Name, err)
		}
		out = append(out, cfg)
	}
	return out
}

// The generated policies allow a subset of what the SMI objects allow — exactly the same set with
// the Envoy rung (every rung exact), a subset when inexpressible regexes are rejected.
func TestAccessPolicyProperty(t *testing.T) {
	for _, policy := range []translate.RegexPolicy{translate.RegexEnvoy, translate.RegexReject} {
		r := rand.New(rand.NewSource(42))
		mismatches, allowed := 0, 0
		for c := 0; c < 400; c++ {
			in := genInput(r, policy)
			res, err := translate.TranslateAccess(in)
			if err != nil {
				t.Fatal(err)
			}
			var aps []*securityapi.AuthorizationPolicy
			for _, tr := range res.Targets {
				if tr.Err != nil {
					t.Fatalf("generated input invalid: %v", tr.Err)
				}
				for _, ap := range tr.AuthorizationPolicies {
					aps = append(aps, &ap.Spec)
				}
			}
			efs := envoyConfigs(t, res)
			for q := 0; q < 60; q++ {
				req := genRequest(r)
				want := smiAllows(t, in, req)
				got := istioAllows(aps, req)
				for _, cfg := range efs {
					got = got && envoyAllows(t, cfg, req)
				}
				if got && !want {
					t.Fatalf("%s policy allows more than SMI: case %d, request %+v\ninput: %s\npolicies: %v", policy, c, req, describeInput(in), aps)
				}
				if policy == translate.RegexEnvoy && got != want {
					t.Fatalf("Envoy rung must be exact: case %d, request %+v: SMI %v, generated %v\ninput: %s\npolicies: %v", c, req, want, got, describeInput(in), aps)
				}
				if got != want {
					mismatches++
				}
				if want {
					allowed++
				}
			}
		}
		if allowed == 0 {
			t.Errorf("%s: no generated request was allowed: the property is vacuous", policy)
		}
		t.Logf("%s: %d allowed by SMI, %d denied only by the generated policies", policy, allowed, mismatches)
	}
}

func describeInput(in translate.AccessInput) string {
	js, _ := json.Marshal(struct {
		Targets     []*accessv1alpha2.TrafficTarget
		RouteGroups map[string]*normalize.HTTPRouteGroup
		PortRoutes  map[string]*normalize.PortRoute
	}{in.Targets, in.RouteGroups, in.PortRoutes})
	return string(js)
}
