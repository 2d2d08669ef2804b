package translate

import (
	"fmt"
	"regexp/syntax"
	"sort"
	"strconv"
	"strings"

	accessv1alpha2 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/access/v1alpha2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	networkingapi "istio.io/api/networking/v1alpha3"
	securityapi "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	securityv1beta1 "istio.io/client-go/pkg/apis/security/v1beta1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

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
	RouteGroups map[string]*HTTPRouteGroup
	PortRoutes  map[string]*PortRoute
	// RouteGroupErrors holds route groups that exist but cannot be read (e.g. headers of a wrong shape).
	RouteGroupErrors map[string]*FieldError
	// PortRouteErrors holds TCPRoutes and UDPRoutes (keyed as PortRoutes) that exist but cannot be
	// read (a field of the wrong type or unknown, kept by a CRD that does not validate).
	PortRouteErrors map[string]*FieldError
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
	patterns []string // ORed; ["*"]: any value
	regex    string   // set when the Envoy rung must check it
}

// anyValue: the value's only pattern is presence, which a policy writes by leaving it out (paths,
// hosts).
func (v *value) anyValue() bool { return v == nil || (len(v.patterns) == 1 && v.patterns[0] == "*") }

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
//
// Every output is checked with ValidateOutput: a TrafficTarget whose outputs (or whose part of the
// Envoy rung's filter) fail gets an *InvalidError with reason InvalidOutput and no outputs, and its
// rules stay out of the filter, as the rules of every invalid TrafficTarget do.
func TranslateAccess(in AccessInput) (*AccessResult, error) {
	res := &AccessResult{}
	res.Selectors, res.SelectorFindings = ResolveSelectors(in.ServiceAccount, in.Workloads)
	if len(res.Selectors) == 0 && len(res.SelectorFindings) == 0 {
		res.SelectorFindings = append(res.SelectorFindings, finding("spec.destination", "NoWorkloads",
			"no workload runs as ServiceAccount %s/%s: nothing to allow yet", in.Namespace, in.ServiceAccount))
	}
	targets := append([]*accessv1alpha2.TrafficTarget(nil), in.Targets...)
	sort.SliceStable(targets, func(i, j int) bool { return targets[i].Name < targets[j].Name })
	var valid []targetRules // rules of the valid TrafficTargets, with their index in res.Targets
	var index []int
	for _, tt := range targets {
		tr, rules := translateTarget(in, tt)
		if tr.Err == nil {
			for _, sel := range res.Selectors {
				if ap := authorizationPolicy(tt, sel, rules); ap != nil {
					tr.AuthorizationPolicies = append(tr.AuthorizationPolicies, ap)
					tr.PeerAuthentications = append(tr.PeerAuthentications, peerAuthentication(tt, sel))
				}
			}
			if err := validateObjects(&tr); err != nil {
				tr.Err, tr.AuthorizationPolicies, tr.PeerAuthentications = err, nil, nil
			} else {
				valid, index = append(valid, targetRules{name: tt.Name, rules: rules}), append(index, len(res.Targets))
			}
		}
		res.Targets = append(res.Targets, tr)
	}
	// When the destination needs the Envoy rung, every valid TrafficTarget's rules go into the
	// filter: each part is validated on its own, so that one TrafficTarget's rules can only make
	// that TrafficTarget invalid.
	var filterRules []targetRules
	needEnvoy := needsEnvoy(valid)
	for i, t := range valid {
		if needEnvoy {
			if err := validateFilterPart(in, t, res.Selectors); err != nil {
				tr := &res.Targets[index[i]]
				tr.Err, tr.AuthorizationPolicies, tr.PeerAuthentications = err, nil, nil
				continue
			}
		}
		filterRules = append(filterRules, t)
	}
	if needsEnvoy(filterRules) {
		for _, sel := range res.Selectors {
			ef, err := envoyFilter(in, sel, filterRules)
			if err != nil {
				return nil, err
			}
			if err := ValidateOutput(ef); err != nil {
				// Each TrafficTarget's part was valid on its own: the union must be too.
				return nil, fmt.Errorf("envoy rung filter for ServiceAccount %s/%s: %w", in.Namespace, in.ServiceAccount, err)
			}
			res.EnvoyFilters = append(res.EnvoyFilters, ef)
		}
	}
	return res, nil
}

