package writes

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/client-go/rest"
)

func TestResource(t *testing.T) {
	for path, want := range map[string]string{
		"/api/v1/namespaces/bookstore/events": "/events",
		"/api/v1/namespaces/bookstore":        "/namespaces",
		"/api/v1/namespaces":                  "/namespaces",
		"/apis/networking.istio.io/v1/namespaces/ns1/virtualservices/bookstore":                "networking.istio.io/virtualservices",
		"/apis/split.smi-spec.io/v1alpha4/namespaces/ns1/trafficsplits/bookstore-split/status": "split.smi-spec.io/trafficsplits/status",
		"/apis/config.smi2istio.io/v1alpha1/smi2istioconfigs/default/status":                   "config.smi2istio.io/smi2istioconfigs/status",
		"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations":                "admissionregistration.k8s.io/validatingwebhookconfigurations",
		"/healthz": "/healthz",
	} {
		if got := Resource(path); got != want {
			t.Errorf("Resource(%q) = %q, want %q", path, got, want)
		}
	}
}

func TestCount(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer srv.Close()
	cfg := &rest.Config{Host: srv.URL}
	Count(cfg)
	rt, err := rest.TransportFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	do := func(method, path string) {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
	}
	path := "/apis/security.istio.io/v1/namespaces/n/peerauthentications/p"
	before := testutil.ToFloat64(Requests.WithLabelValues("PATCH", "security.istio.io/peerauthentications"))
	do(http.MethodGet, path)
	do(http.MethodPatch, path)
	do(http.MethodPatch, path)
	if got := testutil.ToFloat64(Requests.WithLabelValues("PATCH", "security.istio.io/peerauthentications")) - before; got != 2 {
		t.Errorf("counted %v PATCH requests, want 2 (and no GET)", got)
	}
	if got := testutil.ToFloat64(Requests.WithLabelValues("GET", "security.istio.io/peerauthentications")); got != 0 {
		t.Errorf("counted %v GET requests, want 0", got)
	}
}
