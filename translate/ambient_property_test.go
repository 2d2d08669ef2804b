package translate_test

// TestAmbientProperty: for generated SMI access inputs in an ambient namespace (the generator of
// TestAccessProperty, plus Services, routes attached to them, a waypoint or none), what Istio's
// ambient data plane enforces for TranslateAmbientAccess's outputs (ztunnel_eval_test.go: ztunnel
// at the pod, the waypoint per Service) never allows a request or connection that SMI's reference
// model (smiModel) does not, on any path a request can take:
//   - directly to the pod (a Service without waypoint, the pod's IP, a waypoint that is not ready):
//     the pod's ztunnel sees the source's identity and the pod port;
//   - through our waypoint, addressed to a Service bound to it: the waypoint's chain of that
//     Service (the Service port) sees the source's identity and the request, then the request goes
//     to any endpoint the Service (or the backends of the routes attached to it) sends to, whose
//     ztunnel sees the waypoint's identity and the target port;
//   - through our waypoint's direct-to-pod chain (waypoint-for all or workload): the Gateway's
//     policies only, then the pod's ztunnel as above;
//   - through another waypoint (a Service bound to it; its policies are not ours, assume it allows
//     everything): the pod's ztunnel sees that waypoint's identity.
// The namespace's allow-nothing baseline is in place, and the waypoint's baseline when the
// translation returns one. The pods of other ServiceAccounts are assumed to admit the waypoint
// (their own TrafficTargets may), so a request the waypoint lets through to them is an over-allow. It also checks "nothing less" where the translation claims exactness:
// without waypoint, what L4-only TrafficTargets allow reaches the pod directly; with one, what SMI
// allows through a Service bound to the waypoint that sends only to the destination's workloads
// (a port whose target port is known) when every regex is on the exact rung. Every output must
// pass Istio's validation and Kubernetes' name and label rules.
//
// Mutations of ambient.go, each made by hand in the work tree, run with the default 1500 cases
// (seed 1), then reverted; every one is caught:
//   - without waypoint, HTTP rules kept as L4 rules (their HTTP fields stripped): over-allow
//     directly at the pod in 202 cases;
//   - waypoint policies on every Service that reaches the destination, shared ones too (precise
//     replaced by reaches): over-allow through the waypoint in 15;
//   - no waypoint baseline: 975 (every waypoint case) over-allow through the direct-to-pod chain,
//     340 through a Service;
//   - routes' backends ignored (a TrafficSplit root judged by its own selector): over-allow
//     through the waypoint in 9;
//   - rule ports left as pod ports on the waypoint policy: over-allow in 2, under-allow in 33;
//   - ztunnel admitting the sources besides the waypoint: over-allow directly in 246;
//   - ztunnel admitting the waypoint on the Service ports instead of the pod ports: under-allow
//     in 15; the namespace's use-waypoint label ignored: under-allow in 91.
// Not caught, by design: no allow-nothing policy on the shared Services while the waypoint's
// baseline is there, and the waypoint admitted on every port (both are defence in depth behind
// an exact waypoint). TestAmbientPropertyCatchesMutants mutates the outputs instead, on every run.
//
// -ambient.seed, -ambient.cases and -ambient.case change the run as -property.* do.

import (
	"flag"
	"fmt"
	"math/rand"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	securityv1beta1 "istio.io/client-go/pkg/apis/security/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/smi2istio/smi2istio/internal/testing/istiocheck"
	"github.com/smi2istio/smi2istio/translate"
)

var (
	ambientSeed  = flag.Int64("ambient.seed", 1, "seed of TestAmbientProperty's generated inputs")
	ambientCases = flag.Int("ambient.cases", 1500, "number of inputs TestAmbientProperty generates")
	ambientOnly  = flag.Int("ambient.case", -1, "run only this case of the seed (as printed on failure)")
)

// The pods' named container ports (the model resolves a named targetPort; the translation cannot).
var containerPorts = map[string]int{"pg": 5432, "web": 8080}

type aPort struct {
	port   int32
	name   string
	target intstr.IntOrString // zero: the port itself
	udp    bool
}

