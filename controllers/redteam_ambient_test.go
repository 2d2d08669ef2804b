package controllers_test

// Red team of the ambient access path on a real apiserver (helper H7): attacks that fail, kept as
// regression tests, and the helpers the failing ones (redteam_ambient_failing_test.go) share.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"

	"github.com/smi2istio/smi2istio/controllers"
	"github.com/smi2istio/smi2istio/internal/membership"
	"github.com/smi2istio/smi2istio/translate"
)

// redTeamWaypointGateway is a waypoint Gateway named waypoint; from is its HBONE listener's
// allowedRoutes.namespaces.from ("" for Gateway API's default, Same).
func redTeamWaypointGateway(class, from, serviceAccount string) string {
	annotations := ""
	if serviceAccount != "" {
		annotations = fmt.Sprintf(", annotations: {gateway.istio.io/service-account: %s}", serviceAccount)
	}
	allowed := ""
	if from != "" {
		allowed = fmt.Sprintf(", allowedRoutes: {namespaces: {from: %s}}", from)
	}
	return fmt.Sprintf(`
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint%s}
spec:
  gatewayClassName: %s
  listeners: [{name: mesh, port: 15008, protocol: HBONE%s}]
`, annotations, class, allowed)
}

// admitsPrincipal: some AuthorizationPolicy of ns with a workload selector (what ztunnel enforces)
// has a rule whose sources name principal.
func admitsPrincipal(t *testing.T, ns, principal string) bool {
	t.Helper()
	for _, ap := range listAll(t, ns, objOf(controllers.AuthorizationPolicyGVK), nil) {
		if policyAdmits(&ap, principal) {
			return true
		}
	}
	return false
}

func policyAdmits(ap *unstructured.Unstructured, principal string) bool {
	if _, has, _ := unstructured.NestedMap(ap.Object, "spec", "selector"); !has {
		return false
	}
	rules, _, _ := unstructured.NestedSlice(ap.Object, "spec", "rules")
	for _, r := range rules {
		from, _, _ := unstructured.NestedSlice(r.(map[string]any), "from")
		for _, f := range from {
			ps, _, _ := unstructured.NestedStringSlice(f.(map[string]any), "source", "principals")
			if slices.Contains(ps, principal) {
				return true
			}
		}
	}
	return false
}

// waitThroughWaypoint waits until TrafficTarget ns/tt was translated through waypoint key
// ("namespace/name") and the access reconciler has settled.
func waitThroughWaypoint(t *testing.T, ns, tt, key string) {
	t.Helper()
	eventually(t, "TrafficTarget "+ns+"/"+tt+" translated through waypoint "+key, func() error {
		if msg := ttMessage(t, ns, tt, "Accepted"); !strings.Contains(msg, "through waypoint "+key) {
			return fmt.Errorf("Accepted: %q", msg)
		}
		return nil
	})
	settle(t, &accessWrites, &baselineWrites)
}

// apWatch follows every AuthorizationPolicy of the cluster in the apiserver's order (one watch of
// one resource: events come in resourceVersion order) and calls check on each state it sees;
// check returns "" or what is wrong with that state.
type apWatch struct {
	mu         sync.Mutex
	violations []string
	stop       func()
	done       chan struct{}
}

func watchPolicies(t *testing.T, check func(aps map[string]*unstructured.Unstructured) string) *apWatch {
	t.Helper()
	dc, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	gvr := controllers.AuthorizationPolicyGVK.GroupVersion().WithResource("authorizationpolicies")
	list, err := dc.Resource(gvr).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	state := map[string]*unstructured.Unstructured{}
	for i := range list.Items {
		u := &list.Items[i]
		state[u.GetNamespace()+"/"+u.GetName()] = u
	}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := dc.Resource(gvr).Watch(ctx, metav1.ListOptions{ResourceVersion: list.GetResourceVersion()})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	aw := &apWatch{stop: func() { cancel(); w.Stop() }, done: make(chan struct{})}
	record := func(what string) {
		if v := check(state); v != "" {
			aw.mu.Lock()
			aw.violations = append(aw.violations, what+": "+v)
			aw.mu.Unlock()
		}
	}
	record("initial state")
	go func() {
		defer close(aw.done)
		for ev := range w.ResultChan() {
			u, ok := ev.Object.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			key := u.GetNamespace() + "/" + u.GetName()
			switch ev.Type {
			case watch.Added, watch.Modified:
				state[key] = u
			case watch.Deleted:
				delete(state, key)
			default:
				continue
			}
			record(fmt.Sprintf("after %s %s (rv %s)", ev.Type, key, u.GetResourceVersion()))
		}
	}()
	return aw
}

