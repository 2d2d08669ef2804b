//go:build e2e

package e2e

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// This file judges istiod's inbound configuration the way Envoy would run it: which filter chain of
// virtualInbound a connection lands on (Envoy's filter chain match: destination port, destination
// IP, server name, transport protocol, application protocols, then the source; the most specific
// value wins at each step and Envoy never backtracks), what that chain's transport socket and
// filters do with it, and what the RBAC filters decide (envoy_rbac_test.go). Whatever it cannot
// model exactly (an unknown filter, a matcher API, a per-route override, a filter from discovery)
// is refused with an error, never guessed.

func statusProto(msg string) *rpcstatus.Status { return &rpcstatus.Status{Code: 3, Message: msg} }

// Request is one HTTP request or TCP connection arriving at a destination sidecar.
type Request struct {
	From    Proxy             // the caller; its workload certificate names spiffe://cluster.local/ns/<ns>/sa/<sa>
	To      string            // the destination pod's IP (expectAccess sets it); needed when a chain or rule matches on it
	Port    uint32            // the destination's target (container) port
	Method  string            // empty for TCP
	Path    string            // without the query
	Headers map[string]string // besides :method and :path (e.g. :authority; "host" is read as :authority, as Envoy does)
	// Conn is how the client opens the connection; nil is what From's sidecar does (sidecarConn).
	Conn *Conn
}

// Conn is the shape of the connection that carries a request, as the destination's listener sees it.
// Everything in it is chosen by the client (an attacker included).
type Conn struct {
	TLS  bool     // the client starts with a TLS ClientHello; false: plaintext
	Cert bool     // TLS: the client presents From's workload certificate; false: no client certificate
	ALPN []string // TLS: the protocols offered in the ClientHello, in order
	SNI  string   // TLS: the server name
	// HTTPVersion is what Envoy's HTTP inspector detects on a plaintext HTTP request ("http/1.0",
	// "http/1.1" or "h2c"); "" when it detects nothing.
	HTTPVersion string
	// Slow: the client sends its first bytes after the listener filters' timeout, so the TLS and
	// HTTP inspectors see nothing (the listener continues on timeout when so configured).
	Slow bool
	// SrcPort is the client's source port (0: an ephemeral port no chain names).
	SrcPort uint32
}

func (c Conn) String() string {
	var s string
	switch {
	case c.TLS && c.Cert:
		s = "mTLS"
	case c.TLS:
		s = "TLS without client certificate"
	default:
		s = "plaintext"
	}
	if c.TLS {
		s += " alpn=[" + strings.Join(c.ALPN, ",") + "]"
		if c.SNI != "" {
			s += " sni=" + c.SNI
		}
	} else if c.HTTPVersion != "" {
		s += " " + c.HTTPVersion
	}
	if c.Slow {
		s += " (past the inspectors' timeout)"
	}
	if c.SrcPort != 0 {
		s += fmt.Sprintf(" from port %d", c.SrcPort)
	}
	return s
}

// Istio's client sidecar ALPN: HTTP/1.1 over mTLS (the istio.alpn filter's override) and TCP over
// mTLS with metadata exchange (pilot/pkg/networking/core: mtlsHTTP11ALPN, ALPNInMeshWithMxc).
var (
	sidecarHTTPALPN = []string{"istio-http/1.1", "istio", "http/1.1"}
	sidecarTCPALPN  = []string{"istio-peer-exchange", "istio"}
)

// sidecarConn is the connection From's sidecar opens for the request: mTLS with its certificate.
func sidecarConn(r Request) Conn {
	if r.http() {
		return Conn{TLS: true, Cert: true, ALPN: sidecarHTTPALPN}
	}
	return Conn{TLS: true, Cert: true, ALPN: sidecarTCPALPN}
}

func (r Request) conn() Conn {
	if r.Conn != nil {
		return *r.Conn
	}
	return sidecarConn(r)
}

func (r Request) principal() string {
	return "spiffe://cluster.local/ns/" + r.From.Namespace + "/sa/" + r.From.ServiceAccount
}

func (r Request) http() bool { return r.Method != "" }

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
	if r.Conn != nil {
		s += " over " + r.Conn.String()
	}
	return s
}

// Outcome is what one connection shape of a request gets at the destination's sidecar.
type Outcome struct {
	Conn    Conn
	Chain   string // the filter chain Envoy picks; "" when none matches (the connection is closed)
	Allowed bool
	Why     string
}

func (o Outcome) String() string {
	chain := o.Chain
	if chain == "" {
		chain = "(no chain)"
	}
	verdict := "denied"
	if o.Allowed {
		verdict = "allowed"
	}
	return fmt.Sprintf("%s over %s on chain %s: %s", verdict, o.Conn, chain, o.Why)
}

