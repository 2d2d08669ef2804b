//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	xdsmatcher "github.com/cncf/xds/go/xds/type/matcher/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The waypoint as istiod sees it: a proxy of type "waypoint" (the node id istio-agent sends for
// `pilot-agent proxy waypoint`) whose pod carries the labels istiod's waypoint template gives it
// (gateway.networking.k8s.io/gateway-name, gateway.istio.io/managed: istio.io-mesh-controller:
// model.IsWaypointProxy), fetching its CDS and LDS (and any RDS) over ADS like the sidecar helper.
// istiod finds what a waypoint serves from the Services its pod is an endpoint of (the Gateway's
// Service: model.WaypointKeyForProxy) and the Services and workloads bound to that Service's
// hostname by istio.io/use-waypoint.

// node is the identity istio-agent presents for the waypoint's pod.
func (wp Waypoint) node() (*corev3.Node, error) {
	n, err := wp.Proxy.node()
	if err != nil {
		return nil, err
	}
	n.Id = "waypoint" + strings.TrimPrefix(n.Id, "sidecar")
	n.Metadata.Fields["NODE_NAME"] = structpb.NewStringValue("e2e-node")
	n.Metadata.Fields["OWNER"] = structpb.NewStringValue(fmt.Sprintf("kubernetes://apis/apps/v1/namespaces/%s/deployments/%s", wp.Namespace, wp.Gateway))
	n.Metadata.Fields["WORKLOAD_NAME"] = structpb.NewStringValue(wp.Gateway)
	return n, nil
}

// fetchWaypoint connects to istiod over ADS as the waypoint and returns its clusters, listeners
// and the routes they name (waypoints carry their inbound routes inline; RDS only when named).
func fetchWaypoint(ctx context.Context, addr string, wp Waypoint) (*ProxyConfig, error) {
	node, err := wp.node()
	if err != nil {
		return nil, err
	}
	return fetchNode(ctx, addr, node)
}

// fetchNode is fetch for any node identity: CDS, LDS, then the RDS names the listeners' connection
// managers use; a resource that does not decode or validate is NACKed and returned as an error.
func fetchNode(ctx context.Context, addr string, node *corev3.Node) (*ProxyConfig, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dial istiod: %w", err)
	}
	defer func() { _ = conn.Close() }()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, fmt.Errorf("open ADS stream: %w", err)
	}
	cfg := &ProxyConfig{Listeners: map[string]*listenerv3.Listener{}, Routes: map[string]*routev3.RouteConfiguration{}, Clusters: map[string]*clusterv3.Cluster{}}
	get := func(typeURL string, names []string, decode func(*anypb.Any) error) error {
		if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typeURL, ResourceNames: names}); err != nil {
			return fmt.Errorf("request %s: %w", typeURL, err)
		}
		node = nil // only the first request of a stream carries the node
		for {
			resp, err := stream.Recv()
			if err != nil {
				return fmt.Errorf("receive %s: %w", typeURL, err)
			}
			if resp.TypeUrl != typeURL {
				continue
			}
			var bad error
			for _, r := range resp.Resources {
				if err := decode(r); err != nil {
					bad = err
					break
				}
			}
			ack := &discoveryv3.DiscoveryRequest{TypeUrl: typeURL, ResourceNames: names, VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce}
			if bad != nil {
				ack.VersionInfo = ""
				ack.ErrorDetail = statusProto(bad.Error())
			}
			_ = stream.Send(ack)
			return bad
		}
	}
	if err := get(typeCluster, nil, func(a *anypb.Any) error {
		c := &clusterv3.Cluster{}
		if err := a.UnmarshalTo(c); err != nil {
			return fmt.Errorf("decode cluster: %w", err)
		}
		cfg.Clusters[c.Name] = c
		return nil
	}); err != nil {
		return nil, err
	}
	if err := get(typeListener, nil, func(a *anypb.Any) error {
		l := &listenerv3.Listener{}
		if err := a.UnmarshalTo(l); err != nil {
			return fmt.Errorf("decode listener: %w", err)
		}
		if err := checkFilters(l); err != nil {
			return fmt.Errorf("listener %s: %w", l.Name, err)
		}
		cfg.Listeners[l.Name] = l
		return nil
	}); err != nil {
		return nil, err
	}
	var names []string
	for _, l := range cfg.Listeners {
		for _, fc := range l.FilterChains {
			if h := hcmOf(fc); h != nil && h.GetRds() != nil {
				names = append(names, h.GetRds().RouteConfigName)
			}
		}
	}
	if names = uniq(names); len(names) == 0 {
		return cfg, nil
	}
	if err := get(typeRoute, names, func(a *anypb.Any) error {
		r := &routev3.RouteConfiguration{}
		if err := a.UnmarshalTo(r); err != nil {
			return fmt.Errorf("decode route configuration: %w", err)
		}
		cfg.Routes[r.Name] = r
		return nil
	}); err != nil {
		return nil, err
	}
	return cfg, nil
}