// targetRules are the rules of one valid TrafficTarget, named after it in the Envoy rung's filter.
type targetRules struct {
	name  string
	rules []accessRule
}

func needsEnvoy(ts []targetRules) bool {
	for _, t := range ts {
		for _, r := range t.rules {
			if r.envoy {
				return true
			}
		}
	}
	return false
}

// validateObjects checks a TrafficTarget's outputs with ValidateOutput; the first failure is the
// TrafficTarget's InvalidError.
func validateObjects(tr *TargetResult) *InvalidError {
	for _, o := range tr.Objects() {
		if err := ValidateOutput(o); err != nil {
			return invalid("spec", ReasonInvalidOutput, "the generated %v; nothing is applied for this TrafficTarget", err)
		}
	}
	return nil
}

// validateFilterPart checks a TrafficTarget's part of the Envoy rung's filter, alone.
func validateFilterPart(in AccessInput, t targetRules, sels []Selector) *InvalidError {
	for _, sel := range sels {
		ef, err := envoyFilter(in, sel, []targetRules{t})
		if err == nil {
			err = ValidateOutput(ef)
		}
		if err != nil {
			return invalid("spec", ReasonInvalidOutput, "the generated Envoy RBAC filter for its rules: %v; nothing is applied for this TrafficTarget", err)
		}
	}
	return nil
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
	// Names become principals, selectors and label values: a name that is not one could be read
	// as a pattern (a trailing * is a prefix match) or make an output Istio rejects.
	if err := checkName("spec.destination.name", d.Name, serviceAccountName, labelValue); err != nil {
		return fail(err)
	}
	if err := checkName("metadata.name", tt.Name, labelValue); err != nil {
		return fail(err)
	}
	var principals []string
	for i, s := range tt.Spec.Sources {
		if s.Kind != "ServiceAccount" {
			return fail(invalid(fmt.Sprintf("spec.sources[%d].kind", i), "UnsupportedKind", "source kind %q: only ServiceAccount is supported", s.Kind))
		}
		if err := checkName(fmt.Sprintf("spec.sources[%d].name", i), s.Name, serviceAccountName); err != nil {
			return fail(err)
		}
		ns := s.Namespace
		if ns == "" {
			ns = tt.Namespace
		} else if err := checkName(fmt.Sprintf("spec.sources[%d].namespace", i), ns, namespaceName); err != nil {
			return fail(err)
		}
		principals = append(principals, principal(in.Mesh, ns, s.Name))
	}
	sort.Strings(principals)
	if len(principals) == 0 {
		tr.Warnings = append(tr.Warnings, finding("spec.sources", "NoSources", "no sources: nothing is allowed"))
		return tr, nil
	}
	// v1alpha1/v1alpha2 destination.port restricts every rule.
	destPorts := anyPort
	if d.Port != nil {
		destPorts = portSet{ports: []int{*d.Port}}
	}

	// A TCPRoute next to an HTTPRouteGroup restricts the HTTP rules to its ports (ANDed, the SMI
	// access spec's example); only a TrafficTarget without HTTPRouteGroup rules allows raw TCP.
	hasHTTP := false
	for _, rule := range tt.Spec.Rules {
		hasHTTP = hasHTTP || rule.Kind == "HTTPRouteGroup"
	}
	var httpRules, tcpRules []accessRule
	var tcpRoutes []string // TCPRoute names, when they restrict HTTP rules
	var udpRoutes []string // UDPRoute names next to HTTP rules: ANDed, they leave no TCP port
	tcpPorts := portSet{}  // union of the TCPRoutes' ports; empty until one is found
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
				r, err := httpRule(in.Mesh, g, idx, principals, &tr)
				if err != nil {
					return fail(err)
				}
				if r != nil {
					httpRules = append(httpRules, *r)
				}
			}
		case "TCPRoute", "UDPRoute":
			if fe := in.PortRouteErrors[rule.Kind+"/"+rule.Name]; fe != nil {
				return fail(invalid(rule.Kind+" "+rule.Name+" "+fe.Field, fe.Reason, "%s", fe.Message))
			}
			pr := in.PortRoutes[rule.Kind+"/"+rule.Name]
			if pr == nil {
				tr.Unresolved = append(tr.Unresolved, finding(field+".name", "RouteNotFound",
					"%s %s/%s not found: nothing is allowed for this rule", rule.Kind, tt.Namespace, rule.Name))
				continue
			}
			if rule.Kind == "UDPRoute" {
				tr.Warnings = append(tr.Warnings, finding(field, "Unsupported", "Istio cannot enforce UDP: nothing is allowed for UDPRoute %s", rule.Name))
				if hasHTTP {
					udpRoutes = append(udpRoutes, rule.Name) // it restricts the HTTP rules to UDP ports: to nothing
				}
				continue
			}
			if err := checkRoutePorts(field, pr); err != nil {
				return fail(err)
			}
			route := portSet{ports: pr.Ports, all: len(pr.Ports) == 0}
			if hasHTTP {
				tcpPorts = tcpPorts.union(route)
				tcpRoutes = append(tcpRoutes, rule.Name)
				continue
			}
			ports := route.intersect(destPorts)
			if ports.empty() {
				tr.Warnings = append(tr.Warnings, finding(field, "NoCommonPort",
					"TCPRoute %s ports %v do not include the destination port %v: nothing is allowed", rule.Name, pr.Ports, destPorts.ports))
				continue
			}
			tcpRules = append(tcpRules, accessRule{principals: principals, ports: ports.ports, anyHTTP: true})
		default:
			return fail(invalid(field+".kind", "UnsupportedKind", "rule kind %q is not HTTPRouteGroup, TCPRoute or UDPRoute", rule.Kind))
		}
	}
	if !hasHTTP {
		return tr, tcpRules
	}
	ports := destPorts
	hasTCPRoute := false
	for _, rule := range tt.Spec.Rules {
		// Port routes are ORed among themselves and ANDed with the HTTP rules; a UDPRoute is one
		// whose ports no HTTP request uses (the narrower reading).
		hasTCPRoute = hasTCPRoute || rule.Kind == "TCPRoute" || rule.Kind == "UDPRoute"
	}
	if hasTCPRoute {
		ports = ports.intersect(tcpPorts)
		if len(tcpRoutes) > 0 && !ports.empty() {
			tr.Warnings = append(tr.Warnings, finding("spec.rules", "TCPRoutesRestrictHTTP",
				"TCPRoute %s and the HTTPRouteGroup rules are ANDed: the HTTP rules are allowed on %s, and the TCPRoutes allow no other traffic",
				strings.Join(tcpRoutes, ", "), ports))
		}
	}
	if ports.empty() && len(httpRules) > 0 {
		msg := "the TCPRoutes and the destination port of this TrafficTarget have no port in common: nothing is allowed"
		switch {
		case len(tcpRoutes) == 0 && len(udpRoutes) > 0:
			msg = "the HTTP rules are ANDed with UDPRoute " + strings.Join(udpRoutes, ", ") + ", whose ports no HTTP request uses (and Istio cannot enforce UDP): nothing is allowed"
		case len(tcpRoutes) == 0:
			msg = "no TCPRoute of this TrafficTarget was found, and they restrict its HTTP rules: nothing is allowed"
		}
		tr.Warnings = append(tr.Warnings, finding("spec.rules", "NoCommonPort", "%s", msg))
		return tr, nil
	}
	for i := range httpRules {
		httpRules[i].ports = ports.ports
	}
	return tr, httpRules
}

