package translate_test

// An evaluator of what Istio and Envoy enforce for generated AuthorizationPolicies and EnvoyFilters,
// used by the access property test (access_property_test.go).
//
// Istio side: istioPolicy ports istiod's authzmodel.New + Model.Generate
// (istio.io/istio pilot/pkg/security/authz/model, driven by builder.build) for the fields our
// outputs can hold, with Istio's own leaf matchers (pilot/pkg/security/authz/matcher); any other
// field is refused. On a TCP filter chain a rule holding any HTTP-only field (hosts, methods,
// paths and their not* forms, when request.headers[...], request.auth.*) fails to generate and is
// skipped, exactly as builder.build skips it; ports, principals and namespaces stay.
//
// Envoy side: compileRBAC evaluates envoy.config.rbac.v3.RBAC as Envoy does: ALLOW = some policy
// has a matching permission and a matching principal; header matchers follow
// HeaderUtility::matchHeaders (a missing header matches only present_match:false, or
// present_match:true under invert_match; exact_match "" matches any value); ignore_case folds ASCII
// only and is refused on safe_regex (Envoy rejects it); url_path and uri_template see the path
// without query; the peer principal is the URI SAN of an mTLS certificate; a network (TCP) filter
// sees no headers and no path. Anything else is refused, never guessed.

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"regexp/syntax"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacpb "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	uritemplatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/path/match/uri_template/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	networkingapi "istio.io/api/networking/v1alpha3"
	securityapi "istio.io/api/security/v1beta1"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	securityv1beta1 "istio.io/client-go/pkg/apis/security/v1beta1"
	istiomatcher "istio.io/istio/pilot/pkg/security/authz/matcher"
	istiosecurity "istio.io/istio/pkg/config/security"
)

// conn is what an inbound RBAC filter sees of one HTTP request or one TCP connection.
type conn struct {
	peer string // URI SAN of the peer's certificate, "spiffe://<td>/ns/<ns>/sa/<sa>"; "" = no mTLS peer
	port uint32 // destination port
	// headers as Envoy keeps them: lower-case names, ":method", ":path" (with query) and
	// ":authority" (HTTP/1 Host is stored as :authority; there is no "host"). nil on a TCP chain.
	headers map[string]string
}

func (c *conn) path() (string, bool) {
	p, ok := c.headers[":path"]
	if !ok {
		return "", false
	}
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	return p, true
}

// errRefused marks what the evaluator cannot model: the property test fails on it rather than guess.
var errRefused = errors.New("the evaluator cannot model")

// errRejected marks output Istio or Envoy would reject.
var errRejected = errors.New("rejected by Istio or Envoy")

func refused(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errRefused}, args...)...)
}

func rejected(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errRejected}, args...)...)
}

// ---- regexes (RE2 full match, as Envoy's safe_regex and SMI mean) ----

var fullRegexps sync.Map // expr -> *regexp.Regexp

// fullRegexp compiles expr anchored for full match; it parses first so that constructs such as \Q
// survive the wrapping. Cached: the property test compiles the same few expressions many times.
func fullRegexp(expr string) (*regexp.Regexp, error) {
	if re, ok := fullRegexps.Load(expr); ok {
		return re.(*regexp.Regexp), nil
	}
	parsed, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return nil, err
	}
	re, err := regexp.Compile(`^(?:` + parsed.String() + `)$`)
	if err != nil {
		return nil, err
	}
	fullRegexps.Store(expr, re)
	return re, nil
}

// ---- Envoy RBAC ----

type pred func(c *conn) bool

type compiledPolicy struct {
	name       string
	permission pred
	principal  pred
}

// rbacFilter is one compiled Envoy RBAC filter (HTTP or network).
type rbacFilter struct {
	name     string
	action   rbacpb.RBAC_Action
	enforce  bool // false: no rules, the filter allows everything
	policies []compiledPolicy
}

// compileRBAC compiles an RBAC config; nil rules mean the filter enforces nothing (Envoy's documented
// behaviour), so they are kept as "allow all" rather than refused.
func compileRBAC(name string, rules *rbacpb.RBAC) (*rbacFilter, error) {
	f := &rbacFilter{name: name}
	if rules == nil {
		return f, nil
	}
	if rules.AuditLoggingOptions != nil {
		return nil, refused("%s: audit_logging_options", name)
	}
	f.enforce, f.action = true, rules.Action
	names := make([]string, 0, len(rules.Policies))
	for n := range rules.Policies {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := rules.Policies[n]
		if p.Condition != nil || p.CheckedCondition != nil {
			return nil, refused("%s policy %s: conditions", name, n)
		}
		var perms, princs []pred
		for _, x := range p.Permissions {
			c, err := compilePermission(x)
			if err != nil {
				return nil, fmt.Errorf("%s policy %s: %w", name, n, err)
			}
			perms = append(perms, c)
		}
		for _, x := range p.Principals {
			c, err := compilePrincipal(x)
			if err != nil {
				return nil, fmt.Errorf("%s policy %s: %w", name, n, err)
			}
			princs = append(princs, c)
		}
		f.policies = append(f.policies, compiledPolicy{name: n, permission: anyPred(perms), principal: anyPred(princs)})
	}
	return f, nil
}

// allows applies the filter; the string names the policy that decided, if any.
func (f *rbacFilter) allows(c *conn) (bool, string) {
	if !f.enforce {
		return true, f.name + " (no rules)"
	}
	for _, p := range f.policies {
		if p.permission(c) && p.principal(c) {
			switch f.action {
			case rbacpb.RBAC_ALLOW:
				return true, f.name + "/" + p.name
			case rbacpb.RBAC_DENY:
				return false, f.name + "/" + p.name
			}
		}
	}
	return f.action != rbacpb.RBAC_ALLOW, f.name
}

func anyPred(ps []pred) pred {
	return func(c *conn) bool {
		for _, p := range ps {
			if p(c) {
				return true
			}
		}
		return false
	}
}

func allPred(ps []pred) pred {
	return func(c *conn) bool {
		for _, p := range ps {
			if !p(c) {
				return false
			}
		}
		return true
	}
}

