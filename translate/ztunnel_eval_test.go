package translate_test

// A test-only model of what Istio's ambient data plane enforces for AuthorizationPolicies and
// PeerAuthentications, used by the ambient property test (ambient_property_test.go). Ported from
// istio.io/istio@v0.0.0-20260827124520-eed52ebb66ad (the version go.mod requires) and ztunnel:
//
// ztunnel (L4, at the destination pod):
//   - istiod converts each AuthorizationPolicy without targetRefs (those are "not intended for
//     ztunnel") by pilot/pkg/serviceregistry/ambient/authorization.go convertAuthorizationPolicy:
//     scope WORKLOAD_SELECTOR with a selector, NAMESPACE without one (GLOBAL in the root
//     namespace). Each rule becomes a group (handleRule) of clauses ANDed: one clause of the
//     to-operations' port matches, one of the from-sources' matches, one per when condition;
//     within a clause the matches are ORed, within a match every field is ANDed. A rule with an
//     L7 field (hosts, methods, paths and their not* forms; requestPrincipals, remoteIpBlocks and
//     their not* forms; a when key that is not source.ip/namespace/principal or
//     destination.ip/port) gives no group at all in an ALLOW policy ("L7 policies never match for
//     ALLOW"). stringToMatch reads "*" as presence, "*x" as suffix, "x*" as prefix.
//   - A workload gets the selector policies of its namespace (and of the root namespace) whose
//     labels it has (workloads.go buildWorkloadPolicies), plus every NAMESPACE policy of its
//     namespace and every GLOBAL one (ztunnel's assert_rbac). A selector STRICT PeerAuthentication
//     without port-level modes makes istiod attach its static STRICT policy
//     (convertedSelectorPeerAuthentications: DENY when the peer has no principal).
//   - ztunnel (src/rbac.rs Authorization::matches, src/state.rs assert_rbac): a DENY policy that
//     matches denies; no ALLOW policy allows; else some ALLOW policy must match. A policy with no
//     groups matches nothing; a match with no field is skipped; principals are compared after
//     "spiffe://" is stripped; a peer without mTLS has no identity.
//
// waypoint (L7, per Service):
//   - A waypoint never uses selectors (pilot/pkg/model/policyattachment.go ShouldAttachPolicy):
//     on the chain of a Service it applies the policies whose targetRefs name that Service (kind
//     Service, group "", the policy in the Service's namespace) or its own Gateway (kind Gateway,
//     group gateway.networking.k8s.io, in the waypoint's namespace), all ORed in one RBAC filter
//     (listener_waypoint.go buildWaypointHTTPFilters, authz.NewBuilderForService); the
//     direct-to-pod chain applies the Gateway's only. No ALLOW policy: the chain allows
//     everything. An ALLOW policy without rules never matches (builder.build,
//     rbacPolicyMatchNever). Rules are generated as for a sidecar (istioPolicy in
//     rbaceval_test.go); on a TCP chain rules with HTTP-only fields are skipped. The chain is
//     chosen by the Service's VIP and port, so the destination port a waypoint policy sees is the
//     Service port; the waypoint then connects to the pod's target port as itself (its own
//     identity is what the pod's ztunnel sees).

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	rbacpb "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	securityapi "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	securityv1beta1 "istio.io/client-go/pkg/apis/security/v1beta1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ---- ztunnel ----

// ztStringMatch is ztunnel's StringMatch (Exact, Prefix, Suffix, Presence).
type ztStringMatch struct {
	kind  string // exact, prefix, suffix, presence
	value string
}

func (m ztStringMatch) matches(s string) bool {
	switch m.kind {
	case "prefix":
		return strings.HasPrefix(s, m.value)
	case "suffix":
		return strings.HasSuffix(s, m.value)
	case "presence":
		return s != ""
	}
	return s == m.value
}

