//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/smi2istio/smi2istio/internal/testing/proc"
)

const timeout = 90 * time.Second

// eventually retries cond until it returns nil or the timeout passes.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// check is one expected verdict at a destination sidecar.
type check struct {
	Request
	allow bool
}

func allow(r Request) check { return check{r, true} }
func deny(r Request) check  { return check{r, false} }

func verdictLine(r Request, ok bool) string {
	if ok {
		return "ALLOW " + r.String()
	}
	return "DENY  " + r.String()
}

// expectAccess waits until istiod's config for the destination sidecar has settled and gives every
// request its expected verdict; on timeout it reports the verdicts that differ and the cluster's
// state. An allowed request must be allowed on the chain Envoy picks for From's sidecar
// connection. A denied request must be denied on every chain a client can reach at the port: the
// evaluator sweeps its connection shapes (mTLS with From's certificate, TLS without one,
// plaintext, every ALPN and server name the listener distinguishes), and any shape that gets
// through is reported as an over-allow with the chain that let it.
func (cl *cluster) expectAccess(step string, dest Proxy, checks ...check) {
	cl.t.Helper()
	var want []string
	for _, c := range checks {
		want = append(want, verdictLine(c.Request, c.allow))
	}
	cl.expectLines(step, fmt.Sprintf("inbound RBAC of %s/%s", dest.Namespace, dest.Pod), want, func() (observation, error) {
		cfg, err := fetch(context.Background(), cl.istiodGRPC, dest)
		if err != nil {
			return observation{}, err
		}
		in, err := cfg.Inbound()
		if err != nil {
			return observation{}, err
		}
		var got []string
		for _, c := range checks {
			r := c.Request
			if r.To == "" {
				r.To = dest.IP
			}
			ok, err := in.Verdict(r)
			if err != nil {
				return observation{}, fmt.Errorf("%s: %w", r, err)
			}
			// Every shape is judged for every check, so that whatever the evaluator cannot model on
			// any reachable chain is refused; the over-allows count for the denied ones.
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
					if len(leaks) > 3 {
						leaks = append(leaks[:3], fmt.Sprintf("and %d more", len(leaks)-3))
					}
					line = "ALLOW " + c.String() + " (over-allow: " + strings.Join(leaks, "; ") + ")"
				}
			}
			got = append(got, line)
		}
		return observation{lines: got, config: cfg.Fingerprint()}, nil
	})
}

// expectRoutes waits until the client's outbound virtual host for host:port routes as wanted
// (lines of Routes: "<match> -> <cluster>=<weight> ..."), on a settled config.
func (cl *cluster) expectRoutes(step string, from Proxy, host string, port uint32, want ...string) {
	cl.t.Helper()
	cl.expectLines(step, fmt.Sprintf("outbound routes of %s/%s for %s:%d", from.Namespace, from.Pod, host, port), want, func() (observation, error) {
		cfg, err := fetch(context.Background(), cl.istiodGRPC, from)
		if err != nil {
			return observation{}, err
		}
		lines, err := cfg.OutboundRoutes(host, port)
		return observation{lines: lines, config: cfg.Fingerprint()}, err
	})
}

// expectFilter waits until the destination's inbound HTTP chains carry (or lack) an HTTP filter,
// on a settled config.
func (cl *cluster) expectFilter(step string, dest Proxy, name string, present bool) { //nolint:unparam // any filter by name; smi2istio writes one today
	cl.t.Helper()
	want := []string{fmt.Sprintf("%s present=%v", name, present)}
	cl.expectLines(step, fmt.Sprintf("inbound HTTP filters of %s/%s", dest.Namespace, dest.Pod), want, func() (observation, error) {
		cfg, err := fetch(context.Background(), cl.istiodGRPC, dest)
		if err != nil {
			return observation{}, err
		}
		return observation{lines: []string{fmt.Sprintf("%s present=%v", name, cfg.HasFilter(name))}, config: cfg.Fingerprint()}, nil
	})
}

// observation is one poll of istiod: the lines judged and the fingerprint of the config they were
// judged on.
type observation struct {
	lines  []string
	config string
}