// Verdict decides whether the destination's sidecar lets the request through, on the one filter
// chain Envoy picks for the request's connection (r.Conn, or From's sidecar connection).
func (c *ProxyConfig) Verdict(r Request) (bool, error) {
	in, err := c.Inbound()
	if err != nil {
		return false, err
	}
	return in.Verdict(r)
}

// Sweep runs the request over every connection shape a client can present at its port; see
// (*Inbound).Sweep.
func (c *ProxyConfig) Sweep(r Request) ([]Outcome, error) {
	in, err := c.Inbound()
	if err != nil {
		return nil, err
	}
	return in.Sweep(r)
}

// Verdict decides whether the request is let through on the chain Envoy picks for its connection.
func (in *Inbound) Verdict(r Request) (bool, error) {
	o, err := in.Judge(r, r.conn())
	if err != nil {
		return false, err
	}
	return o.Allowed, nil
}

// Judge runs the request over one connection shape.
func (in *Inbound) Judge(r Request, conn Conn) (Outcome, error) {
	return in.judge(r, conn)
}

// Sweep runs the request over every connection shape a client can present at its port (TLS with
// and without From's certificate, every ALPN and server name the listener distinguishes, plaintext
// HTTP of every version, clients slower than the inspectors, every source port the listener
// distinguishes), so that every chain Envoy can pick for the port is judged. It returns every
// outcome, the request's own connection first; an error if any shape meets something the
// evaluator cannot model.
func (in *Inbound) Sweep(r Request) ([]Outcome, error) {
	var out []Outcome
	for _, conn := range in.shapes(r) {
		o, err := in.judge(r, conn)
		if err != nil {
			return nil, fmt.Errorf("%s over %s: %w", r, conn, err)
		}
		out = append(out, o)
	}
	return out, nil
}

// Inbound is virtualInbound of one sidecar, checked for what the evaluator can model.
type Inbound struct {
	c       *ProxyConfig
	l       *listenerv3.Listener
	decoded map[*anypb.Any]proto.Message // typed configs decoded (and validated) once per Inbound
	// the listener filters that change the chain match, in order
	tlsInspector, httpInspector *listenerv3.ListenerFilter
	hasTLSInspector             bool
	hasHTTPInspector            bool
}

const (
	typeTLSInspector  = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
	typeHTTPInspector = "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"
	typeOriginalDst   = "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
	typeOriginalSrc   = "type.googleapis.com/envoy.extensions.filters.listener.original_src.v3.OriginalSrc"

	typeHCM        = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
	typeNetRBAC    = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
	typeTCPProxy   = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
	typeHTTPRBAC   = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
	typeRBACRoute  = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
	typeRouter     = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
	typeFilterConf = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
	typeDownTLS    = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
	typeRawBuffer  = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
	typeTypedStr   = "type.googleapis.com/xds.type.v3.TypedStruct"
	typeUDPATyped  = "type.googleapis.com/udpa.type.v1.TypedStruct"
)

// passThroughNetwork and passThroughHTTP are filters that neither deny nor change what the RBAC
// filters after them see (Istio's telemetry and protocol plumbing), by type URL (for a TypedStruct,
// the URL it carries).
var (
	passThroughNetwork = map[string]bool{
		"type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange": true, // istio.metadata_exchange
		"type.googleapis.com/stats.PluginConfig":                                 true, // istio.stats
	}
	passThroughHTTP = map[string]bool{
		"type.googleapis.com/io.istio.http.peer_metadata.Config":                        true, // istio.metadata_exchange
		"type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig": true, // istio.alpn
		"type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig":  true,
		"type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault":          true, // no fault configured: nothing happens
		"type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors":                true, // answers preflights, forwards the rest
		"type.googleapis.com/stats.PluginConfig":                                        true, // istio.stats
	}
)

