// Package syncset writes the complete desired set of generated objects of one source: it checks
// the ownership and validity of every object first, applies them in dependency order all or
// nothing (server-side apply, one field manager, only what changed), then prunes what the set no
// longer holds — smi2istio's take on Flux's SSA manager and inventory. Deciding what to write is a
// pure diff (Diff); Syncer carries it out against the apiserver.
package syncset

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/smi2istio/smi2istio/internal/cache"
)

// Kind is a kind a set may hold.
type Kind struct {
	GVK schema.GroupVersionKind
	// PruneFirst: removing objects of this kind can only narrow what is allowed (ALLOW policies),
	// so stale ones are deleted before anything is applied rather than after.
	PruneFirst bool
	// Inert is a JSON merge patch that makes an object of this kind allow nothing (an ALLOW policy's
	// rules removed). A stale object of the set that cannot go (someone else's finalizer holds it
	// while it is being deleted; istiod enforces it until it is gone) is patched so at every sync.
	// Nil: left as it is.
	Inert []byte
	// Guard: objects of later kinds rely on objects of this kind (the Envoy rung's filter makes the
	// policies after it exact). They carry the set's Finalizer, so that whoever deletes them —
	// the garbage collector when their owners go, a user — they stay in effect until the sync has
	// removed what relies on them and lets them go.
	Guard bool
}

// OnBlocked says what becomes of the live set when a conflict or an invalid object blocks the
// desired one.
type OnBlocked int

const (
	// Keep leaves the live set as it is (routing: a foreign object never deletes our outputs).
	Keep OnBlocked = iota
	// Remove deletes the live set (access: when the exact set cannot be written, allow nothing).
	Remove
)

// Set is the complete desired state of one source key.
type Set struct {
	// Namespace the set's objects live in.
	Namespace string
	// Kinds the set may hold, in apply order; pruning runs in reverse (PruneFirst kinds before
	// anything is applied).
	Kinds []Kind
	// Labels identify the set: every desired object carries them, and the live objects that carry
	// them (and are controlled by nothing but an OwnerKinds object) are the set's, to update or prune.
	Labels map[string]string
	// OwnerKinds are the kinds that may control the set's objects.
	OwnerKinds []string
	// Objects is the desired set, each with its labels and owner references.
	Objects []*unstructured.Unstructured
	// Blockers are problems found before the sync (e.g. a foreign object for the same host): the
	// set is blocked as if an object conflicted.
	Blockers  []Problem
	OnBlocked OnBlocked
	// Finalizer is carried by the objects of Guard kinds.
	Finalizer string
	// ReliesOn is the annotation that the objects of kinds after a Guard kind carry, naming the
	// guarded objects of the set they rely on (comma-separated). A guard is let go only when no
	// object in the namespace names it there, whoever owns that object now and whatever its labels
	// say: a policy a user relabelled (so no longer the set's) still relies on the filter.
	ReliesOn string
	// Settle covers the time between the apiserver and the data plane: a consumer (istiod) watches
	// each kind separately and may act on an object of a later kind before it acts on the guard it
	// relies on. So objects that rely on a guard are applied only once every desired guard has
	// existed for Settle, and a guard is let go only Settle after it was first found with nothing
	// relying on it (as the Syncer saw it). Zero: no wait.
	Settle time.Duration
	// ExactLabels and ExactAnnotations are keys a live object must carry exactly as the desired one
	// does, absent included, whoever wrote them: keys that change what Istio makes of an object
	// (istio.io/rev hides it from istiod, istio.io/dry-run disables a policy) and the ReliesOn
	// annotation (always exact).
	ExactLabels, ExactAnnotations []string
	// RepairInPlace: an applied object holding fields the set did not write (server-side apply
	// keeps another manager's) has its spec written back in place instead of being deleted and
	// created again — for objects whose absence allows more than they do (a namespace's
	// allow-nothing baseline: deleting it opens the namespace until it is back). One that an
	// admission step changes again on that write is kept and reported (Result.Kept,
	// ErrForeignFieldsKept), and the rest of the set is written all the same. Only for Keep sets
	// without Guard kinds (Sync refuses others).
	RepairInPlace bool
	// Writer names who writes the set (the reconciler and its request): each object applied exactly
	// as desired (or kept, RepairInPlace) is recorded under it in the Syncer's Writes. Empty:
	// nothing is recorded.
	Writer string
	// Now is the time of the sync (Diff is pure), on the operator's clock.
	Now time.Time
	// GuardSince is when each live guard (by UID) came into effect as far as the Syncer knows:
	// when it created it, or for one it found, its creationTimestamp (whole seconds, the apiserver's
	// clock) plus a second. Guards not in it count as just created.
	GuardSince map[types.UID]time.Time
}

