package controllers

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/smi2istio/smi2istio/internal/syncset"
)

// addRecorder records what a handler enqueues, as a plain queue or a priority queue.
type addRecorder struct {
	added    []reconcile.Request
	withOpts bool // added through AddWithOpts (a priority queue's priorities kept)
}

type plainRecorder struct {
	workqueue.TypedRateLimitingInterface[reconcile.Request]
	*addRecorder
}

func (q plainRecorder) Add(r reconcile.Request)                       { q.added = append(q.added, r) }
func (q plainRecorder) AddAfter(r reconcile.Request, _ time.Duration) { q.added = append(q.added, r) }
func (q plainRecorder) AddRateLimited(r reconcile.Request)            { q.added = append(q.added, r) }

type priorityRecorder struct {
	priorityqueue.PriorityQueue[reconcile.Request]
	*addRecorder
}

func (q priorityRecorder) Add(r reconcile.Request) { q.added = append(q.added, r) }
func (q priorityRecorder) AddAfter(r reconcile.Request, _ time.Duration) {
	q.added = append(q.added, r)
}
func (q priorityRecorder) AddRateLimited(r reconcile.Request) { q.added = append(q.added, r) }
func (q priorityRecorder) AddWithOpts(_ priorityqueue.AddOpts, rs ...reconcile.Request) {
	q.withOpts = true
	q.added = append(q.added, rs...)
}

// skipEchoes leaves out exactly one request: the writer's own, on a create or update event of the
// object as the writer's apply stored it. Random events, objects, records and fan-outs; every
// request the wrapped handler makes for anything else is enqueued (nothing allowed to go stale is
// dropped), through a priority queue as through a plain one.
func TestSkipEchoesDropsOnlyTheWritersOwnEcho(t *testing.T) {
	saved := ownWrites
	defer func() { ownWrites = saved }()
	rng := rand.New(rand.NewPCG(17, 2026))
	reqs := []reconcile.Request{
		{NamespacedName: types.NamespacedName{Namespace: "shop", Name: "api"}},
		{NamespacedName: types.NamespacedName{Namespace: "shop", Name: "web"}},
		{NamespacedName: types.NamespacedName{Namespace: "bank", Name: "api"}},
	}
	controllers := []string{accessController, trafficSplitController}
	uids := []types.UID{"u1", "u2", "u3"}
	rvs := []string{"1", "2", "3"}
	dropped := 0
	for trial := range 4000 {
		ownWrites = syncset.NewEchoes(8)
		type rec struct{ rv, writer string }
		records := map[types.UID]rec{}
		for _, uid := range uids {
			if rng.IntN(3) == 0 {
				continue
			}
			r := rec{rv: rvs[rng.IntN(len(rvs))], writer: echoOf(controllers[rng.IntN(2)], reqs[rng.IntN(len(reqs))])}
			records[uid] = r
			ownWrites.Record(uid, r.rv, r.writer)
		}
		var fanOut []reconcile.Request
		for _, r := range reqs {
			if rng.IntN(2) == 0 {
				fanOut = append(fanOut, r)
			}
		}
		inner := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request { return fanOut })
		controller := controllers[rng.IntN(2)]
		obj := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "x",
			UID: uids[rng.IntN(len(uids))], ResourceVersion: rvs[rng.IntN(len(rvs))]}}
		kind := []string{"create", "update", "delete", "generic"}[rng.IntN(4)]
		priority := rng.IntN(2) == 0
		initial := rng.IntN(2) == 0 // an informer's initial list: low priority on a priority queue
		rec0 := &addRecorder{}
		var q workqueue.TypedRateLimitingInterface[reconcile.Request] = plainRecorder{addRecorder: rec0}
		if priority {
			q = priorityRecorder{addRecorder: rec0}
		}
		h := skipEchoes(controller, inner)
		switch kind {
		case "create":
			h.Create(context.Background(), event.CreateEvent{Object: obj, IsInInitialList: initial}, q)
		case "update":
			old := obj.DeepCopy()
			old.ResourceVersion = "0"
			h.Update(context.Background(), event.UpdateEvent{ObjectOld: old, ObjectNew: obj}, q)
		case "delete":
			h.Delete(context.Background(), event.DeleteEvent{Object: obj}, q)
		case "generic":
			h.Generic(context.Background(), event.GenericEvent{Object: obj}, q)
		}
		var want []reconcile.Request
		for _, r := range fanOut {
			w, ok := records[obj.UID]
			if (kind == "create" || kind == "update") && ok && w.rv == obj.ResourceVersion && w.writer == echoOf(controller, r) {
				dropped++
				continue
			}
			want = append(want, r)
		}
		got := slices.Clone(rec0.added)
		key := func(a, b reconcile.Request) int { return strings.Compare(a.String(), b.String()) }
		slices.SortFunc(got, key)
		slices.SortFunc(want, key)
		if !slices.Equal(got, want) {
			t.Fatalf("trial %d: %s of %s@%s for %s (records %v, fan-out %v): enqueued %v, want %v",
				trial, kind, obj.UID, obj.ResourceVersion, controller, records, fanOut, got, want)
		}
		if priority && kind == "create" && initial && len(got) > 0 && !rec0.withOpts {
			t.Fatalf("trial %d: the handler behind skipEchoes no longer sees a priority queue", trial)
		}
	}
	if dropped == 0 {
		t.Fatal("no trial dropped an echo: the test does not reach the case it is about")
	}
}