// Inbound checks the sidecar's virtualInbound listener (and the routes its connection managers
// name) for what the evaluator can model and what Envoy would reject, and returns its judge.
func (c *ProxyConfig) Inbound() (*Inbound, error) {
	l := c.Listeners["virtualInbound"]
	if l == nil {
		return nil, fmt.Errorf("no virtualInbound listener")
	}
	in := &Inbound{c: c, l: l, decoded: map[*anypb.Any]proto.Message{}}
	if err := validateMatchers(l); err != nil {
		return nil, fmt.Errorf("virtualInbound: %w", err)
	}
	for _, fc := range append(append([]*listenerv3.FilterChain(nil), l.FilterChains...), l.DefaultFilterChain) {
		if fc == nil {
			continue
		}
		if h := hcmOf(fc); h != nil && h.GetRds() != nil {
			if rc := c.Routes[h.GetRds().GetRouteConfigName()]; rc != nil {
				if err := validateMatchers(rc); err != nil {
					return nil, fmt.Errorf("route configuration %s: %w", rc.Name, err)
				}
			}
		}
	}
	if l.GetFilterChainMatcher() != nil {
		return nil, fmt.Errorf("virtualInbound selects chains with filter_chain_matcher, which this evaluator does not model")
	}
	if l.GetFcdsConfig() != nil {
		return nil, fmt.Errorf("virtualInbound takes filter chains from discovery (FCDS), which this evaluator does not model")
	}
	for _, lf := range l.ListenerFilters {
		if lf.GetConfigDiscovery() != nil {
			return nil, fmt.Errorf("listener filter %s comes from discovery (ECDS), which this evaluator does not model", lf.Name)
		}
		switch lf.GetTypedConfig().GetTypeUrl() {
		case typeTLSInspector:
			if in.hasTLSInspector {
				return nil, fmt.Errorf("two TLS inspectors")
			}
			in.tlsInspector, in.hasTLSInspector = lf, true
		case typeHTTPInspector:
			if in.hasHTTPInspector {
				return nil, fmt.Errorf("two HTTP inspectors")
			}
			in.httpInspector, in.hasHTTPInspector = lf, true
		case typeOriginalDst, typeOriginalSrc:
			// the original destination is what Request.Port/To already are
		default:
			return nil, fmt.Errorf("listener filter %s (%s) is not modelled", lf.Name, lf.GetTypedConfig().GetTypeUrl())
		}
	}
	chains := append([]*listenerv3.FilterChain(nil), l.FilterChains...)
	if l.DefaultFilterChain != nil {
		chains = append(chains, l.DefaultFilterChain)
	}
	for _, fc := range chains {
		m := fc.GetFilterChainMatch()
		if m.GetAddressSuffix() != "" || m.GetSuffixLen() != nil {
			return nil, fmt.Errorf("chain %s matches on address_suffix, which Envoy does not implement", fc.Name)
		}
		if fc.GetUseProxyProto().GetValue() {
			return nil, fmt.Errorf("chain %s uses the PROXY protocol, which this evaluator does not model", fc.Name)
		}
	}
	return in, nil
}

// inspectorOn reports whether a listener filter runs for a connection to the port (its
// filter_disabled predicate does not match).
func inspectorOn(lf *listenerv3.ListenerFilter, port uint32) (bool, error) {
	if lf == nil {
		return false, nil
	}
	if lf.FilterDisabled == nil {
		return true, nil
	}
	disabled, err := predicate(lf.FilterDisabled, port)
	return !disabled, err
}

func predicate(p *listenerv3.ListenerFilterChainMatchPredicate, port uint32) (bool, error) {
	switch r := p.Rule.(type) {
	case *listenerv3.ListenerFilterChainMatchPredicate_AnyMatch:
		return r.AnyMatch, nil
	case *listenerv3.ListenerFilterChainMatchPredicate_NotMatch:
		ok, err := predicate(r.NotMatch, port)
		return !ok, err
	case *listenerv3.ListenerFilterChainMatchPredicate_OrMatch:
		for _, q := range r.OrMatch.Rules {
			if ok, err := predicate(q, port); err != nil || ok {
				return ok, err
			}
		}
		return false, nil
	case *listenerv3.ListenerFilterChainMatchPredicate_AndMatch:
		for _, q := range r.AndMatch.Rules {
			if ok, err := predicate(q, port); err != nil || !ok {
				return ok, err
			}
		}
		return true, nil
	case *listenerv3.ListenerFilterChainMatchPredicate_DestinationPortRange:
		return int64(port) >= int64(r.DestinationPortRange.Start) && int64(port) < int64(r.DestinationPortRange.End), nil
	default:
		return false, fmt.Errorf("listener filter predicate %T is not modelled", r)
	}
}

// facts is what Envoy's filter chain match reads from a connection.
type facts struct {
	dstPort   uint32
	dstIP     netip.Addr // invalid when unknown
	srcIP     netip.Addr
	srcPort   uint32
	sni       string
	transport string   // "tls" or "raw_buffer"
	alpn      []string // requested application protocols
}

// attackerIP stands for a client whose IP is not known (a Proxy without one).
var attackerIP = netip.MustParseAddr("10.244.255.254")