// portSet is a set of ports, or every port.
type portSet struct {
	all   bool
	ports []int // sorted, unique; when !all
}

var anyPort = portSet{all: true}

func (a portSet) empty() bool { return !a.all && len(a.ports) == 0 }

func (a portSet) union(b portSet) portSet {
	if a.all || b.all {
		return anyPort
	}
	return portSet{ports: sortedUnique(append(append([]int(nil), a.ports...), b.ports...))}
}

func (a portSet) intersect(b portSet) portSet {
	switch {
	case a.all:
		return portSet{all: b.all, ports: sortedUnique(b.ports)}
	case b.all:
		return portSet{ports: sortedUnique(a.ports)}
	}
	in := map[int]bool{}
	for _, p := range b.ports {
		in[p] = true
	}
	var out []int
	for _, p := range a.ports {
		if in[p] {
			out = append(out, p)
		}
	}
	return portSet{ports: sortedUnique(out)}
}

func (a portSet) String() string {
	if a.all {
		return "every port"
	}
	s := make([]string, len(a.ports))
	for i, p := range a.ports {
		s[i] = strconv.Itoa(p)
	}
	if len(s) == 1 {
		return "port " + s[0] + " only"
	}
	return "ports " + strings.Join(s, ", ") + " only"
}

func sortedUnique(ps []int) []int {
	if len(ps) == 0 {
		return nil
	}
	ps = append([]int(nil), ps...)
	sort.Ints(ps)
	out := ps[:1]
	for _, p := range ps[1:] {
		if p != out[len(out)-1] {
			out = append(out, p)
		}
	}
	return out
}

