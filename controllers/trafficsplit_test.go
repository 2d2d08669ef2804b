package controllers_test

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/smi2istio/smi2istio/controllers"
	"github.com/smi2istio/smi2istio/internal/testing/istiocheck"
	"github.com/smi2istio/smi2istio/internal/testing/testenv"
)

func vsObj() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(controllers.VirtualServiceGVK)
	return u
}

func drObj() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(controllers.DestinationRuleGVK)
	return u
}

func tsObj() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(controllers.TrafficSplitGVK)
	return u
}

// route is one weighted destination of a VirtualService's first HTTP route.
type route struct {
	Host, Subset string
	Port, Weight int64
}

func httpRoutes(t *testing.T, vs *unstructured.Unstructured) []route {
	t.Helper()
	httpRoutes, _, _ := unstructured.NestedSlice(vs.Object, "spec", "http")
	if len(httpRoutes) == 0 {
		t.Fatalf("VirtualService %s has no http routes: %v", vs.GetName(), vs.Object["spec"])
	}
	dests, _, _ := unstructured.NestedSlice(httpRoutes[0].(map[string]any), "route")
	var out []route
	for _, d := range dests {
		m := d.(map[string]any)
		host, _, _ := unstructured.NestedString(m, "destination", "host")
		subset, _, _ := unstructured.NestedString(m, "destination", "subset")
		port, _, _ := unstructured.NestedInt64(m, "destination", "port", "number")
		weight, _, _ := unstructured.NestedInt64(m, "weight")
		out = append(out, route{Host: host, Subset: subset, Port: port, Weight: weight})
	}
	return out
}

func subsets(dr *unstructured.Unstructured) []string {
	list, _, _ := unstructured.NestedSlice(dr.Object, "spec", "subsets")
	var out []string
	for _, s := range list {
		name, _, _ := unstructured.NestedString(s.(map[string]any), "name")
		out = append(out, name)
	}
	return out
}

// condition returns the status and reason of a condition on a TrafficSplit, and whether it was
// set for the current generation.
func condition(ns, name, typ string) (status, reason, message string, current bool, err error) {
	ts, err := get(tsObj(), ns, name)
	if err != nil {
		return "", "", "", false, err
	}
	conds, _, _ := unstructured.NestedSlice(ts.Object, "status", "conditions")
	for _, c := range conds {
		m := c.(map[string]any)
		if m["type"] == typ {
			gen, _, _ := unstructured.NestedInt64(m, "observedGeneration")
			return fmt.Sprint(m["status"]), fmt.Sprint(m["reason"]), fmt.Sprint(m["message"]), gen == ts.GetGeneration(), nil
		}
	}
	return "", "", "", false, fmt.Errorf("no %s condition yet", typ)
}

func waitCondition(t *testing.T, ns, name, typ, wantStatus, wantReason string) {
	t.Helper()
	eventually(t, fmt.Sprintf("TrafficSplit %s/%s %s=%s/%s", ns, name, typ, wantStatus, wantReason), func() error {
		status, reason, msg, current, err := condition(ns, name, typ)
		if err != nil {
			return err
		}
		if status != wantStatus || reason != wantReason || !current {
			return fmt.Errorf("got %s/%s (current generation: %v): %s", status, reason, current, msg)
		}
		return nil
	})
}

func waitRoutes(t *testing.T, ns, name string, want []route) *unstructured.Unstructured {
	t.Helper()
	var vs *unstructured.Unstructured
	eventually(t, "VirtualService "+ns+"/"+name+" routes", func() error {
		var err error
		if vs, err = get(vsObj(), ns, name); err != nil {
			return err
		}
		if got := httpRoutes(t, vs); !reflect.DeepEqual(got, want) {
			return fmt.Errorf("routes %+v, want %+v", got, want)
		}
		return nil
	})
	if err := istiocheck.Validate(vs); err != nil {
		t.Errorf("applied VirtualService fails Istio's validation: %v", err)
	}
	return vs
}

func waitSubsets(t *testing.T, ns, name string, want []string) {
	t.Helper()
	eventually(t, "DestinationRule "+ns+"/"+name+" subsets", func() error {
		dr, err := get(drObj(), ns, name)
		if err != nil {
			return err
		}
		if got := subsets(dr); !reflect.DeepEqual(got, want) {
			return fmt.Errorf("subsets %v, want %v", got, want)
		}
		return nil
	})
}

func waitGone(t *testing.T, u *unstructured.Unstructured, ns, name string) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s %s/%s to be deleted", u.GetKind(), ns, name), func() error {
		_, err := get(u, ns, name)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there: %w", err)
	})
}

func fixture(parts ...string) string {
	return filepath.Join(append([]string{testenv.RepoRoot(), "testdata", "fixtures"}, parts...)...)
}