// The waypoint's inbound path (pilot/pkg/networking/core/listener_waypoint.go buildWaypointInbound):
// the client's ztunnel opens an HBONE tunnel (mTLS with the source workload's certificate, a
// CONNECT to the destination VIP:port) to connect_terminate on 15008, whose connection manager
// routes CONNECT to the internal listener main_internal; there a filter chain matcher picks the
// chain of the destination Service and port (destination IP, then port, then, on sniffed ports,
// the protocol the HTTP inspector detects), whose filters (the RBAC filters of policies targeting
// the Service, the connection manager with the Service's routes inline) decide. The RBAC filters
// of a waypoint match the source through the filter state io.istio.peer_principal (the principal
// of the HBONE peer's certificate: authz builder UseFilterState) instead of the TLS session, which
// main_internal does not have.

const (
	listenerConnectTerminate = "connect_terminate"
	listenerMainInternal     = "main_internal"
	peerPrincipalKey         = "io.istio.peer_principal"

	typeSetFilterStateNet  = "type.googleapis.com/envoy.extensions.filters.network.set_filter_state.v3.Config"
	typeSetFilterStateHTTP = "type.googleapis.com/envoy.extensions.filters.http.set_filter_state.v3.Config"
	typePeerMetadataHTTP   = "type.googleapis.com/io.istio.http.peer_metadata.Config"
	typeDstIPInput         = "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.DestinationIPInput"
	typeDstPortInput       = "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.DestinationPortInput"
	typeAppProtocolInput   = "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.ApplicationProtocolInput"
	typeIPMatcher          = "type.googleapis.com/xds.type.matcher.v3.IPMatcher"
	typeStringValue        = "type.googleapis.com/google.protobuf.StringValue"
)

// WaypointInbound is a waypoint's inbound path, checked for what the evaluator can model.
type WaypointInbound struct {
	c             *ProxyConfig
	l             *listenerv3.Listener // main_internal
	httpInspector *listenerv3.ListenerFilter
	tlsInspector  *listenerv3.ListenerFilter
	chains        map[string]*listenerv3.FilterChain
}

// WaypointInbound checks connect_terminate (mTLS requiring the client's certificate, CONNECT
// routed to main_internal, no filter that decides) and main_internal (a filter chain matcher this
// evaluator reads; listener filters it knows), and returns the waypoint's judge.
func (c *ProxyConfig) WaypointInbound() (*WaypointInbound, error) {
	if err := checkConnectTerminate(c.Listeners[listenerConnectTerminate]); err != nil {
		return nil, err
	}
	l := c.Listeners[listenerMainInternal]
	if l == nil {
		return nil, fmt.Errorf("no %s listener", listenerMainInternal)
	}
	if err := validateMatchers(l); err != nil {
		return nil, fmt.Errorf("%s: %w", listenerMainInternal, err)
	}
	if l.GetFilterChainMatcher() == nil {
		return nil, fmt.Errorf("%s has no filter chain matcher", listenerMainInternal)
	}
	w := &WaypointInbound{c: c, l: l, chains: map[string]*listenerv3.FilterChain{}}
	for _, lf := range l.ListenerFilters {
		switch lf.GetTypedConfig().GetTypeUrl() {
		case typeOriginalDst:
		case typeHTTPInspector:
			w.httpInspector = lf
		case typeTLSInspector:
			w.tlsInspector = lf
		default:
			return nil, fmt.Errorf("%s: listener filter %s (%s) is not modelled", listenerMainInternal, lf.Name, lf.GetTypedConfig().GetTypeUrl())
		}
	}
	for _, fc := range l.FilterChains {
		if fc.GetFilterChainMatch() != nil || fc.GetTransportSocket() != nil {
			return nil, fmt.Errorf("%s: chain %s has a filter chain match or a transport socket, which this evaluator does not model", listenerMainInternal, fc.Name)
		}
		w.chains[fc.Name] = fc
	}
	if l.DefaultFilterChain != nil {
		return nil, fmt.Errorf("%s has a default filter chain, which this evaluator does not model", listenerMainInternal)
	}
	return w, nil
}

