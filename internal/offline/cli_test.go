package offline_test

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/smi2istio/smi2istio/internal/offline"
	"github.com/smi2istio/smi2istio/internal/testing/istiocheck"
	"github.com/smi2istio/smi2istio/internal/testing/testenv"
	"github.com/smi2istio/smi2istio/translate"
)

func run(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := offline.Main(args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

// `smi2istio translate -f <OSM 0.2 demo dir>` prints valid Istio YAML for its split.
func TestTranslateOSMDemoDirectory(t *testing.T) {
	code, stdout, stderr := run(t, "", "-f", filepath.Join(testenv.RepoRoot(), "testdata", "fixtures", "osm-v0.2-bookstore"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	objs, err := offline.Decode([]byte(stdout))
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.GetKind()]++
		if err := istiocheck.Validate(o); err != nil {
			t.Errorf("%v\n%s", err, stdout)
		}
	}
	// Host mode (the root selects no backend pod): a VirtualService and no DestinationRule; the
	// TrafficTargets of both bookstore versions: policies, and the Envoy rung for the regexes; the
	// bookstore namespace's baseline.
	want := map[string]int{"VirtualService": 1, "AuthorizationPolicy": 3, "PeerAuthentication": 2, "EnvoyFilter": 2}
	for k, n := range want {
		if kinds[k] != n {
			t.Errorf("%d %s, want %d (all: %v)", kinds[k], k, n, kinds)
		}
	}
	// The later split-v2 document replaces the first (as kubectl apply would): 0/100.
	if !strings.Contains(stdout, "host: bookstore-v2.bookstore.svc.cluster.local") || !strings.Contains(stdout, "weight: 100") {
		t.Errorf("want the v2 split (bookstore-v2 at 100):\n%s", stdout)
	}
	if !strings.Contains(stderr, "TrafficSplit bookstore/bookstore-split: spec.service: RoutingMode: Host mode") {
		t.Errorf("the report must say which mode was used: %q", stderr)
	}
}

func TestTranslateFailures(t *testing.T) {
	const invalid = `
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: bad, namespace: shop}
spec: {service: web, backends: [{service: web, weight: -1}]}
`
	code, stdout, stderr := run(t, invalid, "-f", "-")
	if code != 1 || stdout != "" {
		t.Errorf("invalid input: exit %d, stdout %q; want exit 1 and no output", code, stdout)
	}
	// The CRD's minimum rejects it before translation, as kubectl apply would.
	if !strings.Contains(stderr, "TrafficSplit shop/bad: spec.backends[0].weight: Invalid value: -1") {
		t.Errorf("the message must name the object and field: %q", stderr)
	}

	if code, _, stderr := run(t, "kind: [", "-f", "-"); code != 1 || !strings.Contains(stderr, "stdin") {
		t.Errorf("malformed YAML: exit %d, %q", code, stderr)
	}
	if code, _, _ := run(t, ""); code != 2 {
		t.Errorf("no -f: exit %d, want 2", code)
	}
	if code, _, stderr := run(t, "", "-f", "/does/not/exist"); code != 1 || !strings.Contains(stderr, "/does/not/exist") {
		t.Errorf("missing file: exit %d, %q", code, stderr)
	}
}

// shop is a destination api with two TrafficTargets: web-reads (a regex the AuthorizationPolicy
// only widens: the Envoy rung, hence an EnvoyFilter) and batch-writes.
const shop = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {serviceAccountName: api, containers: [{name: app, image: app}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {serviceAccountName: web, containers: [{name: app, image: app}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: batch, namespace: shop}
spec:
  selector: {matchLabels: {app: batch}}
  template:
    metadata: {labels: {app: batch}}
    spec: {serviceAccountName: batch, containers: [{name: app, image: app}]}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: api, namespace: shop}
spec:
  matches:
  - name: read
    pathRegex: ".*/reports/[0-9]+"
    methods: [GET, HEAD]
  - name: write
    pathRegex: "/api/orders/[^/]+/items"
    methods: [POST]
    headers: {x-team: payments}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: web-reads, namespace: shop}
spec:
  destination: {kind: ServiceAccount, name: api, namespace: shop}
  sources: [{kind: ServiceAccount, name: web, namespace: shop}]
  rules: [{kind: HTTPRouteGroup, name: api, matches: [read]}]
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: batch-writes, namespace: shop}
spec:
  destination: {kind: ServiceAccount, name: api, namespace: shop}
  sources: [{kind: ServiceAccount, name: batch, namespace: shop}]
  rules: [{kind: HTTPRouteGroup, name: api, matches: [write]}]
`

// invalidSibling is a third TrafficTarget for api that sorts last and cannot be translated.
const invalidSibling = `
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: broken, namespace: shop}
spec:
  matches: [{name: all, pathRegex: "/api/(orders"}]
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: zz-broken, namespace: shop}
spec:
  destination: {kind: ServiceAccount, name: api, namespace: shop}
  sources: [{kind: ServiceAccount, name: web, namespace: shop}]
  rules: [{kind: HTTPRouteGroup, name: broken}]
