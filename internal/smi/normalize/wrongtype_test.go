package normalize

import (
	"errors"
	"strings"
	"testing"

	"github.com/smi2istio/smi2istio/translate"
)

// Input of the wrong type (a CRD without schema keeps it) is refused naming the field, as a
// FieldError (the controllers then report the object Accepted=False instead of failing the whole
// destination without a word).
func TestWrongTypesAreFieldErrors(t *testing.T) {
	for _, tc := range []struct{ name, yaml, field string }{
		{"methods a string", `
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: r, namespace: ns}
spec:
  matches:
  - {name: m, pathRegex: /a, methods: GET}
`, "methods"},
		{"ports a number", `
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: r, namespace: ns}
spec:
  matches: {ports: 5432}
`, "ports"},
		{"destination a string", `
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: r, namespace: ns}
spec:
  destination: db
  rules: [{kind: TCPRoute, name: x}]
  sources: [{kind: ServiceAccount, name: a, namespace: b}]
`, "destination"},
	} {
		u := obj(t, tc.yaml)
		var err error
		switch u.GetKind() {
		case "HTTPRouteGroup":
			_, err = ReadHTTPRouteGroup(u)
		case "TCPRoute":
			_, err = ReadPortRoute(u)
		default:
			_, err = ReadTrafficTarget(u)
		}
		var fe *translate.FieldError
		if !errors.As(err, &fe) || !strings.Contains(fe.Field+fe.Message, tc.field) {
			t.Errorf("%s: %v (%T), want a FieldError naming %s", tc.name, err, err, tc.field)
		}
	}
}