// checkConnectTerminate: the HBONE listener must authenticate the peer (so that the principal the
// RBAC filters read is the source's), tunnel every CONNECT to main_internal and decide nothing
// itself (layered waypoint policies are not modelled).
func checkConnectTerminate(l *listenerv3.Listener) error {
	if l == nil {
		return fmt.Errorf("no %s listener", listenerConnectTerminate)
	}
	if len(l.FilterChains) != 1 || l.DefaultFilterChain != nil {
		return fmt.Errorf("%s: %d filter chains, want 1", listenerConnectTerminate, len(l.FilterChains))
	}
	fc := l.FilterChains[0]
	terminates, requireCert, err := transportOf(fc)
	if err != nil {
		return fmt.Errorf("%s: %w", listenerConnectTerminate, err)
	}
	if !terminates || !requireCert {
		return fmt.Errorf("%s does not terminate mTLS requiring a client certificate", listenerConnectTerminate)
	}
	if len(fc.Filters) != 1 {
		return fmt.Errorf("%s: %d network filters, want the connection manager only", listenerConnectTerminate, len(fc.Filters))
	}
	h := hcmOf(fc)
	if h == nil || h.GetRouteConfig() == nil {
		return fmt.Errorf("%s: no connection manager with inline routes", listenerConnectTerminate)
	}
	for _, vh := range h.GetRouteConfig().VirtualHosts {
		for _, r := range vh.Routes {
			if r.GetMatch().GetConnectMatcher() == nil || r.GetRoute().GetCluster() != listenerMainInternal {
				return fmt.Errorf("%s: route %q does not tunnel CONNECT to %s", listenerConnectTerminate, r.Name, listenerMainInternal)
			}
		}
	}
	for _, hf := range h.HttpFilters {
		url, err := typedURL(hf.GetTypedConfig())
		if err != nil {
			return fmt.Errorf("%s: HTTP filter %s: %w", listenerConnectTerminate, hf.Name, err)
		}
		switch url {
		case typePeerMetadataHTTP, typeSetFilterStateHTTP, typeRouter:
		default:
			return fmt.Errorf("%s: HTTP filter %s (%s) is not modelled", listenerConnectTerminate, hf.Name, url)
		}
	}
	return nil
}

// matchFacts is what main_internal's matcher reads.
type matchFacts struct {
	dstIP   netip.Addr
	dstPort uint32
	appProt string // the HTTP inspector's result ("http/1.1", "h2c", "http/1.0") or ""
}

// selectChain runs main_internal's filter chain matcher; nil when nothing matches (Envoy closes
// the connection).
func (w *WaypointInbound) selectChain(f matchFacts) (*listenerv3.FilterChain, error) {
	name, ok, err := evalMatcher(w.l.GetFilterChainMatcher(), f)
	if err != nil || !ok {
		return nil, err
	}
	fc := w.chains[name]
	if fc == nil {
		return nil, fmt.Errorf("the filter chain matcher names chain %q, which %s does not have", name, listenerMainInternal)
	}
	return fc, nil
}

