package syncset

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/smi2istio/smi2istio/internal/cache"
)

func TestOwnWritesRemembersEachSetsLatestSync(t *testing.T) {
	e := NewOwnWrites(2)
	e.Record("a", "1", "w")
	if !e.wrote("w", "a", "1") {
		t.Fatal("a@1 written by w: not remembered")
	}
	for _, c := range []struct {
		writer string
		uid    types.UID
		rv     string
	}{{"w", "a", "2"}, {"w", "a", ""}, {"v", "a", "1"}, {"w", "b", "1"}, {"w", "", "1"}, {"", "a", "1"}} {
		if e.wrote(c.writer, c.uid, c.rv) {
			t.Errorf("%s@%s taken for %q's write", c.uid, c.rv, c.writer)
		}
	}
	e.Record("a", "3", "v") // a later write: the earlier one is no longer the object as it stands
	if e.wrote("w", "a", "1") || !e.wrote("v", "a", "3") {
		t.Error("after a@3 by v: a@1 by w still remembered, or a@3 not")
	}
	e.Record("b", "4", "w")
	e.Record("c", "5", "w") // the ring holds two: a, the oldest, is forgotten
	if e.wrote("v", "a", "3") || !e.wrote("w", "b", "4") || !e.wrote("w", "c", "5") {
		t.Error("a memory of two after three objects: want a forgotten, b and c remembered")
	}
	var none *OwnWrites
	none.Record("a", "1", "w") // a Syncer without OwnWrites records nothing
	if none.wrote("w", "a", "1") {
		t.Error("nil OwnWrites answered")
	}

	// When a sync ends, only what it applied stays of its writer's records; a failed one leaves none.
	e = NewOwnWrites(8)
	e.Record("a", "1", "w")
	e.Record("b", "1", "w")
	e.Record("c", "1", "v")
	e.Record("b", "2", "w")
	e.end("w", map[types.UID]bool{"b": true})
	if e.wrote("w", "a", "1") || !e.wrote("w", "b", "2") || !e.wrote("v", "c", "1") {
		t.Error("after w's sync that applied b: want a forgotten, b@2 and v's c kept")
	}
	e.end("w", nil)
	if e.wrote("w", "b", "2") || !e.wrote("v", "c", "1") {
		t.Error("after w's failed sync: want none of w's, v's kept")
	}

	// A record forgotten and made again keeps only its new place in the ring: the old slot, when
	// reused, does not take the new record with it.
	e = NewOwnWrites(2)
	e.Record("a", "1", "w")
	e.end("w", nil)
	e.Record("b", "1", "v")
	e.Record("a", "2", "w") // slot 0 again (the ring wrapped): a's
	e.Record("c", "1", "v") // slot 1: b goes
	if !e.wrote("w", "a", "2") || e.wrote("v", "b", "1") {
		t.Error("ring reuse: want a@2 kept and b forgotten")
	}
}

