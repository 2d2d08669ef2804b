package main

import (
	"fmt"
	"testing"

	apiwrites "github.com/smi2istio/smi2istio/internal/writes"
)

// The table's breakdown of the operator's writes sorts the resources internal/writes names.
func TestWriteClass(t *testing.T) {
	for _, c := range []struct{ method, path, want string }{
		{"PATCH", "/apis/networking.istio.io/v1/namespaces/n/virtualservices/svc-1", writesIstio},
		{"POST", "/apis/security.istio.io/v1/namespaces/n/authorizationpolicies", writesIstio},
		{"DELETE", "/apis/networking.istio.io/v1alpha3/namespaces/n/envoyfilters/f", writesIstio},
		{"PATCH", "/apis/split.smi-spec.io/v1alpha4/namespaces/n/trafficsplits/svc-1/status", writesStatus},
		{"PATCH", "/apis/specs.smi-spec.io/v1alpha4/namespaces/n/tcproutes/svc-1-db/status", writesStatus},
		{"PATCH", "/apis/access.smi-spec.io/v1alpha3/namespaces/n/traffictargets/svc-1", writesOther},
		{"POST", "/apis/events.k8s.io/v1/namespaces/n/events", writesEvents},
		{"POST", "/api/v1/namespaces/n/events", writesEvents},
		{"PATCH", "/apis/smi2istio.io/v1alpha1/smi2istioconfigs/default/status", writesOther},
	} {
		labels := fmt.Sprintf(`method=%q,resource=%q`, c.method, apiwrites.Resource(c.path))
		if got := writeClass(labels); got != c.want {
			t.Errorf("writeClass(%s) = %q, want %q", labels, got, c.want)
		}
	}
	before := map[string]float64{`method="POST",resource="events.k8s.io/events"`: 3}
	after := map[string]float64{`method="POST",resource="events.k8s.io/events"`: 5, `method="PATCH",resource="networking.istio.io/virtualservices"`: 4}
	if got, want := fmt.Sprint(writesByClass(before, after)), fmt.Sprint(map[string]float64{writesEvents: 2, writesIstio: 4}); got != want {
		t.Errorf("writesByClass = %s, want %s", got, want)
	}
}
