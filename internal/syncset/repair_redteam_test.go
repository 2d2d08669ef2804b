package syncset

// Red team (helper, against the uncommitted RepairInPlace change: exact writes an inexact object of
// a RepairInPlace set back in place with a JSON merge patch from the live spec to the desired one,
// on condition of the resourceVersion the apply returned, and keeps it (ErrForeignFieldsKept) when
// admission widens it again). Each test tries to make the repair write something it must not
// (metadata, someone else's object, a concurrent write), keep a field, or leave in force more than
// the set wants, against the real apiserver. They pass while the property holds.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/smi2istio/smi2istio/internal/cache"
)

// rrSet is a RepairInPlace set (a baseline's) in ns of one AuthorizationPolicy per name, each with
// spec.
func rrSet(ns, spec string, names ...string) *Set {
	var objs []*unstructured.Unstructured
	for _, n := range names {
		u := desired(apGVK, n, spec)
		u.SetNamespace(ns)
		objs = append(objs, u)
	}
	set := newSet(Keep, objs...)
	set.Namespace, set.Writer, set.RepairInPlace = ns, "baseline/"+ns, true
	return set
}

// rrSyncer is a Syncer on c that counts its deletes and hands every merge patch (the repair) to
// onRepair before sending it.
func rrSyncer(c client.WithWatch, deletes *int, onRepair func(ctx context.Context, o client.Object, patch []byte)) *Syncer {
	return &Syncer{Client: interceptor.NewClient(c, interceptor.Funcs{
		Delete: func(ctx context.Context, cl client.WithWatch, o client.Object, opts ...client.DeleteOption) error {
			*deletes++
			return cl.Delete(ctx, o, opts...)
		},
		Patch: func(ctx context.Context, cl client.WithWatch, o client.Object, p client.Patch, opts ...client.PatchOption) error {
			if p.Type() == types.MergePatchType && onRepair != nil {
				data, err := p.Data(o)
				if err != nil {
					return err
				}
				onRepair(ctx, o, data)
			}
			return cl.Patch(ctx, o, p, opts...)
		},
	}), FieldManager: "smi2istio", Writes: NewOwnWrites(OwnWritesSize)}
}

// rrEdit merge-patches the live baseline as field manager kubectl-edit.
func rrEdit(t *testing.T, ns, patch string) {
	t.Helper()
	const name = "baseline"
	live := mustGet(t, apGVK, ns, name)
	if err := env.Client.Patch(context.Background(), live, client.RawPatch(types.MergePatchType, []byte(patch)), client.FieldOwner("kubectl-edit")); err != nil {
		t.Fatalf("edit %s with %s: %v", name, patch, err)
	}
}

// rrSpecIs fails unless the live object's spec is spec (as JSON, semantically).
func rrSpecIs(t *testing.T, ns, name, spec, what string) *unstructured.Unstructured {
	t.Helper()
	live := mustGet(t, apGVK, ns, name)
	var want any
	if err := json.Unmarshal([]byte(spec), &want); err != nil {
		t.Fatal(err)
	}
	w, _ := cache.SpecHash(want)
	g, _ := cache.SpecHash(live.Object["spec"])
	if w != g {
		t.Fatalf("%s: %s spec %v, want %s", what, name, live.Object["spec"], spec)
	}
	return live
}

