// Package controllers reconciles SMI objects into the Istio objects translate computes: fetch,
// translate, apply (server-side, one field manager, only when something changed), prune, report.
package controllers

import (
	"context"
	"fmt"
	"reflect"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/smi2istio/smi2istio/internal/cached"
	"github.com/smi2istio/smi2istio/translate"
)

// FieldManager is the one server-side apply field manager of generated objects.
const FieldManager = "smi2istio"

// Condition types and reasons shared by the SMI reconcilers.
const (
	ConditionAccepted     = "Accepted"
	ConditionResolvedRefs = "ResolvedRefs"
	ConditionReady        = "Ready"

	ReasonAccepted     = "Accepted"
	ReasonResolvedRefs = "ResolvedRefs"
	ReasonApplied      = "Applied"
	ReasonConflict     = "Conflict"
	ReasonInvalid      = "Invalid"
	ReasonNotApplied   = "NotApplied"
	ReasonNothingToDo  = "NothingToApply"
	ReasonNotInMesh    = "NotInMesh"
	// ReasonApproximated: accepted, but some of it could not be enforced exactly and was left out
	// (denied); the message names the fields.
	ReasonApproximated = "Approximated"
)

var reconcileOutcomes = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "smi2istio_reconcile_outcomes_total",
	Help: "Reconciles of SMI objects by kind and outcome (applied, unchanged, invalid, conflict, unresolved, error).",
}, []string{"kind", "outcome"})

var fidelityRungs = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "smi2istio_fidelity_rung_values",
	Help: "Regex values of a destination's TrafficTargets by the fidelity rung that enforces them (ExactRung, EnvoyRung, Rejected); no series for a rung without values.",
}, []string{"namespace", "destination", "rung"})

var objectsByCondition = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "smi2istio_objects",
	Help: "SMI objects by kind and state of their Ready condition (Ready, NotReady, NotInMesh); refreshed with the configuration's status.",
}, []string{"kind", "state"})

func init() {
	metrics.Registry.MustRegister(reconcileOutcomes, fidelityRungs, objectsByCondition)
}

// ConflictError says a generated object's name or host is taken by an object we do not own.
type ConflictError struct{ Message string }

func (e *ConflictError) Error() string { return e.Message }

// ownerRef makes owner the controller of generated objects (garbage collected with it).
func ownerRef(owner client.Object, apiVersion, kind string) metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion: apiVersion, Kind: kind, Name: owner.GetName(), UID: owner.GetUID(),
		Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
	}
}

func controlledBy(obj metav1.Object, owner types.UID) bool {
	c := metav1.GetControllerOfNoCopy(obj)
	return c != nil && c.UID == owner
}

// applier writes generated objects for one owner.
type applier struct {
	c     client.Client
	owner metav1.OwnerReference
}

// desired renders a generated object for apply, owned by the applier's owner.
func (a applier) desired(obj runtime.Object) (*unstructured.Unstructured, error) {
	u, err := translate.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	u.SetOwnerReferences([]metav1.OwnerReference{a.owner})
	return u, nil
}

// check fails with a ConflictError when an object of that name exists and is not ours.
func (a applier) check(ctx context.Context, want *unstructured.Unstructured) (cached.Object, error) {
	have, err := cached.NewFor(want.GroupVersionKind())
	if err != nil {
		return nil, err
	}
	err = a.c.Get(ctx, client.ObjectKeyFromObject(want), have, client.UnsafeDisableDeepCopy)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get %s %s/%s: %w", want.GetKind(), want.GetNamespace(), want.GetName(), err)
	}
	if !controlledBy(have, a.owner.UID) {
		return nil, &ConflictError{Message: fmt.Sprintf("%s %s/%s exists and is not managed by this %s: it is left untouched",
			want.GetKind(), want.GetNamespace(), want.GetName(), a.owner.Kind)}
	}
	return have, nil
}

// apply writes want with server-side apply unless have already matches it; it reports whether it wrote.
func (a applier) apply(ctx context.Context, want *unstructured.Unstructured, have cached.Object) (bool, error) {
	if have != nil && upToDate(want, have) {
		return false, nil
	}
	//nolint:staticcheck // SSA of an unstructured object with one field manager.
	if err := a.c.Patch(ctx, want.DeepCopy(), client.Apply, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		return false, fmt.Errorf("apply %s %s/%s: %w", want.GetKind(), want.GetNamespace(), want.GetName(), err)
	}
	return true, nil
}

// upToDate reports whether have (as cached: a hash of its spec) already carries everything in want.
func upToDate(want *unstructured.Unstructured, have cached.Object) bool {
	if h, err := cached.SpecHash(want.Object["spec"]); err != nil || h != have.SpecHash() {
		return false
	}
	for k, v := range want.GetLabels() {
		if have.GetLabels()[k] != v {
			return false
		}
	}
	for k, v := range want.GetAnnotations() {
		if have.GetAnnotations()[k] != v {
			return false
		}
	}
	return reflect.DeepEqual(want.GetOwnerReferences(), have.GetOwnerReferences())
}