// finish stops the watch (after a last look) and returns the violations seen.
func (aw *apWatch) finish() []string {
	time.Sleep(200 * time.Millisecond)
	aw.stop()
	<-aw.done
	aw.mu.Lock()
	defer aw.mu.Unlock()
	return aw.violations
}

// A Gateway named as the namespace's use-waypoint label says, but of another class (an ingress
// gateway): not a waypoint, so ztunnel keeps its L4 policies and never admits its identity; the
// HTTP rules report WaypointRequired. A waypoint's ServiceAccount annotation that changes moves
// the admission to the new identity (no stale principal stays admitted).
func TestRedTeamAmbientGatewayClassAndServiceAccount(t *testing.T) {
	ns := ambientNamespace(t)
	relabel(t, ns, map[string]string{membership.DataplaneModeLabel: membership.DataplaneAmbient, translate.UseWaypointLabel: "waypoint"})
	applyYAML(t, ns, redTeamWaypointGateway("istio", "", ""))
	applyYAML(t, ns, ambientApp)
	waitTTReady(t, ns, "http", "False", controllers.ReasonWaypointRequired)
	settle(t, &accessWrites, &baselineWrites)
	if admitsPrincipal(t, ns, fmt.Sprintf("cluster.local/ns/%s/sa/waypoint", ns)) {
		t.Errorf("the identity of a Gateway of class istio (not a waypoint) is admitted")
	}
	if _, err := get(objOf(controllers.AuthorizationPolicyGVK), ns, translate.WaypointBaselinePrefix+"waypoint"); err == nil {
		t.Errorf("a waypoint baseline for a Gateway that is not a waypoint")
	}

	if err := env.Client.Delete(context.Background(), &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": map[string]any{"name": "waypoint", "namespace": ns}}}); err != nil {
		t.Fatal(err)
	}
	applyYAML(t, ns, redTeamWaypointGateway("istio-waypoint", "Same", "wp-a"))
	waitThroughWaypoint(t, ns, "http", ns+"/waypoint")
	a, b := fmt.Sprintf("cluster.local/ns/%s/sa/wp-a", ns), fmt.Sprintf("cluster.local/ns/%s/sa/wp-b", ns)
	if !admitsPrincipal(t, ns, a) {
		t.Fatalf("the waypoint's annotated ServiceAccount wp-a is not admitted: %v", ambientPolicies(t, ns, "http"))
	}
	applyYAML(t, ns, redTeamWaypointGateway("istio-waypoint", "Same", "wp-b"))
	eventually(t, "admission moved to wp-b", func() error {
		if admitsPrincipal(t, ns, a) || !admitsPrincipal(t, ns, b) {
			return fmt.Errorf("wp-a admitted %v, wp-b admitted %v", admitsPrincipal(t, ns, a), admitsPrincipal(t, ns, b))
		}
		return nil
	})
}

// A namespace labelled for both injection and ambient: Istio injects sidecars there and ztunnel
// leaves those pods alone, so smi2istio writes sidecar outputs (selector policies with the HTTP
// rules), not waypoint ones, even with a use-waypoint label and a waypoint in the namespace.
func TestRedTeamAmbientInjectionWinsOverAmbient(t *testing.T) {
	ns := ambientNamespace(t)
	relabel(t, ns, map[string]string{membership.DataplaneModeLabel: membership.DataplaneAmbient, "istio-injection": "enabled", translate.UseWaypointLabel: "waypoint"})
	applyYAML(t, ns, redTeamWaypointGateway("istio-waypoint", "", ""))
	applyYAML(t, ns, ambientApp)
	waitTTReady(t, ns, "http", "True", controllers.ReasonApplied)
	if msg := ttMessage(t, ns, "http", "Accepted"); !strings.Contains(msg, "sidecar data plane") {
		t.Errorf("Accepted says %q, want the sidecar data plane", msg)
	}
	web := fmt.Sprintf("cluster.local/ns/%s/sa/web", ns)
	waitAmbientPolicies(t, ns, "http", func(aps []string) error {
		if len(aps) != 1 || !strings.Contains(aps[0], "sel=map[app:api] rule=["+web+"]") || !strings.Contains(aps[0], "/orders") {
			return fmt.Errorf("want one sidecar selector policy for web's GET /orders, got %q", aps)
		}
		return nil
	})
}