// A configuration has settled when settlePolls consecutive polls, spanning at least settleFor,
// saw the same config fingerprint, the same wanted lines, and neither istiod's inbound updates nor
// the generated Istio objects changed in between: a verdict is never taken from a config istiod
// is still pushing.
const (
	settlePolls = 3
	settleFor   = 1500 * time.Millisecond
	pollEvery   = 500 * time.Millisecond
)

func (cl *cluster) expectLines(step, what string, want []string, get func() (observation, error)) {
	cl.t.Helper()
	deadline := time.Now().Add(timeout)
	var (
		obs, prev     observation
		quiet, prevQ  string
		err           error
		streak        int
		since         time.Time
		seenWant      bool
		lastUnsettled string
	)
	for time.Now().Before(deadline) {
		obs, err = get()
		var qerr error
		if err == nil {
			quiet, qerr = cl.quietState()
		}
		switch {
		case err != nil:
			streak = 0
		case qerr != nil:
			err, streak = qerr, 0
		case strings.Join(obs.lines, "\n") != strings.Join(want, "\n"):
			streak = 0
		default:
			seenWant = true
			if streak > 0 && obs.config == prev.config && quiet == prevQ {
				streak++
			} else {
				if streak > 0 {
					lastUnsettled = fmt.Sprintf("config %s -> %s, istiod/objects %q -> %q", prev.config, obs.config, prevQ, quiet)
				}
				streak, since = 1, time.Now()
			}
			if streak >= settlePolls && time.Since(since) >= settleFor {
				return
			}
		}
		prev, prevQ = obs, quiet
		time.Sleep(pollEvery)
	}
	msg := fmt.Sprintf("%s: %s not as expected on a settled config within %s", step, what, timeout)
	switch {
	case err != nil:
		msg += fmt.Sprintf("\nlast error: %v", err)
	case seenWant && strings.Join(obs.lines, "\n") == strings.Join(want, "\n"):
		msg += "\nthe wanted lines were seen, but the config never settled (last change: " + lastUnsettled + ")"
	default:
		if seenWant {
			msg += "\nthe wanted lines were seen once, then changed"
		}
		msg += "\n" + lineDiff(want, obs.lines)
	}
	cl.t.Fatal(msg + "\n" + cl.state())
}

// quietState renders what must not change while a config settles: istiod's count of config,
// service and endpoint updates it received, and every generated Istio object's resourceVersion.
func (cl *cluster) quietState() (string, error) {
	ms, err := proc.Metrics("http://" + cl.istiodMon + "/metrics")
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, name := range istiodUpdateMetrics {
		var sum float64
		for _, s := range ms[name] {
			sum += s.Value
		}
		fmt.Fprintf(&b, "%s=%v ", name, sum)
	}
	var objs []string
	for _, gvk := range istioKinds {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := cl.c.List(context.Background(), list, client.MatchingLabels{"app.kubernetes.io/managed-by": "smi2istio"}); err != nil {
			return "", err
		}
		for _, o := range list.Items {
			objs = append(objs, gvk.Kind+"/"+o.GetNamespace()+"/"+o.GetName()+"@"+o.GetResourceVersion())
		}
	}
	sort.Strings(objs)
	fmt.Fprintf(&b, "objects=%x", fnv64([]byte(strings.Join(objs, ","))))
	return b.String(), nil
}

// istiodUpdateMetrics count the updates istiod received (config, services, endpoints) and the
// pushes they triggered.
var istiodUpdateMetrics = []string{"pilot_inbound_updates", "pilot_push_triggers"}

// lineDiff shows want and got line by line, marking the lines that differ.
func lineDiff(want, got []string) string {
	var b strings.Builder
	b.WriteString("--- want (istiod should generate)\n+++ got (istiod generated)\n")
	n := max(len(want), len(got))
	for i := range n {
		var w, g string
		if i < len(want) {
			w = want[i]
		}
		if i < len(got) {
			g = got[i]
		}
		if w == g {
			b.WriteString("  " + w + "\n")
			continue
		}
		if w != "" {
			b.WriteString("- " + w + "\n")
		}
		if g != "" {
			b.WriteString("+ " + g + "\n")
		}
	}
	return b.String()
}

