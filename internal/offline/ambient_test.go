package offline_test

// `smi2istio translate` for ambient namespaces and --route-api GatewayAPI: the OSM 1.2 bookstore
// demo (testdata/fixtures/osm-v1.2-bookstore) with its namespaces labelled for ambient
// (testdata/ambient/namespaces.yaml), with and without waypoints (testdata/ambient/waypoints.yaml).
// The access outputs are compared with translate's ambient golden cases of the same demo
// (translate/testdata/ambient-osm-v1.2-bookstore*), which the operator's translation produces.
//
// go test ./internal/offline -run TestDataplaneModeSidecarIsTheOldOutput -update rewrites
// testdata/ambient/sidecar.{out,err} (first written by the CLI before ambient support).

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/smi2istio/smi2istio/internal/testing/testenv"
)

var update = flag.Bool("update", false, "rewrite testdata/ambient/sidecar.{out,err}")

func bookstore(extra ...string) []string {
	f := filepath.Join(testenv.RepoRoot(), "testdata", "fixtures", "osm-v1.2-bookstore")
	args := []string{"-f", filepath.Join(f, "apps"), "-f", filepath.Join(f, "access", "traffic-access-v1.yaml"),
		"-f", filepath.Join(f, "split", "traffic-split-50-50.yaml"), "-f", filepath.Join("testdata", "ambient", "namespaces.yaml")}
	return append(args, extra...)
}

var waypoints = filepath.Join("testdata", "ambient", "waypoints.yaml")

// runOK runs the CLI, wants exit 0 and returns the printed objects (each validated) and stderr.
func runOK(t *testing.T, stdin string, args ...string) ([]doc, string) {
	t.Helper()
	code, stdout, stderr := run(t, stdin, args...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	return docs(t, stdout), stderr
}

func find(ds []doc, pred func(doc) bool) []doc {
	var out []doc
	for _, d := range ds {
		if pred(d) {
			out = append(out, d)
		}
	}
	return out
}

func label(d doc, key string) string {
	v, _, _ := unstructured.NestedString(d.obj, "metadata", "labels", key)
	return v
}

// accessGolden is the objects of a translate ambient golden case: waypoint baselines apart.
func accessGolden(t *testing.T, name string) (access map[string]map[string]any, waypointBaselines []map[string]any) {
	t.Helper()
	data := mustRead(t, filepath.Join(testenv.RepoRoot(), "translate", "testdata", name, "ambient-output.yaml"))
	var g struct {
		Objects []map[string]any `json:"objects"`
	}
	if err := yaml.Unmarshal([]byte(data), &g); err != nil {
		t.Fatal(err)
	}
	access = map[string]map[string]any{}
	for _, o := range g.Objects {
		u := unstructured.Unstructured{Object: o}
		if u.GetLabels()["smi2istio.io/source-kind"] == "Gateway" {
			waypointBaselines = append(waypointBaselines, o)
			continue
		}
		access[u.GetKind()+" "+u.GetNamespace()+"/"+u.GetName()] = o
	}
	return access, waypointBaselines
}

func accessOf(ds []doc) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, d := range ds {
		if label(d, "smi2istio.io/source-kind") == "TrafficTarget" {
			out[d.kind+" "+d.namespace+"/"+d.name] = d.obj
		}
	}
	return out
}

func sameObjects(t *testing.T, what string, got, want map[string]map[string]any) {
	t.Helper()
	for k, w := range want {
		if g, ok := got[k]; !ok {
			t.Errorf("%s: %s missing", what, k)
		} else if !reflect.DeepEqual(g, w) {
			gy, _ := yaml.Marshal(g)
			wy, _ := yaml.Marshal(w)
			t.Errorf("%s: %s:\n%s\nwant\n%s", what, k, gy, wy)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: %s is not in the operator's translation", what, k)
		}
	}
}

func wantLines(t *testing.T, stderr string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(stderr, l) {
			t.Errorf("stderr must say %q:\n%s", l, stderr)
		}
	}
}

