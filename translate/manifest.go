package translate

import (
	"fmt"
	"reflect"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	sigsjson "sigs.k8s.io/json"
)

// ToUnstructured renders a generated object as it is applied and printed: no status, no
// creationTimestamp, keys in a stable order once marshalled.
func ToUnstructured(obj runtime.Object) (*unstructured.Unstructured, error) {
	if tm, om, spec, ok := istioParts(obj); ok {
		return istioToUnstructured(obj, tm, om, spec)
	}
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, fmt.Errorf("convert %T: %w", obj, err)
	}
	delete(content, "status")
	if md, ok := content["metadata"].(map[string]any); ok {
		delete(md, "creationTimestamp")
	}
	return &unstructured.Unstructured{Object: content}, nil
}

// istioParts are the type, metadata and spec of an Istio client-go object (a struct of TypeMeta,
// ObjectMeta, a protobuf Spec and Status).
func istioParts(obj runtime.Object) (metav1.TypeMeta, *metav1.ObjectMeta, proto.Message, bool) {
	v := reflect.ValueOf(obj)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return metav1.TypeMeta{}, nil, nil, false
	}
	v = v.Elem()
	tm, okT := v.FieldByName("TypeMeta").Interface().(metav1.TypeMeta)
	om, okO := fieldAddr(v, "ObjectMeta").(*metav1.ObjectMeta)
	spec, okS := fieldAddr(v, "Spec").(proto.Message)
	return tm, om, spec, okT && okO && okS
}

func fieldAddr(v reflect.Value, name string) any {
	f := v.FieldByName(name)
	if !f.IsValid() {
		return nil
	}
	return f.Addr().Interface()
}

// istioToUnstructured is what runtime.DefaultUnstructuredConverter makes of an Istio object, less
// its status, with the spec rendered by protojson in one pass: the converter goes through the
// spec's MarshalJSON (github.com/golang/protobuf's jsonpb), several times slower
// (BenchmarkToUnstructured). TestToUnstructuredAsTheConverter holds the two to the same result.
func istioToUnstructured(obj runtime.Object, tm metav1.TypeMeta, om *metav1.ObjectMeta, spec proto.Message) (*unstructured.Unstructured, error) {
	md, err := runtime.DefaultUnstructuredConverter.ToUnstructured(om)
	if err != nil {
		return nil, fmt.Errorf("convert %T metadata: %w", obj, err)
	}
	delete(md, "creationTimestamp")
	raw, err := protojson.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("convert %T spec: %w", obj, err)
	}
	var s map[string]any
	// Whole numbers as int64, as in every unstructured object (the apiserver's decoding).
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(raw, &s); err != nil {
		return nil, fmt.Errorf("convert %T spec: %w", obj, err)
	}
	content := map[string]any{"metadata": md, "spec": s}
	if tm.APIVersion != "" {
		content["apiVersion"] = tm.APIVersion
	}
	if tm.Kind != "" {
		content["kind"] = tm.Kind
	}
	return &unstructured.Unstructured{Object: content}, nil
}
