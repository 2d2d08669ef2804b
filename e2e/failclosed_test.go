//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"google.golang.org/protobuf/encoding/protojson"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// Fail closed on the real istiod (issue 16, "Prove it"): generated SMI access configurations for one
// destination with an HTTP port and a TCP port, judged on the Envoy config istiod generates for
// every chain against an independent reference model of SMI; and, while outputs are applied,
// changed and removed, every state of the destination's AuthorizationPolicies and EnvoyFilters the
// apiserver goes through, judged against the SMI objects in effect.

var failClosedSeed = flag.Int64("failclosed.seed", 0, "seed of TestFailClosedRandomized (0: $FAILCLOSED_SEED, else the time)")

const (
	fcNS       = "shop"
	fcDest     = "api"
	fcHTTPPort = 8080
	fcTCPPort  = 5432
)

// fcWorkload is the destination: ServiceAccount api, a Deployment running as it, a Service with an
// HTTP port and a TCP port.
const fcWorkload = `
apiVersion: v1
kind: ServiceAccount
metadata: {name: api, namespace: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      serviceAccountName: api
      containers:
      - name: app
        image: app
        ports: [{containerPort: 8080, name: http}, {containerPort: 5432, name: tcp-db}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  selector: {app: api}
  ports:
  - {name: http, port: 8080, targetPort: 8080}
  - {name: tcp-db, port: 5432, targetPort: 5432}
`

// ---- SMI configurations ----

type fcMatch struct {
	name    string
	methods []string
	path    string            // pathRegex; "" = none
	headers map[string]string // name -> regex
}

type fcGroup struct {
	name    string
	matches []fcMatch
}

type fcPortRoute struct {
	kind, name string // TCPRoute or UDPRoute
	ports      []int
}

type fcRule struct {
	kind, name string
	matches    []string
}

type fcTarget struct {
	name     string
	destPort int // v1alpha2 destination.port; 0 = none (v1alpha3)
	sources  []string
	rules    []fcRule
}

type fcConfig struct {
	groups  []fcGroup
	routes  []fcPortRoute
	targets []fcTarget
}

// Regexes: every valid one is on the exact rung or the Envoy rung (the default regex policy), so
// the outputs mean exactly what SMI means. The ambiguous ones may be rejected (the route group, its
// TrafficTarget or the whole destination) or dropped: they only bound "never more".
var (
	fcPaths          = []string{"", "/api/orders", "/api/.*", "/api/orders/[0-9]+", `.*\.css`, ".*", "/api/items/[a-z]+"}
	fcAmbiguousPaths = []string{"/api/(", "^$"}
	fcTenants        = []string{"acme", "ac.*", "[a-z]+", ".*"}
	fcAmbiguousTen   = []string{"", "a("}
	fcMethods        = [][]string{nil, {"GET"}, {"POST"}, {"GET", "POST"}, {"*"}}
	fcPathPool       = []string{"/api/orders", "/api/orders/7", "/api/orders/x", "/api/", "/x.css", "/other", "/api/items/abc", "/api/items/7"}
	fcTenantPool     = []string{"acme", "acme2", "ACME", "zz", "ab1"}
	fcSourceNames    = []string{"web", "batch", "audit"}
	// fcPeers are the request sources: every possible SMI source and one no TrafficTarget names.
	fcPeers = []string{"web", "batch", "audit", "intruder"}
)

func (m fcMatch) ambiguous() bool {
	if slices.Contains(fcAmbiguousPaths, m.path) {
		return true
	}
	for _, v := range m.headers {
		if slices.Contains(fcAmbiguousTen, v) {
			return true
		}
	}
	return false
}

func fcPick[T any](r *rand.Rand, xs []T) T { return xs[r.Intn(len(xs))] }

func genMatch(r *rand.Rand, name string) fcMatch {
	m := fcMatch{name: name, methods: fcPick(r, fcMethods), path: fcPick(r, fcPaths)}
	if r.Intn(12) == 0 {
		m.path = fcPick(r, fcAmbiguousPaths)
	}
	if r.Intn(2) == 0 {
		m.headers = map[string]string{"x-tenant": fcPick(r, fcTenants)}
		if r.Intn(12) == 0 {
			m.headers["x-tenant"] = fcPick(r, fcAmbiguousTen)
		}
	}
	return m
}

// genConfig: 1-3 TrafficTargets (v1alpha3, or v1alpha2 with a destination port), 1-2 route
// groups, TCPRoutes with and without ports, sometimes a UDPRoute, references to missing route
// groups and routes.
func genConfig(r *rand.Rand, id int) fcConfig {
	var c fcConfig
	p := fmt.Sprintf("c%02d-", id)
	for g := 0; g < 1+r.Intn(2); g++ {
		grp := fcGroup{name: fmt.Sprintf("%sg%d", p, g)}
		for m := 0; m < 1+r.Intn(3); m++ {
			grp.matches = append(grp.matches, genMatch(r, fmt.Sprintf("m%d", m)))
		}
		c.groups = append(c.groups, grp)
	}
	c.routes = []fcPortRoute{
		{kind: "TCPRoute", name: p + "tcp-any"},
		{kind: "TCPRoute", name: p + "tcp-db", ports: []int{fcTCPPort}},
		{kind: "TCPRoute", name: p + "tcp-http", ports: []int{fcHTTPPort}},
		{kind: "UDPRoute", name: p + "udp-db", ports: []int{fcTCPPort}},
	}
	letters := []string{"a", "b", "c"}
	r.Shuffle(len(letters), func(i, j int) { letters[i], letters[j] = letters[j], letters[i] })
	for i := 0; i < 1+r.Intn(3); i++ {
		t := fcTarget{name: p + letters[i]}
		if r.Intn(4) == 0 {
			t.destPort = fcPick(r, []int{fcHTTPPort, fcTCPPort})
		}
		srcs := slices.Clone(fcSourceNames)
		r.Shuffle(len(srcs), func(i, j int) { srcs[i], srcs[j] = srcs[j], srcs[i] })
		t.sources = srcs[:1+r.Intn(2)]
		for k := 0; k < 1+r.Intn(3); k++ {
			switch x := r.Intn(10); {
			case x < 5:
				g := fcPick(r, c.groups)
				rule := fcRule{kind: "HTTPRouteGroup", name: g.name}
				if r.Intn(2) == 0 {
					rule.matches = []string{fcPick(r, g.matches).name}
				}
				t.rules = append(t.rules, rule)
			case x < 6:
				t.rules = append(t.rules, fcRule{kind: "HTTPRouteGroup", name: p + "missing"})
			case x < 9:
				t.rules = append(t.rules, fcRule{kind: "TCPRoute", name: fcPick(r, c.routes[:3]).name})
			default:
				t.rules = append(t.rules, fcRule{kind: "UDPRoute", name: c.routes[3].name})
			}
		}
		c.targets = append(c.targets, t)
	}
	return c
}