// evalMatcher is the matching API's tree for the inputs Istio uses on waypoints: an exact map on
// the destination port or the application protocol ("'h2c'", Envoy's quoted list), a custom IP
// matcher on the destination IP (the longest matching range first); on no match, on_no_match.
// Everything else is refused.
func evalMatcher(m *xdsmatcher.Matcher, f matchFacts) (string, bool, error) {
	tree := m.GetMatcherTree()
	if tree == nil {
		return "", false, fmt.Errorf("matcher %v is not a matcher tree, which this evaluator does not model", m)
	}
	var found *xdsmatcher.Matcher_OnMatch
	input := tree.GetInput().GetTypedConfig().GetTypeUrl()
	switch {
	case tree.GetExactMatchMap() != nil:
		var v string
		switch input {
		case typeDstPortInput:
			v = fmt.Sprint(f.dstPort)
		case typeAppProtocolInput:
			if f.appProt != "" {
				v = "'" + f.appProt + "'"
			}
		default:
			return "", false, fmt.Errorf("matcher input %s is not modelled", input)
		}
		if om, ok := tree.GetExactMatchMap().GetMap()[v]; ok && v != "" {
			found = om
		}
	case tree.GetCustomMatch() != nil:
		if input != typeDstIPInput || tree.GetCustomMatch().GetTypedConfig().GetTypeUrl() != typeIPMatcher {
			return "", false, fmt.Errorf("custom matcher %s on %s is not modelled", tree.GetCustomMatch().GetTypedConfig().GetTypeUrl(), input)
		}
		ipm := &xdsmatcher.IPMatcher{}
		if err := tree.GetCustomMatch().GetTypedConfig().UnmarshalTo(ipm); err != nil {
			return "", false, err
		}
		type cand struct {
			bits int
			om   *xdsmatcher.Matcher_OnMatch
		}
		var cands []cand
		for _, rm := range ipm.RangeMatchers {
			if rm.GetExclusive() {
				return "", false, fmt.Errorf("exclusive IP range matchers are not modelled")
			}
			best := -1
			var rs []*corev3.CidrRange
			for _, r := range rm.Ranges {
				rs = append(rs, &corev3.CidrRange{AddressPrefix: r.GetAddressPrefix(), PrefixLen: r.GetPrefixLen()})
			}
			for _, p := range cidrs(rs) {
				if !p.IsValid() {
					return "", false, fmt.Errorf("invalid IP range in the filter chain matcher")
				}
				if p.Contains(f.dstIP) && p.Bits() > best {
					best = p.Bits()
				}
			}
			if best >= 0 {
				cands = append(cands, cand{best, rm.OnMatch})
			}
		}
		sort.SliceStable(cands, func(i, j int) bool { return cands[i].bits > cands[j].bits })
		// non-exclusive ranges: the longest matching range first, the next ones while they do not match
		for _, c := range cands {
			name, ok, err := evalOnMatch(c.om, f)
			if err != nil || ok {
				return name, ok, err
			}
		}
	default:
		return "", false, fmt.Errorf("matcher tree type %T is not modelled", tree.GetTreeType())
	}
	if found != nil {
		name, ok, err := evalOnMatch(found, f)
		if err != nil || ok {
			return name, ok, err
		}
		if m.GetOnNoMatch() != nil {
			return "", false, fmt.Errorf("a nested matcher without a match under a matcher with on_no_match is not modelled")
		}
		return "", false, nil
	}
	if m.GetOnNoMatch() != nil {
		return evalOnMatch(m.GetOnNoMatch(), f)
	}
	return "", false, nil
}

func evalOnMatch(om *xdsmatcher.Matcher_OnMatch, f matchFacts) (string, bool, error) {
	switch {
	case om.GetMatcher() != nil:
		return evalMatcher(om.GetMatcher(), f)
	case om.GetAction() != nil:
		a := om.GetAction().GetTypedConfig()
		if a.GetTypeUrl() != typeStringValue {
			return "", false, fmt.Errorf("matcher action %s is not modelled", a.GetTypeUrl())
		}
		v := &wrapperspb.StringValue{}
		if err := a.UnmarshalTo(v); err != nil {
			return "", false, err
		}
		return v.Value, true, nil
	default:
		return "", false, fmt.Errorf("empty on_match")
	}
}

// Verdict decides whether the waypoint lets the request through. r.From is the source workload
// (its ztunnel tunnels with its certificate), r.To the destination Service's VIP and r.Port the
// Service port (the HBONE target); an HTTP request is detected as HTTP/1.1.
func (w *WaypointInbound) Verdict(r Request) (bool, error) {
	v := ""
	if r.http() {
		v = "http/1.1"
	}
	o, err := w.Judge(r, v)
	return o.Allowed, err
}

// Sweep judges the request as every client can send it inside its tunnel: as HTTP/1.1, h2c,
// HTTP/1.0 or undetected (a slow or non-HTTP client) for an HTTP request; as bytes for TCP.
func (w *WaypointInbound) Sweep(r Request) ([]Outcome, error) {
	versions := []string{""}
	if r.http() {
		versions = []string{"http/1.1", "h2c", "http/1.0", ""}
	}
	var out []Outcome
	for _, v := range versions {
		o, err := w.Judge(r, v)
		if err != nil {
			return nil, fmt.Errorf("%s detected as %q: %w", r, v, err)
		}
		out = append(out, o)
	}
	return out, nil
}

