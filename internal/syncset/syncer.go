package syncset

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/internal/cache"
)

// Result is what a sync did.
type Result struct {
	// Problems blocked the desired set: none of it was applied (see Set.OnBlocked for the live set).
	Problems []Problem
	Applied  []Ref
	Pruned   []Ref
	// Released are guarded objects let go (their finalizer removed).
	Released []Ref
	// Held are guarded objects kept although the set no longer wants them: an object the set does
	// not own (any more) still relies on them (Set.ReliesOn). The sync looks again later.
	Held []Problem
	// Withheld are desired objects not applied yet, and Wait how long until the sync should run
	// again to apply them or let a guard go (Set.Settle).
	Withheld []Ref
	Wait     time.Duration
	// Kept are objects of a RepairInPlace set left holding another spec than the set's (an
	// admission step put it back when it was written again): Sync returns ErrForeignFieldsKept
	// after writing the rest of the set.
	Kept []Ref
}

// Pending reports whether the sync has more to do after Wait.
func (r Result) Pending() bool { return r.Wait > 0 }

// Blocked reports whether the desired set was not applied.
func (r Result) Blocked() bool { return len(r.Problems) > 0 }

// Wrote reports whether the sync wrote anything.
func (r Result) Wrote() bool { return len(r.Applied)+len(r.Pruned)+len(r.Released) > 0 }

// Problem returns the first problem of a reason, if any.
func (r Result) Problem(reason string) (Problem, bool) {
	for _, p := range r.Problems {
		if p.Reason == reason {
			return p, true
		}
	}
	return Problem{}, false
}

// Syncer carries out plans against the apiserver, reading live objects from c (the manager's
// cache) and writing with server-side apply under one field manager.
type Syncer struct {
	Client client.Client
	// Reader reads the apiserver directly (the manager's APIReader): before a guard is let go, the
	// objects that may rely on it are listed uncached, so that one applied a moment ago (not yet in
	// the cache) is seen. Client is used when nil.
	Reader       client.Reader
	FieldManager string
	Validate     Validator
	// Writes, when set, records each object applied exactly as desired (or kept, in a RepairInPlace
	// set), under the set's Writer.
	Writes *OwnWrites

	mu sync.Mutex
	// unrelied: when each guard being let go was first found with nothing relying on it.
	unrelied map[types.UID]time.Time
	// since: when each guard came into effect (see Set.GuardSince).
	since map[types.UID]time.Time
}

// guardSince records the live guards of set not seen before (created by someone else, or before a
// restart: from their creationTimestamp, whole seconds, plus one) and returns what is known.
func (s *Syncer) guardSince(set *Set, live map[schema.GroupVersionKind][]cache.Object) map[types.UID]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.since == nil {
		s.since = map[types.UID]time.Time{}
	}
	out := map[types.UID]time.Time{}
	for _, k := range set.Kinds {
		if !k.Guard {
			continue
		}
		for _, o := range live[k.GVK] {
			since, ok := s.since[o.GetUID()]
			if !ok {
				since = o.GetCreationTimestamp().Add(time.Second)
				if since.After(set.Now) {
					since = set.Now
				}
				s.since[o.GetUID()] = since
			}
			out[o.GetUID()] = since
		}
	}
	return out
}

// forget drops what is known of a guard let go (it is gone: its UID never comes back).
func (s *Syncer) forget(uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.since, uid)
	delete(s.unrelied, uid)
}

// created notes that this process created guard uid now.
func (s *Syncer) created(uid types.UID, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.since == nil {
		s.since = map[types.UID]time.Time{}
	}
	if _, ok := s.since[uid]; !ok {
		s.since[uid] = now
	}
}

// ReasonHeld: a guarded object stays because an object the set does not own relies on it.
const ReasonHeld = "Held"

