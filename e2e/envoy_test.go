//go:build e2e

package e2e

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
)

func statusProto(msg string) *rpcstatus.Status { return &rpcstatus.Status{Code: 3, Message: msg} }

// Request is one connection or HTTP request arriving at a destination sidecar over mTLS.
type Request struct {
	From    Proxy             // the caller; its principal is spiffe://cluster.local/ns/<ns>/sa/<sa>
	Port    uint32            // the destination's target (container) port
	Method  string            // empty for TCP
	Path    string            // without the query
	Headers map[string]string // besides :method and :path (e.g. :authority)
}

func (r Request) principal() string {
	return "spiffe://cluster.local/ns/" + r.From.Namespace + "/sa/" + r.From.ServiceAccount
}

func (r Request) http() bool { return r.Method != "" }

func (r Request) header(name string) (string, bool) {
	switch strings.ToLower(name) {
	case ":method":
		return r.Method, r.http()
	case ":path":
		return r.Path, r.http()
	}
	for k, v := range r.Headers {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return "", false
}

func (r Request) String() string {
	s := fmt.Sprintf("%s/%s -> :%d", r.From.Namespace, r.From.ServiceAccount, r.Port)
	if r.http() {
		s += " " + r.Method + " " + r.Path
		var hs []string
		for k, v := range r.Headers {
			hs = append(hs, k+"="+v)
		}
		sort.Strings(hs)
		if len(hs) > 0 {
			s += " [" + strings.Join(hs, " ") + "]"
		}
	} else {
		s += " tcp"
	}
	return s
}

// rbacFilter is one RBAC filter of a filter chain, in chain order.
type rbacFilter struct {
	name  string
	rules *rbacv3.RBAC
}

// Verdict decides whether the destination's sidecar lets the request through, from the RBAC filters
// of the mTLS filter chains of its virtualInbound listener that serve the port. Every matching
// chain must agree; the filters of a chain all must allow (Envoy runs them in order).
func (c *ProxyConfig) Verdict(r Request) (bool, error) {
	l := c.Listeners["virtualInbound"]
	if l == nil {
		return false, fmt.Errorf("no virtualInbound listener")
	}
	type candidate struct {
		name    string
		filters []rbacFilter
	}
	var byPort, catchAll []candidate
	for _, fc := range l.FilterChains {
		m := fc.GetFilterChainMatch()
		if tp := m.GetTransportProtocol(); tp != "" && tp != "tls" {
			continue
		}
		var filters []rbacFilter
		h := hcmOf(fc)
		if r.http() != (h != nil) {
			continue // an HTTP request is served by an HTTP chain, a connection by a TCP chain
		}
		for _, f := range fc.Filters {
			if f.GetTypedConfig().GetTypeUrl() == "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC" {
				m, err := decodeTyped(f.GetTypedConfig())
				if err != nil {
					return false, err
				}
				filters = append(filters, rbacFilter{f.Name, m.(*rbacnetv3.RBAC).GetRules()})
			}
		}
		if h != nil {
			for _, f := range h.HttpFilters {
				if f.GetTypedConfig().GetTypeUrl() == "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC" {
					m, err := decodeTyped(f.GetTypedConfig())
					if err != nil {
						return false, err
					}
					rb := m.(*rbachttpv3.RBAC)
					if rb.GetMatcher() != nil {
						return false, fmt.Errorf("chain %s: RBAC filter %s uses the matcher API, which this evaluator does not read", fc.Name, f.Name)
					}
					filters = append(filters, rbacFilter{f.Name, rb.GetRules()})
				}
			}
		}
		switch {
		case m.GetDestinationPort() == nil:
			catchAll = append(catchAll, candidate{fc.Name, filters})
		case m.GetDestinationPort().GetValue() == r.Port:
			byPort = append(byPort, candidate{fc.Name, filters})
		}
	}
	cands := byPort
	if len(cands) == 0 {
		cands = catchAll
	}
	if len(cands) == 0 {
		return false, fmt.Errorf("no inbound mTLS filter chain serves %s", r)
	}
	var verdict *bool
	for _, cand := range cands {
		ok := true
		for _, f := range cand.filters {
			pass, err := evalRBAC(f.rules, r)
			if err != nil {
				return false, fmt.Errorf("chain %s, filter %s: %w", cand.name, f.name, err)
			}
			ok = ok && pass
		}
		if verdict != nil && *verdict != ok {
			return false, fmt.Errorf("filter chains for %s disagree", r)
		}
		verdict = &ok
	}
	return *verdict, nil
}

// HasFilter reports whether an inbound HTTP chain of the proxy carries an HTTP filter of that name.
func (c *ProxyConfig) HasFilter(name string) bool {
	l := c.Listeners["virtualInbound"]
	if l == nil {
		return false
	}
	for _, fc := range l.FilterChains {
		if h := hcmOf(fc); h != nil {
			for _, f := range h.HttpFilters {
				if f.Name == name {
					return true
				}
			}
		}
	}
	return false
}

// evalRBAC is Envoy's RBAC decision for one filter: no rules = not enforced; ALLOW passes when a
// policy matches, DENY when none does.
func evalRBAC(rules *rbacv3.RBAC, r Request) (bool, error) {
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
			return false, fmt.Errorf("policy %s has a CEL condition, which this evaluator does not read", n)
		}
		perm, err := anyPermission(p.Permissions, r)
		if err != nil {
			return false, fmt.Errorf("policy %s: %w", n, err)
		}
		prin, err := anyPrincipal(p.Principals, r)
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
		return false, fmt.Errorf("RBAC action %s is not evaluated", rules.Action)
	}
}