// The Syncer records what it applied as the apiserver stored it, under the set's Writer, and only
// objects that exact found as desired: one that took another manager's fields is not recorded.
func TestSyncRecordsExactWrites(t *testing.T) {
	ctx := context.Background()
	ns := "ownwrites"
	c := cacheClient(t, ns)
	writes := NewOwnWrites(OwnWritesSize)
	s := &Syncer{Client: c, FieldManager: "smi2istio", Writes: writes}
	at := func(u *unstructured.Unstructured) *unstructured.Unstructured { u.SetNamespace(ns); return u }
	want := func(spec string) *Set {
		set := newSet(Remove, at(desired(apGVK, "api", spec)))
		set.Namespace, set.Writer = ns, "access/ownwrites/api"
		return set
	}
	get := func() *unstructured.Unstructured { return mustGet(t, apGVK, ns, "api") }
	spec := `{"action":"ALLOW","rules":[{"from":[{"source":{"principals":["cluster.local/ns/shop/sa/web"]}}]}]}`
	if _, err := s.Sync(ctx, want(spec)); err != nil {
		t.Fatal(err)
	}
	stored := get()
	if !writes.wrote("access/ownwrites/api", stored.GetUID(), stored.GetResourceVersion()) {
		t.Fatalf("the applied policy as stored (rv %s) is not recorded as access/echoes/api's", stored.GetResourceVersion())
	}

	// Someone else adds a field the set does not write (apply leaves it): that version is not the
	// set's write, and the sync that finds it (not exact) records nothing.
	edit := stored.DeepCopy()
	edit.Object["spec"].(map[string]any)["selector"] = map[string]any{"matchLabels": map[string]any{"app": "db"}}
	edit.SetManagedFields(nil)
	if err := env.Client.Update(ctx, edit, client.FieldOwner("someone")); err != nil {
		t.Fatal(err)
	}
	edited := get()
	if writes.wrote("access/ownwrites/api", edited.GetUID(), edited.GetResourceVersion()) {
		t.Fatal("someone else's edit is taken for the set's own write")
	}
	var applied []string // what each apply stored (the objects exact deletes are gone after it)
	s.Client = interceptor.NewClient(c, interceptor.Funcs{Patch: func(ctx context.Context, c client.WithWatch, o client.Object, p client.Patch, opts ...client.PatchOption) error {
		err := c.Patch(ctx, o, p, opts...)
		if err == nil && p.Type() == types.ApplyPatchType {
			applied = append(applied, o.GetResourceVersion())
		}
		return err
	}})
	set := want(spec)
	set.Objects[0].SetUID(edited.GetUID())
	_, err := s.Sync(ctx, set)
	if !errors.Is(err, ErrForeignFields) {
		t.Fatalf("sync over someone else's field: %v, want %v", err, ErrForeignFields)
	}
	if len(applied) != 1 {
		t.Fatalf("%d applies, want 1", len(applied))
	}
	if writes.wrote("access/ownwrites/api", edited.GetUID(), applied[0]) {
		t.Fatalf("the apply that kept someone else's field (rv %s) is recorded as the set's own write", applied[0])
	}
}

// A sync that runs before the cache holds what the set's previous sync created (the cache lags the
// apiserver): the object read from the apiserver stands as the set's own apply stored it, so it is
// the set's and is updated — not refused as someone else's (ErrExists), which reported the
// operator's own object at every bulk apply. Anyone's write since, or another set's record, still
// makes it someone else's.
func TestSyncUpdatesItsOwnWriteTheCacheHasNotSeen(t *testing.T) {
	ctx := context.Background()
	ns := "ownwrites-lag"
	c := cacheClient(t, ns)
	// lagging reads nothing from the cache: every object is still to be created as far as it knows.
	lagging := rtLagging(c, interceptor.Funcs{})
	writes := NewOwnWrites(OwnWritesSize)
	spec := `{"action":"ALLOW","rules":[{"from":[{"source":{"principals":["cluster.local/ns/shop/sa/web"]}}]}]}`
	set := func(echo, spec string) *Set {
		u := desired(apGVK, "api", spec)
		u.SetNamespace(ns)
		s := newSet(Remove, u)
		s.Namespace, s.Writer = ns, echo
		return s
	}
	get := func() *unstructured.Unstructured { return mustGet(t, apGVK, ns, "api") }
	if _, err := (&Syncer{Client: c, FieldManager: "smi2istio", Writes: writes}).Sync(ctx, set("access/ownwrites-lag/api", spec)); err != nil {
		t.Fatal(err)
	}
	first := get()
	s := &Syncer{Client: lagging, Reader: c, FieldManager: "smi2istio", Writes: writes}

	// Another set's record does not make it that set's.
	if _, err := s.Sync(ctx, set("access/ownwrites-lag/web", spec)); !errors.Is(err, ErrExists) {
		t.Fatalf("another set over the object: %v, want %v", err, ErrExists)
	}
	// The set's own, as stored: updated in place (same object), to the new desired spec.
	narrower := `{"action":"ALLOW","rules":[{"from":[{"source":{"principals":["cluster.local/ns/shop/sa/db"]}}]}]}`
	res, err := s.Sync(ctx, set("access/ownwrites-lag/api", narrower))
	if err != nil {
		t.Fatalf("the set's own object, not yet in the cache: %v", err)
	}
	now := get()
	if now.GetUID() != first.GetUID() || len(res.Applied) != 1 {
		t.Fatalf("applied %v, uid %s → %s: want the same object updated", res.Applied, first.GetUID(), now.GetUID())
	}
	if p := fmt.Sprint(now.Object["spec"]); !strings.Contains(p, "sa/db") || strings.Contains(p, "sa/web") {
		t.Fatalf("spec after the update: %s", p)
	}
	// Someone writes it: no longer as the set stored it, so it is someone else's again.
	now.SetLabels(map[string]string{"edited": "by-hand"})
	now.SetManagedFields(nil)
	if err := env.Client.Update(ctx, now, client.FieldOwner("someone")); err != nil {
		t.Fatal(err)
	}
	edited := get()
	if _, err := s.Sync(ctx, set("access/ownwrites-lag/api", narrower)); !errors.Is(err, ErrExists) {
		t.Fatalf("after someone else's write: %v, want %v", err, ErrExists)
	}
	if after := get(); after.GetResourceVersion() != edited.GetResourceVersion() {
		t.Fatalf("the object someone else wrote was written over (rv %s → %s)", edited.GetResourceVersion(), after.GetResourceVersion())
	}
}