// Sync writes set: live objects are read, the plan made by Diff is carried out in order. When an
// apply fails half-way through a Remove set, what it holds is deleted (allow nothing) before the
// error is returned, so that no partial set stays behind.
func (s *Syncer) Sync(ctx context.Context, set *Set) (Result, error) {
	if set.RepairInPlace && (set.OnBlocked == Remove || set.firstGuard() >= 0) {
		// A kept object does not stop the sync: only for sets whose partial state allows no more.
		return Result{}, errors.New("a RepairInPlace set must keep its live set when blocked (OnBlocked Keep) and have no Guard kinds")
	}
	applied := map[types.UID]bool{} // what this sync applied exactly as desired, or kept
	res, err := s.sync(ctx, set, applied)
	if err != nil || res.Blocked() {
		applied = nil
	}
	s.Writes.end(set.Writer, applied)
	if err == nil && len(res.Kept) > 0 {
		names := make([]string, len(res.Kept))
		for i, k := range res.Kept {
			names[i] = k.String()
		}
		err = fmt.Errorf("apply %s: %w", strings.Join(names, ", "), ErrForeignFieldsKept)
	}
	return res, err
}

func (s *Syncer) sync(ctx context.Context, set *Set, applied map[types.UID]bool) (Result, error) {
	began := time.Now() // set.Now is when the sync began; a guard's Settle counts from its creation
	live, err := s.live(ctx, set)
	if err != nil {
		return Result{}, err
	}
	set.GuardSince = s.guardSince(set, live)
	plan := Diff(set, live, s.Validate)
	res := Result{Problems: plan.Problems, Wait: plan.Wait}
	for _, w := range plan.Withheld {
		res.Withheld = append(res.Withheld, Ref{Kind: w.GetKind(), Namespace: w.GetNamespace(), Name: w.GetName()})
	}
	res.Held = append(res.Held, plan.Lingering...)
	if err := s.delete(ctx, plan.PruneFirst, &res); err != nil {
		return res, err
	}
	fresh := map[string]bool{} // guards this sync created although the plan took them for settled
	for _, want := range plan.Apply {
		ki := set.kindIndex(want.GroupVersionKind())
		if len(fresh) > 0 && ki > set.firstGuard() {
			res.Withheld = append(res.Withheld, Ref{Kind: want.GetKind(), Namespace: want.GetNamespace(), Name: want.GetName()})
			if set.Kinds[ki].PruneFirst { // its older version must not stay in force meanwhile
				if err := s.dropLive(ctx, set, want, &res); err != nil {
					return res, err
				}
			}
			continue
		}
		creating := plan.Creating[RefOf(want.GetKind(), want)]
		reliersGo := false // a guard this sync creates whose reliers were not dropped before it
		if ki >= 0 && set.Kinds[ki].Guard && set.Settle > 0 && set.ReliesOn != "" {
			// A guard about to be created (the cache may still show one deleted meanwhile): what
			// relies on its name goes first, so nothing is in force before it is. One that exists
			// is left to the creation below: it is refused unless it is the set's own latest write.
			gone, err := s.absent(ctx, want)
			if err != nil {
				if set.OnBlocked == Remove {
					err = errors.Join(err, s.removeAll(ctx, set, &res))
				}
				return res, err
			}
			if gone {
				if err := s.dropReliers(ctx, set, map[string]bool{want.GetName(): true}, &res); err != nil {
					return res, err
				}
			}
			reliersGo = !gone
		}
		got := want.DeepCopy()
		if uid, ok := plan.Updating[RefOf(want.GetKind(), want)]; ok {
			got.SetUID(uid) // an update, not a creation: fails if that object is gone
		} else if creating {
			// The cache had none, which does not mean there is none: one created a moment ago by
			// someone else would be taken over by a plain apply (its fields merged with ours). A
			// creation only, then: the apply fails if the object exists.
			got.SetResourceVersion(createOnly)
		}
		err := s.apply(ctx, got)
		if creating && apierrors.IsConflict(err) {
			// It exists: someone else's, or this set's own latest write the cache has not seen yet.
			got, err = s.applyOwn(ctx, set, want, err)
			creating = false // an update of the set's own, if any
		}
		if apierrors.IsConflict(err) && ki >= 0 && set.Kinds[ki].Guard {
			// The guard the plan updated is gone (deleted by hand): what relied on it goes now;
			// the next sync creates it anew and waits before anything relies on it again.
			err = errors.Join(err, s.dropReliers(ctx, set, map[string]bool{want.GetName(): true}, &res))
		}
		if err == nil {
			err = s.exact(ctx, set, want, got, creating && got.GetGeneration() != 1)
			if errors.Is(err, ErrForeignFieldsKept) {
				// Kept as it is (deleting it would allow more); the rest of the set is written. It
				// stands as this sync left it: the set's own to write again.
				res.Kept = append(res.Kept, RefOf(want.GetKind(), want))
				s.Writes.record(got.GetUID(), got.GetResourceVersion(), set.Writer, false) // not as desired: its echo is delivered
				applied[got.GetUID()] = true
				continue
			}
		}
		if err == nil && creating && reliersGo {
			// Found by the check, gone before the creation: the one created now is new, and what
			// relied on the old one (the cache may not hold it yet) goes, as for one found gone.
			err = s.dropReliers(ctx, set, map[string]bool{want.GetName(): true}, &res)
		}
		if err != nil {
			err = fmt.Errorf("apply %s %s/%s: %w", want.GetKind(), want.GetNamespace(), want.GetName(), err)
			if set.OnBlocked == Remove {
				err = errors.Join(err, s.removeAll(ctx, set, &res))
			}
			return res, err
		}
		res.Applied = append(res.Applied, Ref{Kind: want.GetKind(), Namespace: want.GetNamespace(), Name: want.GetName()})
		// exact: as desired; its echo tells the writer nothing if the next Diff would leave it alone
		s.Writes.record(got.GetUID(), got.GetResourceVersion(), set.Writer, set.settled(want, got))
		applied[got.GetUID()] = true
		if ki >= 0 && set.Kinds[ki].Guard && set.Settle > 0 {
			if _, known := set.GuardSince[got.GetUID()]; !known {
				s.created(got.GetUID(), set.Now.Add(time.Since(began)))
				if plan.Wait == 0 {
					fresh[got.GetName()] = true // the plan took an older one (cache lag) for it
				}
			}
		}
	}
	if len(fresh) > 0 {
		// The cache showed an older guard (deleted meanwhile): the one just created is not in effect
		// yet, so what relies on it goes until it is (the next sync, after Settle, writes it again).
		if err := s.dropReliers(ctx, set, fresh, &res); err != nil {
			return res, err
		}
		res.Wait = max(res.Wait, set.Settle)
	}
	if err := s.delete(ctx, plan.Prune, &res); err != nil {
		return res, err
	}
	for _, in := range plan.Inert {
		if err := s.makeInert(ctx, in); err != nil {
			return res, err
		}
		res.Applied = append(res.Applied, RefOf(in.Object.DefaultGVK().Kind, in.Object))
	}
	return res, s.release(ctx, set, plan.Release, &res)
}

