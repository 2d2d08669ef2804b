package offline_test

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smi2istio/smi2istio/internal/istiocheck"
	"github.com/smi2istio/smi2istio/internal/offline"
	"github.com/smi2istio/smi2istio/internal/testenv"
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
	// TrafficTargets of both bookstore versions: policies, and the Envoy rung for the regexes.
	want := map[string]int{"VirtualService": 1, "AuthorizationPolicy": 2, "PeerAuthentication": 2, "EnvoyFilter": 2}
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
	if !strings.Contains(stderr, "TrafficSplit shop/bad: spec.backends[0].weight: NegativeWeight") {
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