// Judge runs the request with the HTTP inspector detecting httpVersion ("" nothing) where it runs.
func (w *WaypointInbound) Judge(r Request, httpVersion string) (Outcome, error) {
	o := Outcome{Conn: Conn{TLS: true, Cert: true, HTTPVersion: httpVersion}}
	ip, err := netip.ParseAddr(r.To)
	if err != nil {
		return o, fmt.Errorf("destination (Service VIP) %q: %w", r.To, err)
	}
	f := matchFacts{dstIP: ip, dstPort: r.Port}
	on, err := inspectorOn(w.httpInspector, r.Port)
	if err != nil {
		return o, err
	}
	if on && r.http() {
		f.appProt = httpVersion
	}
	fc, err := w.selectChain(f)
	if err != nil {
		return o, err
	}
	if fc == nil {
		o.Why = "no filter chain of " + listenerMainInternal + " matches: the connection is closed"
		return o, nil
	}
	// The chain as the sidecar evaluator can run it: the peer principal the RBAC filters read from
	// filter state becomes the TLS peer's (same string, same matcher), on a chain terminating mTLS.
	synth, err := peerPrincipalAsTLS(fc)
	if err != nil {
		return o, fmt.Errorf("chain %s: %w", fc.Name, err)
	}
	in := &Inbound{c: w.c, l: &listenerv3.Listener{Name: listenerMainInternal, FilterChains: []*listenerv3.FilterChain{synth}}, decoded: map[*anypb.Any]proto.Message{}}
	out, err := in.judge(r, Conn{TLS: true, Cert: true})
	out.Conn = o.Conn
	return out, err
}

// peerPrincipalAsTLS returns a copy of a main_internal chain in which every RBAC principal on the
// filter state io.istio.peer_principal is the authenticated principal of a TLS peer, on a chain
// that terminates mTLS; the set_filter_state network filters (connect_authority: they record the
// CONNECT authority, deciding nothing) are dropped. A chain whose RBAC already reads a TLS
// principal, or another filter state key, is refused: main_internal has no TLS session.
func peerPrincipalAsTLS(fc *listenerv3.FilterChain) (*listenerv3.FilterChain, error) {
	out := proto.Clone(fc).(*listenerv3.FilterChain)
	out.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{
		TypedConfig: mustAnyOf(&tlsv3.DownstreamTlsContext{RequireClientCertificate: wrapperspb.Bool(true)})}}
	var filters []*listenerv3.Filter
	for _, nf := range out.Filters {
		switch nf.GetTypedConfig().GetTypeUrl() {
		case typeSetFilterStateNet:
			continue
		case typeNetRBAC:
			m := &rbacnetv3.RBAC{}
			if err := nf.GetTypedConfig().UnmarshalTo(m); err != nil {
				return nil, err
			}
			if err := rewritePeerPrincipals(m.GetRules()); err != nil {
				return nil, fmt.Errorf("network filter %s: %w", nf.Name, err)
			}
			if err := rewritePeerPrincipals(m.GetShadowRules()); err != nil {
				return nil, fmt.Errorf("network filter %s: %w", nf.Name, err)
			}
			nf.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAnyOf(m)}
		case typeHCM:
			h := &hcmv3.HttpConnectionManager{}
			if err := nf.GetTypedConfig().UnmarshalTo(h); err != nil {
				return nil, err
			}
			for _, hf := range h.HttpFilters {
				if hf.GetTypedConfig().GetTypeUrl() != typeHTTPRBAC {
					continue
				}
				m := &rbachttpv3.RBAC{}
				if err := hf.GetTypedConfig().UnmarshalTo(m); err != nil {
					return nil, err
				}
				if err := rewritePeerPrincipals(m.GetRules()); err != nil {
					return nil, fmt.Errorf("HTTP filter %s: %w", hf.Name, err)
				}
				if err := rewritePeerPrincipals(m.GetShadowRules()); err != nil {
					return nil, fmt.Errorf("HTTP filter %s: %w", hf.Name, err)
				}
				hf.ConfigType = &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAnyOf(m)}
			}
			nf.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAnyOf(h)}
		}
		filters = append(filters, nf)
	}
	out.Filters = filters
	return out, nil
}

