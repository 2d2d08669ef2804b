package syncset

// Red team (helper, against 6fcc9c6: a creation is a forced apply carrying resourceVersion "1"; on
// Conflict, applyOwn updates the set's own recorded write on condition of its UID and
// resourceVersion, else ErrExists; exact deletes any applied object that is not as desired). Each
// test tries to make the Syncer write or delete an object it does not own, or leave in force more
// than the desired set, against the real apiserver. They pass while the property holds.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

const rtSpec = `{"action":"ALLOW","rules":[{"from":[{"source":{"principals":["cluster.local/ns/shop/sa/web"]}}]}]}`

// rtLagging is c whose cache reads hold nothing (the informer has not seen anything yet); other
// calls (writes) go through funcs when set.
func rtLagging(c client.WithWatch, funcs interceptor.Funcs) client.WithWatch {
	funcs.List = func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) error { return nil }
	funcs.Get = func(_ context.Context, _ client.WithWatch, key client.ObjectKey, _ client.Object, _ ...client.GetOption) error {
		return apierrors.NewNotFound(schema.GroupResource{Resource: "any"}, key.Name)
	}
	return interceptor.NewClient(c, funcs)
}

func rtSet(ns, name string) *Set {
	u := desired(apGVK, name, rtSpec)
	u.SetNamespace(ns)
	st := newSet(Remove, u)
	st.Namespace, st.Writer = ns, "access/"+ns+"/"+name
	return st
}

func rtGet(t *testing.T, gvk schema.GroupVersionKind, ns, name string) (*unstructured.Unstructured, bool) {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, u)
	if apierrors.IsNotFound(err) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return u, true
}

// theirs creates, as someone else, an object of the set's name (same spec and labels: nothing but
// its history tells it from the set's), with edit applied first.
func rtTheirs(t *testing.T, set *Set, edit func(*unstructured.Unstructured)) *unstructured.Unstructured {
	t.Helper()
	u := set.Objects[0].DeepCopy()
	if edit != nil {
		edit(u)
	}
	if err := env.Client.Create(context.Background(), u, client.FieldOwner("someone")); err != nil {
		t.Fatal(err)
	}
	got, _ := rtGet(t, u.GroupVersionKind(), u.GetNamespace(), u.GetName())
	return got
}

func rtUntouched(t *testing.T, before *unstructured.Unstructured) {
	t.Helper()
	after, ok := rtGet(t, before.GroupVersionKind(), before.GetNamespace(), before.GetName())
	if !ok {
		t.Fatalf("someone else's %s %s was deleted", before.GetKind(), before.GetName())
	}
	if after.GetUID() != before.GetUID() || after.GetResourceVersion() != before.GetResourceVersion() ||
		fmt.Sprint(after.GetManagedFields()) != fmt.Sprint(before.GetManagedFields()) {
		t.Fatalf("someone else's %s %s was written: rv %s → %s, managed fields %v", before.GetKind(), before.GetName(),
			before.GetResourceVersion(), after.GetResourceVersion(), after.GetManagedFields())
	}
}

// A1. Someone else's object that is being deleted (a finalizer holds it) and that the cache has not
// seen: the creation fails, nothing is written to it (not even its finalizers or labels).
func TestRedTeamCreateOnlyOverTerminatingForeign(t *testing.T) {
	ctx := context.Background()
	ns := "rt-create-terminating"
	c := cacheClient(t, ns)
	set := rtSet(ns, "dying")
	theirs := rtTheirs(t, set, func(u *unstructured.Unstructured) { u.SetFinalizers([]string{"example.com/keep"}) })
	if err := env.Client.Delete(ctx, theirs); err != nil {
		t.Fatal(err)
	}
	before, _ := rtGet(t, apGVK, ns, "dying")
	if before.GetDeletionTimestamp() == nil {
		t.Fatal("not terminating")
	}
	s := &Syncer{Client: rtLagging(c, interceptor.Funcs{}), Reader: c, FieldManager: "smi2istio", Writes: NewOwnWrites(OwnWritesSize)}
	if _, err := s.Sync(ctx, set); !errors.Is(err, ErrExists) {
		t.Fatalf("over a terminating foreign object: %v, want %v", err, ErrExists)
	}
	rtUntouched(t, before)
}

