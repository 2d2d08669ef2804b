package syncset

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/smi2istio/smi2istio/internal/cache"
)

var (
	efGVK = cache.EnvoyFilter{}.GVK()
	apGVK = cache.AuthorizationPolicy{}.GVK()
	paGVK = cache.PeerAuthentication{}.GVK()
)

var setLabels = map[string]string{"app.kubernetes.io/managed-by": "smi2istio", "smi2istio.io/destination": "api"}

func newSet(onBlocked OnBlocked, objs ...*unstructured.Unstructured) *Set {
	return &Set{
		Namespace:  "shop",
		Kinds:      []Kind{{GVK: efGVK}, {GVK: paGVK}, {GVK: apGVK, PruneFirst: true}},
		Labels:     setLabels,
		OwnerKinds: []string{"TrafficTarget"},
		Objects:    objs,
		OnBlocked:  onBlocked,
	}
}

func owner(kind, name string) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: "v1", Kind: kind, Name: name, UID: types.UID("uid-" + name), Controller: ptr.To(true)}
}

// desired renders a desired object of the set.
func desired(gvk schema.GroupVersionKind, name, spec string, owners ...metav1.OwnerReference) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{}}
	u.SetGroupVersionKind(gvk)
	u.SetNamespace("shop")
	u.SetName(name)
	u.SetLabels(setLabels)
	u.SetOwnerReferences(owners)
	var s any
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		panic(err)
	}
	u.Object["spec"] = s
	return u
}

// live is the cached form of an object as the apiserver would hold it.
func live(t *testing.T, u *unstructured.Unstructured, edit func(*unstructured.Unstructured)) cache.Object {
	t.Helper()
	u = u.DeepCopy()
	u.SetUID(types.UID("live-" + u.GetName()))
	if edit != nil {
		edit(u)
	}
	raw, err := u.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	o, err := cache.NewFor(u.GroupVersionKind())
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, o); err != nil {
		t.Fatal(err)
	}
	return o
}

func liveSet(objs ...cache.Object) map[schema.GroupVersionKind][]cache.Object {
	out := map[schema.GroupVersionKind][]cache.Object{}
	for _, o := range objs {
		out[o.DefaultGVK()] = append(out[o.DefaultGVK()], o)
	}
	return out
}

func names[T interface{ GetName() string }](xs []T) string {
	var out []string
	for _, x := range xs {
		out = append(out, x.GetName())
	}
	return strings.Join(out, ",")
}

var (
	ttA = owner("TrafficTarget", "a")
	ef  = desired(efGVK, "api-filter", `{"configPatches":[]}`, ttA)
	pa  = desired(paGVK, "a-api", `{"mtls":{"mode":"STRICT"}}`, ttA)
	ap  = desired(apGVK, "a-api", `{"rules":[{"from":[{"source":{"principals":["cluster.local/ns/shop/sa/web"]}}]}]}`, ttA)
)

// Objects are applied in the set's kind order whatever order they come in: the filter first.
func TestDiffAppliesInKindOrder(t *testing.T) {
	plan := Diff(newSet(Remove, ap, pa, ef), nil, nil)
	if got := names(plan.Apply); got != "api-filter,a-api,a-api" || plan.Apply[0].GetKind() != "EnvoyFilter" || plan.Apply[2].GetKind() != "AuthorizationPolicy" {
		t.Errorf("apply order = %s (%v, %v), want the EnvoyFilter, then the PeerAuthentication, then the AuthorizationPolicy", got, plan.Apply[0].GetKind(), plan.Apply[2].GetKind())
	}
	if plan.Blocked() || len(plan.Prune)+len(plan.PruneFirst) != 0 {
		t.Errorf("unexpected plan %+v", plan)
	}
}