type aService struct {
	name     string
	selector map[string]string // nil: no selector (manual endpoints: the model sends to api-v1)
	ports    []aPort
	backends []string // routes attached to it send there; nil: its own endpoints
	label    string   // istio.io/use-waypoint on the Service: "" (namespace's), "none", "waypoint", "other"
}

type aCase struct {
	p        *pCase
	waypoint bool // waypoint shop/waypoint exists (the translation is given it)
	nsLabel  bool // the namespace is labelled istio.io/use-waypoint=waypoint
	services []aService
}

func tp(p int) intstr.IntOrString        { return intstr.FromInt32(int32(p)) }
func tpName(n string) intstr.IntOrString { return intstr.FromString(n) }

func genAmbient(r *rand.Rand) *aCase {
	c := &aCase{p: genCase(r), waypoint: r.Intn(3) != 0, nsLabel: r.Intn(4) != 0}
	backends := pickOne(r, [][]string{{"api-v1"}, {"api-v1", "api-v2"}, {"api-v1", "db"}, {"api-v1", "gone"}, {"root", "api-v1"}})
	catalog := []aService{
		{name: "api", selector: map[string]string{"app": "api"}, ports: []aPort{{port: 80, name: "http", target: tp(8080)}, {port: 9090, name: "grpc"}}},
		{name: "api-v1", selector: map[string]string{"app": "api", "version": "v1"}, ports: []aPort{{port: 8080, name: "http"}, {port: 3306, name: "mysql"}}},
		{name: "api-v2", selector: map[string]string{"app": "api", "version": "v2"}, ports: []aPort{{port: 8080, name: "http"}, {port: 9090, name: "grpc", target: tp(9090)}}},
		{name: "api-hash", selector: map[string]string{"pod-template-hash": "5d8f"}, ports: []aPort{{port: 8080, name: "http"}}},
		{name: "manual", ports: []aPort{{port: 8080, name: "http"}}},
		{name: "db", selector: map[string]string{"app": "db"}, ports: []aPort{{port: 5432, name: "pg", target: tpName("pg")}, {port: 8080, name: "http"}}},
		{name: "named", selector: map[string]string{"app": "api", "version": "v1"}, ports: []aPort{{port: 5432, name: "pg", target: tpName("pg")}, {port: 9091, name: "metrics", target: tp(9090)}, {port: 80, name: "web", target: tpName("web")}, {port: 3306, name: "swap", target: tp(8080)}}},
		{name: "root", selector: map[string]string{"app": "api"}, ports: []aPort{{port: 8080, name: "http"}, {port: 80, name: "web", target: tp(8080)}}, backends: backends},
		{name: "udp", selector: map[string]string{"app": "api", "version": "v1"}, ports: []aPort{{port: 8080, name: "dns", udp: true}, {port: 3306, name: "mysql"}}},
	}
	for _, s := range catalog {
		if r.Intn(2) == 0 {
			continue
		}
		switch r.Intn(8) {
		case 0:
			s.label = "none"
		case 1:
			s.label = "other"
		case 2:
			s.label = "waypoint"
		}
		if r.Intn(4) == 0 && len(s.ports) > 1 {
			s.ports = s.ports[:1]
		}
		c.services = append(c.services, s)
	}
	return c
}

func (c *aCase) service(name string) *aService {
	for i := range c.services {
		if c.services[i].name == name {
			return &c.services[i]
		}
	}
	return nil
}

// binding is where a Service's traffic goes: "waypoint" (ours, when it exists), "other", or
// "direct" (no waypoint, or one that does not exist: istiod then sends directly).
func (c *aCase) binding(s *aService) string {
	label := s.label
	if label == "" && c.nsLabel {
		label = "waypoint"
	}
	switch {
	case label == "waypoint" && c.waypoint:
		return "waypoint"
	case label == "other":
		return "other"
	}
	return "direct"
}

// target is one (workload, pod port) a request to a Service port may end at.
type target struct {
	workload string
	port     uint32
}