`

// baselineName is the operator's (controllers.BaselineName).
const baselineName = "smi2istio-default-deny"

func mustRead(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

type doc struct {
	kind, namespace, name string
	obj                   map[string]any
}

func docs(t *testing.T, out string) []doc {
	t.Helper()
	objs, err := offline.Decode([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	var ds []doc
	for _, o := range objs {
		if err := validate(o); err != nil {
			t.Errorf("%v", err)
		}
		ds = append(ds, doc{o.GetKind(), o.GetNamespace(), o.GetName(), o.Object})
	}
	return ds
}

// validate checks a printed object as the translation does (translate.ValidateOutput,
// ValidateGatewayOutput) and as Istio and the apiserver would (Istio's CRDs and validation; the
// Gateway API's CRDs).
func validate(o *unstructured.Unstructured) error {
	if o.GroupVersionKind().Group == "gateway.networking.k8s.io" {
		if err := translate.ValidateGatewayOutput(o); err != nil {
			return err
		}
		return istiocheck.ValidateGatewayAPI(o)
	}
	if err := translate.ValidateOutput(o); err != nil {
		return err
	}
	return istiocheck.Validate(o)
}

func kinds(ds []doc) map[string]int {
	out := map[string]int{}
	for _, d := range ds {
		out[d.kind]++
	}
	return out
}

// (a) An unknown or misspelt field of an SMI object is an error naming the object and the field,
// as kubectl apply with smi2istio's CRDs would say: never a silently dropped condition.
func TestTranslateRejectsWhatTheCRDsReject(t *testing.T) {
	cases := map[string]struct{ input, want string }{
		"misspelt pathRegex": {`
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: admin, namespace: shop}
spec:
  matches: [{name: admin, pathRegexp: "/admin/.*", methods: [GET]}]
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: web-admin, namespace: shop}
spec:
  destination: {kind: ServiceAccount, name: api, namespace: shop}
  sources: [{kind: ServiceAccount, name: web, namespace: shop}]
  rules: [{kind: HTTPRouteGroup, name: admin}]
`, `HTTPRouteGroup shop/admin: spec.matches[0].pathRegexp: Invalid value: null: unknown field`},
		"unknown field in a TrafficTarget's spec": {`
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: web-admin}
spec:
  destination: {kind: ServiceAccount, name: api}
  sources: [{kind: ServiceAccount, name: web}]
  rule: [{kind: HTTPRouteGroup, name: admin}]
`, `TrafficTarget default/web-admin: spec.rule: Invalid value: null: unknown field`},
		"unknown metadata field": {`
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: s, namespace: shop, label: {a: b}}
spec: {service: web, backends: [{service: web, weight: 1}]}
`, `TrafficSplit shop/s: metadata.label: Invalid value: null: unknown field`},
		"a value outside the schema": {`
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: t, namespace: shop}
spec:
  destination: {kind: ServiceAccount, name: api}
  sources: [{kind: Group, name: web}]
`, `TrafficTarget shop/t: spec.sources[0].kind: Unsupported value: "Group"`},
		"an x-kubernetes-validations rule": {`
