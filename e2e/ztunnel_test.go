//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"
)

// A fake ztunnel: the delta xDS client ztunnel runs against istiod (ztunnel src/xds/client.rs: one
// DeltaAggregatedResources stream, a wildcard subscription to Address and Authorization, every
// response ACKed or NACKed) and the L4 verdict ztunnel gives an inbound connection (src/state.rs
// assert_rbac, src/rbac.rs Authorization::matches), so the suite judges what istiod sends ztunnel
// the way ztunnel would enforce it.

const (
	typeAddress       = "type.googleapis.com/istio.workload.Address"
	typeAuthorization = "type.googleapis.com/istio.security.Authorization"

	trustDomain = "cluster.local"
)

// ztunnelNode is what ztunnel presents (client.rs node(): id "ztunnel~<ip>~<pod>.<ns>~<ns>.svc.
// cluster.local", metadata NAME, NAMESPACE, INSTANCE_IPS, NODE_NAME and its proxy metadata).
func ztunnelNode() (*corev3.Node, error) {
	md, err := structpb.NewStruct(map[string]any{
		"NAME": "ztunnel-e2e", "NAMESPACE": "istio-system", "INSTANCE_IPS": "10.244.0.2", "NODE_NAME": "e2e-node",
		"CLUSTER_ID": "Kubernetes", "ISTIO_VERSION": proxyIstioVersion,
	})
	if err != nil {
		return nil, err
	}
	return &corev3.Node{Id: "ztunnel~10.244.0.2~ztunnel-e2e.istio-system~istio-system.svc.cluster.local", Metadata: md}, nil
}

// ZtunnelState is what istiod has sent one ztunnel.
type ZtunnelState struct {
	Workloads map[string]*workloadapi.Workload   // by resource name (the workload's uid)
	Services  map[string]*workloadapi.Service    // by resource name ("namespace/hostname")
	Policies  map[string]*security.Authorization // by resource name ("namespace/name")
}

func newZtunnelState() *ZtunnelState {
	return &ZtunnelState{Workloads: map[string]*workloadapi.Workload{}, Services: map[string]*workloadapi.Service{},
		Policies: map[string]*security.Authorization{}}
}

// clone is a copy sharing the (never mutated) resources.
func (s *ZtunnelState) clone() *ZtunnelState {
	out := newZtunnelState()
	for k, v := range s.Workloads {
		out.Workloads[k] = v
	}
	for k, v := range s.Services {
		out.Services[k] = v
	}
	for k, v := range s.Policies {
		out.Policies[k] = v
	}
	return out
}

// apply takes one delta response: its resources added or replaced, its removed names dropped. A
// resource ztunnel would reject (does not decode, or fails ztunnel's conversion) is an error, and
// nothing of the response is applied (ztunnel NACKs it).
func (s *ZtunnelState) apply(resp *discoveryv3.DeltaDiscoveryResponse) error {
	next := s.clone()
	for _, name := range resp.RemovedResources {
		switch resp.TypeUrl {
		case typeAddress:
			delete(next.Workloads, name)
			delete(next.Services, name)
		case typeAuthorization:
			delete(next.Policies, name)
		}
	}
	for _, r := range resp.Resources {
		switch resp.TypeUrl {
		case typeAddress:
			a := &workloadapi.Address{}
			if err := r.GetResource().UnmarshalTo(a); err != nil {
				return fmt.Errorf("address %s: %w", r.Name, err)
			}
			delete(next.Workloads, r.Name)
			delete(next.Services, r.Name)
			switch {
			case a.GetWorkload() != nil:
				next.Workloads[r.Name] = a.GetWorkload()
			case a.GetService() != nil:
				next.Services[r.Name] = a.GetService()
			default:
				return fmt.Errorf("address %s is neither a workload nor a service", r.Name)
			}
		case typeAuthorization:
			p := &security.Authorization{}
			if err := r.GetResource().UnmarshalTo(p); err != nil {
				return fmt.Errorf("authorization %s: %w", r.Name, err)
			}
			if err := checkAuthorization(p); err != nil {
				return fmt.Errorf("authorization %s: %w", r.Name, err)
			}
			next.Policies[r.Name] = p
		default:
			return fmt.Errorf("unexpected type %s", resp.TypeUrl)
		}
	}
	*s = *next
	return nil
}