// stringToMatch is istiod's ambient stringToMatch.
func stringToMatch(vs []string) []ztStringMatch {
	var out []ztStringMatch
	for _, v := range vs {
		switch {
		case v == "*":
			out = append(out, ztStringMatch{kind: "presence"})
		case strings.HasPrefix(v, "*"):
			out = append(out, ztStringMatch{kind: "suffix", value: strings.TrimPrefix(v, "*")})
		case strings.HasSuffix(v, "*"):
			out = append(out, ztStringMatch{kind: "prefix", value: strings.TrimSuffix(v, "*")})
		default:
			out = append(out, ztStringMatch{kind: "exact", value: v})
		}
	}
	return out
}

// stringToPort is istiod's ambient stringToPort: a value that is no port is dropped.
func stringToPort(vs []string) []uint32 {
	var out []uint32
	for _, v := range vs {
		p, err := strconv.ParseUint(v, 10, 32)
		if err != nil || p > 65535 {
			continue
		}
		out = append(out, uint32(p))
	}
	return out
}

// ztMatch is one security.Match: every non-empty field must match.
type ztMatch struct {
	principals, notPrincipals, namespaces, notNamespaces []ztStringMatch
	ports, notPorts                                      []uint32
}

func (m ztMatch) empty() bool {
	return len(m.principals)+len(m.notPrincipals)+len(m.namespaces)+len(m.notNamespaces)+len(m.ports)+len(m.notPorts) == 0
}

// ztConn is what ztunnel sees of a connection: the peer's identity ("" without mTLS) and the
// destination (pod) port.
type ztConn struct {
	identity string // "spiffe://<td>/ns/<ns>/sa/<sa>" or ""
	port     uint32
}

func matchesInternal[T any](positive, negative []T, pred func(T) bool) bool {
	pm := len(positive) == 0
	for _, p := range positive {
		pm = pm || pred(p)
	}
	nm := true
	for _, n := range negative {
		nm = nm && !pred(n)
	}
	return pm && nm
}

func (m ztMatch) matches(c ztConn) bool {
	id, hasSpiffe := strings.CutPrefix(c.identity, "spiffe://")
	ns := ""
	if parts := strings.Split(id, "/"); hasSpiffe && len(parts) >= 5 && parts[1] == "ns" {
		ns = parts[2]
	}
	principal := func(sm ztStringMatch) bool { return hasSpiffe && sm.matches(id) } // matches_principal
	return matchesInternal(m.ports, m.notPorts, func(p uint32) bool { return p == c.port }) &&
		matchesInternal(m.principals, m.notPrincipals, principal) &&
		matchesInternal(m.namespaces, m.notNamespaces, func(sm ztStringMatch) bool { return sm.matches(ns) })
}

// ztPolicy is one security.Authorization: rules (groups) ORed, clauses ANDed, matches ORed.
type ztPolicy struct {
	name     string
	deny     bool
	selector map[string]string // nil: namespace scope
	rules    [][][]ztMatch
}

func (p *ztPolicy) matches(c ztConn) bool {
	if len(p.rules) == 0 {
		return false // "empty rules"
	}
	for _, rule := range p.rules {
		ruleMatch := true
		for _, clause := range rule {
			clauseMatch := len(clause) == 0
			for _, m := range clause {
				if m.empty() {
					continue
				}
				if m.matches(c) {
					clauseMatch = true
					break
				}
			}
			if !clauseMatch {
				ruleMatch = false
				break
			}
		}
		if ruleMatch {
			return true
		}
	}
	return false
}

// l4WhenAttributes are the when keys ztunnel enforces (istiod's l4WhenAttributes).
var l4WhenAttributes = map[string]bool{"source.ip": true, "source.namespace": true, "source.principal": true, "destination.ip": true, "destination.port": true}