apiVersion: split.smi-spec.io/v1alpha1
kind: TrafficSplit
metadata: {name: s, namespace: shop}
spec: {service: web, backends: [{service: web, weight: "-1"}]}
`, `TrafficSplit shop/s: spec.backends[0].weight: Invalid value: "-1": weight must be a non-negative quantity`},
		"an SMI version no CRD serves": {`
apiVersion: specs.smi-spec.io/v1alpha9
kind: HTTPRouteGroup
metadata: {name: g, namespace: shop}
`, `HTTPRouteGroup shop/g: apiVersion: no kind "HTTPRouteGroup" is served in version "specs.smi-spec.io/v1alpha9"`},
		"an invalid name": {`
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: DB, namespace: shop}
`, `TCPRoute shop/DB: metadata.name: Invalid value: "DB"`},
		"a duplicate key": {`
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: g, namespace: shop}
spec:
  matches: [{name: m, pathRegex: "/public", pathRegex: ".*"}]
`, `key "pathRegex" already set`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			code, stdout, stderr := run(t, c.input, "-f", "-")
			if code != 1 || stdout != "" {
				t.Errorf("exit %d, stdout %q: want exit 1 and nothing printed", code, stdout)
			}
			if !strings.Contains(stderr, c.want) {
				t.Errorf("stderr %q\nwant it to contain %q", stderr, c.want)
			}
		})
	}
	// What the CRDs accept is accepted: headers keep any shape (checked by the translation), a
	// status written by smi2istio is ignored, as by kubectl apply.
	ok := shop + `
---
apiVersion: specs.smi-spec.io/v1alpha2
kind: HTTPRouteGroup
metadata: {name: listed, namespace: shop}
matches: [{name: m, pathRegex: /x, headers: [{x-a: b}]}]
status:
  conditions: [{type: Ready, status: "True", reason: Applied, message: ok, lastTransitionTime: "2024-01-01T00:00:00Z"}]