// Ambient namespaces without a waypoint: the split becomes an HTTPRoute attached to the root
// Service, mysql's TCP 3306 is allowed at L4 for bookwarehouse only, HTTP rules allow nothing and
// report WaypointRequired; no VirtualService, DestinationRule or EnvoyFilter.
func TestAmbientBookstoreWithoutWaypoint(t *testing.T) {
	ds, stderr := runOK(t, "", bookstore()...)
	k := kinds(ds)
	for kind, n := range map[string]int{"HTTPRoute": 1, "TCPRoute": 0, "VirtualService": 0, "DestinationRule": 0, "EnvoyFilter": 0, "PeerAuthentication": 1} {
		if k[kind] != n {
			t.Errorf("%d %s, want %d (all: %v)", k[kind], kind, n, k)
		}
	}
	var baselines []string
	for _, d := range find(ds, func(d doc) bool { return d.name == baselineName }) {
		baselines = append(baselines, d.namespace)
	}
	if want := []string{"bookbuyer", "bookstore", "bookthief", "bookwarehouse"}; !reflect.DeepEqual(baselines, want) {
		t.Errorf("baselines in %v, want %v", baselines, want)
	}
	route := find(ds, func(d doc) bool { return d.kind == "HTTPRoute" })[0]
	refs, _, _ := unstructured.NestedSlice(route.obj, "spec", "rules")
	if route.namespace != "bookstore" || route.name != "bookstore" || len(refs) != 1 ||
		!strings.Contains(mustYAML(t, route.obj), "name: bookstore-v1\n      port: 14001\n      weight: 50") {
		t.Errorf("HTTPRoute bookstore/bookstore with the 50/50 split wanted:\n%s", mustYAML(t, route.obj))
	}
	want, wpBaselines := accessGolden(t, "ambient-osm-v1.2-bookstore")
	if len(wpBaselines) != 0 {
		t.Fatalf("the golden case has waypoints")
	}
	sameObjects(t, "access outputs", accessOf(ds), want)
	wantLines(t, stderr,
		"Namespace bookstore: metadata.labels[istio.io/dataplane-mode]: Dataplane: ambient data plane",
		"TrafficSplit bookstore/bookstore-split: spec.service: RouteAPI: Gateway API routes for bookstore.bookstore.svc.cluster.local (ambient data plane)",
		"ServiceAccount bookwarehouse/mysql: spec.destination: Dataplane: ambient data plane, no waypoint",
		"TrafficTarget bookstore/bookstore: spec.rules[0]: WaypointRequired:",
		"TrafficTarget bookstore/bookstore-v2: spec.rules[0]: WaypointRequired:",
		"TrafficTarget bookwarehouse/bookstore-access-bookwarehouse: spec.rules[0]: WaypointRequired:")
	if strings.Contains(stderr, "EnvoyRung") {
		t.Errorf("no Envoy rung in ambient mode:\n%s", stderr)
	}

	// Forced by the flag, without the Namespaces' labels: the same outputs; the report says why.
	f := filepath.Join(testenv.RepoRoot(), "testdata", "fixtures", "osm-v1.2-bookstore")
	forced, stderr := runOK(t, "", "-f", filepath.Join(f, "apps"), "-f", filepath.Join(f, "access", "traffic-access-v1.yaml"),
		"-f", filepath.Join(f, "split", "traffic-split-50-50.yaml"), "--dataplane-mode", "Ambient")
	sameObjects(t, "--dataplane-mode Ambient", accessOf(forced), want)
	wantLines(t, stderr, "Namespace bookstore: spec.dataplaneMode: Dataplane: ambient data plane (dataplaneMode Ambient)")
	if k := kinds(forced); k["HTTPRoute"] != 1 || k["VirtualService"] != 0 {
		t.Errorf("--dataplane-mode Ambient: %v", k)
	}
}