// factsOf runs the listener filters: the TLS inspector sets transport "tls", the server name and
// the offered ALPN; the HTTP inspector, on a connection not detected as TLS, sets the HTTP version
// it recognizes as the ALPN; without either, the transport is "raw_buffer".
func (in *Inbound) factsOf(r Request, conn Conn) (facts, error) {
	f := facts{dstPort: r.Port, srcPort: conn.SrcPort, transport: "raw_buffer", srcIP: attackerIP}
	if r.To != "" {
		ip, err := netip.ParseAddr(r.To)
		if err != nil {
			return f, fmt.Errorf("destination IP %q: %w", r.To, err)
		}
		f.dstIP = ip
	}
	if r.From.IP != "" {
		ip, err := netip.ParseAddr(r.From.IP)
		if err != nil {
			return f, fmt.Errorf("source IP %q: %w", r.From.IP, err)
		}
		f.srcIP = ip
	}
	if f.srcPort == 0 {
		f.srcPort = 40000
	}
	tlsOn, err := inspectorOn(in.tlsInspector, r.Port)
	if err != nil {
		return f, err
	}
	httpOn, err := inspectorOn(in.httpInspector, r.Port)
	if err != nil {
		return f, err
	}
	if conn.Slow {
		return f, nil
	}
	if conn.TLS && tlsOn {
		f.transport, f.sni, f.alpn = "tls", conn.SNI, conn.ALPN
		return f, nil
	}
	if !conn.TLS && httpOn && r.http() && conn.HTTPVersion != "" {
		f.alpn = []string{conn.HTTPVersion}
	}
	return f, nil
}

// selectChain is Envoy's filter chain match (FilterChainManagerImpl::findFilterChain): at each
// criterion in order, the most specific value any remaining chain names that the connection
// matches wins, the chains without it are dropped, and a criterion that leaves no chain ends the
// search (the default chain, if any, or the connection is closed): no backtracking.
func (in *Inbound) selectChain(f facts) (*listenerv3.FilterChain, error) {
	cands := in.l.FilterChains
	steps := []struct {
		name string
		pick func([]*listenerv3.FilterChain) ([]*listenerv3.FilterChain, error)
	}{
		{"destination port", func(cs []*listenerv3.FilterChain) ([]*listenerv3.FilterChain, error) {
			return pickExact(cs, func(m *listenerv3.FilterChainMatch) []string {
				if m.GetDestinationPort() == nil {
					return nil
				}
				return []string{fmt.Sprint(m.GetDestinationPort().GetValue())}
			}, []string{fmt.Sprint(f.dstPort)}), nil
		}},
		{"destination IP", func(cs []*listenerv3.FilterChain) ([]*listenerv3.FilterChain, error) {
			return pickCIDR(cs, func(m *listenerv3.FilterChainMatch) []cidr { return cidrs(m.GetPrefixRanges()) }, f.dstIP, "destination")
		}},
		{"server name", func(cs []*listenerv3.FilterChain) ([]*listenerv3.FilterChain, error) {
			return pickExact(cs, func(m *listenerv3.FilterChainMatch) []string { return m.GetServerNames() }, serverNameKeys(f.sni)), nil
		}},
		{"transport protocol", func(cs []*listenerv3.FilterChain) ([]*listenerv3.FilterChain, error) {
			return pickExact(cs, func(m *listenerv3.FilterChainMatch) []string {
				if m.GetTransportProtocol() == "" {
					return nil
				}
				return []string{m.GetTransportProtocol()}
			}, []string{f.transport}), nil
		}},
		{"application protocols", func(cs []*listenerv3.FilterChain) ([]*listenerv3.FilterChain, error) {
			return pickExact(cs, func(m *listenerv3.FilterChainMatch) []string { return m.GetApplicationProtocols() }, f.alpn), nil
		}},
		{"direct source IP", func(cs []*listenerv3.FilterChain) ([]*listenerv3.FilterChain, error) {
			return pickCIDR(cs, func(m *listenerv3.FilterChainMatch) []cidr { return cidrs(m.GetDirectSourcePrefixRanges()) }, f.srcIP, "source")
		}},
		{"source type", func(cs []*listenerv3.FilterChain) ([]*listenerv3.FilterChain, error) {
			local := f.srcIP.IsLoopback() || (f.dstIP.IsValid() && f.srcIP == f.dstIP)
			want := listenerv3.FilterChainMatch_EXTERNAL
			if local {
				want = listenerv3.FilterChainMatch_SAME_IP_OR_LOOPBACK
			}
			return pickExact(cs, func(m *listenerv3.FilterChainMatch) []string {
				if m.GetSourceType() == listenerv3.FilterChainMatch_ANY {
					return nil
				}
				return []string{m.GetSourceType().String()}
			}, []string{want.String()}), nil
		}},
		{"source IP", func(cs []*listenerv3.FilterChain) ([]*listenerv3.FilterChain, error) {
			return pickCIDR(cs, func(m *listenerv3.FilterChainMatch) []cidr { return cidrs(m.GetSourcePrefixRanges()) }, f.srcIP, "source")
		}},
		{"source port", func(cs []*listenerv3.FilterChain) ([]*listenerv3.FilterChain, error) {
			return pickExact(cs, func(m *listenerv3.FilterChainMatch) []string {
				var ps []string
				for _, p := range m.GetSourcePorts() {
					ps = append(ps, fmt.Sprint(p))
				}
				return ps
			}, []string{fmt.Sprint(f.srcPort)}), nil
		}},
	}
	for _, s := range steps {
		next, err := s.pick(cands)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		if len(next) == 0 {
			return in.l.DefaultFilterChain, nil
		}
		cands = next
	}
	if len(cands) > 1 {
		var names []string
		for _, c := range cands {
			names = append(names, c.Name)
		}
		// Envoy rejects such a listener ("multiple filter chains with the same matching rules")
		return nil, fmt.Errorf("filter chains %v have the same match: Envoy rejects the listener", names)
	}
	return cands[0], nil
}