// compactClient is a client of the test apiserver that reads objects into the cache's compact
// types, as the operator's cache does.
func compactClient(t *testing.T) client.WithWatch {
	t.Helper()
	scheme := kruntime.NewScheme()
	if err := cache.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.NewWithWatch(env.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// cacheClient is compactClient, after creating namespace ns.
func cacheClient(t *testing.T, ns string) client.WithWatch {
	t.Helper()
	if err := env.Client.Create(context.Background(), &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}}); err != nil {
		t.Fatal(err)
	}
	return compactClient(t)
}

// A creation is an apply that fails on an existing object: the set's outputs are created without
// reading each from the apiserver first (one request, not two), and an object someone else created
// that the cache has not seen yet is never applied over — not even one that the apply would leave
// exactly as desired (the same spec and labels), which the exact check after the apply cannot tell
// from the set's own.
func TestSyncCreatesOnly(t *testing.T) {
	ctx := context.Background()
	ns := "create-only"
	c := cacheClient(t, ns)
	gets := 0
	reader := interceptor.NewClient(c, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, o client.Object, opts ...client.GetOption) error {
			gets++
			return c.Get(ctx, key, o, opts...)
		},
	})
	lagging := rtLagging(c, interceptor.Funcs{}) // its cache reads hold nothing
	s := &Syncer{Client: lagging, Reader: reader, FieldManager: "smi2istio", Writes: NewOwnWrites(OwnWritesSize)}
	spec := `{"action":"ALLOW","rules":[{"from":[{"source":{"principals":["cluster.local/ns/shop/sa/web"]}}]}]}`
	set := func(name string) *Set {
		u := desired(apGVK, name, spec)
		u.SetNamespace(ns)
		st := newSet(Remove, u)
		st.Namespace, st.Writer = ns, "access/"+ns+"/"+name
		return st
	}
	get := func(name string) *unstructured.Unstructured { return mustGet(t, apGVK, ns, name) }

	res, err := s.Sync(ctx, set("fresh"))
	if err != nil || len(res.Applied) != 1 {
		t.Fatalf("creating: applied %v, %v", res.Applied, err)
	}
	if gets != 0 {
		t.Fatalf("creating read the apiserver %d times first, want 0", gets)
	}
	if mf := get("fresh").GetManagedFields(); len(mf) != 1 || mf[0].Manager != "smi2istio" || mf[0].Operation != "Apply" {
		t.Fatalf("created object's managed fields: %+v, want the set's field manager's apply alone", mf)
	}

	// Someone else's object, exactly as the set would write it, that the cache has not seen.
	theirs := set("theirs").Objects[0].DeepCopy()
	if err := env.Client.Create(ctx, theirs, client.FieldOwner("someone")); err != nil {
		t.Fatal(err)
	}
	before := get("theirs")
	if _, err := s.Sync(ctx, set("theirs")); !errors.Is(err, ErrExists) {
		t.Fatalf("over someone else's object: %v, want %v", err, ErrExists)
	}
	after := get("theirs")
	if after.GetResourceVersion() != before.GetResourceVersion() || fmt.Sprint(after.GetManagedFields()) != fmt.Sprint(before.GetManagedFields()) {
		t.Fatalf("someone else's object was written (rv %s → %s, managed fields %v)", before.GetResourceVersion(), after.GetResourceVersion(), after.GetManagedFields())
	}

	// The object the creation found is gone when it is read: retried (not ErrExists), nothing written.
	vanished := &Syncer{Client: lagging, FieldManager: "smi2istio", Writes: NewOwnWrites(OwnWritesSize),
		Reader: interceptor.NewClient(c, interceptor.Funcs{
			Get: func(_ context.Context, _ client.WithWatch, key client.ObjectKey, _ client.Object, _ ...client.GetOption) error {
				return apierrors.NewNotFound(schema.GroupResource{Resource: "authorizationpolicies"}, key.Name)
			},
		})}
	if _, err := vanished.Sync(ctx, set("theirs")); err == nil || errors.Is(err, ErrExists) || !apierrors.IsConflict(err) {
		t.Fatalf("the object gone when read: %v, want the creation's Conflict (retried)", err)
	}
	if now := get("theirs"); now.GetResourceVersion() != before.GetResourceVersion() {
		t.Fatalf("someone else's object was written (rv %s → %s)", before.GetResourceVersion(), now.GetResourceVersion())
	}
}