// rewritePeerPrincipals turns filter_state io.istio.peer_principal principals into authenticated
// principals with the same matcher.
func rewritePeerPrincipals(rules *rbacv3.RBAC) error {
	if rules == nil {
		return nil
	}
	var walk func(p *rbacv3.Principal) error
	walk = func(p *rbacv3.Principal) error {
		switch id := p.GetIdentifier().(type) {
		case *rbacv3.Principal_AndIds:
			for _, q := range id.AndIds.GetIds() {
				if err := walk(q); err != nil {
					return err
				}
			}
		case *rbacv3.Principal_OrIds:
			for _, q := range id.OrIds.GetIds() {
				if err := walk(q); err != nil {
					return err
				}
			}
		case *rbacv3.Principal_NotId:
			return walk(id.NotId)
		case *rbacv3.Principal_Authenticated_:
			return fmt.Errorf("an authenticated principal on %s, which has no TLS session", listenerMainInternal)
		case *rbacv3.Principal_FilterState:
			if id.FilterState.GetKey() != peerPrincipalKey || id.FilterState.GetStringMatch() == nil {
				return fmt.Errorf("filter state principal %s is not modelled", id.FilterState.GetKey())
			}
			p.Identifier = &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: id.FilterState.GetStringMatch()}}
		}
		return nil
	}
	for _, pol := range rules.GetPolicies() {
		for _, p := range pol.GetPrincipals() {
			if err := walk(p); err != nil {
				return err
			}
		}
	}
	return nil
}

func mustAnyOf(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}

// WaypointChain is the name of the waypoint's chain for a Service port (listener_waypoint.go:
// "inbound-vip|<port>|<http|tcp>|<host>").
func WaypointChain(proto, host string, port uint32) string {
	return fmt.Sprintf("inbound-vip|%d|%s|%s", port, proto, host)
}

// WaypointRoutes renders the routes of the waypoint's HTTP chain for a Service port, in order, as
// "<match> -> <cluster>=<weight> ..." lines (see routeLines).
func (c *ProxyConfig) WaypointRoutes(host string, port uint32) ([]string, error) {
	l := c.Listeners[listenerMainInternal]
	if l == nil {
		return nil, fmt.Errorf("no %s listener", listenerMainInternal)
	}
	name := WaypointChain("http", host, port)
	var have []string
	for _, fc := range l.FilterChains {
		have = append(have, fc.Name)
		if fc.Name != name {
			continue
		}
		h := hcmOf(fc)
		if h == nil {
			return nil, fmt.Errorf("chain %s has no connection manager", name)
		}
		rc := h.GetRouteConfig()
		if h.GetRds() != nil {
			rc = c.Routes[h.GetRds().GetRouteConfigName()]
		}
		if rc == nil || len(rc.VirtualHosts) != 1 {
			return nil, fmt.Errorf("chain %s: want one virtual host, have %v", name, rc)
		}
		return routeLines(rc.VirtualHosts[0]), nil
	}
	return nil, fmt.Errorf("the waypoint has no chain %s; it has %v", name, have)
}

// HasWaypointRBAC reports whether the waypoint's HTTP chain for a Service port runs an RBAC filter
// with rules (a policy targeting the Service is enforced there).
func (c *ProxyConfig) HasWaypointRBAC(host string, port uint32) bool {
	l := c.Listeners[listenerMainInternal]
	if l == nil {
		return false
	}
	for _, fc := range l.FilterChains {
		if fc.Name != WaypointChain("http", host, port) {
			continue
		}
		for _, hf := range hcmOf(fc).GetHttpFilters() {
			if m, _ := decodeTyped(hf.GetTypedConfig()); m != nil {
				if r, ok := m.(*rbachttpv3.RBAC); ok && r.GetRules() != nil {
					return true
				}
			}
		}
	}
	return false
}

// routeLines renders a virtual host's routes: matches (method, headers, path prefix, exact path,
// path regex, query parameters; "default" when none) then the clusters and their weights.
func routeLines(vh *routev3.VirtualHost) []string {
	var lines []string
	for _, r := range vh.Routes {
		var match []string
		rm := r.GetMatch()
		for _, h := range rm.GetHeaders() {
			match = append(match, fmt.Sprintf("header %s=%s", h.Name, headerText(h)))
		}
		if p := rm.GetPrefix(); p != "" && p != "/" {
			match = append(match, "prefix "+p)
		}
		if p := rm.GetPathSeparatedPrefix(); p != "" {
			match = append(match, "prefix "+p+"/")
		}
		if p := rm.GetPath(); p != "" {
			match = append(match, "path "+p)
		}
		if re := rm.GetSafeRegex().GetRegex(); re != "" {
			match = append(match, "path ~ "+re)
		}
		for _, q := range rm.GetQueryParameters() {
			match = append(match, fmt.Sprintf("query %s=%s", q.Name, q.GetStringMatch().String()))
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
		default:
			lines = append(lines, m+" -> (other route action)")
		}
	}
	return lines
}