// Relabelling a namespace sidecar → ambient → ambient with a waypoint → sidecar, watched on every
// AuthorizationPolicy event: no state ever lets web open a TCP connection to api beyond the
// TCPRoute's port 5432 at ztunnel (a selector rule naming web without HTTP fields), and ztunnel
// never admits the waypoint while the waypoint's allow-nothing baseline is missing.
func TestRedTeamAmbientRelabelNeverWidens(t *testing.T) {
	ns := freshNamespace(t)
	applyYAML(t, ns, redTeamWaypointGateway("istio-waypoint", "", ""))
	applyYAML(t, ns, ambientApp)
	waitTTReady(t, ns, "http", "True", controllers.ReasonApplied)
	web := fmt.Sprintf("cluster.local/ns/%s/sa/web", ns)
	waypoint := fmt.Sprintf("cluster.local/ns/%s/sa/waypoint", ns)
	aw := watchPolicies(t, func(aps map[string]*unstructured.Unstructured) string {
		var bad []string
		baseline := aps[ns+"/"+translate.WaypointBaselinePrefix+"waypoint"] != nil
		for _, ap := range aps {
			if ap.GetNamespace() != ns {
				continue
			}
			if policyAdmits(ap, waypoint) && !baseline {
				bad = append(bad, "ztunnel admits the waypoint ("+ap.GetName()+") while its baseline is missing")
			}
			if !policyAdmits(ap, web) {
				continue
			}
			rules, _, _ := unstructured.NestedSlice(ap.Object, "spec", "rules")
			for _, r := range rules {
				rm := r.(map[string]any)
				if when, _, _ := unstructured.NestedSlice(rm, "when"); len(when) > 0 {
					continue
				}
				to, _, _ := unstructured.NestedSlice(rm, "to")
				l7, ports := false, []string{}
				for _, x := range to {
					op, _, _ := unstructured.NestedMap(x.(map[string]any), "operation")
					for _, f := range []string{"paths", "methods", "hosts", "notPaths", "notMethods", "notHosts"} {
						l7 = l7 || op[f] != nil
					}
					p, _, _ := unstructured.NestedStringSlice(op, "ports")
					ports = append(ports, p...)
				}
				if !l7 && (len(ports) == 0 || slices.ContainsFunc(ports, func(p string) bool { return p != "5432" })) {
					bad = append(bad, fmt.Sprintf("%s lets web connect at L4 on %v", ap.GetName(), ports))
				}
			}
		}
		return strings.Join(bad, "; ")
	})
	relabel(t, ns, map[string]string{membership.DataplaneModeLabel: membership.DataplaneAmbient})
	waitTTReady(t, ns, "http", "False", controllers.ReasonWaypointRequired)
	relabel(t, ns, map[string]string{membership.DataplaneModeLabel: membership.DataplaneAmbient, translate.UseWaypointLabel: "waypoint"})
	waitThroughWaypoint(t, ns, "http", ns+"/waypoint")
	waitTTReady(t, ns, "http", "True", controllers.ReasonApplied)
	relabel(t, ns, map[string]string{"istio-injection": "enabled", translate.UseWaypointLabel: "waypoint"})
	eventually(t, "back to the sidecar data plane", func() error {
		if msg := ttMessage(t, ns, "http", "Accepted"); !strings.Contains(msg, "sidecar data plane") {
			return fmt.Errorf("Accepted: %q", msg)
		}
		return nil
	})
	settle(t, &accessWrites, &baselineWrites)
	if v := aw.finish(); len(v) > 0 {
		t.Errorf("over-allowing states while relabelling:\n%s", strings.Join(v, "\n"))
	}
}
