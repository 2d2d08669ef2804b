package controllers

import (
	"context"

	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/smi2istio/smi2istio/internal/syncset"
)

// Every object a reconciler applies comes back to it as a watch event (its own write's echo), and
// brought back the reconcile that wrote it: at L, one more reconcile of every TrafficSplit and of
// most destinations, each translating, validating and comparing everything again to find nothing
// to do. An echo is dropped only when it can tell the reconcile nothing: the object stands exactly
// as that reconcile's latest sync applied it (syncset.OwnWrites.Echo: same UID and resourceVersion,
// the sync finished, neither failed nor was blocked, and did not leave the object behind). An echo
// that arrives while the reconcile still runs is decided when it ends. Any other event — someone
// else's write, a deletion, an object this reconcile did not write, every other request the same
// event maps to — is delivered as before.

// echoless wraps h, one of controller's event handlers: a create or update event of an object is
// not delivered to the request whose reconcile wrote it exactly so.
func echoless(controller string, h handler.EventHandler) handler.EventHandler {
	return echolessOf(ownWrites, controller, h)
}

// echolessOf is echoless with the writes of writes.
func echolessOf(writes *syncset.OwnWrites, controller string, h handler.EventHandler) handler.EventHandler {
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			h.Create(ctx, e, echoQueue(writes, controller, e.Object, q))
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if e.ObjectOld.GetResourceVersion() == e.ObjectNew.GetResourceVersion() {
				h.Update(ctx, e, q) // an informer's resync or relist, not a write: as before
				return
			}
			h.Update(ctx, e, echoQueue(writes, controller, e.ObjectNew, q))
		},
		DeleteFunc:  h.Delete,
		GenericFunc: h.Generic,
	}
}

// echoQueue is q, unless o stands as one of controller's reconciles wrote it: then that request is
// enqueued only if syncset.OwnWrites.Echo decides so.
func echoQueue(writes *syncset.OwnWrites, controller string, o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) workqueue.TypedRateLimitingInterface[reconcile.Request] {
	writer := writes.Writer(o.GetUID(), o.GetResourceVersion())
	if writer == "" {
		return q
	}
	uid, rv := o.GetUID(), o.GetResourceVersion()
	return addVia(q, func(req reconcile.Request) {
		if writerOf(controller, req) != writer {
			q.Add(req)
			return
		}
		writes.Echo(writer, uid, rv, func() { q.Add(req) })
	})
}

// addVia is q with its Add replaced by add (which decides whether and when to call q.Add). The
// handlers of controller-runtime enqueue through Add once the queue is not a priority queue.
func addVia(q workqueue.TypedRateLimitingInterface[reconcile.Request], add func(reconcile.Request)) workqueue.TypedRateLimitingInterface[reconcile.Request] {
	return &queueAdd{TypedRateLimitingInterface: q, add: add}
}

type queueAdd struct {
	workqueue.TypedRateLimitingInterface[reconcile.Request]
	add func(reconcile.Request)
}

func (q *queueAdd) Add(req reconcile.Request) { q.add(req) }

// reconcilingAs marks each reconcile of r as running (syncset.OwnWrites.Begin) under the writer
// name its sets carry, from before its first read to its end.
func reconcilingAs(controller string, r reconcile.Reconciler) reconcile.Reconciler {
	return reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		defer ownWrites.Begin(writerOf(controller, req))()
		return r.Reconcile(ctx, req)
	})
}
