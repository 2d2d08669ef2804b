package controllers_test

// Red team of the ambient access path on a real apiserver (helper H7): the holes it found, each a
// regression test now that the operator closes it. Helpers are in redteam_ambient_test.go.

import (
	"context"
	"fmt"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/smi2istio/smi2istio/internal/membership"
	"github.com/smi2istio/smi2istio/translate"
)

// A second workload (db) and its Service, for routes that send api's requests there.
const redTeamDB = `
apiVersion: v1
kind: ServiceAccount
metadata: {name: db}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: db}
spec:
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {serviceAccountName: db, containers: [{name: db, image: db, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {selector: {app: db}, ports: [{name: http, port: 80, targetPort: 8080}]}
`

// redTeamWaypointNamespace is an ambient namespace whose Services use waypoint key's waypoint.
func redTeamWaypointNamespace(t *testing.T, waypointNS string) string {
	t.Helper()
	ns := ambientNamespace(t)
	labels := map[string]string{membership.DataplaneModeLabel: membership.DataplaneAmbient, translate.UseWaypointLabel: "waypoint"}
	if waypointNS != "" {
		labels[translate.UseWaypointNamespaceLabel] = waypointNS
	}
	relabel(t, ns, labels)
	return ns
}

// sharedWaypoint is a namespace (ambient, a mesh member) holding a waypoint shared with other
// namespaces (its HBONE listener accepts them, as use-waypoint-namespace requires).
func sharedWaypoint(t *testing.T) string {
	t.Helper()
	platform := ambientNamespace(t)
	applyYAML(t, platform, redTeamWaypointGateway("istio-waypoint", "All", ""))
	return platform
}

// waitWaypointRefused waits until TrafficTarget http says its waypoint is not relied on (why in the
// Accepted message) and no policy of the namespace admits the waypoint's identity.
func waitWaypointRefused(t *testing.T, ns, waypointNS, why string) {
	const tt = "http"
	t.Helper()
	waypoint := fmt.Sprintf("cluster.local/ns/%s/sa/waypoint", waypointNS)
	eventually(t, "TrafficTarget "+ns+"/"+tt+" does not rely on the waypoint", func() error {
		if msg := ttMessage(t, ns, tt, "Accepted"); !strings.Contains(msg, "is not used") || !strings.Contains(msg, why) {
			return fmt.Errorf("Accepted: %s", msg)
		}
		if admitsPrincipal(t, ns, waypoint) {
			return fmt.Errorf("ztunnel admits the waypoint: %v", ambientPolicies(t, ns, tt))
		}
		return nil
	})
}

// noWebRuleOnAPI fails when TrafficTarget tt carries a rule for web on Service api.
func noWebRuleOnAPI(t *testing.T, ns, tt, why string) {
	const svc = "api"
	t.Helper()
	web := fmt.Sprintf("cluster.local/ns/%s/sa/web", ns)
	for _, p := range servicePolicies(t, ns, tt, svc) {
		if strings.Contains(p, "rule=["+web+"]") {
			t.Errorf("hole: %s, yet TrafficTarget %s allows web through Service %s at the waypoint: %s", why, tt, svc, p)
		}
	}
}

// A VirtualService in the destination's namespace whose host is api sends every request to api
// to db. A waypoint applies VirtualServices of the Service's (and its own) namespace to the
// Service's chain (istiod listener_waypoint.go getVirtualServiceForWaypoint), so web's GET /orders,
// allowed on api's chain, reaches db's pods as the waypoint (admitted there by db's own
// TrafficTargets). The operator reads only Gateway API routes for ServiceBackends.
func TestRedTeamAmbientVirtualServiceReroutes(t *testing.T) {
	ns := redTeamWaypointNamespace(t, "")
	applyYAML(t, ns, redTeamWaypointGateway("istio-waypoint", "", ""))
	applyYAML(t, ns, redTeamDB+`
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: api-to-db}
spec:
  hosts: [api]
  http: [{route: [{destination: {host: db}}]}]
`)
	applyYAML(t, ns, ambientApp)
	waitThroughWaypoint(t, ns, "http", ns+"/waypoint")
	noWebRuleOnAPI(t, ns, "http", "a VirtualService sends api's requests to db")
}

