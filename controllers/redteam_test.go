package controllers_test

// Red team of the operator's access path (syncset, access, baseline). Every test here shows a state
// in which the Istio objects, as istiod reads them, allow more than the SMI objects at that moment,
// or in which the operator never settles. They fail until the operator is fixed.

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"istio.io/api/annotation"
	istioconfig "istio.io/istio/pkg/config"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/controllers"
	"github.com/smi2istio/smi2istio/translate"
)

// listAll lists the objects of obj's kind in ns that carry labels, straight from the apiserver.
func listAll(t *testing.T, ns string, obj *unstructured.Unstructured, labels client.MatchingLabels) []unstructured.Unstructured {
	t.Helper()
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(obj.GroupVersionKind().GroupVersion().WithKind(obj.GetKind() + "List"))
	if err := env.Client.List(context.Background(), list, client.InNamespace(ns), labels); err != nil {
		t.Error(err)
		return nil
	}
	return list.Items
}

// ttReadyMessage is the Ready condition of a TrafficTarget: status, reason, message.
func ttReadyMessage(ns, name string) (string, string, string) {
	u, err := get(objOf(controllers.TrafficTargetGVK), ns, name)
	if err != nil {
		return "", "", err.Error()
	}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m := c.(map[string]any); m["type"] == "Ready" {
			return fmt.Sprint(m["status"]), fmt.Sprint(m["reason"]), fmt.Sprint(m["message"])
		}
	}
	return "", "", "no Ready condition"
}