// convertForZtunnel is istiod's convertAuthorizationPolicy for the fields our outputs can hold; nil
// for a policy with targetRefs. Fields it cannot model are refused.
func convertForZtunnel(ap *securityv1beta1.AuthorizationPolicy) (*ztPolicy, error) {
	s := &ap.Spec
	if s.TargetRef != nil || len(s.TargetRefs) > 0 {
		return nil, nil // "TargetRef is not intended for ztunnel"
	}
	var deny bool
	switch s.Action {
	case securityapi.AuthorizationPolicy_ALLOW:
	case securityapi.AuthorizationPolicy_DENY:
		deny = true
	default:
		return nil, refused("AuthorizationPolicy %s: action %s", ap.Name, s.Action)
	}
	p := &ztPolicy{name: ap.Namespace + "/" + ap.Name, deny: deny}
	if s.Selector != nil {
		p.selector = s.Selector.MatchLabels
		if p.selector == nil {
			p.selector = map[string]string{}
		}
	}
	for _, rule := range s.Rules {
		if rule == nil {
			continue
		}
		l7 := false
		var clauses [][]ztMatch
		var to []ztMatch
		for _, t := range rule.To {
			op := t.GetOperation()
			if op == nil {
				return nil, refused("AuthorizationPolicy %s: to without operation", ap.Name)
			}
			if len(op.Hosts)+len(op.NotHosts)+len(op.Methods)+len(op.NotMethods)+len(op.Paths)+len(op.NotPaths) > 0 {
				l7 = true
			}
			to = append(to, ztMatch{ports: stringToPort(op.Ports), notPorts: stringToPort(op.NotPorts)})
		}
		var from []ztMatch
		for _, f := range rule.From {
			src := f.GetSource()
			if src == nil {
				return nil, refused("AuthorizationPolicy %s: from without source", ap.Name)
			}
			if len(src.RemoteIpBlocks)+len(src.NotRemoteIpBlocks)+len(src.RequestPrincipals)+len(src.NotRequestPrincipals) > 0 {
				l7 = true
			}
			if len(src.IpBlocks)+len(src.NotIpBlocks)+len(src.ServiceAccounts)+len(src.NotServiceAccounts)+len(src.TrustDomains)+len(src.NotTrustDomains) > 0 {
				return nil, refused("AuthorizationPolicy %s: source fields other than principals and namespaces", ap.Name)
			}
			from = append(from, ztMatch{principals: stringToMatch(src.Principals), notPrincipals: stringToMatch(src.NotPrincipals),
				namespaces: stringToMatch(src.Namespaces), notNamespaces: stringToMatch(src.NotNamespaces)})
		}
		if len(to) > 0 {
			clauses = append(clauses, to)
		}
		if len(from) > 0 {
			clauses = append(clauses, from)
		}
		for _, w := range rule.When {
			if !l4WhenAttributes[w.Key] {
				l7 = true
				continue
			}
			m := ztMatch{}
			switch w.Key {
			case "source.namespace":
				m.namespaces, m.notNamespaces = stringToMatch(w.Values), stringToMatch(w.NotValues)
			case "source.principal":
				m.principals, m.notPrincipals = stringToMatch(w.Values), stringToMatch(w.NotValues)
			case "destination.port":
				m.ports, m.notPorts = stringToPort(w.Values), stringToPort(w.NotValues)
			default:
				return nil, refused("AuthorizationPolicy %s: when %s", ap.Name, w.Key)
			}
			clauses = append(clauses, []ztMatch{m})
		}
		if !deny && l7 {
			continue // "L7 policies never match for ALLOW"
		}
		p.rules = append(p.rules, clauses)
	}
	return p, nil
}

// ztunnelAuthz is what decides a connection to one pod.
type ztunnelAuthz struct {
	allow, deny []*ztPolicy
}

