package translate_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	splitv1alpha4 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/split/v1alpha4"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/smi2istio/smi2istio/internal/offline"
	"github.com/smi2istio/smi2istio/internal/testing/istiocheck"
	"github.com/smi2istio/smi2istio/translate"
)

// gatewayOnlyReasons are findings of one output API only: the gateways annotation and the TCP
// ports without a TCPRoute CRD.
var gatewayOnlyReasons = map[string]bool{"MeshGatewayOmitted": true, "GatewaysIgnored": true, "TCPRouteNotServed": true}

// Every split of every golden case (VirtualService and Gateway API ones) translates to Gateway
// API routes with the findings of TranslateSplit, and with the weights of its VirtualService on
// each port: one set of rules for both output APIs.
func TestGammaSameAsVirtualService(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join("testdata", "*", "input.yaml"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no inputs: %v", err)
	}
	splits := 0
	for _, path := range dirs {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := offline.Decode(data)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		set, err := offline.Load(objs)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		for _, ts := range set.Splits {
			splits++
			in := translate.SplitInput{
				Split: ts, Services: set.Services[ts.Namespace], RouteGroups: set.RouteGroups[ts.Namespace],
				RouteGroupErrors: set.RouteGroupErrors[ts.Namespace],
			}
			name := fmt.Sprintf("%s: TrafficSplit %s/%s", path, ts.Namespace, ts.Name)
			vs, vsErr := translate.TranslateSplit(in)
			gw, gwErr := translate.TranslateSplitGateway(in, translate.GatewayOptions{TCPRouteVersion: translate.TCPRouteV1})
			var vsInv, gwInv *translate.InvalidError
			if errors.As(vsErr, &vsInv) != errors.As(gwErr, &gwInv) || (vsErr != nil) != (gwErr != nil) {
				t.Errorf("%s: VirtualService translation error %v, Gateway API translation error %v", name, vsErr, gwErr)
				continue
			}
			if vsErr != nil {
				if vsInv.Reason != gwInv.Reason || (vsInv.Reason != translate.ReasonInvalidOutput && vsInv.Finding != gwInv.Finding) {
					t.Errorf("%s: not accepted for other reasons:\n  VirtualService: %v\n  Gateway API:    %v", name, vsInv.Finding, gwInv.Finding)
				}
				continue
			}
			if !reflect.DeepEqual(vs.Unresolved, gw.Unresolved) {
				t.Errorf("%s: unresolved differ:\n  VirtualService: %v\n  Gateway API:    %v", name, vs.Unresolved, gw.Unresolved)
			}
			if a, b := withoutReasons(vs.Warnings, gatewayOnlyReasons), withoutReasons(gw.Warnings, gatewayOnlyReasons); !reflect.DeepEqual(a, b) {
				t.Errorf("%s: warnings differ:\n  VirtualService: %v\n  Gateway API:    %v", name, a, b)
			}
			if want, got := vsWeights(vs), gwWeights(gw); !reflect.DeepEqual(want, got) {
				t.Errorf("%s: split weights per port differ:\n  VirtualService: %v\n  Gateway API:    %v", name, want, got)
			}
		}
	}
	if splits < 20 {
		t.Errorf("only %d splits compared", splits)
	}
}

func withoutReasons(fs []translate.Finding, drop map[string]bool) []translate.Finding {
	out := []translate.Finding{}
	for _, f := range fs {
		if !drop[f.Reason] {
			out = append(out, f)
		}
	}
	return out
}

