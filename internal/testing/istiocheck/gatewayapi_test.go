package istiocheck

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/smi2istio/smi2istio/internal/manifests"
)

func TestGatewayAPICRDs(t *testing.T) {
	t.Setenv("SMI2ISTIO_CACHE", t.TempDir())
	path, err := GatewayAPICRDs()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(path, os.Getenv("SMI2ISTIO_CACHE")) {
		t.Errorf("GatewayAPICRDs() = %s, not in SMI2ISTIO_CACHE", path)
	}
	version, err := goList("-m", "-f", "{{.Version}}", GatewayAPIModule)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(filepath.Dir(path)) != version {
		t.Errorf("GatewayAPICRDs() = %s, want it keyed by the go.mod version %s", path, version)
	}
	objs, err := manifests.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	served := map[string]bool{}
	names := map[string]int{}
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" {
			t.Errorf("%s %s in the bundle: want CRDs only", o.GetKind(), o.GetName())
			continue
		}
		names[o.GetName()]++
		if o.GetAnnotations()["gateway.networking.k8s.io/bundle-version"] != version {
			t.Errorf("CRD %s: bundle-version %q, want %s", o.GetName(), o.GetAnnotations()["gateway.networking.k8s.io/bundle-version"], version)
		}
		kind, _, _ := unstructured.NestedString(o.Object, "spec", "names", "kind")
		versions, _, _ := unstructured.NestedSlice(o.Object, "spec", "versions")
		for _, v := range versions {
			vm := v.(map[string]any)
			if vm["served"] == true {
				served[kind+"/"+vm["name"].(string)] = true
			}
		}
		channel := o.GetAnnotations()["gateway.networking.k8s.io/channel"]
		if want := "standard"; kind == "TCPRoute" {
			if channel != "experimental" {
				t.Errorf("TCPRoute from the %s channel, want experimental", channel)
			}
		} else if channel != want {
			t.Errorf("CRD %s from the %s channel, want %s", o.GetName(), channel, want)
		}
	}
	for n, c := range names {
		if c != 1 {
			t.Errorf("CRD %s %d times", n, c)
		}
	}
	for _, want := range []string{"HTTPRoute/v1", "TCPRoute/v1", "TCPRoute/v1alpha2", "Gateway/v1", "GatewayClass/v1", "ReferenceGrant/v1beta1", "GRPCRoute/v1"} {
		if !served[want] {
			t.Errorf("%s not served by the bundle (served: %v)", want, served)
		}
	}
	// Cached: a second call returns the same file without rebuilding it.
	if err := os.WriteFile(path, []byte("# cached\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	again, err := GatewayAPICRDs()
	if err != nil || again != path {
		t.Fatalf("second call: %s, %v", again, err)
	}
	if data, _ := os.ReadFile(path); string(data) != "# cached\n" {
		t.Errorf("the cached file was rebuilt")
	}
}

const validRoute = `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
  namespace: shop
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: web
  rules:
  - backendRefs:
    - group: ""
      kind: Service
      name: web-v1
      port: 80
      weight: 50
    matches:
    - path:
        type: PathPrefix
        value: /
`

// The validator accepts a valid object and refuses each way an object can be wrong: schema,
// unknown field, CEL rule, metadata, defaulting, unknown kind.
func TestValidateGatewayAPI(t *testing.T) {
	load := func(t *testing.T, y string) *unstructured.Unstructured {
		t.Helper()
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(y), &u.Object); err != nil {
			t.Fatal(err)
		}
		return u
	}
	if err := ValidateGatewayAPI(load(t, validRoute)); err != nil {
		t.Fatalf("valid HTTPRoute: %v", err)
	}
	for name, tc := range map[string]struct {
		edit func(u *unstructured.Unstructured)
		want string
	}{
		"weight out of range (schema)": {func(u *unstructured.Unstructured) {
			setBackend(u, "weight", int64(1000001))
		}, "weight"},
		"unknown field": {func(u *unstructured.Unstructured) {
			setBackend(u, "wieght", int64(1))
		}, "unknown field"},
		"Service backend without port (CEL)": {func(u *unstructured.Unstructured) {
			setBackend(u, "port", nil)
		}, "Must have port for Service reference"},
		"two refs to one Service without sectionName (CEL)": {func(u *unstructured.Unstructured) {
			refs, _, _ := unstructured.NestedSlice(u.Object, "spec", "parentRefs")
			second := map[string]any{"group": "", "kind": "Service", "name": "web", "port": int64(8080)}
			_ = unstructured.SetNestedSlice(u.Object, append(refs, second), "spec", "parentRefs")
		}, "sectionName must be unique"},
		"invalid name": {func(u *unstructured.Unstructured) { u.SetName("Web_1") }, "metadata.name"},
		"defaulted on create": {func(u *unstructured.Unstructured) {
			setBackend(u, "kind", nil)
		}, "CRD defaulting changes the object"},
		"not a Gateway API kind": {func(u *unstructured.Unstructured) {
			u.SetAPIVersion("gateway.networking.k8s.io/v1alpha9")
		}, "not served"},
		"lowercase method (enum)": {func(u *unstructured.Unstructured) {
			rules, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules")
			r := rules[0].(map[string]any)
			r["matches"] = []any{map[string]any{"method": "get", "path": map[string]any{"type": "PathPrefix", "value": "/"}}}
			_ = unstructured.SetNestedSlice(u.Object, rules, "spec", "rules")
		}, "method"},
	} {
		t.Run(name, func(t *testing.T) {
			u := load(t, validRoute)
			tc.edit(u)
			err := ValidateGatewayAPI(u)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func setBackend(u *unstructured.Unstructured, key string, v any) {
	rules, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules")
	b := rules[0].(map[string]any)["backendRefs"].([]any)[0].(map[string]any)
	if v == nil {
		delete(b, key)
	} else {
		b[key] = v
	}
	_ = unstructured.SetNestedSlice(u.Object, rules, "spec", "rules")
}
