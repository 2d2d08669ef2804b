package controllers_test

import (
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/smi2istio/smi2istio/controllers"
)

func routeCondition(t *testing.T, kind, ns, name, typ, status, reason string) {
	t.Helper()
	gvk := map[string]*unstructured.Unstructured{
		"HTTPRouteGroup": objOf(controllers.HTTPRouteGroupGVK),
		"UDPRoute":       objOf(controllers.UDPRouteGVK),
		"TCPRoute":       objOf(controllers.TCPRouteGVK),
	}[kind]
	eventually(t, fmt.Sprintf("%s %s/%s %s=%s/%s", kind, ns, name, typ, status, reason), func() error {
		u, err := get(gvk, ns, name)
		if err != nil {
			return err
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			m := c.(map[string]any)
			if m["type"] == typ {
				if m["status"] != status || m["reason"] != reason {
					return fmt.Errorf("got %v/%v: %v", m["status"], m["reason"], m["message"])
				}
				return nil
			}
		}
		return fmt.Errorf("no %s condition", typ)
	})
}

// Route objects carry conditions too: what the schema cannot check is reported here.
func TestRouteConditions(t *testing.T) {
	ns := freshNamespace(t)
	applyYAML(t, ns, `
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: good}
spec: {matches: [{name: m, pathRegex: "/api/.*", headers: [{x-team: pay.*}]}]}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: bad-regex}
spec: {matches: [{name: m, pathRegex: "/api/(v1"}]}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: bad-headers}
spec: {matches: [{name: m, headers: [{x-team: [a]}]}]}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: UDPRoute
metadata: {name: dns}
spec: {matches: {ports: [53]}}
---
apiVersion: specs.smi-spec.io/v1alpha1
kind: TCPRoute
metadata: {name: any}
`)
	routeCondition(t, "HTTPRouteGroup", ns, "good", "Ready", "True", controllers.ReasonValid)
	routeCondition(t, "HTTPRouteGroup", ns, "bad-regex", "Accepted", "False", "InvalidRegex")
	routeCondition(t, "HTTPRouteGroup", ns, "bad-headers", "Accepted", "False", "InvalidHeaders")
	routeCondition(t, "UDPRoute", ns, "dns", "Ready", "False", controllers.ReasonUnsupported)
	routeCondition(t, "TCPRoute", ns, "any", "Ready", "True", controllers.ReasonValid)

	meshNamespace(t, ns, false)
	routeCondition(t, "HTTPRouteGroup", ns, "good", "Ready", "False", controllers.ReasonNotInMesh)
}