// serverNameKeys is the order in which Envoy looks a server name up: exact, then its wildcard
// domains from the longest ("www.example.com": "*.example.com", then "*.com"), then any.
func serverNameKeys(sni string) []string {
	keys := []string{sni}
	pos := -1
	if len(sni) > 1 {
		if i := strings.IndexByte(sni[1:], '.'); i >= 0 {
			pos = i + 1
		}
	}
	for pos >= 0 && pos < len(sni)-1 {
		keys = append(keys, "*"+sni[pos:])
		next := strings.IndexByte(sni[pos+1:], '.')
		if next < 0 {
			break
		}
		pos += 1 + next
	}
	return keys
}

// pickExact keeps the chains naming the first value of want that any chain names; if none does,
// the chains naming no value (any).
func pickExact(cs []*listenerv3.FilterChain, values func(*listenerv3.FilterChainMatch) []string, want []string) []*listenerv3.FilterChain {
	for _, w := range want {
		var out []*listenerv3.FilterChain
		for _, c := range cs {
			for _, v := range values(c.GetFilterChainMatch()) {
				if v == w {
					out = append(out, c)
					break
				}
			}
		}
		if len(out) > 0 {
			return out
		}
	}
	var out []*listenerv3.FilterChain
	for _, c := range cs {
		if len(values(c.GetFilterChainMatch())) == 0 {
			out = append(out, c)
		}
	}
	return out
}

type cidr = netip.Prefix

func cidrs(rs []*corev3.CidrRange) []cidr {
	var out []cidr
	for _, r := range rs {
		ip, err := netip.ParseAddr(r.GetAddressPrefix())
		if err != nil {
			out = append(out, netip.Prefix{}) // invalid: reported by pickCIDR
			continue
		}
		bits := ip.BitLen()
		if r.GetPrefixLen() != nil {
			bits = int(r.GetPrefixLen().GetValue())
		}
		p, err := ip.Prefix(bits)
		if err != nil {
			out = append(out, netip.Prefix{})
			continue
		}
		out = append(out, p)
	}
	return out
}

// pickCIDR keeps the chains with the longest configured prefix containing ip; chains with no
// prefix count as 0.0.0.0/0 and ::/0.
func pickCIDR(cs []*listenerv3.FilterChain, ranges func(*listenerv3.FilterChainMatch) []cidr, ip netip.Addr, what string) ([]*listenerv3.FilterChain, error) {
	best := -1
	var out []*listenerv3.FilterChain
	for _, c := range cs {
		rs := ranges(c.GetFilterChainMatch())
		l := -1
		if len(rs) == 0 {
			l = 0
		}
		for _, p := range rs {
			if !p.IsValid() {
				return nil, fmt.Errorf("chain %s: invalid CIDR range", c.Name)
			}
			if !ip.IsValid() {
				return nil, fmt.Errorf("chain %s matches on the %s IP, which the request does not give", c.Name, what)
			}
			if p.Contains(ip) && p.Bits() > l {
				l = p.Bits()
			}
		}
		switch {
		case l > best:
			best, out = l, []*listenerv3.FilterChain{c}
		case l == best && l >= 0:
			out = append(out, c)
		}
	}
	if best < 0 {
		return nil, nil
	}
	return out, nil
}

