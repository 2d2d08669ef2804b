package translate

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	accessv1alpha2 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/access/v1alpha2"
	"google.golang.org/protobuf/types/known/structpb"
	networkingapi "istio.io/api/networking/v1alpha3"
	securityapi "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	securityv1beta1 "istio.io/client-go/pkg/apis/security/v1beta1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/smi2istio/smi2istio/internal/smi/normalize"
	"github.com/smi2istio/smi2istio/translate/regex"
)

// RegexPolicy says what to do with a regex an AuthorizationPolicy cannot express.
type RegexPolicy string

const (
	// RegexEnvoy keeps a sound superset in the AuthorizationPolicy and checks the regex in an
	// Envoy RBAC filter (EnvoyFilter) on the destination's inbound HTTP chain.
	RegexEnvoy RegexPolicy = "Envoy"
	// RegexReject leaves the match out (denied) and reports it.
	RegexReject RegexPolicy = "Reject"
)

// Rungs of the fidelity ladder, reported per value.
const (
	RungExact  = "ExactRung"
	RungEnvoy  = "EnvoyRung"
	RungReject = "Rejected"
)

// EnvoyFilterName is the name of the RBAC filter the Envoy rung inserts.
const EnvoyFilterName = "smi2istio.rbac"

// AccessInput is everything the access policy of one destination ServiceAccount depends on.
type AccessInput struct {
	Namespace, ServiceAccount string
	// Targets are the TrafficTargets whose destination is this ServiceAccount.
	Targets []*accessv1alpha2.TrafficTarget
	// RouteGroups and PortRoutes of the namespace; PortRoutes are keyed "TCPRoute/<name>" or
	// "UDPRoute/<name>".
	RouteGroups map[string]*normalize.HTTPRouteGroup
	PortRoutes  map[string]*normalize.PortRoute
	// RouteGroupErrors holds route groups that exist but cannot be read (e.g. headers of a wrong shape).
	RouteGroupErrors map[string]*normalize.FieldError
	// Workloads of the namespace, of every ServiceAccount (to check that selectors are precise).
	Workloads []Workload
	Mesh      Mesh
}

// TargetResult is the translation of one TrafficTarget.
type TargetResult struct {
	Name string
	// Err is an *InvalidError when the TrafficTarget is not accepted (nothing is allowed for it).
	Err                   error
	AuthorizationPolicies []*securityv1beta1.AuthorizationPolicy
	PeerAuthentications   []*securityv1beta1.PeerAuthentication
	Unresolved, Warnings  []Finding
	// Rungs names the rung used for every regex value.
	Rungs []Finding
}

// Objects returns the TrafficTarget's outputs in apply order.
func (r *TargetResult) Objects() []runtime.Object {
	var out []runtime.Object
	for _, pa := range r.PeerAuthentications {
		out = append(out, pa)
	}
	for _, ap := range r.AuthorizationPolicies {
		out = append(out, ap)
	}
	return out
}

// AccessResult is the desired access policy of one destination ServiceAccount.
type AccessResult struct {
	Selectors []Selector
	// SelectorFindings are about the ServiceAccount's workloads; they concern every TrafficTarget.
	SelectorFindings []Finding
	Targets          []TargetResult
	// EnvoyFilters check the regexes of the Envoy rung: one per selector that needs it, holding
	// every rule allowed to that selector (by any of the TrafficTargets).
	EnvoyFilters []*networkingv1alpha3.EnvoyFilter
}

// value is one string condition: what the AuthorizationPolicy writes and, when it is only a
// superset, the regex the Envoy rung checks.
type value struct {
	pattern string
	regex   string // set when the Envoy rung must check it
}

// accessRule is one allowed (sources, operation) pair.
type accessRule struct {
	principals []string // trust-domain/ns/<ns>/sa/<name>
	methods    []string
	path       *value
	host       *value
	headers    map[string]value
	ports      []int
	envoy      bool // some value is only a superset
	anyHTTP    bool // from a TCPRoute: no HTTP condition
	// regexes as written, for the Envoy rung's exact check.
	pathRegex, hostRegex string
	headerRegexes        map[string]string
}

