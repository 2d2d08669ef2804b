package syncset

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
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
}

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
	Client       client.Client
	FieldManager string
	Validate     Validator
}

// Sync writes set: live objects are read, the plan made by Diff is carried out in order. When an
// apply fails half-way through a Remove set, what it holds is deleted (allow nothing) before the
// error is returned, so that no partial set stays behind.
func (s *Syncer) Sync(ctx context.Context, set *Set) (Result, error) {
	live, err := s.live(ctx, set)
	if err != nil {
		return Result{}, err
	}
	plan := Diff(set, live, s.Validate)
	res := Result{Problems: plan.Problems}
	if err := s.delete(ctx, plan.PruneFirst, &res); err != nil {
		return res, err
	}
	for _, want := range plan.Apply {
		//nolint:staticcheck // SSA of an unstructured object with one field manager.
		err := s.Client.Patch(ctx, want.DeepCopy(), client.Apply, client.FieldOwner(s.FieldManager), client.ForceOwnership)
		if err != nil {
			err = fmt.Errorf("apply %s %s/%s: %w", want.GetKind(), want.GetNamespace(), want.GetName(), err)
			if set.OnBlocked == Remove {
				err = errors.Join(err, s.removeAll(ctx, set, &res))
			}
			return res, err
		}
		res.Applied = append(res.Applied, Ref{Kind: want.GetKind(), Namespace: want.GetNamespace(), Name: want.GetName()})
	}
	if err := s.delete(ctx, plan.Prune, &res); err != nil {
		return res, err
	}
	return res, s.release(ctx, plan.Release, set.Finalizer, &res)
}

// release removes the set's finalizer from guarded objects (a JSON patch that fails if their
// finalizers changed meanwhile).
func (s *Syncer) release(ctx context.Context, objs []cache.Object, finalizer string, res *Result) error {
	for _, o := range objs {
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
		if err := s.Client.Patch(ctx, o, client.RawPatch(types.JSONPatchType, patch)); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("release %s %s/%s: %w", o.DefaultGVK().Kind, o.GetNamespace(), o.GetName(), err)
		}
		res.Released = append(res.Released, RefOf(o.DefaultGVK().Kind, o))
	}
	return nil
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
	return s.release(ctx, plan.Release, set.Finalizer, res)
}

func (s *Syncer) delete(ctx context.Context, objs []cache.Object, res *Result) error {
	for _, o := range objs {
		if err := s.Client.Delete(ctx, o, client.Preconditions{UID: ptr.To(o.GetUID())}); err != nil && !apierrors.IsNotFound(err) {
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