// reached: where a request to port sp of s may go, in the real cluster (named ports resolved).
func (c *aCase) reached(s *aService, sp aPort) []target {
	if sp.udp {
		return nil
	}
	names := s.backends
	if names == nil {
		names = []string{s.name}
	}
	var out []target
	for _, n := range names {
		b := c.service(n)
		if b == nil {
			continue
		}
		var ws []string
		if b.selector == nil {
			ws = []string{"Deployment/api-v1"} // its hand-made endpoints
		} else {
			for _, w := range c.p.workloads() {
				if selects(b.selector, w.Labels) {
					ws = append(ws, w.Name)
				}
			}
		}
		for _, bp := range b.ports {
			if bp.udp || (bp.port != sp.port && bp.name != sp.name) {
				continue
			}
			pod := int(bp.port)
			switch {
			case bp.target.Type == intstr.String:
				pod = containerPorts[bp.target.StrVal]
			case bp.target.IntVal != 0:
				pod = int(bp.target.IntVal)
			}
			for _, w := range ws {
				out = append(out, target{w, uint32(pod)})
			}
		}
	}
	return out
}

// precise: the translation can know that s sends only to the destination's workloads, on port sp
// only to pod port tp (a selector without volatile labels, backends that exist, int target ports).
func (c *aCase) precise(s *aService, sp aPort, podPort uint32) bool {
	names := s.backends
	if names == nil {
		names = []string{s.name}
	}
	for _, n := range names {
		b := c.service(n)
		if b == nil || b.selector == nil || b.selector["pod-template-hash"] != "" {
			return false
		}
		for _, bp := range b.ports {
			if (bp.port == sp.port || bp.name == sp.name) && bp.target.Type == intstr.String {
				return false
			}
		}
	}
	sas := map[string]string{}
	for _, w := range c.p.workloads() {
		sas[w.Name] = w.ServiceAccount
	}
	for _, p := range s.ports {
		for _, t := range c.reached(s, p) {
			if sas[t.workload] != propSA {
				return false
			}
		}
	}
	for _, t := range c.reached(s, sp) {
		if t.port != podPort {
			return false
		}
	}
	return len(c.reached(s, sp)) > 0
}

func (c *aCase) waypointRef() waypointRef {
	return waypointRef{namespace: propNS, name: "waypoint", principal: c.p.td() + "/ns/" + propNS + "/sa/waypoint"}
}

func (c *aCase) input() translate.AmbientAccessInput {
	in := translate.AmbientAccessInput{AccessInput: c.p.input(), ServiceBackends: map[string][]string{}}
	if c.nsLabel {
		in.NamespaceLabels = map[string]string{"istio.io/dataplane-mode": "ambient", translate.UseWaypointLabel: "waypoint"}
	}
	if c.waypoint {
		in.Waypoint = &translate.Waypoint{Namespace: propNS, Name: "waypoint", ServiceAccount: "waypoint"}
	}
	for _, s := range c.services {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: s.name, Namespace: propNS}}
		svc.Spec.Selector = s.selector
		switch s.label {
		case "":
		case "other":
			svc.Labels = map[string]string{translate.UseWaypointLabel: "other", translate.UseWaypointNamespaceLabel: "platform"}
		default:
			svc.Labels = map[string]string{translate.UseWaypointLabel: s.label}
		}
		for _, p := range s.ports {
			sp := corev1.ServicePort{Name: p.name, Port: p.port, TargetPort: p.target, Protocol: corev1.ProtocolTCP}
			if p.udp {
				sp.Protocol = corev1.ProtocolUDP
			}
			svc.Spec.Ports = append(svc.Spec.Ports, sp)
		}
		in.Services = append(in.Services, svc)
		if s.backends != nil {
			in.ServiceBackends[s.name] = slices.Clone(s.backends)
		}
	}
	return in
}

// exact: every regex of a TrafficTarget that may be accepted is on the exact rung (no Envoy rung
// in ambient mode, whatever the mesh says).
func (c *aCase) exact() bool {
	d := *c.p
	d.policy = translate.RegexReject
	return d.exactRungs()
}

// ---- the check ----