// A TrafficTarget that allowed raw TCP on 5432 is changed to allow only an HTTP route on the Envoy
// rung. SMI now allows no TCP connection on 5432. The sync creates the new filter and, because the
// filter has not existed for EnvoyRungSettle, withholds the update of the TrafficTarget's policy —
// the update that revokes port 5432. The old policy (ports-only: it applies on TCP filter chains,
// where the new filter, an HTTP filter, checks nothing) stays in force for the whole Settle.
// docs/decisions.md: "The wait delays an allow or a release, never a revocation." FAIL-CLOSED §1/§3.
func TestRedTeamSettleWithholdsTCPRevocation(t *testing.T) {
	ns := freshNamespace(t)
	meshNamespace(t, ns)
	applyYAML(t, ns, `
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {serviceAccountName: api, containers: [{name: api, image: x}]}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: db}
spec:
  matches: {ports: [5432]}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: orders}
spec:
  matches:
  - {name: order, pathRegex: "/orders/[0-9]+", methods: [GET]}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: a}
spec:
  destination: {kind: ServiceAccount, name: api}
  sources: [{kind: ServiceAccount, name: web}]
  rules: [{kind: TCPRoute, name: db}]
`)
	waitTTReady(t, ns, "a", "True", controllers.ReasonApplied)
	holds5432 := func(ap unstructured.Unstructured) bool {
		b, _ := json.Marshal(ap.Object["spec"])
		return strings.Contains(string(b), `"5432"`)
	}
	waitPolicies(t, ns, "api", func(ps map[string]policy) error {
		for _, ap := range listAll(t, ns, objOf(controllers.AuthorizationPolicyGVK), client.MatchingLabels{translate.SourceNameLabel: "a"}) {
			if holds5432(ap) {
				return nil
			}
		}
		return fmt.Errorf("no policy of a allows port 5432: %v", ps)
	})

	// Poll the apiserver: the moments at which the new filter exists (so the operator has acted on
	// the change) while a policy still allows raw TCP on 5432 (which SMI no longer allows).
	var done atomic.Bool
	var mu sync.Mutex
	var first, last time.Time
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !done.Load() {
			efs := listAll(t, ns, objOf(controllers.EnvoyFilterGVK), client.MatchingLabels{translate.DestinationLabel: "api"})
			aps := listAll(t, ns, objOf(controllers.AuthorizationPolicyGVK), client.MatchingLabels{translate.DestinationLabel: "api"})
			open := false
			for _, ap := range aps {
				open = open || holds5432(ap)
			}
			if len(efs) > 0 && open {
				now := time.Now()
				mu.Lock()
				if first.IsZero() {
					first = now
				}
				last = now
				mu.Unlock()
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	applyYAML(t, ns, `
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: a}
spec:
  destination: {kind: ServiceAccount, name: api}
  sources: [{kind: ServiceAccount, name: web}]
  rules: [{kind: HTTPRouteGroup, name: orders}]
`)
	eventually(t, "a's policy no longer allows port 5432", func() error {
		for _, ap := range listAll(t, ns, objOf(controllers.AuthorizationPolicyGVK), client.MatchingLabels{translate.SourceNameLabel: "a"}) {
			if holds5432(ap) {
				return fmt.Errorf("%s still allows 5432", ap.GetName())
			}
		}
		return nil
	})
	time.Sleep(100 * time.Millisecond)
	done.Store(true)
	wg.Wait()
	if d := last.Sub(first); !first.IsZero() && d > time.Second {
		t.Errorf("hole: for %v after the Envoy-rung filter was written, a policy still allowed TCP connections on 5432 from web, which SMI no longer allows (the revocation was withheld with the filter's Settle)", d.Round(time.Millisecond))
	}
}

// Istio only reads config objects of its own revision: istiod (REVISION "default" in every chart
// install) ignores an object labelled istio.io/rev with another value. A user who labels the Envoy
// rung's filter so (e.g. while preparing a canary upgrade) removes the exact check from the mesh,
// while the widened policy that relies on it stays in force. The operator compares only the labels
// and annotations it writes (syncset.UpToDate) and the spec (Syncer.exact): it never notices, and
// every TrafficTarget keeps saying Ready=True. FAIL-CLOSED §3.
func TestRedTeamRevisionLabelHidesFilter(t *testing.T) {
	ns := freshNamespace(t)
	meshNamespace(t, ns)
	applyYAML(t, ns, regexAccess)
	waitTTReady(t, ns, "a", "True", controllers.ReasonApplied)
	efs := listAll(t, ns, objOf(controllers.EnvoyFilterGVK), client.MatchingLabels{translate.DestinationLabel: "api"})
	if len(efs) != 1 {
		t.Fatalf("EnvoyFilters of api: %d", len(efs))
	}
	patch := []byte(`{"metadata":{"labels":{"istio.io/rev":"canary"}}}`)
	if err := env.Client.Patch(context.Background(), &efs[0], client.RawPatch(types.MergePatchType, patch), client.FieldOwner("kubectl-label")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		inForce := 0 // filters of api istiod reads
		for _, ef := range listAll(t, ns, objOf(controllers.EnvoyFilterGVK), client.MatchingLabels{translate.DestinationLabel: "api"}) {
			if istioconfig.LabelsInRevision(ef.GetLabels(), "default") {
				inForce++
			}
		}
		aps := listAll(t, ns, objOf(controllers.AuthorizationPolicyGVK), client.MatchingLabels{translate.DestinationLabel: "api"})
		if inForce > 0 || len(aps) == 0 {
			return // the exact check is back, or nothing relies on it any more
		}
	}
	status, reason, _ := ttReadyMessage(ns, "a")
	t.Errorf("hole: 10 s after the filter was labelled istio.io/rev=canary, istiod reads none of api's filters while its widened policies stay (a says Ready=%s/%s)", status, reason)
}

// An AuthorizationPolicy annotated istio.io/dry-run=true is not enforced. On the namespace's
// baseline (an ALLOW policy with no rules: deny by default) that opens every workload no
// TrafficTarget allows anything to, to every source. The operator keeps the annotated baseline (the
// annotation is not a spec field, and UpToDate ignores annotations it does not write) and counts it
// as in place: a TrafficTarget that allows nothing keeps saying "nothing is allowed"
// (NothingToDo) instead of BaselineMissing. FAIL-CLOSED: a status claiming less than is allowed.
func TestRedTeamDryRunBaseline(t *testing.T) {
	ns := freshNamespace(t)
	meshNamespace(t, ns)
	waitBaselines(t, true, ns)
	applyYAML(t, ns, `
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {serviceAccountName: api, containers: [{name: api, image: x}]}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: a}
spec:
  destination: {kind: ServiceAccount, name: api}
  sources: [{kind: ServiceAccount, name: web}]
  rules: [{kind: HTTPRouteGroup, name: missing}]
`)
	waitTTReady(t, ns, "a", "False", controllers.ReasonNothingToDo)
	b, err := get(objOf(controllers.AuthorizationPolicyGVK), ns, controllers.BaselineName)
	if err != nil {
		t.Fatal(err)
	}
	patch := []byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:"true"}}}`, annotation.IoIstioDryRun.Name))
	if err := env.Client.Patch(context.Background(), b, client.RawPatch(types.MergePatchType, patch), client.FieldOwner("kubectl-annotate")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		b, err := get(objOf(controllers.AuthorizationPolicyGVK), ns, controllers.BaselineName)
		enforced := err == nil && b.GetAnnotations()[annotation.IoIstioDryRun.Name] != "true"
		if _, reason, _ := ttReadyMessage(ns, "a"); enforced || reason == controllers.ReasonBaselineMissing {
			return
		}
	}
	status, reason, msg := ttReadyMessage(ns, "a")
	t.Errorf("hole: the baseline of %s is dry-run (not enforced: %s is open to every source) and a says Ready=%s/%s %q", ns, "api", status, reason, msg)
}

// Two TrafficTargets of one destination: a on the Envoy rung, b on the exact rung. Every policy of
// the set carries relies-on (set-wide). Deleting a leaves b's policy unchanged in spec, so it is
// UpToDate and never re-applied: its stale relies-on annotation is never removed, and the filter,
// deleted by the sync, is never released (ErrRelied, requeued every second for ever; b's status is
// never written again). Fail closed holds (the filter stays), liveness does not.
func TestRedTeamStaleReliesOnHoldsFilterForever(t *testing.T) {
	ns := freshNamespace(t)
	meshNamespace(t, ns)
	applyYAML(t, ns, `
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {serviceAccountName: api, containers: [{name: api, image: x}]}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: orders}
spec:
  matches:
  - {name: order, pathRegex: "/orders/[0-9]+", methods: [GET]}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: health}