// Ref names an object.
type Ref struct {
	Kind, Namespace, Name string
}

func (r Ref) String() string { return r.Kind + " " + r.Namespace + "/" + r.Name }

// RefOf names an object.
func RefOf(kind string, o metav1.Object) Ref {
	return Ref{Kind: kind, Namespace: o.GetNamespace(), Name: o.GetName()}
}

// Problem reasons.
const (
	// ReasonConflict: an object of the set's name exists and is not the set's.
	ReasonConflict = "Conflict"
	// ReasonInvalidOutput: a desired object failed validation.
	ReasonInvalidOutput = "InvalidOutput"
	// ReasonTerminating: an object of the set's name is being deleted; it can be written again
	// once it is gone.
	ReasonTerminating = "Terminating"
	// ReasonLingering: a stale object of the set is held by someone else's finalizer.
	ReasonLingering = "Lingering"
)

// Problem is why a desired object cannot be written.
type Problem struct {
	Object  Ref
	Reason  string
	Message string
}

func (p Problem) String() string { return p.Message }

// Validator checks one desired object; nil accepts everything.
type Validator func(*unstructured.Unstructured) error

// Plan is what a sync writes, in order.
type Plan struct {
	// Problems block the whole desired set: nothing of it is applied.
	Problems []Problem
	// PruneFirst are deleted before anything is applied.
	PruneFirst []cache.Object
	// Apply are the desired objects that differ from the live ones, in apply order.
	Apply []*unstructured.Unstructured
	// Prune are deleted last, in reverse kind order.
	Prune []cache.Object
	// Release are guarded objects being deleted (or pruned by this plan) whose Finalizer is
	// removed once the plan's prunes are done: nothing of the set that relies on them is left.
	Release []cache.Object
	// Unchanged counts desired objects the live set already holds.
	Unchanged int
	// Creating are the desired objects the live set does not hold (applying them creates them);
	// Updating gives the UID of the live object the others update (the apply is conditional on it:
	// one deleted meanwhile is not created again by an update).
	Creating map[Ref]bool
	Updating map[Ref]types.UID
	// Withheld are desired objects of kinds after a guard not applied yet: a desired guard has not
	// existed for the set's Settle. Wait is how long until it has.
	Withheld []*unstructured.Unstructured
	Wait     time.Duration
	// Inert are stale objects that are being deleted but held by someone else's finalizer, to be
	// patched with their kind's Inert patch so that they allow nothing while they linger;
	// Lingering says which objects linger.
	Inert     []Inert
	Lingering []Problem
}

// Blocked reports whether problems keep the desired set from being applied.
func (p Plan) Blocked() bool { return len(p.Problems) > 0 }

// Owns reports whether a live object belongs to the set: it carries every label of the set, and
// its controller, if it has one, is of one of the owner kinds.
func (s *Set) Owns(o metav1.Object) bool {
	labels := o.GetLabels()
	for k, v := range s.Labels {
		if labels[k] != v {
			return false
		}
	}
	c := metav1.GetControllerOfNoCopy(o)
	if c == nil {
		return true
	}
	for _, k := range s.OwnerKinds {
		if c.Kind == k {
			return true
		}
	}
	return false
}

func (s *Set) kindIndex(gvk schema.GroupVersionKind) int {
	for i, k := range s.Kinds {
		if k.GVK == gvk {
			return i
		}
	}
	return -1
}

type key struct {
	gvk  schema.GroupVersionKind
	name string
}

