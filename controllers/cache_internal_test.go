package controllers

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/smi2istio/smi2istio/translate"
)

func virtualService(labels map[string]string, weight any) *unstructured.Unstructured {
	u := newObj(VirtualServiceGVK)
	u.SetNamespace("bookstore")
	u.SetName("bookstore")
	u.SetLabels(labels)
	u.Object["spec"] = map[string]any{
		"hosts": []any{"bookstore.bookstore.svc.cluster.local"},
		"http": []any{map[string]any{"route": []any{
			map[string]any{"destination": map[string]any{"host": "bookstore", "subset": "v1"}, "weight": weight},
		}}},
	}
	return u
}

// The cache keeps a generated object's hosts and the hash of its live spec: an unchanged spec is
// up to date whatever numeric types decoding gave, a hand edit is not; others' objects stay whole.
func TestGeneratedTransform(t *testing.T) {
	ours := map[string]string{translate.ManagedByLabel: translate.ManagedByValue}
	cached := func(u *unstructured.Unstructured) *unstructured.Unstructured {
		t.Helper()
		out, err := GeneratedTransform(u)
		if err != nil {
			t.Fatal(err)
		}
		return out.(*unstructured.Unstructured)
	}
	want := virtualService(ours, int64(50))
	have := cached(virtualService(ours, float64(50)))
	if spec := have.Object["spec"].(map[string]any); len(spec) != 1 || spec["hosts"] == nil {
		t.Errorf("cached spec: %v, want only the hosts", spec)
	}
	if have.GetAnnotations()[SpecHashAnnotation] == "" {
		t.Fatal("no spec hash in the cached object")
	}
	if !upToDate(want, have) {
		t.Error("the cached copy of the same spec is not up to date")
	}
	if edited := cached(virtualService(ours, int64(60))); upToDate(want, edited) {
		t.Error("a hand-edited spec counts as up to date")
	}
	foreign := cached(virtualService(map[string]string{"app": "x"}, int64(50)))
	if _, ok := foreign.Object["spec"].(map[string]any)["http"]; !ok || foreign.GetAnnotations()[SpecHashAnnotation] != "" {
		t.Errorf("someone else's VirtualService was trimmed: %v", foreign.Object)
	}
}