// shapes enumerates the connections a client can open to the request's port, so that every chain
// the listener can pick for it is reached: the request's own connection; TLS with and without the
// client's certificate, offering nothing, each ALPN value any chain names, or Istio's lists, with
// no server name or each name any chain names; plaintext, detected as each HTTP version (an HTTP
// request) or as nothing; slow clients when the listener continues past its inspectors' timeout;
// and each source port any chain names.
func (in *Inbound) shapes(r Request) []Conn {
	chains := append([]*listenerv3.FilterChain(nil), in.l.FilterChains...)
	alpns := [][]string{nil, sidecarHTTPALPN, sidecarTCPALPN, {"istio-h2", "istio", "h2"}, {"istio-http/1.0", "istio", "http/1.0"}}
	seenALPN := map[string]bool{}
	snis := []string{""}
	seenSNI := map[string]bool{"": true}
	srcPorts := []uint32{0}
	seenPort := map[uint32]bool{}
	for _, fc := range chains {
		m := fc.GetFilterChainMatch()
		for _, a := range m.GetApplicationProtocols() {
			if !seenALPN[a] {
				seenALPN[a] = true
				alpns = append(alpns, []string{a})
			}
		}
		for _, n := range m.GetServerNames() {
			n = strings.Replace(n, "*", "x", 1)
			if !seenSNI[n] {
				seenSNI[n] = true
				snis = append(snis, n)
			}
		}
		for _, p := range m.GetSourcePorts() {
			if !seenPort[p] {
				seenPort[p] = true
				srcPorts = append(srcPorts, p)
			}
		}
	}
	var out []Conn
	seen := map[string]bool{}
	add := func(c Conn) {
		if k := c.String(); !seen[k] {
			seen[k] = true
			out = append(out, c)
		}
	}
	add(r.conn())
	for _, port := range srcPorts {
		for _, cert := range []bool{true, false} {
			for _, a := range alpns {
				for _, sni := range snis {
					add(Conn{TLS: true, Cert: cert, ALPN: a, SNI: sni, SrcPort: port})
				}
			}
		}
		versions := []string{""}
		if r.http() {
			versions = append(versions, "http/1.0", "http/1.1", "h2c")
		}
		for _, v := range versions {
			add(Conn{HTTPVersion: v, SrcPort: port})
		}
		if in.l.GetContinueOnListenerFiltersTimeout() {
			add(Conn{Slow: true, SrcPort: port})
			add(Conn{TLS: true, Cert: true, Slow: true, SrcPort: port})
		}
	}
	return out
}

// payload is what reaches the filters of a chain.
type payload int

const (
	payloadHTTP   payload = iota // an HTTP request the connection manager parses
	payloadBytes                 // bytes that are not HTTP (a TCP client)
	payloadCipher                // a TLS stream the chain does not terminate
)

// judge runs one connection shape: chain selection, the chain's transport socket, its network
// filters and, for an HTTP connection manager, its HTTP filters.
func (in *Inbound) judge(r Request, conn Conn) (Outcome, error) {
	o := Outcome{Conn: conn}
	f, err := in.factsOf(r, conn)
	if err != nil {
		return o, err
	}
	fc, err := in.selectChain(f)
	if err != nil {
		return o, err
	}
	if fc == nil {
		o.Why = "no filter chain matches: the connection is closed"
		return o, nil
	}
	o.Chain = fc.Name
	if o.Chain == "" {
		o.Chain = "(unnamed)"
	}

	// The transport socket: TLS termination (and client certificate), or none.
	var peer *tlsPeer
	pl := payloadBytes
	if r.http() {
		pl = payloadHTTP
	}
	terminates, requireCert, err := transportOf(fc)
	if err != nil {
		return o, fmt.Errorf("chain %s: %w", o.Chain, err)
	}
	switch {
	case terminates && !conn.TLS:
		o.Why = "the chain terminates TLS; a plaintext client fails the handshake"
		return o, nil
	case terminates && requireCert && !conn.Cert:
		o.Why = "the chain requires a client certificate; the handshake fails without one"
		return o, nil
	case terminates:
		peer = &tlsPeer{}
		if conn.Cert {
			peer.uriSANs = []string{r.principal()}
		}
	case conn.TLS:
		pl = payloadCipher
	}

	cx := &rbacContext{ssl: peer, dstPort: r.Port, dstIP: f.dstIP, srcIP: f.srcIP, sni: f.sni}
	filters := fc.Filters
	for i, nf := range filters {
		if nf.GetConfigDiscovery() != nil {
			return o, fmt.Errorf("chain %s: network filter %s comes from discovery (ECDS), which this evaluator does not model", o.Chain, nf.Name)
		}
		url := nf.GetTypedConfig().GetTypeUrl()
		if url == "" {
			return o, fmt.Errorf("chain %s: network filter %s has no typed config", o.Chain, nf.Name)
		}
		last := i == len(filters)-1
		switch url {
		case typeNetRBAC:
			m, err := in.decode(nf.GetTypedConfig())
			if err != nil {
				return o, fmt.Errorf("chain %s: network filter %s: %w", o.Chain, nf.Name, err)
			}
			rb := m.(*rbacnetv3.RBAC)
			if rb.GetMatcher() != nil {
				return o, fmt.Errorf("chain %s: network RBAC filter %s uses the matcher API, which this evaluator does not model", o.Chain, nf.Name)
			}
			// A network filter sees the connection, never HTTP headers.
			ok, err := evalRBAC(rb.GetRules(), cx)
			if err != nil {
				return o, fmt.Errorf("chain %s: network RBAC filter %s: %w", o.Chain, nf.Name, err)
			}
			if !ok {
				o.Why = "network RBAC filter " + nf.Name + " denies the connection"
				return o, nil
			}
		case typeTCPProxy:
			if !last {
				return o, fmt.Errorf("chain %s: tcp_proxy %s is not the last filter", o.Chain, nf.Name)
			}
			m := &tcpproxyv3.TcpProxy{}
			if err := nf.GetTypedConfig().UnmarshalTo(m); err != nil {
				return o, fmt.Errorf("chain %s: %w", o.Chain, err)
			}
			if m.GetCluster() == "BlackHoleCluster" {
				o.Why = "tcp_proxy to BlackHoleCluster"
				return o, nil
			}
			o.Allowed = true
			o.Why = "tcp_proxy forwards the connection's bytes to " + m.GetCluster()
			if m.GetCluster() == "" {
				o.Why = "tcp_proxy forwards the connection's bytes (weighted or on-demand clusters)"
			}
			return o, nil
		case typeHCM:
			if !last {
				return o, fmt.Errorf("chain %s: the HTTP connection manager %s is not the last filter", o.Chain, nf.Name)
			}
			if pl != payloadHTTP {
				o.Why = "the HTTP connection manager cannot parse the connection's bytes"
				return o, nil
			}
			m, err := in.decode(nf.GetTypedConfig())
			if err != nil {
				return o, fmt.Errorf("chain %s: %w", o.Chain, err)
			}
			return in.judgeHTTP(o, m.(*hcmv3.HttpConnectionManager), r, cx)
		default:
			inner, err := typedURL(nf.GetTypedConfig())
			if err != nil {
				return o, fmt.Errorf("chain %s: network filter %s: %w", o.Chain, nf.Name, err)
			}
			if !passThroughNetwork[inner] {
				return o, fmt.Errorf("chain %s: network filter %s (%s) is not modelled", o.Chain, nf.Name, inner)
			}
		}
	}
	return o, fmt.Errorf("chain %s has no terminal filter", o.Chain)
}