// The same with a GRPCRoute attached to api (GAMMA; istiod converts it like an HTTPRoute): the
// operator lists HTTPRoutes and TCPRoutes only.
func TestRedTeamAmbientGRPCRouteReroutes(t *testing.T) {
	ns := redTeamWaypointNamespace(t, "")
	applyYAML(t, ns, redTeamWaypointGateway("istio-waypoint", "", ""))
	applyYAML(t, ns, redTeamDB+`
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: api-to-db}
spec:
  parentRefs: [{group: "", kind: Service, name: api, port: 80}]
  rules: [{backendRefs: [{name: db, port: 80}]}]
`)
	applyYAML(t, ns, ambientApp)
	waitThroughWaypoint(t, ns, "http", ns+"/waypoint")
	noWebRuleOnAPI(t, ns, "http", "a GRPCRoute sends api's requests to db")
}

// A route in the waypoint's namespace applies to the Services of other namespaces that use the
// waypoint (getVirtualServiceForWaypoint keeps the waypoint's namespace too): the owner of a
// shared waypoint's namespace reroutes api's requests to db with a VirtualService there. The
// operator reads the destination's namespace only. FAIL-CLOSED §7.
func TestRedTeamAmbientRouteInWaypointNamespace(t *testing.T) {
	platform := sharedWaypoint(t)
	ns := redTeamWaypointNamespace(t, platform)
	applyYAML(t, platform, fmt.Sprintf(`
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: reroute-api}
spec:
  hosts: [api.%[1]s.svc.cluster.local]
  http: [{route: [{destination: {host: db.%[1]s.svc.cluster.local}}]}]
`, ns))
	applyYAML(t, ns, redTeamDB)
	applyYAML(t, ns, ambientApp)
	// A waypoint of another namespace is never relied on (translate waypointNotTrusted), and one
	// that accepts other namespaces' routes neither: nothing reaches api through it.
	waitWaypointRefused(t, ns, platform, "other namespaces")
	noWebRuleOnAPI(t, ns, "http", "a VirtualService in the waypoint's namespace sends api's requests to db")
}

// An HTTPRoute attached to one port of a Service (parentRefs[].port) routes that port only; the
// Service's other ports still go to the Service's own endpoints. The operator records the route's
// backends as where the whole Service sends: api (app=api: api's pods and api-v2's) counts as
// sending only to api-v1, and TrafficTarget tcp's rule (web, TCP 9090) is put on api port 9090,
// which reaches api-v2's pods (ServiceAccount api-v2, which SMI does not let web reach).
func TestRedTeamAmbientRouteOnOnePort(t *testing.T) {
	ns := redTeamWaypointNamespace(t, "")
	applyYAML(t, ns, redTeamWaypointGateway("istio-waypoint", "", ""))
	applyYAML(t, ns, `
apiVersion: v1
kind: ServiceAccount
metadata: {name: api-v2}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  selector: {matchLabels: {app: api, version: v1}}
  template:
    metadata: {labels: {app: api, version: v1}}
    spec: {serviceAccountName: api, containers: [{name: api, image: api}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api-v2}
spec:
  selector: {matchLabels: {app: api, version: v2}}
  template:
    metadata: {labels: {app: api, version: v2}}
    spec: {serviceAccountName: api-v2, containers: [{name: api, image: api}]}
---
apiVersion: v1
kind: Service
metadata: {name: api}
spec: {selector: {app: api}, ports: [{name: http, port: 80, targetPort: 8080}, {name: tcp, port: 9090}]}
---
apiVersion: v1
kind: Service
metadata: {name: api-v1}
spec: {selector: {app: api, version: v1}, ports: [{name: http, port: 80, targetPort: 8080}, {name: tcp, port: 9090}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{group: "", kind: Service, name: api, port: 80}]
  rules: [{backendRefs: [{name: api-v1, port: 80}]}]
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: t9090}
spec: {matches: {ports: [9090]}}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: tcp}
spec:
  destination: {kind: ServiceAccount, name: api}
  sources: [{kind: ServiceAccount, name: web}]
  rules: [{kind: TCPRoute, name: t9090}]
`)
	waitThroughWaypoint(t, ns, "tcp", ns+"/waypoint")
	if len(servicePolicies(t, ns, "tcp", "api-v1")) == 0 {
		t.Errorf("precondition: no policy of tcp on Service api-v1: %v", ambientPolicies(t, ns, "tcp"))
	}
	noWebRuleOnAPI(t, ns, "tcp", "api's port 9090 is not routed and reaches api-v2's pods")
}

