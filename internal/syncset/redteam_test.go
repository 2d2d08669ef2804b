package syncset

// Red team of Diff: plans that leave in force more than the desired set allows, or that can never
// finish. They fail until Diff is fixed.

import (
	"encoding/json"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// A live ALLOW policy whose desired spec is narrower (here: its ports-only TCP rule is gone) while
// a new guard appears in the same sync: withhold moves the policy's update to Withheld and nothing
// removes the live one, so the revoked rule stays in force for the whole Settle. Settle is meant to
// delay allows and releases, never a revocation (docs/decisions.md): a withheld update of a live
// PruneFirst object must at least take the live object away meanwhile.
func TestRedTeamSettleWithholdsRevocation(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	set := guardedSet(ef, ap)
	set.ReliesOn, set.Settle, set.Now = "example.io/relies-on", 3*time.Second, now
	wide := live(t, ap, func(u *unstructured.Unstructured) {
		var spec any
		_ = json.Unmarshal([]byte(`{"rules":[{"from":[{"source":{"principals":["cluster.local/ns/shop/sa/web"]}}],"to":[{"operation":{"ports":["5432"]}}]}]}`), &spec)
		u.Object["spec"] = spec
	})
	plan := Diff(set, liveSet(wide), nil)
	if plan.Blocked() {
		t.Fatalf("blocked: %v", plan.Problems)
	}
	updated := false
	for _, u := range plan.Apply {
		updated = updated || (u.GetKind() == "AuthorizationPolicy" && u.GetName() == "a-api")
	}
	pruned := false
	for _, o := range plan.PruneFirst {
		pruned = pruned || o.GetName() == "a-api"
	}
	if !updated && !pruned {
		t.Errorf("hole: the live policy a-api (allows web on TCP 5432, no longer desired) is neither updated nor pruned: apply %q, prune first %q, withheld %q for %s",
			names(plan.Apply), names(plan.PruneFirst), names(plan.Withheld), plan.Wait)
	}
}

// The set held a guard and no longer does (its last Envoy-rung TrafficTarget went); another
// TrafficTarget's policy is unchanged in spec but still carries the relies-on annotation naming the
// old guard. UpToDate ignores annotations the desired object does not carry, so the policy is never
// re-applied, the annotation never goes, and the guard's release (which finds the set's own policy
// relying on it: ErrRelied) is retried for ever.
func TestRedTeamStaleReliesOnNeverCleared(t *testing.T) {
	set := guardedSet(ap) // the guard is no longer desired
	set.ReliesOn = "example.io/relies-on"
	stale := live(t, ap, func(u *unstructured.Unstructured) {
		u.SetAnnotations(map[string]string{set.ReliesOn: "api-filter"})
	})
	guard := live(t, ef, func(u *unstructured.Unstructured) { u.SetFinalizers([]string{"smi2istio.io/envoy-rung"}) })
	plan := Diff(set, liveSet(stale, guard), nil)
	if names(plan.Release) != "api-filter" {
		t.Fatalf("release %q, want the guard", names(plan.Release))
	}
	if Relies(stale, set.ReliesOn, "api-filter") && names(plan.Apply) != "a-api" {
		t.Errorf("the set's policy keeps naming the released guard (apply %q, unchanged %d): the release can never happen", names(plan.Apply), plan.Unchanged)
	}
}
