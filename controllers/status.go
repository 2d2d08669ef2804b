package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/internal/cache"
	"github.com/smi2istio/smi2istio/internal/syncset"
	"github.com/smi2istio/smi2istio/translate"
)

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
	ReasonNotEnforced  = "NotEnforced"
	// ReasonInvalidOutput: a generated object failed validation; nothing of its set is applied.
	ReasonInvalidOutput = syncset.ReasonInvalidOutput
	// ReasonRootNamespace: the destination is in Istio's root namespace, where a selector-based
	// policy would apply to every namespace: nothing is written there.
	ReasonRootNamespace = "RootNamespace"
	// ReasonApplyFailed: the apiserver refused a write of the set; it is retried.
	ReasonApplyFailed = "ApplyFailed"
	// ReasonBaselineMissing: a TrafficTarget allows nothing, which only holds while its namespace's
	// deny-by-default baseline is in place, and it is not (yet, or a foreign object holds its name).
	ReasonBaselineMissing = "BaselineMissing"
	// ReasonBaselineWidened: the policy enforced under the baseline's name holds another spec than
	// smi2istio's (someone widened it and an admission step keeps it so, or it is not smi2istio's):
	// it may allow more than any TrafficTarget.
	ReasonBaselineWidened = "BaselineWidened"
	// ReasonLeftMesh: the namespace left the mesh while pods still run Istio's sidecar: outputs are
	// kept for them, not claimed enforced.
	ReasonLeftMesh = "LeftMesh"
	// ReasonApproximated: accepted, but some of it could not be enforced exactly and was left out
	// (denied); the message names the fields.
	ReasonApproximated = "Approximated"
	// ReasonGatewayAPIMissing: the namespace is routed with the Gateway API (ambient, or routeAPI
	// GatewayAPI) and its HTTPRoute CRD is not served: nothing is applied.
	ReasonGatewayAPIMissing = "GatewayAPIMissing"
	// ReasonWaypointRequired: an ambient destination without a waypoint, whose rules need L7
	// (HTTPRouteGroup): those rules allow nothing until a waypoint serves it.
	ReasonWaypointRequired = "WaypointRequired"
	// ReasonNotCaptured: a workload of an ambient destination opted out of ambient
	// (istio.io/dataplane-mode=none): nothing is enforced for it.
	ReasonNotCaptured = "NotCaptured"
)

// Outcomes of a reconcile, the values of smi2istio_reconcile_outcomes_total's outcome label.
const (
	OutcomeApplied    = "applied"
	OutcomeUnchanged  = "unchanged"
	OutcomeInvalid    = "invalid"
	OutcomeConflict   = "conflict"
	OutcomeUnresolved = "unresolved"
	OutcomeNotInMesh  = "notinmesh"
	OutcomePermissive = "permissive"
	OutcomeError      = "error"
)

// conditionSet is what one reconcile decided about an SMI object: its conditions and the outcome
// label of the reconcile metric.
type conditionSet struct {
	accepted, resolved, ready metav1.Condition
	outcome                   string
}

// conditions lists the set's conditions in the order they are written.
func (c conditionSet) conditions() []metav1.Condition {
	return []metav1.Condition{c.accepted, c.resolved, c.ready}
}

// applied is the starting point of a reconcile: everything fine until found otherwise.
func applied() conditionSet {
	return conditionSet{
		accepted: metav1.Condition{Type: ConditionAccepted, Status: metav1.ConditionTrue, Reason: ReasonAccepted},
		resolved: metav1.Condition{Type: ConditionResolvedRefs, Status: metav1.ConditionTrue, Reason: ReasonResolvedRefs, Message: "all references found"},
		ready:    metav1.Condition{Type: ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonApplied},
		outcome:  OutcomeApplied,
	}
}

