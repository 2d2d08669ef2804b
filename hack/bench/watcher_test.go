package main

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
)

// The watcher's counts follow the events: converged only once every SMI object is Ready for its
// generation and every expected Istio object is smi2istio's; a generation bump, a foreign object or
// a deletion takes it back.
func TestWatcherCountsFollowEvents(t *testing.T) {
	s := size{Name: "T", Units: 1}
	w := &watcher{state: map[schema.GroupVersionKind]map[types.NamespacedName]bool{}, count: map[schema.GroupVersionKind]int{}}
	for _, gvk := range append(append([]schema.GroupVersionKind{}, smiKinds...), istioKinds...) {
		w.state[gvk] = map[types.NamespacedName]bool{}
	}
	obj := func(gvk schema.GroupVersionKind, name string, generation int64, readyFor int64, ours bool) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{}}
		u.SetGroupVersionKind(gvk)
		u.SetNamespace(nsName(0))
		u.SetName(name)
		u.SetGeneration(generation)
		if ours {
			u.SetLabels(map[string]string{"app.kubernetes.io/managed-by": "smi2istio"})
		}
		if readyFor > 0 {
			u.Object["status"] = map[string]any{"conditions": []any{
				map[string]any{"type": "Accepted", "status": "True", "observedGeneration": readyFor},
				map[string]any{"type": "Ready", "status": "True", "observedGeneration": readyFor},
			}}
		}
		return u
	}
	for _, gvk := range smiKinds {
		w.set(gvk, obj(gvk, "a", 1, 0, false), false)
	}
	w.set(istioKinds[0], obj(istioKinds[0], "a", 1, 0, true), false)
	w.set(istioKinds[1], obj(istioKinds[1], "a", 1, 0, true), false)
	w.set(istioKinds[2], obj(istioKinds[2], "a-v1", 1, 0, true), false)
	w.set(istioKinds[2], obj(istioKinds[2], "smi2istio-default-deny", 1, 0, true), false)
	w.set(istioKinds[3], obj(istioKinds[3], "a-v1", 1, 0, true), false)
	w.set(istioKinds[3], obj(istioKinds[3], "a-v2", 1, 0, true), false)
	if w.converged(s) {
		t.Fatal("converged before any SMI object is Ready")
	}
	for _, gvk := range smiKinds {
		w.set(gvk, obj(gvk, "a", 1, 1, false), false)
	}
	if w.converged(s) {
		t.Fatal("converged with an AuthorizationPolicy missing")
	}
	w.set(istioKinds[2], obj(istioKinds[2], "a-v2", 1, 0, false), false) // someone else's
	if w.converged(s) {
		t.Fatal("converged counting an AuthorizationPolicy that is not smi2istio's")
	}
	w.set(istioKinds[2], obj(istioKinds[2], "a-v2", 1, 0, true), false)
	if !w.converged(s) || w.baselines() != 1 {
		t.Fatalf("not converged with everything Ready and present (baselines %d)", w.baselines())
	}
	w.set(smiKinds[0], obj(smiKinds[0], "a", 2, 1, false), false) // a new generation not yet observed
	if w.converged(s) {
		t.Fatal("converged with a TrafficSplit Ready for an older generation")
	}
	w.set(smiKinds[0], obj(smiKinds[0], "a", 2, 2, false), false)
	w.set(istioKinds[2], toolscache.DeletedFinalStateUnknown{Obj: obj(istioKinds[2], "smi2istio-default-deny", 1, 0, true)}, true)
	if w.converged(s) || w.baselines() != 0 {
		t.Fatalf("converged with a baseline deleted (baselines %d)", w.baselines())
	}
	w.set(istioKinds[2], obj(istioKinds[2], "smi2istio-default-deny", 1, 0, true), false)
	w.set(smiKinds[1], obj(smiKinds[1], "b", 1, 1, false), false) // one more than the size has
	if w.converged(s) {
		t.Fatal("converged with more TrafficTargets than the mesh has")
	}
}
