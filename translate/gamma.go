package translate

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	networkingapi "istio.io/api/networking/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1alpha2 "sigs.k8s.io/gateway-api/apis/v1alpha2"
)

// GatewayGroupVersion is the API version of the Gateway API routes smi2istio writes.
const GatewayGroupVersion = "gateway.networking.k8s.io/v1"

// Versions of the Gateway API TCPRoute CRD a TCP port can be split with (GatewayOptions).
const (
	// TCPRouteV1 is TCPRoute in the standard channel (Gateway API >= 1.5; what the pinned Istio reads).
	TCPRouteV1 = "v1"
	// TCPRouteV1Alpha2 is TCPRoute in the experimental channel of older Gateway API releases.
	TCPRouteV1Alpha2 = "v1alpha2"
)

// Names of the rules of a generated HTTPRoute (Istio names its routes after them).
const (
	// GatewaySplitRule is the rule holding the weighted backends (split-2, split-3... when the
	// matches need more than one rule).
	GatewaySplitRule = "split"
	// GatewayRootRule is the last rule of a split with matches: every other request to the root.
	GatewayRootRule = "root"
)

// gatewayCatchAll is the path regex of the rule to the root Service: it matches every path, and,
// being a regex, Istio orders it after the split's rules (Istio sorts the routes of an HTTPRoute
// Exact > Prefix > RegularExpression, then the longer value first, then method, then more
// headers, else in order). A match without a path is a PathPrefix "/" once defaulted: before it.
const gatewayCatchAll = ".*"

// Limits of the Gateway API CRDs (HTTPRoute, TCPRoute).
const (
	maxGatewayMatchesPerRule = 64
	maxGatewayMatchesTotal   = 127 // "less than 128" across the rules of a route
	maxGatewayRules          = 16
	maxGatewayHeaders        = 16
	maxGatewayBackendRefs    = 16
	maxGatewayWeight         = 1000000
	maxGatewayPathLen        = 1024
	maxGatewayHeaderValueLen = 4096
)

