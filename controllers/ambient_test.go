package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/controllers"
	"github.com/smi2istio/smi2istio/internal/membership"
	"github.com/smi2istio/smi2istio/internal/testing/istiocheck"
	"github.com/smi2istio/smi2istio/translate"
)

// Two workloads (web, api), api's Service, and api's TCP and HTTP routes.
const ambientApp = `
apiVersion: v1
kind: ServiceAccount
metadata: {name: web}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: api}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {serviceAccountName: web, containers: [{name: web, image: web}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {serviceAccountName: api, containers: [{name: api, image: api, ports: [{containerPort: 8080}, {containerPort: 5432}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: api}
spec: {selector: {app: api}, ports: [{name: http, port: 80, targetPort: 8080}, {name: tcp-db, port: 5432}]}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: db}
spec: {matches: {ports: [5432]}}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: api-routes}
spec:
  matches:
  - {name: orders, pathRegex: /orders, methods: [GET]}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: db}
spec:
  destination: {kind: ServiceAccount, name: api}
  sources: [{kind: ServiceAccount, name: web}]
  rules: [{kind: TCPRoute, name: db}]
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: http}
spec:
  destination: {kind: ServiceAccount, name: api}
  sources: [{kind: ServiceAccount, name: web}]
  rules: [{kind: HTTPRouteGroup, name: api-routes, matches: [orders]}]
`

// ttMessage is a TrafficTarget's condition message.
func ttMessage(t *testing.T, ns, name, typ string) string {
	t.Helper()
	u, err := get(objOf(controllers.TrafficTargetGVK), ns, name)
	if err != nil {
		t.Fatal(err)
	}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m := c.(map[string]any); m["type"] == typ {
			return fmt.Sprint(m["message"])
		}
	}
	return ""
}

// apOf summarises an AuthorizationPolicy: selector or targetRefs, and its rules' principals/ports/paths.
func apOf(u *unstructured.Unstructured) string {
	sel, _, _ := unstructured.NestedStringMap(u.Object, "spec", "selector", "matchLabels")
	refs, _, _ := unstructured.NestedSlice(u.Object, "spec", "targetRefs")
	rules, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules")
	var parts []string
	for _, r := range refs {
		m := r.(map[string]any)
		parts = append(parts, fmt.Sprintf("ref=%v/%v", m["kind"], m["name"]))
	}
	if len(sel) > 0 {
		parts = append(parts, fmt.Sprintf("sel=%v", sel))
	}
	for _, r := range rules {
		rm := r.(map[string]any)
		from, _, _ := unstructured.NestedSlice(rm, "from")
		to, _, _ := unstructured.NestedSlice(rm, "to")
		var principals, ports, paths []any
		if len(from) > 0 {
			principals, _, _ = unstructured.NestedSlice(from[0].(map[string]any), "source", "principals")
		}
		if len(to) > 0 {
			ports, _, _ = unstructured.NestedSlice(to[0].(map[string]any), "operation", "ports")
			paths, _, _ = unstructured.NestedSlice(to[0].(map[string]any), "operation", "paths")
		}
		parts = append(parts, fmt.Sprintf("rule=%v%v%v", principals, ports, paths))
	}
	return strings.Join(parts, " ")
}

// ambientPolicies lists the AuthorizationPolicies of a TrafficTarget, summarised.
func ambientPolicies(t *testing.T, ns, target string) []string {
	t.Helper()
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(controllers.AuthorizationPolicyGVK.GroupVersion().WithKind("AuthorizationPolicyList"))
	if err := env.Client.List(context.Background(), list, client.InNamespace(ns), client.MatchingLabels{translate.SourceNameLabel: target, translate.SourceKindLabel: "TrafficTarget"}); err != nil {
		t.Fatal(err)
	}
	var out []string
	for i := range list.Items {
		if err := istiocheck.Validate(&list.Items[i]); err != nil {
			t.Errorf("applied policy fails Istio's validation: %v", err)
		}
		out = append(out, apOf(&list.Items[i]))
	}
	return out
}

func waitAmbientPolicies(t *testing.T, ns, target string, check func([]string) error) {
	t.Helper()
	eventually(t, "AuthorizationPolicies of TrafficTarget "+ns+"/"+target, func() error { return check(ambientPolicies(t, ns, target)) })
}