// TranslateAccess translates the TrafficTargets of one destination ServiceAccount. Problems with a
// single TrafficTarget are in its TargetResult; the error is for output that cannot be built.
func TranslateAccess(in AccessInput) (*AccessResult, error) {
	res := &AccessResult{}
	res.Selectors, res.SelectorFindings = ResolveSelectors(in.ServiceAccount, in.Workloads)
	if len(res.Selectors) == 0 && len(res.SelectorFindings) == 0 {
		res.SelectorFindings = append(res.SelectorFindings, finding("spec.destination", "NoWorkloads",
			"no workload runs as ServiceAccount %s/%s: nothing to allow yet", in.Namespace, in.ServiceAccount))
	}
	targets := append([]*accessv1alpha2.TrafficTarget(nil), in.Targets...)
	sort.SliceStable(targets, func(i, j int) bool { return targets[i].Name < targets[j].Name })
	var allRules [][]accessRule // per target, for the Envoy rung
	for _, tt := range targets {
		tr, rules := translateTarget(in, tt)
		if tr.Err == nil {
			for _, sel := range res.Selectors {
				if ap := authorizationPolicy(tt, sel, rules); ap != nil {
					tr.AuthorizationPolicies = append(tr.AuthorizationPolicies, ap)
					tr.PeerAuthentications = append(tr.PeerAuthentications, peerAuthentication(tt, sel))
				}
			}
			allRules = append(allRules, rules)
		}
		res.Targets = append(res.Targets, tr)
	}
	needEnvoy := false
	for _, rules := range allRules {
		for _, r := range rules {
			needEnvoy = needEnvoy || r.envoy
		}
	}
	if needEnvoy {
		for _, sel := range res.Selectors {
			ef, err := envoyFilter(in, sel, targets, allRules)
			if err != nil {
				return nil, err
			}
			res.EnvoyFilters = append(res.EnvoyFilters, ef)
		}
	}
	return res, nil
}

func principal(mesh Mesh, namespace, name string) string {
	return mesh.trustDomain() + "/ns/" + namespace + "/sa/" + name
}

func translateTarget(in AccessInput, tt *accessv1alpha2.TrafficTarget) (TargetResult, []accessRule) {
	tr := TargetResult{Name: tt.Name}
	fail := func(err *InvalidError) (TargetResult, []accessRule) {
		tr.Err = err
		return tr, nil
	}
	d := tt.Spec.Destination
	if d.Kind != "ServiceAccount" {
		return fail(invalid("spec.destination.kind", "UnsupportedKind", "destination kind %q: only ServiceAccount is supported", d.Kind))
	}
	if d.Namespace != "" && d.Namespace != tt.Namespace {
		return fail(invalid("spec.destination.namespace", "InvalidDestination",
			"destination namespace %q differs from the TrafficTarget's namespace %q: a TrafficTarget lives with its destination", d.Namespace, tt.Namespace))
	}
	var principals []string
	for i, s := range tt.Spec.Sources {
		if s.Kind != "ServiceAccount" {
			return fail(invalid(fmt.Sprintf("spec.sources[%d].kind", i), "UnsupportedKind", "source kind %q: only ServiceAccount is supported", s.Kind))
		}
		ns := s.Namespace
		if ns == "" {
			ns = tt.Namespace
		}
		principals = append(principals, principal(in.Mesh, ns, s.Name))
	}
	sort.Strings(principals)
	var destPorts []int
	if d.Port != nil {
		destPorts = []int{*d.Port}
	}
	if len(principals) == 0 {
		tr.Warnings = append(tr.Warnings, finding("spec.sources", "NoSources", "no sources: nothing is allowed"))
		return tr, nil
	}

	var rules []accessRule
	for i, rule := range tt.Spec.Rules {
		field := fmt.Sprintf("spec.rules[%d]", i)
		switch rule.Kind {
		case "HTTPRouteGroup":
			if fe := in.RouteGroupErrors[rule.Name]; fe != nil {
				return fail(invalid("HTTPRouteGroup "+rule.Name+" "+fe.Field, fe.Reason, "%s", fe.Message))
			}
			g := in.RouteGroups[rule.Name]
			if g == nil {
				tr.Unresolved = append(tr.Unresolved, finding(field+".name", "RouteGroupNotFound",
					"HTTPRouteGroup %s/%s not found: nothing is allowed for this rule", tt.Namespace, rule.Name))
				continue
			}
			selected, missing := selectMatches(g, rule.Matches)
			for _, m := range missing {
				tr.Unresolved = append(tr.Unresolved, finding(field+".matches", "MatchNotFound",
					"HTTPRouteGroup %s has no match named %q: nothing is allowed for it", rule.Name, m))
			}
			for _, idx := range selected {
				r, err := httpRule(in.Mesh, g, idx, principals, destPorts, &tr)
				if err != nil {
					return fail(err)
				}
				if r != nil {
					rules = append(rules, *r)
				}
			}
		case "TCPRoute", "UDPRoute":
			pr := in.PortRoutes[rule.Kind+"/"+rule.Name]
			if pr == nil {
				tr.Unresolved = append(tr.Unresolved, finding(field+".name", "RouteNotFound",
					"%s %s/%s not found: nothing is allowed for this rule", rule.Kind, tt.Namespace, rule.Name))
				continue
			}
			if rule.Kind == "UDPRoute" {
				tr.Warnings = append(tr.Warnings, finding(field, "Unsupported", "Istio cannot enforce UDP: nothing is allowed for UDPRoute %s", rule.Name))
				continue
			}
			ports, ok := intersectPorts(pr.Ports, destPorts)
			if !ok {
				tr.Warnings = append(tr.Warnings, finding(field, "NoCommonPort",
					"TCPRoute %s ports %v do not include the destination port %v: nothing is allowed", rule.Name, pr.Ports, destPorts))
				continue
			}
			rules = append(rules, accessRule{principals: principals, ports: ports, anyHTTP: true})
		default:
			return fail(invalid(field+".kind", "UnsupportedKind", "rule kind %q is not HTTPRouteGroup, TCPRoute or UDPRoute", rule.Kind))
		}
	}
	return tr, rules
}