// vsWeights: per port, the weights of the split route (the route with matches when there are
// matches); a port whose traffic all goes to the root Service has none.
func vsWeights(r *translate.SplitResult) map[string][]int32 {
	out := map[string][]int32{}
	if r.VirtualService == nil {
		return out
	}
	host := r.Host
	for _, h := range r.VirtualService.Spec.Http {
		port, _, _ := strings.Cut(strings.TrimPrefix(h.Name, "port-"), "-")
		if strings.HasSuffix(h.Name, "-default") || (len(h.Route) == 1 && h.Route[0].Destination.Host == host && h.Route[0].Destination.Subset == "") {
			continue
		}
		var ws []int32
		for _, d := range h.Route {
			w := d.Weight
			if len(h.Route) == 1 {
				w = 100
			}
			ws = append(ws, w)
		}
		out["http/"+port] = ws
	}
	for _, tcp := range r.VirtualService.Spec.Tcp {
		if len(tcp.Route) == 1 && tcp.Route[0].Destination.Host == host && tcp.Route[0].Destination.Subset == "" {
			continue
		}
		port := fmt.Sprint(tcp.Route[0].Destination.Port.Number)
		if len(tcp.Match) > 0 {
			port = fmt.Sprint(tcp.Match[0].Port)
		}
		var ws []int32
		for _, d := range tcp.Route {
			w := d.Weight
			if len(tcp.Route) == 1 {
				w = 100
			}
			ws = append(ws, w)
		}
		out["tcp/"+port] = ws
	}
	return out
}

func gwWeights(r *translate.GatewaySplitResult) map[string][]int32 {
	out := map[string][]int32{}
	portOf := func(refs []gatewayv1.ParentReference, fallback gatewayv1.PortNumber) string {
		if refs[0].Port != nil {
			return fmt.Sprint(*refs[0].Port)
		}
		return fmt.Sprint(fallback)
	}
	for _, h := range r.HTTPRoutes {
		var ws []int32
		for _, b := range h.Spec.Rules[0].BackendRefs {
			ws = append(ws, *b.Weight)
		}
		// A single-port root: the port of the root backend (in the last rule) or of the split.
		rootPort := h.Spec.Rules[len(h.Spec.Rules)-1].BackendRefs[0].Port
		out["http/"+portOf(h.Spec.ParentRefs, *rootPort)] = ws
	}
	for _, tr := range r.TCPRoutes {
		var ws []int32
		for _, b := range tr.Spec.Rules[0].BackendRefs {
			ws = append(ws, *b.Weight)
		}
		out["tcp/"+portOf(tr.Spec.ParentRefs, *tr.Spec.Rules[0].BackendRefs[0].Port)] = ws
	}
	return out
}

// istioMatch is what Istio's HTTPRoute conversion orders the routes of an HTTPRoute by: every
// match becomes a route of its own, sorted (stable) Exact > Prefix > RegularExpression path, then
// longer value first, then with a method first, then more headers first; routes after a catch-all
// (prefix "/" or regex ".*", no headers) are dropped by the sidecar and the waypoint.
// istio.io/istio pilot/pkg/config/kube/gateway: sortHTTPRoutes, getURIRank, getURILength;
// pilot/pkg/networking/core/route: IsCatchAllRoute.
type istioMatch struct {
	rule                string
	rank, length        int
	method, catchAll    bool
	headers, rulesIndex int
}

func istioOrder(route *gatewayv1.HTTPRoute) []istioMatch {
	var ms []istioMatch
	for i, r := range route.Spec.Rules {
		for _, m := range r.Matches {
			im := istioMatch{rule: string(*r.Name), rulesIndex: i, method: m.Method != nil, headers: len(m.Headers)}
			switch *m.Path.Type {
			case gatewayv1.PathMatchExact:
				im.rank = 3
			case gatewayv1.PathMatchPathPrefix:
				im.rank = 2
			case gatewayv1.PathMatchRegularExpression:
				im.rank = 1
			}
			im.length = len(*m.Path.Value)
			im.catchAll = !im.method && im.headers == 0 &&
				((im.rank == 2 && *m.Path.Value == "/") || (im.rank == 1 && *m.Path.Value == ".*"))
			ms = append(ms, im)
		}
	}
	sort.SliceStable(ms, func(i, j int) bool {
		a, b := ms[i], ms[j]
		switch {
		case a.rank != b.rank:
			return a.rank > b.rank
		case a.length != b.length:
			return a.length > b.length
		case a.method != b.method:
			return a.method
		default:
			return a.headers > b.headers
		}
	})
	for i, m := range ms {
		if m.catchAll {
			return ms[:i+1]
		}
	}
	return ms
}

