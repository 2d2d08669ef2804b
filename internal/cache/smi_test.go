package cache

import (
	"encoding/json"
	"reflect"
	"testing"

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