spec:
  matches:
  - {name: health, pathRegex: "/health", methods: [GET]}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: a}
spec:
  destination: {kind: ServiceAccount, name: api}
  sources: [{kind: ServiceAccount, name: web}]
  rules: [{kind: HTTPRouteGroup, name: orders}]
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: b}
spec:
  destination: {kind: ServiceAccount, name: api}
  sources: [{kind: ServiceAccount, name: probe}]
  rules: [{kind: HTTPRouteGroup, name: health}]
`)
	waitTTReady(t, ns, "a", "True", controllers.ReasonApplied)
	waitTTReady(t, ns, "b", "True", controllers.ReasonApplied)
	if efs := listAll(t, ns, objOf(controllers.EnvoyFilterGVK), client.MatchingLabels{translate.DestinationLabel: "api"}); len(efs) != 1 {
		t.Fatalf("EnvoyFilters of api: %d", len(efs))
	}
	a := objOf(controllers.TrafficTargetGVK)
	a.SetNamespace(ns)
	a.SetName("a")
	if err := env.Client.Delete(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second) // Settle is 3 s
	var left []string
	for time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		left = nil
		for _, ef := range listAll(t, ns, objOf(controllers.EnvoyFilterGVK), client.MatchingLabels{translate.DestinationLabel: "api"}) {
			left = append(left, fmt.Sprintf("%s (deleting: %v, finalizers %v)", ef.GetName(), !ef.GetDeletionTimestamp().IsZero(), ef.GetFinalizers()))
		}
		if len(left) == 0 {
			return
		}
	}
	var reliers []string
	for _, ap := range listAll(t, ns, objOf(controllers.AuthorizationPolicyGVK), client.MatchingLabels{translate.DestinationLabel: "api"}) {
		reliers = append(reliers, ap.GetName()+" relies-on="+ap.GetAnnotations()[controllers.ReliesOnAnnotation])
	}
	t.Errorf("20 s after the last Envoy-rung TrafficTarget went, the filter is still held: %v; policies: %v", left, reliers)
}

// The finalizer is removed by hand (README's uninstall advice for a stuck filter) and the filter
// deleted while the operator runs. The sync writes the filter again, but the policies that rely on
// it were never taken back: they are in force before the new filter exists, and while it is younger
// than EnvoyRungSettle — the state Settle exists to prevent. FAIL-CLOSED §3.
func TestRedTeamFilterRecreatedUnderLivePolicies(t *testing.T) {
	ns := freshNamespace(t)
	meshNamespace(t, ns)
	applyYAML(t, ns, regexAccess)
	waitTTReady(t, ns, "a", "True", controllers.ReasonApplied)
	waitTTReady(t, ns, "b", "True", controllers.ReasonApplied)
	efs := listAll(t, ns, objOf(controllers.EnvoyFilterGVK), client.MatchingLabels{translate.DestinationLabel: "api"})
	if len(efs) != 1 {
		t.Fatalf("EnvoyFilters of api: %d", len(efs))
	}
	old := efs[0]
	var done, recreated atomic.Bool
	var mu sync.Mutex
	var holes []string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !done.Load() {
			efs := listAll(t, ns, objOf(controllers.EnvoyFilterGVK), client.MatchingLabels{translate.DestinationLabel: "api"})
			aps := listAll(t, ns, objOf(controllers.AuthorizationPolicyGVK), client.MatchingLabels{translate.DestinationLabel: "api"})
			now := time.Now()
			if len(efs) > 0 && efs[0].GetUID() != old.GetUID() {
				recreated.Store(true)
			}
			if len(aps) > 0 {
				switch {
				// Between the hand-made deletion and the operator's reaction nothing can keep the
				// filter (its finalizer was removed by hand): judged once the operator wrote it again.
				case len(efs) == 0 && recreated.Load():
					mu.Lock()
					holes = append(holes, now.Format(time.StampMilli)+": policies without a filter")
					mu.Unlock()
				case len(efs) > 0 && efs[0].GetUID() != old.GetUID() && now.Sub(efs[0].GetCreationTimestamp().Time) < controllers.EnvoyRungSettle-time.Second:
					mu.Lock()
					holes = append(holes, fmt.Sprintf("%s: policies relying on a filter created %v ago", now.Format(time.StampMilli), now.Sub(efs[0].GetCreationTimestamp().Time).Round(time.Millisecond)))
					mu.Unlock()
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	if err := env.Client.Patch(context.Background(), old.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`))); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Delete(context.Background(), old.DeepCopy()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the filter written again", func() error {
		efs := listAll(t, ns, objOf(controllers.EnvoyFilterGVK), client.MatchingLabels{translate.DestinationLabel: "api"})
		if len(efs) != 1 || efs[0].GetUID() == old.GetUID() {
			return fmt.Errorf("filters %d", len(efs))
		}
		return nil
	})
	time.Sleep(controllers.EnvoyRungSettle + time.Second)
	waitTTReady(t, ns, "a", "True", controllers.ReasonApplied)
	done.Store(true)
	wg.Wait()
	if len(holes) > 0 {
		t.Errorf("hole: %d observations, first %q, last %q", len(holes), holes[0], holes[len(holes)-1])
	}
}