`
	if code, _, stderr := run(t, ok, "-f", "-"); code != 0 {
		t.Errorf("valid input: exit %d: %s", code, stderr)
	}
}

// (b) A failing run prints nothing on stdout, though some objects could be translated: a partial
// output piped into kubectl apply would apply half of the intent.
func TestTranslateFailurePrintsNothing(t *testing.T) {
	input := shop + invalidSibling + `
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-v2, namespace: shop}
spec: {selector: {app: web, v: "2"}, ports: [{port: 80}]}
---
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: web, namespace: shop}
spec: {service: web, backends: [{service: web-v2, weight: 1}]}
`
	code, stdout, stderr := run(t, input, "-f", "-")
	if code != 1 || stdout != "" {
		t.Errorf("exit %d, stdout:\n%s\nwant exit 1 and nothing on stdout", code, stdout)
	}
	for _, want := range []string{"TrafficTarget shop/zz-broken: HTTPRouteGroup broken spec.matches[0].pathRegex: InvalidRegex", "nothing printed"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr %q\nwant %q", stderr, want)
		}
	}
}

// (c) The destination's EnvoyFilter, which makes its widened AuthorizationPolicies exact, is
// rendered whenever they are, whichever TrafficTarget fails, and before them (apply order).
func TestEnvoyFilterGoesWithItsDestination(t *testing.T) {
	check := func(t *testing.T, out string) {
		t.Helper()
		ds := docs(t, out)
		filter, firstPolicy := -1, -1
		for i, d := range ds {
			switch {
			case d.kind == "EnvoyFilter" && filter < 0:
				filter = i
			case d.kind == "AuthorizationPolicy" && d.name != baselineName && firstPolicy < 0:
				firstPolicy = i
			}
		}
		if firstPolicy < 0 {
			t.Fatalf("no AuthorizationPolicy:\n%s", out)
		}
		if filter < 0 || filter > firstPolicy {
			t.Errorf("EnvoyFilter at %d, first AuthorizationPolicy at %d: the filter must come first\n%s", filter, firstPolicy, out)
		}
	}
	t.Run("an invalid sibling sorts last", func(t *testing.T) {
		objs, err := offline.Decode([]byte(shop + invalidSibling))
		if err != nil {
			t.Fatal(err)
		}
		set, err := offline.Load(objs)
		if err != nil {
			t.Fatal(err)
		}
		out, _, failed, err := offline.Render(set.Translate(translate.Mesh{}))
		if err != nil || failed != 1 {
			t.Fatalf("failed %d, %v; want 1 failure", failed, err)
		}
		check(t, string(out))
	})
	t.Run("a successful run", func(t *testing.T) {
		code, stdout, stderr := run(t, shop, "-f", "-")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if !strings.Contains(stderr, "EnvoyRung") && !strings.Contains(stderr, "Envoy") {
			t.Errorf("the report must name the Envoy rung: %q", stderr)
		}
		check(t, stdout)
	})
}

// (d) Enforcing: one allow-nothing baseline per namespace holding SMI objects, as the operator
// writes it, never in Istio's root namespace; Permissive: no baseline and no access output.
func TestNamespaceBaselines(t *testing.T) {
	input := shop + `
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: tools}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: db, namespace: data}
spec: {matches: {ports: [5432]}}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: any, namespace: istio-system}
`
	baselines := func(ds []doc) []string {
		var out []string
		for _, d := range ds {
			if d.name == baselineName {
				out = append(out, d.namespace)
			}
		}
		return out
	}
	code, stdout, stderr := run(t, input, "-f", "-")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	ds := docs(t, stdout)
	if got := baselines(ds); strings.Join(got, ",") != "data,shop" {
		t.Errorf("baselines in %v, want data and shop (SMI objects, not Istio's root namespace)", got)
	}
	if len(ds) < 2 || ds[0].name != baselineName || ds[1].name != baselineName {
		t.Errorf("the baselines must come first (deny before allow):\n%s", stdout)
	}
	want := map[string]any{
		"apiVersion": "security.istio.io/v1beta1", "kind": "AuthorizationPolicy",
		"metadata": map[string]any{"name": "smi2istio-default-deny", "namespace": "data", "labels": map[string]any{
			"app.kubernetes.io/managed-by": "smi2istio", "smi2istio.io/source-kind": "Namespace", "smi2istio.io/source-name": "data"}},
		"spec": map[string]any{},
	}
	if !reflect.DeepEqual(ds[0].obj, want) {
		t.Errorf("baseline:\n%v\nwant\n%v", ds[0].obj, want)
	}
	if !strings.Contains(stderr, "Namespace istio-system: spec.istioNamespace: RootNamespace") {
		t.Errorf("the report must say why istio-system has no baseline: %q", stderr)
	}

	// Another root namespace.
	code, stdout, stderr = run(t, input, "-f", "-", "--root-namespace", "data")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if got := baselines(docs(t, stdout)); strings.Join(got, ",") != "istio-system,shop" {
		t.Errorf("--root-namespace data: baselines in %v, want istio-system and shop", got)
	}
	// A TrafficTarget in the root namespace would allow its sources into every namespace.
	code, stdout, stderr = run(t, input, "-f", "-", "--root-namespace", "shop")
	if code != 1 || stdout != "" || !strings.Contains(stderr, "TrafficTarget shop/web-reads: metadata.namespace: RootNamespace") {
		t.Errorf("TrafficTargets in the root namespace: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	code, stdout, stderr = run(t, input, "-f", "-", "--access-mode", "Permissive")
	if code != 0 {
		t.Fatalf("Permissive: exit %d: %s", code, stderr)
	}
	if k := kinds(docs(t, stdout)); k["AuthorizationPolicy"]+k["PeerAuthentication"]+k["EnvoyFilter"] != 0 {
		t.Errorf("Permissive: no baseline and no access output, got %v:\n%s", k, stdout)
	}
	for _, w := range []string{"Namespace shop: spec.accessMode: NotEnforced", "TrafficTarget shop/web-reads: spec: NotEnforced"} {
		if !strings.Contains(stderr, w) {
			t.Errorf("Permissive: the report must say %q: %q", w, stderr)
		}
	}
}

// (e) The settings of SMI2IstioConfig, from flags or from a file holding one; flags win.
func TestSettings(t *testing.T) {
	principals := func(out string) string {
		var ps []string
		for _, l := range strings.Split(out, "\n") {
			if l = strings.TrimSpace(l); strings.HasPrefix(l, "- ") && strings.Contains(l, "/ns/shop/sa/batch") {
				ps = append(ps, strings.TrimPrefix(l, "- "))
			}
		}
		return strings.Join(ps, ",")
	}
	code, stdout, stderr := run(t, shop, "-f", "-", "--trust-domain", "example.org", "--regex-policy", "Reject", "--min-istio-version", "1.22")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if p := principals(stdout); !strings.HasPrefix(p, "example.org/ns/shop/sa/batch") {
		t.Errorf("--trust-domain: principals %q", p)
	}
	if k := kinds(docs(t, stdout)); k["EnvoyFilter"] != 0 {
		t.Errorf("--regex-policy Reject: %d EnvoyFilters", k["EnvoyFilter"])
	}
	if !strings.Contains(stdout, "/api/orders/{*}/items") {
		t.Errorf("--min-istio-version 1.22: want the path template:\n%s", stdout)
	}
	if code, stdout, _ := run(t, shop, "-f", "-", "--min-istio-version", "1.21"); code != 0 || strings.Contains(stdout, "{*}") {
		t.Errorf("--min-istio-version 1.21: exit %d, and no path template wanted:\n%s", code, stdout)
	}

	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg := write("config.yaml", `