// release removes the set's finalizer from guarded objects (a JSON patch that fails if their
// finalizers changed meanwhile), each only once no object of the namespace relies on it, as read
// from the apiserver: one of the set's (a moment ago applied, or not yet pruned: the sync is retried)
// or anyone's (held, reported, looked at again later).
func (s *Syncer) release(ctx context.Context, set *Set, objs []cache.Object, res *Result) error {
	if len(objs) == 0 {
		return nil
	}
	reliers, err := s.reliers(ctx, set)
	if err != nil {
		return err
	}
	finalizer := set.Finalizer
	for _, o := range objs {
		var held []metav1.PartialObjectMetadata
		for _, r := range reliers {
			if Relies(&r, set.ReliesOn, o.GetName()) {
				held = append(held, r)
			}
		}
		guard := RefOf(o.DefaultGVK().Kind, o)
		if len(held) > 0 {
			r := &held[0]
			relier := RefOf(r.Kind, r)
			if set.Owns(r) {
				return fmt.Errorf("release %s: %s still relies on it: %w", guard, relier, ErrRelied)
			}
			res.Held = append(res.Held, Problem{Object: guard, Reason: ReasonHeld,
				Message: fmt.Sprintf("%s is kept: %s relies on it and is not managed by smi2istio for this %s (remove it or give it back its labels)", guard, relier, ownerWord(set))})
			continue
		}
		if wait := s.settle(set, o); wait > 0 {
			res.Wait = max(res.Wait, wait)
			continue
		}
		old := o.GetFinalizers()
		kept := make([]string, 0, len(old))
		for _, f := range old {
			if f != finalizer {
				kept = append(kept, f)
			}
		}
		patch, err := json.Marshal([]map[string]any{
			{"op": "test", "path": "/metadata/finalizers", "value": old},
			{"op": "replace", "path": "/metadata/finalizers", "value": kept},
		})
		if err != nil {
			return err
		}
		if err := s.Client.Patch(ctx, metaOf(o), client.RawPatch(types.JSONPatchType, patch)); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("release %s %s/%s: %w", o.DefaultGVK().Kind, o.GetNamespace(), o.GetName(), err)
		}
		res.Released = append(res.Released, RefOf(o.DefaultGVK().Kind, o))
		s.forget(o.GetUID())
	}
	return nil
}