func (c fcConfig) group(name string) *fcGroup {
	for i := range c.groups {
		if c.groups[i].name == name {
			return &c.groups[i]
		}
	}
	return nil
}

func (c fcConfig) route(kind, name string) *fcPortRoute {
	for i := range c.routes {
		if c.routes[i].kind == kind && c.routes[i].name == name {
			return &c.routes[i]
		}
	}
	return nil
}

// ambiguous: the target references a route group with an ambiguous regex, or has a UDPRoute next
// to an HTTPRouteGroup (SMI does not say whether the UDPRoute restricts the HTTP rules as a
// TCPRoute does; the operator reads it so, and allows nothing: narrower, so sound).
func (c fcConfig) ambiguous(t fcTarget) bool {
	if slices.ContainsFunc(t.rules, func(r fcRule) bool { return r.kind == "UDPRoute" }) &&
		slices.ContainsFunc(t.rules, func(r fcRule) bool { return r.kind == "HTTPRouteGroup" }) {
		return true
	}
	for _, rule := range t.rules {
		if g := c.group(rule.name); rule.kind == "HTTPRouteGroup" && g != nil {
			for _, m := range g.matches {
				if m.ambiguous() {
					return true
				}
			}
		}
	}
	return false
}

// clean: no ambiguous target, so the outputs must allow exactly what SMI allows.
func (c fcConfig) clean() bool {
	for _, t := range c.targets {
		if c.ambiguous(t) {
			return false
		}
	}
	return true
}