apiVersion: smi2istio.io/v1alpha1
kind: SMI2IstioConfig
metadata: {name: default}
spec: {accessMode: Enforcing, trustDomain: from.file, regexPolicy: Reject, minIstioVersion: "1.22", membership: {provider: Labels}}
`)
	code, stdout, stderr = run(t, shop, "-f", "-", "--config", cfg)
	if code != 0 {
		t.Fatalf("--config: exit %d: %s", code, stderr)
	}
	if p := principals(stdout); !strings.HasPrefix(p, "from.file/") || kinds(docs(t, stdout))["EnvoyFilter"] != 0 {
		t.Errorf("--config: principals %q, want from.file and no EnvoyFilter:\n%s", p, stdout)
	}
	code, stdout, stderr = run(t, shop, "-f", "-", "--config", cfg, "--trust-domain", "flag.org", "--regex-policy", "Envoy")
	if code != 0 {
		t.Fatalf("--config and flags: exit %d: %s", code, stderr)
	}
	if p := principals(stdout); !strings.HasPrefix(p, "flag.org/") || kinds(docs(t, stdout))["EnvoyFilter"] == 0 {
		t.Errorf("flags must override the file: principals %q, EnvoyFilters %d", p, kinds(docs(t, stdout))["EnvoyFilter"])
	}
	if code, stdout, _ := run(t, shop, "-f", "-", "--config", cfg, "--access-mode", "Permissive"); code != 0 || strings.Contains(stdout, "AuthorizationPolicy") {
		t.Errorf("--access-mode Permissive over the file: exit %d:\n%s", code, stdout)
	}

	// An SMI2IstioConfig among the inputs is not read, and the user is told so.
	if code, _, stderr := run(t, shop+"\n---\n"+mustRead(t, cfg), "-f", "-"); code != 0 || !strings.Contains(stderr, "pass its file with --config") {
		t.Errorf("a config among the inputs: exit %d, stderr %q", code, stderr)
	}

	bad := map[string]struct {
		args []string
		code int
		want string
	}{
		"misspelt config field": {[]string{"--config", write("typo.yaml", `
apiVersion: smi2istio.io/v1alpha1
kind: SMI2IstioConfig
metadata: {name: default}
spec: {acessMode: Permissive}
`)}, 1, "spec.acessMode: Invalid value: null: unknown field"},
		"config value outside the schema": {[]string{"--config", write("enum.yaml", `