// Diff decides what a sync of set writes given the live objects: every object of the set's kinds
// in its namespace that carries the set's labels, plus any live object that has the name of a
// desired one. It is pure.
func Diff(set *Set, live map[schema.GroupVersionKind][]cache.Object, validate Validator) Plan {
	var plan Plan
	plan.Problems = append(plan.Problems, set.Blockers...)
	byKey := map[key]cache.Object{}
	for gvk, objs := range live {
		for _, o := range objs {
			byKey[key{gvk, o.GetName()}] = o
		}
	}
	desired := map[key]bool{}
	objs := append([]*unstructured.Unstructured(nil), set.Objects...)
	sort.SliceStable(objs, func(i, j int) bool {
		ki, kj := set.kindIndex(objs[i].GroupVersionKind()), set.kindIndex(objs[j].GroupVersionKind())
		if ki != kj {
			return ki < kj
		}
		return objs[i].GetName() < objs[j].GetName()
	})
	guards := guardNames(set, objs)
	for i, want := range objs {
		ki := set.kindIndex(want.GroupVersionKind())
		if ki >= 0 && set.Kinds[ki].Guard && set.Finalizer != "" {
			want = withFinalizer(want, set.Finalizer)
			objs[i] = want
		}
		if ki > set.firstGuard() && set.firstGuard() >= 0 && set.ReliesOn != "" && guards != "" {
			want = withAnnotation(want, set.ReliesOn, guards)
			objs[i] = want
		}
		gvk := want.GroupVersionKind()
		ref := Ref{Kind: gvk.Kind, Namespace: want.GetNamespace(), Name: want.GetName()}
		k := key{gvk, want.GetName()}
		desired[k] = true
		if set.kindIndex(gvk) < 0 || want.GetNamespace() != set.Namespace {
			plan.Problems = append(plan.Problems, Problem{Object: ref, Reason: ReasonInvalidOutput,
				Message: fmt.Sprintf("%s is not of a kind or namespace the set may hold", ref)})
			continue
		}
		if !set.Owns(want) {
			plan.Problems = append(plan.Problems, Problem{Object: ref, Reason: ReasonInvalidOutput,
				Message: fmt.Sprintf("%s lacks the set's labels or owner", ref)})
			continue
		}
		if validate != nil {
			if err := validate(want); err != nil {
				plan.Problems = append(plan.Problems, Problem{Object: ref, Reason: ReasonInvalidOutput,
					Message: fmt.Sprintf("%s is not valid: %v", ref, err)})
				continue
			}
		}
		have := byKey[k]
		switch {
		case have == nil:
			plan.Apply = append(plan.Apply, want)
			if plan.Creating == nil {
				plan.Creating = map[Ref]bool{}
			}
			plan.Creating[ref] = true
		case !set.Owns(have):
			plan.Problems = append(plan.Problems, Problem{Object: ref, Reason: ReasonConflict,
				Message: fmt.Sprintf("%s exists and is not managed by smi2istio for this %s: it is left untouched", ref, ownerWord(set))})
		case !have.GetDeletionTimestamp().IsZero():
			plan.Problems = append(plan.Problems, Problem{Object: ref, Reason: ReasonTerminating,
				Message: fmt.Sprintf("%s is being deleted: it is written again once it is gone", ref)})
		case UpToDate(want, have) && set.ExactMeta(want, have):
			plan.Unchanged++
		default:
			plan.Apply = append(plan.Apply, want)
			if plan.Updating == nil {
				plan.Updating = map[Ref]types.UID{}
			}
			plan.Updating[ref] = have.GetUID()
		}
	}
	if !plan.Blocked() {
		plan.withhold(set, byKey, objs)
	}
	if plan.Blocked() {
		plan.Apply, plan.Unchanged = nil, 0
		if set.OnBlocked == Keep {
			return plan
		}
		desired = map[key]bool{} // Remove: every live object of the set goes
	}
	// Prune: the set's live objects that are not desired, in reverse kind order.
	for i := len(set.Kinds) - 1; i >= 0; i-- {
		k := set.Kinds[i]
		stale := make([]cache.Object, 0)
		for _, o := range live[k.GVK] {
			if !set.Owns(o) {
				continue
			}
			dying := !o.GetDeletionTimestamp().IsZero()
			if k.Guard && hasFinalizer(o, set.Finalizer) && (dying || !desired[key{k.GVK, o.GetName()}]) {
				plan.Release = append(plan.Release, o)
			}
			if dying && !desired[key{k.GVK, o.GetName()}] && heldByOthers(o, set.Finalizer) {
				plan.lingering(k, o)
			}
			if desired[key{k.GVK, o.GetName()}] || dying {
				continue
			}
			stale = append(stale, o)
		}
		sort.Slice(stale, func(a, b int) bool { return stale[a].GetName() < stale[b].GetName() })
		if k.PruneFirst {
			plan.PruneFirst = append(plan.PruneFirst, stale...)
		} else {
			plan.Prune = append(plan.Prune, stale...)
		}
	}
	return plan
}