// ErrExists: an object the set was about to create exists already (someone else's, not yet in the
// cache); nothing is written over it.
var ErrExists = errors.New("exists already and is not known to be smi2istio's: it is left untouched")

// ErrForeignFields: an applied object holds fields that the set did not write.
var ErrForeignFields = errors.New("it holds fields smi2istio did not write (another field manager's): it was deleted, and is written again")

// exact checks that an applied object's spec is the desired one. Server-side apply merges: fields
// another manager owns stay. That is how an edit by hand to one of ours (an extra rule) would
// survive every apply, or how a mutating webhook's additions would stay. Such an object is the
// set's own (updated on condition of its UID, or just created: creations fail on an existing
// object), so it is deleted, to be written again — or, in a RepairInPlace set, its spec is written
// back in place (repair).
//
// notFresh marks a creation whose answer is not a new object (generation 1): on etcd none can be
// (no object has resourceVersion 1), but on a storage that numbers otherwise the apply may have
// been an update of someone else's object, which is reported and never deleted.
func (s *Syncer) exact(ctx context.Context, set *Set, want, got *unstructured.Unstructured, notFresh bool) error {
	if same, err := sameSpec(want, got); err != nil || (same && set.ExactMeta(want, got)) {
		return err
	}
	if notFresh {
		return fmt.Errorf("%w: %s %s/%s", ErrExists, want.GetKind(), want.GetNamespace(), want.GetName())
	}
	if set.RepairInPlace {
		return s.repair(ctx, set, want, got)
	}
	if err := s.deleteObject(ctx, got); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("%w; deleting it failed: %w", ErrForeignFields, err)
	}
	return ErrForeignFields
}

// ErrForeignFieldsKept: an object of a RepairInPlace set still holds fields the set did not write
// after its spec was written back (an admission step puts them back on every write).
var ErrForeignFieldsKept = errors.New("it holds fields smi2istio did not write, put back by an admission step when its spec was written again: kept (deleting it would allow more), retried")

