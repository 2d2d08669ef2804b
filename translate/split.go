package translate

import (
	"encoding/json"
	"fmt"
	"math/big"
	"regexp"
	"sort"
	"strings"

	splitv1alpha4 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/split/v1alpha4"
	networkingapi "istio.io/api/networking/v1beta1"
	networkingv1beta1 "istio.io/client-go/pkg/apis/networking/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// GatewaysAnnotation is the annotation Flagger writes on a TrafficSplit to attach the generated
// VirtualService to ingress gateways (a JSON list of gateway names).
const GatewaysAnnotation = "VirtualService.v1alpha3.networking.istio.io/spec.gateways"

// MeshGateway is the reserved gateway name for sidecar (east-west) traffic.
const MeshGateway = "mesh"

// RoutingMode says how a split is expressed in Istio.
type RoutingMode string

const (
	// SubsetMode routes to subsets of the root host, one per backend (a DestinationRule defines them).
	SubsetMode RoutingMode = "Subset"
	// HostMode routes to the backend hosts directly.
	HostMode RoutingMode = "Host"
)

// SplitInput is everything a TrafficSplit's translation depends on, already fetched.
type SplitInput struct {
	Split *splitv1alpha4.TrafficSplit
	// Services of the split's namespace by name; those not referenced are ignored.
	Services map[string]*corev1.Service
	// RouteGroups of the split's namespace by name; those not referenced are ignored.
	RouteGroups map[string]*HTTPRouteGroup
	// RouteGroupErrors holds route groups that exist but cannot be read.
	RouteGroupErrors map[string]*FieldError
	Mesh             Mesh
}

// SplitResult is the desired Istio state for one TrafficSplit.
type SplitResult struct {
	Mode RoutingMode
	// RootService is the name of the root Service and Host its FQDN.
	RootService, Host string
	// VirtualService is nil when there is nothing to route (e.g. the root Service is missing).
	VirtualService *networkingv1beta1.VirtualService
	// DestinationRule is set in subset mode only.
	DestinationRule *networkingv1beta1.DestinationRule
	// Unresolved lists references not found (Services, HTTPRouteGroups).
	Unresolved []Finding
	// Warnings lists what was translated other than written (excluded backends, ignored fields).
	Warnings []Finding
}

// Objects returns the outputs in apply order: the DestinationRule before the VirtualService that
// names its subsets (delete in reverse).
func (r *SplitResult) Objects() []runtime.Object {
	var out []runtime.Object
	if r.DestinationRule != nil {
		out = append(out, r.DestinationRule)
	}
	if r.VirtualService != nil {
		out = append(out, r.VirtualService)
	}
	return out
}

type backend struct {
	index  int // first index in spec.backends
	name   string
	weight *big.Int
	svc    *corev1.Service
}

// TranslateSplit translates a TrafficSplit. An *InvalidError means the split is not accepted and
// nothing should be applied (traffic goes to the root Service as if there were no split).
func TranslateSplit(in SplitInput) (*SplitResult, error) {
	ts := in.Split
	rootName, err := ParseServiceRef(ts.Spec.Service, ts.Namespace, in.Mesh)
	if err != nil {
		return nil, invalid("spec.service", "InvalidService", "%v", err)
	}
	res := &SplitResult{RootService: rootName, Host: fqdn(rootName, ts.Namespace, in.Mesh)}

	backends, err := collectBackends(ts, res)
	if err != nil {
		return nil, err
	}
	gateways, err := gatewaysOf(ts, res)
	if err != nil {
		return nil, err
	}
	matches, err := splitMatches(ts, in.RouteGroups, in.RouteGroupErrors, res)
	if err != nil {
		return nil, err
	}

	root := in.Services[rootName]
	if root == nil {
		res.Unresolved = append(res.Unresolved, finding("spec.service", "RootServiceNotFound",
			"root Service %s/%s not found", ts.Namespace, rootName))
		return res, nil
	}
	var resolved []*backend
	for _, b := range backends {
		if b.svc = in.Services[b.name]; b.svc == nil {
			res.Unresolved = append(res.Unresolved, finding(fmt.Sprintf("spec.backends[%d].service", b.index), "BackendNotFound",
				"backend Service %s/%s not found; it gets no traffic", ts.Namespace, b.name))
			continue
		}
		resolved = append(resolved, b)
	}

	res.Mode = routingMode(root, resolved)
	vs := &networkingv1beta1.VirtualService{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.istio.io/v1beta1", Kind: "VirtualService"},
		ObjectMeta: outputMeta(rootName, ts),
	}
	vs.Spec.Hosts = []string{res.Host}
	vs.Spec.Gateways = gateways

	ports := append([]corev1.ServicePort(nil), root.Spec.Ports...)
	sort.SliceStable(ports, func(i, j int) bool { return ports[i].Port < ports[j].Port })
	multiPort := len(ports) > 1
	used := map[string]bool{}
	for _, p := range ports {
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			res.Warnings = append(res.Warnings, finding("spec.service", "UnsupportedProtocol",
				"port %d of the root Service is %s, which Istio does not route: not split", p.Port, p.Protocol))
			continue
		}
		dests := destinations(ts, root, p, resolved, res, in.Mesh, used)
		rootDest := &networkingapi.Destination{Host: res.Host, Port: &networkingapi.PortSelector{Number: uint32(p.Port)}}
		if isTCP(p) {
			route := &networkingapi.TCPRoute{Route: tcpRoute(dests, rootDest)}
			if matches != nil {
				res.Warnings = append(res.Warnings, finding("spec.matches", "MatchesNotApplicable",
					"port %d is TCP and matches select HTTP requests: its traffic is not split", p.Port))
				route.Route = tcpRoute(nil, rootDest)
			}
			if multiPort {
				route.Match = []*networkingapi.L4MatchAttributes{{Port: uint32(p.Port)}}
			}
			vs.Spec.Tcp = append(vs.Spec.Tcp, route)
			continue
		}
		split := &networkingapi.HTTPRoute{Name: fmt.Sprintf("port-%d", p.Port), Route: httpRoute(dests, rootDest)}
		if matches == nil {
			if multiPort {
				split.Match = []*networkingapi.HTTPMatchRequest{{Port: uint32(p.Port)}}
			}
			vs.Spec.Http = append(vs.Spec.Http, split)
			continue
		}
		// Matching requests are split; everything else goes to the root Service unchanged.
		if len(matches) > 0 {
			split.Name += "-matches"
			for _, m := range matches {
				m = cloneMatch(m)
				if multiPort {
					m.Port = uint32(p.Port)
				}
				split.Match = append(split.Match, m)
			}
			vs.Spec.Http = append(vs.Spec.Http, split)
		}
		catchAll := &networkingapi.HTTPRoute{Name: fmt.Sprintf("port-%d-default", p.Port), Route: httpRoute(nil, rootDest)}
		if multiPort {
			catchAll.Match = []*networkingapi.HTTPMatchRequest{{Port: uint32(p.Port)}}
		}
		vs.Spec.Http = append(vs.Spec.Http, catchAll)
	}
	if len(vs.Spec.Http) == 0 && len(vs.Spec.Tcp) == 0 {
		return res, nil
	}
	res.VirtualService = vs

	if res.Mode == SubsetMode {
		dr := &networkingv1beta1.DestinationRule{
			TypeMeta:   metav1.TypeMeta{APIVersion: "networking.istio.io/v1beta1", Kind: "DestinationRule"},
			ObjectMeta: outputMeta(rootName, ts),
		}
		dr.Spec.Host = res.Host
		for _, b := range resolved {
			if used[b.name] {
				dr.Spec.Subsets = append(dr.Spec.Subsets, &networkingapi.Subset{Name: b.name, Labels: copyMap(b.svc.Spec.Selector)})
			}
		}
		if len(dr.Spec.Subsets) > 0 {
			res.DestinationRule = dr
		}
	}
	// Outputs Istio or the apiserver would reject are never written: the split is not accepted.
	if err := res.Validate(); err != nil {
		return nil, err
	}
	return res, nil
}

