package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// watcher caches the SMI and generated Istio objects through watches (what the harness measures
// must not be polled from the apiserver it loads).
type watcher struct {
	c      cache.Cache
	cancel context.CancelFunc
}

func newWatcher(ctx context.Context, rc *rest.Config, scheme *kruntime.Scheme) *watcher {
	ca, err := cache.New(rc, cache.Options{Scheme: scheme, DefaultTransform: cache.TransformStripManagedFields()})
	check(err)
	ctx, cancel := context.WithCancel(ctx)
	for _, gvk := range append(append([]schema.GroupVersionKind{}, smiKinds...), istioKinds...) {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(gvk)
		_, err := ca.GetInformer(ctx, u)
		check(err)
	}
	go func() { _ = ca.Start(ctx) }()
	if !ca.WaitForCacheSync(ctx) {
		fail(fmt.Errorf("watch cache did not sync"))
	}
	return &watcher{c: ca, cancel: cancel}
}

func (w *watcher) stop() { w.cancel() }

func (w *watcher) list(gvk schema.GroupVersionKind, opts ...client.ListOption) []unstructured.Unstructured {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
	// Read only, and polled every 50 ms while converging: a deep copy of every object at each poll
	// took CPU from the apiserver and the operator being measured.
	check(w.c.List(context.Background(), list, append(opts, client.UnsafeDisableDeepCopy)...))
	return list.Items
}

func (w *watcher) baselines() int {
	n := 0
	for _, ap := range w.list(istioKinds[2], client.MatchingLabels{"app.kubernetes.io/managed-by": "smi2istio"}) {
		if ap.GetName() == "smi2istio-default-deny" {
			n++
		}
	}
	return n
}

// converged: every SMI object Ready for its generation, every expected Istio object present.
func (w *watcher) converged(s size) bool {
	for _, gvk := range smiKinds {
		items := w.list(gvk)
		if len(items) != s.Units {
			return false
		}
		for i := range items {
			if !ready(&items[i]) {
				return false
			}
		}
	}
	for _, gvk := range istioKinds {
		n := len(w.list(gvk, client.MatchingLabels{"app.kubernetes.io/managed-by": "smi2istio"}))
		want := s.Units
		switch gvk.Kind {
		case "AuthorizationPolicy":
			want = 2*s.Units + s.namespaces()
		case "PeerAuthentication":
			want = 2 * s.Units
		}
		if n != want {
			return false
		}
	}
	return true
}

func ready(u *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
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