func compilePermission(p *rbacpb.Permission) (pred, error) {
	switch r := p.GetRule().(type) {
	case *rbacpb.Permission_Any:
		v := r.Any
		return func(*conn) bool { return v }, nil
	case *rbacpb.Permission_AndRules, *rbacpb.Permission_OrRules:
		var set []*rbacpb.Permission
		if a, ok := r.(*rbacpb.Permission_AndRules); ok {
			set = a.AndRules.GetRules()
		} else {
			set = r.(*rbacpb.Permission_OrRules).OrRules.GetRules()
		}
		var ps []pred
		for _, x := range set {
			c, err := compilePermission(x)
			if err != nil {
				return nil, err
			}
			ps = append(ps, c)
		}
		if _, ok := r.(*rbacpb.Permission_AndRules); ok {
			return allPred(ps), nil
		}
		return anyPred(ps), nil
	case *rbacpb.Permission_NotRule:
		c, err := compilePermission(r.NotRule)
		if err != nil {
			return nil, err
		}
		return func(x *conn) bool { return !c(x) }, nil
	case *rbacpb.Permission_Header:
		return compileHeaderMatcher(r.Header)
	case *rbacpb.Permission_UrlPath:
		return compilePathMatcher(r.UrlPath)
	case *rbacpb.Permission_DestinationPort:
		port := r.DestinationPort
		return func(c *conn) bool { return c.port == port }, nil
	case *rbacpb.Permission_DestinationPortRange:
		lo, hi := r.DestinationPortRange.GetStart(), r.DestinationPortRange.GetEnd()
		return func(c *conn) bool { return int64(c.port) >= int64(lo) && int64(c.port) < int64(hi) }, nil
	case *rbacpb.Permission_UriTemplate:
		return compileURITemplate(r.UriTemplate)
	}
	return nil, refused("permission %T", p.GetRule())
}

func compilePrincipal(p *rbacpb.Principal) (pred, error) {
	switch r := p.GetIdentifier().(type) {
	case *rbacpb.Principal_Any:
		v := r.Any
		return func(*conn) bool { return v }, nil
	case *rbacpb.Principal_AndIds, *rbacpb.Principal_OrIds:
		var set []*rbacpb.Principal
		if a, ok := r.(*rbacpb.Principal_AndIds); ok {
			set = a.AndIds.GetIds()
		} else {
			set = r.(*rbacpb.Principal_OrIds).OrIds.GetIds()
		}
		var ps []pred
		for _, x := range set {
			c, err := compilePrincipal(x)
			if err != nil {
				return nil, err
			}
			ps = append(ps, c)
		}
		if _, ok := r.(*rbacpb.Principal_AndIds); ok {
			return allPred(ps), nil
		}
		return anyPred(ps), nil
	case *rbacpb.Principal_NotId:
		c, err := compilePrincipal(r.NotId)
		if err != nil {
			return nil, err
		}
		return func(x *conn) bool { return !c(x) }, nil
	case *rbacpb.Principal_Authenticated_:
		if r.Authenticated.GetPrincipalName() == nil {
			return func(c *conn) bool { return c.peer != "" }, nil
		}
		m, err := compileStringMatcher(r.Authenticated.GetPrincipalName())
		if err != nil {
			return nil, err
		}
		return func(c *conn) bool { return c.peer != "" && m(c.peer) }, nil
	case *rbacpb.Principal_Header:
		return compileHeaderMatcher(r.Header)
	case *rbacpb.Principal_UrlPath:
		return compilePathMatcher(r.UrlPath)
	}
	return nil, refused("principal %T", p.GetIdentifier())
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// compileStringMatcher follows Envoy's StringMatcherImpl.
func compileStringMatcher(m *matcherv3.StringMatcher) (func(string) bool, error) {
	if m == nil {
		return nil, rejected("missing string matcher")
	}
	fold := func(s string) string { return s }
	if m.IgnoreCase {
		fold = asciiLower
	}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		want := fold(p.Exact)
		return func(s string) bool { return fold(s) == want }, nil
	case *matcherv3.StringMatcher_Prefix:
		want := fold(p.Prefix)
		return func(s string) bool { return strings.HasPrefix(fold(s), want) }, nil
	case *matcherv3.StringMatcher_Suffix:
		want := fold(p.Suffix)
		return func(s string) bool { return strings.HasSuffix(fold(s), want) }, nil
	case *matcherv3.StringMatcher_Contains:
		want := fold(p.Contains)
		return func(s string) bool { return strings.Contains(fold(s), want) }, nil
	case *matcherv3.StringMatcher_SafeRegex:
		if m.IgnoreCase {
			return nil, rejected("ignore_case on safe_regex %q (Envoy rejects it)", p.SafeRegex.GetRegex())
		}
		if p.SafeRegex.GetRegex() == "" {
			return nil, rejected("empty safe_regex")
		}
		re, err := fullRegexp(p.SafeRegex.GetRegex())
		if err != nil {
			return nil, rejected("safe_regex %q: %v", p.SafeRegex.GetRegex(), err)
		}
		return re.MatchString, nil
	}
	return nil, refused("string matcher %T", m.GetMatchPattern())
}

// compileHeaderMatcher follows Envoy's HeaderUtility::matchHeaders.
func compileHeaderMatcher(h *routev3.HeaderMatcher) (pred, error) {
	name := asciiLower(h.GetName())
	invert, missingAsEmpty := h.GetInvertMatch(), h.GetTreatMissingHeaderAsEmpty()
	present, isPresent := false, false
	var match func(string) bool
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_PresentMatch:
		isPresent, present = true, s.PresentMatch
		match = func(string) bool { return present }
	case nil:
		isPresent, present = true, true
		match = func(string) bool { return true }
	case *routev3.HeaderMatcher_ExactMatch:
		want := s.ExactMatch
		match = func(v string) bool { return want == "" || v == want }
	case *routev3.HeaderMatcher_PrefixMatch:
		want := s.PrefixMatch
		match = func(v string) bool { return strings.HasPrefix(v, want) }
	case *routev3.HeaderMatcher_SuffixMatch:
		want := s.SuffixMatch
		match = func(v string) bool { return strings.HasSuffix(v, want) }
	case *routev3.HeaderMatcher_ContainsMatch:
		want := s.ContainsMatch
		match = func(v string) bool { return strings.Contains(v, want) }
	case *routev3.HeaderMatcher_SafeRegexMatch:
		m, err := compileStringMatcher(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: s.SafeRegexMatch}})
		if err != nil {
			return nil, err
		}
		match = m
	case *routev3.HeaderMatcher_StringMatch:
		m, err := compileStringMatcher(s.StringMatch)
		if err != nil {
			return nil, err
		}
		match = m
	default:
		return nil, refused("header matcher %T", h.GetHeaderMatchSpecifier())
	}
	return func(c *conn) bool {
		v, ok := c.headers[name]
		if !ok && !missingAsEmpty {
			if invert {
				return isPresent && present
			}
			return isPresent && !present
		}
		return match(v) != invert
	}, nil
}