// A2. The set's own write, deleted and created again by someone else exactly as the set wrote it
// (same name, spec, labels) before the cache saw either: the record is of the old UID, so the new
// object is someone else's.
func TestRedTeamCreateOnlyOwnWriteRecreatedBySomeoneElse(t *testing.T) {
	ctx := context.Background()
	ns := "rt-create-recreated"
	c := cacheClient(t, ns)
	writes := NewOwnWrites(OwnWritesSize)
	if _, err := (&Syncer{Client: c, FieldManager: "smi2istio", Writes: writes}).Sync(ctx, rtSet(ns, "api")); err != nil {
		t.Fatal(err)
	}
	ours, _ := rtGet(t, apGVK, ns, "api")
	if err := env.Client.Delete(ctx, ours); err != nil {
		t.Fatal(err)
	}
	before := rtTheirs(t, rtSet(ns, "api"), nil)
	s := &Syncer{Client: rtLagging(c, interceptor.Funcs{}), Reader: c, FieldManager: "smi2istio", Writes: writes}
	if _, err := s.Sync(ctx, rtSet(ns, "api")); !errors.Is(err, ErrExists) {
		t.Fatalf("over someone else's object recreated in place of ours: %v, want %v", err, ErrExists)
	}
	rtUntouched(t, before)
}

// A3. applyOwn's re-apply races: the object read as the set's own write is written, deleted, or
// deleted and created again by someone else between applyOwn's read and its apply. Nothing of
// theirs is written, nothing is created again, and no record is made.
func TestRedTeamApplyOwnRaces(t *testing.T) {
	for _, race := range []string{"written", "deleted", "recreated"} {
		t.Run(race, func(t *testing.T) {
			ctx := context.Background()
			ns := "rt-applyown-" + race
			c := cacheClient(t, ns)
			writes := NewOwnWrites(OwnWritesSize)
			set := func() *Set { return rtSet(ns, "api") }
			if _, err := (&Syncer{Client: c, FieldManager: "smi2istio", Writes: writes}).Sync(ctx, set()); err != nil {
				t.Fatal(err)
			}
			var theirs *unstructured.Unstructured
			once := sync.Once{}
			reader := interceptor.NewClient(c, interceptor.Funcs{
				Get: func(ctx context.Context, cl client.WithWatch, key client.ObjectKey, o client.Object, opts ...client.GetOption) error {
					if err := cl.Get(ctx, key, o, opts...); err != nil {
						return err
					}
					once.Do(func() { // right after applyOwn read the set's own write
						ours, _ := rtGet(t, apGVK, ns, "api")
						switch race {
						case "written":
							ours.SetLabels(map[string]string{"app.kubernetes.io/managed-by": "smi2istio", "smi2istio.io/destination": "api", "by": "hand"})
							ours.SetManagedFields(nil)
							if err := env.Client.Update(ctx, ours, client.FieldOwner("someone")); err != nil {
								t.Error(err)
							}
							theirs, _ = rtGet(t, apGVK, ns, "api")
						case "deleted", "recreated":
							if err := env.Client.Delete(ctx, ours); err != nil {
								t.Error(err)
							}
							if race == "recreated" {
								theirs = rtTheirs(t, set(), nil)
							}
						}
					})
					return nil
				},
			})
			s := &Syncer{Client: rtLagging(c, interceptor.Funcs{}), Reader: reader, FieldManager: "smi2istio", Writes: writes}
			narrower := set()
			narrower.Objects[0].Object["spec"].(map[string]any)["rules"] = []any{map[string]any{"from": []any{map[string]any{"source": map[string]any{"principals": []any{"cluster.local/ns/shop/sa/db"}}}}}}
			_, err := s.Sync(ctx, narrower)
			if err == nil || !apierrors.IsConflict(err) {
				t.Fatalf("re-apply after the race: %v, want a Conflict", err)
			}
			if theirs != nil {
				rtUntouched(t, theirs)
				if writes.wrote(narrower.Writer, theirs.GetUID(), theirs.GetResourceVersion()) {
					t.Fatal("someone else's object is recorded as the set's write")
				}
			} else if u, ok := rtGet(t, apGVK, ns, "api"); ok {
				t.Fatalf("the object deleted meanwhile was created again by the conditional re-apply (uid %s)", u.GetUID())
			}
		})
	}
}

