package controllers

import (
	"context"
	"errors"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/smi2istio/smi2istio/internal/cache"
	"github.com/smi2istio/smi2istio/internal/smi/normalize"
	"github.com/smi2istio/smi2istio/translate"
	"github.com/smi2istio/smi2istio/translate/regex"
)

// Reasons of route conditions.
const (
	ReasonValid       = "Valid"
	ReasonUnsupported = "Unsupported"
)

// RouteReconciler reports on HTTPRouteGroups, TCPRoutes and UDPRoutes: Accepted (headers of a valid
// shape, regexes that compile) and Ready (usable by TrafficTargets and TrafficSplits in the mesh;
// UDPRoutes never are: Istio cannot enforce UDP).
type RouteReconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
	GVK      schema.GroupVersionKind
	State    StateSource
	Resync   func(fan func(context.Context) []reconcile.Request) source.Source
}

// SetupWithManager watches one route kind.
func (r *RouteReconciler) SetupWithManager(mgr ctrl.Manager) error {
	b := ctrl.NewControllerManagedBy(mgr).
		Named("route-"+r.GVK.Kind).
		For(cache.NewSMI(r.GVK), builder.WithPredicates(predicate.GenerationChangedPredicate{}))
	if r.Resync != nil {
		b = b.WatchesRawSource(r.Resync(func(ctx context.Context) []reconcile.Request {
			list := cache.NewSMIList(r.GVK)
			if err := r.Client.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
				ctrl.LoggerFrom(ctx).Error(err, "list routes for resync", "kind", r.GVK.Kind)
				return nil
			}
			objs := list.Objects()
			out := make([]reconcile.Request, 0, len(objs))
			for _, o := range objs {
				out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}})
			}
			return out
		}))
	}
	return b.Complete(r)
}

// Reconcile validates one route object and writes its conditions when they changed.
func (r *RouteReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	state, ok := r.State()
	if !ok {
		return reconcile.Result{}, nil
	}
	u := cache.NewSMI(r.GVK)
	if err := r.Client.Get(ctx, req.NamespacedName, u); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	accepted := metav1.Condition{Type: ConditionAccepted, Status: metav1.ConditionTrue, Reason: ReasonValid, Message: "valid"}
	if err := validateRoute(u); err != nil {
		reason := "Invalid"
		var fe *translate.FieldError
		if errors.As(err, &fe) {
			reason = fe.Reason
		}
		accepted = metav1.Condition{Type: ConditionAccepted, Status: metav1.ConditionFalse, Reason: reason, Message: err.Error()}
	}
	ready := metav1.Condition{Type: ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonValid, Message: "usable by TrafficTargets and TrafficSplits"}
	switch {
	case !state.InMesh(u.GetNamespace()):
		ready = metav1.Condition{Type: ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonNotInMesh, Message: "namespace " + u.GetNamespace() + " is not in the mesh"}
	case r.GVK.Kind == "UDPRoute":
		ready = metav1.Condition{Type: ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonUnsupported, Message: "Istio cannot enforce UDP: TrafficTargets allow nothing for UDPRoutes"}
	case accepted.Status != metav1.ConditionTrue:
		ready = metav1.Condition{Type: ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonInvalid, Message: "objects referencing it are not accepted"}
	}
	return reconcile.Result{}, writeStatus(ctx, r.Client, r.Recorder, u, ready.Message, accepted, ready)
}

// validateRoute checks what the schema cannot: the header shape and the regexes.
func validateRoute(u cache.SMIObject) error {
	if u.DefaultGVK().Kind != "HTTPRouteGroup" {
		return nil
	}
	g, err := normalize.ReadHTTPRouteGroup(u)
	if err != nil {
		return err
	}
	for i, m := range g.Matches {
		if m.PathRegex != "" {
			if _, err := regex.Classify(m.PathRegex, regex.Options{}); err != nil {
				return &translate.FieldError{Field: fmt.Sprintf("spec.matches[%d].pathRegex", i), Reason: "InvalidRegex", Message: err.Error()}
			}
		}
		for j, h := range m.Headers {
			if _, err := regex.Classify(h.Value, regex.Options{}); err != nil {
				return &translate.FieldError{Field: fmt.Sprintf("spec.matches[%d].headers[%d]", i, j), Reason: "InvalidRegex", Message: err.Error()}
			}
		}
	}
	return nil
}