// selectMatches picks the named matches of a group; no names means every match (SMI spec).
func selectMatches(g *normalize.HTTPRouteGroup, names []string) (idx []int, missing []string) {
	if len(names) == 0 {
		for i := range g.Matches {
			idx = append(idx, i)
		}
		return idx, nil
	}
	for _, n := range names {
		found := false
		for i, m := range g.Matches {
			if m.Name == n {
				idx = append(idx, i)
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, n)
		}
	}
	return idx, missing
}

func intersectPorts(route, dest []int) ([]int, bool) {
	if len(dest) == 0 {
		return route, true
	}
	if len(route) == 0 {
		return dest, true
	}
	for _, p := range route {
		if p == dest[0] {
			return dest, true
		}
	}
	return nil, false
}

// httpRule turns one HTTPRouteGroup match into a rule; nil when the regex policy drops it.
func httpRule(mesh Mesh, g *normalize.HTTPRouteGroup, idx int, principals []string, ports []int, tr *TargetResult) (*accessRule, *InvalidError) {
	m := g.Matches[idx]
	base := fmt.Sprintf("HTTPRouteGroup %s spec.matches[%d]", g.Name, idx)
	r := &accessRule{principals: principals, ports: ports, headers: map[string]value{}, headerRegexes: map[string]string{}}
	for _, meth := range m.Methods {
		if meth == "*" {
			r.methods = nil
			break
		}
		r.methods = append(r.methods, meth)
	}
	dropped := false
	classify := func(field, expr string, templates bool) (*value, *InvalidError) {
		c, err := regex.Classify(expr, regex.Options{Templates: templates})
		if err != nil {
			return nil, invalid(field, "InvalidRegex", "%v", err)
		}
		if c.Exact.Kind != regex.Inexpressible {
			tr.Rungs = append(tr.Rungs, finding(field, RungExact, "%q is %s %q in the AuthorizationPolicy", expr, strings.ToLower(c.Exact.Kind.String()), c.Exact))
			return &value{pattern: c.Exact.String()}, nil
		}
		if mesh.regexPolicy() == RegexReject {
			tr.Rungs = append(tr.Rungs, finding(field, RungReject, "%q cannot be expressed by an AuthorizationPolicy and EnvoyFilters are not allowed: the match is left out (denied)", expr))
			dropped = true
			return nil, nil
		}
		tr.Rungs = append(tr.Rungs, finding(field, RungEnvoy, "%q: the AuthorizationPolicy allows %q and an Envoy RBAC filter checks the regex", expr, c.Superset))
		r.envoy = true
		return &value{pattern: c.Superset.String(), regex: expr}, nil
	}
	if m.PathRegex != "" {
		v, err := classify(base+".pathRegex", m.PathRegex, mesh.PathTemplates)
		if err != nil {
			return nil, err
		}
		r.path, r.pathRegex = v, m.PathRegex
	}
	for i, h := range m.Headers {
		field := fmt.Sprintf("%s.headers[%d]", base, i)
		name := strings.ToLower(h.Name)
		v, err := classify(field, h.Value, false)
		if err != nil {
			return nil, err
		}
		if v == nil {
			continue
		}
		if name == "host" || name == ":authority" {
			if r.host != nil {
				return nil, invalid(field, "DuplicateHeader", "header %s is matched twice in one match", h.Name)
			}
			r.host, r.hostRegex = v, h.Value
			continue
		}
		if _, dup := r.headers[name]; dup {
			return nil, invalid(field, "DuplicateHeader", "header %s is matched twice in one match", h.Name)
		}
		r.headers[name], r.headerRegexes[name] = *v, h.Value
	}
	if dropped {
		return nil, nil
	}
	return r, nil
}