// A creation whose answer is not a new object (generation 1) and not as desired: on etcd it cannot
// happen (no object has resourceVersion 1), but on a storage that numbered otherwise the apply would
// have been an update of someone else's object. exact reports it and does not delete it (a set that
// removes itself when blocked, as the access set does, still removes what carries its labels).
func TestSyncNeverDeletesWhatACreationDidNotCreate(t *testing.T) {
	ctx := context.Background()
	ns := "create-not-fresh"
	c := cacheClient(t, ns)
	deletes := 0
	odd := rtLagging(c, interceptor.Funcs{
		Patch: func(ctx context.Context, c client.WithWatch, o client.Object, p client.Patch, opts ...client.PatchOption) error {
			if err := c.Patch(ctx, o, p, opts...); err != nil {
				return err
			}
			u := o.(*unstructured.Unstructured) // answered as an older object, with a rule not ours
			u.SetGeneration(4)
			return unstructured.SetNestedField(u.Object, "DENY", "spec", "action")
		},
		Delete: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.DeleteOption) error {
			deletes++
			return c.Delete(ctx, o, opts...)
		},
	})
	u := desired(apGVK, "api", `{"action":"ALLOW","rules":[{"from":[{"source":{"principals":["cluster.local/ns/shop/sa/web"]}}]}]}`)
	u.SetNamespace(ns)
	set := newSet(Keep, u)
	set.Namespace, set.Writer = ns, "access/"+ns+"/api"
	if _, err := (&Syncer{Client: odd, FieldManager: "smi2istio", Writes: NewOwnWrites(OwnWritesSize)}).Sync(ctx, set); !errors.Is(err, ErrExists) {
		t.Fatalf("a creation answered by an older object: %v, want %v", err, ErrExists)
	}
	if deletes != 0 {
		t.Fatalf("%d deletes of an object the creation may not have created", deletes)
	}
}