func compilePathMatcher(p *matcherv3.PathMatcher) (pred, error) {
	m, err := compileStringMatcher(p.GetPath())
	if err != nil {
		return nil, err
	}
	return func(c *conn) bool {
		path, ok := c.path()
		return ok && m(path)
	}, nil
}

// Envoy's uri_template: "*" is one segment of RFC 3986 path characters, "**" any number of them.
const (
	uriSegmentChars = `a-zA-Z0-9\-._~%!$&'()+,;:@=`
	uriMatchOne     = `[` + uriSegmentChars + `]+`
	uriMatchAny     = `[` + uriSegmentChars + `/]*`
)

func compileURITemplate(tc *corev3.TypedExtensionConfig) (pred, error) {
	cfg := &uritemplatev3.UriTemplateMatchConfig{}
	if err := tc.GetTypedConfig().UnmarshalTo(cfg); err != nil {
		return nil, refused("uri_template config %s: %v", tc.GetTypedConfig().GetTypeUrl(), err)
	}
	t := cfg.GetPathTemplate()
	if strings.ContainsAny(t, "{}") {
		return nil, refused("uri_template variables in %q", t)
	}
	var b strings.Builder
	for i := 0; i < len(t); i++ {
		switch {
		case strings.HasPrefix(t[i:], "**"):
			b.WriteString(uriMatchAny)
			i++
		case t[i] == '*':
			b.WriteString(uriMatchOne)
		default:
			b.WriteString(regexp.QuoteMeta(t[i : i+1]))
		}
	}
	re, err := fullRegexp(b.String())
	if err != nil {
		return nil, rejected("uri_template %q: %v", t, err)
	}
	return func(c *conn) bool {
		path, ok := c.path()
		return ok && re.MatchString(path)
	}, nil
}

// ---- istiod: AuthorizationPolicy rule -> Envoy RBAC policy ----

// errHTTPOnly is Generate's error for an HTTP-only field on a TCP chain: the rule is skipped there.
var errHTTPOnly = errors.New("HTTP-only field on a TCP filter chain")

func principalAuthenticated(m *matcherv3.StringMatcher) *rbacpb.Principal {
	return &rbacpb.Principal{Identifier: &rbacpb.Principal_Authenticated_{Authenticated: &rbacpb.Principal_Authenticated{PrincipalName: m}}}
}

func permissionHeader(h *routev3.HeaderMatcher) *rbacpb.Permission {
	return &rbacpb.Permission{Rule: &rbacpb.Permission_Header{Header: h}}
}

// attribute is one AuthorizationPolicy field: values ORed, notValues NOT(ORed), as model.rule.
type attribute[T any] struct {
	key               string
	values, notValues []string
	httpOnly          bool
	gen               func(v string) (T, error)
}

func (a attribute[T]) generate(forTCP bool, or func([]T) T, not func(T) T) ([]T, error) {
	if len(a.values)+len(a.notValues) == 0 {
		return nil, nil
	}
	if forTCP && a.httpOnly {
		return nil, fmt.Errorf("%w: %s", errHTTPOnly, a.key)
	}
	var out []T
	for i, vs := range [][]string{a.values, a.notValues} {
		var alts []T
		for _, v := range vs {
			x, err := a.gen(v)
			if err != nil {
				return nil, err
			}
			alts = append(alts, x)
		}
		if len(alts) == 0 {
			continue
		}
		if i == 0 {
			out = append(out, or(alts))
		} else {
			out = append(out, not(or(alts)))
		}
	}
	return out, nil
}

func permOr(ps []*rbacpb.Permission) *rbacpb.Permission {
	return &rbacpb.Permission{Rule: &rbacpb.Permission_OrRules{OrRules: &rbacpb.Permission_Set{Rules: ps}}}
}

func permNot(p *rbacpb.Permission) *rbacpb.Permission {
	return &rbacpb.Permission{Rule: &rbacpb.Permission_NotRule{NotRule: p}}
}

func princOr(ps []*rbacpb.Principal) *rbacpb.Principal {
	return &rbacpb.Principal{Identifier: &rbacpb.Principal_OrIds{OrIds: &rbacpb.Principal_Set{Ids: ps}}}
}

func princNot(p *rbacpb.Principal) *rbacpb.Principal {
	return &rbacpb.Principal{Identifier: &rbacpb.Principal_NotId{NotId: p}}
}

func portPermission(v string) (*rbacpb.Permission, error) {
	p, err := strconv.ParseUint(v, 10, 32)
	if err != nil || p > 65535 {
		return nil, fmt.Errorf("invalid port %s", v)
	}
	return &rbacpb.Permission{Rule: &rbacpb.Permission_DestinationPort{DestinationPort: uint32(p)}}, nil
}

func pathPermission(v string) (*rbacpb.Permission, error) {
	if istiosecurity.ContainsPathTemplate(v) {
		a, err := anypb.New(istiomatcher.PathTemplateMatcher(v))
		if err != nil {
			return nil, err
		}
		return &rbacpb.Permission{Rule: &rbacpb.Permission_UriTemplate{UriTemplate: &corev3.TypedExtensionConfig{Name: "uri-template", TypedConfig: a}}}, nil
	}
	return &rbacpb.Permission{Rule: &rbacpb.Permission_UrlPath{UrlPath: istiomatcher.PathMatcher(v)}}, nil
}

