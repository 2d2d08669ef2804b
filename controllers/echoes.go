package controllers

import (
	"context"
	"time"

	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/smi2istio/smi2istio/internal/cache"
	"github.com/smi2istio/smi2istio/internal/syncset"
)

// ownWrites records what every reconciler of this process applied (syncset.Echoes), so that the
// informer event of its own write does not send a reconcile back to it (skipEchoes). At 10,000 SMI
// objects each TrafficSplit was reconciled twice, the second time for the events of the objects
// its first reconcile wrote, finding them as written.
var ownWrites = syncset.NewEchoes(syncset.EchoesSize)

// The controllers' names (their metrics, logs and the sets' Echo).
const (
	trafficSplitController = "trafficsplit"
	accessController       = "access"
)

// ignoreStatusWrites passes every event but an update of an SMI object that changed its status
// alone: the route reconcilers' status writes on route groups and routes, which the reconcilers
// that read those objects do not read (translate reads their spec; nothing reads their status). At
// 10,000 SMI objects each route group's status write brought its TrafficSplit back once more.
var ignoreStatusWrites = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	old, ok := e.ObjectOld.(cache.SMIObject)
	next, ok2 := e.ObjectNew.(cache.SMIObject)
	return !ok || !ok2 || !old.StatusOnlyChange(next)
}}

// echoOf names the request of a reconciler as the sets it writes record it (syncset.Set.Echo).
func echoOf(controller string, req reconcile.Request) string {
	return controller + "/" + req.String()
}

// skipEchoes wraps h, a handler of controller's, for the kinds it writes: on a create or update
// event of an object that stands as controller's own apply stored it (same UID and resourceVersion),
// the request that wrote it is not enqueued; every other request h makes for the event is. Deletes
// and generic events, objects written by anyone else or changed since, go to h as they come.
func skipEchoes(controller string, h handler.EventHandler) handler.EventHandler {
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			h.Create(ctx, e, withoutEcho(controller, e.Object, q))
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			h.Update(ctx, e, withoutEcho(controller, e.ObjectNew, q))
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			h.Delete(ctx, e, q)
		},
		GenericFunc: func(ctx context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			h.Generic(ctx, e, q)
		},
	}
}

// withoutEcho is q, less the request of controller that wrote o as it stands, if one did.
func withoutEcho(controller string, o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) workqueue.TypedRateLimitingInterface[reconcile.Request] {
	if o == nil {
		return q
	}
	writer, ok := ownWrites.Writer(o.GetUID(), o.GetResourceVersion())
	if !ok {
		return q
	}
	// On a priority queue, handler.Funcs has already wrapped q to add at the event's priority (low
	// for an informer's initial list): what echoQueue passes on keeps it.
	return echoQueue{TypedRateLimitingInterface: q, skip: func(r reconcile.Request) bool { return echoOf(controller, r) == writer }}
}

// echoQueue drops the requests skip names.
type echoQueue struct {
	workqueue.TypedRateLimitingInterface[reconcile.Request]
	skip func(reconcile.Request) bool
}

func (q echoQueue) Add(r reconcile.Request) {
	if !q.skip(r) {
		q.TypedRateLimitingInterface.Add(r)
	}
}

func (q echoQueue) AddAfter(r reconcile.Request, d time.Duration) {
	if !q.skip(r) {
		q.TypedRateLimitingInterface.AddAfter(r, d)
	}
}

func (q echoQueue) AddRateLimited(r reconcile.Request) {
	if !q.skip(r) {
		q.TypedRateLimitingInterface.AddRateLimited(r)
	}
}