func outputMeta(name string, ts *splitv1alpha4.TrafficSplit) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:      name,
		Namespace: ts.Namespace,
		Labels: map[string]string{
			ManagedByLabel:  ManagedByValue,
			SourceKindLabel: "TrafficSplit",
			SourceNameLabel: ts.Name,
		},
	}
}

// collectBackends validates weights and merges duplicate backends.
func collectBackends(ts *splitv1alpha4.TrafficSplit, res *SplitResult) ([]*backend, error) {
	if len(ts.Spec.Backends) == 0 {
		return nil, invalid("spec.backends", "NoBackends", "a TrafficSplit needs at least one backend")
	}
	var out []*backend
	byName := map[string]*backend{}
	total := new(big.Int)
	for i, b := range ts.Spec.Backends {
		field := fmt.Sprintf("spec.backends[%d]", i)
		if b.Service == "" {
			return nil, invalid(field+".service", "InvalidBackend", "backend service name is empty")
		}
		if b.Weight < 0 {
			return nil, invalid(field+".weight", "NegativeWeight", "weight %d is negative", b.Weight)
		}
		w := big.NewInt(int64(b.Weight))
		total.Add(total, w)
		if prev := byName[b.Service]; prev != nil {
			prev.weight.Add(prev.weight, w)
			res.Warnings = append(res.Warnings, finding(field+".service", "DuplicateBackend",
				"backend %s is listed more than once (first at spec.backends[%d]); its weights are added", b.Service, prev.index))
			continue
		}
		nb := &backend{index: i, name: b.Service, weight: w}
		byName[b.Service] = nb
		out = append(out, nb)
	}
	if total.Sign() == 0 {
		return nil, invalid("spec.backends", "AllZeroWeights",
			"every backend has weight 0: nothing is split and traffic goes to the root Service as if there were no TrafficSplit")
	}
	return out, nil
}

