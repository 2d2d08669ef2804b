package controllers

import (
	"testing"
	"unsafe"

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

// Decoded objects share one copy of each key and short value once cached.
func TestStripTransformInterns(t *testing.T) {
	decode := func() *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON([]byte(`{"apiVersion":"split.smi-spec.io/v1alpha4","kind":"TrafficSplit",
			"metadata":{"name":"s","namespace":"n","labels":{"app":"bookstore"}},
			"status":{"conditions":[{"type":"Ready","status":"True","reason":"Applied"}]}}`)); err != nil {
			t.Fatal(err)
		}
		if _, err := StripTransform(u); err != nil {
			t.Fatal(err)
		}
		return u
	}
	a, b := decode(), decode()
	keyOf := func(m map[string]any, want string) string {
		for k := range m {
			if k == want {
				return k
			}
		}
		t.Fatalf("no key %q", want)
		return ""
	}
	same := func(what, x, y string) {
		if unsafe.StringData(x) != unsafe.StringData(y) {
			t.Errorf("%s not shared between two cached objects", what)
		}
	}
	same(`key "metadata"`, keyOf(a.Object, "metadata"), keyOf(b.Object, "metadata"))
	same("apiVersion", a.GetAPIVersion(), b.GetAPIVersion())
	same(`label "app"`, a.GetLabels()["app"], b.GetLabels()["app"])
	ca := a.Object["status"].(map[string]any)["conditions"].([]any)[0].(map[string]any)
	cb := b.Object["status"].(map[string]any)["conditions"].([]any)[0].(map[string]any)
	same("condition reason", ca["reason"].(string), cb["reason"].(string))
	same(`condition key "type"`, keyOf(ca, "type"), keyOf(cb, "type"))
}