// In Istio's order, every match of the split rules comes before the rule to the root Service,
// which is last and catches everything, unless a split match catches everything itself (then
// Istio drops what follows it, the root rule included: every request is split, as in SMI).
func checkIstioOrder(t *testing.T, name string, route *gatewayv1.HTTPRoute) {
	t.Helper()
	want := 0
	for _, r := range route.Spec.Rules {
		want += len(r.Matches)
	}
	got := istioOrder(route)
	for i, m := range got[:len(got)-1] {
		if !strings.HasPrefix(m.rule, translate.GatewaySplitRule) {
			t.Errorf("%s: Istio orders rule %s at %d, before a split rule: %+v", name, m.rule, i, got)
		}
	}
	last := got[len(got)-1]
	switch {
	case !last.catchAll:
		t.Errorf("%s: the last route in Istio's order does not catch everything: %+v", name, got)
	case last.rule == translate.GatewayRootRule && len(got) != want:
		t.Errorf("%s: Istio keeps %d of %d matches: %+v", name, len(got), want, got)
	}
}

func TestGammaIstioOrder(t *testing.T) {
	routes := 0
	for _, dir := range gammaCases(t) {
		data, err := os.ReadFile(filepath.Join(dir, gammaOutput))
		if err != nil {
			t.Fatal(err)
		}
		objs := decodeGammaStrict(t, data)
		for _, o := range objs {
			if h, ok := o.(*gatewayv1.HTTPRoute); ok {
				routes++
				checkIstioOrder(t, dir+": "+h.Name, h)
			}
		}
	}
	// Path regexes of every length around the catch-all's, with and without headers and methods.
	for _, re := range []string{"/", "a", "/a", ".*", "/.*", "/ab", "(/)", "[/]"} {
		for _, extra := range []string{"", "headers", "method"} {
			g := &translate.HTTPRouteGroup{ObjectMeta: metav1.ObjectMeta{Name: "g", Namespace: "shop"}}
			m := translate.HTTPMatch{Name: "m", PathRegex: re}
			switch extra {
			case "headers":
				m.Headers = []translate.Header{{Name: "x-user", Value: "jason"}}
			case "method":
				m.Methods = []string{"GET"}
			}
			g.Matches = []translate.HTTPMatch{m, {Name: "other", Headers: []translate.Header{{Name: "x-other", Value: "1"}}}}
			in := webSplit(map[string]int{"web-v1": 1, "web-v2": 1})
			in.Split.Spec.Matches = []corev1.TypedLocalObjectReference{{Kind: "HTTPRouteGroup", Name: "g"}}
			in.RouteGroups = map[string]*translate.HTTPRouteGroup{"g": g}
			res, err := translate.TranslateSplitGateway(in, translate.GatewayOptions{})
			if err != nil {
				t.Fatalf("%q %s: %v", re, extra, err)
			}
			routes++
			checkIstioOrder(t, fmt.Sprintf("path %q %s", re, extra), res.HTTPRoutes[0])
			for _, o := range res.Objects() {
				if err := istiocheck.ValidateGatewayAPI(o); err != nil {
					t.Errorf("path %q %s: %v", re, extra, err)
				}
			}
		}
	}
	if routes < 30 {
		t.Errorf("only %d routes checked", routes)
	}
	// The check can fail: a catch-all before the split rules.
	bad := &gatewayv1.HTTPRoute{Spec: gatewayv1.HTTPRouteSpec{Rules: []gatewayv1.HTTPRouteRule{
		{Name: ptr(gatewayv1.SectionName("split")), Matches: []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{
			Type: ptr(gatewayv1.PathMatchRegularExpression), Value: ptr("/api/.*")}}}},
		{Name: ptr(gatewayv1.SectionName("root")), Matches: []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{
			Type: ptr(gatewayv1.PathMatchPathPrefix), Value: ptr("/")}}}},
	}}}
	ft := &testing.T{}
	checkIstioOrder(ft, "bad", bad)
	if !ft.Failed() {
		t.Error("a root rule with prefix / before a regex split rule passed the order check")
	}
}