func namespacePrincipal(v string) (*rbacpb.Principal, error) {
	parts := strings.Split(v, "*")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return principalAuthenticated(istiomatcher.StringMatcherRegex(fmt.Sprintf(".*/ns/%s/.*", strings.Join(parts, ".*")))), nil
}

// istioPolicy builds the Envoy RBAC policy istiod generates for one ALLOW rule on an HTTP (forTCP
// false) or TCP filter chain. errHTTPOnly means the rule is skipped on that chain; an error
// wrapping errRefused means a field this port does not model.
func istioPolicy(rule *securityapi.Rule, forTCP bool) (*rbacpb.Policy, error) {
	var basePerm []attribute[*rbacpb.Permission]
	var basePrinc []attribute[*rbacpb.Principal]
	for _, w := range rule.When {
		switch {
		case w.Key == "destination.port":
			basePerm = append(basePerm, attribute[*rbacpb.Permission]{key: w.Key, values: w.Values, notValues: w.NotValues, gen: portPermission})
		case strings.HasPrefix(w.Key, "request.headers"):
			name := strings.TrimPrefix(w.Key, "request.headers")
			if !strings.HasPrefix(name, "[") || !strings.HasSuffix(name, "]") {
				return nil, fmt.Errorf("invalid key %s", w.Key)
			}
			name = strings.TrimSuffix(strings.TrimPrefix(name, "["), "]")
			basePrinc = append(basePrinc, attribute[*rbacpb.Principal]{key: w.Key, values: w.Values, notValues: w.NotValues, httpOnly: true,
				gen: func(v string) (*rbacpb.Principal, error) {
					return &rbacpb.Principal{Identifier: &rbacpb.Principal_Header{Header: istiomatcher.HeaderMatcher(name, v)}}, nil
				}})
		case w.Key == "source.principal":
			basePrinc = append(basePrinc, attribute[*rbacpb.Principal]{key: w.Key, values: w.Values, notValues: w.NotValues,
				gen: func(v string) (*rbacpb.Principal, error) {
					return principalAuthenticated(istiomatcher.StringMatcherWithPrefix(v, "spiffe://")), nil
				}})
		case w.Key == "source.namespace":
			basePrinc = append(basePrinc, attribute[*rbacpb.Principal]{key: w.Key, values: w.Values, notValues: w.NotValues, gen: namespacePrincipal})
		default:
			return nil, refused("when key %s", w.Key)
		}
	}

	var principalSets [][]attribute[*rbacpb.Principal]
	for _, from := range rule.From {
		s := from.GetSource()
		if s == nil {
			return nil, refused("from without source")
		}
		if !onlyPrincipalsAndNamespaces(s) {
			return nil, refused("source fields other than principals and namespaces: %v", s)
		}
		set := append([]attribute[*rbacpb.Principal]{
			{key: "source.principal", values: s.Principals, notValues: s.NotPrincipals, gen: func(v string) (*rbacpb.Principal, error) {
				return principalAuthenticated(istiomatcher.StringMatcherWithPrefix(v, "spiffe://")), nil
			}},
			{key: "source.namespace", values: s.Namespaces, notValues: s.NotNamespaces, gen: namespacePrincipal},
		}, basePrinc...)
		principalSets = append(principalSets, set)
	}
	if len(rule.From) == 0 {
		principalSets = append(principalSets, basePrinc)
	}

	var permissionSets [][]attribute[*rbacpb.Permission]
	for _, to := range rule.To {
		o := to.GetOperation()
		set := []attribute[*rbacpb.Permission]{}
		if o != nil {
			set = append(set,
				attribute[*rbacpb.Permission]{key: "hosts", values: o.Hosts, notValues: o.NotHosts, httpOnly: true,
					gen: func(v string) (*rbacpb.Permission, error) {
						return permissionHeader(istiomatcher.HostMatcher(":authority", v)), nil
					}},
				attribute[*rbacpb.Permission]{key: "methods", values: o.Methods, notValues: o.NotMethods, httpOnly: true,
					gen: func(v string) (*rbacpb.Permission, error) {
						return permissionHeader(istiomatcher.HeaderMatcher(":method", v)), nil
					}},
				attribute[*rbacpb.Permission]{key: "paths", values: o.Paths, notValues: o.NotPaths, httpOnly: true, gen: pathPermission},
				attribute[*rbacpb.Permission]{key: "ports", values: o.Ports, notValues: o.NotPorts, gen: portPermission},
			)
		}
		permissionSets = append(permissionSets, append(set, basePerm...))
	}
	if len(rule.To) == 0 {
		permissionSets = append(permissionSets, basePerm)
	}

	pol := &rbacpb.Policy{}
	for _, set := range permissionSets {
		var and []*rbacpb.Permission
		for _, a := range set {
			ps, err := a.generate(forTCP, permOr, permNot)
			if err != nil {
				return nil, err
			}
			and = append(and, ps...)
		}
		if len(and) == 0 {
			and = append(and, &rbacpb.Permission{Rule: &rbacpb.Permission_Any{Any: true}})
		}
		pol.Permissions = append(pol.Permissions, &rbacpb.Permission{Rule: &rbacpb.Permission_AndRules{AndRules: &rbacpb.Permission_Set{Rules: and}}})
	}
	for _, set := range principalSets {
		var and []*rbacpb.Principal
		for _, a := range set {
			ps, err := a.generate(forTCP, princOr, princNot)
			if err != nil {
				return nil, err
			}
			and = append(and, ps...)
		}
		if len(and) == 0 {
			and = append(and, &rbacpb.Principal{Identifier: &rbacpb.Principal_Any{Any: true}})
		}
		pol.Principals = append(pol.Principals, &rbacpb.Principal{Identifier: &rbacpb.Principal_AndIds{AndIds: &rbacpb.Principal_Set{Ids: and}}})
	}
	return pol, nil
}