// An ambient destination without a waypoint: its TCPRoute rule is a selector policy for ztunnel
// (principals and ports only), its HTTPRouteGroup rule allows nothing and says WaypointRequired.
// With a waypoint (its Gateway, the namespace's istio.io/use-waypoint label): the waypoint gets an
// allow-nothing policy of its own, every rule a policy attached to the Service, and ztunnel admits
// the waypoint's identity only. Without the waypoint again, back to ztunnel's L4 policies.
func TestAmbientAccess(t *testing.T) {
	ns := ambientNamespace(t)
	applyYAML(t, ns, ambientApp)
	web := fmt.Sprintf("cluster.local/ns/%s/sa/web", ns)

	waitTTReady(t, ns, "db", "True", controllers.ReasonApplied)
	waitTTReady(t, ns, "http", "False", controllers.ReasonWaypointRequired)
	waitAmbientPolicies(t, ns, "db", func(aps []string) error {
		if len(aps) != 1 || !strings.Contains(aps[0], "sel=map[app:api]") || !strings.Contains(aps[0], "rule=["+web+"][5432][]") {
			return fmt.Errorf("want one selector policy allowing web on 5432, got %q", aps)
		}
		return nil
	})
	if aps := ambientPolicies(t, ns, "http"); len(aps) != 0 {
		t.Errorf("an HTTP rule without a waypoint must allow nothing, got %q", aps)
	}
	if msg := ttMessage(t, ns, "db", "Accepted"); !strings.Contains(msg, "no waypoint") {
		t.Errorf("Accepted says %q, want the data plane named", msg)
	}

	applyYAML(t, ns, `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
`)
	relabel(t, ns, map[string]string{membership.DataplaneModeLabel: membership.DataplaneAmbient, translate.UseWaypointLabel: "waypoint"})
	eventually(t, "the waypoint's baseline", func() error {
		u, err := get(objOf(controllers.AuthorizationPolicyGVK), ns, translate.WaypointBaselinePrefix+"waypoint")
		if err != nil {
			return err
		}
		if got := apOf(u); got != "ref=Gateway/waypoint" {
			return fmt.Errorf("waypoint baseline %q, want an allow-nothing policy attached to the Gateway", got)
		}
		return nil
	})
	waypoint := fmt.Sprintf("cluster.local/ns/%s/sa/waypoint", ns)
	eventually(t, "TrafficTarget http applied through the waypoint", func() error {
		if s, r, err := ttCondition(ns, "http", "Ready"); err != nil || s != "True" {
			return fmt.Errorf("Ready %s/%s %w: %s; Accepted: %s", s, r, err, ttMessage(t, ns, "http", "Ready"), ttMessage(t, ns, "http", "Accepted"))
		}
		return nil
	})
	waitAmbientPolicies(t, ns, "http", func(aps []string) error {
		joined := strings.Join(aps, "\n")
		if !strings.Contains(joined, "ref=Service/api rule=["+web+"]") || !strings.Contains(joined, "/orders") ||
			!strings.Contains(joined, "sel=map[app:api] rule=["+waypoint+"]") || strings.Contains(joined, "sel=map[app:api] rule=["+web) {
			list := &unstructured.UnstructuredList{}
			list.SetGroupVersionKind(controllers.AuthorizationPolicyGVK.GroupVersion().WithKind("AuthorizationPolicyList"))
			_ = env.Client.List(context.Background(), list, client.InNamespace(ns))
			var all []string
			for _, i := range list.Items {
				all = append(all, fmt.Sprintf("%s %v %v", i.GetName(), i.GetLabels(), i.Object["spec"]))
			}
			return fmt.Errorf("want a Service policy for web's GET /orders and ztunnel admitting only the waypoint, got\n%s\nall:\n%s", joined, strings.Join(all, "\n"))
		}
		return nil
	})
	if msg := ttMessage(t, ns, "http", "Accepted"); !strings.Contains(msg, "through waypoint "+ns+"/waypoint") {
		t.Errorf("Accepted says %q, want the waypoint named", msg)
	}

	// A route attached to api that mirrors its requests to web's workloads: a request allowed
	// through api would reach web's pods too, so api is no longer a Service of api's alone.
	applyYAML(t, ns, `
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{name: http, port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mirror}
spec:
  parentRefs: [{group: "", kind: Service, name: api, port: 80}]
  rules:
  - backendRefs: [{name: api, port: 80}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: web, port: 80}}}]
`)
	waitAmbientPolicies(t, ns, "http", func(aps []string) error {
		if joined := strings.Join(aps, "\n"); strings.Contains(joined, "rule=["+web+"]") {
			return fmt.Errorf("a Service whose requests are mirrored to another workload must allow nothing, got\n%s", joined)
		}
		return nil
	})
	if err := env.Client.Delete(context.Background(), &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": map[string]any{"name": "mirror", "namespace": ns}}}); err != nil {
		t.Fatal(err)
	}
	waitAmbientPolicies(t, ns, "http", func(aps []string) error {
		if joined := strings.Join(aps, "\n"); !strings.Contains(joined, "ref=Service/api rule=["+web+"]") {
			return fmt.Errorf("without the mirror, web's rule is back, got\n%s", joined)
		}
		return nil
	})

	relabel(t, ns, map[string]string{membership.DataplaneModeLabel: membership.DataplaneAmbient})
	waitTTReady(t, ns, "http", "False", controllers.ReasonWaypointRequired)
	waitAmbientPolicies(t, ns, "http", func(aps []string) error {
		if len(aps) != 0 {
			return fmt.Errorf("without a waypoint the HTTP rule allows nothing, got %q", aps)
		}
		return nil
	})
}
