//go:build e2e

package e2e

import (
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// Envoy's RBAC engine (source/extensions/filters/common/rbac/matchers.cc) and the matchers it uses
// (HeaderUtility::matchHeaders, StringMatcherImpl), for one filter's rules.

// tlsPeer is the TLS session of a connection the chain terminated (Envoy's connection.ssl()).
type tlsPeer struct {
	uriSANs, dnsSANs []string // of the client certificate; none without one
	subject          string   // Istio's workload certificates have an empty subject
}

// rbacContext is what an RBAC filter can see: the connection and, for an HTTP filter, the request
// headers. A network filter has no headers (Envoy passes it an empty header map).
type rbacContext struct {
	ssl          *tlsPeer // nil: not a TLS connection terminated by this chain
	dstPort      uint32
	dstIP, srcIP netip.Addr
	sni          string
	headers      map[string]string // lower-case names; nil for a network filter
	xffSet       bool              // the request carries x-forwarded-for and the HCM trusts it for remote_ip
}

// withHeaders is the context of an HTTP filter for the request: :method, :path and the request's
// headers with lower-case names ("host" becomes :authority, as Envoy's codecs do).
func (cx *rbacContext) withHeaders(r Request) *rbacContext {
	out := *cx
	out.headers = map[string]string{":method": r.Method, ":path": r.Path}
	for k, v := range r.Headers {
		k = strings.ToLower(k)
		if k == "host" {
			k = ":authority"
		}
		out.headers[k] = v
	}
	return &out
}

func (cx *rbacContext) header(name string) (string, bool) {
	v, ok := cx.headers[strings.ToLower(name)]
	return v, ok
}

// evalRBAC is Envoy's decision for one filter: no rules = not enforced; ALLOW passes when a policy
// matches, DENY when none does, LOG always.
func evalRBAC(rules *rbacv3.RBAC, cx *rbacContext) (bool, error) {
	if rules == nil {
		return true, nil
	}
	matched := false
	names := make([]string, 0, len(rules.Policies))
	for n := range rules.Policies {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := rules.Policies[n]
		if p.GetCondition() != nil || p.GetCheckedCondition() != nil {
			return false, fmt.Errorf("policy %s has a CEL condition, which this evaluator does not model", n)
		}
		perm, err := anyPermission(p.Permissions, cx)
		if err != nil {
			return false, fmt.Errorf("policy %s: %w", n, err)
		}
		prin, err := anyPrincipal(p.Principals, cx)
		if err != nil {
			return false, fmt.Errorf("policy %s: %w", n, err)
		}
		if perm && prin {
			matched = true
		}
	}
	switch rules.Action {
	case rbacv3.RBAC_ALLOW:
		return matched, nil
	case rbacv3.RBAC_DENY:
		return !matched, nil
	case rbacv3.RBAC_LOG:
		return true, nil
	default:
		return false, fmt.Errorf("RBAC action %s is not modelled", rules.Action)
	}
}

// anyPermission and anyPrincipal evaluate every element (not only up to the first match), so that
// a rule the evaluator cannot model is refused wherever it sits.
func anyPermission(ps []*rbacv3.Permission, cx *rbacContext) (bool, error) {
	out := false
	for _, p := range ps {
		ok, err := permission(p, cx)
		if err != nil {
			return false, err
		}
		out = out || ok
	}
	return out, nil
}

func allPermissions(ps []*rbacv3.Permission, cx *rbacContext) (bool, error) {
	out := true
	for _, p := range ps {
		ok, err := permission(p, cx)
		if err != nil {
			return false, err
		}
		out = out && ok
	}
	return out, nil
}

func permission(p *rbacv3.Permission, cx *rbacContext) (bool, error) {
	switch rule := p.Rule.(type) {
	case *rbacv3.Permission_Any:
		return rule.Any, nil
	case *rbacv3.Permission_AndRules:
		return allPermissions(rule.AndRules.Rules, cx)
	case *rbacv3.Permission_OrRules:
		return anyPermission(rule.OrRules.Rules, cx)
	case *rbacv3.Permission_NotRule:
		ok, err := permission(rule.NotRule, cx)
		return !ok, err
	case *rbacv3.Permission_Header:
		return headerMatch(rule.Header, cx)
	case *rbacv3.Permission_UrlPath:
		return urlPath(rule.UrlPath, cx)
	case *rbacv3.Permission_DestinationPort:
		return rule.DestinationPort == cx.dstPort, nil
	case *rbacv3.Permission_DestinationPortRange:
		return int64(cx.dstPort) >= int64(rule.DestinationPortRange.Start) && int64(cx.dstPort) < int64(rule.DestinationPortRange.End), nil
	case *rbacv3.Permission_DestinationIp:
		return inRange(rule.DestinationIp, cx.dstIP, "destination")
	case *rbacv3.Permission_RequestedServerName:
		return stringMatch(rule.RequestedServerName, cx.sni)
	default:
		return false, fmt.Errorf("permission %T is not modelled", rule)
	}
}

func anyPrincipal(ps []*rbacv3.Principal, cx *rbacContext) (bool, error) {
	out := false
	for _, p := range ps {
		ok, err := principal(p, cx)
		if err != nil {
			return false, err
		}
		out = out || ok
	}
	return out, nil
}

func principal(p *rbacv3.Principal, cx *rbacContext) (bool, error) {
	switch id := p.Identifier.(type) {
	case *rbacv3.Principal_Any:
		return id.Any, nil
	case *rbacv3.Principal_AndIds:
		out := true
		for _, q := range id.AndIds.Ids {
			ok, err := principal(q, cx)
			if err != nil {
				return false, err
			}
			out = out && ok
		}
		return out, nil
	case *rbacv3.Principal_OrIds:
		return anyPrincipal(id.OrIds.Ids, cx)
	case *rbacv3.Principal_NotId:
		ok, err := principal(id.NotId, cx)
		return !ok, err
	case *rbacv3.Principal_Authenticated_:
		return authenticated(id.Authenticated.GetPrincipalName(), cx.ssl)
	case *rbacv3.Principal_Header:
		return headerMatch(id.Header, cx)
	case *rbacv3.Principal_UrlPath:
		return urlPath(id.UrlPath, cx)
	case *rbacv3.Principal_DirectRemoteIp:
		return inRange(id.DirectRemoteIp, cx.srcIP, "source")
	case *rbacv3.Principal_SourceIp: // deprecated, still served: the direct peer
		return inRange(id.SourceIp, cx.srcIP, "source")
	case *rbacv3.Principal_RemoteIp:
		if cx.xffSet {
			return false, fmt.Errorf("remote_ip with an x-forwarded-for header the connection manager trusts is not modelled")
		}
		return inRange(id.RemoteIp, cx.srcIP, "source")
	default:
		return false, fmt.Errorf("principal %T is not modelled", id)
	}
}

// authenticated is Envoy's AuthenticatedMatcher: false without TLS; any TLS peer when no name is
// given (a client without certificate included); otherwise a URI SAN, a DNS SAN or the subject.
func authenticated(name *matcherv3.StringMatcher, ssl *tlsPeer) (bool, error) {
	if name != nil {
		if _, err := stringMatch(name, ""); err != nil {
			return false, err
		}
	}
	if ssl == nil {
		return false, nil
	}
	if name == nil {
		return true, nil
	}
	for _, v := range append(append([]string(nil), ssl.uriSANs...), ssl.dnsSANs...) {
		ok, err := stringMatch(name, v)
		if err != nil || ok {
			return ok, err
		}
	}
	return stringMatch(name, ssl.subject)
}

// urlPath is Envoy's PathMatcher: the :path without query and fragment; no :path (a network
// filter) never matches.
func urlPath(m *matcherv3.PathMatcher, cx *rbacContext) (bool, error) {
	if m.GetPath() == nil {
		return false, fmt.Errorf("path matcher %T is not modelled", m.GetRule())
	}
	p, ok := cx.header(":path")
	if !ok {
		// still validate the matcher, as Envoy does when it loads the filter
		_, err := stringMatch(m.GetPath(), "")
		return false, err
	}
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	return stringMatch(m.GetPath(), p)
}

func inRange(r *corev3.CidrRange, ip netip.Addr, what string) (bool, error) {
	p := cidrs([]*corev3.CidrRange{r})[0]
	if !p.IsValid() {
		return false, fmt.Errorf("invalid CIDR range %s/%d", r.GetAddressPrefix(), r.GetPrefixLen().GetValue())
	}
	if !ip.IsValid() {
		return false, fmt.Errorf("a rule matches on the %s IP, which the request does not give", what)
	}
	return p.Contains(ip), nil
}

// headerMatch is Envoy's HeaderUtility::matchHeaders: a missing header (unless
// treat_missing_header_as_empty) matches only present_match: false, or, inverted, only
// present_match: true; otherwise the value (empty when missing) is matched and the result inverted
// when invert_match is set.
func headerMatch(h *routev3.HeaderMatcher, cx *rbacContext) (bool, error) {
	v, present := cx.header(h.Name)
	// The specifier's own result on a value; refused specifiers are refused even when the header is missing.
	spec := func(v string) (bool, error) {
		switch m := h.HeaderMatchSpecifier.(type) {
		case nil:
			return true, nil // no specifier: present_match true
		case *routev3.HeaderMatcher_PresentMatch:
			return m.PresentMatch, nil
		case *routev3.HeaderMatcher_ExactMatch: // deprecated, still served
			return m.ExactMatch == "" || v == m.ExactMatch, nil
		case *routev3.HeaderMatcher_PrefixMatch: // deprecated, still served
			return strings.HasPrefix(v, m.PrefixMatch), nil
		case *routev3.HeaderMatcher_SuffixMatch: // deprecated, still served
			return strings.HasSuffix(v, m.SuffixMatch), nil
		case *routev3.HeaderMatcher_ContainsMatch: // deprecated, still served
			return strings.Contains(v, m.ContainsMatch), nil
		case *routev3.HeaderMatcher_SafeRegexMatch: // deprecated, still served
			return fullMatch(m.SafeRegexMatch.GetRegex(), v)
		case *routev3.HeaderMatcher_RangeMatch:
			n, err := strconv.ParseInt(strings.Trim(v, " \t\n\v\f\r"), 10, 64)
			return err == nil && n >= m.RangeMatch.Start && n < m.RangeMatch.End, nil
		case *routev3.HeaderMatcher_StringMatch:
			return stringMatch(m.StringMatch, v)
		default:
			return false, fmt.Errorf("header matcher %T is not modelled", m)
		}
	}
	isPresentType := false
	presentValue := true
	switch m := h.HeaderMatchSpecifier.(type) {
	case nil:
		isPresentType = true
	case *routev3.HeaderMatcher_PresentMatch:
		isPresentType, presentValue = true, m.PresentMatch
	}
	if !present && !h.TreatMissingHeaderAsEmpty {
		if _, err := spec(""); err != nil {
			return false, err
		}
		if h.InvertMatch {
			return isPresentType && presentValue, nil
		}
		return isPresentType && !presentValue, nil
	}
	ok, err := spec(v) // v is "" when missing and treated as empty
	if err != nil {
		return false, err
	}
	return ok != h.InvertMatch, nil
}

// stringMatch is Envoy's StringMatcherImpl: ignore_case folds ASCII only (absl::EqualsIgnoreCase
// and friends); safe_regex with ignore_case is a configuration error (Envoy rejects the listener).
func stringMatch(m *matcherv3.StringMatcher, v string) (bool, error) {
	if m == nil {
		return false, fmt.Errorf("empty string matcher")
	}
	fold := func(s string) string {
		if m.IgnoreCase {
			return asciiLower(s)
		}
		return s
	}
	switch p := m.MatchPattern.(type) {
	case *matcherv3.StringMatcher_Exact:
		return fold(v) == fold(p.Exact), nil
	case *matcherv3.StringMatcher_Prefix:
		return strings.HasPrefix(fold(v), fold(p.Prefix)), nil
	case *matcherv3.StringMatcher_Suffix:
		return strings.HasSuffix(fold(v), fold(p.Suffix)), nil
	case *matcherv3.StringMatcher_Contains:
		return strings.Contains(fold(v), fold(p.Contains)), nil
	case *matcherv3.StringMatcher_SafeRegex:
		if m.IgnoreCase {
			return false, fmt.Errorf("safe_regex %q with ignore_case: Envoy rejects the configuration (\"ignore_case has no effect for safe_regex\")", p.SafeRegex.GetRegex())
		}
		return fullMatch(p.SafeRegex.GetRegex(), v)
	default:
		return false, fmt.Errorf("string matcher %T is not modelled", p)
	}
}

// asciiLower lower-cases A-Z only, as absl::AsciiStrToLower does.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b)
}

