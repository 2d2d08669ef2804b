//go:build e2e

package e2e

import (
	"testing"
)

// userRouteAccess: bookbuyer may call ServiceAccount bookstore (bookstore-v1's pods) on the demo's
// routes; only bookthief may call ServiceAccount bookstore-v2.
const userRouteAccess = exactRungRoutes + `
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: bookstore, namespace: bookstore}
spec:
  destination: {kind: ServiceAccount, name: bookstore, namespace: bookstore}
  rules:
  - {kind: HTTPRouteGroup, name: bookstore-service-routes, matches: [buy-a-book, books-bought]}
  sources:
  - {kind: ServiceAccount, name: bookbuyer, namespace: bookbuyer}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: bookstore-v2, namespace: bookstore}
spec:
  destination: {kind: ServiceAccount, name: bookstore-v2, namespace: bookstore}
  rules:
  - {kind: HTTPRouteGroup, name: bookstore-service-routes, matches: [buy-a-book, books-bought]}
  sources:
  - {kind: ServiceAccount, name: bookthief, namespace: bookthief}
`

// TestAmbientUserRouteOverAllow: a waypoint applies the routes of a Service's namespace — the
// Gateway API's and VirtualServices (istiod's getVirtualServiceForWaypoint) — before it forwards
// as itself. A user's VirtualService that sends bookstore-v1's requests to bookstore-v2 makes the
// policy on bookstore-v1 (bookbuyer allowed) let bookbuyer reach ServiceAccount bookstore-v2,
// whose ztunnel admits the waypoint: SMI allows bookbuyer nothing there.
func TestAmbientUserRouteOverAllow(t *testing.T) {
	cl := newAmbientCluster(t, true)
	cl.ambientNamespaces("bookstore", "bookbuyer", "bookthief")
	for _, f := range []string{"bookbuyer", "bookthief", "bookstore", "bookstore-v2"} {
		cl.applyFile(fixture("osm-v1.2-bookstore/apps/" + f + ".yaml"))
	}
	cl.applyYAML(userRouteAccess)
	w := osm12{buyer: cl.registerAmbient("bookbuyer", "bookbuyer"), thief: cl.registerAmbient("bookthief", "bookthief"),
		store: cl.registerAmbient("bookstore", "bookstore")}
	store2 := cl.registerAmbient("bookstore", "bookstore-v2")
	b := bookstoreRequests{w}
	wp := cl.addWaypoint("bookstore", "waypoint")
	cl.useWaypoint("bookstore", "", wp)
	cl.expectReady("TrafficTarget", "bookstore", "bookstore")
	cl.expectReady("TrafficTarget", "bookstore", "bookstore-v2")
	cl.expectWaypointAccess("bookstore-v1", wp, "bookstore", "bookstore-v1",
		concat(checks(allow, b.allowed(w.buyer)), checks(deny, b.allowed(w.thief)))...)
	cl.expectWaypointAccess("bookstore-v2", wp, "bookstore", "bookstore-v2",
		concat(checks(allow, b.allowed(w.thief)), checks(deny, b.allowed(w.buyer)))...)
	cl.expectL4("ztunnel admits the waypoint to both", allowL4(L4{From: wp.Proxy, To: store2, Port: 14001}),
		allowL4(L4{From: wp.Proxy, To: w.store, Port: 14001}), denyL4(L4{From: w.buyer, To: store2, Port: 14001}))

	cl.applyYAML(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: v1-to-v2, namespace: bookstore}
spec:
  hosts: [bookstore-v1]
  http:
  - route:
    - destination: {host: bookstore-v2, port: {number: 14001}}
`)
	cl.expectWaypointRoutes("the user's VirtualService at the waypoint", wp, "bookstore-v1.bookstore.svc.cluster.local", 14001,
		"default -> "+waypointCluster("bookstore-v2", "bookstore", 14001, true)+"=100")
	// bookstore-v1 now sends to ServiceAccount bookstore-v2's pods, which SMI closes to bookbuyer
	cl.expectWaypointAccess("bookstore-v1 routed to bookstore-v2", wp, "bookstore", "bookstore-v1",
		checks(deny, b.allowed(w.buyer))...)
}
