package cache

import (
	"encoding/json"
	"reflect"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

const trafficSplit = `{"apiVersion":"split.smi-spec.io/v1alpha4","kind":"TrafficSplit",
 "metadata":{"name":"bookstore-split","namespace":"bookstore","uid":"u1","generation":2,"annotations":{"a":"b"}},
 "spec":{"service":"bookstore","backends":[{"service":"bookstore-v1","weight":50},{"service":"bookstore-v2","weight":50}],"matches":[{"kind":"HTTPRouteGroup","name":"r"}]},
 "status":{"observedGeneration":2,"conditions":[{"type":"Ready","status":"True","reason":"Applied","message":"applied","lastTransitionTime":"2026-11-22T00:00:00Z","observedGeneration":2}]}}`

// An SMI object decodes with its spec verbatim and its conditions typed, and encodes back into the
// same object (what normalize reads it from).
func TestSMIRoundTrip(t *testing.T) {
	obj, ok := decode(t, scheme(t), trafficSplit).(*SMI[TrafficSplit])
	if !ok {
		t.Fatalf("decoded a %T", obj)
	}
	st := obj.GetStatus()
	if st.ObservedGeneration != 2 || len(st.Conditions) != 1 || st.Conditions[0].Reason != "Applied" || st.Conditions[0].LastTransitionTime.IsZero() {
		t.Errorf("status %+v", st)
	}
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	var got, want unstructured.Unstructured
	if err := got.UnmarshalJSON(raw); err != nil {
		t.Fatal(err)
	}
	if err := want.UnmarshalJSON([]byte(trafficSplit)); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Object, want.Object) {
		t.Errorf("encoded back as\n%s\nwant\n%s", raw, trafficSplit)
	}
}

// An object without status encodes without one, and a deep copy shares no spec bytes or conditions.
func TestSMIDeepCopyAndEmptyStatus(t *testing.T) {
	obj := decode(t, scheme(t), trafficSplit).(*SMI[TrafficSplit])
	c := obj.DeepCopy()
	c.Spec[0] = 'X'
	c.Status.Conditions[0].Reason = "Changed"
	if obj.Spec[0] == 'X' || obj.Status.Conditions[0].Reason != "Applied" {
		t.Error("the deep copy shares the spec or the conditions")
	}
	bare := &SMI[TrafficTarget]{}
	bare.SetName("t")
	raw, err := json.Marshal(bare)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["status"]; ok {
		t.Errorf("an object without status encodes one: %s", raw)
	}
}

// A status of the wrong shape (a CRD that keeps anything and has no status subresource lets anyone
// write one) is dropped, not an error: an error would fail every list of the kind.
func TestSMIStatusOfTheWrongShapeIsDropped(t *testing.T) {
	for _, status := range []string{
		`{"observedGeneration":"lie","conditions":[{"type":"Ready","status":"True"}]}`,
		`{"conditions":"Ready"}`,
		`{"conditions":[{"type":"Ready","status":"True","lastTransitionTime":"yesterday"}]}`,
		`"Ready"`,
		`[1]`,
	} {
		raw := `{"apiVersion":"access.smi-spec.io/v1alpha3","kind":"TrafficTarget","metadata":{"name":"p","namespace":"ns"},"spec":{"a":1},"status":` + status + `}`
		o := &SMI[TrafficTarget]{}
		if err := json.Unmarshal([]byte(raw), o); err != nil {
			t.Errorf("status %s: %v", status, err)
			continue
		}
		if o.Name != "p" || string(o.Spec) != `{"a":1}` || o.Status.ObservedGeneration != 0 || len(o.Status.Conditions) != 0 {
			t.Errorf("status %s: decoded %+v", status, o)
		}
	}
	o := &SMI[TrafficTarget]{}
	if err := json.Unmarshal([]byte(`{"metadata":{"name":"p"},"status":{"observedGeneration":3,"conditions":[{"type":"Ready","status":"True","lastTransitionTime":"2026-12-01T00:00:00Z","reason":"Applied","message":""}]}}`), o); err != nil || o.Status.ObservedGeneration != 3 || len(o.Status.Conditions) != 1 {
		t.Errorf("a status of the right shape: %+v, %v", o.Status, err)
	}
}

// A status write is a status-only change; anything else a reader of the object may act on is not.
func TestSMIStatusOnlyChange(t *testing.T) {
	base := func() *SMI[HTTPRouteGroup] {
		o := &SMI[HTTPRouteGroup]{Spec: json.RawMessage(`{"matches":[{"name":"a","pathRegex":"/a"}]}`)}
		o.APIVersion, o.Kind = "specs.smi-spec.io/v1alpha4", "HTTPRouteGroup"
		o.Namespace, o.Name, o.ResourceVersion, o.Generation = "shop", "routes", "1", 1
		o.Labels = map[string]string{"app": "shop"}
		return o
	}
	for _, c := range []struct {
		name string
		edit func(*SMI[HTTPRouteGroup])
		want bool
	}{
		{"status", func(o *SMI[HTTPRouteGroup]) {
			o.Status = Status{ObservedGeneration: 1, Conditions: []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue}}}
		}, true},
		{"resourceVersion and managedFields", func(o *SMI[HTTPRouteGroup]) {
			o.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "smi2istio"}}
		}, true},
		{"spec", func(o *SMI[HTTPRouteGroup]) { o.Spec = json.RawMessage(`{"matches":[]}`) }, false},
		{"generation", func(o *SMI[HTTPRouteGroup]) { o.Generation = 2 }, false},
		{"labels", func(o *SMI[HTTPRouteGroup]) { o.Labels = map[string]string{"app": "bank"} }, false},
		{"annotations", func(o *SMI[HTTPRouteGroup]) { o.Annotations = map[string]string{"a": "b"} }, false},
		{"deletion", func(o *SMI[HTTPRouteGroup]) { now := metav1.Now(); o.DeletionTimestamp = &now }, false},
		{"finalizers", func(o *SMI[HTTPRouteGroup]) { o.Finalizers = []string{"x"} }, false},
		{"apiVersion", func(o *SMI[HTTPRouteGroup]) { o.APIVersion = "specs.smi-spec.io/v1alpha3" }, false},
	} {
		old, next := base(), base()
		next.ResourceVersion = "2"
		c.edit(next)
		if got := old.StatusOnlyChange(next); got != c.want {
			t.Errorf("%s: StatusOnlyChange %v, want %v", c.name, got, c.want)
		}
	}
	if base().StatusOnlyChange(&SMI[TCPRoute]{}) {
		t.Error("an object of another kind is a status-only change")
	}
}