func ptr[T any](v T) *T { return &v }

// webSplit is a split of Service web (port 80) in namespace shop over the given backends.
func webSplit(weights map[string]int) translate.SplitInput {
	svc := func(name string, port int32) *corev1.Service {
		return &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: port}}},
		}
	}
	in := translate.SplitInput{
		Split: &splitv1alpha4.TrafficSplit{
			ObjectMeta: metav1.ObjectMeta{Name: "web-split", Namespace: "shop"},
			Spec:       splitv1alpha4.TrafficSplitSpec{Service: "web"},
		},
		Services: map[string]*corev1.Service{"web": svc("web", 80)},
	}
	names := make([]string, 0, len(weights))
	for n := range weights {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		in.Services[n] = svc(n, 80)
		in.Split.Spec.Backends = append(in.Split.Spec.Backends, splitv1alpha4.TrafficSplitBackend{Service: n, Weight: weights[n]})
	}
	return in
}

func TestGammaOptions(t *testing.T) {
	in := webSplit(map[string]int{"web-v1": 1})
	_, err := translate.TranslateSplitGateway(in, translate.GatewayOptions{TCPRouteVersion: "v2"})
	var inv *translate.InvalidError
	if err == nil || errors.As(err, &inv) {
		t.Errorf("TCPRoute version v2: got %v, want an error that is not the split's", err)
	}
}

// Outputs the CRDs would reject are never returned: the split is not accepted (InvalidOutput).
func TestGammaInvalidOutput(t *testing.T) {
	for name, match := range map[string]translate.HTTPMatch{
		"more matches than a route holds": {Name: "m", PathRegex: "/x/.*", Methods: []string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}},
		"empty header regex":              {Name: "m", Headers: []translate.Header{{Name: "x-user", Value: ""}}},
		"pseudo-header":                   {Name: "m", Headers: []translate.Header{{Name: ":path", Value: "/x"}}},
		"path regex too long":             {Name: "m", PathRegex: "/" + strings.Repeat("a", 1024)},
	} {
		t.Run(name, func(t *testing.T) {
			g := &translate.HTTPRouteGroup{ObjectMeta: metav1.ObjectMeta{Name: "g", Namespace: "shop"}}
			copies := 1
			if name == "more matches than a route holds" {
				copies = 15 // 15 x 9 methods = 135 matches: more than the 127 of one HTTPRoute
			}
			for i := 0; i < copies; i++ {
				g.Matches = append(g.Matches, match)
			}
			in := webSplit(map[string]int{"web-v1": 1})
			in.Split.Spec.Matches = []corev1.TypedLocalObjectReference{{Kind: "HTTPRouteGroup", Name: "g"}}
			in.RouteGroups = map[string]*translate.HTTPRouteGroup{"g": g}
			res, err := translate.TranslateSplitGateway(in, translate.GatewayOptions{})
			var inv *translate.InvalidError
			if !errors.As(err, &inv) || inv.Reason != translate.ReasonInvalidOutput {
				t.Fatalf("got %+v, %v; want an InvalidOutput error", res, err)
			}
		})
	}
}

// The many-matches case fills a rule: the matches are spread over rules of at most 64.
func TestGammaManyMatchesRules(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "gamma-many-matches", gammaOutput))
	if err != nil {
		t.Fatal(err)
	}
	objs := decodeGammaStrict(t, data)
	h := objs[0].(*gatewayv1.HTTPRoute)
	var sizes []int
	for _, r := range h.Spec.Rules {
		sizes = append(sizes, len(r.Matches))
	}
	if want := []int{64, 6, 1}; !reflect.DeepEqual(sizes, want) {
		t.Errorf("matches per rule %v, want %v", sizes, want)
	}
}