// A guard (the Envoy rung's filter) that the set's previous sync created and the cache has not seen
// yet is the set's own: updated, not refused — refused, the whole access set was removed and a
// Warning reported until the cache caught up. Someone else's is still refused
// (TestRedTeamCreateOnlyGuard).
func TestSyncGuardOwnWriteTheCacheHasNotSeen(t *testing.T) {
	ctx := context.Background()
	ns := "guard-own-lag"
	c := cacheClient(t, ns)
	filter := desired(efGVK, "api-filter", `{"configPatches":[]}`)
	filter.SetNamespace(ns)
	policy := desired(apGVK, "a-api", `{"action":"ALLOW","rules":[{"from":[{"source":{"principals":["cluster.local/ns/shop/sa/web"]}}]}]}`)
	policy.SetNamespace(ns)
	set := func() *Set {
		st := guardedSet(filter.DeepCopy(), policy.DeepCopy())
		st.Namespace, st.Writer = ns, "access/"+ns+"/api"
		st.ReliesOn, st.Settle, st.Now = "example.io/relies-on", 3*time.Second, time.Now()
		return st
	}
	writes := NewOwnWrites(OwnWritesSize)
	if _, err := (&Syncer{Client: c, FieldManager: "smi2istio", Writes: writes}).Sync(ctx, set()); err != nil {
		t.Fatal(err)
	}
	first, ok := rtGet(t, efGVK, ns, "api-filter")
	if !ok {
		t.Fatal("the first sync did not create the filter")
	}
	lagging := rtLagging(c, interceptor.Funcs{})
	if _, err := (&Syncer{Client: lagging, Reader: c, FieldManager: "smi2istio", Writes: writes}).Sync(ctx, set()); err != nil {
		t.Fatalf("the set's own filter, not yet in the cache: %v", err)
	}
	if now, ok := rtGet(t, efGVK, ns, "api-filter"); !ok || now.GetUID() != first.GetUID() {
		t.Fatalf("the set's own filter was not kept (present %v)", ok)
	}
}

// A guard its check finds, but gone before the creation (its finalizer stripped, deleted by hand):
// the filter created is new, so a policy relying on the old one that the cache does not hold yet
// goes too, as when the check finds it gone.
func TestSyncGuardGoneBetweenCheckAndCreation(t *testing.T) {
	ctx := context.Background()
	ns := "guard-gone-between"
	c := cacheClient(t, ns)
	set := gdSet(ns, "access/"+ns+"/api", time.Now())
	old := set.Objects[0].DeepCopy()
	old.SetFinalizers(nil)
	if err := env.Client.Create(ctx, old); err != nil {
		t.Fatal(err)
	}
	relier := set.Objects[1].DeepCopy() // the set's policy, relying on the old filter, not in the cache
	relier.SetAnnotations(map[string]string{gdRelies: "api-filter"})
	if err := env.Client.Create(ctx, relier); err != nil {
		t.Fatal(err)
	}
	checked := false
	reader := interceptor.NewClient(c, interceptor.Funcs{
		Get: func(ctx context.Context, cl client.WithWatch, key client.ObjectKey, o client.Object, opts ...client.GetOption) error {
			err := cl.Get(ctx, key, o, opts...)
			if !checked && key.Name == "api-filter" { // the check sees it; it is deleted right after
				checked = true
				if derr := env.Client.Delete(ctx, old); derr != nil {
					t.Error(derr)
				}
			}
			return err
		},
	})
	s := &Syncer{Client: rtLagging(c, interceptor.Funcs{}), Reader: reader, FieldManager: "smi2istio", Writes: NewOwnWrites(OwnWritesSize)}
	if _, err := s.Sync(ctx, set); err != nil {
		t.Fatal(err)
	}
	if !checked {
		t.Fatal("the check did not run")
	}
	if f, ok := rtGet(t, efGVK, ns, "api-filter"); !ok || f.GetUID() == old.GetUID() {
		t.Fatalf("no new filter created (present %v)", ok)
	}
	gdNoPolicy(t, ns, "after the filter was created anew")
}

// mustGet reads an object from the test apiserver; it must exist.
func mustGet(t *testing.T, gvk schema.GroupVersionKind, ns, name string) *unstructured.Unstructured {
	t.Helper()
	u, ok := rtGet(t, gvk, ns, name)
	if !ok {
		t.Fatalf("%s %s/%s: not found", gvk.Kind, ns, name)
	}
	return u
}
