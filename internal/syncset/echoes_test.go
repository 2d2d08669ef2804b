package syncset

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/smi2istio/smi2istio/internal/cache"
)

func TestEchoesRemembersTheLastWriteOfEachObject(t *testing.T) {
	e := NewEchoes(2)
	e.Record("a", "1", "w")
	if w, ok := e.Writer("a", "1"); !ok || w != "w" {
		t.Fatalf("a@1: %q %v, want w", w, ok)
	}
	for _, c := range []struct {
		uid types.UID
		rv  string
	}{{"a", "2"}, {"a", ""}, {"b", "1"}, {"", "1"}} {
		if w, ok := e.Writer(c.uid, c.rv); ok {
			t.Errorf("%s@%s: an echo of %q, but nothing wrote it", c.uid, c.rv, w)
		}
	}
	e.Record("a", "3", "v") // a later write: the earlier one is no echo any more
	if _, ok := e.Writer("a", "1"); ok {
		t.Error("a@1 is still an echo after a@3 was written")
	}
	if w, ok := e.Writer("a", "3"); !ok || w != "v" {
		t.Errorf("a@3: %q %v, want v", w, ok)
	}
	e.Record("b", "4", "w")
	e.Record("c", "5", "w") // the ring holds two: a, the oldest, is forgotten
	if _, ok := e.Writer("a", "3"); ok {
		t.Error("a@3 still remembered after two more objects were written into a memory of two")
	}
	for _, uid := range []types.UID{"b", "c"} {
		if _, ok := e.Writer(uid, map[types.UID]string{"b": "4", "c": "5"}[uid]); !ok {
			t.Errorf("%s forgotten", uid)
		}
	}
	var none *Echoes
	none.Record("a", "1", "w") // a Syncer without Echoes records nothing
	if _, ok := none.Writer("a", "1"); ok {
		t.Error("nil Echoes answered")
	}
	e.Record("d", "6", "") // a set without Echo is not recorded
	if _, ok := e.Writer("d", "6"); ok {
		t.Error("a write without a writer was recorded")
	}

	// While a writer's sync runs, none of its records is an echo; when it ends, only what it
	// applied stays.
	e = NewEchoes(8)
	e.Record("a", "1", "w")
	e.Record("b", "1", "w")
	e.Record("c", "1", "v")
	e.begin("w")
	if _, ok := e.Writer("a", "1"); ok {
		t.Error("a@1 is an echo while its writer's sync runs")
	}
	if _, ok := e.Writer("c", "1"); !ok {
		t.Error("another writer's record stopped counting while w's sync runs")
	}
	e.Record("b", "2", "w")
	e.end("w", map[types.UID]bool{"b": true})
	if _, ok := e.Writer("a", "1"); ok {
		t.Error("a@1, which w's latest sync did not apply, is still w's echo")
	}
	if w, ok := e.Writer("b", "2"); !ok || w != "w" {
		t.Errorf("b@2, applied by w's latest sync: %q %v", w, ok)
	}
	e.begin("w")
	e.end("w", nil) // failed or blocked: nothing stays
	if _, ok := e.Writer("b", "2"); ok {
		t.Error("b@2 is still an echo after w's sync failed")
	}
	if _, ok := e.Writer("c", "1"); !ok {
		t.Error("w's failed sync dropped v's record")
	}
}