// newZtunnelAuthz gathers the policies ztunnel applies to a pod of namespace ns with labels:
// selector policies that select it, every namespace policy of ns (the baseline among them), and
// the static STRICT policy when a STRICT PeerAuthentication selects it (or is namespace-wide).
// Policies of other namespaces are refused (ours never are; the root namespace holds none of ours).
func newZtunnelAuthz(aps []*securityv1beta1.AuthorizationPolicy, pas []*securityv1beta1.PeerAuthentication, ns string, labels map[string]string) (*ztunnelAuthz, error) {
	z := &ztunnelAuthz{}
	for _, ap := range aps {
		if ap.Namespace != ns {
			return nil, refused("AuthorizationPolicy %s in namespace %q, not the pod's %q", ap.Name, ap.Namespace, ns)
		}
		p, err := convertForZtunnel(ap)
		if err != nil {
			return nil, err
		}
		if p == nil || (p.selector != nil && !selects(p.selector, labels)) {
			continue
		}
		if p.deny {
			z.deny = append(z.deny, p)
		} else {
			z.allow = append(z.allow, p)
		}
	}
	for _, pa := range pas {
		if pa.Namespace != ns {
			return nil, refused("PeerAuthentication %s in namespace %q, not the pod's %q", pa.Name, pa.Namespace, ns)
		}
		if len(pa.Spec.PortLevelMtls) > 0 || pa.Spec.GetMtls().GetMode() != securityapi.PeerAuthentication_MutualTLS_STRICT {
			return nil, refused("PeerAuthentication %s: only STRICT without port-level modes is modelled", pa.Name)
		}
		if pa.Spec.Selector != nil && !selects(pa.Spec.Selector.MatchLabels, labels) {
			continue
		}
		// istio_converted_static_strict: DENY when the peer has no principal.
		z.deny = append(z.deny, &ztPolicy{name: "istio-system/istio_converted_static_strict", deny: true,
			rules: [][][]ztMatch{{{{notPrincipals: []ztStringMatch{{kind: "presence"}}}}}}})
	}
	return z, nil
}

// allows is ztunnel's assert_rbac; the string names the deciding policy.
func (z *ztunnelAuthz) allows(c ztConn) (bool, string) {
	for _, p := range z.deny {
		if p.matches(c) {
			return false, "denied by ztunnel DENY " + p.name
		}
	}
	if len(z.allow) == 0 {
		return true, "allowed by ztunnel: no ALLOW policy"
	}
	for _, p := range z.allow {
		if p.matches(c) {
			return true, "allowed by ztunnel ALLOW " + p.name
		}
	}
	return false, "denied by ztunnel: no ALLOW policy matches"
}

// ---- waypoint ----

// waypointRef names a waypoint and the identity its pods run as.
type waypointRef struct {
	namespace, name string
	principal       string // "<td>/ns/<ns>/sa/<sa>"
}

// waypointChain is the RBAC of one waypoint chain: the HTTP filter and the TCP (network) filter.
type waypointChain struct {
	http, tcp *rbacFilter
}

// newWaypointChain builds the chain of a Service (svcNS/svc) at waypoint w, or the waypoint's
// direct-to-pod chain when svc is "".
func newWaypointChain(aps []*securityv1beta1.AuthorizationPolicy, w waypointRef, svcNS, svc string) (*waypointChain, error) { //nolint:unparam // the model takes any Service namespace; the tests use one
	var selected []*securityv1beta1.AuthorizationPolicy
	for _, ap := range aps {
		s := &ap.Spec
		refs := s.TargetRefs
		if s.TargetRef != nil {
			refs = append([]*typev1beta1.PolicyTargetReference{s.TargetRef}, refs...)
		}
		attach := false
		for _, r := range refs {
			ns := r.Namespace
			if ns == "" {
				ns = ap.Namespace
			}
			switch {
			case r.Kind == "Service" && (r.Group == "" || r.Group == "core"):
				attach = attach || (svc != "" && r.Name == svc && ap.Namespace == svcNS)
			case r.Kind == "Gateway" && r.Group == "gateway.networking.k8s.io":
				attach = attach || (r.Name == w.name && ap.Namespace == w.namespace && ns == w.namespace)
			default:
				return nil, refused("AuthorizationPolicy %s: targetRef %s/%s", ap.Name, r.Group, r.Kind)
			}
		}
		if !attach {
			continue
		}
		if s.Action != securityapi.AuthorizationPolicy_ALLOW || s.GetProvider() != nil {
			return nil, refused("AuthorizationPolicy %s: action %s", ap.Name, s.Action)
		}
		selected = append(selected, ap)
	}
	if len(selected) == 0 {
		// No policy: no RBAC filter, the chain allows everything.
		h, _ := compileRBAC("waypoint-http", nil)
		t, _ := compileRBAC("waypoint-tcp", nil)
		return &waypointChain{http: h, tcp: t}, nil
	}
	httpRules := &rbacpb.RBAC{Action: rbacpb.RBAC_ALLOW, Policies: map[string]*rbacpb.Policy{}}
	tcpRules := &rbacpb.RBAC{Action: rbacpb.RBAC_ALLOW, Policies: map[string]*rbacpb.Policy{}}
	for _, ap := range selected {
		for i, rule := range ap.Spec.Rules {
			if rule == nil {
				continue
			}
			name := fmt.Sprintf("ns[%s]-policy[%s]-rule[%d]", ap.Namespace, ap.Name, i)
			for _, tcp := range []bool{false, true} {
				pol, err := istioPolicy(rule, tcp)
				if errors.Is(err, errRefused) {
					return nil, fmt.Errorf("AuthorizationPolicy %s rule %d: %w", ap.Name, i, err)
				}
				if err != nil {
					continue // skipped on this chain, as builder.build skips it
				}
				if tcp {
					tcpRules.Policies[name] = pol
				} else {
					httpRules.Policies[name] = pol
				}
			}
		}
	}
	h, err := compileRBAC("waypoint-http", httpRules)
	if err != nil {
		return nil, err
	}
	t, err := compileRBAC("waypoint-tcp", tcpRules)
	if err != nil {
		return nil, err
	}
	return &waypointChain{http: h, tcp: t}, nil
}