// Nothing is written for objects the live set already holds.
func TestDiffUnchanged(t *testing.T) {
	plan := Diff(newSet(Remove, ef, pa, ap), liveSet(live(t, ef, nil), live(t, pa, nil), live(t, ap, nil)), nil)
	if len(plan.Apply)+len(plan.Prune)+len(plan.PruneFirst) != 0 || plan.Unchanged != 3 {
		t.Errorf("an up-to-date set writes: %+v", plan)
	}
	edited := live(t, ap, func(u *unstructured.Unstructured) { u.Object["spec"] = map[string]any{} })
	plan = Diff(newSet(Remove, ef, pa, ap), liveSet(live(t, ef, nil), live(t, pa, nil), edited), nil)
	if names(plan.Apply) != "a-api" || plan.Apply[0].GetKind() != "AuthorizationPolicy" {
		t.Errorf("a hand-edited policy is not re-applied: %+v", plan.Apply)
	}
}

// Pruning is a diff: the set's stale objects go, ALLOW policies before anything is applied, the
// filter last; objects of other sets or not ours stay.
func TestDiffPrunes(t *testing.T) {
	staleAP := live(t, desired(apGVK, "old-api", `{}`, owner("TrafficTarget", "old")), nil)
	staleEF := live(t, desired(efGVK, "old-filter", `{}`), nil)
	foreign := live(t, desired(apGVK, "users", `{}`), func(u *unstructured.Unstructured) { u.SetLabels(nil) })
	otherController := live(t, desired(apGVK, "by-deployment", `{}`, owner("Deployment", "x")), nil)
	plan := Diff(newSet(Remove, pa), liveSet(staleAP, staleEF, foreign, otherController, live(t, pa, nil)), nil)
	if names(plan.PruneFirst) != "old-api" || names(plan.Prune) != "old-filter" {
		t.Errorf("prune first %q then %q, want old-api then old-filter", names(plan.PruneFirst), names(plan.Prune))
	}
}

// One object that is not ours blocks the whole set: nothing is applied, and a Remove set's live
// objects are deleted (policies first) while a Keep set's stay.
func TestDiffConflictBlocksTheSet(t *testing.T) {
	users := live(t, ap, func(u *unstructured.Unstructured) { u.SetLabels(map[string]string{"team": "x"}) })
	livePA, liveEF := live(t, pa, nil), live(t, ef, nil)
	plan := Diff(newSet(Remove, ef, pa, ap), liveSet(users, livePA, liveEF), nil)
	if !plan.Blocked() || plan.Problems[0].Reason != ReasonConflict || plan.Problems[0].Object.Name != "a-api" {
		t.Fatalf("problems = %+v, want a conflict on a-api", plan.Problems)
	}
	if len(plan.Apply) != 0 {
		t.Errorf("a blocked set applies %s", names(plan.Apply))
	}
	if names(plan.Prune) != "a-api,api-filter" || len(plan.PruneFirst) != 0 {
		t.Errorf("a blocked Remove set prunes %q/%q, want its PeerAuthentication then its EnvoyFilter, never the user's policy", names(plan.PruneFirst), names(plan.Prune))
	}
	plan = Diff(newSet(Keep, ef, pa, ap), liveSet(users, livePA, liveEF), nil)
	if !plan.Blocked() || len(plan.Apply)+len(plan.Prune)+len(plan.PruneFirst) != 0 {
		t.Errorf("a blocked Keep set writes: %+v", plan)
	}
}

// An invalid object blocks its set like a conflict; so does a blocker found before the sync.
func TestDiffInvalidBlocksTheSet(t *testing.T) {
	validate := func(u *unstructured.Unstructured) error {
		if u.GetKind() == "EnvoyFilter" {
			return fmt.Errorf("empty regex")
		}
		return nil
	}
	plan := Diff(newSet(Remove, ef, pa, ap), liveSet(live(t, ap, nil)), validate)
	if !plan.Blocked() || plan.Problems[0].Reason != ReasonInvalidOutput || len(plan.Apply) != 0 {
		t.Fatalf("plan = %+v, want the invalid filter to block everything", plan)
	}
	if names(plan.PruneFirst) != "a-api" {
		t.Errorf("the live widened policy must go when its filter cannot be written: pruned first %q", names(plan.PruneFirst))
	}
	set := newSet(Keep, ap)
	set.Blockers = []Problem{{Reason: ReasonConflict, Message: "someone else's"}}
	if plan := Diff(set, nil, nil); !plan.Blocked() || len(plan.Apply) != 0 {
		t.Errorf("a blocker does not block: %+v", plan)
	}
}