func onlyPrincipalsAndNamespaces(s *securityapi.Source) bool {
	return len(s.RequestPrincipals)+len(s.NotRequestPrincipals)+len(s.IpBlocks)+len(s.NotIpBlocks)+
		len(s.RemoteIpBlocks)+len(s.NotRemoteIpBlocks)+len(s.ServiceAccounts)+len(s.NotServiceAccounts)+
		len(s.TrustDomains)+len(s.NotTrustDomains) == 0
}

// selects reports whether a workload selector's labels select a workload (nil selects all).
func selects(sel map[string]string, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// istioRBAC builds the HTTP and network RBAC filters istiod gives a workload of namespace ns with
// labels from the ALLOW policies; the namespace's allow-nothing baseline is assumed, so with no rule
// nothing is allowed (an ALLOW filter with no matching policy denies).
func istioRBAC(aps []*securityv1beta1.AuthorizationPolicy, ns string, labels map[string]string) (httpF, tcpF *rbacFilter, err error) {
	httpRules := &rbacpb.RBAC{Action: rbacpb.RBAC_ALLOW, Policies: map[string]*rbacpb.Policy{}}
	tcpRules := &rbacpb.RBAC{Action: rbacpb.RBAC_ALLOW, Policies: map[string]*rbacpb.Policy{}}
	for _, ap := range aps {
		if ap.Namespace != ns {
			return nil, nil, refused("AuthorizationPolicy %s in namespace %q, not the workload's %q", ap.Name, ap.Namespace, ns)
		}
		s := &ap.Spec
		if s.TargetRef != nil || len(s.TargetRefs) > 0 || s.GetProvider() != nil {
			return nil, nil, refused("AuthorizationPolicy %s: targetRef(s) or provider", ap.Name)
		}
		if s.Action != securityapi.AuthorizationPolicy_ALLOW {
			return nil, nil, refused("AuthorizationPolicy %s: action %s", ap.Name, s.Action)
		}
		if s.Selector != nil && !selects(s.Selector.MatchLabels, labels) {
			continue
		}
		for i, rule := range s.Rules {
			name := fmt.Sprintf("ns[%s]-policy[%s]-rule[%d]", ap.Namespace, ap.Name, i)
			if rule == nil {
				continue
			}
			for _, tcp := range []bool{false, true} {
				pol, err := istioPolicy(rule, tcp)
				if errors.Is(err, errRefused) {
					return nil, nil, fmt.Errorf("AuthorizationPolicy %s rule %d: %w", ap.Name, i, err)
				}
				if err != nil {
					continue // skipped, as builder.build skips a rule Generate fails on
				}
				if tcp {
					tcpRules.Policies[name] = pol
				} else {
					httpRules.Policies[name] = pol
				}
			}
		}
	}
	if httpF, err = compileRBAC("istio-http", httpRules); err != nil {
		return nil, nil, err
	}
	if tcpF, err = compileRBAC("istio-tcp", tcpRules); err != nil {
		return nil, nil, err
	}
	return httpF, tcpF, nil
}

// ---- EnvoyFilter ----

// efFilter is one RBAC HTTP filter an EnvoyFilter inserts on a workload's inbound HTTP chains.
type efFilter struct {
	port   uint32 // 0: every inbound HTTP chain
	filter *rbacFilter
	// policies by name, each alone (to attribute a policy to the TrafficTarget it is named after).
	alone map[string]*rbacFilter
}

const (
	httpConnectionManager = "envoy.filters.network.http_connection_manager"
	routerFilter          = "envoy.filters.http.router"
	rbacHTTPType          = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
)

var protoUnmarshalOptions = protojson.UnmarshalOptions{}

// envoyFilterRBAC decodes the RBAC filters the EnvoyFilters insert on the inbound HTTP chains of a
// workload of namespace ns with labels. A patch whose filter would never run (after the router)
// inserts nothing; an RBAC config Envoy rejects is errRejected; anything else unusual is refused.
func envoyFilterRBAC(efs []*networkingv1alpha3.EnvoyFilter, ns string, labels map[string]string) ([]efFilter, error) {
	var out []efFilter
	for _, ef := range efs {
		if ef.Namespace != ns {
			return nil, refused("EnvoyFilter %s in namespace %q, not the workload's %q", ef.Name, ef.Namespace, ns)
		}
		if len(ef.Spec.TargetRefs) > 0 {
			return nil, refused("EnvoyFilter %s: targetRefs", ef.Name)
		}
		if ef.Spec.WorkloadSelector != nil && !selects(ef.Spec.WorkloadSelector.Labels, labels) {
			continue
		}
		for i, cp := range ef.Spec.ConfigPatches {
			f, ok, err := envoyFilterPatch(cp)
			if err != nil {
				return nil, fmt.Errorf("EnvoyFilter %s configPatches[%d]: %w", ef.Name, i, err)
			}
			if ok {
				out = append(out, f)
			}
		}
	}
	return out, nil
}

func envoyFilterPatch(cp *networkingapi.EnvoyFilter_EnvoyConfigObjectPatch) (efFilter, bool, error) {
	var f efFilter
	if cp.ApplyTo != networkingapi.EnvoyFilter_HTTP_FILTER {
		return f, false, refused("applyTo %s", cp.ApplyTo)
	}
	m := cp.GetMatch()
	switch m.GetContext() {
	case networkingapi.EnvoyFilter_SIDECAR_INBOUND, networkingapi.EnvoyFilter_ANY:
	default:
		return f, false, nil // not on inbound chains
	}
	if m.GetProxy() != nil {
		return f, false, refused("proxy match")
	}
	l := m.GetListener()
	if l == nil || l.Name != "" || l.ListenerFilter != "" {
		return f, false, refused("listener match %v", l)
	}
	f.port = l.PortNumber
	fc := l.GetFilterChain()
	if fc == nil || fc.Name != "" || fc.Sni != "" || fc.TransportProtocol != "" || fc.ApplicationProtocols != "" || fc.DestinationPort != 0 {
		return f, false, refused("filter chain match %v", fc)
	}
	if fc.GetFilter().GetName() != httpConnectionManager {
		return f, false, refused("filter match %v", fc.GetFilter())
	}
	sub := fc.GetFilter().GetSubFilter().GetName()
	switch op := cp.GetPatch().GetOperation(); {
	case op == networkingapi.EnvoyFilter_Patch_INSERT_FIRST && sub == "":
	case op == networkingapi.EnvoyFilter_Patch_INSERT_BEFORE && sub == routerFilter:
	case (op == networkingapi.EnvoyFilter_Patch_INSERT_AFTER && sub == routerFilter) || (op == networkingapi.EnvoyFilter_Patch_ADD && sub == ""):
		return f, false, nil // after the router: never runs
	default:
		return f, false, refused("patch %s relative to %q", op, sub)
	}
	if cp.GetPatch().GetFilterClass() != networkingapi.EnvoyFilter_Patch_UNSPECIFIED {
		return f, false, refused("filterClass %s", cp.GetPatch().GetFilterClass())
	}
	value := cp.GetPatch().GetValue().AsMap()
	for k := range value {
		if k != "name" && k != "typed_config" {
			return f, false, refused("patch value field %q", k)
		}
	}
	tc, ok := value["typed_config"].(map[string]any)
	if !ok || tc["@type"] != rbacHTTPType {
		return f, false, refused("typed_config %v", value["typed_config"])
	}
	body := maps.Clone(tc)
	delete(body, "@type")
	st, err := structpb.NewStruct(body)
	if err != nil {
		return f, false, rejected("typed_config: %v", err)
	}
	js, err := protojson.Marshal(st)
	if err != nil {
		return f, false, rejected("typed_config: %v", err)
	}
	cfg := &rbacv3.RBAC{}
	if err := protoUnmarshalOptions.Unmarshal(js, cfg); err != nil {
		return f, false, rejected("not an Envoy RBAC config: %v", err)
	}
	if err := cfg.ValidateAll(); err != nil {
		return f, false, rejected("Envoy RBAC config: %v", err)
	}
	if cfg.Matcher != nil {
		return f, false, refused("RBAC matcher")
	}
	name, _ := value["name"].(string)
	if f.filter, err = compileRBAC("envoyfilter "+name, cfg.Rules); err != nil {
		return f, false, err
	}
	if cfg.Rules != nil && cfg.Rules.Action == rbacpb.RBAC_ALLOW {
		f.alone = map[string]*rbacFilter{}
		for pn, p := range cfg.Rules.Policies {
			alone, err := compileRBAC(pn, &rbacpb.RBAC{Action: rbacpb.RBAC_ALLOW, Policies: map[string]*rbacpb.Policy{pn: p}})
			if err != nil {
				return f, false, err
			}
			f.alone[pn] = alone
		}
	}
	return f, true, nil
}

// workloadAuthz is everything that decides access to one workload.
type workloadAuthz struct {
	http, tcp *rbacFilter
	efs       []efFilter
}

func newWorkloadAuthz(aps []*securityv1beta1.AuthorizationPolicy, efs []*networkingv1alpha3.EnvoyFilter, ns string, labels map[string]string) (*workloadAuthz, error) {
	h, t, err := istioRBAC(aps, ns, labels)
	if err != nil {
		return nil, err
	}
	f, err := envoyFilterRBAC(efs, ns, labels)
	if err != nil {
		return nil, err
	}
	return &workloadAuthz{http: h, tcp: t, efs: f}, nil
}

// allowHTTP: Istio's HTTP RBAC filter and every EnvoyFilter RBAC filter on the port's HTTP chain.
func (w *workloadAuthz) allowHTTP(c *conn) (bool, string) {
	ok, why := w.http.allows(c)
	if !ok {
		return false, "denied by " + why
	}
	whys := []string{"allowed by " + why}
	for _, f := range w.efs {
		if f.port != 0 && f.port != c.port {
			continue
		}
		ok, why := f.filter.allows(c)
		if !ok {
			return false, "denied by " + why
		}
		whys = append(whys, why)
	}
	return true, strings.Join(whys, " and ")
}

// allowTCP: the network RBAC filter on the port's TCP chain (EnvoyFilters on HTTP filters do not apply).
func (w *workloadAuthz) allowTCP(c *conn) (bool, string) {
	ok, why := w.tcp.allows(&conn{peer: c.peer, port: c.port})
	if ok {
		return true, "allowed by " + why
	}
	return false, "denied by " + why
}

// ---- truth tables for the evaluator itself ----

func TestRBACEvaluatorTruthTable(t *testing.T) {
	get := func(authority, path string, extra ...string) *conn {
		h := map[string]string{":method": "GET", ":path": path, ":authority": authority}
		for i := 0; i+1 < len(extra); i += 2 {
			h[extra[i]] = extra[i+1]
		}
		return &conn{peer: "spiffe://cluster.local/ns/shop/sa/web", port: 8080, headers: h}
	}
	tcp := &conn{peer: "spiffe://cluster.local/ns/shop/sa/web", port: 8080}
	plain := &conn{port: 8080, headers: map[string]string{":method": "GET", ":path": "/", ":authority": "a"}}
	str := func(m *matcherv3.StringMatcher) *routev3.HeaderMatcher {
		return &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: m}}
	}
	regex := func(re string) *matcherv3.StringMatcher {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}}
	}
	headerCases := []struct {
		name string
		h    *routev3.HeaderMatcher
		c    *conn
		want bool
	}{
		{"missing header, string match", str(istiomatcher.StringMatcherExact("v", false)), get("a", "/"), false},
		{"missing header, inverted string match", &routev3.HeaderMatcher{Name: "x-a", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: istiomatcher.StringMatcherExact("v", false)}}, get("a", "/"), false},
		{"missing header, present", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}, get("a", "/"), false},
		{"missing header, inverted present", &routev3.HeaderMatcher{Name: "x-a", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}, get("a", "/"), true},
		{"missing header, present false", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}}, get("a", "/"), true},
		{"missing header treated as empty", &routev3.HeaderMatcher{Name: "x-a", TreatMissingHeaderAsEmpty: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: istiomatcher.StringMatcherExact("", false)}}, get("a", "/"), true},
		{"empty value, present", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}, get("a", "/", "x-a", ""), true},
		{"inverted mismatch", &routev3.HeaderMatcher{Name: "x-a", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: istiomatcher.StringMatcherExact("v", false)}}, get("a", "/", "x-a", "w"), true},
		{"deprecated exact_match empty matches any value", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: ""}}, get("a", "/", "x-a", "w"), true},
		{"header name is case-insensitive", &routev3.HeaderMatcher{Name: "X-A", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}, get("a", "/", "x-a", "w"), true},
		{"regex is a full match", str(regex("ab")), get("a", "/", "x-a", "xaby"), false},
		{"regex full match", str(regex("a.*")), get("a", "/", "x-a", "abc"), true},
		{"regex is case-sensitive", str(regex("abc")), get("a", "/", "x-a", "ABC"), false},
		{"ignore_case folds ASCII", str(istiomatcher.StringMatcherExact("abc", true)), get("a", "/", "x-a", "AbC"), true},
		{"ignore_case does not fold Unicode", str(istiomatcher.StringMatcherExact("é", true)), get("a", "/", "x-a", "É"), false},
		{"no host header, only :authority", &routev3.HeaderMatcher{Name: "host", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}, get("a", "/"), false},
		{"Istio host matcher ignores case", istiomatcher.HostMatcher(":authority", "api.shop"), get("API.Shop", "/"), true},
		{"Istio host matcher keeps the port", istiomatcher.HostMatcher(":authority", "api.shop"), get("api.shop:8080", "/"), false},
		{"Istio host prefix", istiomatcher.HostMatcher(":authority", "api.*"), get("API.x", "/"), true},
		{"Istio header suffix", istiomatcher.HeaderMatcher("x-a", "*buyer"), get("a", "/", "x-a", "bookbuyer"), true},
		{"Istio header presence", istiomatcher.HeaderMatcher("x-a", "*"), get("a", "/", "x-a", ""), true},
		{"no headers on a TCP chain", &routev3.HeaderMatcher{Name: "x-a", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}, tcp, false},
		{"no headers on a TCP chain, inverted presence", &routev3.HeaderMatcher{Name: "x-a", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}, tcp, true},
	}
	for _, tc := range headerCases {
		p, err := compileHeaderMatcher(tc.h)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := p(tc.c); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
	if _, err := compileStringMatcher(&matcherv3.StringMatcher{IgnoreCase: true, MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "a"}}}); !errors.Is(err, errRejected) {
		t.Errorf("safe_regex with ignore_case: got %v, want rejected", err)
	}
	if _, err := compileStringMatcher(regex("")); !errors.Is(err, errRejected) {
		t.Errorf("empty safe_regex: got %v, want rejected", err)
	}

	rule := func(from []string, op *securityapi.Operation, when ...*securityapi.Condition) *securityapi.Rule {
		r := &securityapi.Rule{When: when}
		if from != nil {
			r.From = []*securityapi.Rule_From{{Source: &securityapi.Source{Principals: from}}}
		}
		if op != nil {
			r.To = []*securityapi.Rule_To{{Operation: op}}
		}
		return r
	}
	web := []string{"cluster.local/ns/shop/sa/web"}
	ruleCases := []struct {
		name      string
		rule      *securityapi.Rule
		c         *conn
		http, tcp bool // allowed on an HTTP chain (c as is) and on a TCP chain (c without headers)
	}{
		{"principals only: every TCP connection too", rule(web, nil), get("a", "/"), true, true},
		{"principals and ports: TCP on that port", rule(web, &securityapi.Operation{Ports: []string{"8080"}}), get("a", "/"), true, true},
		{"other port", rule(web, &securityapi.Operation{Ports: []string{"9090"}}), get("a", "/"), false, false},
		{"paths: HTTP only", rule(web, &securityapi.Operation{Paths: []string{"*"}}), get("a", "/x"), true, false},
		{"methods: HTTP only", rule(web, &securityapi.Operation{Methods: []string{"GET"}}), get("a", "/x"), true, false},
		{"hosts: HTTP only", rule(web, &securityapi.Operation{Hosts: []string{"*"}}), get("a", "/x"), true, false},
		{"notPaths: HTTP only", rule(web, &securityapi.Operation{NotPaths: []string{"/admin"}}), get("a", "/x"), true, false},
		{"header condition: HTTP only", rule(web, nil, &securityapi.Condition{Key: "request.headers[x-a]", Values: []string{"*"}}), get("a", "/", "x-a", "v"), true, false},
		{"principal prefix", rule([]string{"cluster.local/ns/shop/sa/we*"}, &securityapi.Operation{Ports: []string{"8080"}}), get("a", "/"), true, true},
		{"other principal", rule([]string{"cluster.local/ns/shop/sa/batch"}, &securityapi.Operation{Ports: []string{"8080"}}), get("a", "/"), false, false},
		{"path ignores the query", rule(web, &securityapi.Operation{Paths: []string{"/x"}}), get("a", "/x?y=1"), true, false},
		{"path template one segment", rule(web, &securityapi.Operation{Paths: []string{"/a/{*}/c"}}), get("a", "/a/b/c"), true, false},
		{"path template not two segments", rule(web, &securityapi.Operation{Paths: []string{"/a/{*}/c"}}), get("a", "/a/b/b/c"), false, false},
		{"path template not empty", rule(web, &securityapi.Operation{Paths: []string{"/a/{*}/c"}}), get("a", "/a//c"), false, false},
		{"path prefix", rule(web, &securityapi.Operation{Paths: []string{"/a/*"}}), get("a", "/a/"), true, false},
		{"destination.port condition", rule(web, nil, &securityapi.Condition{Key: "destination.port", Values: []string{"8080"}}), get("a", "/"), true, true},
	}
	for _, tc := range ruleCases {
		ap := &securityv1beta1.AuthorizationPolicy{}
		ap.Name, ap.Namespace = "p", "shop"
		ap.Spec.Rules = []*securityapi.Rule{tc.rule}
		w, err := newWorkloadAuthz([]*securityv1beta1.AuthorizationPolicy{ap}, nil, "shop", nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got, why := w.allowHTTP(tc.c); got != tc.http {
			t.Errorf("%s on HTTP: got %v (%s), want %v", tc.name, got, why, tc.http)
		}
		if got, why := w.allowTCP(tc.c); got != tc.tcp {
			t.Errorf("%s on TCP: got %v (%s), want %v", tc.name, got, why, tc.tcp)
		}
	}
	w, err := newWorkloadAuthz(nil, nil, "shop", nil)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := w.allowHTTP(get("a", "/")); ok {
		t.Error("no policy: the allow-nothing baseline must deny HTTP")
	}
	if ok, _ := w.allowTCP(tcp); ok {
		t.Error("no policy: the allow-nothing baseline must deny TCP")
	}
	anyRule := &securityv1beta1.AuthorizationPolicy{}
	anyRule.Name, anyRule.Namespace = "p", "shop"
	anyRule.Spec.Rules = []*securityapi.Rule{{}}
	if w, err = newWorkloadAuthz([]*securityv1beta1.AuthorizationPolicy{anyRule}, nil, "shop", nil); err != nil {
		t.Fatal(err)
	}
	if ok, _ := w.allowHTTP(plain); !ok {
		t.Error("an empty rule allows a peer without mTLS")
	}
	if _, err := newWorkloadAuthz([]*securityv1beta1.AuthorizationPolicy{{Spec: securityapi.AuthorizationPolicy{Action: securityapi.AuthorizationPolicy_DENY}}}, nil, "", nil); !errors.Is(err, errRefused) {
		t.Errorf("DENY policy: got %v, want refused", err)
	}

	efCases := []struct {
		name    string
		op      networkingapi.EnvoyFilter_Patch_Operation
		sub     string
		port    uint32
		sel     map[string]string
		rules   map[string]any // nil: no rules
		c       *conn
		want    bool
		wantErr error
	}{
		{"policy allows", networkingapi.EnvoyFilter_Patch_INSERT_BEFORE, routerFilter, 0, nil, rbacRules("/a"), get("a", "/a"), true, nil},
		{"policy denies", networkingapi.EnvoyFilter_Patch_INSERT_BEFORE, routerFilter, 0, nil, rbacRules("/a"), get("a", "/b"), false, nil},
		{"after the router it never runs", networkingapi.EnvoyFilter_Patch_INSERT_AFTER, routerFilter, 0, nil, rbacRules("/a"), get("a", "/b"), true, nil},
		{"another port", networkingapi.EnvoyFilter_Patch_INSERT_BEFORE, routerFilter, 9090, nil, rbacRules("/a"), get("a", "/b"), true, nil},
		{"another workload", networkingapi.EnvoyFilter_Patch_INSERT_BEFORE, routerFilter, 0, map[string]string{"app": "x"}, rbacRules("/a"), get("a", "/b"), true, nil},
		{"no rules: no enforcement", networkingapi.EnvoyFilter_Patch_INSERT_BEFORE, routerFilter, 0, nil, nil, get("a", "/b"), true, nil},
		{"empty regex: Envoy rejects it", networkingapi.EnvoyFilter_Patch_INSERT_BEFORE, routerFilter, 0, nil, rbacRules(""), get("a", "/b"), false, errRejected},
		{"replace: not modelled", networkingapi.EnvoyFilter_Patch_REPLACE, routerFilter, 0, nil, rbacRules("/a"), get("a", "/b"), false, errRefused},
	}
	for _, tc := range efCases {
		tcfg := map[string]any{"@type": rbacHTTPType}
		if tc.rules != nil {
			tcfg["rules"] = tc.rules
		}
		value, err := structpb.NewStruct(map[string]any{"name": "rbac", "typed_config": tcfg})
		if err != nil {
			t.Fatal(err)
		}
		ef := &networkingv1alpha3.EnvoyFilter{}
		ef.Name, ef.Namespace = "ef", "shop"
		if tc.sel != nil {
			ef.Spec.WorkloadSelector = &networkingapi.WorkloadSelector{Labels: tc.sel}
		}
		ef.Spec.ConfigPatches = []*networkingapi.EnvoyFilter_EnvoyConfigObjectPatch{{
			ApplyTo: networkingapi.EnvoyFilter_HTTP_FILTER,
			Match: &networkingapi.EnvoyFilter_EnvoyConfigObjectMatch{
				Context: networkingapi.EnvoyFilter_SIDECAR_INBOUND,
				ObjectTypes: &networkingapi.EnvoyFilter_EnvoyConfigObjectMatch_Listener{Listener: &networkingapi.EnvoyFilter_ListenerMatch{
					PortNumber: tc.port,
					FilterChain: &networkingapi.EnvoyFilter_ListenerMatch_FilterChainMatch{Filter: &networkingapi.EnvoyFilter_ListenerMatch_FilterMatch{
						Name: httpConnectionManager, SubFilter: &networkingapi.EnvoyFilter_ListenerMatch_SubFilterMatch{Name: tc.sub},
					}},
				}},
			},
			Patch: &networkingapi.EnvoyFilter_Patch{Operation: tc.op, Value: value},
		}}
		w, err := newWorkloadAuthz([]*securityv1beta1.AuthorizationPolicy{anyRule}, []*networkingv1alpha3.EnvoyFilter{ef}, "shop", map[string]string{"app": "api"})
		if tc.wantErr != nil || err != nil {
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("EnvoyFilter %s: got error %v, want %v", tc.name, err, tc.wantErr)
			}
			continue
		}
		if got, why := w.allowHTTP(tc.c); got != tc.want {
			t.Errorf("EnvoyFilter %s: got %v (%s), want %v", tc.name, got, why, tc.want)
		}
		if got, _ := w.allowTCP(tc.c); !got {
			t.Errorf("EnvoyFilter %s: an HTTP filter must not apply on a TCP chain", tc.name)
		}
	}
}

// rbacRules is an ALLOW rule set for the path regex re, from any peer.
func rbacRules(re string) map[string]any {
	return map[string]any{"action": "ALLOW", "policies": map[string]any{"p": map[string]any{
		"permissions": []any{map[string]any{"url_path": map[string]any{"path": map[string]any{"safe_regex": map[string]any{"regex": re}}}}},
		"principals":  []any{map[string]any{"any": true}},
	}}}
}