// assertNoWrites reconciles the split again and fails if that wrote anything.
func assertNoWrites(t *testing.T, ns, name string) {
	t.Helper()
	settle(t, &splitWrites)
	before := splitWrites.Load()
	for i := 0; i < 2; i++ {
		if _, err := splitR.Reconcile(context.Background(), reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}}); err != nil {
			t.Fatalf("reconcile: %v", err)
		}
	}
	if n := splitWrites.Load() - before; n != 0 {
		t.Errorf("reconciling an unchanged TrafficSplit made %d write(s), want 0", n)
	}
}

// The OSM 1.2 walk-through: v1 only, then 50/50, then v2 only; deleting the split removes the outputs.
func TestOSMBookstoreSplits(t *testing.T) {
	const ns, host = "bookstore", "bookstore.bookstore.svc.cluster.local"
	applyFile(t, fixture("osm-v1.2-bookstore", "apps", "bookstore.yaml"), "")
	applyFile(t, fixture("osm-v1.2-bookstore", "apps", "bookstore-v2.yaml"), "")

	applyFile(t, fixture("osm-v1.2-bookstore", "split", "traffic-split-v1.yaml"), "")
	waitRoutes(t, ns, "bookstore", []route{{Host: host, Subset: "bookstore-v1", Port: 14001}})
	waitSubsets(t, ns, "bookstore", []string{"bookstore-v1"})
	waitCondition(t, ns, "bookstore-split", "Ready", "True", controllers.ReasonApplied)
	waitCondition(t, ns, "bookstore-split", "Accepted", "True", controllers.ReasonAccepted)
	assertNoWrites(t, ns, "bookstore-split")

	applyFile(t, fixture("osm-v1.2-bookstore", "split", "traffic-split-50-50.yaml"), "")
	waitRoutes(t, ns, "bookstore", []route{
		{Host: host, Subset: "bookstore-v1", Port: 14001, Weight: 50},
		{Host: host, Subset: "bookstore-v2", Port: 14001, Weight: 50},
	})
	waitSubsets(t, ns, "bookstore", []string{"bookstore-v1", "bookstore-v2"})
	waitCondition(t, ns, "bookstore-split", "Ready", "True", controllers.ReasonApplied)
	assertNoWrites(t, ns, "bookstore-split")

	applyFile(t, fixture("osm-v1.2-bookstore", "split", "traffic-split-v2.yaml"), "")
	waitRoutes(t, ns, "bookstore", []route{
		{Host: host, Subset: "bookstore-v1", Port: 14001},
		{Host: host, Subset: "bookstore-v2", Port: 14001, Weight: 100},
	})
	waitCondition(t, ns, "bookstore-split", "Ready", "True", controllers.ReasonApplied)

	ts, err := get(tsObj(), ns, "bookstore-split")
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Delete(context.Background(), ts); err != nil {
		t.Fatal(err)
	}
	waitGone(t, vsObj(), ns, "bookstore")
	waitGone(t, drObj(), ns, "bookstore")
}

const subsetServices = `
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-v1}
spec: {selector: {app: web, version: v1}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-v2}
spec: {selector: {app: web, version: v2}, ports: [{name: http, port: 80}]}
`

func splitYAML(name string, w1, w2 int) string {
	return fmt.Sprintf(`
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: %s}
spec:
  service: web
  backends: [{service: web-v1, weight: %d}, {service: web-v2, weight: %d}]
`, name, w1, w2)
}

// A user's VirtualService for the root host is never touched; the split reports Conflict until it goes.
func TestUserVirtualServiceConflict(t *testing.T) {
	ns := freshNamespace(t)
	applyYAML(t, ns, subsetServices+`
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: hand-written}
spec:
  hosts: [web]
  http: [{route: [{destination: {host: web}}]}]
`)
	user, err := get(vsObj(), ns, "hand-written")
	if err != nil {
		t.Fatal(err)
	}
	applyYAML(t, ns, splitYAML("canary", 90, 10))
	waitCondition(t, ns, "canary", "Ready", "False", controllers.ReasonConflict)
	if _, err := get(vsObj(), ns, "web"); !apierrors.IsNotFound(err) {
		t.Errorf("no VirtualService may be written while a user's routes the host: %v", err)
	}
	after, err := get(vsObj(), ns, "hand-written")
	if err != nil || after.GetResourceVersion() != user.GetResourceVersion() {
		t.Errorf("the user's VirtualService was modified (rv %s -> %s, err %v)", user.GetResourceVersion(), after.GetResourceVersion(), err)
	}

	if err := env.Client.Delete(context.Background(), after); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, ns, "web", []route{
		{Host: "web." + ns + ".svc.cluster.local", Subset: "web-v1", Port: 80, Weight: 90},
		{Host: "web." + ns + ".svc.cluster.local", Subset: "web-v2", Port: 80, Weight: 10},
	})
	waitCondition(t, ns, "canary", "Ready", "True", controllers.ReasonApplied)
}