// A desired object must carry the set's labels and be of its kinds and namespace.
func TestDiffRefusesObjectsOutsideTheSet(t *testing.T) {
	unlabelled := ap.DeepCopy()
	unlabelled.SetLabels(nil)
	elsewhere := pa.DeepCopy()
	elsewhere.SetNamespace("other")
	for _, o := range []*unstructured.Unstructured{unlabelled, elsewhere} {
		if plan := Diff(newSet(Remove, ef, o), nil, nil); !plan.Blocked() || len(plan.Apply) != 0 {
			t.Errorf("%s %s/%s is applied: %+v", o.GetKind(), o.GetNamespace(), o.GetName(), plan)
		}
	}
}

// A terminating object of the set's name blocks until it is gone.
func TestDiffWaitsForTerminating(t *testing.T) {
	now := metav1.Now()
	dying := live(t, ef, func(u *unstructured.Unstructured) { u.SetDeletionTimestamp(&now) })
	plan := Diff(newSet(Remove, ef, ap), liveSet(dying), nil)
	if p := plan.Problems; len(p) != 1 || p[0].Reason != ReasonTerminating || len(plan.Apply) != 0 {
		t.Errorf("plan = %+v, want to wait for the terminating filter", plan)
	}
}

func guardedSet(objs ...*unstructured.Unstructured) *Set {
	set := newSet(Remove, objs...)
	set.Kinds = []Kind{{GVK: efGVK, Guard: true}, {GVK: paGVK}, {GVK: apGVK, PruneFirst: true}}
	set.Finalizer = "smi2istio.io/envoy-rung"
	return set
}

// A guarded object carries the set's finalizer; it is let go only when it is pruned or deleted
// by someone else, after the policies relying on it.
func TestDiffGuard(t *testing.T) {
	plan := Diff(guardedSet(ef, ap), nil, nil)
	if f := plan.Apply[0].GetFinalizers(); len(f) != 1 || f[0] != "smi2istio.io/envoy-rung" {
		t.Fatalf("the filter is applied with finalizers %v", f)
	}
	if len(ef.GetFinalizers()) != 0 {
		t.Error("Diff modified the desired object")
	}
	guarded := func(edit func(*unstructured.Unstructured)) cache.Object {
		return live(t, ef, func(u *unstructured.Unstructured) {
			u.SetFinalizers([]string{"smi2istio.io/envoy-rung"})
			if edit != nil {
				edit(u)
			}
		})
	}
	plan = Diff(guardedSet(ef, ap), liveSet(guarded(nil), live(t, ap, nil)), nil)
	if len(plan.Release)+len(plan.Apply)+len(plan.Prune)+len(plan.PruneFirst) != 0 {
		t.Errorf("a desired, live filter is touched: %+v", plan)
	}
	// No longer desired: the widened policy goes first, the filter is pruned and let go.
	plan = Diff(guardedSet(), liveSet(guarded(nil), live(t, ap, nil)), nil)
	if names(plan.PruneFirst) != "a-api" || names(plan.Prune) != "api-filter" || names(plan.Release) != "api-filter" {
		t.Errorf("prune first %q, prune %q, release %q", names(plan.PruneFirst), names(plan.Prune), names(plan.Release))
	}
	// Deleted by the garbage collector while still desired: the set is removed, the filter let go
	// after its policies, and written again on the next sync.
	now := metav1.Now()
	plan = Diff(guardedSet(ef, ap), liveSet(guarded(func(u *unstructured.Unstructured) { u.SetDeletionTimestamp(&now) }), live(t, ap, nil)), nil)
	if !plan.Blocked() || names(plan.PruneFirst) != "a-api" || names(plan.Release) != "api-filter" || len(plan.Apply) != 0 {
		t.Errorf("plan = %+v, want the policy pruned and the terminating filter released", plan)
	}
}