// A namespace left the mesh; its last pod with Istio's sidecar is deleted with the usual grace
// period. Until the kubelet has stopped it the pod runs, its sidecar still connected to istiod and
// enforcing what it is given (graceful drain: keep-alive connections keep carrying requests). The
// workload index drops a pod as soon as it is terminating (WorkloadIndex.set: e.deleting), so
// Sidecars drops to 0 at once and the baseline and the destination's policies are pruned while
// the sidecar still serves: for the rest of the grace period every source is allowed.
// docs/decisions.md: "outputs go once the last such pod has [gone]".
func TestRedTeamTerminatingSidecarPodLosesEnforcement(t *testing.T) {
	ns := freshNamespace(t)
	meshNamespace(t, ns)
	applyYAML(t, ns, regexAccess)
	waitTTReady(t, ns, "a", "True", controllers.ReasonApplied)
	waitBaselines(t, true, ns)
	applyYAML(t, ns, `
apiVersion: v1
kind: Pod
metadata:
  name: api-0
  labels: {app: api}
  annotations: {sidecar.istio.io/status: '{"containers":["istio-proxy"]}'}
spec:
  nodeName: node-1
  terminationGracePeriodSeconds: 60
  serviceAccountName: api
  containers: [{name: api, image: x}, {name: istio-proxy, image: proxyv2}]
`)
	pod := &unstructured.Unstructured{}
	pod.SetAPIVersion("v1")
	pod.SetKind("Pod")
	pod.SetNamespace(ns)
	pod.SetName("api-0")
	defer func() { _ = env.Client.Delete(context.Background(), pod.DeepCopy(), client.GracePeriodSeconds(0)) }()
	meshNamespace(t, ns, false)
	eventually(t, "a says its outputs are kept for the remaining sidecar", func() error {
		if s, r, m := ttReadyMessage(ns, "a"); s != "False" || r != controllers.ReasonLeftMesh || !strings.Contains(m, "1 of its pods still run Istio's sidecar") {
			return fmt.Errorf("Ready=%s %q", s, m)
		}
		return nil
	})
	// The pod is asked to stop: it has 60 s to drain (no kubelet here: it stays terminating).
	if err := env.Client.Delete(context.Background(), pod.DeepCopy()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(8 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		p, err := get(pod, ns, "api-0")
		if err != nil {
			t.Fatalf("the pod went (%v): nothing to show", err)
		}
		if p.GetDeletionTimestamp().IsZero() {
			continue
		}
		if !baselineExists(ns) || len(policiesOf(t, ns, "api")) == 0 {
			s, r, _ := ttReadyMessage(ns, "a")
			t.Fatalf("hole: pod %s/api-0 still runs its sidecar (terminating, 60 s grace) but the baseline (present=%v) or api's policies (%d) are gone: every source is allowed to it; a says Ready=%s/%s",
				ns, baselineExists(ns), len(policiesOf(t, ns, "api")), s, r)
		}
	}
}

// Somebody else's finalizer on one of our policies (a backup or policy tool's) keeps it terminating
// after we delete it, and istiod enforces terminating objects as any other (its informers keep them
// until they are gone). The operator counts it as pruned: the TrafficTarget that allowed it is gone,
// nothing reports that its allow is still in force. FAIL-CLOSED §7: somebody else's object decides.
func TestRedTeamForeignFinalizerKeepsRevokedPolicy(t *testing.T) {
	ns := freshNamespace(t)
	meshNamespace(t, ns)
	applyYAML(t, ns, `
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {serviceAccountName: api, containers: [{name: api, image: x}]}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: db}
spec:
  matches: {ports: [5432]}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: a}
spec:
  destination: {kind: ServiceAccount, name: api}
  sources: [{kind: ServiceAccount, name: web}]
  rules: [{kind: TCPRoute, name: db}]
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: b}
spec:
  destination: {kind: ServiceAccount, name: api}
  sources: [{kind: ServiceAccount, name: batch}]
  rules: [{kind: TCPRoute, name: db}]
`)
	waitTTReady(t, ns, "a", "True", controllers.ReasonApplied)
	waitTTReady(t, ns, "b", "True", controllers.ReasonApplied)
	aps := listAll(t, ns, objOf(controllers.AuthorizationPolicyGVK), client.MatchingLabels{translate.SourceNameLabel: "a"})
	if len(aps) != 1 {
		t.Fatalf("a's policies: %d", len(aps))
	}
	if err := env.Client.Patch(context.Background(), aps[0].DeepCopy(), client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":["backup.example.com/hold"]}}`))); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = env.Client.Patch(context.Background(), aps[0].DeepCopy(), client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`)))
	}()
	a := objOf(controllers.TrafficTargetGVK)
	a.SetNamespace(ns)
	a.SetName("a")
	if err := env.Client.Delete(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	time.Sleep(8 * time.Second)
	for _, ap := range listAll(t, ns, objOf(controllers.AuthorizationPolicyGVK), client.MatchingLabels{translate.DestinationLabel: "api"}) {
		rules, _, _ := unstructured.NestedSlice(ap.Object, "spec", "rules")
		if ap.GetName() == aps[0].GetName() && len(rules) > 0 {
			s, r, m := ttReadyMessage(ns, "b")
			t.Errorf("hole: TrafficTarget a is gone, yet its policy %s (terminating: %v) still allows web on 5432 as istiod reads it; nothing says so (b: Ready=%s/%s %q)",
				ap.GetName(), !ap.GetDeletionTimestamp().IsZero(), s, r, m)
		}
	}
}

// istiod reads no config in a namespace its discoverySelectors leave out (its crdclient filters
// every namespaced kind by the discovery namespace filter): the policies and the baseline there are
// ignored, whatever runs in the namespace. A namespace that stops being discovered while its pods
// still run sidecars (connected to istiod, given no policy: every source allowed) is, for the
// operator, "not in the mesh, but SMI stays enforced until they are restarted": its TrafficTargets
// say Ready=True. A status that claims less is allowed than really is.
func TestRedTeamUndiscoveredNamespaceClaimsEnforced(t *testing.T) {
	ns := freshNamespace(t)
	meshNamespace(t, ns)
	applyYAML(t, ns, regexAccess)
	applyYAML(t, ns, `
apiVersion: v1
kind: Pod
metadata:
  name: api-0
  labels: {app: api}
  annotations: {sidecar.istio.io/status: '{"containers":["istio-proxy"]}'}
spec:
  serviceAccountName: api
  containers: [{name: api, image: x}, {name: istio-proxy, image: proxyv2}]
`)
	waitTTReady(t, ns, "a", "True", controllers.ReasonApplied)
	waitBaselines(t, true, ns)

	ensureNamespace(t, "istio-system")
	prev := &corev1.ConfigMap{}
	err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: "istio-system", Name: "istio"}, prev)
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	existed := err == nil
	t.Cleanup(func() {
		if existed {
			setMeshConfig(t, "istio", "", prev.Data["mesh"])
			return
		}
		_ = env.Client.Delete(context.Background(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "istio", Namespace: "istio-system"}})
	})
	// Every namespace but ns stays discovered (the suite's others stay in the mesh).
	setMeshConfig(t, "istio", "", "discoverySelectors:\n- matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: ["+ns+"]}]\n")
	eventually(t, "a sees that "+ns+" is no longer a member", func() error {
		if _, _, m := ttReadyMessage(ns, "a"); !strings.Contains(m, "not in the mesh") {
			return fmt.Errorf("Ready message %q", m)
		}
		return nil
	})
	if s, r, m := ttReadyMessage(ns, "a"); s == "True" {
		t.Errorf("hole: istiod ignores every policy of %s (not discovered), so api-0's sidecar allows every source, yet a says Ready=%s/%s %q", ns, s, r, m)
	}
}