// An object that has our output's name but is not ours is left alone.
func TestSameNameObjectNotOwned(t *testing.T) {
	ns := freshNamespace(t)
	applyYAML(t, ns, subsetServices+`
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: web}
spec: {host: something-else}
`)
	applyYAML(t, ns, splitYAML("canary", 1, 1))
	waitCondition(t, ns, "canary", "Ready", "False", controllers.ReasonConflict)
	dr, err := get(drObj(), ns, "web")
	if err != nil {
		t.Fatal(err)
	}
	if h, _, _ := unstructured.NestedString(dr.Object, "spec", "host"); h != "something-else" || len(dr.GetOwnerReferences()) != 0 {
		t.Errorf("the user's DestinationRule was modified: %v", dr.Object)
	}
	if _, err := get(vsObj(), ns, "web"); !apierrors.IsNotFound(err) {
		t.Errorf("a conflict must write nothing, found a VirtualService (err %v)", err)
	}
}

// A backend that stops being a subset of the root flips the split to host mode and prunes the
// DestinationRule.
func TestSelectorChangeFlipsModeAndPrunes(t *testing.T) {
	ns := freshNamespace(t)
	applyYAML(t, ns, subsetServices)
	applyYAML(t, ns, splitYAML("canary", 3, 1))
	host := "web." + ns + ".svc.cluster.local"
	waitRoutes(t, ns, "web", []route{{Host: host, Subset: "web-v1", Port: 80, Weight: 75}, {Host: host, Subset: "web-v2", Port: 80, Weight: 25}})
	waitSubsets(t, ns, "web", []string{"web-v1", "web-v2"})

	applyYAML(t, ns, `
apiVersion: v1
kind: Service
metadata: {name: web-v2}
spec: {selector: {app: web-canary}, ports: [{name: http, port: 80}]}
`)
	waitRoutes(t, ns, "web", []route{
		{Host: "web-v1." + ns + ".svc.cluster.local", Port: 80, Weight: 75},
		{Host: "web-v2." + ns + ".svc.cluster.local", Port: 80, Weight: 25},
	})
	waitGone(t, drObj(), ns, "web")
	assertNoWrites(t, ns, "canary")
}

// Two splits for one root: the oldest wins; when it goes, the other takes over.
func TestSecondSplitForSameRoot(t *testing.T) {
	ns := freshNamespace(t)
	applyYAML(t, ns, subsetServices)
	applyYAML(t, ns, splitYAML("first", 1, 0))
	waitCondition(t, ns, "first", "Ready", "True", controllers.ReasonApplied)
	applyYAML(t, ns, splitYAML("second", 0, 1))
	waitCondition(t, ns, "second", "Ready", "False", controllers.ReasonConflict)
	host := "web." + ns + ".svc.cluster.local"
	waitRoutes(t, ns, "web", []route{{Host: host, Subset: "web-v1", Port: 80, Weight: 100}, {Host: host, Subset: "web-v2", Port: 80}})

	first, err := get(tsObj(), ns, "first")
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Delete(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, ns, "second", "Ready", "True", controllers.ReasonApplied)
	vs := waitRoutes(t, ns, "web", []route{{Host: host, Subset: "web-v1", Port: 80}, {Host: host, Subset: "web-v2", Port: 80, Weight: 100}})
	second, _ := get(tsObj(), ns, "second")
	if owner := vs.GetOwnerReferences(); len(owner) != 1 || owner[0].UID != second.GetUID() {
		t.Errorf("VirtualService owner = %v, want the second split", owner)
	}
}

// Invalid input is reported, not applied, and previously applied outputs are removed.
func TestInvalidSplitIsReportedAndPruned(t *testing.T) {
	ns := freshNamespace(t)
	applyYAML(t, ns, subsetServices)
	applyYAML(t, ns, splitYAML("canary", 1, 1))
	waitCondition(t, ns, "canary", "Ready", "True", controllers.ReasonApplied)
	applyYAML(t, ns, splitYAML("canary", 0, 0))
	waitCondition(t, ns, "canary", "Accepted", "False", "AllZeroWeights")
	waitCondition(t, ns, "canary", "Ready", "False", controllers.ReasonInvalid)
	waitGone(t, vsObj(), ns, "web")
	waitGone(t, drObj(), ns, "web")
}

// A split whose backend does not exist yet reports it and picks it up when it appears.
func TestMissingBackendResolvedLater(t *testing.T) {
	ns := freshNamespace(t)
	applyYAML(t, ns, `
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-v1}
spec: {selector: {app: web, version: v1}, ports: [{name: http, port: 80}]}
`)
	applyYAML(t, ns, splitYAML("canary", 1, 1))
	waitCondition(t, ns, "canary", "ResolvedRefs", "False", "BackendNotFound")
	host := "web." + ns + ".svc.cluster.local"
	waitRoutes(t, ns, "web", []route{{Host: host, Subset: "web-v1", Port: 80}})
	applyYAML(t, ns, subsetServices)
	waitCondition(t, ns, "canary", "ResolvedRefs", "True", controllers.ReasonResolvedRefs)
	waitRoutes(t, ns, "web", []route{{Host: host, Subset: "web-v1", Port: 80, Weight: 50}, {Host: host, Subset: "web-v2", Port: 80, Weight: 50}})
}