apiVersion: smi2istio.io/v1alpha1
kind: SMI2IstioConfig
metadata: {name: default}
spec: {regexPolicy: Allow}
`)}, 1, `spec.regexPolicy: Unsupported value: "Allow"`},
		"not a config":  {[]string{"--config", write("other.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")}, 1, "want exactly one smi2istio.io/v1alpha1 SMI2IstioConfig"},
		"access mode":   {[]string{"--access-mode", "Strict"}, 2, `--access-mode: Unsupported value: "Strict"`},
		"regex policy":  {[]string{"--regex-policy", "envoy"}, 2, `--regex-policy: Unsupported value: "envoy"`},
		"istio version": {[]string{"--min-istio-version", "1.22.1"}, 2, "--min-istio-version: Invalid value"},
		"trust domain":  {[]string{"--trust-domain", "a/b"}, 2, "--trust-domain: Invalid value"},
		"dataplane":     {[]string{"--dataplane-mode", "ambient"}, 2, `--dataplane-mode: Unsupported value: "ambient"`},
		"route API":     {[]string{"--route-api", "HTTPRoute"}, 2, `--route-api: Unsupported value: "HTTPRoute"`},
		"config dataplane": {[]string{"--config", write("dp.yaml", `
apiVersion: smi2istio.io/v1alpha1
kind: SMI2IstioConfig
metadata: {name: default}
spec: {dataplaneMode: Waypoint}
`)}, 1, `spec.dataplaneMode: Unsupported value: "Waypoint"`},
	}
	for name, c := range bad {
		t.Run(name, func(t *testing.T) {
			code, stdout, stderr := run(t, shop, append([]string{"-f", "-"}, c.args...)...)
			if code != c.code || stdout != "" || !strings.Contains(stderr, c.want) {
				t.Errorf("exit %d (want %d), stdout %q, stderr %q; want it to contain %q", code, c.code, stdout, stderr, c.want)
			}
		})
	}
}

// The items of a List (kubectl get -o yaml) are read, and checked, like documents.
func TestTranslateReadsLists(t *testing.T) {
	list := `
apiVersion: v1
kind: List
items:
- apiVersion: specs.smi-spec.io/v1alpha4
  kind: HTTPRouteGroup
  metadata: {name: admin, namespace: shop}
  spec:
    matches: [{name: admin, pathRegexp: "/admin/.*"}]
`
	code, stdout, stderr := run(t, list, "-f", "-")
	if code != 1 || stdout != "" || !strings.Contains(stderr, "HTTPRouteGroup shop/admin: spec.matches[0].pathRegexp") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, stdout, stderr = run(t, strings.Replace(list, "pathRegexp", "pathRegex", 1), "-f", "-")
	if code != 0 || !strings.Contains(stdout, "namespace: shop") {
		t.Errorf("a valid List: exit %d, stdout %q, stderr %q; want shop's baseline", code, stdout, stderr)
	}
}

// A pod template's deprecated serviceAccount is its ServiceAccount when serviceAccountName is
// empty (the apiserver copies it): db's pods are not the default ServiceAccount's, so a policy
// for the default ServiceAccount selecting app=api would also open db.
func TestDeprecatedServiceAccountField(t *testing.T) {
	input := `
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {containers: [{name: app, image: app}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: db, namespace: shop}
spec:
  selector: {matchLabels: {app: api, tier: db}}
  template:
    metadata: {labels: {app: api, tier: db}}
    spec: {serviceAccount: db, containers: [{name: app, image: app}]}
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: all, namespace: shop}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: web-to-api, namespace: shop}
spec:
  destination: {kind: ServiceAccount, name: default, namespace: shop}
  sources: [{kind: ServiceAccount, name: web, namespace: shop}]
  rules: [{kind: TCPRoute, name: all}]
`
	code, stdout, stderr := run(t, input, "-f", "-")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, d := range docs(t, stdout) {
		if d.kind == "AuthorizationPolicy" && d.name != baselineName {
			t.Errorf("AuthorizationPolicy %s selects db's pods too:\n%s", d.name, stdout)
		}
	}
	if !strings.Contains(stderr, "NoPreciseSelector") {
		t.Errorf("the report must say the selector is not precise: %q", stderr)
	}
}

// A dump of an OSM cluster (a List from kubectl get -o yaml): the Namespaces OSM monitors are in the
// mesh and get a baseline whether or not they hold SMI objects (as the operator's Auto membership
// has them); OSM's MeshConfig gives the access mode unless --config or --access-mode does, and one
// that cannot be decoded gives Enforcing; OSM's policy objects are named and counted on stderr.
func TestTranslateOSMClusterDump(t *testing.T) {
	dump := func(meshConfigTraffic string) string {
		return `
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: shop, labels: {openservicemesh.io/monitored-by: osm}}}
- {apiVersion: v1, kind: Namespace, metadata: {name: client, labels: {openservicemesh.io/monitored-by: osm}}}
- {apiVersion: v1, kind: Namespace, metadata: {name: elsewhere}}
- apiVersion: config.openservicemesh.io/v1alpha2
  kind: MeshConfig
  metadata: {name: osm-mesh-config, namespace: osm-system}
  spec: {traffic: ` + meshConfigTraffic + `}