// rrWiden installs a MutatingAdmissionPolicy bound to namespace ns that applies the JSONPatch
// expression mutation to every AuthorizationPolicy of ns matching the CEL condition match on the
// given operations, and waits until a dry-run creation of probe (spec probeSpec) comes back
// changed. It is removed at the end of the test.
func rrWiden(t *testing.T, ns, match, mutation, probe, probeSpec string, operations ...any) {
	t.Helper()
	ctx := context.Background()
	name := "rr-" + ns
	policy := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicy",
		"metadata": map[string]any{"name": name},
		"spec": map[string]any{
			"matchConstraints": map[string]any{"resourceRules": []any{map[string]any{
				"apiGroups": []any{"security.istio.io"}, "apiVersions": []any{"*"},
				"operations": operations, "resources": []any{"authorizationpolicies"},
			}}},
			"matchConditions": []any{map[string]any{"name": "match", "expression": match}},
			"failurePolicy":   "Fail", "reinvocationPolicy": "Never",
			"mutations": []any{map[string]any{"patchType": "JSONPatch", "jsonPatch": map[string]any{"expression": mutation}}},
		},
	}}
	binding := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicyBinding",
		"metadata": map[string]any{"name": name},
		"spec": map[string]any{"policyName": name, "matchResources": map[string]any{
			"namespaceSelector": map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": ns}},
		}},
	}}
	for _, o := range []*unstructured.Unstructured{policy, binding} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatalf("create %s (the API must be served for this test): %v", o.GetKind(), err)
		}
	}
	t.Cleanup(func() {
		_ = env.Client.Delete(context.Background(), binding)
		_ = env.Client.Delete(context.Background(), policy)
	})
	u := desired(apGVK, probe, probeSpec)
	u.SetNamespace(ns)
	want, _ := cache.SpecHash(u.Object["spec"])
	for deadline := time.Now().Add(30 * time.Second); ; {
		p := u.DeepCopy()
		if err := env.Client.Create(ctx, p, client.DryRunAll); err != nil {
			t.Fatal(err)
		}
		if got, _ := cache.SpecHash(p.Object["spec"]); got != want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the MutatingAdmissionPolicy is not in effect")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// RR1. The repair writes the spec and nothing else: its patch holds the spec and the
// resourceVersion only, and labels, annotations (istio.io/dry-run included), owner references and
// finalizers another writer put on the object stay exactly as they were — the set's labels too.
func TestRepairRedTeamTouchesOnlyTheSpec(t *testing.T) {
	ctx := context.Background()
	ns := "rr-meta"
	c := cacheClient(t, ns)
	deletes := 0
	var patches [][]byte
	var before *unstructured.Unstructured
	s := rrSyncer(c, &deletes, func(ctx context.Context, o client.Object, patch []byte) {
		patches = append(patches, patch)
		before = mustGet(t, apGVK, ns, "baseline")
	})
	set := rrSet(ns, `{}`, "baseline")
	if _, err := s.Sync(ctx, set); err != nil {
		t.Fatal(err)
	}
	rrEdit(t, ns, `{"metadata":{"labels":{"istio.io/rev":"canary","team":"x"},"annotations":{"istio.io/dry-run":"true","note":"hi"},`+
		`"finalizers":["example.com/keep"],"ownerReferences":[{"apiVersion":"v1","kind":"ConfigMap","name":"cm","uid":"00000000-0000-0000-0000-000000000001"}]},`+
		`"spec":{"rules":[{}],"action":"ALLOW"}}`)
	t.Cleanup(func() { rrEdit(t, ns, `{"metadata":{"finalizers":null}}`) })
	if _, err := s.Sync(ctx, set); err != nil {
		t.Fatalf("sync over the widened object: %v", err)
	}
	if len(patches) != 1 {
		t.Fatalf("%d repair patches, want 1", len(patches))
	}
	var patch map[string]any
	if err := json.Unmarshal(patches[0], &patch); err != nil {
		t.Fatal(err)
	}
	meta, _ := patch["metadata"].(map[string]any)
	if len(patch) != 2 || len(meta) != 1 || meta["resourceVersion"] != before.GetResourceVersion() {
		t.Fatalf("the repair patch writes more than the spec, or not on condition of the resourceVersion: %s", patches[0])
	}
	if want := `{"action":null,"rules":null}`; fmt.Sprint(mustJSON(t, patch["spec"])) != want {
		t.Fatalf("repair patch spec %s, want %s", mustJSON(t, patch["spec"]), want)
	}
	after := rrSpecIs(t, ns, "baseline", `{}`, "after the repair")
	if deletes != 0 || after.GetUID() != before.GetUID() {
		t.Fatalf("deleted: %d deletes, uid %s → %s", deletes, before.GetUID(), after.GetUID())
	}
	for what, pair := range map[string][2]any{
		"labels":          {before.GetLabels(), after.GetLabels()},
		"annotations":     {before.GetAnnotations(), after.GetAnnotations()},
		"ownerReferences": {before.GetOwnerReferences(), after.GetOwnerReferences()},
		"finalizers":      {before.GetFinalizers(), after.GetFinalizers()},
	} {
		if !reflect.DeepEqual(pair[0], pair[1]) {
			t.Errorf("the repair changed %s: %v → %v", what, pair[0], pair[1])
		}
	}
	for k, v := range setLabels {
		if after.GetLabels()[k] != v {
			t.Errorf("the set's label %s lost: %v", k, after.GetLabels())
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// RR2. Widenings by another field manager, each of a kind a merge patch could get wrong (a field
// added to an empty spec, the whole spec removed, an enum changed to one that allows more, a list
// the set holds replaced, a nested list of strings added): after one sync the spec is exactly the
// set's, the same object, never deleted, and a second sync writes nothing.
func TestRepairRedTeamMergePatchShapes(t *testing.T) {
	const waypoint = `{"targetRefs":[{"group":"gateway.networking.k8s.io","kind":"Gateway","name":"waypoint"}]}`
	for i, tc := range []struct{ name, spec, edit string }{
		{"rule-on-empty", `{}`, `{"spec":{"rules":[{}]}}`},
		{"spec-removed", `{}`, `{"spec":null}`},
		{"selector-added", `{}`, `{"spec":{"selector":{"matchLabels":{"app":"x"}}}}`},
		{"deny-no-rules", waypoint, `{"spec":{"action":"DENY"}}`},
		{"port-rule", waypoint, `{"spec":{"rules":[{"to":[{"operation":{"ports":["8080"],"paths":["/a","/b"]}}]}]}}`},
		{"targetref-moved", waypoint, `{"spec":{"targetRefs":[{"group":"gateway.networking.k8s.io","kind":"Gateway","name":"other"}]}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			ns := fmt.Sprintf("rr-shape-%d", i)
			c := cacheClient(t, ns)
			deletes := 0
			s := rrSyncer(c, &deletes, nil)
			set := rrSet(ns, tc.spec, "baseline")
			if _, err := s.Sync(ctx, set); err != nil {
				t.Fatal(err)
			}
			first := rrSpecIs(t, ns, "baseline", tc.spec, "created")
			rrEdit(t, ns, tc.edit)
			if _, err := s.Sync(ctx, set); err != nil {
				t.Fatalf("sync over %s: %v", tc.edit, err)
			}
			after := rrSpecIs(t, ns, "baseline", tc.spec, "after the sync")
			if deletes != 0 || after.GetUID() != first.GetUID() {
				t.Fatalf("deleted: %d deletes, uid %s → %s", deletes, first.GetUID(), after.GetUID())
			}
			// The cache (read directly here) holds the repaired object: nothing more to write.
			if res, err := s.Sync(ctx, set); err != nil || res.Wrote() {
				t.Fatalf("a second sync: %v, wrote %v", err, res.Applied)
			}
		})
	}
}

// RR3. Between the apply and the repair the object is replaced by someone else's of the same name
// (widened, without the set's labels), or given someone's finalizer and deleted: the repair,
// conditioned on the resourceVersion the apply returned, writes nothing to either.
func TestRepairRedTeamObjectChangedBeforeTheRepair(t *testing.T) {
	for _, tc := range []struct {
		name string
		swap func(t *testing.T, ns string) *unstructured.Unstructured
	}{
		{"replaced", func(t *testing.T, ns string) *unstructured.Unstructured {
			ours := mustGet(t, apGVK, ns, "baseline")
			if err := env.Client.Delete(context.Background(), ours); err != nil {
				t.Fatal(err)
			}
			return rtTheirs(t, rrSet(ns, `{"rules":[{}]}`, "baseline"), func(u *unstructured.Unstructured) { u.SetLabels(nil) })
		}},
		{"terminating", func(t *testing.T, ns string) *unstructured.Unstructured {
			rrEdit(t, ns, `{"metadata":{"finalizers":["example.com/keep"]}}`)
			if err := env.Client.Delete(context.Background(), mustGet(t, apGVK, ns, "baseline")); err != nil {
				t.Fatal(err)
			}
			return mustGet(t, apGVK, ns, "baseline")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			ns := "rr-swap-" + tc.name
			c := cacheClient(t, ns)
			set := rrSet(ns, `{}`, "baseline")
			deletes := 0
			if _, err := rrSyncer(c, &deletes, nil).Sync(ctx, set); err != nil {
				t.Fatal(err)
			}
			rrEdit(t, ns, `{"spec":{"rules":[{}]}}`)
			var theirs *unstructured.Unstructured
			s := rrSyncer(c, &deletes, func(ctx context.Context, o client.Object, patch []byte) {
				if theirs == nil {
					theirs = tc.swap(t, ns)
				}
			})
			_, err := s.Sync(ctx, set)
			if theirs == nil {
				t.Fatal("no repair was attempted: the race was not run")
			}
			if err == nil {
				t.Fatal("the repair succeeded over an object written since the apply")
			}
			rtUntouched(t, theirs)
			if deletes != 0 {
				t.Fatalf("%d deletes", deletes)
			}
			if tc.name == "terminating" {
				rrEdit(t, ns, `{"metadata":{"finalizers":null}}`)
			}
		})
	}
}

// RR4. A repair writes values under an Update entry of the field manager (an admission step widened
// the list the set holds as it was created; the repair writes the set's list back): when the set
// later stops wanting that field, no apply can remove it — the sync must still leave the spec
// exactly as desired, in place.
func TestRepairRedTeamRepairOwnedFieldsDoNotStick(t *testing.T) {
	ctx := context.Background()
	ns := "rr-owned"
	c := cacheClient(t, ns)
	rtMutateOn(t, ns, "CREATE")
	deletes := 0
	s := rrSyncer(c, &deletes, nil)
	if _, err := s.Sync(ctx, rrSet(ns, rtSpec, "baseline")); err != nil {
		t.Fatalf("sync: %v", err)
	}
	first := rrSpecIs(t, ns, "baseline", rtSpec, "repaired after the creation")
	var owners []string
	for _, mf := range first.GetManagedFields() {
		owners = append(owners, mf.Manager+"/"+string(mf.Operation))
	}
	t.Logf("managed fields after the repair: %v", owners)
	if _, err := s.Sync(ctx, rrSet(ns, `{}`, "baseline")); err != nil {
		t.Fatalf("sync to allow nothing: %v", err)
	}
	after := rrSpecIs(t, ns, "baseline", `{}`, "after the set stopped wanting the rule")
	if deletes != 0 || after.GetUID() != first.GetUID() {
		t.Fatalf("deleted: %d deletes, uid %s → %s", deletes, first.GetUID(), after.GetUID())
	}
}

// RR5. An admission step widens one object of a RepairInPlace set on every write (the first of a
// namespace's waypoints): it is kept and reported — and the set's other objects (the other
// waypoints' allow-nothing policies) must still be written. They are not, while the first one
// stays widened: each waypoint after it is open for good.
func TestRepairRedTeamKeptObjectDoesNotBlockTheRest(t *testing.T) {
	ctx := context.Background()
	ns := "rr-siblings"
	c := cacheClient(t, ns)
	rrWiden(t, ns, `object.metadata.name == "wp-a"`, `[JSONPatch{op: "add", path: "/spec", value: {"rules": [{}]}}]`, "wp-a", `{}`, "CREATE", "UPDATE")
	deletes := 0
	s := rrSyncer(c, &deletes, nil)
	set := rrSet(ns, `{}`, "wp-a", "wp-b")
	if _, err := s.Sync(ctx, set); !errors.Is(err, ErrForeignFieldsKept) {
		t.Fatalf("sync: %v, want %v", err, ErrForeignFieldsKept)
	}
	if deletes != 0 {
		t.Fatalf("%d deletes", deletes)
	}
	if _, ok := rtGet(t, apGVK, ns, "wp-b"); !ok {
		t.Fatal("HOLE: the allow-nothing policy wp-b was never written because wp-a is kept widened (the sync returns at ErrForeignFieldsKept): what wp-b closes stays open for as long as wp-a is widened")
	}
	rrSpecIs(t, ns, "wp-b", `{}`, "the sibling")
}

// RR6. Someone else's object of the set's name (its labels, widened), created before the cache saw
// it: the creation fails and nothing repairs it (RepairInPlace only ever writes the set's own).
func TestRepairRedTeamNeverRepairsAForeignObject(t *testing.T) {
	ctx := context.Background()
	ns := "rr-foreign"
	c := cacheClient(t, ns)
	theirs := rtTheirs(t, rrSet(ns, `{"rules":[{}]}`, "baseline"), nil) // the set's labels, someone else's object
	deletes := 0
	repaired := false
	s := &Syncer{Client: rtLagging(c, interceptor.Funcs{
		Patch: func(ctx context.Context, cl client.WithWatch, o client.Object, p client.Patch, opts ...client.PatchOption) error {
			repaired = repaired || p.Type() == types.MergePatchType
			return cl.Patch(ctx, o, p, opts...)
		},
		Delete: func(ctx context.Context, cl client.WithWatch, o client.Object, opts ...client.DeleteOption) error {
			deletes++
			return cl.Delete(ctx, o, opts...)
		},
	}), Reader: c, FieldManager: "smi2istio", Writes: NewOwnWrites(OwnWritesSize)}
	_, err := s.Sync(ctx, rrSet(ns, `{}`, "baseline"))
	if !errors.Is(err, ErrExists) {
		t.Fatalf("sync over someone else's object the cache has not seen: %v, want %v", err, ErrExists)
	}
	if repaired || deletes != 0 {
		t.Fatalf("someone else's object was repaired (%v) or deleted (%d)", repaired, deletes)
	}
	rtUntouched(t, theirs)
}
