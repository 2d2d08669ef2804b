//go:build e2e

package e2e

import (
	"context"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/smi2istio/smi2istio/internal/manifests"
)

// get builds an HTTP request as the OSM demo apps send it.
func get(from Proxy, port uint32, path string, headers ...string) Request {
	return httpReq(from, port, "GET", path, headers...)
}

func httpReq(from Proxy, port uint32, method, path string, headers ...string) Request {
	h := map[string]string{}
	for i := 0; i+1 < len(headers); i += 2 {
		h[headers[i]] = headers[i+1]
	}
	return Request{From: from, Port: port, Method: method, Path: path, Headers: h}
}

func tcp(from Proxy, port uint32) Request { return Request{From: from, Port: port} }

func cluster80(svc string) string { return "outbound|80||" + svc + ".bookstore.svc.cluster.local" }

// OSM v0.2's README walk-through (the blog seed), with OSM's v0.2 manifests unchanged.
func TestOSM02Walkthrough(t *testing.T) {
	cl := newCluster(t)
	for _, f := range []string{"bookbuyer", "bookthief", "bookstore-v1", "bookwarehouse", "traffic-split"} {
		cl.applyFile(fixture("osm-v0.2-bookstore/apps/" + f + ".yaml"))
	}
	cl.joinMesh("bookbuyer", "bookthief", "bookstore", "bookwarehouse")
	buyer := cl.register("bookbuyer", "bookbuyer")
	thief := cl.register("bookthief", "bookthief")
	store := cl.register("bookstore", "bookstore-v1")
	cl.register("bookwarehouse", "bookwarehouse")

	// What the demo apps send (bookstore's Service is "bookstore.bookstore", port 80).
	ua := []string{":authority", "bookstore.bookstore", "user-agent", "Go-http-client/1.1"}
	booksBought := func(p Proxy, clientApp string) Request {
		return get(p, 80, "/books-bought", append(ua, "client-app", clientApp)...)
	}
	buyABook := func(p Proxy) Request { return get(p, 80, "/buy-a-book/new", ua...) }

	// Enforcing (the default): nobody has a path to the bookstore.
	cl.expectAccess("enforcing, no TrafficTarget", store,
		deny(booksBought(buyer, "bookbuyer")), deny(buyABook(buyer)),
		deny(booksBought(thief, "bookthief")), deny(buyABook(thief)))
	cl.expectRoutes("root split to v1", buyer, "bookstore.bookstore.svc.cluster.local", 80,
		"default -> "+cluster80("bookstore-v1")+"=100")
	cl.expectReady("TrafficSplit", "bookstore", "bookstore-split")

	// access/traffic-access.yaml: bookbuyer on the two routes (regexes and headers enforced), not bookthief.
	cl.applyFile(fixture("osm-v0.2-bookstore/access/traffic-access.yaml"))
	cl.expectReady("TrafficTarget", "bookstore", "bookstore-v1")
	cl.expectAccess("traffic-access.yaml", store,
		allow(booksBought(buyer, "bookbuyer")),
		allow(buyABook(buyer)),
		allow(get(buyer, 80, "/sell-a-book/renew", ":authority", "bookstore.bookstore")),                                                // ".*a-book.*new"
		deny(get(buyer, 80, "/buy-a-book/old", ua...)),                                                                                  // regex checked by our Envoy RBAC filter
		deny(httpReq(buyer, 80, "POST", "/buy-a-book/new", ua...)),                                                                      // method
		deny(booksBought(buyer, "bookthief")),                                                                                           // exact header
		deny(get(buyer, 80, "/books-bought", ":authority", "bookstore.bookstore", "user-agent", "curl/8.0", "client-app", "bookbuyer")), // header regex
		deny(get(buyer, 80, "/buy-a-book/new", ":authority", "evil.example")),                                                           // host header
		deny(booksBought(thief, "bookbuyer")), deny(buyABook(thief)))
	cl.expectFilter("regexes on the Envoy rung", store, "smi2istio.rbac", true)

	// The README's next step: uncomment bookthief in the TrafficTarget.
	data, err := os.ReadFile(fixture("osm-v0.2-bookstore/access/traffic-access.yaml"))
	must(t, err)
	uncommented := strings.NewReplacer("  #- kind: ServiceAccount", "  - kind: ServiceAccount",
		"    #name: bookthief", "    name: bookthief", "    #namespace: bookthief", "    namespace: bookthief").Replace(string(data))
	if uncommented == string(data) {
		t.Fatal("the fixture no longer has the commented bookthief source")
	}
	cl.applyYAML(uncommented)
	cl.expectAccess("bookthief uncommented", store,
		allow(booksBought(buyer, "bookbuyer")), allow(buyABook(buyer)),
		allow(booksBought(thief, "bookbuyer")), allow(buyABook(thief)),
		deny(get(thief, 80, "/buy-a-book/old", ua...)))

	// bookstore-v2 (with its TrafficTarget) and split-v2: everything to v2 (its port is 8080).
	cl.applyFile(fixture("osm-v0.2-bookstore/bookstore-v2/bookstore-v2.yaml"))
	store2 := cl.register("bookstore", "bookstore-v2")
	cl.applyFile(fixture("osm-v0.2-bookstore/split-v2/traffic-split-v2.yaml"))
	cl.expectRoutes("split-v2 0/100", buyer, "bookstore.bookstore.svc.cluster.local", 80,
		"default -> outbound|8080||bookstore-v2.bookstore.svc.cluster.local=100")
	cl.expectAccess("bookstore-v2's TrafficTarget", store2,
		allow(get(buyer, 8080, "/buy-a-book/new", ua...)), deny(get(thief, 8080, "/buy-a-book/new", ua...)))

	// A 50/50 edit of the split.
	split := cl.applyFile(fixture("osm-v0.2-bookstore/split-v2/traffic-split-v2.yaml"))[0]
	setWeights(t, split, 50, 50)
	cl.apply(split)
	cl.expectRoutes("50/50 edit", buyer, "bookstore.bookstore.svc.cluster.local", 80,
		"default -> "+cluster80("bookstore-v1")+"=50 outbound|8080||bookstore-v2.bookstore.svc.cluster.local=50")
	cl.expectIstiodClean()
}

