package controllers

// Review (of the BaselineWidened / usable-waypoint fixes): the hash the access reconciler reads from
// the cache (cache.Generated's Spec.Hash, computed when the object is decoded) must equal the hash of
// the spec smi2istio renders (cache.SpecHash of the desired object), or every correctly written
// baseline would be reported widened (every TrafficTarget Ready=False, every waypoint unused).

import (
	"encoding/json"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/smi2istio/smi2istio/internal/cache"
	"github.com/smi2istio/smi2istio/internal/syncset"
)

// rvCachedHash decodes obj's JSON as the cache does and returns its spec hash.
func rvCachedHash(t *testing.T, obj map[string]any) string {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	got := cache.New(AuthorizationPolicyGVK)
	if err := json.Unmarshal(raw, got); err != nil {
		t.Fatal(err)
	}
	return got.SpecHash()
}

func TestReviewBaselineHashOfRenderedEqualsCached(t *testing.T) {
	owner := &metav1.OwnerReference{APIVersion: "smi2istio.io/v1alpha1", Kind: "SMI2IstioConfig", Name: "default", UID: "u"}
	set, err := baselineSet("shop", true, owner)
	if err != nil {
		t.Fatal(err)
	}
	want, err := baselineSpec()
	if err != nil {
		t.Fatal(err)
	}
	if got := rvCachedHash(t, set.Objects[0].Object); got != want {
		t.Fatalf("namespace baseline: cached hash %s, desired %s (spec %v): a correct baseline would read as widened", got, want, set.Objects[0].Object["spec"])
	}
	for _, wp := range []string{"waypoint", "wp-2"} {
		wset, err := waypointBaselineSet("shop", []string{wp}, true, owner)
		if err != nil {
			t.Fatal(err)
		}
		want, err := waypointBaselineSpec("shop", wp)
		if err != nil {
			t.Fatal(err)
		}
		if got := rvCachedHash(t, wset.Objects[0].Object); got != want {
			t.Fatalf("waypoint %s: cached hash %s, desired %s (spec %v)", wp, got, want, wset.Objects[0].Object["spec"])
		}
		// Another waypoint's baseline (targetRefs naming another Gateway) is not this one's.
		other, _ := waypointBaselineSpec("shop", wp+"-x")
		if other == want {
			t.Fatalf("waypoint %s: the baseline of another waypoint hashes the same", wp)
		}
	}
	// Fail closed on the edges: a baseline stored without a spec, or with spec null, or with an
	// explicit default (action ALLOW), reads as not smi2istio's spec (never as the one it wrote).
	for name, spec := range map[string]any{"absent": nil, "null": "null", "explicit ALLOW": map[string]any{"action": "ALLOW"}, "empty rules": map[string]any{"rules": []any{}}} {
		obj := map[string]any{"apiVersion": "security.istio.io/v1beta1", "kind": "AuthorizationPolicy", "metadata": map[string]any{"name": BaselineName, "namespace": "shop"}}
		switch spec {
		case nil:
		case "null":
			obj["spec"] = nil
		default:
			obj["spec"] = spec
		}
		if got := rvCachedHash(t, obj); got == want {
			t.Fatalf("%s spec hashes as the desired one", name)
		}
	}
}

// syncset continues past an object it keeps widened (RepairInPlace) and returns
// ErrForeignFieldsKept only after the loop, without removeAll and without the guard bookkeeping: that
// is sound only for sets that are Keep and hold no Guard kind (Set.RepairInPlace's doc). Every
// RepairInPlace set smi2istio builds must be one.
func TestReviewRepairInPlaceSetsAreKeepWithoutGuards(t *testing.T) {
	owner := &metav1.OwnerReference{APIVersion: "smi2istio.io/v1alpha1", Kind: "SMI2IstioConfig", Name: "default", UID: "u"}
	ns, err := baselineSet("shop", true, owner)
	if err != nil {
		t.Fatal(err)
	}
	wp, err := waypointBaselineSet("shop", []string{"waypoint"}, true, owner)
	if err != nil {
		t.Fatal(err)
	}
	for name, set := range map[string]*syncset.Set{"namespace": ns, "waypoints": wp} {
		if !set.RepairInPlace {
			continue
		}
		if set.OnBlocked != syncset.Keep {
			t.Errorf("%s: a RepairInPlace set that is not Keep: a kept object leaves the rest applied", name)
		}
		for _, k := range set.Kinds {
			if k.Guard {
				t.Errorf("%s: a RepairInPlace set with a Guard kind %s", name, k.GVK)
			}
		}
	}
}