// With waypoints for bookstore and bookwarehouse: each waypoint's allow-nothing policy right
// after its namespace's baseline (before anything that admits the waypoint), labelled as the
// operator's BaselineReconciler labels it; every rule enforced at the waypoint, as the operator's
// translation does it.
func TestAmbientBookstoreWithWaypoint(t *testing.T) {
	ds, stderr := runOK(t, "", bookstore("-f", waypoints)...)
	want, wpGolden := accessGolden(t, "ambient-osm-v1.2-bookstore-waypoint")
	sameObjects(t, "access outputs", accessOf(ds), want)

	var order []string
	for _, d := range ds {
		if d.kind == "AuthorizationPolicy" && (d.name == baselineName || strings.HasPrefix(d.name, "smi2istio-default-deny-waypoint-")) {
			order = append(order, d.namespace+"/"+d.name)
		}
	}
	wantOrder := []string{"bookbuyer/smi2istio-default-deny", "bookstore/smi2istio-default-deny", "bookstore/smi2istio-default-deny-waypoint-waypoint",
		"bookthief/smi2istio-default-deny", "bookwarehouse/smi2istio-default-deny", "bookwarehouse/smi2istio-default-deny-waypoint-waypoint"}
	if !reflect.DeepEqual(order, wantOrder) {
		t.Errorf("baselines %v, want %v", order, wantOrder)
	}
	for i := range wantOrder {
		if ds[i].namespace+"/"+ds[i].name != wantOrder[i] {
			t.Errorf("the baselines must come first, in order: %d is %s/%s", i, ds[i].namespace, ds[i].name)
		}
	}
	for _, d := range find(ds, func(d doc) bool { return strings.HasPrefix(d.name, "smi2istio-default-deny-waypoint-") }) {
		if label(d, "smi2istio.io/source-kind") != "Waypoints" || label(d, "smi2istio.io/source-name") != d.namespace {
			t.Errorf("waypoint baseline %s/%s: labels %v, want the operator's (source-kind Waypoints, source-name the namespace)", d.namespace, d.name, d.obj["metadata"])
		}
		matched := false
		for _, g := range wpGolden {
			gu := unstructured.Unstructured{Object: g}
			matched = matched || (gu.GetNamespace() == d.namespace && gu.GetName() == d.name && reflect.DeepEqual(g["spec"], d.obj["spec"]))
		}
		if !matched {
			t.Errorf("waypoint baseline %s/%s differs from the translation's:\n%s", d.namespace, d.name, mustYAML(t, d.obj))
		}
	}
	wantLines(t, stderr,
		"ServiceAccount bookstore/bookstore: spec.destination: Dataplane: ambient data plane, through waypoint bookstore/waypoint (ServiceAccount waypoint)",
		"ServiceAccount bookwarehouse/mysql: spec.destination: Dataplane: ambient data plane, through waypoint bookwarehouse/waypoint",
		"TrafficTarget bookstore/bookstore: spec.destination: ServiceSelectsOtherServiceAccounts: Service bookstore also sends to Deployment/bookstore-v2")
	if strings.Contains(stderr, "WaypointRequired") {
		t.Errorf("a waypoint serves every destination:\n%s", stderr)
	}

	// The waypoint's identity from Istio's annotation: ztunnel admits that principal.
	annotated := strings.Replace(mustRead(t, waypoints), "metadata: {name: waypoint, namespace: bookwarehouse}",
		"metadata: {name: waypoint, namespace: bookwarehouse, annotations: {gateway.istio.io/service-account: wp-sa}}", 1)
	ds, stderr = runOK(t, annotated, bookstore("-f", "-")...)
	out := ""
	for _, d := range accessOf(ds) {
		out += mustYAML(t, d)
	}
	if !strings.Contains(out, "cluster.local/ns/bookwarehouse/sa/wp-sa") || strings.Contains(out, "cluster.local/ns/bookwarehouse/sa/waypoint") {
		t.Errorf("ztunnel must admit the waypoint's ServiceAccount wp-sa:\n%s", out)
	}
	wantLines(t, stderr, "through waypoint bookwarehouse/waypoint (ServiceAccount wp-sa)")
}