// checkAuthorization is ztunnel's conversion of a policy (rbac.rs TryFrom<XdsRbac>): an unknown
// scope or action fails it.
func checkAuthorization(p *security.Authorization) error {
	if _, ok := security.Scope_name[int32(p.Scope)]; !ok {
		return fmt.Errorf("unknown scope %d", p.Scope)
	}
	if _, ok := security.Action_name[int32(p.Action)]; !ok {
		return fmt.Errorf("unknown action %d", p.Action)
	}
	return nil
}

// ztunnelStream is one delta ADS stream of the fake ztunnel.
type ztunnelStream struct {
	conn   *grpc.ClientConn
	stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	state  *ZtunnelState
	seen   map[string]bool // types that got their first response
}

// dialZtunnel opens the stream and sends ztunnel's two initial wildcard requests.
func dialZtunnel(ctx context.Context, addr string) (*ztunnelStream, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dial istiod: %w", err)
	}
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("open delta ADS stream: %w", err)
	}
	node, err := ztunnelNode()
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	for _, t := range []string{typeAddress, typeAuthorization} {
		// an empty subscription list is a wildcard subscription (ztunnel without on-demand)
		if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: t}); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("subscribe to %s: %w", t, err)
		}
	}
	return &ztunnelStream{conn: conn, stream: stream, state: newZtunnelState(), seen: map[string]bool{}}, nil
}

// recv takes one response, applies it and ACKs it (NACKs it, returning the error, when ztunnel
// would reject it).
func (z *ztunnelStream) recv() error {
	resp, err := z.stream.Recv()
	if err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	applyErr := z.state.apply(resp)
	ack := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.TypeUrl, ResponseNonce: resp.Nonce}
	if applyErr != nil {
		ack.ErrorDetail = statusProto(applyErr.Error())
	}
	if err := z.stream.Send(ack); err != nil {
		return fmt.Errorf("ack %s: %w", resp.TypeUrl, err)
	}
	if applyErr != nil {
		return applyErr
	}
	z.seen[resp.TypeUrl] = true
	return nil
}

// ready reports whether both types got their first response (ztunnel's readiness).
func (z *ztunnelStream) ready() bool { return z.seen[typeAddress] && z.seen[typeAuthorization] }

func (z *ztunnelStream) close() { _ = z.conn.Close() }

// fetchZtunnel connects as ztunnel and returns istiod's state once both types have arrived.
func fetchZtunnel(ctx context.Context, addr string) (*ZtunnelState, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	z, err := dialZtunnel(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer z.close()
	for !z.ready() {
		if err := z.recv(); err != nil {
			return nil, err
		}
	}
	return z.state, nil
}

// ZtunnelWatch is a long-lived fake ztunnel: it keeps its stream and sees every state istiod
// pushes, as ztunnel enforces them one after the other.
type ZtunnelWatch struct {
	mu      sync.Mutex
	cur     *ZtunnelState
	updates int
	err     error
	cancel  context.CancelFunc
	done    chan struct{}
}

// watchZtunnel starts a fake ztunnel; onState (may be nil) is called, in order, with every state
// from the first complete one (both types received: ztunnel is not ready before): each later
// response is a state ztunnel enforces, intermediate ones included. The watch stops at the end of
// the test, or with Stop.
func (cl *cluster) watchZtunnel(onState func(*ZtunnelState)) *ZtunnelWatch {
	cl.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	z, err := dialZtunnel(ctx, cl.istiodGRPC)
	if err != nil {
		cancel()
		cl.t.Fatal(err)
	}
	w := &ZtunnelWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer z.close()
		for {
			err := z.recv()
			if err != nil {
				if ctx.Err() == nil {
					w.mu.Lock()
					w.err = err
					w.mu.Unlock()
				}
				return
			}
			if !z.ready() {
				continue
			}
			s := z.state.clone()
			w.mu.Lock()
			w.cur, w.updates = s, w.updates+1
			w.mu.Unlock()
			if onState != nil {
				onState(s)
			}
		}
	}()
	cl.t.Cleanup(func() { _ = w.Stop() })
	return w
}