func (c fcConfig) String() string {
	var b strings.Builder
	for _, g := range c.groups {
		fmt.Fprintf(&b, "HTTPRouteGroup %s:", g.name)
		for _, m := range g.matches {
			fmt.Fprintf(&b, " {%s methods=%v pathRegex=%q headers=%v}", m.name, m.methods, m.path, m.headers)
		}
		b.WriteString("\n")
	}
	for _, r := range c.routes {
		fmt.Fprintf(&b, "%s %s ports=%v\n", r.kind, r.name, r.ports)
	}
	for _, t := range c.targets {
		fmt.Fprintf(&b, "TrafficTarget %s destPort=%d sources=%v rules=", t.name, t.destPort, t.sources)
		for _, r := range t.rules {
			fmt.Fprintf(&b, " %s/%s%v", r.kind, r.name, r.matches)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func fcObj(apiVersion, kind, name string, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	u.SetNamespace(fcNS)
	u.SetName(name)
	return u
}

func strs(ss []string) []any {
	out := make([]any, 0, len(ss))
	for _, s := range ss {
		out = append(out, s)
	}
	return out
}

// routeObjects are the route groups and routes, targetObjects the TrafficTargets.
func (c fcConfig) routeObjects() []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, g := range c.groups {
		var ms []any
		for _, m := range g.matches {
			mm := map[string]any{"name": m.name}
			if m.methods != nil {
				mm["methods"] = strs(m.methods)
			}
			if m.path != "" {
				mm["pathRegex"] = m.path
			}
			if len(m.headers) > 0 {
				h := map[string]any{}
				for k, v := range m.headers {
					h[k] = v
				}
				mm["headers"] = h
			}
			ms = append(ms, mm)
		}
		out = append(out, fcObj("specs.smi-spec.io/v1alpha4", "HTTPRouteGroup", g.name, map[string]any{"matches": ms}))
	}
	for _, r := range c.routes {
		m := map[string]any{"name": "m"}
		if len(r.ports) > 0 {
			var ps []any
			for _, p := range r.ports {
				ps = append(ps, int64(p))
			}
			m["ports"] = ps
		}
		out = append(out, fcObj("specs.smi-spec.io/v1alpha4", r.kind, r.name, map[string]any{"matches": m}))
	}
	return out
}

func (c fcConfig) targetObjects() []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, t := range c.targets {
		dest := map[string]any{"kind": "ServiceAccount", "name": fcDest, "namespace": fcNS}
		version := "access.smi-spec.io/v1alpha3"
		if t.destPort != 0 {
			version = "access.smi-spec.io/v1alpha2"
			dest["port"] = int64(t.destPort)
		}
		var srcs, rules []any
		for _, s := range t.sources {
			srcs = append(srcs, map[string]any{"kind": "ServiceAccount", "name": s, "namespace": fcNS})
		}
		for _, r := range t.rules {
			rule := map[string]any{"kind": r.kind, "name": r.name}
			if r.matches != nil {
				rule["matches"] = strs(r.matches)
			}
			rules = append(rules, rule)
		}
		out = append(out, fcObj(version, "TrafficTarget", t.name, map[string]any{"destination": dest, "sources": srcs, "rules": rules}))
	}
	return out
}

// ---- SMI's reference model ----

// fcQuery is one request or connection to the destination: from a ServiceAccount of the
// namespace, on a port, HTTP (method != "") or raw TCP.
type fcQuery struct {
	peer    string
	port    int
	method  string
	path    string
	headers map[string]string
}

// smiAllows is SMI's meaning, written from the access spec and README "Fail closed": TrafficTargets
// ORed, sources ORed, rules ORed, a group's matches ORed (a rule without matches: all of them),
// fields ANDed, regexes RE2 full matches, methods "*" = any; destination.port restricts every
// rule. In a TrafficTarget with an HTTPRouteGroup rule, TCPRoutes only restrict the ports of its
// HTTP requests (a missing one restricts to none) and allow no raw TCP; without one, a TCPRoute
// allows every connection and request on its ports (none listed: every port). A UDPRoute, a
// missing route group and an invalid regex allow nothing. lenient includes the ambiguous targets
// (the bound for "never more"); strict leaves them out (the bound for "nothing less").
func (c fcConfig) smiAllows(q fcQuery, lenient bool) bool {
	for _, t := range c.targets {
		if !lenient && c.ambiguous(t) {
			continue
		}
		if c.targetAllows(t, q) {
			return true
		}
	}
	return false
}

func (c fcConfig) targetAllows(t fcTarget, q fcQuery) bool {
	if !slices.Contains(t.sources, q.peer) || (t.destPort != 0 && t.destPort != q.port) {
		return false
	}
	var hasHTTP, hasTCP, tcpPort bool
	var matches []fcMatch
	for _, rule := range t.rules {
		switch rule.kind {
		case "HTTPRouteGroup":
			hasHTTP = true
			if g := c.group(rule.name); g != nil {
				for _, m := range g.matches {
					if rule.matches == nil || slices.Contains(rule.matches, m.name) {
						matches = append(matches, m)
					}
				}
			}
		case "TCPRoute":
			hasTCP = true
			if pr := c.route("TCPRoute", rule.name); pr != nil && (len(pr.ports) == 0 || slices.Contains(pr.ports, q.port)) {
				tcpPort = true
			}
		}
	}
	if q.method == "" || !hasHTTP {
		return !hasHTTP && tcpPort
	}
	if hasTCP && !tcpPort {
		return false
	}
	for _, m := range matches {
		if fcMatchAllows(m, q) {
			return true
		}
	}
	return false
}

func fcFull(expr, s string) bool {
	re, err := regexp.Compile("^(?:" + expr + ")$")
	return err == nil && re.MatchString(s)
}

func fcMatchAllows(m fcMatch, q fcQuery) bool {
	if len(m.methods) > 0 && !slices.Contains(m.methods, "*") && !slices.Contains(m.methods, q.method) {
		return false
	}
	if m.path != "" && !fcFull(m.path, q.path) {
		return false
	}
	for k, re := range m.headers {
		v, ok := q.headers[k]
		if !ok || !fcFull(re, v) {
			return false
		}
	}
	return true
}

// queries: every peer x (HTTP requests on the HTTP port made to hit the configuration's matches and
// to just miss them, a raw TCP connection on each port); at most 40.
func (c fcConfig) queries(r *rand.Rand) []fcQuery {
	type hq struct {
		method, path, tenant string
	}
	var cands []hq
	add := func(h hq) {
		if !slices.Contains(cands, h) {
			cands = append(cands, h)
		}
	}
	for _, g := range c.groups {
		for _, m := range g.matches {
			h := hq{method: "GET", path: "/api/orders/7"}
			for _, meth := range m.methods {
				if meth != "*" {
					h.method = meth
				}
			}
			for _, p := range fcPathPool {
				if m.path == "" || fcFull(m.path, p) {
					h.path = p
					break
				}
			}
			if re, ok := m.headers["x-tenant"]; ok {
				h.tenant = "zz"
				for _, v := range fcTenantPool {
					if fcFull(re, v) {
						h.tenant = v
						break
					}
				}
			}
			add(h)
			miss := h
			switch r.Intn(3) {
			case 0:
				miss.method = "DELETE"
			case 1:
				miss.path = fcPick(r, fcPathPool)
			default:
				miss.tenant = fcPick(r, append([]string{""}, fcTenantPool...))
			}
			add(miss)
		}
	}
	r.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	for len(cands) < 8 {
		add(hq{method: fcPick(r, []string{"GET", "POST"}), path: fcPick(r, fcPathPool), tenant: fcPick(r, fcTenantPool)})
	}
	cands = cands[:8]
	var out []fcQuery
	for _, peer := range fcPeers {
		for _, h := range cands {
			q := fcQuery{peer: peer, port: fcHTTPPort, method: h.method, path: h.path, headers: map[string]string{}}
			if h.tenant != "" {
				q.headers["x-tenant"] = h.tenant
			}
			out = append(out, q)
		}
		out = append(out, fcQuery{peer: peer, port: fcTCPPort}, fcQuery{peer: peer, port: fcHTTPPort})
	}
	return out
}

func (q fcQuery) request() Request {
	from := Proxy{Namespace: fcNS, ServiceAccount: q.peer}
	if q.method == "" {
		return tcp(from, uint32(q.port))
	}
	var hs []string
	for k, v := range q.headers {
		hs = append(hs, k, v)
	}
	return httpReq(from, uint32(q.port), q.method, q.path, hs...)
}

// ---- the cluster ----

// fcSetup starts a cluster with the destination registered (its sidecar) and the namespace's
// baseline in place.
func fcSetup(t *testing.T) (*cluster, Proxy) {
	cl := newCluster(t)
	cl.createNamespaces(fcNS)
	cl.joinMesh(fcNS)
	cl.applyYAML(fcWorkload)
	dest := cl.register(fcNS, fcDest)
	return cl, dest
}

// tryApply applies an object; an object the apiserver refuses (schema, names) is reported and left
// out, and the configuration is judged without it.
func (cl *cluster) tryApply(o *unstructured.Unstructured) bool {
	//nolint:staticcheck // SSA of an unstructured object, as kubectl apply --server-side does.
	err := cl.c.Patch(context.Background(), o.DeepCopy(), client.Apply, client.FieldOwner("kubectl"), client.ForceOwnership)
	if err != nil {
		if apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) {
			cl.t.Logf("the apiserver refuses %s %s: %v", o.GetKind(), o.GetName(), err)
			return false
		}
		cl.t.Fatalf("apply %s %s: %v", o.GetKind(), o.GetName(), err)
	}
	return true
}

func (cl *cluster) deleteObj(o *unstructured.Unstructured) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(o.GroupVersionKind())
	u.SetNamespace(o.GetNamespace())
	u.SetName(o.GetName())
	if err := cl.c.Delete(context.Background(), u); err != nil && !apierrors.IsNotFound(err) {
		cl.t.Fatalf("delete %s %s: %v", o.GetKind(), o.GetName(), err)
	}
}

// applyConfig writes a configuration's objects (route groups and routes first) and returns it as
// the apiserver took it: objects it refused are left out.
func (cl *cluster) applyConfig(c fcConfig) fcConfig {
	took := fcConfig{}
	for i, o := range c.routeObjects() {
		if !cl.tryApply(o) {
			continue
		}
		if i < len(c.groups) {
			took.groups = append(took.groups, c.groups[i])
		} else {
			took.routes = append(took.routes, c.routes[i-len(c.groups)])
		}
	}
	for i, o := range c.targetObjects() {
		if cl.tryApply(o) {
			took.targets = append(took.targets, c.targets[i])
		}
	}
	return took
}