// ValidateGatewayOutput refuses each way a route smi2istio writes can be wrong.
func TestValidateGatewayOutput(t *testing.T) {
	base := func() *gatewayv1.HTTPRoute {
		res, err := translate.TranslateSplitGateway(webSplit(map[string]int{"web-v1": 1, "web-v2": 3}), translate.GatewayOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return res.HTTPRoutes[0]
	}
	if err := translate.ValidateGatewayOutput(base()); err != nil {
		t.Fatalf("valid route: %v", err)
	}
	for name, tc := range map[string]struct {
		edit func(h *gatewayv1.HTTPRoute)
		want string
	}{
		"backend without port":   {func(h *gatewayv1.HTTPRoute) { h.Spec.Rules[0].BackendRefs[0].Port = nil }, "needs a port"},
		"backend without weight": {func(h *gatewayv1.HTTPRoute) { h.Spec.Rules[0].BackendRefs[0].Weight = nil }, "weight"},
		"weight too large":       {func(h *gatewayv1.HTTPRoute) { h.Spec.Rules[0].BackendRefs[0].Weight = ptr(int32(1000001)) }, "weight"},
		"parent is a Gateway":    {func(h *gatewayv1.HTTPRoute) { h.Spec.ParentRefs[0].Kind = ptr(gatewayv1.Kind("Gateway")) }, "kind Service"},
		"two parents without port": {func(h *gatewayv1.HTTPRoute) {
			h.Spec.ParentRefs = append(h.Spec.ParentRefs, h.Spec.ParentRefs[0])
		}, "need a port each"},
		"match without path": {func(h *gatewayv1.HTTPRoute) { h.Spec.Rules[0].Matches[0].Path = nil }, "written out"},
		"invalid regex": {func(h *gatewayv1.HTTPRoute) {
			h.Spec.Rules[0].Matches[0].Path = &gatewayv1.HTTPPathMatch{Type: ptr(gatewayv1.PathMatchRegularExpression), Value: ptr("/(a")}
		}, "RE2"},
		"lowercase method": {func(h *gatewayv1.HTTPRoute) { h.Spec.Rules[0].Matches[0].Method = ptr(gatewayv1.HTTPMethod("get")) }, "method"},
		"header matched twice": {func(h *gatewayv1.HTTPRoute) {
			hm := gatewayv1.HTTPHeaderMatch{Name: "X-A", Type: ptr(gatewayv1.HeaderMatchRegularExpression), Value: "a"}
			h.Spec.Rules[0].Matches[0].Headers = []gatewayv1.HTTPHeaderMatch{hm, hm}
		}, "matched twice"},
		"duplicate rule name": {func(h *gatewayv1.HTTPRoute) { h.Spec.Rules = append(h.Spec.Rules, h.Spec.Rules[0]) }, "unique"},
		"invalid name":        {func(h *gatewayv1.HTTPRoute) { h.Name = "Web_1" }, "metadata.name"},
		"wrong apiVersion":    {func(h *gatewayv1.HTTPRoute) { h.APIVersion = "gateway.networking.k8s.io/v1beta1" }, "apiVersion"},
		"hostnames":           {func(h *gatewayv1.HTTPRoute) { h.Spec.Hostnames = []gatewayv1.Hostname{"web"} }, "hostnames"},
	} {
		t.Run(name, func(t *testing.T) {
			h := base()
			tc.edit(h)
			err := translate.ValidateGatewayOutput(h)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	// Unstructured objects are decoded by kind; other kinds are refused.
	u, err := translate.ToUnstructured(base())
	if err != nil {
		t.Fatal(err)
	}
	if err := translate.ValidateGatewayOutput(u); err != nil {
		t.Errorf("unstructured valid route: %v", err)
	}
	other := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
		"metadata": map[string]any{"name": "web", "namespace": "shop"}}}
	if err := translate.ValidateGatewayOutput(other); err == nil {
		t.Error("a GRPCRoute passed")
	}
	var nothing runtime.Object = &corev1.Service{}
	if err := translate.ValidateGatewayOutput(nothing); err == nil {
		t.Error("a Service passed")
	}
}
