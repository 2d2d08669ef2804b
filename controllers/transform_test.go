package controllers_test

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/smi2istio/smi2istio/controllers"
)

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
	out, err := controllers.StripTransform(u)
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