var (
	smiKinds = []schema.GroupVersionKind{
		{Group: "split.smi-spec.io", Version: "v1alpha4", Kind: "TrafficSplit"},
		{Group: "access.smi-spec.io", Version: "v1alpha3", Kind: "TrafficTarget"},
		{Group: "specs.smi-spec.io", Version: "v1alpha4", Kind: "HTTPRouteGroup"},
		{Group: "specs.smi-spec.io", Version: "v1alpha4", Kind: "TCPRoute"},
	}
	istioKinds = []schema.GroupVersionKind{
		{Group: "networking.istio.io", Version: "v1beta1", Kind: "VirtualService"},
		{Group: "networking.istio.io", Version: "v1beta1", Kind: "DestinationRule"},
		{Group: "networking.istio.io", Version: "v1alpha3", Kind: "EnvoyFilter"},
		{Group: "security.istio.io", Version: "v1beta1", Kind: "AuthorizationPolicy"},
		{Group: "security.istio.io", Version: "v1beta1", Kind: "PeerAuthentication"},
	}
)

// state renders the SMI objects and the generated Istio objects, for a failure to explain itself.
func (cl *cluster) state() string {
	var b strings.Builder
	b.WriteString("=== SMI objects\n")
	for _, gvk := range smiKinds {
		b.WriteString(cl.dump(gvk, nil))
	}
	b.WriteString("=== Istio objects generated by smi2istio\n")
	for _, gvk := range istioKinds {
		b.WriteString(cl.dump(gvk, client.MatchingLabels{"app.kubernetes.io/managed-by": "smi2istio"}))
	}
	return b.String()
}

func (cl *cluster) dump(gvk schema.GroupVersionKind, opts client.ListOption) string {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
	var lo []client.ListOption
	if opts != nil {
		lo = append(lo, opts)
	}
	if err := cl.c.List(context.Background(), list, lo...); err != nil {
		return fmt.Sprintf("# list %s: %v\n", gvk.Kind, err)
	}
	var b strings.Builder
	for _, o := range list.Items {
		unstructured.RemoveNestedField(o.Object, "metadata", "managedFields")
		data, _ := yaml.Marshal(o.Object)
		b.WriteString("---\n" + string(data))
	}
	return b.String()
}

// managed lists the generated objects of a kind as "namespace/name" lines, sorted.
func (cl *cluster) managed(gvk schema.GroupVersionKind) []string {
	cl.t.Helper()
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
	must(cl.t, cl.c.List(context.Background(), list, client.MatchingLabels{"app.kubernetes.io/managed-by": "smi2istio"}))
	var out []string
	for _, o := range list.Items {
		out = append(out, o.GetNamespace()+"/"+o.GetName())
	}
	sort.Strings(out)
	return out
}

// expectReady waits for Ready=True, for the object's generation, on an SMI object (read in its
// newest version).
func (cl *cluster) expectReady(kind, namespace, name string) {
	const condType, status = "Ready", "True"
	cl.t.Helper()
	var gvk schema.GroupVersionKind
	for _, k := range smiKinds {
		if k.Kind == kind {
			gvk = k
		}
	}
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		if err := cl.c.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, u); err != nil {
			last = err.Error()
		} else {
			conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
			last = fmt.Sprintf("no %s condition in %v", condType, conds)
			for _, c := range conds {
				m, _ := c.(map[string]any)
				if m["type"] != condType {
					continue
				}
				last = fmt.Sprintf("%s=%v/%v: %v (observedGeneration %v, generation %d)", condType, m["status"], m["reason"], m["message"], m["observedGeneration"], u.GetGeneration())
				if m["status"] == status && fmt.Sprint(m["observedGeneration"]) == fmt.Sprint(u.GetGeneration()) {
					return
				}
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	cl.t.Fatalf("%s %s/%s: want %s=%s, last seen %s\n%s", kind, namespace, name, condType, status, last, cl.state())
}