// An HTTPRoute's backendRef names the backend's port: api port 80 is routed to api port 5432 (pod
// port 5432). The operator matches backend ports by the parent port's number or name, so it maps
// TrafficTarget http's rule (web's GET /orders, restricted to pod port 8080 by a TCPRoute) to api
// port 80; ztunnel admits the waypoint on 5432 for TrafficTarget db (warehouse's TCP): web's
// request reaches pod port 5432, where SMI allows web nothing.
func TestRedTeamAmbientBackendRefPort(t *testing.T) {
	ns := redTeamWaypointNamespace(t, "")
	applyYAML(t, ns, redTeamWaypointGateway("istio-waypoint", "", ""))
	applyYAML(t, ns, `
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
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{group: "", kind: Service, name: api, port: 80}]
  rules: [{backendRefs: [{name: api, port: 5432}]}]
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: db}
spec: {matches: {ports: [5432]}}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: web-port}
spec: {matches: {ports: [8080]}}
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
  sources: [{kind: ServiceAccount, name: warehouse}]
  rules: [{kind: TCPRoute, name: db}]
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: http}
spec:
  destination: {kind: ServiceAccount, name: api}
  sources: [{kind: ServiceAccount, name: web}]
  rules: [{kind: TCPRoute, name: web-port}, {kind: HTTPRouteGroup, name: api-routes, matches: [orders]}]
`)
	// A route smi2istio did not write makes api's reach unknown: nothing is allowed through it.
	eventually(t, "TrafficTarget http reconciled", func() error {
		if msg := ttMessage(t, ns, "http", "Accepted"); !strings.Contains(msg, "waypoint") {
			return fmt.Errorf("Accepted: %s", msg)
		}
		return nil
	})
	settle(t, &accessWrites)
	web := fmt.Sprintf("cluster.local/ns/%s/sa/web", ns)
	for _, p := range servicePolicies(t, ns, "http", "api") {
		if strings.Contains(p, "rule=["+web+"][80]") {
			t.Errorf("hole: api port 80 is routed to pod port 5432, yet web's GET /orders (pod port 8080 only) is allowed on it: %s", p)
		}
	}
}

// An ALLOW policy in Istio's root namespace attached to the GatewayClass istio-waypoint is ORed
// into every chain of every waypoint (policyattachment.go ShouldAttachPolicy), the direct-to-pod
// chain included: what it allows passes the waypoint, which the destination's ztunnel admits. Here
// it lets namespace monitoring reach everything; SMI allows it nothing. The operator checks only
// that its own waypoint baseline exists. FAIL-CLOSED §7 (the root namespace decides).
func TestRedTeamAmbientRootPolicyOnWaypointClass(t *testing.T) {
	ensureNamespace(t, "istio-system") // as the other tests make it
	applyYAML(t, "istio-system", `
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: h7-waypoints-monitoring}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: GatewayClass, name: istio-waypoint}]
  rules: [{from: [{source: {namespaces: [monitoring]}}]}]
`)
	deleteOnCleanup(t, "security.istio.io/v1beta1", "AuthorizationPolicy", "istio-system", "h7-waypoints-monitoring")
	ns := redTeamWaypointNamespace(t, "")
	applyYAML(t, ns, redTeamWaypointGateway("istio-waypoint", "", ""))
	applyYAML(t, ns, ambientApp)
	waitWaypointRefused(t, ns, ns, "GatewayClass istio-waypoint")
}