// decode is decodeTyped, once per typed config.
func (in *Inbound) decode(a *anypb.Any) (proto.Message, error) {
	if m, ok := in.decoded[a]; ok {
		return m, nil
	}
	m, err := decodeTyped(a)
	if err != nil {
		return nil, err
	}
	in.decoded[a] = m
	return m, nil
}

// transportOf reports whether a chain terminates TLS and whether it requires a client certificate.
func transportOf(fc *listenerv3.FilterChain) (terminates, requireCert bool, err error) {
	ts := fc.GetTransportSocket()
	if ts == nil {
		return false, false, nil
	}
	switch ts.GetTypedConfig().GetTypeUrl() {
	case typeRawBuffer:
		return false, false, nil
	case typeDownTLS:
		m := &tlsv3.DownstreamTlsContext{}
		if err := ts.GetTypedConfig().UnmarshalTo(m); err != nil {
			return false, false, err
		}
		return true, m.GetRequireClientCertificate().GetValue(), nil
	case "":
		if ts.Name == "envoy.transport_sockets.raw_buffer" || ts.Name == "raw_buffer" {
			return false, false, nil
		}
	}
	return false, false, fmt.Errorf("transport socket %s (%s) is not modelled", ts.Name, ts.GetTypedConfig().GetTypeUrl())
}

// typedURL is the type a filter's config declares: the Any's, or the one a TypedStruct carries.
func typedURL(a *anypb.Any) (string, error) {
	switch a.GetTypeUrl() {
	case typeTypedStr, typeUDPATyped:
		m, err := a.UnmarshalNew()
		if err != nil {
			return "", fmt.Errorf("decode %s: %w", a.GetTypeUrl(), err)
		}
		fd := m.ProtoReflect().Descriptor().Fields().ByName("type_url")
		if fd == nil {
			return "", fmt.Errorf("%s has no type_url", a.GetTypeUrl())
		}
		return m.ProtoReflect().Get(fd).String(), nil
	default:
		return a.GetTypeUrl(), nil
	}
}

