package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"

	"github.com/smi2istio/smi2istio/internal/cache"
)

// Objects of a kind whose CRD has no status subresource (another installer's, kept with
// --smi-crds=foreign) get their conditions as Events instead: one Event each time they change,
// Normal when Ready is True, Warning otherwise. No status is stored, so what was last reported of
// each object (its UID, generation and conditions) is kept in memory, and a reconcile that changes
// nothing (an idle resync) writes nothing. The memory holds only live objects (a deletion forgets
// it, SMICRDReporter's handler) and is lost on a restart, which reports every object once again (so
// does a new leader: each replica remembers what it reported).

type eventKey struct {
	gk       schema.GroupKind
	ns, name string
}

type eventReport struct {
	uid        types.UID
	generation int64
	conditions []metav1.Condition
}

type eventReports struct {
	mu sync.Mutex
	m  map[eventKey]eventReport
}

var reportedEvents = &eventReports{m: map[eventKey]eventReport{}}

func (r *eventReports) forget(gk schema.GroupKind, ns, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.m, eventKey{gk, ns, name})
}

// Len is how many objects' reports are remembered.
func (r *eventReports) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

// ReportedByEvents is how many objects' last Event-reported conditions are held in memory.
func ReportedByEvents() int { return reportedEvents.Len() }

// conditions are the conditions last reported by Events for o (nil when none, or for another
// object of the same name): what its status would hold.
func (r *eventReports) conditions(o cache.SMIObject) []metav1.Condition {
	r.mu.Lock()
	defer r.mu.Unlock()
	prev, ok := r.m[eventKey{o.DefaultGVK().GroupKind(), o.GetNamespace(), o.GetName()}]
	if !ok || prev.uid != o.GetUID() {
		return nil
	}
	return prev.conditions
}

// reportByEvents is writeStatus for an object without a status subresource: it emits the
// conditions as an Event when they (or the generation) changed since last reported.
func reportByEvents(_ context.Context, rec events.EventRecorder, u cache.SMIObject, note string, conds ...metav1.Condition) error {
	key := eventKey{u.DefaultGVK().GroupKind(), u.GetNamespace(), u.GetName()}
	reportedEvents.mu.Lock()
	prev, ok := reportedEvents.m[key]
	var current []metav1.Condition
	if ok && prev.uid == u.GetUID() {
		current = slices.Clone(prev.conditions)
	}
	if !setConditions(&current, u.GetGeneration(), conds...) && ok && prev.uid == u.GetUID() && prev.generation == u.GetGeneration() {
		reportedEvents.mu.Unlock()
		return nil
	}
	reportedEvents.m[key] = eventReport{uid: u.GetUID(), generation: u.GetGeneration(), conditions: current}
	reportedEvents.mu.Unlock()

	ready := meta.FindStatusCondition(current, ConditionReady)
	if ready == nil {
		return nil
	}
	kind := corev1.EventTypeNormal
	if ready.Status != metav1.ConditionTrue {
		kind = corev1.EventTypeWarning
	}
	rec.Eventf(u, nil, kind, ready.Reason, "Reconcile", "%s", eventNote(note, current))
	return nil
}

// eventNote is the note of an Event that stands for the status: the reconcile's note, then every
// condition that is not True with its reason and message (when the note does not say it already).
func eventNote(note string, conds []metav1.Condition) string {
	parts := []string{}
	if note != "" {
		parts = append(parts, note)
	}
	for _, c := range conds {
		if c.Status == metav1.ConditionTrue || c.Type == ConditionReady && c.Message == note {
			continue
		}
		if c.Message != "" && strings.Contains(note, c.Message) {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s=%s (%s): %s", c.Type, c.Status, c.Reason, c.Message))
	}
	return strings.Join(parts, "; ")
}