func (cl *cluster) removeConfig(c fcConfig, routesToo bool) {
	for _, o := range c.targetObjects() {
		cl.deleteObj(o)
	}
	if routesToo {
		for _, o := range c.routeObjects() {
			cl.deleteObj(o)
		}
	}
}

var trafficTargetGVK = schema.GroupVersionKind{Group: "access.smi-spec.io", Version: "v1alpha3", Kind: "TrafficTarget"}

// operatorCurrent: the namespace's baseline (SMI's default deny) exists, every TrafficTarget of the
// configuration has a condition for its generation, no other TrafficTarget exists, and no policy of
// the destination belongs to another one. Without the baseline check, a config judged before the
// operator's first reconcile of the namespace (a slow start on a cold machine) is Istio's
// allow-all, which no SMI object has asked for but which is not the operator's output either.
func (cl *cluster) operatorCurrent(c fcConfig) error {
	ctx := context.Background()
	base := &unstructured.Unstructured{}
	base.SetGroupVersionKind(apGVR.GroupVersion().WithKind("AuthorizationPolicy"))
	if err := cl.c.Get(ctx, client.ObjectKey{Namespace: fcNS, Name: "smi2istio-default-deny"}, base); err != nil {
		return fmt.Errorf("the baseline of %s: %w", fcNS, err)
	}
	names := map[string]bool{}
	for _, t := range c.targets {
		names[t.name] = true
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(trafficTargetGVK)
		if err := cl.c.Get(ctx, client.ObjectKey{Namespace: fcNS, Name: t.name}, u); err != nil {
			return err
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		current := false
		for _, cd := range conds {
			m, _ := cd.(map[string]any)
			if fmt.Sprint(m["observedGeneration"]) == fmt.Sprint(u.GetGeneration()) {
				current = true
			}
		}
		if !current {
			return fmt.Errorf("TrafficTarget %s has no status for generation %d", t.name, u.GetGeneration())
		}
	}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(trafficTargetGVK.GroupVersion().WithKind("TrafficTargetList"))
	if err := cl.c.List(ctx, list, client.InNamespace(fcNS)); err != nil {
		return err
	}
	for _, u := range list.Items {
		if !names[u.GetName()] {
			return fmt.Errorf("TrafficTarget %s still exists", u.GetName())
		}
	}
	aps := &unstructured.UnstructuredList{}
	aps.SetGroupVersionKind(apGVR.GroupVersion().WithKind("AuthorizationPolicyList"))
	if err := cl.c.List(ctx, aps, client.InNamespace(fcNS), client.MatchingLabels{"smi2istio.io/source-kind": "TrafficTarget"}); err != nil {
		return err
	}
	for _, u := range aps.Items {
		if src := u.GetLabels()["smi2istio.io/source-name"]; !names[src] {
			return fmt.Errorf("AuthorizationPolicy %s of TrafficTarget %s still exists", u.GetName(), src)
		}
	}
	return nil
}

// judgeSettled waits until istiod's config for the destination has settled on what the operator
// wrote for c, then judges every query on every chain: a request or connection allowed on any
// connection shape must be allowed by SMI (lenient), and when c is clean, the sidecar's own
// connection must get exactly SMI's verdict on the HTTP port's requests and the TCP port.
func (cl *cluster) judgeSettled(step string, dest Proxy, c fcConfig, qs []fcQuery, describe func() string) {
	cl.t.Helper()
	deadline := time.Now().Add(timeout)
	var (
		prevCfg, prevQuiet, prevLines string
		streak                        int
		since                         time.Time
		last                          string
	)
	for time.Now().Before(deadline) {
		time.Sleep(pollEvery)
		if err := cl.operatorCurrent(c); err != nil {
			last, streak = err.Error(), 0
			continue
		}
		cfg, err := fetch(context.Background(), cl.istiodGRPC, dest)
		if err != nil {
			last, streak = err.Error(), 0
			continue
		}
		quiet, err := cl.quietState()
		if err != nil {
			last, streak = err.Error(), 0
			continue
		}
		in, err := cfg.Inbound()
		if err != nil {
			last, streak = err.Error(), 0
			continue
		}
		var over, under, lines []string
		var evalErr error
		for _, q := range qs {
			r := q.request()
			r.To = dest.IP
			ok, err := in.Verdict(r)
			if err != nil {
				evalErr = fmt.Errorf("%s: %w", r, err)
				break
			}
			outcomes, err := in.Sweep(r)
			if err != nil {
				evalErr = err
				break
			}
			lines = append(lines, verdictLine(r, ok))
			var leaks []string
			for _, o := range outcomes {
				if o.Allowed {
					leaks = append(leaks, o.String())
				}
			}
			if (ok || len(leaks) > 0) && !c.smiAllows(q, true) {
				if len(leaks) > 2 {
					leaks = append(leaks[:2], fmt.Sprintf("and %d more", len(leaks)-2))
				}
				over = append(over, fmt.Sprintf("%s: SMI denies it, istiod's config allows it (%s)", r, strings.Join(leaks, "; ")))
			}
			equal := q.method != "" || q.port == fcTCPPort
			if c.clean() && equal && ok != c.smiAllows(q, false) {
				under = append(under, fmt.Sprintf("%s: SMI %v, istiod's config %v", r, c.smiAllows(q, false), ok))
			}
		}
		if evalErr != nil {
			last, streak = evalErr.Error(), 0
			continue
		}
		joined := strings.Join(lines, "\n")
		if streak > 0 && cfg.Fingerprint() == prevCfg && quiet == prevQuiet && joined == prevLines {
			streak++
		} else {
			streak, since = 1, time.Now()
		}
		prevCfg, prevQuiet, prevLines = cfg.Fingerprint(), quiet, joined
		if streak < settlePolls || time.Since(since) < settleFor {
			last = "not settled"
			continue
		}
		if len(over) > 0 {
			cl.t.Fatalf("%s: OVER-ALLOW on a settled config (%s)\n%s\nverdicts:\n%s\n%s", step, describe(),
				strings.Join(over, "\n"), joined, cl.state())
		}
		if len(under) == 0 {
			return
		}
		last = "settled, but not SMI's verdicts:\n" + strings.Join(under, "\n")
	}
	cl.t.Fatalf("%s: no settled config as SMI means within %s (%s)\nlast: %s\n%s", step, timeout, describe(), last, cl.state())
}

func fcSeed() int64 {
	if *failClosedSeed != 0 {
		return *failClosedSeed
	}
	if s := os.Getenv("FAILCLOSED_SEED"); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return n
		}
	}
	return time.Now().UnixNano()
}