func gatewaysOf(ts *splitv1alpha4.TrafficSplit, res *SplitResult) ([]string, error) {
	raw, ok := ts.Annotations[GatewaysAnnotation]
	if !ok {
		return nil, nil
	}
	field := fmt.Sprintf("metadata.annotations[%s]", GatewaysAnnotation)
	var gateways []string
	if err := json.Unmarshal([]byte(raw), &gateways); err != nil {
		return nil, invalid(field, "InvalidGateways", "want a JSON list of gateway names: %v", err)
	}
	for _, g := range gateways {
		if g == MeshGateway {
			return gateways, nil
		}
	}
	res.Warnings = append(res.Warnings, finding(field, "MeshGatewayOmitted",
		"the gateway list has no %q: only traffic through the listed gateways is split, not traffic between sidecars", MeshGateway))
	return gateways, nil
}

// routingMode picks subset mode when every backend's pods are a subset of the root's endpoints and
// their ports map onto the root's target ports; host mode otherwise.
func routingMode(root *corev1.Service, backends []*backend) RoutingMode {
	if len(root.Spec.Selector) == 0 || len(backends) == 0 {
		return HostMode
	}
	for _, b := range backends {
		for k, v := range root.Spec.Selector {
			if b.svc.Spec.Selector[k] != v {
				return HostMode
			}
		}
		for _, rp := range root.Spec.Ports {
			bp := matchPort(b.svc, rp)
			if bp == nil || targetPort(*bp) != targetPort(rp) {
				return HostMode
			}
		}
	}
	return SubsetMode
}

func targetPort(p corev1.ServicePort) intstr.IntOrString {
	if p.TargetPort.Type == intstr.String && p.TargetPort.StrVal != "" {
		return p.TargetPort
	}
	if p.TargetPort.IntVal != 0 {
		return p.TargetPort
	}
	return intstr.FromInt32(p.Port)
}

// matchPort finds the backend port serving a root port: same number, else same name.
func matchPort(svc *corev1.Service, rootPort corev1.ServicePort) *corev1.ServicePort {
	for i, p := range svc.Spec.Ports {
		if p.Port == rootPort.Port {
			return &svc.Spec.Ports[i]
		}
	}
	if rootPort.Name != "" {
		for i, p := range svc.Spec.Ports {
			if p.Name == rootPort.Name {
				return &svc.Spec.Ports[i]
			}
		}
	}
	return nil
}

