package translate_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	securityv1beta1 "istio.io/client-go/pkg/apis/security/v1beta1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/smi2istio/smi2istio/internal/testing/istiocheck"
	"github.com/smi2istio/smi2istio/translate"
)

// goldenObjects are the generated objects of every golden case, as unstructured content.
func goldenObjects(t testing.TB) map[string]map[string]any {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "*", "output.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden outputs: %v", err)
	}
	out := map[string]map[string]any{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		g, _ := decodeStrict(t, data)
		for i, o := range g.Objects {
			out[fmt.Sprintf("%s objects[%d] %v", filepath.Base(filepath.Dir(f)), i, o["kind"])] = o
		}
	}
	return out
}

// sortedKeys are the names of the golden objects, sorted.
func sortedKeys(objs map[string]map[string]any) []string {
	names := make([]string, 0, len(objs))
	for n := range objs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// typed decodes content into the Istio type ValidateOutput and istiocheck are given; false when
// the content is not one (the translator cannot produce it).
func typed(content map[string]any) (runtime.Object, bool) {
	objs, err := typedObjects([]map[string]any{content})
	if err != nil {
		return nil, false
	}
	return objs[0], true
}

// Every golden output passes ValidateOutput (the translator runs it on what it returns).
func TestValidateOutputAcceptsGoldenOutputs(t *testing.T) {
	for name, content := range goldenObjects(t) {
		obj, ok := typed(content)
		if !ok {
			t.Fatalf("%s: not an Istio object", name)
		}
		if err := translate.ValidateOutput(obj); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// What smi2istio writes besides the translation passes too: the namespace baseline (allow nothing).
func TestValidateOutputAcceptsBaseline(t *testing.T) {
	baseline := &securityv1beta1.AuthorizationPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "security.istio.io/v1beta1", Kind: "AuthorizationPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: "smi2istio-default-deny", Namespace: "shop", Labels: map[string]string{translate.ManagedByLabel: translate.ManagedByValue}},
	}
	if err := translate.ValidateOutput(baseline); err != nil {
		t.Error(err)
	}
	if err := istiocheck.Validate(baseline); err != nil {
		t.Error(err)
	}
	baseline.TypeMeta = metav1.TypeMeta{}
	if err := translate.ValidateOutput(baseline); err == nil {
		t.Error("an object without apiVersion and kind must be refused")
	}
}

// leaf is one scalar or map key of an object, addressed by its path.
type leaf struct {
	path  []any // string keys and int indexes
	isKey bool  // the map key at path (not its value)
	value any
}

func leaves(v any, path []any, out *[]leaf) {
	switch t := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			p := append(append([]any(nil), path...), k)
			*out = append(*out, leaf{path: p, isKey: true, value: k})
			leaves(t[k], p, out)
		}
	case []any:
		for i, c := range t {
			leaves(c, append(append([]any(nil), path...), i), out)
		}
	default:
		*out = append(*out, leaf{path: path, value: v})
	}
}

// mutate returns a deep copy of content with the leaf replaced by v (or its key renamed to v).
func mutate(content map[string]any, l leaf, v any) map[string]any {
	js, _ := json.Marshal(content)
	var c map[string]any
	_ = json.Unmarshal(js, &c)
	var parent any = c
	for _, p := range l.path[:len(l.path)-1] {
		switch k := p.(type) {
		case string:
			parent = parent.(map[string]any)[k]
		case int:
			parent = parent.([]any)[k]
		}
	}
	switch k := l.path[len(l.path)-1].(type) {
	case string:
		m := parent.(map[string]any)
		if l.isKey {
			s, ok := v.(string)
			if !ok {
				return nil
			}
			old := m[k]
			delete(m, k)
			m[s] = old
		} else {
			m[k] = v
		}
	case int:
		parent.([]any)[k] = v
	}
	return c
}

// Values that Istio or Envoy reject in one place or another.
var badStrings = []any{"", "*", "a*b", strings.Repeat("a", 64), "UPPER", "a b", "(", "/a//{*}", "é", strings.Repeat("a", 1025), "x]"}
var badNumbers = []any{0.0, -1.0, 65536.0, 101.0}