// Istio's root namespace gets no baseline (it would close the mesh) and no access outputs (a
// selector there applies to every namespace): its workloads (gateways, or a tenant's) allow every
// source. A TrafficTarget whose destination is there says "nothing is applied, nothing is allowed"
// — a status that claims less is allowed than really is (every source is).
func TestRedTeamRootNamespaceClaimsNothingAllowed(t *testing.T) {
	meshNamespace(t, "istio-system")
	applyYAML(t, "istio-system", `
apiVersion: apps/v1
kind: Deployment
metadata: {name: rt-api}
spec:
  selector: {matchLabels: {app: rt-api}}
  template:
    metadata: {labels: {app: rt-api}}
    spec: {serviceAccountName: rt-api, containers: [{name: api, image: x}]}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: rt-root}
spec:
  destination: {kind: ServiceAccount, name: rt-api}
  sources: [{kind: ServiceAccount, name: web}]
  rules: [{kind: HTTPRouteGroup, name: missing}]
`)
	t.Cleanup(func() {
		tt := objOf(controllers.TrafficTargetGVK)
		tt.SetNamespace("istio-system")
		tt.SetName("rt-root")
		_ = env.Client.Delete(context.Background(), tt)
	})
	waitTTReady(t, "istio-system", "rt-root", "False", controllers.ReasonRootNamespace)
	if _, _, m := ttReadyMessage("istio-system", "rt-root"); !baselineExists("istio-system") && strings.Contains(m, "nothing is allowed") {
		t.Errorf("hole (status): istio-system has no deny-by-default baseline and no policy for rt-api, so every source is allowed to it, yet rt-root says %q", m)
	}
}