// allows: an HTTP request (c.headers set) on the HTTP chain, else a connection on the TCP chain.
// c.port is the Service port (the chain's).
func (w *waypointChain) allows(c *conn) (bool, string) {
	f := w.tcp
	if c.headers != nil {
		f = w.http
	} else {
		c = &conn{peer: c.peer, port: c.port}
	}
	ok, why := f.allows(c)
	if ok {
		return true, "allowed at the waypoint by " + why
	}
	return false, "denied at the waypoint by " + why
}

// ---- truth tables for the model itself ----

func apFor(name string, sel map[string]string, rules ...*securityapi.Rule) *securityv1beta1.AuthorizationPolicy {
	ap := &securityv1beta1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"}}
	if sel != nil {
		ap.Spec.Selector = &typev1beta1.WorkloadSelector{MatchLabels: sel}
	}
	ap.Spec.Rules = rules
	return ap
}

func fromTo(principals []string, ports []string, op *securityapi.Operation) *securityapi.Rule {
	r := &securityapi.Rule{From: []*securityapi.Rule_From{{Source: &securityapi.Source{Principals: principals}}}}
	if op == nil && len(ports) > 0 {
		op = &securityapi.Operation{}
	}
	if op != nil {
		op.Ports = ports
		r.To = []*securityapi.Rule_To{{Operation: op}}
	}
	return r
}