// Istio's validation failing implies ValidateOutput failing: on every golden output with one leaf
// (value or key) replaced by a value Istio or Envoy may reject, and on hand-made bad objects.
func TestValidateOutputRejectsWhatIstioRejects(t *testing.T) {
	objs := goldenObjects(t)
	names := sortedKeys(objs)
	// A mutation of one path (list indexes left out) of one kind is checked once: the objects of
	// one kind share their paths.
	seen := map[string]bool{}
	checked, rejected := 0, 0
	for _, name := range names {
		content := objs[name]
		var ls []leaf
		leaves(content, nil, &ls)
		for _, l := range ls {
			candidates := badStrings
			if _, ok := l.value.(float64); ok && !l.isKey {
				candidates = append(append([]any(nil), badNumbers...), badStrings...)
			}
			if b, ok := l.value.(bool); ok && !l.isKey {
				candidates = []any{!b}
			}
			var tmpl []string
			for _, e := range l.path {
				if s, ok := e.(string); ok {
					tmpl = append(tmpl, s)
				}
			}
			for _, v := range candidates {
				key := fmt.Sprint(content["kind"], tmpl, l.isKey, v)
				if seen[key] {
					continue
				}
				seen[key] = true
				m := mutate(content, l, v)
				if m == nil {
					continue
				}
				obj, ok := typed(m)
				if !ok {
					continue // not representable: the translator cannot produce it
				}
				checked++
				if istiocheck.Validate(obj) == nil {
					continue
				}
				rejected++
				if translate.ValidateOutput(obj) == nil {
					t.Errorf("%s: %v = %q: Istio rejects it, ValidateOutput accepts it", name, l.path, fmt.Sprint(v))
				}
			}
		}
	}
	if rejected == 0 || checked < 1000 {
		t.Fatalf("mutations checked %d, rejected by Istio %d: the test lost its teeth", checked, rejected)
	}
	t.Logf("%d mutated objects, %d rejected by Istio", checked, rejected)

	// Hand-made: an EnvoyFilter RBAC config Envoy refuses although istiod accepts it is caught by
	// both (istiocheck runs the filter's own validation too).
	for _, c := range handMade(t) {
		obj, ok := typed(c.content)
		if !ok {
			t.Fatalf("%s: not decodable", c.name)
		}
		if istiocheck.Validate(obj) == nil && c.istioRejects {
			t.Errorf("%s: expected Istio's validation to reject it", c.name)
		}
		if err := translate.ValidateOutput(obj); err == nil {
			t.Errorf("%s: ValidateOutput accepts it", c.name)
		} else {
			t.Logf("%s: %v", c.name, err)
		}
	}
}

type badObject struct {
	name         string
	istioRejects bool // istiocheck rejects it (else: only Envoy or smi2istio's own rules do)
	content      map[string]any
}

func yamlObject(t *testing.T, s string) map[string]any {
	t.Helper()
	objs, err := decodeObjects([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return objs[0]
}

func handMade(t *testing.T) []badObject {
	ef := func(stringMatch string) map[string]any {
		return yamlObject(t, `
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: api-1, namespace: shop}
spec:
  workloadSelector: {labels: {app: api}}
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_INBOUND
      listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager, subFilter: {name: envoy.filters.http.router}}}}
    patch:
      operation: INSERT_BEFORE
      value:
        name: smi2istio.rbac
        typed_config:
          '@type': type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
          rules:
            action: ALLOW
            policies:
              t/0:
                principals: [{authenticated: {principal_name: {exact: spiffe://cluster.local/ns/shop/sa/web}}}]
                permissions: [{header: {name: x-team, string_match: `+stringMatch+`}}]
`)
	}
	ap := func(rule string) map[string]any {
		return yamlObject(t, `
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: t-1, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  rules:
  - `+rule+`
`)
	}
	return []badObject{
		{"empty safe_regex", true, ef(`{safe_regex: {regex: ""}}`)},
		{"safe_regex with ignore_case", false, ef(`{safe_regex: {regex: "a.*"}, ignore_case: true}`)},
		{"invalid safe_regex", true, ef(`{safe_regex: {regex: "(a"}}`)},
		{"empty prefix", true, ef(`{prefix: ""}`)},
		{"empty path", true, ap(`{from: [{source: {principals: [cluster.local/ns/shop/sa/web]}}], to: [{operation: {paths: [""]}}]}`)},
		{"empty header value", true, ap(`{from: [{source: {principals: [cluster.local/ns/shop/sa/web]}}], when: [{key: "request.headers[x]", values: [""]}]}`)},
		{"empty principal", true, ap(`{from: [{source: {principals: [""]}}], to: [{operation: {methods: [GET]}}]}`)},
		{"wildcard principal", false, ap(`{from: [{source: {principals: [cluster.local/ns/shop/sa/web*]}}], to: [{operation: {methods: [GET]}}]}`)},
		{"rule without sources", false, ap(`{to: [{operation: {methods: [GET]}}]}`)},
		{"label value too long", true, yamlObject(t, `
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: t-1, namespace: shop}
spec:
  selector: {matchLabels: {app: `+strings.Repeat("a", 64)+`}}
  mtls: {mode: STRICT}
`)},
	}
}