// A4. Guards. (a) Settle/ReliesOn: the guard is absent when checked, someone creates one of its
// name before the creation: ErrExists, theirs untouched. (b) No Settle (no absent check at all,
// and before 6fcc9c6 no check either: the forced apply merged into it): ErrExists, theirs untouched.
func TestRedTeamCreateOnlyGuard(t *testing.T) {
	for _, settle := range []time.Duration{3 * time.Second, 0} {
		t.Run(fmt.Sprint("settle=", settle), func(t *testing.T) {
			ctx := context.Background()
			ns := fmt.Sprintf("rt-guard-%d", settle/time.Second)
			c := cacheClient(t, ns)
			filter := desired(efGVK, "api-filter", `{"configPatches":[]}`)
			filter.SetNamespace(ns)
			policy := desired(apGVK, "a-api", rtSpec)
			policy.SetNamespace(ns)
			set := guardedSet(filter, policy)
			set.Namespace, set.Writer = ns, "access/"+ns+"/api"
			set.ReliesOn, set.Settle, set.Now = "example.io/relies-on", settle, time.Now()
			created := false
			reader := interceptor.NewClient(c, interceptor.Funcs{
				Get: func(ctx context.Context, cl client.WithWatch, key client.ObjectKey, o client.Object, opts ...client.GetOption) error {
					if !created { // the absent check: none yet; someone creates it right after
						created = true
						theirs := filter.DeepCopy()
						theirs.SetFinalizers(nil)
						if err := env.Client.Create(ctx, theirs, client.FieldOwner("someone")); err != nil {
							t.Error(err)
						}
						return apierrors.NewNotFound(schema.GroupResource{Resource: "envoyfilters"}, key.Name)
					}
					return cl.Get(ctx, key, o, opts...)
				},
			})
			if settle == 0 { // no absent check: theirs exists before the sync
				created = true
				theirs := filter.DeepCopy()
				if err := env.Client.Create(ctx, theirs, client.FieldOwner("someone")); err != nil {
					t.Fatal(err)
				}
			}
			var before *unstructured.Unstructured
			s := &Syncer{Client: rtLagging(c, interceptor.Funcs{
				Patch: func(ctx context.Context, cl client.WithWatch, o client.Object, p client.Patch, opts ...client.PatchOption) error {
					if before == nil {
						before, _ = rtGet(t, efGVK, ns, "api-filter")
					}
					return cl.Patch(ctx, o, p, opts...)
				},
			}), Reader: reader, FieldManager: "smi2istio", Writes: NewOwnWrites(OwnWritesSize)}
			_, err := s.Sync(ctx, set)
			if !errors.Is(err, ErrExists) {
				t.Fatalf("creating a guard over someone else's: %v, want %v", err, ErrExists)
			}
			if before == nil {
				t.Fatal("no apply was made: the race was not run")
			}
			rtUntouched(t, before)
			if _, ok := rtGet(t, apGVK, ns, "a-api"); ok {
				t.Fatal("the policy relying on the guard was applied")
			}
		})
	}
}

// A5. Many creations racing someone else's creation of the same object (some hit the apiserver's
// GuaranteedUpdate retry: absent when read, present at the etcd transaction). Whoever wins, an
// object someone else created carries only their write.
func TestRedTeamCreateOnlyRace(t *testing.T) {
	ctx := context.Background()
	ns := "rt-create-race"
	c := cacheClient(t, ns)
	s := &Syncer{Client: rtLagging(c, interceptor.Funcs{}), Reader: c, FieldManager: "smi2istio", Writes: NewOwnWrites(OwnWritesSize)}
	ours, theirs := 0, 0
	for i := range 40 {
		name := fmt.Sprintf("race-%d", i)
		set := rtSet(ns, name)
		var wg sync.WaitGroup
		var createErr error
		var created *unstructured.Unstructured
		wg.Add(1)
		go func() {
			defer wg.Done()
			u := set.Objects[0].DeepCopy()
			u.Object["spec"] = map[string]any{"rules": []any{map[string]any{}}} // allows everything
			if createErr = env.Client.Create(ctx, u, client.FieldOwner("someone")); createErr == nil {
				created = u
			}
		}()
		_, syncErr := s.Sync(ctx, set)
		wg.Wait()
		switch {
		case created != nil:
			theirs++
			if syncErr == nil {
				t.Fatalf("%s: someone else created it, and the sync succeeded over it", name)
			}
			now, _ := rtGet(t, apGVK, ns, name)
			if now.GetResourceVersion() != created.GetResourceVersion() || len(now.GetManagedFields()) != 1 || now.GetManagedFields()[0].Manager != "someone" {
				t.Fatalf("%s: someone else's object was written (rv %s → %s, managed fields %v): %v", name,
					created.GetResourceVersion(), now.GetResourceVersion(), now.GetManagedFields(), syncErr)
			}
		case apierrors.IsAlreadyExists(createErr):
			ours++
			if syncErr != nil {
				t.Fatalf("%s: neither created it: %v, %v", name, syncErr, createErr)
			}
			now, _ := rtGet(t, apGVK, ns, name)
			if mf := now.GetManagedFields(); len(mf) != 1 || mf[0].Manager != "smi2istio" || mf[0].Operation != metav1.ManagedFieldsOperationApply {
				t.Fatalf("%s: created object's managed fields %v", name, mf)
			}
		default:
			t.Fatal(createErr)
		}
	}
	t.Logf("ours %d, theirs %d", ours, theirs)
}

// rtMutateOnCreate installs a MutatingAdmissionPolicy (a mutating webhook's effect, without a
// webhook server) that adds a rule matching every request to each AuthorizationPolicy created in
// ns, and waits until it is in effect. Skips when the API is not served.
func rtMutateOnCreate(t *testing.T, ns string) {
	t.Helper()
	rtMutateOn(t, ns, "CREATE")
}