const (
	kindDirect       = "over-allow directly at the pod (ztunnel allows, SMI does not)"
	kindViaWaypoint  = "over-allow through the waypoint, addressed to a Service (waypoint and ztunnel allow, SMI does not)"
	kindWaypointPod  = "over-allow through the waypoint's direct-to-pod chain"
	kindOtherWP      = "over-allow through another waypoint (ztunnel admits its identity)"
	kindUnderL4      = "under-allow without waypoint: an L4-only TrafficTarget's connection is denied directly"
	kindUnderService = "under-allow through the waypoint on a Service that sends only to the destination, all rungs exact"
	kindNoBaseline   = "a waypoint without the waypoint's baseline"
)

// Allowed requests seen by the checks, per path: the property is vacuous on a path that never allows.
var allowedDirect, allowedViaWaypoint atomic.Int64

// Requests the "nothing less" checks applied to, per path.
var exactDirect, exactViaWaypoint atomic.Int64

type ambientOutputs struct {
	res *translate.AmbientAccessResult
	aps []*securityv1beta1.AuthorizationPolicy
	pas []*securityv1beta1.PeerAuthentication
}

func translateAmbient(c *aCase) (*ambientOutputs, error) {
	res, err := translate.TranslateAmbientAccess(c.input())
	if err != nil {
		return nil, err
	}
	o := &ambientOutputs{res: res}
	for _, tr := range res.Targets {
		o.aps = append(o.aps, tr.AuthorizationPolicies...)
		o.pas = append(o.pas, tr.PeerAuthentications...)
	}
	// The namespace's baseline (Enforcing mode) and the waypoint's.
	o.aps = append(o.aps, &securityv1beta1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "smi2istio-default-deny", Namespace: propNS}})
	if res.WaypointBaseline != nil {
		o.aps = append(o.aps, res.WaypointBaseline)
	}
	return o, nil
}

func validateAmbient(o *ambientOutputs) error {
	if len(o.res.EnvoyFilters) > 0 {
		return fmt.Errorf("EnvoyFilters in ambient mode")
	}
	var objs []k8sruntime.Object
	for _, tr := range o.res.Targets {
		objs = append(objs, tr.Objects()...)
	}
	if o.res.WaypointBaseline != nil {
		objs = append(objs, o.res.WaypointBaseline)
	}
	for _, ob := range objs {
		mo, ok := ob.(named)
		if !ok {
			return fmt.Errorf("output %T has no metadata", ob)
		}
		if err := checkMeta(ob.GetObjectKind().GroupVersionKind().Kind, mo); err != nil {
			return err
		}
		if err := istiocheck.Validate(ob); err != nil {
			return err
		}
	}
	return nil
}

func checkAmbient(c *aCase, reqs []request, validate bool) []failure {
	return checkAmbientWith(translateAmbient, c, reqs, validate)
}