// Current is the latest complete state (nil before the first).
func (w *ZtunnelWatch) Current() *ZtunnelState {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cur
}

// Updates counts the states seen.
func (w *ZtunnelWatch) Updates() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.updates
}

// Stop ends the watch; it returns the stream's error if it failed before (a NACK included).
func (w *ZtunnelWatch) Stop() error {
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// L4 is one TCP connection arriving at the destination pod's ztunnel.
type L4 struct {
	From Proxy // the peer: its workload certificate names spiffe://cluster.local/ns/<ns>/sa/<sa>; From.IP is the source address
	// Plaintext: the peer sends without HBONE (a client outside the mesh, or a bypass of the mesh):
	// ztunnel's inbound passthrough, no identity.
	Plaintext bool
	To        Proxy  // the destination pod (To.IP)
	Port      uint32 // the destination (target) port on the pod
}

func (c L4) String() string {
	s := fmt.Sprintf("%s/%s -> %s/%s:%d", c.From.Namespace, c.From.ServiceAccount, c.To.Namespace, c.To.Pod, c.Port)
	if c.Plaintext {
		s += " plaintext"
	}
	return s
}

// ZVerdict is ztunnel's decision for a connection.
type ZVerdict struct {
	Allowed bool
	Why     string
}

// identity is the peer's SPIFFE identity as ztunnel reads it off the HBONE client certificate
// (nil: none, plaintext).
type identity struct{ namespace, serviceAccount string }

func (id *identity) principal() string {
	if id == nil {
		return ""
	}
	return "spiffe://" + trustDomain + "/ns/" + id.namespace + "/sa/" + id.serviceAccount
}

// Verdict is ztunnel's inbound authorization (state.rs assert_rbac): the destination workload's
// policies are the NAMESPACE-scoped ones of its namespace, the GLOBAL ones and those its Workload
// lists (authorization_policies; a listed name ztunnel has not received is skipped); a matching
// DENY policy denies; no ALLOW policy allows; a matching ALLOW policy allows; else denied. An error
// when ztunnel would not enforce at all (no such workload, not captured) or uses what this
// evaluator does not model (dry-run policies, extensions).
func (s *ZtunnelState) Verdict(c L4) (ZVerdict, error) {
	dst, err := netip.ParseAddr(c.To.IP)
	if err != nil {
		return ZVerdict{}, fmt.Errorf("destination IP %q: %w", c.To.IP, err)
	}
	src, err := netip.ParseAddr(c.From.IP)
	if err != nil {
		return ZVerdict{}, fmt.Errorf("source IP %q: %w", c.From.IP, err)
	}
	wl, err := s.workloadAt(dst)
	if err != nil {
		return ZVerdict{}, err
	}
	if wl.TunnelProtocol != workloadapi.TunnelProtocol_HBONE {
		return ZVerdict{}, fmt.Errorf("workload %s/%s is not captured by ztunnel (tunnel protocol %s)", wl.Namespace, wl.Name, wl.TunnelProtocol)
	}
	var id *identity
	if !c.Plaintext {
		id = &identity{namespace: c.From.Namespace, serviceAccount: c.From.ServiceAccount}
	}
	conn := rbacConn{src: src, dst: dst, dstPort: uint16(c.Port), id: id}

	var keys []string
	for k, p := range s.Policies {
		if (p.Scope == security.Scope_NAMESPACE && p.Namespace == wl.Namespace) || p.Scope == security.Scope_GLOBAL {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	keys = append(keys, wl.AuthorizationPolicies...)
	var allow, deny []*security.Authorization
	var allowNames, denyNames []string
	for _, k := range keys {
		p := s.Policies[k]
		if p == nil {
			continue // ztunnel: "skipping unknown policy"
		}
		if p.DryRun {
			return ZVerdict{}, fmt.Errorf("policy %s is a dry-run policy, which this evaluator does not model", k)
		}
		if len(p.Extensions) > 0 {
			return ZVerdict{}, fmt.Errorf("policy %s has extensions, which this evaluator does not model", k)
		}
		if p.Action == security.Action_ALLOW {
			allow, allowNames = append(allow, p), append(allowNames, k)
		} else {
			deny, denyNames = append(deny, p), append(denyNames, k)
		}
	}
	for i, p := range deny {
		ok, err := policyMatches(p, conn)
		if err != nil {
			return ZVerdict{}, fmt.Errorf("policy %s: %w", denyNames[i], err)
		}
		if ok {
			return ZVerdict{Why: "DENY policy " + denyNames[i] + " matches"}, nil
		}
	}
	if len(allow) == 0 {
		return ZVerdict{Allowed: true, Why: "no ALLOW policy applies to " + wl.Namespace + "/" + wl.Name}, nil
	}
	for i, p := range allow {
		ok, err := policyMatches(p, conn)
		if err != nil {
			return ZVerdict{}, fmt.Errorf("policy %s: %w", allowNames[i], err)
		}
		if ok {
			return ZVerdict{Allowed: true, Why: "ALLOW policy " + allowNames[i] + " matches"}, nil
		}
	}
	return ZVerdict{Why: "no ALLOW policy matches (" + strings.Join(allowNames, ", ") + ")"}, nil
}

// workloadAt finds the workload holding the address (ztunnel's lookup by the destination IP).
func (s *ZtunnelState) workloadAt(ip netip.Addr) (*workloadapi.Workload, error) {
	var found []*workloadapi.Workload
	for _, w := range s.Workloads {
		for _, a := range w.Addresses {
			if wa, ok := netip.AddrFromSlice(a); ok && wa.Unmap() == ip.Unmap() {
				found = append(found, w)
			}
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("ztunnel knows no workload at %s", ip)
	case 1:
		return found[0], nil
	default:
		return nil, fmt.Errorf("%d workloads at %s", len(found), ip)
	}
}

// rbacConn is what ztunnel's RBAC sees of a connection (rbac.rs Connection).
type rbacConn struct {
	src, dst netip.Addr
	dstPort  uint16
	id       *identity
}

// policyMatches is rbac.rs Authorization::matches: no groups never match; a group matches when
// all its rules do; a rule with no matches matches; otherwise one of its non-empty matches must
// match (an empty match is skipped); a match needs every field set to match (any of the positive
// values, none of the negative ones).
func policyMatches(p *security.Authorization, c rbacConn) (bool, error) {
	for _, g := range p.Groups {
		all := true
		for _, r := range g.Rules {
			if len(r.Matches) == 0 {
				continue
			}
			any := false
			for _, m := range r.Matches {
				if len(m.Extensions) > 0 {
					return false, errors.New("a match has extensions, which this evaluator does not model")
				}
				if matchEmpty(m) {
					continue
				}
				if matchOne(m, c) {
					any = true
					break
				}
			}
			if !any {
				all = false
				break
			}
		}
		if all {
			return true, nil
		}
	}
	return false, nil
}

// matchEmpty is RbacMatch::is_empty, after ztunnel's conversion dropped the values it cannot read
// (a string match without a type, an address that is not an IP prefix).
func matchEmpty(m *security.Match) bool {
	return len(strMatches(m.Namespaces)) == 0 && len(strMatches(m.NotNamespaces)) == 0 &&
		len(m.ServiceAccounts) == 0 && len(m.NotServiceAccounts) == 0 &&
		len(strMatches(m.Principals)) == 0 && len(strMatches(m.NotPrincipals)) == 0 &&
		len(prefixes(m.SourceIps)) == 0 && len(prefixes(m.NotSourceIps)) == 0 &&
		len(prefixes(m.DestinationIps)) == 0 && len(prefixes(m.NotDestinationIps)) == 0 &&
		len(m.DestinationPorts) == 0 && len(m.NotDestinationPorts) == 0
}

func matchOne(m *security.Match, c rbacConn) bool {
	principal := c.id.principal()
	ns := ""
	if c.id != nil {
		ns = c.id.namespace
	}
	ok := both(prefixes(m.DestinationIps), prefixes(m.NotDestinationIps), func(p netip.Prefix) bool { return p.Contains(c.dst) })
	ok = ok && both(prefixes(m.SourceIps), prefixes(m.NotSourceIps), func(p netip.Prefix) bool { return p.Contains(c.src) })
	// ports are u16 in ztunnel: `*p as u16` truncates
	ok = ok && both(m.DestinationPorts, m.NotDestinationPorts, func(p uint32) bool { return uint16(p) == c.dstPort })
	ok = ok && both(m.ServiceAccounts, m.NotServiceAccounts, func(sa *security.ServiceAccountMatch) bool {
		return c.id != nil && sa.Namespace == c.id.namespace && sa.ServiceAccount == c.id.serviceAccount
	})
	ok = ok && both(strMatches(m.Principals), strMatches(m.NotPrincipals), func(s *security.StringMatch) bool {
		// StringMatch::matches_principal: Istio's values have no spiffe:// prefix; an identity without one never matches
		rest, found := strings.CutPrefix(principal, "spiffe://")
		return found && stringMatches(s, rest)
	})
	ok = ok && both(strMatches(m.Namespaces), strMatches(m.NotNamespaces), func(s *security.StringMatch) bool { return stringMatches(s, ns) })
	return ok
}

// both is matches_internal: no positive values match anything; any positive value must match; no
// negative value may match.
func both[T any](pos, neg []T, pred func(T) bool) bool {
	pm := len(pos) == 0
	for _, v := range pos {
		if pred(v) {
			pm = true
			break
		}
	}
	for _, v := range neg {
		if pred(v) {
			return false
		}
	}
	return pm
}

// strMatches drops the string matches without a type (ztunnel's From<&XdsStringMatch> is None).
func strMatches(in []*security.StringMatch) []*security.StringMatch {
	var out []*security.StringMatch
	for _, s := range in {
		if s.GetMatchType() != nil {
			out = append(out, s)
		}
	}
	return out
}

// stringMatches is StringMatch::matches.
func stringMatches(s *security.StringMatch, v string) bool {
	switch m := s.GetMatchType().(type) {
	case *security.StringMatch_Exact:
		return v == m.Exact
	case *security.StringMatch_Prefix:
		return strings.HasPrefix(v, m.Prefix)
	case *security.StringMatch_Suffix:
		return strings.HasSuffix(v, m.Suffix)
	case *security.StringMatch_Presence:
		return v != ""
	default:
		return false
	}
}

// prefixes converts addresses as ztunnel does (byte_to_ip and IpNet::new; failures are dropped).
func prefixes(in []*security.Address) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range in {
		ip, ok := netip.AddrFromSlice(a.Address)
		if !ok || (len(a.Address) != 4 && len(a.Address) != 16) {
			continue
		}
		if int(a.Length) > ip.BitLen() {
			continue
		}
		// IpNet keeps the host bits; contains() compares the network part only
		out = append(out, netip.PrefixFrom(ip, int(a.Length)).Masked())
	}
	return out
}

// Fingerprint identifies the state's content.
func (s *ZtunnelState) Fingerprint() string {
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
	for n, w := range s.Workloads {
		add("workload", n, w)
	}
	for n, v := range s.Services {
		add("service", n, v)
	}
	for n, p := range s.Policies {
		add("policy", n, p)
	}
	sort.Strings(parts)
	return fmt.Sprintf("%x", fnv64([]byte(strings.Join(parts, "\n"))))
}

// l4check is one expected verdict at a destination's ztunnel.
type l4check struct {
	L4
	allow bool
}

func allowL4(c L4) l4check { return l4check{c, true} }
func denyL4(c L4) l4check  { return l4check{c, false} }

// Lines judges the checks: "ALLOW <conn>" / "DENY  <conn>" per check. A connection expected
// denied must be denied with and without the peer's identity (over HBONE and in plaintext from
// the peer's address): one that gets through either way is reported as an over-allow.
func (s *ZtunnelState) Lines(checks ...l4check) ([]string, error) {
	var out []string
	for _, c := range checks {
		v, err := s.Verdict(c.L4)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.L4, err)
		}
		line := "DENY  " + c.String()
		if v.Allowed {
			line = "ALLOW " + c.String()
		}
		if !c.allow && !v.Allowed && !c.Plaintext {
			p := c.L4
			p.Plaintext = true
			pv, err := s.Verdict(p)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			if pv.Allowed {
				line = "ALLOW " + c.String() + " (over-allow: plaintext from its address: " + pv.Why + ")"
			}
		}
		out = append(out, line)
	}
	return out, nil
}

func l4Want(checks []l4check) []string {
	var want []string
	for _, c := range checks {
		if c.allow {
			want = append(want, "ALLOW "+c.String())
		} else {
			want = append(want, "DENY  "+c.String())
		}
	}
	return want
}

// expectL4 waits until what istiod sends ztunnel has settled and gives every connection its
// expected verdict (expectLines' settling rules; on timeout, the verdicts that differ).
func (cl *cluster) expectL4(step string, checks ...l4check) {
	cl.t.Helper()
	cl.expectLines(step, "ztunnel's L4 verdicts", l4Want(checks), func() (observation, error) {
		s, err := fetchZtunnel(context.Background(), cl.istiodGRPC)
		if err != nil {
			return observation{}, err
		}
		lines, err := s.Lines(checks...)
		if err != nil {
			return observation{}, err
		}
		return observation{lines: lines, config: s.Fingerprint()}, nil
	})
}

// L4Guard watches every state istiod pushes to ztunnel for connections that must never get
// through (a migration's or a change's intermediate states included).
type L4Guard struct {
	w          *ZtunnelWatch
	mu         sync.Mutex
	violations []string
	unjudged   []string
}

// guardL4 starts a fake ztunnel that judges the connections on every state it receives, from the
// first complete one: an allowed one (with or without its identity, see Lines) is a violation. A
// state in which ztunnel would not enforce for the destination (not captured: the pod left ambient
// mode; unknown) is recorded as unjudged, not as a violation: whatever else enforces there (the
// sidecar) is the caller's to judge.
func (cl *cluster) guardL4(conns ...L4) *L4Guard {
	cl.t.Helper()
	g := &L4Guard{}
	var checks []l4check
	for _, c := range conns {
		checks = append(checks, denyL4(c))
	}
	g.w = cl.watchZtunnel(func(s *ZtunnelState) {
		for _, c := range checks {
			lines, err := s.Lines(c)
			g.mu.Lock()
			switch {
			case err != nil:
				g.unjudged = append(g.unjudged, fmt.Sprintf("state %s: %v", s.Fingerprint(), err))
			case strings.HasPrefix(lines[0], "ALLOW"):
				g.violations = append(g.violations, fmt.Sprintf("state %s: %s", s.Fingerprint(), lines[0]))
			}
			g.mu.Unlock()
		}
	})
	return g
}

// Stop ends the guard and returns its violations and the states it could not judge; a failed
// stream (a NACK included) is a violation.
func (g *L4Guard) Stop() (violations, unjudged []string) {
	err := g.w.Stop()
	g.mu.Lock()
	defer g.mu.Unlock()
	violations = append(violations, g.violations...)
	if err != nil {
		violations = append(violations, "the ztunnel stream failed: "+err.Error())
	}
	return violations, append(unjudged, g.unjudged...)
}
