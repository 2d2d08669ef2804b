package syncset

import (
	"context"
	"errors"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

// repairSyncer is a Syncer on c that counts its deletes: a RepairInPlace set's object is never
// deleted to be written again.
func repairSyncer(c client.WithWatch, deletes *int, patch func(context.Context, client.WithWatch, client.Object, client.Patch, ...client.PatchOption) error) *Syncer {
	return &Syncer{Client: interceptor.NewClient(c, interceptor.Funcs{
		Delete: func(ctx context.Context, cl client.WithWatch, o client.Object, opts ...client.DeleteOption) error {
			*deletes++
			return cl.Delete(ctx, o, opts...)
		},
		Patch: patch,
	}), FieldManager: "smi2istio", Writes: NewOwnWrites(OwnWritesSize)}
}

// repairSet is a set of one AuthorizationPolicy with spec in ns, repaired in place (a baseline's).
func repairSet(ns, spec string) *Set {
	u := desired(apGVK, "baseline", spec)
	u.SetNamespace(ns)
	set := newSet(Keep, u)
	set.Namespace, set.Writer, set.RepairInPlace = ns, "baseline/"+ns, true
	return set
}

// specAsDesired fails unless the live object's spec is the set's.
func specAsDesired(t *testing.T, set *Set, what string) {
	t.Helper()
	want := set.Objects[0]
	live := mustGet(t, apGVK, want.GetNamespace(), want.GetName())
	if same, err := sameSpec(want, live); err != nil || !same {
		t.Fatalf("%s: spec %v, want %v", what, live.Object["spec"], want.Object["spec"])
	}
}

// A rule added by hand to an allow-nothing baseline (another field manager's field: every apply of
// ours keeps it) is written back in place: the same object throughout, never absent, as desired.
func TestRepairInPlaceWritesAWidenedSpecBack(t *testing.T) {
	ctx := context.Background()
	ns := "repair-edit"
	c := cacheClient(t, ns)
	deletes := 0
	s := repairSyncer(c, &deletes, nil)
	set := repairSet(ns, `{}`)
	if _, err := s.Sync(ctx, set); err != nil {
		t.Fatal(err)
	}
	before := mustGet(t, apGVK, ns, "baseline")
	rrEdit(t, ns, `{"spec":{"rules":[{}]}}`)
	if _, err := s.Sync(ctx, set); err != nil {
		t.Fatalf("sync over the widened baseline: %v", err)
	}
	specAsDesired(t, set, "after the sync")
	if after := mustGet(t, apGVK, ns, "baseline"); after.GetUID() != before.GetUID() || deletes != 0 {
		t.Fatalf("the baseline was deleted (%d deletes, uid %s → %s)", deletes, before.GetUID(), after.GetUID())
	}
	// Repaired, it is the set's latest write again: a sync with a cache that lags takes it for its own.
	if _, err := repairSyncerOn(rtLagging(c, interceptor.Funcs{}), s).Sync(ctx, set); err != nil {
		t.Fatalf("sync after the repair, the cache lagging: %v", err)
	}
}

// repairSyncerOn is s on client c (its writes record shared).
func repairSyncerOn(c client.WithWatch, s *Syncer) *Syncer {
	return &Syncer{Client: c, Reader: s.Client, FieldManager: s.FieldManager, Writes: s.Writes}
}

// An admission step that widens the object as it is created (not on update): the creation is
// written back in place at once, no delete.
func TestRepairInPlaceAfterAdmissionWidensTheCreation(t *testing.T) {
	ctx := context.Background()
	ns := "repair-create"
	c := cacheClient(t, ns)
	rtMutateOn(t, ns, "CREATE")
	deletes := 0
	set := repairSet(ns, rtSpec)
	if _, err := repairSyncer(c, &deletes, nil).Sync(ctx, set); err != nil {
		t.Fatalf("sync: %v", err)
	}
	specAsDesired(t, set, "after the creation")
	if live := mustGet(t, apGVK, ns, "baseline"); deletes != 0 || live.GetGeneration() != 2 {
		t.Fatalf("not written back in place: %d deletes, generation %d", deletes, live.GetGeneration())
	}
}

// An admission step that widens it on every write: it is kept (deleting it would allow more than the
// widened one), reported, and every sync after that says so again without deleting it.
func TestRepairInPlaceKeepsWhatAdmissionWidensAgain(t *testing.T) {
	ctx := context.Background()
	ns := "repair-always"
	c := cacheClient(t, ns)
	rtMutateOn(t, ns, "CREATE", "UPDATE")
	deletes := 0
	s := repairSyncer(c, &deletes, nil)
	set := repairSet(ns, rtSpec)
	if _, err := s.Sync(ctx, set); !errors.Is(err, ErrForeignFieldsKept) {
		t.Fatalf("sync: %v, want %v", err, ErrForeignFieldsKept)
	}
	first := mustGet(t, apGVK, ns, "baseline")
	for i := range 2 {
		if _, err := s.Sync(ctx, set); !errors.Is(err, ErrForeignFieldsKept) {
			t.Fatalf("sync %d: %v, want %v", i+2, err, ErrForeignFieldsKept)
		}
	}
	if live := mustGet(t, apGVK, ns, "baseline"); deletes != 0 || live.GetUID() != first.GetUID() {
		t.Fatalf("deleted: %d deletes, uid %s → %s", deletes, first.GetUID(), live.GetUID())
	}
}

// Someone writes the object between the apply and the repair: the repair is conditioned on the
// resourceVersion the apply returned and fails (Conflict, retried); their write stays as written.
func TestRepairInPlaceIsConditionedOnTheResourceVersion(t *testing.T) {
	ctx := context.Background()
	ns := "repair-race"
	c := cacheClient(t, ns)
	deletes := 0
	set := repairSet(ns, `{}`)
	if _, err := repairSyncer(c, &deletes, nil).Sync(ctx, set); err != nil {
		t.Fatal(err)
	}
	live := mustGet(t, apGVK, ns, "baseline")
	rrEdit(t, ns, `{"spec":{"rules":[{}]}}`)
	raced := false
	s := repairSyncer(c, &deletes, func(ctx context.Context, cl client.WithWatch, o client.Object, p client.Patch, opts ...client.PatchOption) error {
		if p.Type() == types.MergePatchType && !raced {
			raced = true
			theirs := mustGet(t, apGVK, ns, "baseline")
			theirs.SetLabels(map[string]string{"someone": "was-here"})
			if err := env.Client.Update(ctx, theirs); err != nil {
				t.Fatal(err)
			}
		}
		return cl.Patch(ctx, o, p, opts...)
	})
	_, err := s.Sync(ctx, set)
	if !raced {
		t.Fatal("no repair was attempted: the race was not run")
	}
	if !apierrors.IsConflict(err) {
		t.Fatalf("sync: %v, want a Conflict", err)
	}
	after := mustGet(t, apGVK, ns, "baseline")
	if after.GetLabels()["someone"] != "was-here" || deletes != 0 || after.GetUID() != live.GetUID() {
		t.Fatalf("their write was overwritten or the object deleted: labels %v, %d deletes", after.GetLabels(), deletes)
	}
}

// A kept object does not stop its set: only sets whose partial state allows no more may repair in
// place. Sync refuses the others before any request.
func TestRepairInPlaceOnlyForKeepSetsWithoutGuards(t *testing.T) {
	remove := repairSet("any", `{}`)
	remove.OnBlocked = Remove
	guarded := repairSet("any", `{}`)
	guarded.Kinds = []Kind{{GVK: efGVK, Guard: true}, {GVK: apGVK}}
	for name, set := range map[string]*Set{"Remove": remove, "Guard kind": guarded} {
		if _, err := (&Syncer{}).Sync(context.Background(), set); err == nil || !strings.Contains(err.Error(), "RepairInPlace") {
			t.Errorf("%s: Sync = %v, want it refused", name, err)
		}
	}
}
