package translate_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	networkingv1beta1 "istio.io/client-go/pkg/apis/networking/v1beta1"
	securityv1beta1 "istio.io/client-go/pkg/apis/security/v1beta1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/smi2istio/smi2istio/translate"
)

// referenceTyped decodes content as the Istio types' own UnmarshalJSON does (what typedOutput did
// before it decoded the spec with protojson): the reference typedOutput is held to.
func referenceTyped(content map[string]any) (runtime.Object, error) {
	obj := newIstioObject(content["kind"])
	if obj == nil {
		return nil, fmt.Errorf("kind %v", content["kind"])
	}
	js, err := json.Marshal(content)
	if err != nil {
		return nil, err
	}
	return obj, json.Unmarshal(js, obj)
}

// parts are a decoded object's apiVersion and kind, metadata, spec and status.
type parts struct {
	tm           metav1.TypeMeta
	om           metav1.ObjectMeta
	spec, status proto.Message
}

func partsOf(obj runtime.Object) parts {
	switch o := obj.(type) {
	case *securityv1beta1.AuthorizationPolicy:
		return parts{o.TypeMeta, o.ObjectMeta, &o.Spec, &o.Status}
	case *securityv1beta1.PeerAuthentication:
		return parts{o.TypeMeta, o.ObjectMeta, &o.Spec, &o.Status}
	case *networkingv1alpha3.EnvoyFilter:
		return parts{o.TypeMeta, o.ObjectMeta, &o.Spec, &o.Status}
	case *networkingv1beta1.VirtualService:
		return parts{o.TypeMeta, o.ObjectMeta, &o.Spec, &o.Status}
	case *networkingv1beta1.DestinationRule:
		return parts{o.TypeMeta, o.ObjectMeta, &o.Spec, &o.Status}
	}
	panic(fmt.Sprintf("%T", obj))
}

// compareTypedOutput holds typedOutput to the reference on content: it never decodes what the
// reference refuses, decodes to the same object when both decode, and refuses more only for a
// field the spec's proto does not know (the reference ignores those; an apply with strict field
// validation refuses them) or a null where the spec holds a value (a list element or a map value:
// the reference reads it as the empty value). The translator writes neither. It reports whether
// typedOutput decoded it.
func compareTypedOutput(t *testing.T, name string, content map[string]any) bool {
	t.Helper()
	got, err := translate.TypedOutput(&unstructured.Unstructured{Object: content})
	want, wantErr := referenceTyped(content)
	switch {
	case err == nil && wantErr != nil:
		t.Errorf("%s: typedOutput decodes what the types refuse (%v)", name, wantErr)
	case err == nil:
		g, w := partsOf(got), partsOf(want)
		if !proto.Equal(g.spec, w.spec) {
			t.Errorf("%s: spec decoded as\n%v\nthe types decode\n%v", name, g.spec, w.spec)
		}
		if !proto.Equal(g.status, w.status) {
			t.Errorf("%s: status decoded as\n%v\nthe types decode\n%v", name, g.status, w.status)
		}
		if g.tm != w.tm || !equality.Semantic.DeepEqual(g.om, w.om) {
			t.Errorf("%s: apiVersion, kind or metadata decoded as\n%v %#v\nthe types decode\n%v %#v", name, g.tm, g.om, w.tm, w.om)
		}
	case wantErr == nil && !strings.Contains(err.Error(), "unknown field") && !strings.HasSuffix(err.Error(), ": null"):
		t.Errorf("%s: typedOutput refuses what the types decode: %v", name, err)
	}
	return err == nil
}

// The controllers validate unstructured objects, decoded by typedOutput: on every golden output,
// and on each with one leaf (value or key) mutated as TestValidateOutputRejectsWhatIstioRejects
// mutates them, it decodes what the types decode, to the same object.
func TestTypedOutputDecodesAsTheTypes(t *testing.T) {
	objs := goldenObjects(t)
	names := sortedKeys(objs)
	decoded, refused := 0, 0
	for _, name := range names {
		content := objs[name]
		if !compareTypedOutput(t, name, content) {
			t.Errorf("%s: a golden output is not decoded", name)
		}
		var ls []leaf
		leaves(content, nil, &ls)
		for _, l := range ls {
			candidates := append(append([]any{}, badStrings...), badNumbers...)
			candidates = append(candidates, true, nil, []any{"x"}, map[string]any{"x": "y"})
			for _, v := range candidates {
				m := mutate(content, l, v)
				if m == nil {
					continue
				}
				if compareTypedOutput(t, fmt.Sprintf("%s %v = %v", name, l.path, v), m) {
					decoded++
				} else {
					refused++
				}
			}
		}
	}
	if decoded < 1000 || refused < 100 {
		t.Fatalf("mutations decoded %d, refused %d: the test lost its teeth", decoded, refused)
	}
	t.Logf("%d mutated objects decoded alike, %d refused", decoded, refused)
}

// A field the spec's proto does not know is refused (an apply with strict field validation would
// refuse it; the types' own decoding ignores it, and the object would be validated without it).
func TestTypedOutputRefusesUnknownSpecFields(t *testing.T) {
	for name, content := range goldenObjects(t) {
		m := mutate(content, leaf{path: []any{"spec", "notAField"}}, "x")
		if _, err := translate.TypedOutput(&unstructured.Unstructured{Object: m}); err == nil || !strings.Contains(err.Error(), "notAField") {
			t.Errorf("%s: spec.notAField: got %v, want an error naming it", name, err)
		}
	}
}

// A port-level mTLS key must be a port number written canonically: protojson reads "080" as port
// 80, istiod's decoding (jsonpb) refuses it, and an object istiod cannot decode stops its view of
// every PeerAuthentication. Found by a red team (helper-37).
func TestTypedOutputPortKeys(t *testing.T) {
	pa := func(key string) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "security.istio.io/v1beta1", "kind": "PeerAuthentication",
			"metadata": map[string]any{"name": "a", "namespace": "shop"},
			"spec": map[string]any{"selector": map[string]any{"matchLabels": map[string]any{"app": "x"}},
				"portLevelMtls": map[string]any{key: map[string]any{"mode": "STRICT"}}},
		}}
	}
	for key, ok := range map[string]bool{"80": true, "65535": true, "080": false, "+80": false, "0x50": false, "80.0": false, "-1": false, "": false} {
		_, err := translate.TypedOutput(pa(key))
		if (err == nil) != ok {
			t.Errorf("portLevelMtls key %q: got %v, want accepted %v", key, err, ok)
		}
		if _, refErr := referenceTyped(pa(key).Object); ok && refErr != nil {
			t.Errorf("portLevelMtls key %q: the types refuse it (%v): the test's premise is wrong", key, refErr)
		}
	}
}

// BenchmarkTypedOutput decodes every golden output as the controllers' validation does, side by
// side with the types' own decoding (what it did before): go test -bench TypedOutput -benchmem.
func BenchmarkTypedOutput(b *testing.B) {
	var contents []map[string]any
	for _, c := range goldenObjects(b) {
		contents = append(contents, c)
	}
	b.Run("types-UnmarshalJSON", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, c := range contents {
				if _, err := referenceTyped(c); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("protojson", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, c := range contents {
				if _, err := translate.TypedOutput(&unstructured.Unstructured{Object: c}); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
