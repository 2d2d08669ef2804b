package controllers

import (
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/smi2istio/smi2istio/internal/cache"
	"github.com/smi2istio/smi2istio/internal/syncset"
)

// The controllers' names (their metrics, logs and the sets' Writer).
const (
	trafficSplitController = "trafficsplit"
	accessController       = "access"
)

// ownWrites records what every reconciler of this process applied (syncset.OwnWrites): a sync that
// finds its own object on the apiserver before the cache has it updates it instead of reporting it
// as someone else's (at every bulk apply, one TrafficSplit's own VirtualService was reported so).
var ownWrites = syncset.NewOwnWrites(syncset.OwnWritesSize)

// writerOf names the request of a reconciler as the sets it writes record it (syncset.Set.Writer).
func writerOf(controller string, req reconcile.Request) string {
	return controller + "/" + req.String()
}

// ignoreStatusWrites passes every event but an update of an SMI object that changed its status
// alone: the route reconcilers' status writes on route groups and routes, which the reconcilers
// that read those objects do not read (translate reads their spec; nothing reads their status), and
// which each brought back every split and destination using the route.
var ignoreStatusWrites = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	old, ok := e.ObjectOld.(cache.SMIObject)
	next, ok2 := e.ObjectNew.(cache.SMIObject)
	return !ok || !ok2 || !old.StatusOnlyChange(next)
}}