// judgeHTTP runs the HTTP filters of a connection manager on the request, in order.
func (in *Inbound) judgeHTTP(o Outcome, h *hcmv3.HttpConnectionManager, r Request, cx *rbacContext) (Outcome, error) {
	rbacNames := map[string]bool{}
	for _, hf := range h.HttpFilters {
		if hf.GetConfigDiscovery() != nil {
			return o, fmt.Errorf("chain %s: HTTP filter %s comes from discovery (ECDS), which this evaluator does not model", o.Chain, hf.Name)
		}
		if hf.GetDisabled() {
			return o, fmt.Errorf("chain %s: HTTP filter %s is disabled by default (routes may enable it), which this evaluator does not model", o.Chain, hf.Name)
		}
		if hf.GetTypedConfig().GetTypeUrl() == typeHTTPRBAC {
			rbacNames[hf.Name] = true
		}
	}
	if err := in.c.checkRoutes(h, rbacNames); err != nil {
		return o, fmt.Errorf("chain %s: %w", o.Chain, err)
	}
	cx = cx.withHeaders(r)
	if r.Headers != nil {
		if _, ok := cx.header("x-forwarded-for"); ok && !h.GetUseRemoteAddress().GetValue() {
			cx.xffSet = true
		}
	}
	for _, hf := range h.HttpFilters {
		url := hf.GetTypedConfig().GetTypeUrl()
		switch url {
		case typeHTTPRBAC:
			m, err := in.decode(hf.GetTypedConfig())
			if err != nil {
				return o, fmt.Errorf("chain %s: HTTP filter %s: %w", o.Chain, hf.Name, err)
			}
			rb := m.(*rbachttpv3.RBAC)
			if rb.GetMatcher() != nil {
				return o, fmt.Errorf("chain %s: HTTP RBAC filter %s uses the matcher API, which this evaluator does not model", o.Chain, hf.Name)
			}
			ok, err := evalRBAC(rb.GetRules(), cx)
			if err != nil {
				return o, fmt.Errorf("chain %s: HTTP RBAC filter %s: %w", o.Chain, hf.Name, err)
			}
			if !ok {
				o.Why = "HTTP RBAC filter " + hf.Name + " denies the request"
				return o, nil
			}
		case typeRouter:
			o.Allowed = true
			o.Why = "the router forwards the request"
			return o, nil
		default:
			inner, err := typedURL(hf.GetTypedConfig())
			if err != nil {
				return o, fmt.Errorf("chain %s: HTTP filter %s: %w", o.Chain, hf.Name, err)
			}
			if !passThroughHTTP[inner] {
				return o, fmt.Errorf("chain %s: HTTP filter %s (%s) is not modelled", o.Chain, hf.Name, inner)
			}
		}
	}
	return o, fmt.Errorf("chain %s: the HTTP filters end without a router", o.Chain)
}

// checkRoutes refuses route configurations that change the RBAC filters per route: a
// typed_per_filter_config for an RBAC filter (RBACPerRoute, or FilterConfig disabling it).
func (c *ProxyConfig) checkRoutes(h *hcmv3.HttpConnectionManager, rbacNames map[string]bool) error {
	var rc *routev3.RouteConfiguration
	switch {
	case h.GetRouteConfig() != nil:
		rc = h.GetRouteConfig()
	case h.GetRds() != nil:
		rc = c.Routes[h.GetRds().GetRouteConfigName()]
		if rc == nil {
			return fmt.Errorf("route configuration %q was not fetched", h.GetRds().GetRouteConfigName())
		}
	case h.GetScopedRoutes() != nil:
		return fmt.Errorf("scoped routes are not modelled")
	default:
		return fmt.Errorf("the HTTP connection manager has no routes")
	}
	check := func(where string, per map[string]*anypb.Any) error {
		for name, a := range per {
			url := a.GetTypeUrl()
			if rbacNames[name] || url == typeRBACRoute {
				return fmt.Errorf("%s overrides RBAC filter %s per route (%s), which this evaluator does not model", where, name, url)
			}
			if url == typeFilterConf {
				fcfg := &routev3.FilterConfig{}
				if err := a.UnmarshalTo(fcfg); err != nil {
					return err
				}
				if fcfg.GetConfig().GetTypeUrl() == typeRBACRoute {
					return fmt.Errorf("%s overrides RBAC filter %s per route, which this evaluator does not model", where, name)
				}
			}
		}
		return nil
	}
	if err := check("route configuration "+rc.Name, rc.GetTypedPerFilterConfig()); err != nil {
		return err
	}
	for _, vh := range rc.VirtualHosts {
		if err := check("virtual host "+vh.Name, vh.GetTypedPerFilterConfig()); err != nil {
			return err
		}
		for _, rt := range vh.Routes {
			if err := check("route "+rt.Name+" of "+vh.Name, rt.GetTypedPerFilterConfig()); err != nil {
				return err
			}
			for _, wc := range rt.GetRoute().GetWeightedClusters().GetClusters() {
				if err := check("weighted cluster "+wc.Name+" of "+vh.Name, wc.GetTypedPerFilterConfig()); err != nil {
					return err
				}
			}
		}
	}
	return nil
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

// Fingerprint identifies the content of what istiod sent (listeners, routes, clusters): the same
// fingerprint on consecutive fetches means the same configuration.
func (c *ProxyConfig) Fingerprint() string {
	var parts []string
	opts := proto.MarshalOptions{Deterministic: true}
	add := func(kind, name string, m proto.Message) {
		b, err := opts.Marshal(m)
		if err != nil {
			parts = append(parts, kind+" "+name+" "+err.Error())
			return
		}
		parts = append(parts, fmt.Sprintf("%s %s %x", kind, name, fnv64(b)))
	}
	for n, l := range c.Listeners {
		add("listener", n, l)
	}
	for n, r := range c.Routes {
		add("route", n, r)
	}
	for n, cl := range c.Clusters {
		add("cluster", n, cl)
	}
	sort.Strings(parts)
	return fmt.Sprintf("%x", fnv64([]byte(strings.Join(parts, "\n"))))
}

func fnv64(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
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