// unreadable is the finding for an SMI object internal/smi/normalize could not read: a field its
// version does not have, or one of the wrong type (a CRD that does not prune or validate, e.g.
// another installer's, kept it). Read as absent, such a field could widen what the object does;
// the object is not accepted, naming the field.
func unreadable(err error) *translate.InvalidError {
	var fe *translate.FieldError
	if errors.As(err, &fe) {
		return &translate.InvalidError{Finding: translate.Finding{Field: fe.Field, Reason: fe.Reason, Message: fe.Message}}
	}
	return &translate.InvalidError{Finding: translate.Finding{Field: "spec", Reason: "Unreadable", Message: err.Error()}}
}

// unreadableConditions: an SMI object that could not be read is not accepted and not applied.
func unreadableConditions(err error, notApplied string) conditionSet {
	inv := unreadable(err)
	st := applied()
	st.accepted = metav1.Condition{Type: ConditionAccepted, Status: metav1.ConditionFalse, Reason: inv.Reason, Message: inv.Error()}
	st.ready = notReady(ReasonInvalid, notApplied)
	st.outcome = OutcomeInvalid
	return st
}

func notReady(reason, message string) metav1.Condition {
	return metav1.Condition{Type: ConditionReady, Status: metav1.ConditionFalse, Reason: reason, Message: message}
}

// blockedReady is the Ready condition of a source whose set a sync did not apply.
func blockedReady(problems []syncset.Problem, mine func(syncset.Ref) bool, tail string) (metav1.Condition, string) {
	var own, other []string
	reason := ""
	for _, p := range problems {
		if mine(p.Object) || p.Reason == ReasonApplyFailed {
			own = append(own, p.Message)
			if reason == "" || p.Reason != syncset.ReasonTerminating {
				reason = p.Reason
			}
		} else {
			other = append(other, p.Message)
		}
	}
	if len(own) == 0 {
		reason = problems[0].Reason
		own = other
	}
	if reason == syncset.ReasonTerminating {
		reason = ReasonNotApplied
	}
	outcome := OutcomeConflict
	switch reason {
	case ReasonInvalidOutput:
		outcome = OutcomeInvalid
	case ReasonApplyFailed:
		outcome = OutcomeError
	}
	return notReady(reason, strings.Join(own, "; ")+tail), outcome
}

func joinFindings(fs []translate.Finding) string {
	parts := make([]string, 0, len(fs))
	for _, f := range fs {
		parts = append(parts, f.String())
	}
	return strings.Join(parts, "; ")
}

func refNames(refs []syncset.Ref) string {
	names := make([]string, 0, len(refs))
	for _, r := range refs {
		names = append(names, r.Kind+" "+r.Name)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
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
// a condition or observedGeneration changed; it emits an Event (note) only when Ready changed from
// an earlier value, or first appears not True.
//
// For a kind whose CRD has no status subresource (another installer's, --smi-crds), the status
// subresource is never called: the conditions go to Events (reportByEvents).
func writeStatus(ctx context.Context, c client.Client, rec events.EventRecorder, u cache.SMIObject, note string, conds ...metav1.Condition) error {
	if eventsOnly(u.DefaultGVK().GroupKind()) {
		return reportByEvents(ctx, rec, u, note, conds...)
	}
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
	// An Event says what changed: a Ready condition that changed from an earlier one, or a first one
	// that is not True. The first Ready=True of a new object is what its status already says (and
	// one write per SMI object on a bulk apply, the bench measured); it is not repeated as an Event.
	ready := meta.FindStatusCondition(current, ConditionReady)
	changed := ready != nil && (ready.Status != beforeStatus || ready.Reason != beforeReason)
	if changed && (before != nil || ready.Status != metav1.ConditionTrue) {
		kind := corev1.EventTypeNormal
		if ready.Status != metav1.ConditionTrue {
			kind = corev1.EventTypeWarning
		}
		rec.Eventf(u, nil, kind, ready.Reason, "Reconcile", "%s", note)
	}
	return nil
}
