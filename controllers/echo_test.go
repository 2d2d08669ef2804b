package controllers

import (
	"context"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/smi2istio/smi2istio/internal/syncset"
)

// The echo of a reconcile's own write does not bring that reconcile back; the same event still
// reaches every other request it maps to, and any other event (someone else's write, a deletion,
// an object the reconcile did not write) reaches everyone. An echo that arrives while the writer
// runs is decided when it ends.
func TestEcholessDropsOnlyTheWritersOwnEcho(t *testing.T) {
	writerReq := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "shop", Name: "api"}}
	otherReq := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "shop", Name: "web"}}
	toBoth := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{writerReq, otherReq}
	})
	obj := func(rv string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "out", UID: "u1", ResourceVersion: rv}}
	}
	writes := syncset.NewOwnWrites(16)
	h := echolessOf(writes, accessController, toBoth)
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	drain := func() []string {
		var out []string
		for q.Len() > 0 {
			r, _ := q.Get()
			out = append(out, r.Name)
			q.Done(r)
			q.Forget(r)
		}
		sort.Strings(out)
		return out
	}
	expect := func(step string, want ...string) {
		t.Helper()
		got := drain()
		if len(got) != len(want) {
			t.Fatalf("%s: enqueued %v, want %v", step, got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s: enqueued %v, want %v", step, got, want)
			}
		}
	}
	ctx := context.Background()

	h.Create(ctx, event.CreateEvent{Object: obj("2")}, q)
	expect("no write recorded", "api", "web")

	writes.Record("u1", "2", writerOf(accessController, writerReq))
	h.Create(ctx, event.CreateEvent{Object: obj("2")}, q)
	expect("the writer's own write, created", "web")
	h.Update(ctx, event.UpdateEvent{ObjectOld: obj("1"), ObjectNew: obj("2")}, q)
	expect("the writer's own write, updated", "web")
	h.Update(ctx, event.UpdateEvent{ObjectOld: obj("2"), ObjectNew: obj("3")}, q)
	expect("written since by someone else", "api", "web")
	h.Delete(ctx, event.DeleteEvent{Object: obj("2")}, q)
	expect("deleted", "api", "web")
	echolessOf(writes, trafficSplitController, toBoth).Create(ctx, event.CreateEvent{Object: obj("2")}, q)
	expect("another controller's requests of the same name", "api", "web")

	// While the writer runs, its echo waits: written again (a new resourceVersion) → delivered at the end.
	done := writes.Begin(writerOf(accessController, writerReq))
	h.Create(ctx, event.CreateEvent{Object: obj("2")}, q)
	expect("while the writer runs", "web")
	writes.Record("u1", "4", writerOf(accessController, writerReq))
	done()
	expect("the writer wrote it again meanwhile", "api")

	// reconcilingAs marks the reconcile as running for its whole length.
	var during string
	r := reconcilingAs(accessController, reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) {
		echolessOf(ownWrites, accessController, toBoth).Create(ctx, event.CreateEvent{Object: obj("9")}, q)
		during = strings.Join(drain(), ",")
		return reconcile.Result{}, nil
	}))
	ownWrites.Record("u1", "9", writerOf(accessController, writerReq))
	if _, err := r.Reconcile(ctx, writerReq); err != nil {
		t.Fatal(err)
	}
	if during != "web" {
		t.Errorf("inside the reconcile: enqueued %q, want web only (the writer's echo waits)", during)
	}
	expect("after the reconcile, whose sync kept the record") // dropped: the record still holds 9
}

// A split's own event reaches the splits of its root but itself (For delivers it to itself).
func TestSiblingsOnlySkipsTheSplitItself(t *testing.T) {
	req := func(name string) reconcile.Request {
		return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "shop", Name: name}}
	}
	h := siblingsOnly(handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{req("a"), req("b")}
	}))
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	a := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "a", ResourceVersion: "1"}}
	a2 := a.DeepCopy()
	a2.ResourceVersion = "2"
	ctx := context.Background()
	for name, send := range map[string]func(){
		"create": func() { h.Create(ctx, event.CreateEvent{Object: a}, q) },
		"update": func() { h.Update(ctx, event.UpdateEvent{ObjectOld: a, ObjectNew: a2}, q) },
		"delete": func() { h.Delete(ctx, event.DeleteEvent{Object: a}, q) },
	} {
		send()
		var got []string
		for q.Len() > 0 {
			r, _ := q.Get()
			got = append(got, r.Name)
			q.Done(r)
		}
		if strings.Join(got, ",") != "b" {
			t.Errorf("%s: enqueued %v, want the sibling b only", name, got)
		}
	}
}