func TestZtunnelModelTruthTable(t *testing.T) {
	web := "spiffe://cluster.local/ns/shop/sa/web"
	db := map[string]string{"app": "db"}
	baseline := apFor("smi2istio-default-deny", nil)
	strict := &securityv1beta1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Name: "strict", Namespace: "shop"}}
	strict.Spec.Selector = &typev1beta1.WorkloadSelector{MatchLabels: db}
	strict.Spec.Mtls = &securityapi.PeerAuthentication_MutualTLS{Mode: securityapi.PeerAuthentication_MutualTLS_STRICT}
	portsOnly := &securityapi.Rule{To: []*securityapi.Rule_To{{Operation: &securityapi.Operation{Ports: []string{"5432"}}}}}
	targeted := apFor("targeted", nil, fromTo([]string{"cluster.local/ns/shop/sa/web"}, nil, nil))
	targeted.Spec.TargetRefs = []*typev1beta1.PolicyTargetReference{{Kind: "Service", Name: "db"}}
	for _, tc := range []struct {
		name string
		aps  []*securityv1beta1.AuthorizationPolicy
		pas  []*securityv1beta1.PeerAuthentication
		c    ztConn
		want bool
	}{
		{"no policy allows", nil, nil, ztConn{identity: web, port: 5432}, true},
		{"the namespace baseline denies", []*securityv1beta1.AuthorizationPolicy{baseline}, nil, ztConn{identity: web, port: 5432}, false},
		{"principals and ports", []*securityv1beta1.AuthorizationPolicy{baseline, apFor("l4", db, fromTo([]string{"cluster.local/ns/shop/sa/web"}, []string{"5432"}, nil))}, nil, ztConn{identity: web, port: 5432}, true},
		{"other port", []*securityv1beta1.AuthorizationPolicy{baseline, apFor("l4", db, fromTo([]string{"cluster.local/ns/shop/sa/web"}, []string{"5432"}, nil))}, nil, ztConn{identity: web, port: 22}, false},
		{"other principal", []*securityv1beta1.AuthorizationPolicy{baseline, apFor("l4", db, fromTo([]string{"cluster.local/ns/shop/sa/api"}, nil, nil))}, nil, ztConn{identity: web, port: 5432}, false},
		{"prefix principal", []*securityv1beta1.AuthorizationPolicy{baseline, apFor("l4", db, fromTo([]string{"cluster.local/ns/shop/sa/w*"}, nil, nil))}, nil, ztConn{identity: web, port: 5432}, true},
		{"another selector", []*securityv1beta1.AuthorizationPolicy{baseline, apFor("l4", map[string]string{"app": "api"}, fromTo([]string{"cluster.local/ns/shop/sa/web"}, nil, nil))}, nil, ztConn{identity: web, port: 5432}, false},
		{"an L7 rule is dropped from an ALLOW policy", []*securityv1beta1.AuthorizationPolicy{baseline, apFor("l7", db, fromTo([]string{"cluster.local/ns/shop/sa/web"}, []string{"5432"}, &securityapi.Operation{Methods: []string{"GET"}}))}, nil, ztConn{identity: web, port: 5432}, false},
		{"a header condition is L7", []*securityv1beta1.AuthorizationPolicy{baseline, apFor("l7", db, &securityapi.Rule{
			From: []*securityapi.Rule_From{{Source: &securityapi.Source{Principals: []string{"cluster.local/ns/shop/sa/web"}}}},
			When: []*securityapi.Condition{{Key: "request.headers[x]", Values: []string{"y"}}}})}, nil, ztConn{identity: web, port: 5432}, false},
		{"an ALLOW policy whose rules are all L7 still makes the pod deny", []*securityv1beta1.AuthorizationPolicy{apFor("l7", db, fromTo([]string{"cluster.local/ns/shop/sa/web"}, nil, &securityapi.Operation{Paths: []string{"/x"}}))}, nil, ztConn{identity: web, port: 5432}, false},
		{"targetRefs policies are not for ztunnel", []*securityv1beta1.AuthorizationPolicy{baseline, targeted}, nil, ztConn{identity: web, port: 5432}, false},
		{"STRICT denies a peer without mTLS", []*securityv1beta1.AuthorizationPolicy{apFor("any", db, portsOnly)}, []*securityv1beta1.PeerAuthentication{strict}, ztConn{port: 5432}, false},
		{"without STRICT a ports-only rule lets a peer without mTLS in", []*securityv1beta1.AuthorizationPolicy{apFor("any", db, portsOnly)}, nil, ztConn{port: 5432}, true},
		{"a from clause whose matches are all empty never matches", []*securityv1beta1.AuthorizationPolicy{apFor("any", db, fromTo(nil, []string{"5432"}, nil))}, nil, ztConn{identity: web, port: 5432}, false},
		{"a principal rule never matches a peer without mTLS", []*securityv1beta1.AuthorizationPolicy{apFor("l4", db, fromTo([]string{"*"}, nil, nil))}, nil, ztConn{port: 5432}, false},
	} {
		z, err := newZtunnelAuthz(tc.aps, tc.pas, "shop", map[string]string{"app": "db", "version": "v1"})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got, why := z.allows(tc.c); got != tc.want {
			t.Errorf("%s: got %v (%s), want %v", tc.name, got, why, tc.want)
		}
	}
}