func accessMeta(name, namespace, destination, sourceKind, sourceName string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:      name,
		Namespace: namespace,
		Labels: map[string]string{
			ManagedByLabel:   ManagedByValue,
			SourceKindLabel:  sourceKind,
			SourceNameLabel:  sourceName,
			DestinationLabel: destination,
		},
	}
}

func authorizationPolicy(tt *accessv1alpha2.TrafficTarget, sel Selector, rules []accessRule) *securityv1beta1.AuthorizationPolicy {
	if len(rules) == 0 {
		return nil
	}
	ap := &securityv1beta1.AuthorizationPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "security.istio.io/v1beta1", Kind: "AuthorizationPolicy"},
		ObjectMeta: accessMeta(tt.Name+"-"+sel.Key(), tt.Namespace, tt.Spec.Destination.Name, "TrafficTarget", tt.Name),
	}
	ap.Spec.Selector = &typev1beta1.WorkloadSelector{MatchLabels: copyMap(sel.Labels)}
	ap.Spec.Action = securityapi.AuthorizationPolicy_ALLOW
	for _, r := range rules {
		rule := &securityapi.Rule{From: []*securityapi.Rule_From{{Source: &securityapi.Source{Principals: r.principals}}}}
		op := &securityapi.Operation{Methods: r.methods}
		if r.path != nil && r.path.pattern != "*" {
			op.Paths = []string{r.path.pattern}
		}
		if r.host != nil && r.host.pattern != "*" {
			op.Hosts = []string{r.host.pattern}
		}
		for _, p := range r.ports {
			op.Ports = append(op.Ports, strconv.Itoa(p))
		}
		if len(op.Methods)+len(op.Paths)+len(op.Hosts)+len(op.Ports) > 0 {
			rule.To = []*securityapi.Rule_To{{Operation: op}}
		}
		names := make([]string, 0, len(r.headers))
		for n := range r.headers {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			rule.When = append(rule.When, &securityapi.Condition{Key: "request.headers[" + n + "]", Values: []string{r.headers[n].pattern}})
		}
		ap.Spec.Rules = append(ap.Spec.Rules, rule)
	}
	return ap
}

func peerAuthentication(tt *accessv1alpha2.TrafficTarget, sel Selector) *securityv1beta1.PeerAuthentication {
	pa := &securityv1beta1.PeerAuthentication{
		TypeMeta:   metav1.TypeMeta{APIVersion: "security.istio.io/v1beta1", Kind: "PeerAuthentication"},
		ObjectMeta: accessMeta(tt.Name+"-"+sel.Key(), tt.Namespace, tt.Spec.Destination.Name, "TrafficTarget", tt.Name),
	}
	pa.Spec.Selector = &typev1beta1.WorkloadSelector{MatchLabels: copyMap(sel.Labels)}
	pa.Spec.Mtls = &securityapi.PeerAuthentication_MutualTLS{Mode: securityapi.PeerAuthentication_MutualTLS_STRICT}
	return pa
}