- apiVersion: policy.openservicemesh.io/v1alpha1
  kind: Egress
  metadata: {name: api, namespace: client}
  spec: {sources: [{kind: ServiceAccount, name: client, namespace: client}], hosts: [api.example.com], ports: [{number: 443, protocol: https}]}
- apiVersion: policy.openservicemesh.io/v1alpha1
  kind: Retry
  metadata: {name: retry, namespace: client}
  spec: {}
- apiVersion: specs.smi-spec.io/v1alpha4
  kind: TCPRoute
  metadata: {name: all, namespace: shop}
`
	}
	baselines := func(stdout string) []string {
		var out []string
		for _, d := range docs(t, stdout) {
			if d.name == baselineName {
				out = append(out, d.namespace)
			}
		}
		return out
	}
	code, stdout, stderr := run(t, dump("{enablePermissiveTrafficPolicyMode: false}"), "-f", "-")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if got := baselines(stdout); !reflect.DeepEqual(got, []string{"client", "shop"}) {
		t.Errorf("baselines in %v, want the monitored namespaces client and shop", got)
	}
	for _, want := range []string{
		"note: access mode Enforcing, taken from Open Service Mesh's MeshConfig osm-system/osm-mesh-config (spec.traffic.enablePermissiveTrafficPolicyMode: false)",
		"Egress client/api: policy.openservicemesh.io: NotTranslated:", "Retry client/retry: policy.openservicemesh.io: NotTranslated:",
		"note: 2 Open Service Mesh policy object(s) not translated (Egress 1, Retry 1)",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr must say %q:\n%s", want, stderr)
		}
	}

	code, stdout, stderr = run(t, dump("{enablePermissiveTrafficPolicyMode: true}"), "-f", "-")
	if code != 0 || len(baselines(stdout)) != 0 || !strings.Contains(stderr, "note: access mode Permissive, taken from") {
		t.Errorf("permissive MeshConfig: exit %d, baselines %v, stderr %s", code, baselines(stdout), stderr)
	}
	// Fail closed: a setting that is not a boolean is Enforcing, and said so.
	code, stdout, stderr = run(t, dump(`{enablePermissiveTrafficPolicyMode: "yes"}`), "-f", "-")
	if code != 0 || len(baselines(stdout)) != 2 || !strings.Contains(stderr, "could not be decoded") || !strings.Contains(stderr, "Enforcing, failing closed") {
		t.Errorf("undecodable MeshConfig: exit %d, baselines %v, stderr %s", code, baselines(stdout), stderr)
	}
	// A flag decides over the MeshConfig, as an existing SMI2IstioConfig does in the operator.
	code, stdout, stderr = run(t, dump("{enablePermissiveTrafficPolicyMode: true}"), "-f", "-", "--access-mode", "Enforcing")
	if code != 0 || len(baselines(stdout)) != 2 || !strings.Contains(stderr, "MeshConfig, which is not used") {
		t.Errorf("--access-mode over the MeshConfig: exit %d, baselines %v, stderr %s", code, baselines(stdout), stderr)
	}
	// The OSM provider of one mesh, given in a config: only that mesh's namespaces.
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte("apiVersion: smi2istio.io/v1alpha1\nkind: SMI2IstioConfig\nmetadata: {name: default}\nspec: {membership: {provider: OSM, osmMeshName: other}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = run(t, dump("{}"), "-f", "-", "--config", cfg)
	if got := baselines(stdout); code != 0 || !reflect.DeepEqual(got, []string{"shop"}) {
		t.Errorf("OSM provider of mesh other: exit %d, baselines %v (want only shop, which holds SMI objects): %s", code, got, stderr)
	}
}