func anyPermission(ps []*rbacv3.Permission, r Request) (bool, error) {
	for _, p := range ps {
		ok, err := permission(p, r)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

func allPermissions(ps []*rbacv3.Permission, r Request) (bool, error) {
	for _, p := range ps {
		ok, err := permission(p, r)
		if err != nil || !ok {
			return ok, err
		}
	}
	return true, nil
}

func permission(p *rbacv3.Permission, r Request) (bool, error) {
	switch rule := p.Rule.(type) {
	case *rbacv3.Permission_Any:
		return rule.Any, nil
	case *rbacv3.Permission_AndRules:
		return allPermissions(rule.AndRules.Rules, r)
	case *rbacv3.Permission_OrRules:
		return anyPermission(rule.OrRules.Rules, r)
	case *rbacv3.Permission_NotRule:
		ok, err := permission(rule.NotRule, r)
		return !ok, err
	case *rbacv3.Permission_Header:
		return headerMatch(rule.Header, r)
	case *rbacv3.Permission_UrlPath:
		if !r.http() {
			return false, nil
		}
		return stringMatch(rule.UrlPath.GetPath(), r.Path)
	case *rbacv3.Permission_DestinationPort:
		return rule.DestinationPort == r.Port, nil
	case *rbacv3.Permission_DestinationPortRange:
		return int64(r.Port) >= int64(rule.DestinationPortRange.Start) && int64(r.Port) < int64(rule.DestinationPortRange.End), nil
	default:
		return false, fmt.Errorf("permission %T is not evaluated", rule)
	}
}

func anyPrincipal(ps []*rbacv3.Principal, r Request) (bool, error) {
	for _, p := range ps {
		ok, err := principal(p, r)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

func principal(p *rbacv3.Principal, r Request) (bool, error) {
	switch id := p.Identifier.(type) {
	case *rbacv3.Principal_Any:
		return id.Any, nil
	case *rbacv3.Principal_AndIds:
		for _, q := range id.AndIds.Ids {
			ok, err := principal(q, r)
			if err != nil || !ok {
				return ok, err
			}
		}
		return true, nil
	case *rbacv3.Principal_OrIds:
		return anyPrincipal(id.OrIds.Ids, r)
	case *rbacv3.Principal_NotId:
		ok, err := principal(id.NotId, r)
		return !ok, err
	case *rbacv3.Principal_Authenticated_:
		if id.Authenticated.GetPrincipalName() == nil {
			return true, nil // any authenticated peer
		}
		return stringMatch(id.Authenticated.GetPrincipalName(), r.principal())
	case *rbacv3.Principal_Header:
		return headerMatch(id.Header, r)
	case *rbacv3.Principal_UrlPath:
		if !r.http() {
			return false, nil
		}
		return stringMatch(id.UrlPath.GetPath(), r.Path)
	default:
		return false, fmt.Errorf("principal %T is not evaluated", id)
	}
}

func headerMatch(h *routev3.HeaderMatcher, r Request) (bool, error) {
	v, present := r.header(h.Name)
	var ok bool
	var err error
	switch m := h.HeaderMatchSpecifier.(type) {
	case *routev3.HeaderMatcher_PresentMatch:
		ok = present == m.PresentMatch
	case *routev3.HeaderMatcher_StringMatch:
		if present {
			ok, err = stringMatch(m.StringMatch, v)
		}
	default:
		return false, fmt.Errorf("header matcher %T is not evaluated", m)
	}
	if err != nil {
		return false, err
	}
	if h.InvertMatch {
		ok = !ok
	}
	return ok, nil
}

func stringMatch(m *matcherv3.StringMatcher, v string) (bool, error) {
	if m == nil {
		return false, fmt.Errorf("empty string matcher")
	}
	in := v
	if m.IgnoreCase {
		in = strings.ToLower(v)
	}
	lower := func(s string) string {
		if m.IgnoreCase {
			return strings.ToLower(s)
		}
		return s
	}
	switch p := m.MatchPattern.(type) {
	case *matcherv3.StringMatcher_Exact:
		return in == lower(p.Exact), nil
	case *matcherv3.StringMatcher_Prefix:
		return strings.HasPrefix(in, lower(p.Prefix)), nil
	case *matcherv3.StringMatcher_Suffix:
		return strings.HasSuffix(in, lower(p.Suffix)), nil
	case *matcherv3.StringMatcher_Contains:
		return strings.Contains(in, lower(p.Contains)), nil
	case *matcherv3.StringMatcher_SafeRegex:
		return fullMatch(p.SafeRegex.GetRegex(), v)
	default:
		return false, fmt.Errorf("string matcher %T is not evaluated", p)
	}
}

// fullMatch is Envoy's safe_regex semantics: RE2, the whole value.
func fullMatch(re, v string) (bool, error) {
	rx, err := regexp.Compile(`^(?:` + re + `)$`)
	if err != nil {
		return false, fmt.Errorf("regex %q: %w", re, err)
	}
	return rx.MatchString(v), nil
}

// OutboundRoutes renders every route of a client's outbound virtual host for host:port, in order, as
// "<match> -> <cluster>=<weight> ..." lines ("default" for a route without header or path match).
func (c *ProxyConfig) OutboundRoutes(host string, port uint32) ([]string, error) {
	// Istio names a route configuration after the port ("80", all services of the port, one
	// virtual host per domain) or, for a port whose protocol is sniffed, after the service
	// ("host:port", one virtual host "*").
	var vh *routev3.VirtualHost
	hostPort := fmt.Sprintf("%s:%d", host, port)
	for _, rc := range c.Routes {
		for _, v := range rc.VirtualHosts {
			for _, d := range v.Domains {
				if (rc.Name == hostPort && (d == "*" || d == hostPort)) ||
					(rc.Name == fmt.Sprint(port) && (d == hostPort || d == host)) {
					vh = v
				}
			}
		}
	}
	if vh == nil {
		var have []string
		for _, rc := range c.Routes {
			for _, v := range rc.VirtualHosts {
				have = append(have, rc.Name+": "+strings.Join(v.Domains, ","))
			}
		}
		sort.Strings(have)
		return nil, fmt.Errorf("no outbound virtual host for %s:%d; the sidecar has:\n%s", host, port, strings.Join(have, "\n"))
	}
	var lines []string
	for _, r := range vh.Routes {
		var match []string
		for _, h := range r.GetMatch().GetHeaders() {
			match = append(match, fmt.Sprintf("header %s=%s", h.Name, headerText(h)))
		}
		if p := r.GetMatch().GetPrefix(); p != "" && p != "/" {
			match = append(match, "prefix "+p)
		}
		if re := r.GetMatch().GetSafeRegex().GetRegex(); re != "" {
			match = append(match, "path ~ "+re)
		}
		m := "default"
		if len(match) > 0 {
			m = strings.Join(match, " & ")
		}
		a := r.GetRoute()
		switch {
		case a == nil:
			lines = append(lines, m+" -> (not a route)")
		case a.GetCluster() != "":
			lines = append(lines, fmt.Sprintf("%s -> %s=100", m, a.GetCluster()))
		case a.GetWeightedClusters() != nil:
			var ws []string
			for _, w := range a.GetWeightedClusters().Clusters {
				ws = append(ws, fmt.Sprintf("%s=%d", w.Name, w.GetWeight().GetValue()))
			}
			lines = append(lines, m+" -> "+strings.Join(ws, " "))
		}
	}
	return lines, nil
}

func headerText(h *routev3.HeaderMatcher) string {
	switch {
	case h.GetStringMatch().GetExact() != "":
		return h.GetStringMatch().GetExact()
	case h.GetStringMatch().GetSafeRegex() != nil:
		return "~" + h.GetStringMatch().GetSafeRegex().GetRegex()
	case h.GetStringMatch().GetPrefix() != "":
		return h.GetStringMatch().GetPrefix() + "*"
	default:
		return h.String()
	}
}
