package main

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/translate"
)

// watcher caches the SMI and generated Istio objects through watches (what the harness measures
// must not be polled from the apiserver it loads), and keeps what convergence is judged on as
// counts updated by the watch events: polling the cache instead (every 50 ms, each object's
// conditions read again) took the harness up to a fifth of a core at L, from the processes measured.
type watcher struct {
	c      cache.Cache
	cancel context.CancelFunc

	mu    sync.Mutex
	state map[schema.GroupVersionKind]map[types.NamespacedName]bool // SMI: Ready for its generation; Istio: smi2istio's
	count map[schema.GroupVersionKind]int                           // how many are true
	deny  int                                                       // the namespace baselines
}

func newWatcher(ctx context.Context, rc *rest.Config, scheme *kruntime.Scheme) *watcher {
	ca, err := cache.New(rc, cache.Options{Scheme: scheme, DefaultTransform: cache.TransformStripManagedFields()})
	check(err)
	ctx, cancel := context.WithCancel(ctx)
	w := &watcher{c: ca, cancel: cancel, state: map[schema.GroupVersionKind]map[types.NamespacedName]bool{},
		count: map[schema.GroupVersionKind]int{}}
	for _, gvk := range append(append([]schema.GroupVersionKind{}, smiKinds...), istioKinds...) {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(gvk)
		inf, err := ca.GetInformer(ctx, u)
		check(err)
		w.state[gvk] = map[types.NamespacedName]bool{}
		set := func(obj any) { w.set(gvk, obj, false) }
		_, err = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    set,
			UpdateFunc: func(_, obj any) { set(obj) },
			DeleteFunc: func(obj any) { w.set(gvk, obj, true) },
		})
		check(err)
	}
	go func() { _ = ca.Start(ctx) }()
	if !ca.WaitForCacheSync(ctx) {
		fail(fmt.Errorf("watch cache did not sync"))
	}
	return w
}

// stop ends the watch and lets go of what it holds (its cache of every object), so that a phase
// measured after it (baseline (c) again) runs in a harness that holds what it held before the watch.
func (w *watcher) stop() {
	w.cancel()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.c, w.state = nil, nil
}

// set records an object's event: for an SMI kind whether it is Ready for its generation, for an
// Istio kind whether it is smi2istio's (and, for the baselines, which one).
func (w *watcher) set(gvk schema.GroupVersionKind, obj any, deleted bool) {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	key := types.NamespacedName{Namespace: u.GetNamespace(), Name: u.GetName()}
	var now bool
	switch {
	case deleted:
	case slices.Contains(smiKinds, gvk):
		now = ready(u)
	default:
		now = u.GetLabels()[translate.ManagedByLabel] == translate.ManagedByValue
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state == nil {
		return // stopped: an event the informer delivered while ending
	}
	was := w.state[gvk][key]
	if deleted {
		delete(w.state[gvk], key)
	} else {
		w.state[gvk][key] = now
	}
	delta := 0
	switch {
	case was && !now:
		delta = -1
	case now && !was:
		delta = 1
	}
	w.count[gvk] += delta
	if gvk == istioKinds[2] && key.Name == "smi2istio-default-deny" {
		w.deny += delta
	}
}

func (w *watcher) baselines() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.deny
}

// converged: every SMI object Ready for its generation, every expected Istio object present.
func (w *watcher) converged(s size) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, gvk := range smiKinds {
		if len(w.state[gvk]) != s.Units || w.count[gvk] != s.Units {
			return false
		}
	}
	for _, gvk := range istioKinds {
		want := s.Units
		switch gvk.Kind {
		case "AuthorizationPolicy":
			want = 2*s.Units + s.namespaces()
		case "PeerAuthentication":
			want = 2 * s.Units
		}
		if w.count[gvk] != want {
			return false
		}
	}
	return true
}

// ready: the object's Ready condition is True for its generation (read without copying).
func ready(u *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedFieldNoCopy(u.Object, "status", "conditions")
	list, _ := conds.([]any)
	for _, c := range list {
		m, _ := c.(map[string]any)
		if m["type"] == "Ready" {
			og, _ := m["observedGeneration"].(int64)
			return m["status"] == "True" && og == u.GetGeneration()
		}
	}
	return false
}

func (w *watcher) vsWeights(ns, name string) string {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(istioKinds[0])
	if err := w.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, u); err != nil {
		return ""
	}
	http, _, _ := unstructured.NestedSlice(u.Object, "spec", "http")
	if len(http) == 0 {
		return ""
	}
	routes, _, _ := unstructured.NestedSlice(http[0].(map[string]any), "route")
	var ws []string
	for _, r := range routes {
		wt, _, _ := unstructured.NestedInt64(r.(map[string]any), "weight")
		ws = append(ws, strconv.FormatInt(wt, 10))
	}
	return strings.Join(ws, "/")
}

// countsCurrent: the SMI2IstioConfig status counts every TrafficSplit and TrafficTarget as Ready.
func countsCurrent(ctx context.Context, c client.Client, s size) bool {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("smi2istio.io/v1alpha1")
	u.SetKind("SMI2IstioConfig")
	if err := c.Get(ctx, client.ObjectKey{Name: "default"}, u); err != nil {
		return false
	}
	objs, _, _ := unstructured.NestedSlice(u.Object, "status", "objects")
	ready := 0
	for _, o := range objs {
		m, _ := o.(map[string]any)
		if n, ok := m["ready"].(int64); ok && n == int64(s.Units) {
			ready++
		}
	}
	return ready == 2
}

// differs lists how the operator's objects in the cache differ from want (what the baselines write):
// a missing object, or other labels, annotations or spec. Empty when the baselines wrote what the
// operator writes.
func (w *watcher) differs(ctx context.Context, want []*unstructured.Unstructured) []string {
	var out []string
	for _, o := range want {
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(o.GroupVersionKind())
		if err := w.c.Get(ctx, client.ObjectKeyFromObject(o), live); err != nil {
			out = append(out, fmt.Sprintf("%s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err))
			continue
		}
		for _, f := range [][]string{{"metadata", "labels"}, {"metadata", "annotations"}, {"spec"}} {
			a, _, _ := unstructured.NestedFieldNoCopy(o.Object, f...)
			b, _, _ := unstructured.NestedFieldNoCopy(live.Object, f...)
			if !reflect.DeepEqual(a, b) {
				out = append(out, fmt.Sprintf("%s %s/%s: %s: the baselines write %v, the operator wrote %v",
					o.GetKind(), o.GetNamespace(), o.GetName(), strings.Join(f, "."), a, b))
			}
		}
	}
	return out
}