// rtMutateOn is rtMutateOnCreate for the given operations (CREATE must be one of them).
func rtMutateOn(t *testing.T, ns string, operations ...any) {
	t.Helper()
	ctx := context.Background()
	policy := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicy",
		"metadata": map[string]any{"name": ns},
		"spec": map[string]any{
			"matchConstraints": map[string]any{"resourceRules": []any{map[string]any{
				"apiGroups": []any{"security.istio.io"}, "apiVersions": []any{"*"},
				"operations": operations, "resources": []any{"authorizationpolicies"},
			}}},
			"failurePolicy": "Fail", "reinvocationPolicy": "Never",
			"mutations": []any{map[string]any{"patchType": "JSONPatch", "jsonPatch": map[string]any{
				"expression": `[JSONPatch{op: "add", path: "/spec/rules/-", value: {}}]`,
			}}},
		},
	}}
	if err := env.Client.Create(ctx, policy); err != nil {
		if notServed(err) {
			t.Skipf("MutatingAdmissionPolicy not served: %v", err)
		}
		t.Fatal(err)
	}
	binding := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicyBinding",
		"metadata": map[string]any{"name": ns},
		"spec": map[string]any{"policyName": ns, "matchResources": map[string]any{
			"namespaceSelector": map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": ns}},
		}},
	}}
	if err := env.Client.Create(ctx, binding); err != nil {
		t.Fatal(err)
	}
	probe := rtSet(ns, "probe").Objects[0]
	for deadline := time.Now().Add(20 * time.Second); ; {
		u := probe.DeepCopy()
		// Refused while the admission plugin's mapper has not caught up with the CRD ("Resource kind
		// … not found. There can be a delay …", with failurePolicy Fail): retried.
		err := env.Client.Create(ctx, u, client.DryRunAll)
		if rules, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules"); err == nil && len(rules) == 2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the MutatingAdmissionPolicy is not in effect (%v)", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// notServed reports whether err says the API is not served.
func notServed(err error) bool {
	return apierrors.IsNotFound(err) || strings.Contains(err.Error(), "no matches for kind") ||
		strings.Contains(err.Error(), "could not find the requested resource")
}

// A6. A mutating admission widens the policy as it is created (an empty rule: everything): exact
// must delete it at once (it is the set's: just created), and nothing else in the namespace.
func TestRedTeamCreatedAndWidenedByAdmission(t *testing.T) {
	ctx := context.Background()
	ns := "rt-mutated"
	c := cacheClient(t, ns)
	bystander := rtTheirs(t, rtSet(ns, "bystander"), func(u *unstructured.Unstructured) { u.SetLabels(nil) })
	rtMutateOnCreate(t, ns)
	writes := NewOwnWrites(OwnWritesSize)
	s := &Syncer{Client: rtLagging(c, interceptor.Funcs{}), Reader: c, FieldManager: "smi2istio", Writes: writes}
	set := rtSet(ns, "api")
	if _, err := s.Sync(ctx, set); !errors.Is(err, ErrForeignFields) {
		t.Fatalf("a creation widened by admission: %v, want %v", err, ErrForeignFields)
	}
	if u, ok := rtGet(t, apGVK, ns, "api"); ok {
		t.Fatalf("the widened policy stays (rules %v)", u.Object["spec"])
	}
	rtUntouched(t, bystander)
}

// A7. The same, and between the creation and exact's delete the set's object is replaced by someone
// else's of the same name: the delete is conditioned on the created UID, theirs stays untouched.
func TestRedTeamForeignFieldsDeleteIsUIDConditioned(t *testing.T) {
	ctx := context.Background()
	ns := "rt-mutated-swap"
	c := cacheClient(t, ns)
	rtMutateOnCreate(t, ns)
	var theirs *unstructured.Unstructured
	s := &Syncer{Client: rtLagging(c, interceptor.Funcs{
		Delete: func(ctx context.Context, cl client.WithWatch, o client.Object, opts ...client.DeleteOption) error {
			if theirs == nil {
				ours, _ := rtGet(t, apGVK, ns, o.GetName())
				if err := env.Client.Delete(ctx, ours); err != nil {
					t.Fatal(err)
				}
				theirs = rtTheirs(t, rtSet(ns, o.GetName()), nil)
			}
			return cl.Delete(ctx, o, opts...)
		},
	}), Reader: c, FieldManager: "smi2istio", Writes: NewOwnWrites(OwnWritesSize)}
	_, err := s.Sync(ctx, rtSet(ns, "api"))
	if !errors.Is(err, ErrForeignFields) {
		t.Fatalf("sync: %v, want %v", err, ErrForeignFields)
	}
	if theirs == nil {
		t.Fatal("exact did not delete: the race was not run")
	}
	rtUntouched(t, theirs)
}