// A waypoint is used only as the operator would: its Gateway in the input, of class
// istio-waypoint, and its baseline printed (its namespace gets a baseline: Enforcing mode, not
// Istio's root namespace). Otherwise the destination is translated for ztunnel alone.
func TestAmbientWaypointNotUsable(t *testing.T) {
	noWaypoint, _ := accessGolden(t, "ambient-osm-v1.2-bookstore")
	cases := map[string]struct {
		input string
		args  []string
		why   string
	}{
		"no Gateway": {strings.SplitN(mustRead(t, waypoints), "---\napiVersion: gateway.networking.k8s.io/v1", 2)[0], nil,
			"waypoint bookstore/waypoint is not used: its Gateway is not in the input"},
		"another class": {strings.ReplaceAll(mustRead(t, waypoints), "gatewayClassName: istio-waypoint", "gatewayClassName: istio"), nil,
			`waypoint bookstore/waypoint is not used: its Gateway's class is "istio", not istio-waypoint`},
		"the root namespace": {mustRead(t, waypoints), []string{"--root-namespace", "bookstore"}, ""},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			code, stdout, stderr := run(t, c.input, bookstore(append([]string{"-f", "-"}, c.args...)...)...)
			if c.why == "" { // TrafficTargets in the root namespace: refused, nothing printed
				if code != 1 || stdout != "" || !strings.Contains(stderr, "RootNamespace") {
					t.Errorf("exit %d, stderr %s", code, stderr)
				}
				return
			}
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			ds := docs(t, stdout)
			if wp := find(ds, func(d doc) bool { return strings.HasPrefix(d.name, "smi2istio-default-deny-waypoint-") }); len(wp) != 0 {
				t.Errorf("no waypoint baseline wanted, got %s/%s", wp[0].namespace, wp[0].name)
			}
			got := map[string]map[string]any{}
			for k, v := range accessOf(ds) {
				if strings.Contains(k, " bookstore/") {
					got[k] = v
				}
			}
			want := map[string]map[string]any{}
			for k, v := range noWaypoint {
				if strings.Contains(k, " bookstore/") {
					want[k] = v
				}
			}
			sameObjects(t, name, got, want)
			wantLines(t, stderr, c.why, "TrafficTarget bookstore/bookstore: spec.rules[0]: WaypointRequired:")
		})
	}

	// The waypoint's namespace gets no baseline (no SMI object, not labelled for the mesh): not used.
	other := `
apiVersion: v1
kind: Namespace
metadata: {name: bookstore, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: shared, istio.io/use-waypoint-namespace: gateways}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: shared, namespace: gateways}
spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}
`
	ds, stderr := runOK(t, other, bookstore("-f", "-")...)
	wantLines(t, stderr, "waypoint gateways/shared is not used: its deny-by-default AuthorizationPolicy smi2istio-default-deny-waypoint-shared is not printed (namespace gateways must be a mesh member in Enforcing mode")
	if n := len(find(ds, func(d doc) bool { return d.namespace == "gateways" })); n != 0 {
		t.Errorf("%d objects in gateways", n)
	}
	// Once the namespace is a member, its waypoint's baseline is printed and the waypoint is used.
	ds, stderr = runOK(t, other+"---\n{apiVersion: v1, kind: Namespace, metadata: {name: gateways, labels: {istio.io/dataplane-mode: ambient}}}\n", bookstore("-f", "-")...)
	wantLines(t, stderr, "through waypoint gateways/shared (ServiceAccount shared)")
	if n := len(find(ds, func(d doc) bool {
		return d.namespace == "gateways" && d.name == "smi2istio-default-deny-waypoint-shared"
	})); n != 1 {
		t.Errorf("the waypoint baseline in gateways: %d", n)
	}
	// Permissive: no baseline, hence no waypoint, and nothing enforced.
	code, stdout, stderr := run(t, mustRead(t, waypoints), bookstore("-f", "-", "--access-mode", "Permissive")...)
	if code != 0 || strings.Contains(stdout, "AuthorizationPolicy") || !strings.Contains(stderr, "TrafficTarget bookstore/bookstore: spec: NotEnforced") {
		t.Errorf("Permissive: exit %d, stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

// Where a Service sends counts the routes this run prints and the input's (backends and mirrors):
// a root Service selecting only v1's pods still reaches v2's through the split's HTTPRoute, so no
// rule of bookstore (v1) is allowed through the root; and a user's route that mirrors
// bookstore-v1 to bookstore-v2 does the same for bookstore-v1.
func TestAmbientServiceBackends(t *testing.T) {
	// Exact matches only, so that rules are allowed at all; the root Service selects v1 only.
	override := mustRead(t, waypoints) + `
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: bookstore-service-routes, namespace: bookstore}
spec:
  matches:
  - {name: books-bought, pathRegex: /books-bought, methods: [GET], headers: [{client-app: bookbuyer}]}
  - {name: buy-a-book, pathRegex: /buy-a-book/new, methods: [GET]}
---
apiVersion: v1
kind: Service
metadata: {name: bookstore, namespace: bookstore, labels: {app: bookstore}}
spec:
  ports: [{port: 14001, name: bookstore-port}]
  selector: {app: bookstore, version: v1}
`
	// targets: the Services each AuthorizationPolicy of TrafficTarget bookstore with rules targets.
	targets := func(ds []doc) []string {
		var out []string
		for _, d := range ds {
			if d.kind != "AuthorizationPolicy" || label(d, "smi2istio.io/source-name") != "bookstore" {
				continue
			}
			rules, _, _ := unstructured.NestedSlice(d.obj, "spec", "rules")
			refs, _, _ := unstructured.NestedSlice(d.obj, "spec", "targetRefs")
			for _, r := range refs {
				if m := r.(map[string]any); m["kind"] == "Service" && len(rules) > 0 {
					out = append(out, m["name"].(string))
				}
			}
		}
		sort.Strings(out)
		return out
	}
	ds, stderr := runOK(t, override, bookstore("-f", "-")...)
	if got := targets(ds); !reflect.DeepEqual(got, []string{"bookstore-v1"}) {
		t.Errorf("bookstore's rules allowed through %v, want only bookstore-v1 (the root also sends to v2 by the split's route):\n%s", got, stderr)
	}
	wantLines(t, stderr, "TrafficTarget bookstore/bookstore: spec.destination: ServiceSelectsOtherServiceAccounts: Service bookstore also sends to Deployment/bookstore-v2")

	// The mirror filter on the rule, or on the backend.
	for name, rule := range map[string]string{
		"rule":    `{backendRefs: [{name: bookstore-v1, port: 14001}], filters: [{type: RequestMirror, requestMirror: {backendRef: {name: bookstore-v2, port: 14001}}}]}`,
		"backend": `{backendRefs: [{name: bookstore-v1, port: 14001, filters: [{type: RequestMirror, requestMirror: {backendRef: {name: bookstore-v2, port: 14001}}}]}]}`,
	} {
		mirror := override + `
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: v1-mirror, namespace: bookstore}
spec:
  parentRefs: [{group: "", kind: Service, name: bookstore-v1, port: 14001}]
  rules: [` + rule + `]
`
		ds, stderr = runOK(t, mirror, bookstore("-f", "-")...)
		if got := targets(ds); len(got) != 0 {
			t.Errorf("mirror on the %s: bookstore's rules allowed through %v: bookstore-v1 mirrors to v2's pods, nothing may be allowed through it", name, got)
		}
		wantLines(t, stderr, "Service bookstore-v1 may send to ServiceAccount bookstore's workloads and others (it is routed to Service HTTPRoute bookstore/v1-mirror (a route smi2istio did not write)")
	}

	// A route of smi2istio's own in the input (a dump of a cluster) is replaced by this run's.
	own := override + `
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bookstore, namespace: bookstore, labels: {app.kubernetes.io/managed-by: smi2istio, smi2istio.io/source-kind: TrafficSplit, smi2istio.io/source-name: bookstore-split}}
spec:
  parentRefs: [{group: "", kind: Service, name: bookstore}]
  rules: [{backendRefs: [{name: bookstore-v1, port: 14001}]}]
`
	if ds, _ := runOK(t, own, bookstore("-f", "-")...); !reflect.DeepEqual(targets(ds), []string{"bookstore-v1"}) {
		t.Errorf("with smi2istio's route in the input: %v", targets(ds))
	}
}

// A user's Gateway API route attached to the split's root Service: Conflict, in either route API,
// as the operator reports it; nothing printed.
func TestSplitConflictsWithAUsersRoute(t *testing.T) {
	user := `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mine, namespace: bookbuyer}
spec:
  parentRefs: [{kind: Service, name: bookstore, namespace: bookstore}]
  rules: [{backendRefs: [{name: bookstore-v1, namespace: bookstore, port: 14001}]}]
`
	for _, args := range [][]string{nil, {"--dataplane-mode", "Sidecar"}} {
		code, stdout, stderr := run(t, user, bookstore(append([]string{"-f", "-"}, args...)...)...)
		if code != 1 || stdout != "" || !strings.Contains(stderr, "TrafficSplit bookstore/bookstore-split: spec.service: Conflict: HTTPRoute bookbuyer/mine already routes Service bookstore/bookstore") {
			t.Errorf("%v: exit %d, stdout %q, stderr %s", args, code, stdout, stderr)
		}
	}
}

// --dataplane-mode Sidecar prints exactly what the CLI printed before ambient support, whatever the
// Namespaces' labels; from --config too, and the flag overrides the file.
func TestDataplaneModeSidecarIsTheOldOutput(t *testing.T) {
	code, stdout, stderr := run(t, "", bookstore("--dataplane-mode", "Sidecar")...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	outFile, errFile := filepath.Join("testdata", "ambient", "sidecar.out"), filepath.Join("testdata", "ambient", "sidecar.err")
	if *update {
		for f, content := range map[string]string{outFile: stdout, errFile: stderr} {
			if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	if want := mustRead(t, outFile); stdout != want {
		t.Errorf("--dataplane-mode Sidecar: stdout differs from %s:\n%s", outFile, stdout)
	}
	if want := mustRead(t, errFile); stderr != want {
		t.Errorf("--dataplane-mode Sidecar: stderr differs from %s:\n%s", errFile, stderr)
	}
	docs(t, stdout) // every object valid

	cfg := func(spec string) string {
		p := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(p, []byte("apiVersion: smi2istio.io/v1alpha1\nkind: SMI2IstioConfig\nmetadata: {name: default}\nspec: "+spec+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for name, args := range map[string][]string{
		"--config":         {"--config", cfg("{dataplaneMode: Sidecar}")},
		"flag over config": {"--config", cfg("{dataplaneMode: Ambient, routeAPI: GatewayAPI}"), "--dataplane-mode", "Sidecar", "--route-api", "VirtualService"},
	} {
		code, got, stderr := run(t, "", bookstore(args...)...)
		if code != 0 || got != stdout {
			t.Errorf("%s: exit %d, stdout differs from --dataplane-mode Sidecar's:\n%s\n%s", name, code, got, stderr)
		}
	}
	// And the config's Ambient is used when no flag overrides it.
	if code, got, _ := run(t, "", bookstore("--config", cfg("{dataplaneMode: Ambient}"), "--dataplane-mode", "Auto")...); code != 0 || !strings.Contains(got, "kind: HTTPRoute") {
		t.Errorf("--dataplane-mode Auto over the config (namespaces labelled ambient): exit %d, no HTTPRoute", code)
	}
}

// --route-api GatewayAPI in sidecar namespaces: the split's HTTPRoute instead of the VirtualService
// and DestinationRule; the access outputs are the sidecar ones (Envoy rung included).
func TestRouteAPIGatewayAPI(t *testing.T) {
	f := filepath.Join(testenv.RepoRoot(), "testdata", "fixtures", "osm-v1.2-bookstore")
	args := []string{"-f", filepath.Join(f, "apps"), "-f", filepath.Join(f, "access", "traffic-access-v1.yaml"), "-f", filepath.Join(f, "split", "traffic-split-50-50.yaml")}
	vs, _ := runOK(t, "", args...)
	gw, stderr := runOK(t, "", append(args, "--route-api", "GatewayAPI")...)
	if k := kinds(vs); k["VirtualService"] != 1 || k["DestinationRule"] != 1 || k["HTTPRoute"] != 0 {
		t.Errorf("default route API: %v", k)
	}
	if k := kinds(gw); k["VirtualService"] != 0 || k["DestinationRule"] != 0 || k["HTTPRoute"] != 1 || k["EnvoyFilter"] == 0 {
		t.Errorf("--route-api GatewayAPI: %v", k)
	}
	sameObjects(t, "access outputs", accessOf(gw), accessOf(vs))
	wantLines(t, stderr, "TrafficSplit bookstore/bookstore-split: spec.service: RouteAPI: Gateway API routes for bookstore.bookstore.svc.cluster.local (sidecar data plane)")
	if strings.Contains(stderr, "Dataplane:") {
		t.Errorf("sidecar namespaces are not named:\n%s", stderr)
	}

	// A TCP root port: a TCPRoute in v1 (the pinned Gateway API's).
	tcp := `
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {selector: {app: db}, ports: [{port: 5432, name: tcp-db}]}
---
apiVersion: v1
kind: Service
metadata: {name: db-v2, namespace: shop}
spec: {selector: {app: db, v: "2"}, ports: [{port: 5432, name: tcp-db}]}
---
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: db, namespace: shop}
spec: {service: db, backends: [{service: db-v2, weight: 1}]}
`
	ds, _ := runOK(t, tcp, "-f", "-", "--route-api", "GatewayAPI")
	routes := find(ds, func(d doc) bool { return d.kind == "TCPRoute" })
	if len(routes) != 1 || routes[0].obj["apiVersion"] != "gateway.networking.k8s.io/v1" {
		t.Errorf("want one TCPRoute in gateway.networking.k8s.io/v1, got %v", kinds(ds))
	}
}

func mustYAML(t *testing.T, v any) string {
	t.Helper()
	y, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(y)
}