// The Syncer records what it applied as the apiserver stored it, under the set's Echo, and only
// objects that exact found as desired: one that took another manager's fields is no echo.
func TestSyncRecordsExactWritesAsEchoes(t *testing.T) {
	ctx := context.Background()
	scheme := kruntime.NewScheme()
	if err := cache.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.NewWithWatch(env.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ns := "echoes"
	if err := env.Client.Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}}); err != nil {
		t.Fatal(err)
	}
	echoes := NewEchoes(EchoesSize)
	s := &Syncer{Client: c, FieldManager: "smi2istio", Echoes: echoes}
	at := func(u *unstructured.Unstructured) *unstructured.Unstructured { u.SetNamespace(ns); return u }
	want := func(spec string) *Set {
		set := newSet(Remove, at(desired(apGVK, "api", spec)))
		set.Namespace, set.Echo = ns, "access/echoes/api"
		return set
	}
	get := func() *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(apGVK)
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "api"}, u); err != nil {
			t.Fatal(err)
		}
		return u
	}
	spec := `{"action":"ALLOW","rules":[{"from":[{"source":{"principals":["cluster.local/ns/shop/sa/web"]}}]}]}`
	if _, err := s.Sync(ctx, want(spec)); err != nil {
		t.Fatal(err)
	}
	stored := get()
	if w, ok := echoes.Writer(stored.GetUID(), stored.GetResourceVersion()); !ok || w != "access/echoes/api" {
		t.Fatalf("the applied policy as stored (rv %s): writer %q %v, want access/echoes/api", stored.GetResourceVersion(), w, ok)
	}

	// Someone else adds a field the set does not write (apply leaves it): that version is not an
	// echo, and the sync that finds it (not exact) records nothing.
	edit := stored.DeepCopy()
	edit.Object["spec"].(map[string]any)["selector"] = map[string]any{"matchLabels": map[string]any{"app": "db"}}
	edit.SetManagedFields(nil)
	if err := env.Client.Update(ctx, edit, client.FieldOwner("someone")); err != nil {
		t.Fatal(err)
	}
	edited := get()
	if _, ok := echoes.Writer(edited.GetUID(), edited.GetResourceVersion()); ok {
		t.Fatal("someone else's edit is taken for an echo")
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
	_, err = s.Sync(ctx, set)
	if !errors.Is(err, ErrForeignFields) {
		t.Fatalf("sync over someone else's field: %v, want %v", err, ErrForeignFields)
	}
	if len(applied) != 1 {
		t.Fatalf("%d applies, want 1", len(applied))
	}
	if w, ok := echoes.Writer(edited.GetUID(), applied[0]); ok {
		t.Fatalf("the apply that kept someone else's field (rv %s) is taken for %q's echo", applied[0], w)
	}
}

// A sync that runs before the cache holds what the set's previous sync created (the cache lags the
// apiserver): the object read from the apiserver stands as the set's own apply stored it, so it is
// the set's and is updated — not refused as someone else's (ErrExists), which reported the
// operator's own object at every bulk apply. Anyone's write since, or another set's record, still
// makes it someone else's.
func TestSyncUpdatesItsOwnWriteTheCacheHasNotSeen(t *testing.T) {
	ctx := context.Background()
	scheme := kruntime.NewScheme()
	if err := cache.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.NewWithWatch(env.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ns := "echoes-lag"
	if err := env.Client.Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}}); err != nil {
		t.Fatal(err)
	}
	// lagging reads nothing from the cache: every object is still to be created as far as it knows.
	lagging := interceptor.NewClient(c, interceptor.Funcs{
		List: func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) error { return nil },
		Get: func(_ context.Context, _ client.WithWatch, key client.ObjectKey, o client.Object, _ ...client.GetOption) error {
			return apierrors.NewNotFound(schema.GroupResource{Resource: "authorizationpolicies"}, key.Name)
		},
	})
	echoes := NewEchoes(EchoesSize)
	spec := `{"action":"ALLOW","rules":[{"from":[{"source":{"principals":["cluster.local/ns/shop/sa/web"]}}]}]}`
	set := func(echo, spec string) *Set {
		u := desired(apGVK, "api", spec)
		u.SetNamespace(ns)
		s := newSet(Remove, u)
		s.Namespace, s.Echo = ns, echo
		return s
	}
	get := func() *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(apGVK)
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "api"}, u); err != nil {
			t.Fatal(err)
		}
		return u
	}
	if _, err := (&Syncer{Client: c, FieldManager: "smi2istio", Echoes: echoes}).Sync(ctx, set("access/echoes-lag/api", spec)); err != nil {
		t.Fatal(err)
	}
	first := get()
	s := &Syncer{Client: lagging, Reader: c, FieldManager: "smi2istio", Echoes: echoes}

	// Another set's record does not make it that set's.
	if _, err := s.Sync(ctx, set("access/echoes-lag/web", spec)); !errors.Is(err, ErrExists) {
		t.Fatalf("another set over the object: %v, want %v", err, ErrExists)
	}
	// The set's own, as stored: updated in place (same object), to the new desired spec.
	narrower := `{"action":"ALLOW","rules":[{"from":[{"source":{"principals":["cluster.local/ns/shop/sa/db"]}}]}]}`
	res, err := s.Sync(ctx, set("access/echoes-lag/api", narrower))
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
	if _, err := s.Sync(ctx, set("access/echoes-lag/api", narrower)); !errors.Is(err, ErrExists) {
		t.Fatalf("after someone else's write: %v, want %v", err, ErrExists)
	}
	if after := get(); after.GetResourceVersion() != edited.GetResourceVersion() {
		t.Fatalf("the object someone else wrote was written over (rv %s → %s)", edited.GetResourceVersion(), after.GetResourceVersion())
	}
}