// Selectors are made precise against the namespace's workloads: api's pods share app=shop with a pod
// of ServiceAccount admin, so api gets no policy (imprecise: fail closed). The workload index drops
// admin-0 as soon as it is terminating, though it runs (and enforces what istiod gives its sidecar)
// for its whole grace period: api's selector becomes app=shop, which selects admin-0 too, and web
// is allowed to admin-0 — which no TrafficTarget allows — until it stops.
func TestRedTeamTerminatingPodWidensSelector(t *testing.T) {
	ns := freshNamespace(t)
	meshNamespace(t, ns)
	applyYAML(t, ns, `
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  selector: {matchLabels: {app: shop}}
  template:
    metadata: {labels: {app: shop}}
    spec: {serviceAccountName: api, containers: [{name: api, image: x}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: admin-0
  labels: {app: shop}
  annotations: {sidecar.istio.io/status: '{"containers":["istio-proxy"]}'}
spec:
  nodeName: node-1
  terminationGracePeriodSeconds: 60
  serviceAccountName: admin
  containers: [{name: admin, image: x}, {name: istio-proxy, image: proxyv2}]
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: db}
spec:
  matches: {ports: [5432]}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: a}
spec:
  destination: {kind: ServiceAccount, name: api}
  sources: [{kind: ServiceAccount, name: web}]
  rules: [{kind: TCPRoute, name: db}]
`)
	pod := &unstructured.Unstructured{}
	pod.SetAPIVersion("v1")
	pod.SetKind("Pod")
	pod.SetNamespace(ns)
	pod.SetName("admin-0")
	defer func() { _ = env.Client.Delete(context.Background(), pod.DeepCopy(), client.GracePeriodSeconds(0)) }()
	eventually(t, "a reports api's imprecise selector", func() error {
		if s, _, _ := ttCondition(ns, "a", "ResolvedRefs"); s != "False" {
			return fmt.Errorf("ResolvedRefs=%s", s)
		}
		return nil
	})
	if ps := policiesOf(t, ns, "api"); len(ps) != 0 {
		t.Fatalf("api has policies while its selector is imprecise: %v", ps)
	}
	if err := env.Client.Delete(context.Background(), pod.DeepCopy()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(8 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		p, err := get(pod, ns, "admin-0")
		if err != nil {
			t.Fatalf("the pod went (%v): nothing to show", err)
		}
		for name, ap := range policiesOf(t, ns, "api") {
			if !p.GetDeletionTimestamp().IsZero() && (policy{Selector: ap.Selector}).selects(p.GetLabels()) {
				t.Fatalf("hole: %s's policy (selector %v, rules %v) selects admin-0 (ServiceAccount admin, sidecar running, terminating with 60 s grace): web is allowed to it", name, ap.Selector, ap.Rules)
			}
		}
	}
}

func (p policy) selects(labels map[string]string) bool {
	for k, v := range p.Selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// The filter is let go EnvoyRungSettle after it was first found with nothing relying on it, as noted
// in smi2istio.io/unrelied-since — an annotation anyone who can edit the filter can write ahead of
// time (UpToDate ignores annotations the desired object lacks). With an old date there, the filter
// goes the moment its last policy does: istiod may push the filter's removal before the policy's,
// the state Settle exists to prevent. FAIL-CLOSED §3.
func TestRedTeamPresetUnreliedSkipsSettle(t *testing.T) {
	ns := freshNamespace(t)
	meshNamespace(t, ns)
	applyYAML(t, ns, regexAccess)
	waitTTReady(t, ns, "a", "True", controllers.ReasonApplied)
	waitTTReady(t, ns, "b", "True", controllers.ReasonApplied)
	efs := listAll(t, ns, objOf(controllers.EnvoyFilterGVK), client.MatchingLabels{translate.DestinationLabel: "api"})
	if len(efs) != 1 {
		t.Fatalf("EnvoyFilters of api: %d", len(efs))
	}
	patch := []byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:"2020-01-01T00:00:00Z"}}}`, "smi2istio.io/unrelied-since"))
	if err := env.Client.Patch(context.Background(), efs[0].DeepCopy(), client.RawPatch(types.MergePatchType, patch), client.FieldOwner("kubectl-annotate")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // nothing to react to: the operator leaves the annotation
	var policiesGone, filterGone time.Time
	for _, name := range []string{"a", "b"} {
		tt := objOf(controllers.TrafficTargetGVK)
		tt.SetNamespace(ns)
		tt.SetName(name)
		if err := env.Client.Delete(context.Background(), tt); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) && filterGone.IsZero() {
		aps := listAll(t, ns, objOf(controllers.AuthorizationPolicyGVK), client.MatchingLabels{translate.DestinationLabel: "api"})
		efs := listAll(t, ns, objOf(controllers.EnvoyFilterGVK), client.MatchingLabels{translate.DestinationLabel: "api"})
		now := time.Now()
		if len(aps) == 0 && policiesGone.IsZero() {
			policiesGone = now
		}
		if len(efs) == 0 {
			filterGone = now
		}
		time.Sleep(5 * time.Millisecond)
	}
	if policiesGone.IsZero() || filterGone.IsZero() {
		t.Fatalf("outputs not removed: policies gone %v, filter gone %v", policiesGone, filterGone)
	}
	if gap := filterGone.Sub(policiesGone); gap < controllers.EnvoyRungSettle-time.Second {
		t.Errorf("hole: the filter went %v after the last policy relying on it (want at least ~%v): a preset %s skipped the Settle", gap.Round(time.Millisecond), controllers.EnvoyRungSettle, "smi2istio.io/unrelied-since")
	}
}
