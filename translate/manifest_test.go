package translate_test

import (
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/smi2istio/smi2istio/translate"
)

// converterToUnstructured is ToUnstructured as it was: runtime.DefaultUnstructuredConverter on the
// whole object (the spec through its MarshalJSON), less status and creationTimestamp.
func converterToUnstructured(t testing.TB, obj runtime.Object) map[string]any {
	t.Helper()
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	delete(content, "status")
	if md, ok := content["metadata"].(map[string]any); ok {
		delete(md, "creationTimestamp")
	}
	return content
}

// ToUnstructured renders the spec with protojson: on every golden output, decoded into its Istio
// type, it gives what the converter gives (same keys, same Go types: int64, float64, string).
func TestToUnstructuredAsTheConverter(t *testing.T) {
	objs := goldenObjects(t)
	for _, name := range sortedKeys(objs) {
		typed, err := referenceTyped(objs[name])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := translate.ToUnstructured(typed)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := converterToUnstructured(t, typed)
		if !equality.Semantic.DeepEqual(got.Object, want) {
			t.Errorf("%s: ToUnstructured differs from the converter:\ngot  %s\nwant %s", name, fmt.Sprintf("%#v", got.Object), fmt.Sprintf("%#v", want))
		}
	}
}

func BenchmarkToUnstructured(b *testing.B) {
	var typed []runtime.Object
	for _, c := range goldenObjects(b) {
		obj, err := referenceTyped(c)
		if err != nil {
			b.Fatal(err)
		}
		typed = append(typed, obj)
	}
	b.Run("converter", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, o := range typed {
				converterToUnstructured(b, o)
			}
		}
	})
	b.Run("protojson", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, o := range typed {
				if _, err := translate.ToUnstructured(o); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