// withhold keeps back the objects that rely on a guard not yet settled (see Set.Settle).
func (p *Plan) withhold(set *Set, live map[key]cache.Object, desired []*unstructured.Unstructured) {
	first := set.firstGuard()
	if set.Settle <= 0 || first < 0 {
		return
	}
	for _, want := range desired {
		gvk := want.GroupVersionKind()
		if ki := set.kindIndex(gvk); ki < 0 || !set.Kinds[ki].Guard {
			continue
		}
		p.Wait = max(p.Wait, set.guardWait(live[key{gvk, want.GetName()}]))
	}
	if p.Wait <= 0 {
		p.Wait = 0
		return
	}
	kept := p.Apply[:0:0]
	for _, want := range p.Apply {
		if set.kindIndex(want.GroupVersionKind()) > first {
			p.Withheld = append(p.Withheld, want)
			continue
		}
		kept = append(kept, want)
	}
	p.Apply = kept
	// What is withheld must not leave an older version in force meanwhile (it may allow what the
	// desired set revokes), nor may a live policy rely on a guard too young to be in effect: such
	// ALLOW policies go now (narrowing) and come back once the guards have settled.
	unsettled := map[string]bool{}
	for _, want := range desired {
		gvk := want.GroupVersionKind()
		if ki := set.kindIndex(gvk); ki >= 0 && set.Kinds[ki].Guard {
			if set.guardWait(live[key{gvk, want.GetName()}]) > 0 {
				unsettled[want.GetName()] = true
			}
		}
	}
	withheld := map[key]bool{}
	for _, w := range p.Withheld {
		withheld[key{w.GroupVersionKind(), w.GetName()}] = true
	}
	for k, have := range live {
		ki := set.kindIndex(k.gvk)
		if ki <= first || !set.Kinds[ki].PruneFirst || !set.Owns(have) || !have.GetDeletionTimestamp().IsZero() {
			continue
		}
		relies := false
		for g := range unsettled {
			relies = relies || Relies(have, set.ReliesOn, g)
		}
		if withheld[k] || relies {
			p.PruneFirst = append(p.PruneFirst, have)
			p.Withheld = appendIfMissing(p.Withheld, desired, k)
		}
	}
	sort.Slice(p.PruneFirst, func(a, b int) bool { return p.PruneFirst[a].GetName() < p.PruneFirst[b].GetName() })
	if len(p.Withheld) == 0 {
		p.Wait = 0
	}
}

// guardWait is how long until a live guard has been in effect for Settle (Settle when there is
// none, or it is being deleted).
func (s *Set) guardWait(have cache.Object) time.Duration {
	if have == nil || !have.GetDeletionTimestamp().IsZero() {
		return s.Settle
	}
	since, ok := s.GuardSince[have.GetUID()]
	if !ok {
		return s.Settle
	}
	return max(since.Add(s.Settle).Sub(s.Now), 0)
}

// appendIfMissing adds the desired object of key k to withheld when it is not there yet.
func appendIfMissing(withheld, desired []*unstructured.Unstructured, k key) []*unstructured.Unstructured {
	for _, w := range withheld {
		if w.GroupVersionKind() == k.gvk && w.GetName() == k.name {
			return withheld
		}
	}
	for _, d := range desired {
		if d.GroupVersionKind() == k.gvk && d.GetName() == k.name {
			return append(withheld, d)
		}
	}
	return withheld
}

// ExactMeta reports whether have carries the set's exact keys as want does (see ExactLabels).
func (s *Set) ExactMeta(want, have metav1.Object) bool {
	for _, k := range s.ExactLabels {
		w, wok := want.GetLabels()[k]
		h, hok := have.GetLabels()[k]
		if w != h || wok != hok {
			return false
		}
	}
	keys := s.ExactAnnotations
	if s.ReliesOn != "" {
		keys = append(keys[:len(keys):len(keys)], s.ReliesOn) // whose guards it names matters too
	}
	for _, k := range keys {
		w, wok := want.GetAnnotations()[k]
		h, hok := have.GetAnnotations()[k]
		if w != h || wok != hok {
			return false
		}
	}
	return true
}

