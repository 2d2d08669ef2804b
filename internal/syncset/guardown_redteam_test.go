package syncset

// Red team (helper, against the uncommitted change that lets a guard found by the uncached absent
// check go to the generic creation path — createOnly apply, then applyOwn on Conflict — instead of
// ErrExists). Each test tries to make the Syncer write a guard it does not own, or leave a policy
// that relies on a guard in force before that guard has existed for Settle. They pass while the
// property holds.

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

const gdRelies = "example.io/relies-on"

// gdSet is a guarded set of ns: the filter api-filter and the policy a-api relying on it.
func gdSet(ns, writer string, now time.Time) *Set {
	filter := desired(efGVK, "api-filter", `{"configPatches":[]}`)
	filter.SetNamespace(ns)
	policy := desired(apGVK, "a-api", rtSpec)
	policy.SetNamespace(ns)
	st := guardedSet(filter, policy)
	st.Namespace, st.Writer = ns, writer
	st.ReliesOn, st.Settle, st.Now = gdRelies, 3*time.Second, now
	return st
}

// gdFirst syncs gdSet at t0 with s and returns the filter it created, which s's Writes recorded.
func gdFirst(t *testing.T, s *Syncer, ns, writer string, t0 time.Time) *unstructured.Unstructured {
	t.Helper()
	if _, err := s.Sync(context.Background(), gdSet(ns, writer, t0)); err != nil {
		t.Fatal(err)
	}
	ours, ok := rtGet(t, efGVK, ns, "api-filter")
	if !ok || !s.Writes.wrote(writer, ours.GetUID(), ours.GetResourceVersion()) {
		t.Fatal("the first sync did not create and record the filter")
	}
	return ours
}

func gdNoPolicy(t *testing.T, ns, when string) {
	t.Helper()
	if _, ok := rtGet(t, apGVK, ns, "a-api"); ok {
		t.Fatalf("%s: the policy relying on the filter is in force", when)
	}
}

// G1. The set's own latest write of the guard, deleted by a user since (our finalizer holds it:
// terminating, resourceVersion moved), and not in the cache: nothing is written to it, nothing
// relies on it.
func TestRedTeamGuardOwnWriteTerminating(t *testing.T) {
	ctx := context.Background()
	ns := "rt-guardown-terminating"
	c := cacheClient(t, ns)
	writer := "access/" + ns + "/api"
	writes := NewOwnWrites(OwnWritesSize)
	s := &Syncer{Client: c, FieldManager: "smi2istio", Writes: writes}
	t0 := time.Now()
	ours := gdFirst(t, s, ns, writer, t0)
	if err := env.Client.Delete(ctx, ours); err != nil {
		t.Fatal(err)
	}
	before, _ := rtGet(t, efGVK, ns, "api-filter")
	if before.GetDeletionTimestamp() == nil {
		t.Fatal("not terminating")
	}
	// Long after Settle, the same Syncer (it knows when it created the filter), the cache behind.
	lag := &Syncer{Client: rtLagging(c, interceptor.Funcs{}), Reader: c, FieldManager: "smi2istio", Writes: writes}
	lag.since, lag.unrelied = s.since, s.unrelied
	_, err := lag.Sync(ctx, gdSet(ns, writer, t0.Add(time.Minute)))
	if !errors.Is(err, ErrExists) {
		t.Fatalf("over the set's own terminating filter: %v, want %v", err, ErrExists)
	}
	rtUntouched(t, before)
	gdNoPolicy(t, ns, "terminating filter")
	// The cache caught up: Terminating, the set is removed, the filter let go only after Settle.
	s.Writes = writes
	if _, err := s.Sync(ctx, gdSet(ns, writer, t0.Add(time.Minute))); err != nil {
		t.Logf("caught-up sync: %v", err)
	}
	gdNoPolicy(t, ns, "terminating filter, cache caught up")
}

// G2. The set's own latest write, deleted (finalizer removed) and created again by someone else
// exactly as the set wrote it (spec, labels, finalizer): a new UID, someone else's. Not written, and
// nothing relies on it while the cache lags.
func TestRedTeamGuardOwnWriteRecreatedIdentical(t *testing.T) {
	ctx := context.Background()
	ns := "rt-guardown-recreated"
	c := cacheClient(t, ns)
	writer := "access/" + ns + "/api"
	writes := NewOwnWrites(OwnWritesSize)
	s := &Syncer{Client: c, FieldManager: "smi2istio", Writes: writes}
	t0 := time.Now()
	ours := gdFirst(t, s, ns, writer, t0)
	ours.SetFinalizers(nil)
	if err := env.Client.Update(ctx, ours); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Delete(ctx, ours); err != nil {
		t.Fatal(err)
	}
	theirs := ours.DeepCopy()
	theirs.SetResourceVersion("")
	theirs.SetUID("")
	theirs.SetManagedFields(nil)
	theirs.SetCreationTimestamp(ours.GetCreationTimestamp())
	theirs.SetFinalizers([]string{"smi2istio.io/envoy-rung"})
	if err := env.Client.Create(ctx, theirs, client.FieldOwner("someone")); err != nil {
		t.Fatal(err)
	}
	before, _ := rtGet(t, efGVK, ns, "api-filter")
	lag := &Syncer{Client: rtLagging(c, interceptor.Funcs{}), Reader: c, FieldManager: "smi2istio", Writes: writes}
	lag.since, lag.unrelied = s.since, s.unrelied
	_, err := lag.Sync(ctx, gdSet(ns, writer, t0.Add(time.Minute)))
	if !errors.Is(err, ErrExists) {
		t.Fatalf("over someone else's filter recreated in place of ours: %v, want %v", err, ErrExists)
	}
	rtUntouched(t, before)
	gdNoPolicy(t, ns, "someone else's filter")
	// Cleanup: let theirs go.
	before.SetFinalizers(nil)
	_ = env.Client.Update(ctx, before)
}

