package controllers

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
)

// The memo serves one content (UID and resourceVersion) decoded once; another resourceVersion is
// decoded again, an object without either is never remembered, the oldest entry goes first, and an
// unreadable target stays unreadable.
func TestTargetMemo(t *testing.T) {
	target := func(uid, rv, dest string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "access.smi-spec.io/v1alpha3", "kind": "TrafficTarget",
			"metadata": map[string]any{"name": "t", "namespace": "ns"},
			"spec": map[string]any{
				"destination": map[string]any{"kind": "ServiceAccount", "name": dest, "namespace": "ns"},
				"sources":     []any{map[string]any{"kind": "ServiceAccount", "name": "client", "namespace": "ns"}},
				"rules":       []any{map[string]any{"kind": "TCPRoute", "name": "tcp"}},
			},
		}}
		u.SetUID(types.UID(uid))
		u.SetResourceVersion(rv)
		return u
	}
	m := newTargetMemo(2)
	a1, err := m.read(target("a", "1", "db"))
	if err != nil || a1.Spec.Destination.Name != "db" {
		t.Fatalf("read: %+v, %v", a1, err)
	}
	if again, _ := m.read(target("a", "1", "db")); again != a1 {
		t.Error("the same UID and resourceVersion decoded again")
	}
	a2, _ := m.read(target("a", "2", "web"))
	if a2 == a1 || a2.Spec.Destination.Name != "web" {
		t.Errorf("a new resourceVersion served from the memo: %+v", a2)
	}
	if x, y := mustRead(t, m, target("", "1", "db")), mustRead(t, m, target("", "1", "db")); x == y {
		t.Error("an object without a UID remembered")
	}
	_, _ = m.read(target("b", "1", "db")) // a third entry: a/1 goes
	if again, _ := m.read(target("a", "1", "db")); again == a1 {
		t.Error("the oldest entry was not forgotten")
	}
	bad := target("c", "1", "db")
	bad.Object["spec"].(map[string]any)["destination"].(map[string]any)["nameRegex"] = "db.*"
	for range 2 {
		if _, err := m.read(bad); err == nil {
			t.Error("an unknown field read without error")
		}
	}
	if got := destinationKey(bad); got != unreadableTargets {
		t.Errorf("destinationKey of an unreadable target %q, want %q", got, unreadableTargets)
	}
}

func mustRead(t *testing.T, m *targetMemo, u *unstructured.Unstructured) any {
	t.Helper()
	tt, err := m.read(u)
	if err != nil {
		t.Fatal(err)
	}
	return tt
}