// repair writes want's spec over got's in place: a JSON merge patch from the spec got holds to the
// desired one (what another writer added set to null), on condition of got's resourceVersion, so a
// write by anyone since fails it (Conflict: retried). The object is never absent meanwhile. got
// becomes the patched object; ErrForeignFieldsKept if it still differs from want.
func (s *Syncer) repair(ctx context.Context, set *Set, want, got *unstructured.Unstructured) error {
	from, err := json.Marshal(map[string]any{"spec": got.Object["spec"]})
	if err != nil {
		return fmt.Errorf("encode the live spec: %w", err)
	}
	to, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"resourceVersion": got.GetResourceVersion()},
		"spec":     want.Object["spec"],
	})
	if err != nil {
		return fmt.Errorf("encode the desired spec: %w", err)
	}
	patch, err := jsonpatch.CreateMergePatch(from, to)
	if err != nil {
		return fmt.Errorf("merge patch: %w", err)
	}
	if err := s.Client.Patch(ctx, got, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(s.FieldManager)); err != nil {
		return fmt.Errorf("write its spec again in place: %w", err)
	}
	if same, err := sameSpec(want, got); err != nil || (same && set.ExactMeta(want, got)) {
		return err
	}
	return ErrForeignFieldsKept
}

// sameSpec reports whether got's spec is want's.
func sameSpec(want, got *unstructured.Unstructured) (bool, error) {
	w, err := cache.SpecHash(want.Object["spec"])
	if err != nil {
		return false, err
	}
	g, err := cache.SpecHash(got.Object["spec"])
	return w == g, err
}

// makeInert patches a lingering object with its kind's Inert patch and marks it.
func (s *Syncer) makeInert(ctx context.Context, in Inert) error {
	var patch map[string]any
	if err := json.Unmarshal(in.Patch, &patch); err != nil {
		return fmt.Errorf("inert patch: %w", err)
	}
	data, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	if err := s.Client.Patch(ctx, metaOf(in.Object), client.RawPatch(types.MergePatchType, data)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("make %s %s/%s allow nothing: %w", in.Object.DefaultGVK().Kind, in.Object.GetNamespace(), in.Object.GetName(), err)
	}
	return nil
}

// settle says how long a guard with nothing relying on it must still stay (Set.Settle), counted
// from the first time this process found it so. The time is kept here, not on the object, where
// anyone could write an old one: after a restart the wait starts again (longer, never shorter).
func (s *Syncer) settle(set *Set, o cache.Object) time.Duration {
	if set.Settle <= 0 {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.unrelied == nil {
		s.unrelied = map[types.UID]time.Time{}
	}
	since, ok := s.unrelied[o.GetUID()]
	if !ok {
		s.unrelied[o.GetUID()] = set.Now
		return set.Settle
	}
	if wait := since.Add(set.Settle).Sub(set.Now); wait > 0 {
		return wait
	}
	delete(s.unrelied, o.GetUID()) // let go now
	return 0
}

// dropReliers deletes the set's objects of PruneFirst kinds that rely on one of guards, as listed
// uncached.
func (s *Syncer) dropReliers(ctx context.Context, set *Set, guards map[string]bool, res *Result) error {
	reliers, err := s.reliers(ctx, set)
	if err != nil {
		return err
	}
	for i := range reliers {
		r := &reliers[i]
		ki := set.kindIndex(r.GroupVersionKind())
		if ki < 0 || !set.Kinds[ki].PruneFirst || !set.Owns(r) {
			continue
		}
		for g := range guards {
			if !Relies(r, set.ReliesOn, g) {
				continue
			}
			if err := s.deleteObject(ctx, r); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("delete %s %s/%s: %w", r.Kind, r.Namespace, r.Name, err)
			}
			res.Pruned = append(res.Pruned, RefOf(r.Kind, r))
			break
		}
	}
	return nil
}

// dropLive deletes the live version of want (read uncached) when it is the set's.
func (s *Syncer) dropLive(ctx context.Context, set *Set, want *unstructured.Unstructured, res *Result) error {
	m, err := s.uncached(ctx, want)
	if err != nil || m == nil || !set.Owns(m) {
		return err
	}
	if err := s.deleteObject(ctx, m); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete %s %s/%s: %w", m.Kind, m.Namespace, m.Name, err)
	}
	res.Pruned = append(res.Pruned, RefOf(want.GetKind(), m))
	return nil
}