// expectWaypointAccess waits until the waypoint's config has settled and gives every request its
// expected verdict. Requests go to a Service: r.To is set to the VIP of svcNamespace/svcName when
// empty, r.Port is the Service port. An allowed request must be allowed as HTTP/1.1; a denied one
// must be denied however the client's bytes are detected (Sweep), any shape that gets through is
// reported as an over-allow.
func (cl *cluster) expectWaypointAccess(step string, wp Waypoint, svcNamespace, svcName string, checks ...check) {
	cl.t.Helper()
	vip := cl.serviceVIP(svcNamespace, svcName)
	var want []string
	for _, c := range checks {
		want = append(want, verdictLine(c.Request, c.allow))
	}
	cl.expectLines(step, fmt.Sprintf("waypoint %s/%s for %s/%s", wp.Namespace, wp.Gateway, svcNamespace, svcName), want, func() (observation, error) {
		cfg, err := fetchWaypoint(context.Background(), cl.istiodGRPC, wp)
		if err != nil {
			return observation{}, err
		}
		in, err := cfg.WaypointInbound()
		if err != nil {
			return observation{}, err
		}
		var got []string
		for _, c := range checks {
			r := c.Request
			if r.To == "" {
				r.To = vip
			}
			ok, err := in.Verdict(r)
			if err != nil {
				return observation{}, fmt.Errorf("%s: %w", r, err)
			}
			outcomes, err := in.Sweep(r)
			if err != nil {
				return observation{}, err
			}
			line := verdictLine(c.Request, ok)
			if !c.allow && !ok {
				var leaks []string
				for _, o := range outcomes {
					if o.Allowed {
						leaks = append(leaks, o.String())
					}
				}
				if len(leaks) > 0 {
					line = "ALLOW " + c.String() + " (over-allow: " + strings.Join(leaks, "; ") + ")"
				}
			}
			got = append(got, line)
		}
		return observation{lines: got, config: cfg.Fingerprint()}, nil
	})
}

// expectWaypointRoutes waits until the waypoint routes a Service port as wanted (WaypointRoutes
// lines), on a settled config.
func (cl *cluster) expectWaypointRoutes(step string, wp Waypoint, host string, port uint32, want ...string) {
	cl.t.Helper()
	cl.expectLines(step, fmt.Sprintf("routes of waypoint %s/%s for %s:%d", wp.Namespace, wp.Gateway, host, port), want, func() (observation, error) {
		cfg, err := fetchWaypoint(context.Background(), cl.istiodGRPC, wp)
		if err != nil {
			return observation{}, err
		}
		lines, err := cfg.WaypointRoutes(host, port)
		return observation{lines: lines, config: cfg.Fingerprint()}, err
	})
}

// waypointCluster is the cluster a waypoint routes a Service's HTTP port to
// (getWaypointDestinationCluster): "inbound-vip|<port>|http|<host>" when the same waypoint serves
// that Service (istio.io/use-waypoint on it or its namespace), else "outbound|<port>||<host>".
func waypointCluster(svc, namespace string, port uint32, servedBySameWaypoint bool) string {
	host := svc + "." + namespace + ".svc.cluster.local"
	if servedBySameWaypoint {
		return WaypointChain("http", host, port)
	}
	return fmt.Sprintf("outbound|%d||%s", port, host)
}

// WaypointWatch is a long-lived waypoint proxy: one ADS stream (CDS and LDS, as Envoy subscribes)
// that sees every config istiod pushes.
type WaypointWatch struct {
	mu      sync.Mutex
	cur     *ProxyConfig
	updates int
	err     error
	cancel  context.CancelFunc
	done    chan struct{}
}