// firstGuard is the index of the set's first Guard kind, -1 when it has none.
func (s *Set) firstGuard() int {
	for i, k := range s.Kinds {
		if k.Guard {
			return i
		}
	}
	return -1
}

// guardNames lists the desired guarded objects of the set, sorted and comma-separated.
func guardNames(set *Set, objs []*unstructured.Unstructured) string {
	var names []string
	for _, o := range objs {
		if ki := set.kindIndex(o.GroupVersionKind()); ki >= 0 && set.Kinds[ki].Guard {
			names = append(names, o.GetName())
		}
	}
	sort.Strings(names)
	return strings.Join(names, ",")
}

// Relies reports whether o names guard in the annotation key.
func Relies(o metav1.Object, key, guard string) bool {
	if key == "" {
		return false
	}
	for _, n := range strings.Split(o.GetAnnotations()[key], ",") {
		if n == guard {
			return true
		}
	}
	return false
}

// heldByOthers reports whether finalizers other than ours keep o.
func heldByOthers(o metav1.Object, ours string) bool {
	for _, f := range o.GetFinalizers() {
		if f != ours {
			return true
		}
	}
	return false
}

// Inert is an object to patch so that it allows nothing.
type Inert struct {
	Object cache.Object
	Patch  []byte
}

// lingering makes a stale object held by someone else's finalizer inert, and says so.
func (p *Plan) lingering(k Kind, o cache.Object) {
	ref := RefOf(k.GVK.Kind, o)
	msg := fmt.Sprintf("%s is being deleted but finalizers %v keep it, and istiod enforces it until it is gone", ref, o.GetFinalizers())
	if k.Inert != nil {
		// Patched at every sync (a no-op once inert): a mark could be forged, rules written back.
		p.Inert = append(p.Inert, Inert{Object: o, Patch: k.Inert})
		msg += ": it is patched to allow nothing"
	}
	p.Lingering = append(p.Lingering, Problem{Object: ref, Reason: ReasonLingering, Message: msg})
}

func withAnnotation(u *unstructured.Unstructured, k, v string) *unstructured.Unstructured {
	if u.GetAnnotations()[k] == v {
		return u
	}
	u = u.DeepCopy()
	a := u.GetAnnotations()
	if a == nil {
		a = map[string]string{}
	}
	a[k] = v
	u.SetAnnotations(a)
	return u
}

func withFinalizer(u *unstructured.Unstructured, f string) *unstructured.Unstructured {
	for _, have := range u.GetFinalizers() {
		if have == f {
			return u
		}
	}
	u = u.DeepCopy()
	u.SetFinalizers(append(u.GetFinalizers(), f))
	return u
}

func hasFinalizer(o metav1.Object, f string) bool {
	if f == "" {
		return false
	}
	for _, have := range o.GetFinalizers() {
		if have == f {
			return true
		}
	}
	return false
}

func ownerWord(set *Set) string {
	if len(set.OwnerKinds) == 0 {
		return "set"
	}
	return strings.Join(set.OwnerKinds, "/")
}

// UpToDate reports whether have (as cached: a hash of its spec) already carries everything in want.
func UpToDate(want *unstructured.Unstructured, have cache.Object) bool {
	if h, err := cache.SpecHash(want.Object["spec"]); err != nil || h != have.SpecHash() {
		return false
	}
	return metaUpToDate(want, have)
}

// metaUpToDate: have carries want's labels, annotations and finalizers, and its owner references.
func metaUpToDate(want, have metav1.Object) bool {
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
	for _, f := range want.GetFinalizers() {
		found := false
		for _, g := range have.GetFinalizers() {
			found = found || f == g
		}
		if !found {
			return false
		}
	}
	return reflect.DeepEqual(want.GetOwnerReferences(), have.GetOwnerReferences())
}

// settled reports whether got, as an apply of want left it, is what the next Diff would leave
// alone: the set's own (labels, controller), not being deleted, want's metadata on it. Only such a
// write's watch event tells its writer nothing (OwnWrites.Echo); the spec is exact's to check.
func (s *Set) settled(want *unstructured.Unstructured, got metav1.Object) bool {
	return s.Owns(got) && got.GetDeletionTimestamp().IsZero() && metaUpToDate(want, got) && s.ExactMeta(want, got)
}