// setWeights sets the backends' weights of a TrafficSplit in order.
func setWeights(t *testing.T, split *unstructured.Unstructured, weights ...int64) {
	t.Helper()
	backends, _, _ := unstructured.NestedSlice(split.Object, "spec", "backends")
	if len(backends) != len(weights) {
		t.Fatalf("split %s has %d backends, want %d", split.GetName(), len(backends), len(weights))
	}
	for i, w := range weights {
		backends[i].(map[string]any)["weight"] = w
	}
	must(t, unstructured.SetNestedSlice(split.Object, backends, "spec", "backends"))
}

// applyYAML applies the documents of a manifest held in memory (an edited fixture).
func (cl *cluster) applyYAML(manifest string) {
	cl.t.Helper()
	objs, err := manifests.Decode([]byte(manifest))
	must(cl.t, err)
	for _, o := range objs {
		cl.apply(o)
	}
}

// createNamespaces creates namespaces the way the OSM 1.2 guide does (kubectl create namespace).
func (cl *cluster) createNamespaces(names ...string) {
	cl.t.Helper()
	for _, n := range names {
		must(cl.t, cl.c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}))
	}
}

func cluster14001(subset string) string {
	return "outbound|14001|" + subset + "|bookstore.bookstore.svc.cluster.local"
}

