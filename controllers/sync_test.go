package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/controllers"
	"github.com/smi2istio/smi2istio/translate"
)

// regexAccess is a destination "api" whose two TrafficTargets (a: web, b: batch) both rely on the
// Envoy rung (a regex no AuthorizationPolicy can express).
const regexAccess = `
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
  sources: [{kind: ServiceAccount, name: batch}]
  rules: [{kind: HTTPRouteGroup, name: orders}]
`

func listNames(t *testing.T, ns string, obj *unstructured.Unstructured, labels client.MatchingLabels) ([]string, error) {
	t.Helper()
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(obj.GroupVersionKind().GroupVersion().WithKind(obj.GetKind() + "List"))
	if err := env.Client.List(context.Background(), list, client.InNamespace(ns), labels); err != nil {
		return nil, err
	}
	var out []string
	for _, u := range list.Items {
		out = append(out, u.GetName())
	}
	return out, nil
}

// watchEnvoyRung polls the apiserver (not a cache) while the test runs and records any moment at
// which the destination's AuthorizationPolicies (all of which rely on the Envoy rung here) exist
// without its EnvoyFilter.
func watchEnvoyRung(t *testing.T, ns, destination string) (stop func() []string) {
	var done atomic.Bool
	var wg sync.WaitGroup
	var mu sync.Mutex
	var holes []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !done.Load() {
			aps, err1 := listNames(t, ns, objOf(controllers.AuthorizationPolicyGVK), client.MatchingLabels{translate.DestinationLabel: destination})
			efs, err2 := listNames(t, ns, objOf(controllers.EnvoyFilterGVK), client.MatchingLabels{translate.DestinationLabel: destination})
			if err1 == nil && err2 == nil && len(aps) > 0 && len(efs) == 0 {
				mu.Lock()
				holes = append(holes, fmt.Sprintf("%s: policies %v without an EnvoyFilter", time.Now().Format(time.StampMilli), aps))
				mu.Unlock()
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return func() []string {
		done.Store(true)
		wg.Wait()
		return holes
	}
}

// The Envoy rung's filter belongs to every TrafficTarget of its destination: deleting the one
// that sorts first leaves it in place for the other; deleting all of them never leaves a widened
// policy without its filter, whatever the garbage collector deletes first.
func TestEnvoyRungFilterOutlivesEachOwner(t *testing.T) {
	ns := freshNamespace(t)
	meshNamespace(t, ns)
	stop := watchEnvoyRung(t, ns, "api")
	applyYAML(t, ns, regexAccess)
	waitTTReady(t, ns, "a", "True", controllers.ReasonApplied)
	waitTTReady(t, ns, "b", "True", controllers.ReasonApplied)
	filterName := func() string {
		names, err := listNames(t, ns, objOf(controllers.EnvoyFilterGVK), client.MatchingLabels{translate.DestinationLabel: "api"})
		if err != nil || len(names) != 1 {
			t.Fatalf("EnvoyFilters of api: %v %v", names, err)
		}
		return names[0]
	}
	ef, err := get(objOf(controllers.EnvoyFilterGVK), ns, filterName())
	if err != nil {
		t.Fatal(err)
	}
	if refs := ef.GetOwnerReferences(); len(refs) != 2 || (refs[0].Controller != nil && *refs[0].Controller) || (refs[1].Controller != nil && *refs[1].Controller) {
		t.Errorf("the filter's owners %+v, want both TrafficTargets and neither as controller", refs)
	}
	if f := ef.GetFinalizers(); len(f) != 1 || f[0] != controllers.EnvoyRungFinalizer {
		t.Errorf("the filter's finalizers %v, want %s", f, controllers.EnvoyRungFinalizer)
	}

	a := objOf(controllers.TrafficTargetGVK)
	a.SetNamespace(ns)
	a.SetName("a")
	if err := env.Client.Delete(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	waitPolicies(t, ns, "api", func(ps map[string]policy) error {
		if _, ok := ps["a"]; ok || len(ps) != 1 {
			return fmt.Errorf("want b's policy alone, got %v", ps)
		}
		return nil
	})
	eventually(t, "the filter owned by b alone", func() error {
		ef, err := get(objOf(controllers.EnvoyFilterGVK), ns, filterName())
		if err != nil {
			return err
		}
		if refs := ef.GetOwnerReferences(); len(refs) != 1 || refs[0].Name != "b" || !ef.GetDeletionTimestamp().IsZero() {
			return fmt.Errorf("owners %+v, deleting %v", refs, ef.GetDeletionTimestamp())
		}
		return nil
	})
	waitTTReady(t, ns, "b", "True", controllers.ReasonApplied)

	b := a.DeepCopy()
	b.SetName("b")
	if err := env.Client.Delete(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	eventually(t, "every output of api gone", func() error {
		for _, obj := range []*unstructured.Unstructured{objOf(controllers.AuthorizationPolicyGVK), objOf(controllers.EnvoyFilterGVK), objOf(controllers.PeerAuthenticationGVK)} {
			if names, err := listNames(t, ns, obj, client.MatchingLabels{translate.DestinationLabel: "api"}); err != nil || len(names) > 0 {
				return fmt.Errorf("%s left: %v: %w", obj.GetKind(), names, err)
			}
		}
		return nil
	})
	for _, h := range stop() {
		t.Errorf("hole: %s", h)
	}
}

// All or nothing: one object of a destination's set that is not ours (a user's policy with the
// name of a new TrafficTarget's output) writes nothing of the set, removes what was there, and every
// TrafficTarget of the destination says why; when it goes, the whole set comes.
func TestAccessSetAllOrNothing(t *testing.T) {
	ns := freshNamespace(t)
	meshNamespace(t, ns)
	applyYAML(t, ns, regexAccess)
	waitTTReady(t, ns, "b", "True", controllers.ReasonApplied)
	names, err := listNames(t, ns, objOf(controllers.AuthorizationPolicyGVK), client.MatchingLabels{translate.SourceNameLabel: "b"})
	if err != nil || len(names) != 1 {
		t.Fatalf("b's policies: %v %v", names, err)
	}
	// A user's policy has the name a new TrafficTarget c's output will have.
	taken := "c" + strings.TrimPrefix(names[0], "b")
	applyYAML(t, ns, fmt.Sprintf(`
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: %s, labels: {team: payments}}
spec: {selector: {matchLabels: {app: nothing}}}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: c}
spec:
  destination: {kind: ServiceAccount, name: api}
  sources: [{kind: ServiceAccount, name: audit}]
  rules: [{kind: HTTPRouteGroup, name: orders}]
`, taken))
	waitTTReady(t, ns, "c", "False", controllers.ReasonConflict)
	waitTTReady(t, ns, "b", "False", controllers.ReasonConflict)
	waitTTReady(t, ns, "a", "False", controllers.ReasonConflict)
	eventually(t, "nothing of the set left", func() error {
		for _, obj := range []*unstructured.Unstructured{objOf(controllers.AuthorizationPolicyGVK), objOf(controllers.EnvoyFilterGVK), objOf(controllers.PeerAuthenticationGVK)} {
			if names, err := listNames(t, ns, obj, client.MatchingLabels{translate.DestinationLabel: "api"}); err != nil || len(names) > 0 {
				return fmt.Errorf("%s left: %v: %w", obj.GetKind(), names, err)
			}
		}
		return nil
	})
	user, err := get(objOf(controllers.AuthorizationPolicyGVK), ns, taken)
	if err != nil || user.GetLabels()["team"] != "payments" || len(user.GetOwnerReferences()) != 0 {
		t.Fatalf("the user's policy was touched: %v %v", user, err)
	}
	if err := env.Client.Delete(context.Background(), user); err != nil {
		t.Fatal(err)
	}
	waitTTReady(t, ns, "a", "True", controllers.ReasonApplied)
	waitTTReady(t, ns, "b", "True", controllers.ReasonApplied)
	waitTTReady(t, ns, "c", "True", controllers.ReasonApplied)
}

// A TrafficTarget that changes its destination takes its policies away from the old one.
func TestTargetMovesToAnotherDestination(t *testing.T) {
	ns := freshNamespace(t)
	meshNamespace(t, ns)
	applyYAML(t, ns, regexAccess+`
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: other}
spec:
  selector: {matchLabels: {app: other}}
  template:
    metadata: {labels: {app: other}}
    spec: {serviceAccountName: other, containers: [{name: other, image: x}]}
`)
	waitTTReady(t, ns, "a", "True", controllers.ReasonApplied)
	applyYAML(t, ns, `
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: a}
spec:
  destination: {kind: ServiceAccount, name: other}
  sources: [{kind: ServiceAccount, name: web}]
  rules: [{kind: HTTPRouteGroup, name: orders}]
`)
	waitPolicies(t, ns, "api", func(ps map[string]policy) error {
		if _, ok := ps["a"]; ok {
			return fmt.Errorf("a's policy is still on api: %v", ps)
		}
		return nil
	})
	waitPolicies(t, ns, "other", func(ps map[string]policy) error {
		if _, ok := ps["a"]; !ok {
			return fmt.Errorf("a's policy is not on other: %v", ps)
		}
		return nil
	})
}

// Only VirtualServices Istio applies to the same clients block a split; one that does never
// deletes what the split applied.
func TestForeignVirtualServicesOnlyBlockForTheSameClients(t *testing.T) {
	ns := freshNamespace(t)
	tenant := freshNamespace(t)
	applyYAML(t, ns, subsetServices)
	applyYAML(t, tenant, fmt.Sprintf(`
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: private}
spec:
  hosts: [web.%[1]s.svc.cluster.local]
  exportTo: ["."]
  http: [{route: [{destination: {host: web.%[1]s.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: ingress-only}
spec:
  hosts: [web.%[1]s.svc.cluster.local]
  gateways: [istio-system/ingress]
  http: [{route: [{destination: {host: web.%[1]s.svc.cluster.local}}]}]
`, ns))
	applyYAML(t, ns, splitYAML("canary", 90, 10))
	waitCondition(t, ns, "canary", "Ready", "True", controllers.ReasonApplied)

	applyYAML(t, tenant, fmt.Sprintf(`
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: public}
spec:
  hosts: [web.%[1]s.svc.cluster.local]
  http: [{route: [{destination: {host: web.%[1]s.svc.cluster.local}}]}]
`, ns))
	waitCondition(t, ns, "canary", "Ready", "False", controllers.ReasonConflict)
	for _, obj := range []*unstructured.Unstructured{vsObj(), drObj()} {
		if _, err := get(obj, ns, "web"); err != nil {
			t.Errorf("another namespace's VirtualService removed the split's %s: %v", obj.GetKind(), err)
		}
	}
	// The canary moves on while blocked: nothing is written until the block goes.
	applyYAML(t, ns, splitYAML("canary", 50, 50))
	waitCondition(t, ns, "canary", "Ready", "False", controllers.ReasonConflict)
	waitRoutes(t, ns, "web", []route{
		{Host: "web." + ns + ".svc.cluster.local", Subset: "web-v1", Port: 80, Weight: 90},
		{Host: "web." + ns + ".svc.cluster.local", Subset: "web-v2", Port: 80, Weight: 10},
	})
	public := vsObj()
	public.SetNamespace(tenant)
	public.SetName("public")
	if err := env.Client.Delete(context.Background(), public); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	waitRoutes(t, ns, "web", []route{
		{Host: "web." + ns + ".svc.cluster.local", Subset: "web-v1", Port: 80, Weight: 50},
		{Host: "web." + ns + ".svc.cluster.local", Subset: "web-v2", Port: 80, Weight: 50},
	})
	waitCondition(t, ns, "canary", "Ready", "True", controllers.ReasonApplied)
}

// A selector-based policy in Istio's root namespace would apply to every namespace: nothing is
// written there, and the TrafficTarget says so.
func TestNoAccessOutputsInRootNamespace(t *testing.T) {
	meshNamespace(t, "istio-system")
	applyYAML(t, "istio-system", regexAccess)
	waitTTReady(t, "istio-system", "a", "False", controllers.ReasonRootNamespace)
	for _, obj := range []*unstructured.Unstructured{objOf(controllers.AuthorizationPolicyGVK), objOf(controllers.EnvoyFilterGVK), objOf(controllers.PeerAuthenticationGVK)} {
		if names, err := listNames(t, "istio-system", obj, client.MatchingLabels{translate.ManagedByLabel: translate.ManagedByValue}); err != nil || len(names) > 0 {
			t.Errorf("%s written in the root namespace: %v %v", obj.GetKind(), names, err)
		}
	}
}

// A widened policy that stops being ours (a tool overwrote our managed-by label) still relies on
// the Envoy rung's filter: the set is removed (Conflict), but the filter stays in effect as long as
// that policy exists, and the TrafficTargets say why; when the policy goes, the set comes back.
func TestRelabelledPolicyKeepsItsFilter(t *testing.T) {
	ns := freshNamespace(t)
	meshNamespace(t, ns)
	applyYAML(t, ns, regexAccess)
	waitTTReady(t, ns, "a", "True", controllers.ReasonApplied)
	waitTTReady(t, ns, "b", "True", controllers.ReasonApplied)
	filters, err := listNames(t, ns, objOf(controllers.EnvoyFilterGVK), client.MatchingLabels{translate.DestinationLabel: "api"})
	if err != nil || len(filters) != 1 {
		t.Fatalf("EnvoyFilters of api: %v %v", filters, err)
	}
	names, err := listNames(t, ns, objOf(controllers.AuthorizationPolicyGVK), client.MatchingLabels{translate.SourceNameLabel: "a"})
	if err != nil || len(names) != 1 {
		t.Fatalf("a's policies: %v %v", names, err)
	}
	widened, err := get(objOf(controllers.AuthorizationPolicyGVK), ns, names[0])
	if err != nil {
		t.Fatal(err)
	}
	if got := widened.GetAnnotations()[controllers.ReliesOnAnnotation]; got != filters[0] {
		t.Fatalf("a's policy relies on %q, want the filter %q", got, filters[0])
	}
	stop := watchEnvoyRung(t, ns, "api") // the relabelled policy keeps its destination label
	patch := []byte(fmt.Sprintf(`{"metadata":{"labels":{%q:"someone-else"}}}`, translate.ManagedByLabel))
	if err := env.Client.Patch(context.Background(), widened, client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatal(err)
	}
	waitTTReady(t, ns, "a", "False", controllers.ReasonConflict)
	waitTTReady(t, ns, "b", "False", controllers.ReasonNotApplied)
	eventually(t, "b says the filter is kept for the relabelled policy", func() error {
		u, err := get(objOf(controllers.TrafficTargetGVK), ns, "b")
		if err != nil {
			return err
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			if m := c.(map[string]any); m["type"] == "Ready" && strings.Contains(fmt.Sprint(m["message"]), "is kept: AuthorizationPolicy "+ns+"/"+names[0]+" relies on it") {
				return nil
			}
		}
		return fmt.Errorf("conditions %v", conds)
	})
	for range 20 { // the reconciler has settled; the filter must stay while the policy does
		ef, err := get(objOf(controllers.EnvoyFilterGVK), ns, filters[0])
		if err != nil {
			t.Fatalf("the filter went while a policy relying on it stays: %v", err)
		}
		if f := ef.GetFinalizers(); len(f) != 1 || f[0] != controllers.EnvoyRungFinalizer {
			t.Fatalf("the filter's finalizers %v", f)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := env.Client.Delete(context.Background(), widened); err != nil {
		t.Fatal(err)
	}
	waitTTReady(t, ns, "a", "True", controllers.ReasonApplied)
	waitTTReady(t, ns, "b", "True", controllers.ReasonApplied)
	for _, h := range stop() {
		t.Errorf("hole: %s", h)
	}
}