// checkAmbientWith checks the outputs tr gives for the case (tr is translateAmbient, or a mutant of
// it in TestAmbientPropertyCatchesMutants).
func checkAmbientWith(tr func(*aCase) (*ambientOutputs, error), c *aCase, reqs []request, validate bool) []failure {
	o, err := tr(c)
	if err != nil {
		return []failure{{kind: kindTranslateError, detail: err.Error()}}
	}
	var out []failure
	if validate {
		if err := validateAmbient(o); err != nil {
			out = append(out, failure{kind: kindInvalidOutput, detail: err.Error()})
		}
	}
	if c.waypoint && o.res.WaypointBaseline == nil {
		out = append(out, failure{kind: kindNoBaseline, detail: "TranslateAmbientAccess returned no WaypointBaseline"})
	}
	td := c.p.td()
	wp := c.waypointRef()
	zt := map[string]*ztunnelAuthz{}
	covered := map[string]bool{}
	for _, w := range c.p.workloads() {
		z, err := newZtunnelAuthz(o.aps, o.pas, propNS, w.Labels)
		if err == nil {
			zt[w.Name] = z
		} else {
			return append(out, failure{kind: kindUnmodelled, detail: err.Error()})
		}
		for _, s := range o.res.Selectors {
			covered[w.Name] = covered[w.Name] || (w.ServiceAccount == propSA && selects(s.Labels, w.Labels))
		}
	}
	direct, err := newWaypointChain(o.aps, wp, propNS, "")
	if err != nil {
		return append(out, failure{kind: kindUnmodelled, detail: err.Error()})
	}
	chains := map[string]*waypointChain{}
	for i := range c.services {
		s := &c.services[i]
		if c.binding(s) != "waypoint" {
			continue
		}
		ch, err := newWaypointChain(o.aps, wp, propNS, s.name)
		if err != nil {
			return append(out, failure{kind: kindUnmodelled, detail: err.Error()})
		}
		chains[s.name] = ch
	}
	model := c.p.model()
	exact := c.exact()
	seen := map[string]bool{}
	for _, f := range out {
		seen[f.kind] = true
	}
	fail := func(kind string, q request, detail string) {
		if !seen[kind] {
			seen[kind] = true
			out = append(out, failure{kind: kind, req: &q, detail: detail})
		}
	}
	sas := map[string]string{}
	for _, w := range c.p.workloads() {
		sas[w.Name] = w.ServiceAccount
	}
	podAllows := func(q request, identity string) (bool, string) {
		if identity == "spiffe://"+wp.principal && sas[q.workload] != propSA {
			// Another ServiceAccount's TrafficTargets (not translated here) may make its ztunnel
			// admit the waypoint too: assume they do, on every port.
			return true, "the waypoint admitted by ServiceAccount " + sas[q.workload] + "'s own TrafficTargets (assumed)"
		}
		return zt[q.workload].allows(ztConn{identity: identity, port: q.port})
	}
	for _, q := range reqs {
		smi := model.allows(q, true)
		cn := q.conn(td)
		// Directly at the pod, with the source's identity.
		if ok, why := podAllows(q, cn.peer); ok {
			allowedDirect.Add(1)
			if !smi {
				fail(kindDirect, q, why)
			}
		}
		if !c.waypoint {
			if covered[q.workload] && model.allows(q, false) {
				for i := range model.targets {
					t := &model.targets[i]
					if t.status == targetValid && !t.hasHTTP && model.targetAllows(t, q) {
						exactDirect.Add(1)
						if ok, why := podAllows(q, cn.peer); !ok {
							fail(kindUnderL4, q, why)
						}
						break
					}
				}
			}
		}
		// Through another waypoint: the pod sees its identity.
		if ok, why := podAllows(q, "spiffe://"+td+"/ns/platform/sa/other"); ok && !smi {
			fail(kindOtherWP, q, why)
		}
		if !c.waypoint {
			continue
		}
		// Through our waypoint's direct-to-pod chain.
		if ok, why := direct.allows(cn); ok {
			if ok2, why2 := podAllows(q, "spiffe://"+wp.principal); ok2 && !smi {
				fail(kindWaypointPod, q, why+"; "+why2)
			}
		}
		// Through our waypoint, addressed to a Service bound to it.
		for i := range c.services {
			s := &c.services[i]
			ch := chains[s.name]
			if ch == nil {
				continue
			}
			for _, sp := range s.ports {
				if !slices.Contains(c.reached(s, sp), target{q.workload, q.port}) {
					continue
				}
				sc := *cn
				sc.port = uint32(sp.port)
				okW, whyW := ch.allows(&sc)
				okZ, whyZ := podAllows(q, "spiffe://"+wp.principal)
				via := fmt.Sprintf("addressed to Service %s port %d: %s; %s", s.name, sp.port, whyW, whyZ)
				if okW && okZ {
					allowedViaWaypoint.Add(1)
					if !smi {
						fail(kindViaWaypoint, q, via)
					}
				}
				if exact && covered[q.workload] && model.allows(q, false) && c.precise(s, sp, q.port) {
					exactViaWaypoint.Add(1)
					if !okW || !okZ {
						fail(kindUnderService, q, via)
					}
				}
			}
		}
	}
	return out
}

// ---- shrinking and reporting ----

func (c *aCase) clone() *aCase {
	d := *c
	d.p = c.p.clone()
	d.services = slices.Clone(c.services)
	return &d
}