// G3. Another writer's own write of the same name is not this writer's.
func TestRedTeamGuardOwnWriteOtherWriter(t *testing.T) {
	ctx := context.Background()
	ns := "rt-guardown-writer"
	c := cacheClient(t, ns)
	writes := NewOwnWrites(OwnWritesSize)
	t0 := time.Now()
	if _, err := (&Syncer{Client: c, FieldManager: "smi2istio", Writes: writes}).Sync(ctx, gdSet(ns, "access/"+ns+"/other", t0)); err != nil {
		t.Fatal(err)
	}
	before, _ := rtGet(t, efGVK, ns, "api-filter")
	lag := &Syncer{Client: rtLagging(c, interceptor.Funcs{}), Reader: c, FieldManager: "smi2istio", Writes: writes}
	if _, err := lag.Sync(ctx, gdSet(ns, "access/"+ns+"/api", t0.Add(time.Minute))); !errors.Is(err, ErrExists) {
		t.Fatalf("over another writer's filter: %v, want %v", err, ErrExists)
	}
	rtUntouched(t, before)
	gdNoPolicy(t, ns, "another writer's filter")
}

// G4. Settle across the own-write path: created at t0 (cache behind), applied again as the set's own
// at t0+1s (cache behind), then the cache catches up at t0+2s: the policy waits until t0+Settle;
// the own-write apply neither restarts nor shortens the count.
func TestRedTeamGuardOwnWriteSettle(t *testing.T) {
	ctx := context.Background()
	ns := "rt-guardown-settle"
	c := cacheClient(t, ns)
	writer := "access/" + ns + "/api"
	writes := NewOwnWrites(OwnWritesSize)
	s := &Syncer{Client: rtLagging(c, interceptor.Funcs{}), Reader: c, FieldManager: "smi2istio", Writes: writes}
	t0 := time.Now()
	first := gdFirst(t, s, ns, writer, t0)
	res, err := s.Sync(ctx, gdSet(ns, writer, t0.Add(time.Second)))
	if err != nil {
		t.Fatalf("own write, cache behind: %v", err)
	}
	if !res.Pending() {
		t.Fatalf("own write, cache behind: nothing pending (%+v)", res)
	}
	gdNoPolicy(t, ns, "t0+1s, cache behind")
	s.Client = c
	if _, err = s.Sync(ctx, gdSet(ns, writer, t0.Add(2*time.Second))); err != nil {
		t.Fatal(err)
	}
	gdNoPolicy(t, ns, "t0+2s, cache caught up")
	if res, err = s.Sync(ctx, gdSet(ns, writer, t0.Add(4*time.Second))); err != nil {
		t.Fatal(err)
	}
	if _, ok := rtGet(t, apGVK, ns, "a-api"); !ok {
		t.Fatalf("t0+4s: the policy was not applied (%+v)", res)
	}
	if now, _ := rtGet(t, efGVK, ns, "api-filter"); now.GetUID() != first.GetUID() {
		t.Fatal("the filter was replaced")
	}
}

// G5 (not the change's: the Settle count itself). A guard created late in a slow sync (deletes and
// list before it, a slow apiserver) is counted from the sync's start (Set.Now), not from when it was
// created: the very next sync, started right after, finds it settled and applies the policy while
// the filter is younger than Settle.
func TestRedTeamGuardSettleCountsFromCreation(t *testing.T) {
	ctx := context.Background()
	ns := "rt-guard-settle-slow"
	c := cacheClient(t, ns)
	writer := "access/" + ns + "/api"
	const slow = 3200 * time.Millisecond // > Settle: the apiserver is slow before the creation
	var mu sync.Mutex
	var filterAt, policyAt time.Time
	cl := interceptor.NewClient(c, interceptor.Funcs{
		Patch: func(ctx context.Context, cl client.WithWatch, o client.Object, p client.Patch, opts ...client.PatchOption) error {
			u, _ := o.(*unstructured.Unstructured)
			isEF := u != nil && u.GroupVersionKind() == efGVK && u.GetResourceVersion() == createOnly
			if isEF {
				time.Sleep(slow)
			}
			err := cl.Patch(ctx, o, p, opts...)
			mu.Lock()
			defer mu.Unlock()
			if err == nil && isEF && filterAt.IsZero() {
				filterAt = time.Now()
			}
			if err == nil && u != nil && u.GroupVersionKind() == apGVK && policyAt.IsZero() {
				policyAt = time.Now()
			}
			return err
		},
	})
	s := &Syncer{Client: cl, FieldManager: "smi2istio", Writes: NewOwnWrites(OwnWritesSize)}
	if _, err := s.Sync(ctx, gdSet(ns, writer, time.Now())); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sync(ctx, gdSet(ns, writer, time.Now())); err != nil { // requeued at once (an event)
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !policyAt.IsZero() {
		if age := policyAt.Sub(filterAt); age < 3*time.Second {
			t.Fatalf("the policy relying on the filter was applied %v after the filter was created (Settle 3s)", age)
		}
	}
}