// OSM v1.2's getting-started guide (the Azure Arc walk-through), with OSM's v1.2 manifests
// unchanged: permissive, then enforcing, then the TrafficTargets, bookstore-v2 and a split.
func TestOSM12Walkthrough(t *testing.T) {
	cl := newCluster(t)
	cl.createNamespaces("bookstore", "bookbuyer", "bookthief", "bookwarehouse")
	cl.joinMesh("bookstore", "bookbuyer", "bookthief", "bookwarehouse")
	cl.patchConfig(`{"accessMode":"Permissive"}`)
	for _, f := range []string{"bookbuyer", "bookthief", "bookstore", "bookwarehouse", "mysql"} {
		cl.applyFile(fixture("osm-v1.2-bookstore/apps/" + f + ".yaml"))
	}
	w := cl.osm12Workloads()

	// Permissive: everyone may call everyone.
	everything := func(verdict func(Request) check) []check {
		return []check{
			verdict(w.booksBought(w.buyer)), verdict(w.booksBought(w.thief)), verdict(w.buyABook(w.thief)),
		}
	}
	cl.expectAccess("permissive", w.store, everything(allow)...)
	cl.expectAccess("permissive", w.warehouse, allow(httpReq(w.store, 14001, "POST", "/restock-books")), allow(get(w.thief, 14001, "/")))
	cl.expectAccess("permissive", w.mysql, allow(tcp(w.warehouse, 3306)), allow(tcp(w.thief, 3306)))

	// Enforcing: denied until a TrafficTarget allows it.
	cl.patchConfig(`{"accessMode":"Enforcing"}`)
	cl.expectAccess("enforcing", w.store, everything(deny)...)
	cl.expectAccess("enforcing", w.warehouse, deny(httpReq(w.store, 14001, "POST", "/restock-books")))
	cl.expectAccess("enforcing", w.mysql, deny(tcp(w.warehouse, 3306)))

	// access/traffic-access-v1.yaml: exactly the demo's three paths.
	cl.applyFile(fixture("osm-v1.2-bookstore/access/traffic-access-v1.yaml"))
	cl.expectAccess("traffic-access-v1.yaml", w.store,
		allow(w.booksBought(w.buyer)), allow(w.buyABook(w.buyer)),
		deny(get(w.buyer, 14001, "/books-bought", "user-agent", "curl/8", "client-app", "bookbuyer")),
		deny(get(w.buyer, 14001, "/buy-a-book/old")),
		deny(w.booksBought(w.thief)), deny(w.buyABook(w.thief)), deny(w.buyABook(w.warehouse)))
	cl.expectFilter("regexes on the Envoy rung", w.store, "smi2istio.rbac", true)
	cl.expectAccess("traffic-access-v1.yaml", w.warehouse,
		allow(httpReq(w.store, 14001, "POST", "/restock-books")), allow(httpReq(w.store, 14001, "POST", "/anything")),
		deny(get(w.store, 14001, "/restock-books")), deny(httpReq(w.buyer, 14001, "POST", "/restock-books")),
		deny(httpReq(w.thief, 14001, "POST", "/restock-books")))
	cl.expectFilter("no regex for bookwarehouse", w.warehouse, "smi2istio.rbac", false)
	cl.expectAccess("traffic-access-v1.yaml", w.mysql,
		allow(tcp(w.warehouse, 3306)), deny(tcp(w.store, 3306)), deny(tcp(w.thief, 3306)), deny(tcp(w.warehouse, 3307)))
	for _, tt := range [][2]string{{"bookstore", "bookstore"}, {"bookwarehouse", "bookstore-access-bookwarehouse"}, {"bookwarehouse", "mysql"}} {
		cl.expectReady("TrafficTarget", tt[0], tt[1])
	}

	// bookstore-v2 and its TrafficTarget.
	cl.applyFile(fixture("osm-v1.2-bookstore/apps/bookstore-v2.yaml"))
	store2 := cl.register("bookstore", "bookstore-v2")
	cl.expectAccess("bookstore-v2", store2, allow(w.booksBought(w.buyer)), allow(w.buyABook(w.buyer)), deny(w.buyABook(w.thief)))

	// The split, then a 25/75 edit of it (subset mode: bookstore-v1/v2 select subsets of bookstore).
	cl.applyFile(fixture("osm-v1.2-bookstore/split/traffic-split-v1.yaml"))
	cl.expectRoutes("split v1", w.buyer, "bookstore.bookstore.svc.cluster.local", 14001,
		"default -> "+cluster14001("bookstore-v1")+"=100")
	split := cl.applyFile(fixture("osm-v1.2-bookstore/split/traffic-split-50-50.yaml"))[0]
	setWeights(t, split, 25, 75)
	cl.apply(split)
	cl.expectRoutes("25/75", w.buyer, "bookstore.bookstore.svc.cluster.local", 14001,
		"default -> "+cluster14001("bookstore-v1")+"=25 "+cluster14001("bookstore-v2")+"=75")
	cl.expectReady("TrafficSplit", "bookstore", "bookstore-split")
	cl.expectIstiodClean()
}

// osm12 holds the sidecars of OSM 1.2's demo.
type osm12 struct {
	buyer, thief, store, warehouse, mysql Proxy
}

func (cl *cluster) osm12Workloads() osm12 {
	return osm12{
		buyer:     cl.register("bookbuyer", "bookbuyer"),
		thief:     cl.register("bookthief", "bookthief"),
		store:     cl.register("bookstore", "bookstore"),
		warehouse: cl.register("bookwarehouse", "bookwarehouse"),
		mysql:     cl.register("bookwarehouse", "mysql"),
	}
}

func (osm12) booksBought(p Proxy) Request {
	return get(p, 14001, "/books-bought", "user-agent", "Go-http-client/1.1", "client-app", "bookbuyer")
}

func (osm12) buyABook(p Proxy) Request { return get(p, 14001, "/buy-a-book/new") }

// The OpenShift Service Mesh canary seed: header-based routing from a TrafficSplit's matches.
func TestOpenShiftHeaderCanary(t *testing.T) {
	cl := newCluster(t)
	cl.applyFile("testdata/openshift-canary.yaml")
	cl.joinMesh("bookinfo")
	page := cl.register("bookinfo", "productpage-v1")
	cl.register("bookinfo", "reviews-v1")
	cl.register("bookinfo", "reviews-v3")
	cl.expectReady("TrafficSplit", "bookinfo", "reviews-canary")
	cl.expectRoutes("end-user: jason to v3", page, "reviews.bookinfo.svc.cluster.local", 9080,
		"header end-user=~jason -> outbound|9080|reviews-v3|reviews.bookinfo.svc.cluster.local=100",
		"default -> outbound|9080||reviews.bookinfo.svc.cluster.local=100")
	cl.expectIstiodClean()
}