// isTCP reports whether Istio treats the port as opaque TCP (by appProtocol or name prefix).
func isTCP(p corev1.ServicePort) bool {
	proto := ""
	if p.AppProtocol != nil {
		proto = *p.AppProtocol
	} else {
		proto, _, _ = strings.Cut(p.Name, "-")
	}
	switch strings.ToLower(proto) {
	case "tcp", "tls", "https", "mysql", "mongo", "redis":
		return true
	}
	return false
}

type weighted struct {
	dest   *networkingapi.Destination
	weight *big.Int
}

func destinations(ts *splitv1alpha4.TrafficSplit, root *corev1.Service, rp corev1.ServicePort, backends []*backend,
	res *SplitResult, mesh Mesh, used map[string]bool) []weighted {
	var out []weighted
	for _, b := range backends {
		bp := matchPort(b.svc, rp)
		if bp == nil {
			res.Warnings = append(res.Warnings, finding(fmt.Sprintf("spec.backends[%d].service", b.index), "BackendPortMissing",
				"backend Service %s has no port %d (or named %q) of the root Service %s: it gets none of that port's traffic",
				b.name, rp.Port, rp.Name, root.Name))
			continue
		}
		d := &networkingapi.Destination{}
		if res.Mode == SubsetMode {
			d.Host, d.Subset, d.Port = res.Host, b.name, &networkingapi.PortSelector{Number: uint32(rp.Port)}
		} else {
			d.Host, d.Port = fqdn(b.name, ts.Namespace, mesh), &networkingapi.PortSelector{Number: uint32(bp.Port)}
		}
		used[b.name] = true
		out = append(out, weighted{dest: d, weight: b.weight})
	}
	total := new(big.Int)
	for _, w := range out {
		total.Add(total, w.weight)
	}
	if len(out) > 0 && total.Sign() == 0 {
		res.Warnings = append(res.Warnings, finding("spec.backends", "NoWeightedBackend",
			"no backend with a weight serves port %d: its traffic goes to the root Service", rp.Port))
		return nil
	}
	return out
}

// percentages scales relative weights to integers summing to 100 (largest remainder; ties go to
// the earlier backend).
func percentages(ws []weighted) []int32 {
	total := new(big.Int)
	for _, w := range ws {
		total.Add(total, w.weight)
	}
	out := make([]int32, len(ws))
	rems := make([]*big.Int, len(ws))
	sum := int64(0)
	for i, w := range ws {
		q, r := new(big.Int).QuoRem(new(big.Int).Mul(w.weight, big.NewInt(100)), total, new(big.Int))
		out[i], rems[i] = int32(q.Int64()), r
		sum += q.Int64()
	}
	order := make([]int, len(ws))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return rems[order[a]].Cmp(rems[order[b]]) > 0 })
	for i := 0; int64(i) < 100-sum; i++ {
		out[order[i]]++
	}
	return out
}

func httpRoute(ws []weighted, root *networkingapi.Destination) []*networkingapi.HTTPRouteDestination {
	if len(ws) == 0 {
		return []*networkingapi.HTTPRouteDestination{{Destination: root}}
	}
	if len(ws) == 1 {
		return []*networkingapi.HTTPRouteDestination{{Destination: ws[0].dest}}
	}
	pct := percentages(ws)
	out := make([]*networkingapi.HTTPRouteDestination, len(ws))
	for i, w := range ws {
		out[i] = &networkingapi.HTTPRouteDestination{Destination: w.dest, Weight: pct[i]}
	}
	return out
}

func tcpRoute(ws []weighted, root *networkingapi.Destination) []*networkingapi.RouteDestination {
	if len(ws) == 0 {
		return []*networkingapi.RouteDestination{{Destination: root}}
	}
	if len(ws) == 1 {
		return []*networkingapi.RouteDestination{{Destination: ws[0].dest}}
	}
	pct := percentages(ws)
	out := make([]*networkingapi.RouteDestination, len(ws))
	for i, w := range ws {
		out[i] = &networkingapi.RouteDestination{Destination: w.dest, Weight: pct[i]}
	}
	return out
}

