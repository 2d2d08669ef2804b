package cache

import (
	"strings"
	"testing"
	"unsafe"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
)

// virtualServiceDoc is a generated VirtualService as JSON (the weight as written).
func virtualServiceDoc(labels string, weight string) string {
	return `{"apiVersion":"networking.istio.io/v1beta1","kind":"VirtualService","metadata":{"name":"bookstore","namespace":"bookstore",
		"labels":` + labels + `,"ownerReferences":[{"apiVersion":"split.smi-spec.io/v1alpha4","kind":"TrafficSplit","name":"s","uid":"u1","controller":true,"blockOwnerDeletion":true}]},
		"spec":{"hosts":["bookstore.bookstore.svc.cluster.local"],"http":[{"route":[{"destination":{"host":"bookstore","subset":"v1"},"weight":` + weight + `}]}]}}`
}

// cachedObject decodes JSON as the cache's informer does and runs the cache's transform on it.
func cachedObject(t *testing.T, doc string) Object {
	t.Helper()
	s := runtime.NewScheme()
	if err := AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	obj, _, err := serializer.NewCodecFactory(s).UniversalDeserializer().Decode([]byte(doc), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Options().DefaultTransform(obj)
	if err != nil {
		t.Fatal(err)
	}
	return out.(Object)
}

// The cache keeps neither managed fields nor kubectl's last-applied copy, and nothing else is lost
// (Flagger's gateways annotation on a TrafficSplit is read by the translator).
func TestStripTransform(t *testing.T) {
	const gateways = "VirtualService.v1alpha3.networking.istio.io/spec.gateways"
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("split.smi-spec.io/v1alpha2")
	u.SetKind("TrafficSplit")
	u.SetName("bookstore-split")
	u.SetAnnotations(map[string]string{
		"kubectl.kubernetes.io/last-applied-configuration": `{"apiVersion":"split.smi-spec.io/v1alpha2","kind":"TrafficSplit"}`,
		gateways: `["mesh","public-gateway"]`,
	})
	u.SetManagedFields([]metav1.ManagedFieldsEntry{{Manager: "kubectl"}})
	out, err := StripTransform(u)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*unstructured.Unstructured)
	if a := got.GetAnnotations(); len(a) != 1 || a[gateways] != `["mesh","public-gateway"]` {
		t.Errorf("annotations after the transform: %v", a)
	}
	if len(got.GetManagedFields()) != 0 {
		t.Errorf("managed fields kept: %v", got.GetManagedFields())
	}
}

// Compact Istio objects share their label and owner strings once cached, and keep no managed fields.
func TestStripTransformInternsMetadata(t *testing.T) {
	doc := strings.Replace(virtualServiceDoc(`{"app.kubernetes.io/managed-by":"smi2istio"}`, "50"), `"namespace":"bookstore",`,
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

// Decoded objects share one copy of each key and short value once cache.
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