// gatewayHeaderName is an HTTP header name as the Gateway API accepts it (no pseudo-headers).
var gatewayHeaderName = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+\\-.^_`|~]+$")

// gatewaySectionName is a rule name as the Gateway API accepts it.
var gatewaySectionName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

var gatewayMethods = map[string]bool{
	"GET": true, "HEAD": true, "POST": true, "PUT": true, "DELETE": true,
	"CONNECT": true, "OPTIONS": true, "TRACE": true, "PATCH": true,
}

// GatewayOptions are what the Gateway API translation of a split depends on besides its input.
type GatewayOptions struct {
	// TCPRouteVersion is the served version of the TCPRoute CRD (TCPRouteV1 or TCPRouteV1Alpha2)
	// that TCP ports are split with; empty when the CRD is not served: TCP ports are not split and
	// the split reports them (TCPRouteNotServed).
	TCPRouteVersion string `json:"tcpRouteVersion,omitempty"`
}

// GatewaySplitResult is the desired Gateway API state for one TrafficSplit (GAMMA: routes whose
// parent is the root Service).
type GatewaySplitResult struct {
	// RootService is the name of the root Service and Host its FQDN.
	RootService, Host string
	// HTTPRoutes: one for the root Service, or one per HTTP port (named <root>-<port>) when the
	// root Service has several ports. Ports where nothing is split have none.
	HTTPRoutes []*gatewayv1.HTTPRoute
	// TCPRoutes: one per split TCP port (named as HTTPRoutes), in GatewayOptions.TCPRouteVersion
	// (held as v1 here; Objects converts them).
	TCPRoutes []*gatewayv1.TCPRoute
	// TCPRouteVersion is the version Objects writes TCPRoutes in.
	TCPRouteVersion string
	// Unresolved lists references not found (Services, HTTPRouteGroups).
	Unresolved []Finding
	// Warnings lists what was translated other than written (excluded backends, ports not split).
	Warnings []Finding
}

// Objects returns the outputs in apply order (no route depends on another): HTTPRoutes, then
// TCPRoutes in the version the options named.
func (r *GatewaySplitResult) Objects() []runtime.Object {
	var out []runtime.Object
	for _, h := range r.HTTPRoutes {
		out = append(out, h)
	}
	for _, t := range r.TCPRoutes {
		if r.TCPRouteVersion == TCPRouteV1Alpha2 {
			out = append(out, tcpRouteV1Alpha2(t))
			continue
		}
		out = append(out, t)
	}
	return out
}

func tcpRouteV1Alpha2(t *gatewayv1.TCPRoute) *gatewayv1alpha2.TCPRoute {
	out := &gatewayv1alpha2.TCPRoute{
		TypeMeta:   metav1.TypeMeta{APIVersion: gatewayv1alpha2.GroupVersion.String(), Kind: "TCPRoute"},
		ObjectMeta: *t.ObjectMeta.DeepCopy(),
	}
	t.Spec.CommonRouteSpec.DeepCopyInto(&out.Spec.CommonRouteSpec)
	for _, r := range t.Spec.Rules {
		out.Spec.Rules = append(out.Spec.Rules, gatewayv1alpha2.TCPRouteRule(*r.DeepCopy()))
	}
	return out
}

// Validate checks every output with ValidateGatewayOutput. The error is an *InvalidError with
// reason InvalidOutput naming the first object that fails: nothing of the split is applied.
func (r *GatewaySplitResult) Validate() error {
	for _, o := range r.Objects() {
		if err := ValidateGatewayOutput(o); err != nil {
			return invalid("spec", ReasonInvalidOutput, "the generated %v; nothing is applied for this TrafficSplit", err)
		}
	}
	return nil
}

// TranslateSplitGateway translates a TrafficSplit into Gateway API routes attached to its root
// Service (GAMMA), with the rules of TranslateSplit: the same backends, port mapping, weights
// (percentages), matches and findings; backends are always addressed as Services (no subsets).
// An *InvalidError means the split is not accepted and nothing should be applied; any other error
// is a bad option.
func TranslateSplitGateway(in SplitInput, opts GatewayOptions) (*GatewaySplitResult, error) {
	switch opts.TCPRouteVersion {
	case "", TCPRouteV1, TCPRouteV1Alpha2:
	default:
		return nil, fmt.Errorf("translate: TCPRoute version %q is not one smi2istio writes (%s, %s)", opts.TCPRouteVersion, TCPRouteV1, TCPRouteV1Alpha2)
	}
	ts := in.Split
	rootName, err := ParseServiceRef(ts.Spec.Service, ts.Namespace, in.Mesh)
	if err != nil {
		return nil, invalid("spec.service", "InvalidService", "%v", err)
	}
	res := &GatewaySplitResult{RootService: rootName, Host: fqdn(rootName, ts.Namespace, in.Mesh), TCPRouteVersion: opts.TCPRouteVersion}
	// The shared steps of TranslateSplit report into a SplitResult.
	shared := &SplitResult{Mode: HostMode, RootService: res.RootService, Host: res.Host}
	backends, err := collectBackends(ts, shared)
	if err != nil {
		return nil, err
	}
	if _, err := gatewaysOf(ts, &SplitResult{}); err != nil {
		return nil, err
	}
	if _, ok := ts.Annotations[GatewaysAnnotation]; ok {
		shared.Warnings = append(shared.Warnings, finding(fmt.Sprintf("metadata.annotations[%s]", GatewaysAnnotation), "GatewaysIgnored",
			"the Gateway API routes attach to the root Service (traffic between workloads of the mesh) only: the listed gateways are not configured"))
	}
	matches, err := splitMatches(ts, in.RouteGroups, in.RouteGroupErrors, shared)
	if err != nil {
		return nil, err
	}
	defer func() { res.Unresolved, res.Warnings = shared.Unresolved, shared.Warnings }()

	root := in.Services[rootName]
	if root == nil {
		shared.Unresolved = append(shared.Unresolved, finding("spec.service", "RootServiceNotFound",
			"root Service %s/%s not found", ts.Namespace, rootName))
		return res, nil
	}
	var resolved []*backend
	for _, b := range backends {
		if b.svc = in.Services[b.name]; b.svc == nil {
			shared.Unresolved = append(shared.Unresolved, finding(fmt.Sprintf("spec.backends[%d].service", b.index), "BackendNotFound",
				"backend Service %s/%s not found; it gets no traffic", ts.Namespace, b.name))
			continue
		}
		resolved = append(resolved, b)
	}
	gwMatches := gatewayMatches(matches)

	ports := append([]corev1.ServicePort(nil), root.Spec.Ports...)
	sort.SliceStable(ports, func(i, j int) bool { return ports[i].Port < ports[j].Port })
	multiPort := len(ports) > 1
	for _, p := range ports {
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			shared.Warnings = append(shared.Warnings, finding("spec.service", "UnsupportedProtocol",
				"port %d of the root Service is %s, which Istio does not route: not split", p.Port, p.Protocol))
			continue
		}
		refs := gatewayBackendRefs(root, p, resolved, shared)
		name := rootName
		parent := gatewayv1.ParentReference{Group: gwPtr(gatewayv1.Group("")), Kind: gwPtr(gatewayv1.Kind("Service")), Name: gatewayv1.ObjectName(rootName)}
		if multiPort {
			name = fmt.Sprintf("%s-%d", rootName, p.Port)
			parent.Port = gwPtr(p.Port)
		}
		rootRef := gatewayv1.BackendRef{BackendObjectReference: serviceRef(rootName, p.Port), Weight: gwPtr(int32(100))}
		if isTCP(p) {
			switch {
			case matches != nil:
				shared.Warnings = append(shared.Warnings, finding("spec.matches", "MatchesNotApplicable",
					"port %d is TCP and matches select HTTP requests: its traffic is not split", p.Port))
			case len(refs) == 0:
			case opts.TCPRouteVersion == "":
				shared.Warnings = append(shared.Warnings, finding("spec.service", "TCPRouteNotServed",
					"port %d of the root Service is TCP and the Gateway API TCPRoute CRD is not served: its traffic is not split", p.Port))
			default:
				res.TCPRoutes = append(res.TCPRoutes, &gatewayv1.TCPRoute{
					TypeMeta:   metav1.TypeMeta{APIVersion: GatewayGroupVersion, Kind: "TCPRoute"},
					ObjectMeta: outputMeta(name, ts),
					Spec: gatewayv1.TCPRouteSpec{
						CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{parent}},
						Rules:           []gatewayv1.TCPRouteRule{{Name: gwPtr(gatewayv1.SectionName(GatewaySplitRule)), BackendRefs: refs}},
					},
				})
			}
			continue
		}
		if len(refs) == 0 || (matches != nil && len(matches) == 0) {
			continue // nothing is split on this port: its traffic goes to the root Service
		}
		httpRefs := make([]gatewayv1.HTTPBackendRef, len(refs))
		for i, r := range refs {
			httpRefs[i] = gatewayv1.HTTPBackendRef{BackendRef: r}
		}
		route := &gatewayv1.HTTPRoute{
			TypeMeta:   metav1.TypeMeta{APIVersion: GatewayGroupVersion, Kind: "HTTPRoute"},
			ObjectMeta: outputMeta(name, ts),
			Spec:       gatewayv1.HTTPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{parent}}},
		}
		if matches == nil {
			route.Spec.Rules = []gatewayv1.HTTPRouteRule{{
				Name:        gwPtr(gatewayv1.SectionName(GatewaySplitRule)),
				Matches:     []gatewayv1.HTTPRouteMatch{defaultGatewayMatch()},
				BackendRefs: httpRefs,
			}}
		} else {
			// Matching requests are split; everything else goes to the root Service unchanged.
			for i := 0; i < len(gwMatches); i += maxGatewayMatchesPerRule {
				ruleName := GatewaySplitRule
				if i > 0 {
					ruleName = fmt.Sprintf("%s-%d", GatewaySplitRule, i/maxGatewayMatchesPerRule+1)
				}
				chunk := gwMatches[i:min(i+maxGatewayMatchesPerRule, len(gwMatches))]
				rule := gatewayv1.HTTPRouteRule{Name: gwPtr(gatewayv1.SectionName(ruleName)), BackendRefs: httpRefs}
				for _, m := range chunk {
					rule.Matches = append(rule.Matches, *m.DeepCopy())
				}
				route.Spec.Rules = append(route.Spec.Rules, rule)
			}
			route.Spec.Rules = append(route.Spec.Rules, gatewayv1.HTTPRouteRule{
				Name: gwPtr(gatewayv1.SectionName(GatewayRootRule)),
				Matches: []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{
					Type: gwPtr(gatewayv1.PathMatchRegularExpression), Value: gwPtr(gatewayCatchAll)}}},
				BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: rootRef}},
			})
		}
		res.HTTPRoutes = append(res.HTTPRoutes, route)
	}
	// Outputs the apiserver or Istio would reject are never written: the split is not accepted.
	if err := res.Validate(); err != nil {
		return nil, err
	}
	return res, nil
}

func gwPtr[T any](v T) *T { return &v }

func serviceRef(name string, port int32) gatewayv1.BackendObjectReference {
	return gatewayv1.BackendObjectReference{
		Group: gwPtr(gatewayv1.Group("")),
		Kind:  gwPtr(gatewayv1.Kind("Service")),
		Name:  gatewayv1.ObjectName(name),
		Port:  gwPtr(port),
	}
}

// gatewayBackendRefs is destinations (split.go) for backend Services: the backends serving the
// root port (same number, else same name), weighted in percentages; nil when none with a weight
// serves it. Every weight is written: the CRD would default a missing one to 1.
func gatewayBackendRefs(root *corev1.Service, rp corev1.ServicePort, backends []*backend, res *SplitResult) []gatewayv1.BackendRef {
	var ws []weighted
	var refs []gatewayv1.BackendRef
	for _, b := range backends {
		bp := matchPort(b.svc, rp)
		if bp == nil {
			res.Warnings = append(res.Warnings, finding(fmt.Sprintf("spec.backends[%d].service", b.index), "BackendPortMissing",
				"backend Service %s has no port %d (or named %q) of the root Service %s: it gets none of that port's traffic",
				b.name, rp.Port, rp.Name, root.Name))
			continue
		}
		ws = append(ws, weighted{weight: b.weight})
		refs = append(refs, gatewayv1.BackendRef{BackendObjectReference: serviceRef(b.name, bp.Port)})
	}
	if len(ws) == 0 {
		return nil
	}
	total := 0
	for _, w := range ws {
		total += w.weight.Sign()
	}
	if total == 0 {
		res.Warnings = append(res.Warnings, finding("spec.backends", "NoWeightedBackend",
			"no backend with a weight serves port %d: its traffic goes to the root Service", rp.Port))
		return nil
	}
	for i, p := range percentages(ws) {
		refs[i].Weight = gwPtr(p)
	}
	return refs
}

// gatewayMatches converts the split's Istio match requests (split.go: one per method, regexes
// RE2 full match as in SMI) to HTTPRoute matches, with the values the CRD would default written
// out: a match without a path is a PathPrefix "/".
func gatewayMatches(ms []*networkingapi.HTTPMatchRequest) []*gatewayv1.HTTPRouteMatch {
	out := make([]*gatewayv1.HTTPRouteMatch, 0, len(ms))
	for _, m := range ms {
		gm := defaultGatewayMatch()
		if re := m.GetUri().GetRegex(); m.GetUri() != nil {
			// Istio puts a longer path regex first among equals; one shorter than the catch-all
			// would follow it and never match: wrap it (same language).
			if len(re) < len(gatewayCatchAll) {
				re = "(?:" + re + ")"
			}
			gm.Path = &gatewayv1.HTTPPathMatch{Type: gwPtr(gatewayv1.PathMatchRegularExpression), Value: gwPtr(re)}
		}
		if a := m.GetAuthority(); a != nil {
			// Envoy matches a "host" header against the request's authority (HTTP/1 Host, HTTP/2 :authority).
			gm.Headers = append(gm.Headers, regexHeader("host", a.GetRegex()))
		}
		names := make([]string, 0, len(m.GetHeaders()))
		for n := range m.GetHeaders() {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			gm.Headers = append(gm.Headers, regexHeader(n, m.GetHeaders()[n].GetRegex()))
		}
		sort.SliceStable(gm.Headers, func(i, j int) bool { return gm.Headers[i].Name < gm.Headers[j].Name })
		if meth := m.GetMethod(); meth != nil {
			gm.Method = gwPtr(gatewayv1.HTTPMethod(meth.GetExact()))
		}
		out = append(out, &gm)
	}
	return out
}

func defaultGatewayMatch() gatewayv1.HTTPRouteMatch {
	return gatewayv1.HTTPRouteMatch{Path: &gatewayv1.HTTPPathMatch{Type: gwPtr(gatewayv1.PathMatchPathPrefix), Value: gwPtr("/")}}
}

func regexHeader(name, re string) gatewayv1.HTTPHeaderMatch {
	return gatewayv1.HTTPHeaderMatch{Type: gwPtr(gatewayv1.HeaderMatchRegularExpression), Name: gatewayv1.HTTPHeaderName(name), Value: re}
}

// ValidateGatewayOutput checks one generated Gateway API route (typed, or unstructured) against
// the constraints of the Gateway API CRDs on the fields smi2istio writes (limits, patterns, the
// CEL rules that apply) and Istio's limits on regexes (RE2, program size), without a schema: it is
// pure. It also refuses what smi2istio never writes: a parent other than a Service of the
// route's namespace, a backend other than a Service with a port, a value the CRD would default
// (the stored object would differ from the desired one). The error names the object.
func ValidateGatewayOutput(obj runtime.Object) error {
	if u, ok := obj.(*unstructured.Unstructured); ok {
		typed, err := typedGatewayOutput(u)
		if err != nil {
			return err
		}
		obj = typed
	}
	var (
		meta   metav1.Object
		tm     metav1.TypeMeta
		kind   string
		common gatewayv1.CommonRouteSpec
		errs   []error
		want   = []string{GatewayGroupVersion}
	)
	switch o := obj.(type) {
	case *gatewayv1.HTTPRoute:
		meta, tm, kind, common = o, o.TypeMeta, "HTTPRoute", o.Spec.CommonRouteSpec
		errs = validateHTTPRouteSpec(&o.Spec)
	case *gatewayv1.TCPRoute:
		meta, tm, kind, common = o, o.TypeMeta, "TCPRoute", o.Spec.CommonRouteSpec
		errs = validateTCPRouteRules(o.Spec.Rules, 1)
	case *gatewayv1alpha2.TCPRoute:
		meta, tm, kind, common, want = o, o.TypeMeta, "TCPRoute", o.Spec.CommonRouteSpec, []string{gatewayv1alpha2.GroupVersion.String()}
		rules := make([]gatewayv1.TCPRouteRule, len(o.Spec.Rules))
		for i, r := range o.Spec.Rules {
			rules[i] = gatewayv1.TCPRouteRule(r)
		}
		errs = validateTCPRouteRules(rules, maxGatewayRules)
	default:
		return fmt.Errorf("validate %T: not a Gateway API object smi2istio generates", obj)
	}
	if tm.Kind != kind || !contains(want, tm.APIVersion) {
		errs = append(errs, fmt.Errorf("apiVersion/kind %s %s: want kind %s in %v", tm.APIVersion, tm.Kind, kind, want))
	}
	errs = append(errs, validateMeta(meta)...)
	errs = append(errs, validateParentRefs(common.ParentRefs)...)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s %s/%s: %w", kind, meta.GetNamespace(), meta.GetName(), err)
	}
	return nil
}

func typedGatewayOutput(u *unstructured.Unstructured) (runtime.Object, error) {
	var obj runtime.Object
	switch {
	case u.GetKind() == "HTTPRoute" && u.GetAPIVersion() == GatewayGroupVersion:
		obj = &gatewayv1.HTTPRoute{}
	case u.GetKind() == "TCPRoute" && u.GetAPIVersion() == GatewayGroupVersion:
		obj = &gatewayv1.TCPRoute{}
	case u.GetKind() == "TCPRoute" && u.GetAPIVersion() == gatewayv1alpha2.GroupVersion.String():
		obj = &gatewayv1alpha2.TCPRoute{}
	default:
		return nil, fmt.Errorf("validate %s %s %s/%s: not a Gateway API kind smi2istio generates", u.GetAPIVersion(), u.GetKind(), u.GetNamespace(), u.GetName())
	}
	js, err := json.Marshal(u.Object)
	if err != nil {
		return nil, fmt.Errorf("validate %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	if err := json.Unmarshal(js, obj); err != nil {
		return nil, fmt.Errorf("validate %s %s/%s: decode: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	return obj, nil
}

// validateParentRefs: Services of the route's namespace (no namespace written), at most one
// reference per port, and a port on each when there are several (the CRD's CEL rule wants them
// told apart by sectionName otherwise).
func validateParentRefs(refs []gatewayv1.ParentReference) []error {
	var errs []error
	if len(refs) == 0 || len(refs) > 32 {
		errs = append(errs, fmt.Errorf("spec.parentRefs: %d parents, want 1 to 32", len(refs)))
	}
	seen := map[string]bool{}
	for i, p := range refs {
		path := fmt.Sprintf("spec.parentRefs[%d]", i)
		if p.Group == nil || *p.Group != "" || p.Kind == nil || *p.Kind != "Service" {
			errs = append(errs, fmt.Errorf("%s: want group \"\" and kind Service written out", path))
		}
		if p.Namespace != nil || p.SectionName != nil {
			errs = append(errs, fmt.Errorf("%s: namespace and sectionName are not written", path))
		}
		errs = append(errs, checkObjectName(path+".name", string(p.Name))...)
		port := ""
		if p.Port != nil {
			port = fmt.Sprint(*p.Port)
			if *p.Port < 1 || *p.Port > 65535 {
				errs = append(errs, fmt.Errorf("%s.port %d: not a port", path, *p.Port))
			}
		} else if len(refs) > 1 {
			errs = append(errs, fmt.Errorf("%s: several references to Services need a port each", path))
		}
		key := string(p.Name) + "/" + port
		if seen[key] {
			errs = append(errs, fmt.Errorf("%s: parent %s referenced twice", path, key))
		}
		seen[key] = true
	}
	return errs
}

func checkObjectName(path, name string) []error {
	if name == "" || len(name) > 253 {
		return []error{fmt.Errorf("%s %q: want 1 to 253 characters", path, name)}
	}
	return nil
}

func checkRuleName(path string, name *gatewayv1.SectionName, seen map[string]bool) []error {
	if name == nil {
		return nil
	}
	n := string(*name)
	var errs []error
	if len(n) > 253 || !gatewaySectionName.MatchString(n) {
		errs = append(errs, fmt.Errorf("%s %q: not a section name", path, n))
	}
	if seen[n] {
		errs = append(errs, fmt.Errorf("%s %q: rule names must be unique", path, n))
	}
	seen[n] = true
	return errs
}

func validateBackendRef(path string, b gatewayv1.BackendRef) []error {
	var errs []error
	if b.Group == nil || *b.Group != "" || b.Kind == nil || *b.Kind != "Service" {
		errs = append(errs, fmt.Errorf("%s: want group \"\" and kind Service written out", path))
	}
	if b.Namespace != nil {
		errs = append(errs, fmt.Errorf("%s: namespace is not written", path))
	}
	errs = append(errs, checkObjectName(path+".name", string(b.Name))...)
	if b.Port == nil || *b.Port < 1 || *b.Port > 65535 {
		errs = append(errs, fmt.Errorf("%s.port: a Service backend needs a port", path))
	}
	if b.Weight == nil || *b.Weight < 0 || *b.Weight > maxGatewayWeight {
		errs = append(errs, fmt.Errorf("%s.weight: want 0 to %d written out", path, maxGatewayWeight))
	}
	return errs
}

func validateBackendRefs(path string, refs []gatewayv1.BackendRef) []error {
	var errs []error
	if len(refs) == 0 || len(refs) > maxGatewayBackendRefs {
		errs = append(errs, fmt.Errorf("%s: %d backends, want 1 to %d", path, len(refs), maxGatewayBackendRefs))
	}
	for i, b := range refs {
		errs = append(errs, validateBackendRef(fmt.Sprintf("%s[%d]", path, i), b)...)
	}
	return errs
}

func validateTCPRouteRules(rules []gatewayv1.TCPRouteRule, maxRules int) []error {
	var errs []error
	if len(rules) == 0 || len(rules) > maxRules {
		errs = append(errs, fmt.Errorf("spec.rules: %d rules, want 1 to %d", len(rules), maxRules))
	}
	seen := map[string]bool{}
	for i, r := range rules {
		path := fmt.Sprintf("spec.rules[%d]", i)
		errs = append(errs, checkRuleName(path+".name", r.Name, seen)...)
		errs = append(errs, validateBackendRefs(path+".backendRefs", r.BackendRefs)...)
	}
	return errs
}

func validateHTTPRouteSpec(spec *gatewayv1.HTTPRouteSpec) []error {
	var errs []error
	if len(spec.Hostnames) > 0 {
		errs = append(errs, errors.New("spec.hostnames: not written for routes attached to a Service"))
	}
	if len(spec.Rules) == 0 || len(spec.Rules) > maxGatewayRules {
		errs = append(errs, fmt.Errorf("spec.rules: %d rules, want 1 to %d", len(spec.Rules), maxGatewayRules))
	}
	total := 0
	seen := map[string]bool{}
	for i, r := range spec.Rules {
		path := fmt.Sprintf("spec.rules[%d]", i)
		errs = append(errs, checkRuleName(path+".name", r.Name, seen)...)
		if len(r.Filters) > 0 || r.Timeouts != nil || r.Retry != nil || r.SessionPersistence != nil {
			errs = append(errs, fmt.Errorf("%s: only matches and backendRefs are written", path))
		}
		if len(r.Matches) == 0 || len(r.Matches) > maxGatewayMatchesPerRule {
			errs = append(errs, fmt.Errorf("%s.matches: %d matches, want 1 to %d written out", path, len(r.Matches), maxGatewayMatchesPerRule))
		}
		total += len(r.Matches)
		for j, m := range r.Matches {
			errs = append(errs, validateHTTPRouteMatch(fmt.Sprintf("%s.matches[%d]", path, j), m)...)
		}
		refs := make([]gatewayv1.BackendRef, len(r.BackendRefs))
		for j, b := range r.BackendRefs {
			if len(b.Filters) > 0 {
				errs = append(errs, fmt.Errorf("%s.backendRefs[%d].filters: not written", path, j))
			}
			refs[j] = b.BackendRef
		}
		errs = append(errs, validateBackendRefs(path+".backendRefs", refs)...)
	}
	if total > maxGatewayMatchesTotal {
		errs = append(errs, fmt.Errorf("spec.rules: %d matches in all, at most %d allowed", total, maxGatewayMatchesTotal))
	}
	return errs
}

func validateHTTPRouteMatch(path string, m gatewayv1.HTTPRouteMatch) []error {
	var errs []error
	switch {
	case m.Path == nil || m.Path.Type == nil || m.Path.Value == nil:
		errs = append(errs, fmt.Errorf("%s.path: type and value written out", path))
	case *m.Path.Type == gatewayv1.PathMatchPathPrefix:
		if *m.Path.Value != "/" {
			errs = append(errs, fmt.Errorf("%s.path: only the prefix / is written", path))
		}
	case *m.Path.Type == gatewayv1.PathMatchRegularExpression:
		if len(*m.Path.Value) > maxGatewayPathLen {
			errs = append(errs, fmt.Errorf("%s.path.value: longer than %d characters", path, maxGatewayPathLen))
		}
		errs = append(errs, checkRegex(path+".path.value", *m.Path.Value)...)
	default:
		errs = append(errs, fmt.Errorf("%s.path.type %s: not written", path, *m.Path.Type))
	}
	if len(m.Headers) > maxGatewayHeaders {
		errs = append(errs, fmt.Errorf("%s.headers: %d headers, at most %d", path, len(m.Headers), maxGatewayHeaders))
	}
	names := map[string]bool{}
	for k, h := range m.Headers {
		hp := fmt.Sprintf("%s.headers[%d]", path, k)
		n := string(h.Name)
		if len(n) > 256 || !gatewayHeaderName.MatchString(n) {
			errs = append(errs, fmt.Errorf("%s.name %q: not a header name the Gateway API accepts", hp, n))
		}
		if names[strings.ToLower(n)] {
			errs = append(errs, fmt.Errorf("%s.name %q: matched twice", hp, n))
		}
		names[strings.ToLower(n)] = true
		if h.Type == nil || *h.Type != gatewayv1.HeaderMatchRegularExpression {
			errs = append(errs, fmt.Errorf("%s.type: RegularExpression written out", hp))
		}
		if len(h.Value) > maxGatewayHeaderValueLen {
			errs = append(errs, fmt.Errorf("%s.value: longer than %d characters", hp, maxGatewayHeaderValueLen))
		}
		errs = append(errs, checkRegex(hp+".value", h.Value)...)
	}
	if len(m.QueryParams) > 0 {
		errs = append(errs, fmt.Errorf("%s.queryParams: not written", path))
	}
	if m.Method != nil && !gatewayMethods[string(*m.Method)] {
		errs = append(errs, fmt.Errorf("%s.method %q: not an HTTP method the Gateway API accepts", path, *m.Method))
	}
	return errs
}
