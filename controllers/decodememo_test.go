package controllers

import (
	"testing"

	splitv1alpha4 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/split/v1alpha4"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/smi2istio/smi2istio/internal/smi/normalize"
)

// The memo (here of TrafficTargets) serves one content (UID and resourceVersion) decoded once; another resourceVersion is
// decoded again, an object without either is never remembered, the oldest entry goes first, and an
// unreadable target stays unreadable.
func TestDecodeMemo(t *testing.T) {
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
	m := newDecodeMemo(2, normalize.ReadTrafficTarget)
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
	bad := target("decodememo-test-unreadable", "1", "db") // a UID of its own: destinationKey reads the process-wide memo
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

func mustRead[T any](t *testing.T, m *decodeMemo[T], u *unstructured.Unstructured) any {
	t.Helper()
	tt, err := m.read(u)
	if err != nil {
		t.Fatal(err)
	}
	return tt
}

// The TrafficSplit indexes' memo reads any served version, as normalize does.
func TestSplitMemo(t *testing.T) {
	split := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
		"metadata": map[string]any{"name": "s", "namespace": "ns", "uid": "u", "resourceVersion": "7"},
		"spec":     map[string]any{"service": "web", "backends": []any{map[string]any{"service": "web-v1", "weight": int64(100)}}},
	}}
	m := newDecodeMemo(4, normalize.ReadTrafficSplit)
	first := mustRead(t, m, split)
	if again := mustRead(t, m, split.DeepCopy()); again != first {
		t.Error("the same UID and resourceVersion decoded again")
	}
	want, err := normalize.ReadTrafficSplit(split)
	if err != nil {
		t.Fatal(err)
	}
	if got := first.(*splitv1alpha4.TrafficSplit); got.Spec.Service != want.Spec.Service || len(got.Spec.Backends) != 1 || got.Spec.Backends[0].Weight != want.Spec.Backends[0].Weight {
		t.Errorf("memo read %+v, normalize %+v", got.Spec, want.Spec)
	}
}