// The same with a policy of the shared waypoint's namespace attached to its Gateway: the owner of
// that namespace opens every destination of every namespace that uses the waypoint.
func TestRedTeamAmbientForeignPolicyOnSharedWaypoint(t *testing.T) {
	platform := sharedWaypoint(t)
	applyYAML(t, platform, `
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: ops}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: waypoint}]
  rules: [{from: [{source: {namespaces: [ops]}}]}]
`)
	ns := redTeamWaypointNamespace(t, platform)
	applyYAML(t, ns, ambientApp)
	waitWaypointRefused(t, ns, platform, "other namespaces")
}

// A waypoint whose HBONE listener accepts Services of other namespaces (allowedRoutes from All or
// Selector: what a waypoint shared with use-waypoint-namespace needs) serves a ServiceEntry of any
// such namespace: a tenant of namespace evil labels a ServiceEntry (STATIC endpoints: api's pod
// IPs) istio.io/use-waypoint, use-waypoint-namespace <waypoint's>, and attaches its own ALLOW
// policy to it (kind ServiceEntry, its namespace: ShouldAttachPolicy accepts it). The waypoint
// allows evil's requests on that chain and tunnels them (HBONE: the endpoint is an ambient pod,
// EndpointBuilder/SupportsTunnel) to api's pods as itself; api's ztunnel admits the waypoint. The
// waypoint baseline does not help: an ALLOW policy on the chain is ORed with it. Nothing in the
// destination's namespace can tell, so a waypoint that accepts other namespaces must not be
// admitted (or the risk be documented and opted into).
func TestRedTeamAmbientWaypointOpenToOtherNamespaces(t *testing.T) {
	ns := redTeamWaypointNamespace(t, "")
	applyYAML(t, ns, redTeamWaypointGateway("istio-waypoint", "All", ""))
	applyYAML(t, ns, ambientApp)
	waitWaypointRefused(t, ns, ns, "allowedRoutes.namespaces.from: All")
}

// A shared waypoint's namespace leaves the mesh: the baseline reconciler removes the waypoint's
// allow-nothing baseline at once, and only that removal makes the access reconciler stop admitting
// the waypoint in the namespaces that use it. Between the two, the waypoint (still a waypoint for
// istiod: mesh membership is smi2istio's notion) allows everything on its direct-to-pod chain and
// on chains without ALLOW policy, and the destinations' ztunnel admits it. FAIL-CLOSED §3: what the
// admission relies on must go last.
func TestRedTeamAmbientSharedWaypointBaselineRemovedFirst(t *testing.T) {
	// A shared waypoint is never relied on: there is no admission in ns that its baseline's removal
	// could outlive.
	platform := sharedWaypoint(t)
	ns := redTeamWaypointNamespace(t, platform)
	applyYAML(t, ns, ambientApp)
	waitWaypointRefused(t, ns, platform, "other namespaces")
}

// A pod labelled istio.io/dataplane-mode=none in an ambient namespace is not captured by ztunnel:
// nothing checks its inbound connections (no ztunnel, no sidecar), so SMI's default deny and the
// TrafficTargets are not enforced for it, whatever the policies say. Issue 18 asks for the pod-level
// override; the operator reads the namespace's label only and reports TrafficTarget db Applied
// (Ready=True) for a destination whose only workload accepts every connection.
func TestRedTeamAmbientPodOptedOutClaimsEnforced(t *testing.T) {
	ns := ambientNamespace(t)
	applyYAML(t, ns, strings.Replace(ambientApp, "    metadata: {labels: {app: api}}\n",
		"    metadata: {labels: {app: api, istio.io/dataplane-mode: none}}\n", 1))
	eventually(t, "TrafficTarget db reconciled", func() error {
		if _, _, err := ttCondition(ns, "db", "Ready"); err != nil {
			return err
		}
		return nil
	})
	settle(t, &accessWrites)
	if status, reason, err := ttCondition(ns, "db", "Ready"); err != nil || status == "True" {
		_, _, msg := ttReadyMessage(ns, "db")
		t.Errorf("hole: Ready=%s/%s (%v) for a destination whose workload is outside the ambient data plane (nothing enforces SMI for it): %s", status, reason, err, msg)
	}
}