// fullMatch is Envoy's safe_regex semantics: RE2, the whole value.
func fullMatch(re, v string) (bool, error) {
	rx, err := regexp.Compile(`^(?:` + re + `)$`)
	if err != nil {
		return false, fmt.Errorf("regex %q: %w", re, err)
	}
	return rx.MatchString(v), nil
}

// validateMatchers checks every string and regex matcher anywhere in a configuration (typed
// configs included) the way Envoy does when it loads it: a safe_regex with ignore_case, or a regex
// RE2 does not compile, makes Envoy reject the whole resource, whichever chain or filter holds it.
func validateMatchers(m proto.Message) error {
	return walkMessages(m.ProtoReflect(), func(msg protoreflect.Message) error {
		switch v := msg.Interface().(type) {
		case *matcherv3.StringMatcher:
			if v.GetSafeRegex() != nil && v.IgnoreCase {
				return fmt.Errorf("safe_regex %q with ignore_case: Envoy rejects the configuration (\"ignore_case has no effect for safe_regex\")", v.GetSafeRegex().GetRegex())
			}
		case *matcherv3.RegexMatcher:
			if _, err := regexp.Compile(v.GetRegex()); err != nil {
				return fmt.Errorf("regex %q: %w", v.GetRegex(), err)
			}
		}
		return nil
	})
}

func walkMessages(m protoreflect.Message, visit func(protoreflect.Message) error) error {
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			return nil // a type this binary does not know: nothing the evaluator reads
		}
		return walkMessages(inner.ProtoReflect(), visit)
	}
	if err := visit(m); err != nil {
		return err
	}
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len() && err == nil; i++ {
				err = walkMessages(l.Get(i).Message(), visit)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				err = walkMessages(mv.Message(), visit)
				return err == nil
			})
		case fd.Message() != nil && !fd.IsList() && !fd.IsMap():
			err = walkMessages(v.Message(), visit)
		}
		return err == nil
	})
	return err
}