// TestFailClosedRandomized: 30 generated configurations of one destination (HTTP port 8080, TCP
// port 5432), each replacing the previous one, judged on istiod's settled config for every chain:
// never more than SMI allows; exactly what it allows when no regex is ambiguous. -failclosed.seed
// (or $FAILCLOSED_SEED) replays a run.
func TestFailClosedRandomized(t *testing.T) {
	seed := fcSeed()
	t.Logf("seed %d (replay: -failclosed.seed=%d)", seed, seed)
	r := rand.New(rand.NewSource(seed))
	cl, dest := fcSetup(t)
	const configs = 30
	var prev *fcConfig
	for i := range configs {
		want := genConfig(r, i)
		took := cl.applyConfig(want)
		if prev != nil {
			cl.removeConfig(*prev, true)
		}
		qs := took.queries(r)
		step := fmt.Sprintf("configuration %d/%d", i+1, configs)
		cl.judgeSettled(step, dest, took, qs, func() string {
			return fmt.Sprintf("seed %d, %s:\n%s", seed, step, took)
		})
		allowed := 0
		for _, q := range qs {
			if took.smiAllows(q, true) {
				allowed++
			}
		}
		t.Logf("%s: %d TrafficTargets, %d queries, %d allowed by SMI, exact=%v", step, len(took.targets), len(qs), allowed, took.clean())
		prev = &took
	}
	cl.expectIstiodClean()
	if t.Failed() {
		t.Logf("seed %d", seed)
	}
}

// ---- TestFailClosedWhileChanging: every observed state of the outputs ----

var (
	apGVR = schema.GroupVersionResource{Group: "security.istio.io", Version: "v1beta1", Resource: "authorizationpolicies"}
	efGVR = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1alpha3", Resource: "envoyfilters"}
)

// snapshot is the destination namespace's AuthorizationPolicies and EnvoyFilters as the apiserver
// held them after one event.
type snapshot struct {
	rv       int64
	policies map[string]*unstructured.Unstructured
	filters  map[string]*unstructured.Unstructured
}

func (s *snapshot) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "resourceVersion %d\n", s.rv)
	for _, m := range []map[string]*unstructured.Unstructured{s.policies, s.filters} {
		names := make([]string, 0, len(m))
		for n := range m {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			o := m[n].DeepCopy()
			unstructured.RemoveNestedField(o.Object, "metadata", "managedFields")
			data, _ := yaml.Marshal(o.Object)
			b.WriteString("---\n" + string(data))
		}
	}
	return b.String()
}

var fcLabels = map[string]string{"app": fcDest}

func selects(o *unstructured.Unstructured, path ...string) bool {
	sel, found, _ := unstructured.NestedStringMap(o.Object, path...)
	if !found {
		return true
	}
	for k, v := range sel {
		if fcLabels[k] != v {
			return false
		}
	}
	return true
}

// allows is Istio's and Envoy's decision for a sidecar request from q.peer with this state: the
// ALLOW AuthorizationPolicies selecting the destination (none: allowed; otherwise a rule must
// match; on a TCP chain a rule with an HTTP-only field never matches), then, for HTTP, every RBAC
// filter the EnvoyFilters selecting it insert. What it cannot model is an error.
func (s *snapshot) allows(q fcQuery) (bool, error) {
	names := make([]string, 0, len(s.policies))
	for n := range s.policies {
		names = append(names, n)
	}
	sort.Strings(names)
	anyAllow, allowed := false, false
	for _, n := range names {
		p := s.policies[n]
		if !selects(p, "spec", "selector", "matchLabels") {
			continue
		}
		spec, _, _ := unstructured.NestedMap(p.Object, "spec")
		for k := range spec {
			if k != "selector" && k != "rules" && k != "action" {
				return false, fmt.Errorf("AuthorizationPolicy %s: spec.%s is not modelled", n, k)
			}
		}
		if a, _, _ := unstructured.NestedString(p.Object, "spec", "action"); a != "" && a != "ALLOW" {
			return false, fmt.Errorf("AuthorizationPolicy %s: action %s is not modelled", n, a)
		}
		anyAllow = true
		rules, _, _ := unstructured.NestedSlice(p.Object, "spec", "rules")
		for i, rule := range rules {
			ok, err := istioRule(rule.(map[string]any), q)
			if err != nil {
				return false, fmt.Errorf("AuthorizationPolicy %s rule %d: %w", n, i, err)
			}
			allowed = allowed || ok
		}
	}
	if anyAllow && !allowed {
		return false, nil
	}
	if q.method == "" {
		return true, nil
	}
	r := q.request()
	cx := (&rbacContext{ssl: &tlsPeer{uriSANs: []string{r.principal()}}, dstPort: uint32(q.port)}).withHeaders(r)
	for n, f := range s.filters {
		if !selects(f, "spec", "workloadSelector", "labels") {
			continue
		}
		patches, _, _ := unstructured.NestedSlice(f.Object, "spec", "configPatches")
		for i, pa := range patches {
			pm := pa.(map[string]any)
			if pm["applyTo"] != "HTTP_FILTER" {
				return false, fmt.Errorf("EnvoyFilter %s patch %d applies to %v", n, i, pm["applyTo"])
			}
			switch ctx, _, _ := unstructured.NestedString(pm, "match", "context"); ctx {
			case "GATEWAY", "SIDECAR_OUTBOUND":
				continue // not the destination sidecar's inbound listener
			case "SIDECAR_INBOUND":
			default:
				return false, fmt.Errorf("EnvoyFilter %s patch %d: context %q", n, i, ctx)
			}
			if _, found, _ := unstructured.NestedFieldNoCopy(pm, "match", "listener", "portNumber"); found {
				return false, fmt.Errorf("EnvoyFilter %s patch %d: a patch for one port is not modelled", n, i)
			}
			tc, found, _ := unstructured.NestedMap(pm, "patch", "value", "typed_config")
			if !found {
				return false, fmt.Errorf("EnvoyFilter %s patch %d has no typed_config", n, i)
			}
			if tc["@type"] != "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC" {
				return false, fmt.Errorf("EnvoyFilter %s patch %d inserts %v", n, i, tc["@type"])
			}
			body := map[string]any{}
			for k, v := range tc {
				if k != "@type" {
					body[k] = v
				}
			}
			data, err := json.Marshal(body)
			if err != nil {
				return false, err
			}
			rb := &rbachttpv3.RBAC{}
			if err := protojson.Unmarshal(data, rb); err != nil {
				return false, fmt.Errorf("EnvoyFilter %s patch %d: %w", n, i, err)
			}
			if rb.GetShadowRules() != nil || rb.GetMatcher() != nil || rb.GetShadowMatcher() != nil {
				return false, fmt.Errorf("EnvoyFilter %s patch %d: only rules are modelled", n, i)
			}
			ok, err := evalRBAC(rb.GetRules(), cx)
			if err != nil {
				return false, fmt.Errorf("EnvoyFilter %s patch %d: %w", n, i, err)
			}
			if !ok {
				return false, nil
			}
		}
	}
	return true, nil
}