func shrinkAmbient(c *aCase, f failure) (*aCase, failure) {
	still := func(d *aCase) (failure, bool) {
		var reqs []request
		if f.req != nil {
			if !slices.ContainsFunc(d.p.workloads(), func(w translate.Workload) bool { return w.Name == f.req.workload }) {
				return failure{}, false
			}
			reqs = []request{*f.req}
		}
		for _, g := range checkAmbient(d, reqs, f.kind == kindInvalidOutput) {
			if g.kind == f.kind {
				return g, true
			}
		}
		return failure{}, false
	}
	for steps := 0; steps < 500; steps++ {
		var cands []*aCase
		for _, p := range shrinks(c.p) {
			d := c.clone()
			d.p = p
			cands = append(cands, d)
		}
		for i := range c.services {
			d := c.clone()
			d.services = slices.Delete(d.services, i, i+1)
			cands = append(cands, d)
		}
		progress := false
		for _, d := range cands {
			if g, ok := still(d); ok {
				c, f, progress = d, g, true
				break
			}
		}
		if !progress {
			break
		}
	}
	return c, f
}

func (c *aCase) String() string {
	var b strings.Builder
	b.WriteString(c.p.String())
	fmt.Fprintf(&b, "  waypoint shop/waypoint exists: %v; namespace labelled use-waypoint=waypoint: %v\n", c.waypoint, c.nsLabel)
	for _, s := range c.services {
		var ports []string
		for _, p := range s.ports {
			x := fmt.Sprintf("%d(%s)->%s", p.port, p.name, p.target.String())
			if p.udp {
				x += "/UDP"
			}
			ports = append(ports, x)
		}
		fmt.Fprintf(&b, "  Service %s: selector %v, ports %s, backends %v, use-waypoint %q (%s)\n", s.name, s.selector, strings.Join(ports, " "), s.backends, s.label, c.binding(&s))
	}
	return b.String()
}

func describeAmbient(c *aCase) string {
	o, err := translateAmbient(c)
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, tr := range o.res.Targets {
		if tr.Err != nil {
			fmt.Fprintf(&b, "  TrafficTarget %s: not accepted: %v\n", tr.Name, tr.Err)
		}
	}
	for _, ap := range o.aps {
		y, _ := yaml.Marshal(&ap.Spec)
		fmt.Fprintf(&b, "  AuthorizationPolicy %s:\n    %s\n", ap.Name, strings.ReplaceAll(strings.TrimSpace(string(y)), "\n", "\n    "))
	}
	for _, pa := range o.pas {
		fmt.Fprintf(&b, "  PeerAuthentication %s selecting %v\n", pa.Name, pa.Spec.GetSelector().GetMatchLabels())
	}
	return b.String()
}

func TestAmbientProperty(t *testing.T) {
	seed, n := *ambientSeed, *ambientCases
	first, last := 0, n
	if *ambientOnly >= 0 {
		first, last = *ambientOnly, *ambientOnly+1
	}
	type result struct {
		c                           *aCase
		failures                    []failure
		requests, smiAllowed, viaWP int
	}
	start := time.Now()
	results := make([]result, last-first)
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < min(runtime.GOMAXPROCS(0), 4); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				r := caseRand(seed+7919, i)
				c := genAmbient(r)
				reqs := c.p.requests(r)
				res := result{c: c, requests: len(reqs)}
				model := c.p.model()
				for _, q := range reqs {
					if model.allows(q, false) {
						res.smiAllowed++
					}
				}
				if c.waypoint {
					res.viaWP = 1
				}
				res.failures = checkAmbient(c, reqs, i%4 == 0 || *ambientOnly >= 0)
				results[i-first] = res
			}
		}()
	}
	for i := first; i < last; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	const examples = 3
	type found struct {
		index int
		c     *aCase
		f     failure
	}
	firsts := map[string][]found{}
	counts := map[string]int{}
	var order []string
	requests, smiAllowed, waypoints := 0, 0, 0
	for k, res := range results {
		requests, smiAllowed, waypoints = requests+res.requests, smiAllowed+res.smiAllowed, waypoints+res.viaWP
		for _, f := range res.failures {
			counts[f.kind]++
			if len(firsts[f.kind]) == 0 {
				order = append(order, f.kind)
			}
			if len(firsts[f.kind]) < examples {
				firsts[f.kind] = append(firsts[f.kind], found{index: first + k, c: res.c, f: f})
			}
		}
	}
	t.Logf("seed %d, cases %d..%d (%d with a waypoint): %d requests, %d allowed by SMI (strict), %v",
		seed, first, last-1, waypoints, requests, smiAllowed, time.Since(start).Round(time.Millisecond))
	if smiAllowed == 0 {
		t.Errorf("no request was allowed by SMI: the property is vacuous")
	}
	t.Logf("allowed directly at the pod: %d; through the waypoint: %d", allowedDirect.Load(), allowedViaWaypoint.Load())
	t.Logf("checked for under-allow: directly %d, through the waypoint %d", exactDirect.Load(), exactViaWaypoint.Load())
	if allowedDirect.Load()*allowedViaWaypoint.Load()*exactDirect.Load()*exactViaWaypoint.Load() == 0 {
		t.Errorf("no request was allowed on one of the paths: the property is vacuous there")
	}
	sort.Strings(order)
	for _, kind := range order {
		msg := fmt.Sprintf("%s: %d of %d cases (-ambient.seed=%d)", kind, counts[kind], last-first, seed)
		for _, fd := range firsts[kind] {
			c, f := shrinkAmbient(fd.c, fd.f)
			msg += fmt.Sprintf("\n--- case %d (-ambient.case=%d), shrunk input:\n%s", fd.index, fd.index, c)
			if f.req != nil {
				msg += fmt.Sprintf("request: %s\n  SMI (strict/lenient): %v/%v; Istio: %s\n", f.req, c.p.smiAllows(*f.req, false), c.p.smiAllows(*f.req, true), f.detail)
			} else {
				msg += "  " + f.detail + "\n"
			}
			msg += "outputs:\n" + describeAmbient(c)
		}
		t.Error(msg)
	}
}

