package controllers_test

import (
	"context"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/smi2istio/smi2istio/controllers"
	"github.com/smi2istio/smi2istio/internal/membership"
)

// With a ServiceMeshMemberRoll (OSSM 2.x), the roll's configured members decide where outputs go:
// members [a, b] -> only a and b; adding c to status.configuredMembers adds c; removing b prunes b.
func TestMemberRollDecidesMembership(t *testing.T) {
	ns := [3]string{freshNamespace(t), freshNamespace(t), freshNamespace(t)} // all labelled for injection
	for _, n := range ns {
		applyYAML(t, n, subsetServices)
		applyYAML(t, n, splitYAML("canary", 1, 1))
	}
	for _, n := range ns {
		waitCondition(t, n, "canary", "Ready", "True", controllers.ReasonApplied)
	}

	ensureNamespace(t, "istio-system")
	roll := &unstructured.Unstructured{}
	roll.SetGroupVersionKind(membership.MemberRollGVK)
	roll.SetNamespace("istio-system")
	roll.SetName("default")
	_ = unstructured.SetNestedStringSlice(roll.Object, []string{ns[0], ns[1]}, "spec", "members")
	if err := env.Client.Create(context.Background(), roll); err != nil {
		t.Fatal(err)
	}
	setConfigured := func(members ...string) {
		t.Helper()
		list := make([]any, len(members))
		for i, m := range members {
			list[i] = m
		}
		roll.Object["status"] = map[string]any{"configuredMembers": list,
			"conditions": []any{map[string]any{"type": "Ready", "status": "True", "reason": "Configured", "message": "ok"}}}
		if err := env.Client.Status().Update(context.Background(), roll); err != nil {
			t.Fatal(err)
		}
	}
	setConfigured(ns[0], ns[1])
	waitCondition(t, ns[2], "canary", "Ready", "False", controllers.ReasonNotInMesh)
	waitGone(t, vsObj(), ns[2], "web")
	for _, n := range ns[:2] {
		waitCondition(t, n, "canary", "Ready", "True", controllers.ReasonApplied)
	}

	setConfigured(ns[0], ns[1], ns[2])
	waitCondition(t, ns[2], "canary", "Ready", "True", controllers.ReasonApplied)
	eventually(t, "VirtualService back in "+ns[2], func() error {
		_, err := get(vsObj(), ns[2], "web")
		return err
	})

	setConfigured(ns[0], ns[2])
	waitCondition(t, ns[1], "canary", "Ready", "False", controllers.ReasonNotInMesh)
	waitGone(t, vsObj(), ns[1], "web")
	waitGone(t, drObj(), ns[1], "web")
	if _, err := get(vsObj(), ns[0], "web"); err != nil {
		t.Errorf("a member lost its outputs: %v", err)
	}

	// Without a roll, membership falls back to namespace labels (the other tests rely on it).
	if err := env.Client.Delete(context.Background(), roll); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, ns[1], "canary", "Ready", "True", controllers.ReasonApplied)
}