func TestWaypointModelTruthTable(t *testing.T) {
	w := waypointRef{namespace: "shop", name: "waypoint", principal: "cluster.local/ns/shop/sa/waypoint"}
	web := "spiffe://cluster.local/ns/shop/sa/web"
	get := func(path string, port uint32) *conn {
		return &conn{peer: web, port: port, headers: map[string]string{":method": "GET", ":path": path, ":authority": "api"}}
	}
	tcp := &conn{peer: web, port: 80}
	onSvc := func(name, svc string, rules ...*securityapi.Rule) *securityv1beta1.AuthorizationPolicy {
		ap := apFor(name, nil, rules...)
		ap.Spec.TargetRefs = []*typev1beta1.PolicyTargetReference{{Kind: "Service", Name: svc}}
		return ap
	}
	baseline := apFor("gw", nil)
	baseline.Spec.TargetRefs = []*typev1beta1.PolicyTargetReference{{Group: "gateway.networking.k8s.io", Kind: "Gateway", Name: "waypoint"}}
	orders := fromTo([]string{"cluster.local/ns/shop/sa/web"}, []string{"80"}, &securityapi.Operation{Paths: []string{"/orders"}})
	l4 := fromTo([]string{"cluster.local/ns/shop/sa/web"}, []string{"80"}, nil)
	selector := apFor("selector", map[string]string{"app": "api"}, fromTo([]string{"cluster.local/ns/shop/sa/web"}, nil, nil))
	for _, tc := range []struct {
		name string
		aps  []*securityv1beta1.AuthorizationPolicy
		svc  string
		c    *conn
		want bool
	}{
		{"no policy: everything", nil, "api", get("/x", 80), true},
		{"the baseline alone denies", []*securityv1beta1.AuthorizationPolicy{baseline}, "api", get("/x", 80), false},
		{"the baseline denies the direct chain", []*securityv1beta1.AuthorizationPolicy{baseline, onSvc("p", "api", orders)}, "", get("/orders", 80), false},
		{"a Service policy and the baseline are ORed", []*securityv1beta1.AuthorizationPolicy{baseline, onSvc("p", "api", orders)}, "api", get("/orders", 80), true},
		{"the path must match", []*securityv1beta1.AuthorizationPolicy{baseline, onSvc("p", "api", orders)}, "api", get("/other", 80), false},
		{"the port is the Service's", []*securityv1beta1.AuthorizationPolicy{baseline, onSvc("p", "api", orders)}, "api", get("/orders", 8080), false},
		{"another Service's policy does not apply", []*securityv1beta1.AuthorizationPolicy{baseline, onSvc("p", "db", orders)}, "api", get("/orders", 80), false},
		{"another Service's policy alone leaves the chain open", []*securityv1beta1.AuthorizationPolicy{onSvc("p", "db", orders)}, "api", get("/orders", 80), true},
		{"selector policies are ignored", []*securityv1beta1.AuthorizationPolicy{baseline, selector}, "api", get("/x", 80), false},
		{"an allow-nothing Service policy", []*securityv1beta1.AuthorizationPolicy{onSvc("p", "api")}, "api", get("/x", 80), false},
		{"HTTP rules are skipped on TCP", []*securityv1beta1.AuthorizationPolicy{baseline, onSvc("p", "api", orders)}, "api", tcp, false},
		{"L4 rules apply on TCP", []*securityv1beta1.AuthorizationPolicy{baseline, onSvc("p", "api", l4)}, "api", tcp, true},
		{"L4 rules apply to every request", []*securityv1beta1.AuthorizationPolicy{baseline, onSvc("p", "api", l4)}, "api", get("/x", 80), true},
	} {
		ch, err := newWaypointChain(tc.aps, w, "shop", tc.svc)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got, why := ch.allows(tc.c); got != tc.want {
			t.Errorf("%s: got %v (%s), want %v", tc.name, got, why, tc.want)
		}
	}
}