// createOnly is the resourceVersion an apply carries to create an object and nothing else. On an
// existing object the apiserver takes a resourceVersion in the applied configuration for a
// precondition and refuses the apply (Conflict) unless it is the object's; no object can have this
// one (etcd's first write is its revision 2). Where there is none, the creation ignores it.
const createOnly = "1"

// apply server-side applies got with the set's field manager, forced, and decodes the answer into
// it. Strict: a field the schema does not know is refused, never dropped (the default, Warn, stores
// the object without it: an output validated with a narrowing field would be stored wider until
// exact deleted it).
func (s *Syncer) apply(ctx context.Context, got *unstructured.Unstructured) error {
	//nolint:staticcheck // SSA of an unstructured object with one field manager.
	return s.Client.Patch(ctx, got, client.Apply, client.FieldOwner(s.FieldManager), client.ForceOwnership,
		client.FieldValidation(metav1.FieldValidationStrict))
}

// applyOwn applies want over the object of its name that a creation found, read from the
// apiserver, if it stands exactly as set's latest sync stored it (the cache has not seen it yet):
// on condition of that UID and resourceVersion, so a write by anyone since fails it. Anything else
// is someone else's: ErrExists, and nothing is written. conflict is the creation's error.
func (s *Syncer) applyOwn(ctx context.Context, set *Set, want *unstructured.Unstructured, conflict error) (*unstructured.Unstructured, error) {
	m, err := s.uncached(ctx, want)
	if err != nil {
		return nil, err
	}
	if m == nil {
		return nil, conflict // gone again since: a transient error, the sync is retried
	}
	if !s.Writes.wrote(set.Writer, m.GetUID(), m.GetResourceVersion()) { // nobody wrote it since
		return nil, fmt.Errorf("%w: %s %s/%s", ErrExists, want.GetKind(), want.GetNamespace(), want.GetName())
	}
	got := want.DeepCopy()
	got.SetUID(m.GetUID())
	got.SetResourceVersion(m.GetResourceVersion())
	return got, s.apply(ctx, got)
}

// absent reports whether want does not exist, read uncached.
func (s *Syncer) absent(ctx context.Context, want *unstructured.Unstructured) (bool, error) {
	m, err := s.uncached(ctx, want)
	return m == nil && err == nil, err
}

// uncached reads want's live metadata from the apiserver; nil when there is none.
func (s *Syncer) uncached(ctx context.Context, want *unstructured.Unstructured) (*metav1.PartialObjectMetadata, error) {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(want.GroupVersionKind())
	err := s.reader().Get(ctx, client.ObjectKey{Namespace: want.GetNamespace(), Name: want.GetName()}, m)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

// reader is Reader, or Client when none is set.
func (s *Syncer) reader() client.Reader {
	if s.Reader == nil {
		return s.Client
	}
	return s.Reader
}

// metaOf is a patch target for o that is not o: live objects come from the cache, and a patch
// decodes the answer into its target.
func metaOf(o cache.Object) *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(o.DefaultGVK())
	m.SetNamespace(o.GetNamespace())
	m.SetName(o.GetName())
	return m
}

// ErrRelied: a guard was not let go because an object of the set still relies on it.
var ErrRelied = errors.New("the set still holds an object that relies on it")

