package controllers

import (
	"strings"
	"testing"
	"unsafe"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"

	"github.com/smi2istio/smi2istio/internal/cached"
	"github.com/smi2istio/smi2istio/internal/syncset"
)

// virtualService is a generated VirtualService as JSON (the weight as written).
func virtualService(labels string, weight string) string {
	return `{"apiVersion":"networking.istio.io/v1beta1","kind":"VirtualService","metadata":{"name":"bookstore","namespace":"bookstore",
		"labels":` + labels + `,"ownerReferences":[{"apiVersion":"split.smi-spec.io/v1alpha4","kind":"TrafficSplit","name":"s","uid":"u1","controller":true,"blockOwnerDeletion":true}]},
		"spec":{"hosts":["bookstore.bookstore.svc.cluster.local"],"http":[{"route":[{"destination":{"host":"bookstore","subset":"v1"},"weight":` + weight + `}]}]}}`
}

// cachedObject decodes JSON as the cache's informer does and runs the cache's transform on it.
func cachedObject(t *testing.T, doc string) cached.Object {
	t.Helper()
	s := runtime.NewScheme()
	if err := AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	obj, _, err := serializer.NewCodecFactory(s).UniversalDeserializer().Decode([]byte(doc), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := CacheOptions().DefaultTransform(obj)
	if err != nil {
		t.Fatal(err)
	}
	return out.(cached.Object)
}

// A cached generated object is up to date with the spec, labels and owners the operator renders
// (weights as int64), whatever the JSON numbers; a hand edit of the spec or a lost label is not.
func TestUpToDate(t *testing.T) {
	const ours = `{"app.kubernetes.io/managed-by":"smi2istio"}`
	want := &unstructured.Unstructured{}
	if err := want.UnmarshalJSON([]byte(virtualService(ours, "50"))); err != nil {
		t.Fatal(err)
	}
	route := want.Object["spec"].(map[string]any)["http"].([]any)[0].(map[string]any)["route"].([]any)[0].(map[string]any)
	route["weight"] = int64(50)
	if !syncset.UpToDate(want, cachedObject(t, virtualService(ours, "50"))) {
		t.Error("the cached copy of the same object is not up to date")
	}
	if !syncset.UpToDate(want, cachedObject(t, virtualService(ours, "50.0"))) {
		t.Error("a weight written 50.0 is not up to date with 50")
	}
	if syncset.UpToDate(want, cachedObject(t, virtualService(ours, "60"))) {
		t.Error("a hand-edited spec counts as up to date")
	}
	if syncset.UpToDate(want, cachedObject(t, virtualService(`{"app":"x"}`, "50"))) {
		t.Error("an object without our label counts as up to date")
	}
	want.SetOwnerReferences(nil)
	if syncset.UpToDate(want, cachedObject(t, virtualService(ours, "50"))) {
		t.Error("an object with other owners counts as up to date")
	}
}

// Compact Istio objects share their label and owner strings once cached, and keep no managed fields.
func TestStripTransformInternsMetadata(t *testing.T) {
	doc := strings.Replace(virtualService(`{"app.kubernetes.io/managed-by":"smi2istio"}`, "50"), `"namespace":"bookstore",`,
		`"namespace":"bookstore","managedFields":[{"manager":"smi2istio","operation":"Apply"}],`, 1)
	a, b := cachedObject(t, doc), cachedObject(t, doc)
	if a.GetManagedFields() != nil {
		t.Error("managed fields kept")
	}
	if unsafe.StringData(a.GetLabels()["app.kubernetes.io/managed-by"]) != unsafe.StringData(b.GetLabels()["app.kubernetes.io/managed-by"]) ||
		unsafe.StringData(a.GetOwnerReferences()[0].Kind) != unsafe.StringData(b.GetOwnerReferences()[0].Kind) {
		t.Error("label values or owner kinds not shared between two cached objects")
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