// istioRule: from (ORed sources) AND to (ORed operations) AND when (ANDed conditions); on TCP a
// rule with an HTTP-only field does not match.
func istioRule(rule map[string]any, q fcQuery) (bool, error) {
	for k := range rule {
		if k != "from" && k != "to" && k != "when" {
			return false, fmt.Errorf("rule field %s is not modelled", k)
		}
	}
	principal := "cluster.local/ns/" + fcNS + "/sa/" + q.peer
	from, _, _ := unstructured.NestedSlice(rule, "from")
	fromOK := len(from) == 0
	for _, f := range from {
		src, _ := f.(map[string]any)["source"].(map[string]any)
		for k := range src {
			if k != "principals" {
				return false, fmt.Errorf("source field %s is not modelled", k)
			}
		}
		ps, _, _ := unstructured.NestedStringSlice(src, "principals")
		for _, p := range ps {
			if istioString(p, principal) {
				fromOK = true
			}
		}
	}
	httpOnly := false
	to, _, _ := unstructured.NestedSlice(rule, "to")
	toOK := len(to) == 0
	for _, t := range to {
		op, _ := t.(map[string]any)["operation"].(map[string]any)
		ok := true
		for k := range op {
			vals, _, _ := unstructured.NestedStringSlice(op, k)
			var v string
			switch k {
			case "methods":
				v, httpOnly = q.method, true
			case "paths":
				v, httpOnly = q.path, true
			case "hosts":
				return false, fmt.Errorf("operation.hosts is not modelled")
			case "ports":
				v = strconv.Itoa(q.port)
			default:
				return false, fmt.Errorf("operation field %s is not modelled", k)
			}
			if k == "paths" {
				for _, p := range vals {
					if strings.Contains(p, "{") {
						return false, fmt.Errorf("path template %q is not modelled", p)
					}
				}
			}
			m := false
			for _, pat := range vals {
				if (k != "methods" && k != "paths" || q.method != "") && istioString(pat, v) {
					m = true
				}
			}
			ok = ok && m
		}
		toOK = toOK || ok
	}
	when, _, _ := unstructured.NestedSlice(rule, "when")
	whenOK := true
	for _, w := range when {
		wm := w.(map[string]any)
		key, _ := wm["key"].(string)
		if _, neg := wm["notValues"]; neg {
			return false, fmt.Errorf("when.notValues is not modelled")
		}
		if !strings.HasPrefix(key, "request.headers[") || !strings.HasSuffix(key, "]") {
			return false, fmt.Errorf("when key %s is not modelled", key)
		}
		httpOnly = true
		name := strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(key, "request.headers["), "]"))
		v, present := q.headers[name]
		vals, _, _ := unstructured.NestedStringSlice(wm, "values")
		m := false
		for _, pat := range vals {
			if present && istioString(pat, v) {
				m = true
			}
		}
		whenOK = whenOK && m
	}
	if q.method == "" && httpOnly {
		return false, nil
	}
	return fromOK && toOK && whenOK, nil
}

// istioString is Istio's string match of AuthorizationPolicy values: "*" any (present) value,
// "x*" prefix, "*x" suffix, else exact.
func istioString(pat, v string) bool {
	switch {
	case pat == "*":
		return true
	case strings.HasSuffix(pat, "*"):
		return strings.HasPrefix(v, strings.TrimSuffix(pat, "*"))
	case strings.HasPrefix(pat, "*"):
		return strings.HasSuffix(v, strings.TrimPrefix(pat, "*"))
	default:
		return pat == v
	}
}

type fcEvent struct {
	kind string // AuthorizationPolicy or EnvoyFilter
	typ  watch.EventType
	obj  *unstructured.Unstructured
	rv   int64
	at   time.Time
}

// watcher follows the namespace's AuthorizationPolicies and EnvoyFilters on the apiserver and
// judges every state they go through (events ordered by resourceVersion) against the SMI states in
// effect: those of the step in progress and the one before it.
type watcher struct {
	t      *testing.T
	mu     sync.Mutex
	snap   snapshot
	bound  atomic.Pointer[[]fcConfig]
	qs     []fcQuery
	seen   int
	fails  []string
	events chan fcEvent
}

func (cl *cluster) watchOutputs(ctx context.Context, qs []fcQuery) *watcher {
	dyn, err := dynamic.NewForConfig(cl.cp.Config)
	must(cl.t, err)
	w := &watcher{t: cl.t, qs: qs, events: make(chan fcEvent, 1024),
		snap: snapshot{policies: map[string]*unstructured.Unstructured{}, filters: map[string]*unstructured.Unstructured{}}}
	for kind, gvr := range map[string]schema.GroupVersionResource{"AuthorizationPolicy": apGVR, "EnvoyFilter": efGVR} {
		list, err := dyn.Resource(gvr).Namespace(fcNS).List(ctx, metav1.ListOptions{})
		must(cl.t, err)
		for i := range list.Items {
			o := list.Items[i]
			w.apply(kind, watch.Added, &o)
		}
		wi, err := dyn.Resource(gvr).Namespace(fcNS).Watch(ctx, metav1.ListOptions{ResourceVersion: list.GetResourceVersion(), TimeoutSeconds: ptrInt64(1800)})
		must(cl.t, err)
		go func(kind string) {
			for ev := range wi.ResultChan() {
				o, ok := ev.Object.(*unstructured.Unstructured)
				if !ok {
					if ev.Type == watch.Error {
						w.fail(fmt.Sprintf("watch of %s: %v", kind, ev.Object))
					}
					continue
				}
				rv, _ := strconv.ParseInt(o.GetResourceVersion(), 10, 64)
				w.events <- fcEvent{kind: kind, typ: ev.Type, obj: o, rv: rv, at: time.Now()}
			}
			if ctx.Err() == nil {
				w.fail("watch of " + kind + " closed")
			}
		}(kind)
	}
	go w.run(ctx)
	return w
}