// The objects after a guard name the guards they rely on; without a desired guard they name none.
func TestDiffStampsReliance(t *testing.T) {
	set := guardedSet(ef, pa, ap)
	set.ReliesOn = "example.io/relies-on"
	plan := Diff(set, nil, nil)
	got := map[string]string{}
	for _, u := range plan.Apply {
		got[u.GetKind()] = u.GetAnnotations()[set.ReliesOn]
	}
	if got["EnvoyFilter"] != "" || got["PeerAuthentication"] != "api-filter" || got["AuthorizationPolicy"] != "api-filter" {
		t.Errorf("relies-on annotations by kind = %v", got)
	}
	if len(ap.GetAnnotations()) != 0 {
		t.Error("Diff modified the desired object")
	}
	if !Relies(plan.Apply[2], set.ReliesOn, "api-filter") || Relies(plan.Apply[2], set.ReliesOn, "api") {
		t.Error("Relies does not read the annotation as a list of names")
	}
	set = guardedSet(pa, ap)
	set.ReliesOn = "example.io/relies-on"
	for _, u := range Diff(set, nil, nil).Apply {
		if _, ok := u.GetAnnotations()[set.ReliesOn]; ok {
			t.Errorf("%s relies on a guard the set does not hold", u.GetKind())
		}
	}
	// A live policy that lacks the annotation is brought up to date.
	set = guardedSet(ef, ap)
	set.ReliesOn = "example.io/relies-on"
	plan = Diff(set, liveSet(live(t, ef, func(u *unstructured.Unstructured) { u.SetFinalizers([]string{"smi2istio.io/envoy-rung"}) }), live(t, ap, nil)), nil)
	if names(plan.Apply) != "a-api" {
		t.Errorf("apply %q, want the policy re-applied with its annotation", names(plan.Apply))
	}
}

// Objects relying on a guard wait until every desired guard has existed for the set's Settle.
func TestDiffSettles(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	settled := func() *Set {
		set := guardedSet(ef, pa, ap)
		set.Settle, set.Now = 3*time.Second, now
		return set
	}
	createdAgo := func(age time.Duration) cache.Object {
		return live(t, ef, func(u *unstructured.Unstructured) {
			u.SetFinalizers([]string{"smi2istio.io/envoy-rung"})
			u.SetCreationTimestamp(metav1.NewTime(now.Add(-age)))
		})
	}
	plan := Diff(settled(), nil, nil)
	if names(plan.Apply) != "api-filter" || names(plan.Withheld) != "a-api,a-api" || plan.Wait != 3*time.Second {
		t.Errorf("new filter: apply %q, withheld %q, wait %s", names(plan.Apply), names(plan.Withheld), plan.Wait)
	}
	since := func(age time.Duration) *Set {
		set := settled()
		set.GuardSince = map[types.UID]time.Time{"live-api-filter": now.Add(-age)}
		return set
	}
	// The apiserver's creationTimestamp alone is not trusted (whole seconds, another clock).
	plan = Diff(settled(), liveSet(createdAgo(time.Hour)), nil)
	if len(plan.Apply) != 0 || plan.Wait != 3*time.Second {
		t.Errorf("unknown filter: apply %q, wait %s", names(plan.Apply), plan.Wait)
	}
	plan = Diff(since(time.Second), liveSet(createdAgo(time.Second)), nil)
	if len(plan.Apply) != 0 || names(plan.Withheld) != "a-api,a-api" || plan.Wait != 2*time.Second {
		t.Errorf("young filter: apply %q, withheld %q, wait %s", names(plan.Apply), names(plan.Withheld), plan.Wait)
	}
	plan = Diff(since(5*time.Second), liveSet(createdAgo(5*time.Second)), nil)
	if names(plan.Apply) != "a-api,a-api" || len(plan.Withheld) != 0 || plan.Wait != 0 {
		t.Errorf("settled filter: apply %q, withheld %q, wait %s", names(plan.Apply), names(plan.Withheld), plan.Wait)
	}
	// Without a guard nothing waits.
	set := newSet(Remove, pa, ap)
	set.Settle, set.Now = 3*time.Second, now
	if plan = Diff(set, nil, nil); len(plan.Apply) != 2 || plan.Wait != 0 {
		t.Errorf("no guard: apply %q, wait %s", names(plan.Apply), plan.Wait)
	}
}