// reliers lists, uncached, the objects of the set's namespace of the kinds after its first Guard
// kind that carry the ReliesOn annotation.
func (s *Syncer) reliers(ctx context.Context, set *Set) ([]metav1.PartialObjectMetadata, error) {
	first := set.firstGuard()
	if first < 0 || set.ReliesOn == "" {
		return nil, nil
	}
	reader := s.reader()
	var out []metav1.PartialObjectMetadata
	for _, k := range set.Kinds[first+1:] {
		list := &metav1.PartialObjectMetadataList{}
		list.SetGroupVersionKind(k.GVK.GroupVersion().WithKind(k.GVK.Kind + "List"))
		if err := reader.List(ctx, list, client.InNamespace(set.Namespace)); err != nil {
			return nil, fmt.Errorf("list %s in %s: %w", k.GVK.Kind, set.Namespace, err)
		}
		for _, o := range list.Items {
			if _, ok := o.GetAnnotations()[set.ReliesOn]; ok {
				o.SetGroupVersionKind(k.GVK)
				out = append(out, o)
			}
		}
	}
	return out, nil
}

// removeAll deletes every live object of the set, in prune order.
func (s *Syncer) removeAll(ctx context.Context, set *Set, res *Result) error {
	live, err := s.live(ctx, set)
	if err != nil {
		return err
	}
	empty := *set
	empty.Objects, empty.Blockers = nil, nil
	plan := Diff(&empty, live, nil)
	if err := s.delete(ctx, append(plan.PruneFirst, plan.Prune...), res); err != nil {
		return err
	}
	return s.release(ctx, set, plan.Release, res)
}

// deleteObject deletes the object of that UID. A cached (compact) object is deleted through an
// unstructured stub of its kind: controller-runtime's typed client decodes the apiserver's answer
// (the object itself while a finalizer keeps it) into the object's Go type and encodes it again,
// which a compact type refuses — a delete that worked would be reported as failed.
func (s *Syncer) deleteObject(ctx context.Context, o client.Object) error {
	if c, ok := o.(cache.Compact); ok {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(c.DefaultGVK())
		u.SetNamespace(o.GetNamespace())
		u.SetName(o.GetName())
		return s.Client.Delete(ctx, u, client.Preconditions{UID: ptr.To(o.GetUID())})
	}
	return s.Client.Delete(ctx, o, client.Preconditions{UID: ptr.To(o.GetUID())})
}

func (s *Syncer) delete(ctx context.Context, objs []cache.Object, res *Result) error {
	for _, o := range objs {
		if err := s.deleteObject(ctx, o); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete %s %s/%s: %w", o.DefaultGVK().Kind, o.GetNamespace(), o.GetName(), err)
		}
		res.Pruned = append(res.Pruned, RefOf(o.DefaultGVK().Kind, o))
	}
	return nil
}

// live reads the set's live objects from the cache: those carrying its labels, and any object
// with the name of a desired one.
func (s *Syncer) live(ctx context.Context, set *Set) (map[schema.GroupVersionKind][]cache.Object, error) {
	out := map[schema.GroupVersionKind][]cache.Object{}
	seen := map[key]bool{}
	for _, k := range set.Kinds {
		list, err := cache.NewList(k.GVK), error(nil)
		if err = s.Client.List(ctx, list, client.InNamespace(set.Namespace), client.MatchingLabels(set.Labels), client.UnsafeDisableDeepCopy); err != nil {
			return nil, fmt.Errorf("list %s in %s: %w", k.GVK.Kind, set.Namespace, err)
		}
		for _, o := range list.Objects() {
			out[k.GVK] = append(out[k.GVK], o)
			seen[key{k.GVK, o.GetName()}] = true
		}
	}
	for _, want := range set.Objects {
		gvk := want.GroupVersionKind()
		if seen[key{gvk, want.GetName()}] {
			continue
		}
		have, err := cache.NewFor(gvk)
		if err != nil {
			return nil, err
		}
		err = s.Client.Get(ctx, client.ObjectKey{Namespace: want.GetNamespace(), Name: want.GetName()}, have, client.UnsafeDisableDeepCopy)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("get %s %s/%s: %w", gvk.Kind, want.GetNamespace(), want.GetName(), err)
		}
		out[gvk] = append(out[gvk], have)
		seen[key{gvk, want.GetName()}] = true
	}
	return out, nil
}