func ptrInt64(v int64) *int64 { return &v }

// run orders the two watches' events by resourceVersion (an event is processed once it is 300ms
// old, so that an earlier change seen on the other watch is processed first) and judges the state
// after each.
func (w *watcher) run(ctx context.Context) {
	var buf []fcEvent
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-w.events:
			buf = append(buf, ev)
		case <-tick.C:
			sort.SliceStable(buf, func(i, j int) bool { return buf[i].rv < buf[j].rv })
			n := 0
			for n < len(buf) && time.Since(buf[n].at) > 300*time.Millisecond {
				n++
			}
			// everything up to the last ripe event, in resourceVersion order
			for _, ev := range buf[:n] {
				w.apply(ev.kind, ev.typ, ev.obj)
				w.judge()
			}
			buf = buf[n:]
		}
	}
}

func (w *watcher) apply(kind string, typ watch.EventType, o *unstructured.Unstructured) {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := w.snap.policies
	if kind == "EnvoyFilter" {
		m = w.snap.filters
	}
	switch typ {
	case watch.Deleted:
		delete(m, o.GetName())
	case watch.Added, watch.Modified:
		m[o.GetName()] = o
	}
	rv, _ := strconv.ParseInt(o.GetResourceVersion(), 10, 64)
	w.snap.rv = max(w.snap.rv, rv)
}

func (w *watcher) fail(msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.fails) < 5 {
		w.fails = append(w.fails, msg)
	}
}

// judge: every query the state allows must be allowed by one of the SMI states in effect.
func (w *watcher) judge() {
	bound := w.bound.Load()
	if bound == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen++
	var over []string
	for _, q := range w.qs {
		ok, err := w.snap.allows(q)
		if err != nil {
			over = append(over, fmt.Sprintf("%s: %v", q.request(), err))
			continue
		}
		if !ok {
			continue
		}
		smi := false
		for _, c := range *bound {
			smi = smi || c.smiAllows(q, true)
		}
		if !smi {
			over = append(over, fmt.Sprintf("%s: allowed, SMI denies it", q.request()))
		}
	}
	if len(over) > 0 && len(w.fails) < 5 {
		var b strings.Builder
		for i, c := range *bound {
			fmt.Fprintf(&b, "SMI state %d:\n%s", i, c)
		}
		w.fails = append(w.fails, fmt.Sprintf("observed state at %s:\n%s\n%s%s", time.Now().Format(time.RFC3339Nano),
			strings.Join(over, "\n"), b.String(), w.snap.String()))
	}
}

func (w *watcher) check() {
	w.t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, f := range w.fails {
		w.t.Errorf("OVER-ALLOW or unmodelled state while changing: %s", f)
	}
	if len(w.fails) > 0 {
		w.t.FailNow()
	}
}

// TestFailClosedWhileChanging: the outputs of one destination are applied, changed and removed
// (the TrafficTarget that sorts first deleted, an invalid sibling appearing, every TrafficTarget
// deleted at once with the garbage collector running) while a watch on the apiserver judges every
// state of its AuthorizationPolicies and EnvoyFilters: none may allow what neither the SMI state
// before the change nor the one after it allows.
func TestFailClosedWhileChanging(t *testing.T) {
	cl, dest := fcSetup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	regexes := fcGroup{name: "regexes", matches: []fcMatch{
		{name: "orders", methods: []string{"GET"}, path: "/api/orders/[0-9]+"},
		{name: "items", methods: []string{"POST"}, path: "/api/items/[a-z]+", headers: map[string]string{"x-tenant": "[a-z]+"}},
		{name: "exact", path: "/api/orders"},
	}}
	edited := fcGroup{name: "regexes", matches: []fcMatch{
		{name: "orders", methods: []string{"GET"}, path: "/api/orders/x"},
		{name: "items", methods: []string{"POST", "GET"}, path: "/api/items/[0-9]+", headers: map[string]string{"x-tenant": "ac.*"}},
		{name: "exact", path: "/api/orders"},
	}}
	bad := fcGroup{name: "bad", matches: []fcMatch{{name: "empty", path: "^$", headers: map[string]string{"x-tenant": ""}}}}
	routes := []fcPortRoute{{kind: "TCPRoute", name: "db", ports: []int{fcTCPPort}}, {kind: "TCPRoute", name: "http", ports: []int{fcHTTPPort}}}
	first := fcTarget{name: "a-first", sources: []string{"web"}, rules: []fcRule{{kind: "HTTPRouteGroup", name: "regexes", matches: []string{"orders", "items"}}}}
	second := fcTarget{name: "m-second", sources: []string{"batch"}, rules: []fcRule{{kind: "HTTPRouteGroup", name: "regexes"}, {kind: "TCPRoute", name: "http"}}}
	db := fcTarget{name: "t-db", sources: []string{"audit"}, rules: []fcRule{{kind: "TCPRoute", name: "db"}}}
	invalid := fcTarget{name: "0-invalid", sources: []string{"web"}, rules: []fcRule{{kind: "HTTPRouteGroup", name: "bad"}}}

	cfg := func(g fcGroup, ts ...fcTarget) fcConfig {
		return fcConfig{groups: []fcGroup{g, bad}, routes: routes, targets: ts}
	}
	var qs []fcQuery
	seen := map[string]bool{}
	for _, c := range []fcConfig{cfg(regexes, first, second, db), cfg(edited, first, second, db)} {
		for _, q := range c.queries(rand.New(rand.NewSource(1))) {
			if k := fmt.Sprint(q); !seen[k] {
				seen[k] = true
				qs = append(qs, q)
			}
		}
	}
	// The widened patterns of the Envoy rung's policies, which only the filter narrows.
	for _, p := range []string{"/api/orders/", "/api/items/", "/api/items/7", "/api/items/abc"} {
		for _, peer := range []string{"web", "batch"} {
			for _, m := range []string{"GET", "POST"} {
				qs = append(qs, fcQuery{peer: peer, port: fcHTTPPort, method: m, path: p, headers: map[string]string{"x-tenant": "ACME"}})
			}
		}
	}

	// The baseline (allow-nothing) is in place before anything is judged.
	empty := fcConfig{}
	cl.judgeSettled("baseline", dest, empty, qs, func() string { return "no TrafficTarget" })
	w := cl.watchOutputs(ctx, qs)

	states := []struct {
		name string
		cfg  fcConfig
		do   func()
	}{
		{"three TrafficTargets, regexes on the Envoy rung", cfg(regexes, first, second, db), nil},
		{"the route group edited", cfg(edited, first, second, db), nil},
		{"the TrafficTarget that sorts first deleted", cfg(edited, second, db), nil},
		{"an invalid sibling sorting first appears", cfg(edited, invalid, second, db), nil},
		{"the first TrafficTarget back", cfg(regexes, invalid, first, second, db), nil},
		{"every TrafficTarget deleted at once", cfg(regexes), func() {
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(trafficTargetGVK)
			must(t, cl.c.DeleteAllOf(ctx, u, client.InNamespace(fcNS)))
		}},
		{"back again", cfg(edited, first, second, db), nil},
	}
	prev := empty
	for i, s := range states {
		bound := []fcConfig{prev, s.cfg}
		w.bound.Store(&bound)
		if s.do != nil {
			s.do()
		} else {
			took := cl.applyConfig(s.cfg)
			if len(took.targets) != len(s.cfg.targets) || len(took.groups) != len(s.cfg.groups) {
				t.Fatalf("%s: the apiserver refused objects of the scenario", s.name)
			}
			for _, old := range prev.targets {
				if !slices.ContainsFunc(s.cfg.targets, func(n fcTarget) bool { return n.name == old.name }) {
					cl.deleteObj(prev.targetObjects()[slices.IndexFunc(prev.targets, func(n fcTarget) bool { return n.name == old.name })])
				}
			}
		}
		step := fmt.Sprintf("step %d: %s", i+1, s.name)
		cl.judgeSettled(step, dest, s.cfg, qs, func() string { return step + "\n" + s.cfg.String() })
		w.check()
		prev = s.cfg
	}
	// Let the last events through.
	time.Sleep(time.Second)
	w.check()
	w.mu.Lock()
	t.Logf("%d observed states judged", w.seen)
	w.mu.Unlock()
	cl.expectIstiodClean()
}