// The check must be able to fail: mutants of the translation's outputs, each a way to allow more
// than SMI, are caught.
func TestAmbientPropertyCatchesMutants(t *testing.T) {
	isAdmission := func(ap *securityv1beta1.AuthorizationPolicy) bool {
		return ap.Spec.Selector != nil && len(ap.Spec.Rules) == 1 && len(ap.Spec.Rules[0].From) == 1 &&
			strings.HasSuffix(ap.Spec.Rules[0].From[0].GetSource().GetPrincipals()[0], "/sa/waypoint")
	}
	mutants := []struct {
		name string
		kind string
		mut  func(o *ambientOutputs)
	}{
		{"ztunnel admits every peer, not only the waypoint", kindDirect, func(o *ambientOutputs) {
			for _, ap := range o.aps {
				if isAdmission(ap) {
					ap.Spec.Rules[0].From[0].Source.Principals = []string{"*"}
				}
			}
		}},
		{"no waypoint baseline and no allow-nothing Service policies", kindWaypointPod, func(o *ambientOutputs) {
			var keep []*securityv1beta1.AuthorizationPolicy
			for _, ap := range o.aps {
				if len(ap.Spec.TargetRefs) == 0 || len(ap.Spec.Rules) > 0 {
					keep = append(keep, ap)
				}
			}
			o.aps = keep
		}},
		{"waypoint policies without their HTTP fields", kindViaWaypoint, func(o *ambientOutputs) {
			for _, ap := range o.aps {
				if len(ap.Spec.TargetRefs) == 0 {
					continue
				}
				for _, r := range ap.Spec.Rules {
					r.When = nil
					for _, to := range r.To {
						to.Operation.Methods, to.Operation.Paths, to.Operation.Hosts = nil, nil, nil
					}
				}
			}
		}},
	}
	for _, m := range mutants {
		caught := 0
		for i := 0; i < 300 && caught == 0; i++ {
			r := caseRand(4242, i)
			c := genAmbient(r)
			reqs := c.p.requests(r)
			mutant := func(c *aCase) (*ambientOutputs, error) {
				o, err := translateAmbient(c)
				if err == nil {
					m.mut(o)
				}
				return o, err
			}
			for _, f := range checkAmbientWith(mutant, c, reqs, false) {
				if f.kind == m.kind {
					caught++
				}
			}
		}
		if caught == 0 {
			t.Errorf("mutant %q: not caught as %q in 300 cases", m.name, m.kind)
		}
	}
}
