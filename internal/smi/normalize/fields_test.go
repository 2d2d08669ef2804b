package normalize

import (
	"errors"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/smi2istio/smi2istio/translate"
)

func obj(t *testing.T, y string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(y), &u.Object); err != nil {
		t.Fatal(err)
	}
	return u
}

// A misspelt field (which a CRD that does not prune would keep) is refused, naming it, instead of
// being read as absent: a pathRegex read as absent matches every path.
func TestUnknownFieldsAreRefused(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, field string
		read              func(*unstructured.Unstructured) error
	}{
		{"pathRegexp", `
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: r, namespace: ns}
spec:
  matches:
  - name: m
    pathRegexp: /admin
    methods: [GET]`, "spec.matches[0].pathRegexp", func(u *unstructured.Unstructured) error { _, err := ReadHTTPRouteGroup(u); return err }},
		{"matchs", `
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: r, namespace: ns}
spec:
  matchs:
  - name: m
    pathRegex: /admin`, "spec.matchs", func(u *unstructured.Unstructured) error { _, err := ReadHTTPRouteGroup(u); return err }},
		{"target rule matchs", `
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: t, namespace: ns}
spec:
  destination: {kind: ServiceAccount, name: b, namespace: ns}
  rules:
  - {kind: HTTPRouteGroup, name: r, matchs: [m]}
  sources:
  - {kind: ServiceAccount, name: a, namespace: ns}`, "spec.rules[0].matchs", func(u *unstructured.Unstructured) error { _, err := ReadTrafficTarget(u); return err }},
		{"split v1alpha2 matches", `
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: s, namespace: ns}
spec:
  service: root
  backends: [{service: v1, weight: 1}]
  matches: [{kind: HTTPRouteGroup, name: r}]`, "spec.matches", func(u *unstructured.Unstructured) error { _, err := ReadTrafficSplit(u); return err }},
		{"tcp port", `
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: r, namespace: ns}
spec:
  matches: {port: [80]}`, "spec.matches.port", func(u *unstructured.Unstructured) error { _, err := ReadPortRoute(u); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.read(obj(t, tc.yaml))
			var fe *translate.FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field || fe.Reason != "UnknownField" || !strings.Contains(fe.Message, tc.field) {
				t.Errorf("got %v, want an UnknownField error naming %s", err, tc.field)
			}
		})
	}
}

// Known fields, both header shapes (preserved as they come), status and metadata pass.
func TestKnownFieldsPass(t *testing.T) {
	g, err := ReadHTTPRouteGroup(obj(t, `
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: r, namespace: ns, annotations: {a: b}}
spec:
  matches:
  - name: m
    pathRegex: /books
    methods: [GET]
    headers: [{user-agent: ".*"}]
status: {conditions: []}`))
	if err != nil || len(g.Matches) != 1 || g.Matches[0].PathRegex != "/books" || len(g.Matches[0].Headers) != 1 {
		t.Errorf("got %+v, %v", g, err)
	}
	if _, err := ReadTrafficTarget(obj(t, `
apiVersion: access.smi-spec.io/v1alpha1
kind: TrafficTarget
metadata: {name: t, namespace: ns}
destination: {kind: ServiceAccount, name: b, namespace: ns, port: 80}
specs: [{kind: HTTPRouteGroup, name: r, matches: [m]}]
sources: [{kind: ServiceAccount, name: a, namespace: ns}]`)); err != nil {
		t.Errorf("v1alpha1 TrafficTarget: %v", err)
	}
}