// TestFailClosedSnapshotEvaluator: the watch's evaluator (no cluster) lets a widened Envoy-rung
// policy through only with its filter, skips rules with HTTP-only fields on TCP, and opens
// everything when no ALLOW policy selects the destination.
func TestFailClosedSnapshotEvaluator(t *testing.T) {
	decode := func(doc string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		must(t, yaml.Unmarshal([]byte(doc), &u.Object))
		return u
	}
	baseline := decode(`{apiVersion: security.istio.io/v1beta1, kind: AuthorizationPolicy, metadata: {name: deny, namespace: shop}, spec: {}}`)
	widened := decode(`
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: a-first, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/shop/sa/web]}}]
    to: [{operation: {methods: [GET], paths: [/api/orders/*]}}]
  - from: [{source: {principals: [cluster.local/ns/shop/sa/audit]}}]
    to: [{operation: {ports: ["5432"]}}]
`)
	filter := decode(`
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: api, namespace: shop}
spec:
  workloadSelector: {labels: {app: api}}
  configPatches:
  - applyTo: HTTP_FILTER
    match: {context: SIDECAR_INBOUND, listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager}}}}
    patch:
      operation: INSERT_FIRST
      value:
        name: smi2istio.rbac
        typed_config:
          '@type': type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
          rules:
            action: ALLOW
            policies:
              a-first/0:
                permissions: [{and_rules: {rules: [{header: {name: ":method", string_match: {exact: GET}}}, {url_path: {path: {safe_regex: {regex: "/api/orders/[0-9]+"}}}}]}}]
                principals: [{authenticated: {principal_name: {exact: spiffe://cluster.local/ns/shop/sa/web}}}]
`)
	snap := func(objs ...*unstructured.Unstructured) *snapshot {
		s := &snapshot{policies: map[string]*unstructured.Unstructured{}, filters: map[string]*unstructured.Unstructured{}}
		for _, o := range objs {
			if o.GetKind() == "EnvoyFilter" {
				s.filters[o.GetName()] = o
			} else {
				s.policies[o.GetName()] = o
			}
		}
		return s
	}
	digits := fcQuery{peer: "web", port: fcHTTPPort, method: "GET", path: "/api/orders/7"}
	letters := fcQuery{peer: "web", port: fcHTTPPort, method: "GET", path: "/api/orders/x"}
	cases := []struct {
		name string
		s    *snapshot
		q    fcQuery
		want bool
	}{
		{"no policy: everything", snap(), fcQuery{peer: "intruder", port: fcTCPPort}, true},
		{"baseline: nothing", snap(baseline), digits, false},
		{"widened policy alone lets the regex's miss in", snap(baseline, widened), letters, true},
		{"with its filter: the regex decides (miss)", snap(baseline, widened, filter), letters, false},
		{"with its filter: the regex decides (hit)", snap(baseline, widened, filter), digits, true},
		{"the filter alone allows nothing", snap(baseline, filter), digits, false},
		{"an HTTP rule never matches TCP", snap(baseline, widened), fcQuery{peer: "web", port: fcHTTPPort}, false},
		{"a ports rule matches TCP", snap(baseline, widened), fcQuery{peer: "audit", port: fcTCPPort}, true},
		{"a ports rule on another port", snap(baseline, widened), fcQuery{peer: "audit", port: fcHTTPPort}, false},
		{"another source", snap(baseline, widened, filter), fcQuery{peer: "batch", port: fcHTTPPort, method: "GET", path: "/api/orders/7"}, false},
	}
	for _, c := range cases {
		got, err := c.s.allows(c.q)
		if err != nil || got != c.want {
			t.Errorf("%s: %s: allows = %v, %v; want %v", c.name, c.q.request(), got, err, c.want)
		}
	}
}