// checkRoutePorts refuses a route port that is no port (the CRD allows 1-65535; the CLI reads files).
func checkRoutePorts(field string, pr *PortRoute) *InvalidError {
	for _, p := range pr.Ports {
		if p < 1 || p > 65535 {
			return invalid(field+".name", "InvalidPort", "%s %s: port %d is not 1-65535", pr.Kind, pr.Name, p)
		}
	}
	return nil
}

// selectMatches picks the named matches of a group; no names means every match (SMI spec).
func selectMatches(g *HTTPRouteGroup, names []string) (idx []int, missing []string) {
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

// httpRule turns one HTTPRouteGroup match into a rule; nil when the match allows nothing (a value
// no request can have) or the regex policy drops it. The caller sets its ports.
func httpRule(mesh Mesh, g *HTTPRouteGroup, idx int, principals []string, tr *TargetResult) (*accessRule, *InvalidError) {
	m := g.Matches[idx]
	base := fmt.Sprintf("HTTPRouteGroup %s spec.matches[%d]", g.Name, idx)
	r := &accessRule{principals: principals, headers: map[string]value{}, headerRegexes: map[string]string{}}
	for i, meth := range m.Methods {
		if meth == "*" {
			r.methods = nil
			break
		}
		if !headerName.MatchString(meth) || strings.ContainsAny(meth, ":*") {
			return nil, invalid(fmt.Sprintf("%s.methods[%d]", base, i), "InvalidMethod", "%q is not an HTTP method", meth)
		}
		r.methods = append(r.methods, meth)
	}
	dropped, nothing := false, false
	classify := func(field, expr string, what valueKind) (*value, *InvalidError) {
		c, err := regex.Classify(expr, regex.Options{Templates: what == pathValue && mesh.PathTemplates, IgnoreCase: what == hostValue})
		if err != nil {
			return nil, invalid(field, "InvalidRegex", "%v", err)
		}
		exact := c.Exact.Kind != regex.Inexpressible
		superset := c.Superset
		if p := c.Superset; p.Kind == regex.Exact && p.Literal == "" {
			// The regex matches the empty string or nothing: AuthorizationPolicies have no empty value.
			if what != headerValue {
				tr.Warnings = append(tr.Warnings, finding(field, "MatchesNothing",
					"%q matches no %s but the empty one, which no request has: this match allows nothing", expr, what))
				nothing = true
				return nil, nil
			}
			// A header present with an empty value: the policy checks presence, the Envoy rung the value.
			exact, superset = false, regex.Pattern{Kind: regex.Presence}
		}
		// A host regex is matched against the whole authority, port included, as a regex on the
		// Host header is (the narrower reading); Istio's hosts compare it too, ignoring case, which
		// the classification took into account (IgnoreCase).
		supersets := []string{superset.String()}
		if exact {
			tr.Rungs = append(tr.Rungs, finding(field, RungExact, "%q is %s %q in the AuthorizationPolicy", expr, strings.ToLower(c.Exact.Kind.String()), c.Exact))
			return &value{patterns: []string{c.Exact.String()}}, nil
		}
		if mesh.regexPolicy() == RegexReject {
			tr.Rungs = append(tr.Rungs, finding(field, RungReject, "%q cannot be expressed by an AuthorizationPolicy and EnvoyFilters are not allowed: the match is left out (denied)", expr))
			dropped = true
			return nil, nil
		}
		tr.Rungs = append(tr.Rungs, finding(field, RungEnvoy, "%q: the AuthorizationPolicy allows %s and an Envoy RBAC filter checks the regex", expr, quoted(supersets)))
		r.envoy = true
		return &value{patterns: supersets, regex: expr}, nil
	}
	if m.PathRegex != "" {
		v, err := classify(base+".pathRegex", m.PathRegex, pathValue)
		if err != nil {
			return nil, err
		}
		r.path, r.pathRegex = v, m.PathRegex
	}
	for i, h := range m.Headers {
		field := fmt.Sprintf("%s.headers[%d]", base, i)
		name := strings.ToLower(h.Name)
		if !headerName.MatchString(name) {
			return nil, invalid(field, "InvalidHeader", "%q is not an HTTP header name", h.Name)
		}
		isHost := name == "host" || name == ":authority"
		what := headerValue
		if isHost {
			what = hostValue
		}
		v, err := classify(field, h.Value, what)
		if err != nil {
			return nil, err
		}
		if v == nil {
			continue
		}
		if isHost {
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
	if dropped || nothing {
		return nil, nil
	}
	return r, nil
}

func quoted(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, " or ")
}

// valueKind is what a regex of an HTTPRouteGroup match is matched against.
type valueKind string

const (
	pathValue   valueKind = "request path"
	hostValue   valueKind = "host"
	headerValue valueKind = "header value"
)

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
		if !r.path.anyValue() {
			op.Paths = r.path.patterns
		}
		if !r.host.anyValue() {
			op.Hosts = r.host.patterns
		}
		for _, p := range r.ports {
			op.Ports = append(op.Ports, strconv.Itoa(p))
		}
		if !r.anyHTTP && len(op.Methods)+len(op.Paths)+len(op.Hosts)+len(r.headers) == 0 {
			// A rule from an HTTPRouteGroup keeps an HTTP-only field, so that Istio never applies it
			// on a TCP filter chain (it skips ALLOW rules with HTTP-only fields there). Paths "*"
			// (any non-empty path, as every HTTP request has) allows every request.
			op.Paths = []string{"*"}
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
			rule.When = append(rule.When, &securityapi.Condition{Key: "request.headers[" + n + "]", Values: r.headers[n].patterns})
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

// rbacFilterMatches are where the Envoy rung's filter goes: first in every HTTP connection manager
// the selected workloads serve with — a sidecar's inbound listeners, and a gateway's listeners
// (Istio applies selector-based AuthorizationPolicies to gateways too, so the widened policy would
// hold there without the filter). INSERT_FIRST depends on no other filter being there (Istio's
// analyzer warns, IST0151, that a relative insertion may not be applied).
var rbacFilterMatches = []*networkingapi.EnvoyFilter_EnvoyConfigObjectMatch{
	rbacFilterMatch(networkingapi.EnvoyFilter_SIDECAR_INBOUND),
	rbacFilterMatch(networkingapi.EnvoyFilter_GATEWAY),
}

func rbacFilterMatch(context networkingapi.EnvoyFilter_PatchContext) *networkingapi.EnvoyFilter_EnvoyConfigObjectMatch {
	return &networkingapi.EnvoyFilter_EnvoyConfigObjectMatch{
		Context: context,
		ObjectTypes: &networkingapi.EnvoyFilter_EnvoyConfigObjectMatch_Listener{Listener: &networkingapi.EnvoyFilter_ListenerMatch{
			FilterChain: &networkingapi.EnvoyFilter_ListenerMatch_FilterChainMatch{
				Filter: &networkingapi.EnvoyFilter_ListenerMatch_FilterMatch{Name: "envoy.filters.network.http_connection_manager"},
			},
		}},
	}
}

// AnalyzeSuppressAnnotation tells `istioctl analyze` which of its messages about an object are
// expected. The Envoy rung is an EnvoyFilter by design (docs/design.md §5; `regexPolicy: Reject`
// avoids it), so the warning that EnvoyFilters expose implementation details (IST0133) is.
const AnalyzeSuppressAnnotation = "galley.istio.io/analyze-suppress"

// envoyFilter holds every rule allowed to the selector, with full regexes: an Envoy RBAC filter is
// all-or-nothing for the workload's inbound HTTP traffic, so it must allow the union. Policies are
// named <TrafficTarget>/<rule index>.
func envoyFilter(in AccessInput, sel Selector, targets []targetRules) (*networkingv1alpha3.EnvoyFilter, error) {
	policies := map[string]any{}
	for _, t := range targets {
		for i, r := range t.rules {
			policies[fmt.Sprintf("%s/%d", t.name, i)] = envoyPolicy(r)
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
	ef.Annotations = map[string]string{AnalyzeSuppressAnnotation: "IST0133"}
	ef.Spec.WorkloadSelector = &networkingapi.WorkloadSelector{Labels: copyMap(sel.Labels)}
	for _, m := range rbacFilterMatches {
		ef.Spec.ConfigPatches = append(ef.Spec.ConfigPatches, &networkingapi.EnvoyFilter_EnvoyConfigObjectPatch{
			ApplyTo: networkingapi.EnvoyFilter_HTTP_FILTER,
			Match:   proto.Clone(m).(*networkingapi.EnvoyFilter_EnvoyConfigObjectMatch),
			Patch:   &networkingapi.EnvoyFilter_Patch{Operation: networkingapi.EnvoyFilter_Patch_INSERT_FIRST, Value: proto.Clone(cfg).(*structpb.Struct)},
		})
	}
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
		// The whole authority, port included, as a regex on the Host header means.
		and = append(and, header(":authority", map[string]any{"safe_regex": map[string]any{"regex": parsedRegex(r.hostRegex)}}))
	}
	names := make([]string, 0, len(r.headerRegexes))
	for n := range r.headerRegexes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		re := r.headerRegexes[n]
		if re == "" {
			re = "^$" // Envoy refuses an empty safe_regex; this one means the same: the empty value
		}
		and = append(and, header(n, map[string]any{"safe_regex": map[string]any{"regex": re}}))
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

// parsedRegex is expr, safe to wrap in a group: a \Q without \E would quote what follows it, so
// such a regex is rendered as Go's RE2 parser reads it (same language).
func parsedRegex(expr string) string {
	if !strings.Contains(expr, `\Q`) {
		return expr
	}
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return expr // refused by translation before
	}
	return re.String()
}

func header(name string, match map[string]any) map[string]any {
	return map[string]any{"header": map[string]any{"name": name, "string_match": match}}
}