// The same with a TLSRoute (standard since Gateway API 1.5; istiod converts mesh TLSRoutes and a
// waypoint applies them before TCP routes, getWaypointTCPRoutes): TrafficTarget tls allows web TCP
// on pod port 8443 through api, whose port 443 a TLSRoute sends to db.
func TestRedTeamAmbientTLSRouteReroutes(t *testing.T) {
	ns := redTeamWaypointNamespace(t, "")
	applyYAML(t, ns, redTeamWaypointGateway("istio-waypoint", "", ""))
	applyYAML(t, ns, fmt.Sprintf(`
apiVersion: v1
kind: ServiceAccount
metadata: {name: db}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: db}
spec:
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {serviceAccountName: db, containers: [{name: db, image: db}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {serviceAccountName: api, containers: [{name: api, image: api}]}
---
apiVersion: v1
kind: Service
metadata: {name: api}
spec: {selector: {app: api}, ports: [{name: tls, port: 443, targetPort: 8443, appProtocol: tls}]}
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {selector: {app: db}, ports: [{name: tls, port: 443, targetPort: 8443, appProtocol: tls}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: api-to-db}
spec:
  parentRefs: [{group: "", kind: Service, name: api, port: 443}]
  hostnames: [api.%s.svc.cluster.local]
  rules: [{backendRefs: [{name: db, port: 443}]}]
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: tls}
spec: {matches: {ports: [8443]}}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: tls}
spec:
  destination: {kind: ServiceAccount, name: api}
  sources: [{kind: ServiceAccount, name: web}]
  rules: [{kind: TCPRoute, name: tls}]
`, ns))
	waitThroughWaypoint(t, ns, "tls", ns+"/waypoint")
	noWebRuleOnAPI(t, ns, "tls", "a TLSRoute sends api's port 443 to db")
}

// An EndpointSlice labelled kubernetes.io/service-name=api that the EndpointSlice controller does
// not manage adds endpoints to api even though api has a selector: istiod reads every slice with the
// label (kube/controller/endpointslice.go, no managed-by filter) and tunnels to an ambient pod's IP.
// Here it holds db's pod IP: web's GET /orders, allowed on api's chain, reaches db. The operator
// judges api by its selector only.
func TestRedTeamAmbientManualEndpointSlice(t *testing.T) {
	ns := redTeamWaypointNamespace(t, "")
	applyYAML(t, ns, redTeamWaypointGateway("istio-waypoint", "", ""))
	applyYAML(t, ns, redTeamDB+`
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: api-extra
  labels: {kubernetes.io/service-name: api, endpointslice.kubernetes.io/managed-by: someone-else}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: [{addresses: [10.244.0.42], targetRef: {kind: Pod, name: db-0}}]
`)
	applyYAML(t, ns, ambientApp)
	waitThroughWaypoint(t, ns, "http", ns+"/waypoint")
	noWebRuleOnAPI(t, ns, "http", "an EndpointSlice not managed by Kubernetes adds db's pod to api")
}

// servicePolicies lists TrafficTarget tt's policies attached to Service svc, summarised by apOf.
func servicePolicies(t *testing.T, ns, tt, svc string) []string {
	t.Helper()
	var out []string
	for _, p := range ambientPolicies(t, ns, tt) {
		if strings.HasPrefix(p, "ref=Service/"+svc+" ") || p == "ref=Service/"+svc {
			out = append(out, p)
		}
	}
	return out
}

// deleteOnCleanup deletes an object at the end of the test.
func deleteOnCleanup(t *testing.T, apiVersion, kind, ns, name string) {
	t.Cleanup(func() {
		u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": apiVersion, "kind": kind,
			"metadata": map[string]any{"name": name, "namespace": ns}}}
		if err := env.Client.Delete(context.Background(), u); err != nil && !apierrors.IsNotFound(err) {
			t.Error(err)
		}
	})
}