// splitMatches returns the HTTP match requests of the split's matches, nil when the split has no
// matches (everything is split), and an empty list when none could be resolved.
func splitMatches(ts *splitv1alpha4.TrafficSplit, groups map[string]*HTTPRouteGroup, groupErrs map[string]*FieldError, res *SplitResult) ([]*networkingapi.HTTPMatchRequest, error) {
	if len(ts.Spec.Matches) == 0 {
		return nil, nil
	}
	out := []*networkingapi.HTTPMatchRequest{}
	for i, ref := range ts.Spec.Matches {
		field := fmt.Sprintf("spec.matches[%d]", i)
		if ref.Kind != "HTTPRouteGroup" {
			return nil, invalid(field+".kind", "UnsupportedMatchKind", "matches may reference HTTPRouteGroups only, not %q", ref.Kind)
		}
		if fe := groupErrs[ref.Name]; fe != nil {
			return nil, invalid("HTTPRouteGroup "+ref.Name+" "+fe.Field, fe.Reason, "%s", fe.Message)
		}
		g := groups[ref.Name]
		if g == nil {
			res.Unresolved = append(res.Unresolved, finding(field+".name", "RouteGroupNotFound",
				"HTTPRouteGroup %s/%s not found: its requests are not split", ts.Namespace, ref.Name))
			continue
		}
		for j, m := range g.Matches {
			reqs, err := httpMatchRequests(m, fmt.Sprintf("HTTPRouteGroup %s spec.matches[%d]", g.Name, j))
			if err != nil {
				return nil, err
			}
			out = append(out, reqs...)
		}
	}
	return out, nil
}

// httpMatchRequests turns one SMI match into Istio match requests (one per method: methods are
// ORed, the other fields ANDed). Istio's regex is RE2 full match, like SMI's.
func httpMatchRequests(m HTTPMatch, field string) ([]*networkingapi.HTTPMatchRequest, error) {
	base := &networkingapi.HTTPMatchRequest{}
	if m.PathRegex != "" {
		if _, err := regexp.Compile(m.PathRegex); err != nil {
			return nil, invalid(field+".pathRegex", "InvalidRegex", "%q is not an RE2 regex: %v", m.PathRegex, err)
		}
		base.Uri = regexMatch(m.PathRegex)
	}
	for k, h := range m.Headers {
		hf := fmt.Sprintf("%s.headers[%d]", field, k)
		if _, err := regexp.Compile(h.Value); err != nil {
			return nil, invalid(hf, "InvalidRegex", "header %s: %q is not an RE2 regex: %v", h.Name, h.Value, err)
		}
		name := strings.ToLower(h.Name)
		if name == "host" || name == ":authority" {
			if base.Authority != nil {
				return nil, invalid(hf, "DuplicateHeader", "header %s is matched twice in one match", h.Name)
			}
			base.Authority = regexMatch(h.Value)
			continue
		}
		if base.Headers == nil {
			base.Headers = map[string]*networkingapi.StringMatch{}
		}
		if _, dup := base.Headers[name]; dup {
			return nil, invalid(hf, "DuplicateHeader", "header %s is matched twice in one match", h.Name)
		}
		base.Headers[name] = regexMatch(h.Value)
	}
	methods := m.Methods
	for _, meth := range methods {
		if meth == "*" {
			methods = nil
			break
		}
	}
	if len(methods) == 0 {
		return []*networkingapi.HTTPMatchRequest{base}, nil
	}
	out := make([]*networkingapi.HTTPMatchRequest, 0, len(methods))
	for _, meth := range methods {
		r := cloneMatch(base)
		r.Method = &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Exact{Exact: meth}}
		out = append(out, r)
	}
	return out, nil
}

func regexMatch(re string) *networkingapi.StringMatch {
	return &networkingapi.StringMatch{MatchType: &networkingapi.StringMatch_Regex{Regex: re}}
}

func cloneMatch(m *networkingapi.HTTPMatchRequest) *networkingapi.HTTPMatchRequest {
	return m.DeepCopy()
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