// envoyFilter holds every rule allowed to the selector, with full regexes: an Envoy RBAC filter is
// all-or-nothing for the workload's inbound HTTP traffic, so it must allow the union.
func envoyFilter(in AccessInput, sel Selector, targets []*accessv1alpha2.TrafficTarget, allRules [][]accessRule) (*networkingv1alpha3.EnvoyFilter, error) {
	policies := map[string]any{}
	for t, rules := range allRules {
		for i, r := range rules {
			policies[fmt.Sprintf("%s/%d", targets[t].Name, i)] = envoyPolicy(r)
		}
	}
	cfg, err := structpb.NewStruct(map[string]any{
		"name": EnvoyFilterName,
		"typed_config": map[string]any{
			"@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
			"rules": map[string]any{"action": "ALLOW", "policies": policies},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("build Envoy RBAC config for ServiceAccount %s/%s: %w", in.Namespace, in.ServiceAccount, err)
	}
	ef := &networkingv1alpha3.EnvoyFilter{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.istio.io/v1alpha3", Kind: "EnvoyFilter"},
		ObjectMeta: accessMeta(in.ServiceAccount+"-"+sel.Key(), in.Namespace, in.ServiceAccount, "ServiceAccount", in.ServiceAccount),
	}
	ef.Spec.WorkloadSelector = &networkingapi.WorkloadSelector{Labels: copyMap(sel.Labels)}
	ef.Spec.ConfigPatches = []*networkingapi.EnvoyFilter_EnvoyConfigObjectPatch{{
		ApplyTo: networkingapi.EnvoyFilter_HTTP_FILTER,
		Match: &networkingapi.EnvoyFilter_EnvoyConfigObjectMatch{
			Context: networkingapi.EnvoyFilter_SIDECAR_INBOUND,
			ObjectTypes: &networkingapi.EnvoyFilter_EnvoyConfigObjectMatch_Listener{Listener: &networkingapi.EnvoyFilter_ListenerMatch{
				FilterChain: &networkingapi.EnvoyFilter_ListenerMatch_FilterChainMatch{
					Filter: &networkingapi.EnvoyFilter_ListenerMatch_FilterMatch{
						Name:      "envoy.filters.network.http_connection_manager",
						SubFilter: &networkingapi.EnvoyFilter_ListenerMatch_SubFilterMatch{Name: "envoy.filters.http.router"},
					},
				},
			}},
		},
		Patch: &networkingapi.EnvoyFilter_Patch{Operation: networkingapi.EnvoyFilter_Patch_INSERT_BEFORE, Value: cfg},
	}}
	return ef, nil
}

// envoyPolicy renders one rule as an Envoy RBAC policy (principals ORed, permissions ANDed).
func envoyPolicy(r accessRule) map[string]any {
	var principals []any
	for _, p := range r.principals {
		principals = append(principals, map[string]any{"authenticated": map[string]any{
			"principal_name": map[string]any{"exact": "spiffe://" + p}}})
	}
	var and []any
	if len(r.methods) > 0 {
		var or []any
		for _, m := range r.methods {
			or = append(or, header(":method", map[string]any{"exact": m}))
		}
		and = append(and, map[string]any{"or_rules": map[string]any{"rules": or}})
	}
	if r.pathRegex != "" {
		and = append(and, map[string]any{"url_path": map[string]any{"path": map[string]any{"safe_regex": map[string]any{"regex": r.pathRegex}}}})
	}
	if r.hostRegex != "" {
		// The host is compared without its port, as Istio's hosts are.
		and = append(and, header(":authority", map[string]any{"safe_regex": map[string]any{"regex": "(?:" + r.hostRegex + ")(?::[0-9]+)?"}}))
	}
	names := make([]string, 0, len(r.headerRegexes))
	for n := range r.headerRegexes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		and = append(and, header(n, map[string]any{"safe_regex": map[string]any{"regex": r.headerRegexes[n]}}))
	}
	if len(r.ports) > 0 {
		var or []any
		for _, p := range r.ports {
			or = append(or, map[string]any{"destination_port": float64(p)})
		}
		and = append(and, map[string]any{"or_rules": map[string]any{"rules": or}})
	}
	permissions := []any{map[string]any{"any": true}}
	if len(and) > 0 {
		permissions = []any{map[string]any{"and_rules": map[string]any{"rules": and}}}
	}
	return map[string]any{"permissions": permissions, "principals": principals}
}

func header(name string, match map[string]any) map[string]any {
	return map[string]any{"header": map[string]any{"name": name, "string_match": match}}
}