// prune deletes objects of kind gvk in namespace that the owner controls and that are not in keep
// (names). It returns how many it deleted.
func (a applier) prune(ctx context.Context, gvk schema.GroupVersionKind, namespace, sourceKind, sourceName string, keep map[string]bool) (int, error) {
	list := cached.NewList(gvk)
	if err := a.c.List(ctx, list, client.InNamespace(namespace), client.UnsafeDisableDeepCopy, client.MatchingLabels{
		translate.ManagedByLabel: translate.ManagedByValue, translate.SourceKindLabel: sourceKind, translate.SourceNameLabel: sourceName,
	}); err != nil {
		return 0, fmt.Errorf("list %s: %w", gvk.Kind, err)
	}
	n := 0
	for _, obj := range list.Objects() {
		if keep[obj.GetName()] || !controlledBy(obj, a.owner.UID) {
			continue
		}
		if err := a.c.Delete(ctx, obj, client.Preconditions{UID: ptr.To(obj.GetUID())}); err != nil && !apierrors.IsNotFound(err) {
			return n, fmt.Errorf("delete %s %s/%s: %w", gvk.Kind, obj.GetNamespace(), obj.GetName(), err)
		}
		n++
	}
	return n, nil
}

// conditionSet is what one reconcile decided about an SMI object: its conditions and the outcome
// label of the reconcile metric.
type conditionSet struct {
	accepted, resolved, ready metav1.Condition
	outcome                   string
}

// applied is the starting point of a reconcile: everything fine until found otherwise.
func applied() conditionSet {
	return conditionSet{
		accepted: metav1.Condition{Type: ConditionAccepted, Status: metav1.ConditionTrue, Reason: ReasonAccepted},
		resolved: metav1.Condition{Type: ConditionResolvedRefs, Status: metav1.ConditionTrue, Reason: ReasonResolvedRefs, Message: "all references found"},
		ready:    metav1.Condition{Type: ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonApplied},
		outcome:  "applied",
	}
}

// setConditions merges conds into the object's status conditions (lastTransitionTime changes only
// with the status) and reports whether anything changed.
func setConditions(existing *[]metav1.Condition, generation int64, conds ...metav1.Condition) bool {
	changed := false
	for _, c := range conds {
		c.ObservedGeneration = generation
		if meta.SetStatusCondition(existing, c) {
			changed = true
		}
	}
	return changed
}

// writeStatus merges conds into an SMI object's status and patches the status subresource only when
// a condition or observedGeneration changed; it emits an Event (note) only when Ready changed.
func writeStatus(ctx context.Context, c client.Client, rec events.EventRecorder, u cached.SMIObject, note string, conds ...metav1.Condition) error {
	// A copy: the object may be the cache's own.
	current := slices.Clone(u.GetStatus().Conditions)
	before := meta.FindStatusCondition(current, ConditionReady)
	var beforeStatus metav1.ConditionStatus
	var beforeReason string
	if before != nil {
		beforeStatus, beforeReason = before.Status, before.Reason
	}
	observed := u.GetStatus().ObservedGeneration
	if !setConditions(&current, u.GetGeneration(), conds...) && observed == u.GetGeneration() {
		return nil
	}
	raw := make([]any, 0, len(current))
	for i := range current {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&current[i])
		if err != nil {
			return err
		}
		raw = append(raw, m)
	}
	patch := &unstructured.Unstructured{}
	patch.SetGroupVersionKind(u.DefaultGVK())
	patch.SetNamespace(u.GetNamespace())
	patch.SetName(u.GetName())
	patch.Object["status"] = map[string]any{"observedGeneration": u.GetGeneration(), "conditions": raw}
	if err := c.Status().Patch(ctx, patch, client.Merge); err != nil {
		return fmt.Errorf("update status of %s %s/%s: %w", u.DefaultGVK().Kind, u.GetNamespace(), u.GetName(), err)
	}
	ready := meta.FindStatusCondition(current, ConditionReady)
	if ready != nil && (ready.Status != beforeStatus || ready.Reason != beforeReason) {
		kind := corev1.EventTypeNormal
		if ready.Status != metav1.ConditionTrue {
			kind = corev1.EventTypeWarning
		}
		rec.Eventf(u, nil, kind, ready.Reason, "Reconcile", "%s", note)
	}
	return nil
}

// forEachNamespace maps every namespace to requests (for resyncs).
func forEachNamespace(ctx context.Context, c client.Client, f func(ns string) []reconcile.Request) []reconcile.Request {
	var nss corev1.NamespaceList
	if err := c.List(ctx, &nss); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "list namespaces for resync")
		return nil
	}
	var out []reconcile.Request
	for _, ns := range nss.Items {
		out = append(out, f(ns.Name)...)
	}
	return out
}