// watchWaypoint connects as the waypoint; onConfig (may be nil) is called, in order, with every
// config from the first one holding both clusters and listeners. Waypoint routes are inline: a
// listener naming RDS routes fails the watch. It stops at the end of the test, or with Stop.
func (cl *cluster) watchWaypoint(wp Waypoint, onConfig func(*ProxyConfig)) *WaypointWatch {
	cl.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &WaypointWatch{cancel: cancel, done: make(chan struct{})}
	fail := func(err error) {
		if ctx.Err() == nil {
			w.mu.Lock()
			w.err = err
			w.mu.Unlock()
		}
	}
	node, err := wp.node()
	must(cl.t, err)
	conn, err := grpc.NewClient(cl.istiodGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(cl.t, err)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		_ = conn.Close()
		cancel()
		cl.t.Fatal(err)
	}
	go func() {
		defer close(w.done)
		defer func() { _ = conn.Close() }()
		for _, t := range []string{typeCluster, typeListener} {
			if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: t}); err != nil {
				fail(err)
				return
			}
		}
		cur := &ProxyConfig{Routes: map[string]*routev3.RouteConfiguration{}}
		for {
			resp, err := stream.Recv()
			if err != nil {
				fail(err)
				return
			}
			var bad error
			switch resp.TypeUrl {
			case typeCluster:
				cs := map[string]*clusterv3.Cluster{}
				for _, r := range resp.Resources {
					c := &clusterv3.Cluster{}
					if bad = r.UnmarshalTo(c); bad != nil {
						break
					}
					cs[c.Name] = c
				}
				if bad == nil {
					cur = &ProxyConfig{Listeners: cur.Listeners, Clusters: cs, Routes: cur.Routes}
				}
			case typeListener:
				ls := map[string]*listenerv3.Listener{}
				for _, r := range resp.Resources {
					l := &listenerv3.Listener{}
					if bad = r.UnmarshalTo(l); bad == nil {
						bad = checkFilters(l)
					}
					if bad == nil {
						for _, fc := range l.FilterChains {
							if h := hcmOf(fc); h != nil && h.GetRds() != nil {
								bad = fmt.Errorf("listener %s names RDS routes %s, which the waypoint watch does not fetch", l.Name, h.GetRds().GetRouteConfigName())
							}
						}
					}
					if bad != nil {
						break
					}
					ls[l.Name] = l
				}
				if bad == nil {
					cur = &ProxyConfig{Listeners: ls, Clusters: cur.Clusters, Routes: cur.Routes}
				}
			}
			ack := &discoveryv3.DiscoveryRequest{TypeUrl: resp.TypeUrl, VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce}
			if bad != nil {
				ack.VersionInfo, ack.ErrorDetail = "", statusProto(bad.Error())
			}
			if err := stream.Send(ack); err != nil {
				fail(err)
				return
			}
			if bad != nil {
				fail(bad)
				return
			}
			if cur.Listeners == nil || cur.Clusters == nil {
				continue
			}
			w.mu.Lock()
			w.cur, w.updates = cur, w.updates+1
			w.mu.Unlock()
			if onConfig != nil {
				onConfig(cur)
			}
		}
	}()
	cl.t.Cleanup(func() { _ = w.Stop() })
	return w
}

// Current is the latest config (nil before the first).
func (w *WaypointWatch) Current() *ProxyConfig {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cur
}

// Updates counts the configs seen.
func (w *WaypointWatch) Updates() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.updates
}

// Stop ends the watch; it returns the stream's error if it failed before (a NACK included).
func (w *WaypointWatch) Stop() error {
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// WaypointGuard watches every config istiod pushes to a waypoint for requests that must never get
// through.
type WaypointGuard struct {
	w          *WaypointWatch
	mu         sync.Mutex
	violations []string
}

// guardWaypoint judges the requests (to svcNamespace/svcName's VIP when r.To is empty, r.Port the
// Service port) on every config the waypoint receives: one that gets through on any shape (Sweep)
// is a violation, and so is a config the evaluator cannot judge.
func (cl *cluster) guardWaypoint(wp Waypoint, svcNamespace, svcName string, reqs ...Request) *WaypointGuard {
	cl.t.Helper()
	vip := cl.serviceVIP(svcNamespace, svcName)
	g := &WaypointGuard{}
	g.w = cl.watchWaypoint(wp, func(cfg *ProxyConfig) {
		var bad []string
		in, err := cfg.WaypointInbound()
		if err != nil {
			bad = append(bad, fmt.Sprintf("config %s: %v", cfg.Fingerprint(), err))
		}
		for _, r := range reqs {
			if in == nil {
				break
			}
			if r.To == "" {
				r.To = vip
			}
			out, err := in.Sweep(r)
			if err != nil {
				bad = append(bad, fmt.Sprintf("config %s: %v", cfg.Fingerprint(), err))
				continue
			}
			for _, o := range out {
				if o.Allowed {
					bad = append(bad, fmt.Sprintf("config %s: ALLOW %s (%s)", cfg.Fingerprint(), r, o))
					break
				}
			}
		}
		g.mu.Lock()
		g.violations = append(g.violations, bad...)
		g.mu.Unlock()
	})
	return g
}

// Stop ends the guard and returns its violations (a failed stream included).
func (g *WaypointGuard) Stop() []string {
	err := g.w.Stop()
	g.mu.Lock()
	defer g.mu.Unlock()
	out := append([]string(nil), g.violations...)
	if err != nil {
		out = append(out, "the waypoint stream failed: "+err.Error())
	}
	return out
}
