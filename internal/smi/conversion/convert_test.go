package conversion

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// roundTripCases are objects as users write them, in the version they write them in, shared with
// the apiserver round-trip test in package crds.
func roundTripCases(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob("../testdata/roundtrip/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no round-trip cases: %v", err)
	}
	out := map[string]string{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(filepath.Base(f), ".yaml")] = string(data)
	}
	return out
}

func mustJSON(t *testing.T, y string) []byte {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatalf("yaml: %v", err)
	}
	return j
}

func mustConvert(t *testing.T, raw []byte, to string) []byte {
	t.Helper()
	out, err := Convert(raw, to)
	if err != nil {
		t.Fatalf("convert to %s: %v", to, err)
	}
	return out
}

// decoded decodes a whole object (the package's decode keeps parts of it raw).
func decoded(t *testing.T, raw []byte) object {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var o object
	if err := d.Decode(&o); err != nil || o == nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
	return o
}

func groupAndKind(t *testing.T, o object) (string, kind) {
	t.Helper()
	group, _, _ := strings.Cut(o["apiVersion"].(string), "/")
	k, ok := kinds[group+"/"+o["kind"].(string)]
	if !ok {
		t.Fatalf("no kind for %v", o["kind"])
	}
	return group, k
}

// TestRoundTripThroughStorage follows the apiserver: an object written in version A is stored in
// the newest version, read in B, written back in B (stored again) and read in A: it must be
// unchanged, for every A and B.
func TestRoundTripThroughStorage(t *testing.T) {
	for name, y := range roundTripCases(t) {
		orig := mustJSON(t, y)
		group, k := groupAndKind(t, decoded(t, orig))
		storage := group + "/" + k.versions[len(k.versions)-1]
		authored := decoded(t, orig)["apiVersion"].(string)
		for _, v := range k.versions {
			b := group + "/" + v
			t.Run(name+"/via "+v, func(t *testing.T) {
				stored := mustConvert(t, orig, storage)
				inB := mustConvert(t, stored, b)
				storedAgain := mustConvert(t, inB, storage)
				back := mustConvert(t, storedAgain, authored)
				if !equal(decoded(t, back), decoded(t, orig)) {
					t.Errorf("round trip changed the object\n orig: %s\n    B: %s\n back: %s", orig, inB, back)
				}
			})
		}
	}
}

// TestEveryPairRoundTrips converts A -> B -> A directly for every pair.
func TestEveryPairRoundTrips(t *testing.T) {
	for name, y := range roundTripCases(t) {
		orig := mustJSON(t, y)
		group, k := groupAndKind(t, decoded(t, orig))
		for _, a := range k.versions {
			inA := mustConvert(t, orig, group+"/"+a)
			for _, b := range k.versions {
				back := mustConvert(t, mustConvert(t, inA, group+"/"+b), group+"/"+a)
				if !equal(decoded(t, back), decoded(t, inA)) {
					t.Errorf("%s: %s -> %s -> %s changed the object\n want: %s\n  got: %s", name, a, b, a, inA, back)
				}
			}
		}
	}
}

func field(t *testing.T, raw []byte, path ...string) any {
	t.Helper()
	var cur any = decoded(t, raw)
	for _, p := range path {
		switch c := cur.(type) {
		case map[string]any:
			cur = c[p]
		case []any:
			i := 0
			for _, ch := range p {
				i = i*10 + int(ch-'0')
			}
			if i >= len(c) {
				return nil
			}
			cur = c[i]
		default:
			return nil
		}
	}
	return cur
}

func TestSemantics(t *testing.T) {
	split1 := mustJSON(t, roundTripCases(t)["split-v1alpha1-quantities"])
	v4 := mustConvert(t, split1, "split.smi-spec.io/v1alpha4")
	for i, want := range []string{"500", "1000", "1500", "2000"} {
		if got := field(t, v4, "spec", "backends", string(rune('0'+i)), "weight"); got != json.Number(want) {
			t.Errorf("backend %d: weight = %v, want milli-value %s", i, got, want)
		}
	}
	if a := field(t, v4, "metadata", "annotations"); a != nil {
		t.Errorf("canonical quantities need no annotation, got %v", a)
	}

	target1 := mustJSON(t, roundTripCases(t)["target-v1alpha1-flat-with-port"])
	t2 := mustConvert(t, target1, "access.smi-spec.io/v1alpha2")
	if got := field(t, t2, "spec", "destination", "port"); got != json.Number("8080") {
		t.Errorf("v1alpha1 destination.port -> v1alpha2 spec.destination.port = %v", got)
	}
	if got := field(t, t2, "spec", "rules", "0", "matches", "0"); got != "buy-a-book" {
		t.Errorf("v1alpha1 specs -> v1alpha2 rules: got %v", got)
	}
	t3 := mustConvert(t, target1, "access.smi-spec.io/v1alpha3")
	if field(t, t3, "spec", "destination", "port") != nil {
		t.Error("v1alpha3 has no destination.port")
	}
	if !strings.Contains(field(t, t3, "metadata", "annotations", AnnotationKey).(string), `"port":8080`) {
		t.Errorf("the port must be kept in %s when v1alpha3 cannot carry it: %s", AnnotationKey, t3)
	}

	hrg3 := mustJSON(t, roundTripCases(t)["routegroup-v1alpha3-list-headers"])
	h4 := mustConvert(t, hrg3, "specs.smi-spec.io/v1alpha4")
	if got := field(t, h4, "spec", "matches", "0", "headers", "1", "user-agent"); got != ".*-http-client/*.*" {
		t.Errorf("list-shaped headers must be kept as written, got %v in %s", got, h4)
	}
	h1 := mustConvert(t, hrg3, "specs.smi-spec.io/v1alpha1")
	if field(t, h1, "matches", "0", "headers") != nil || field(t, h1, "matches", "0", "pathRegex") != "/books-bought" {
		t.Errorf("v1alpha1 is flat and has no headers: %s", h1)
	}
}

// A saved annotation describes the object only while the object is unchanged: an edit made in
// another version wins over it.
func TestStaleAnnotationIsDropped(t *testing.T) {
	orig := mustJSON(t, roundTripCases(t)["split-v1alpha4-matches"])
	v2 := mustConvert(t, orig, "split.smi-spec.io/v1alpha2")
	if field(t, v2, "spec", "matches") != nil || field(t, v2, "metadata", "annotations", AnnotationKey) == nil {
		t.Fatalf("matches must move to the annotation in v1alpha2: %s", v2)
	}
	edited := strings.Replace(string(v2), `"weight":1`, `"weight":7`, 1)
	back := mustConvert(t, []byte(edited), "split.smi-spec.io/v1alpha4")
	if field(t, back, "spec", "matches") != nil {
		t.Errorf("an edited object must not get stale matches back: %s", back)
	}
	if field(t, back, "spec", "backends", "0", "weight") != json.Number("7") {
		t.Errorf("the edit must be kept: %s", back)
	}
	if field(t, back, "metadata", "annotations") != nil {
		t.Errorf("the stale annotation must be removed: %s", back)
	}
}

func TestErrors(t *testing.T) {
	for name, tc := range map[string]struct{ obj, to, want string }{
		"negative quantity": {`{"apiVersion":"split.smi-spec.io/v1alpha1","kind":"TrafficSplit","metadata":{"name":"s"},"spec":{"backends":[{"service":"a","weight":"-1"}]}}`, "split.smi-spec.io/v1alpha2", "negative"},
		"bad quantity":      {`{"apiVersion":"split.smi-spec.io/v1alpha1","kind":"TrafficSplit","metadata":{"name":"s"},"spec":{"backends":[{"service":"a","weight":"lots"}]}}`, "split.smi-spec.io/v1alpha2", "not a quantity"},
		"huge quantity":     {`{"apiVersion":"split.smi-spec.io/v1alpha1","kind":"TrafficSplit","metadata":{"name":"s"},"spec":{"backends":[{"service":"a","weight":"1E"}]}}`, "split.smi-spec.io/v1alpha2", "too large"},
		"unknown kind":      {`{"apiVersion":"split.smi-spec.io/v1alpha1","kind":"Nope","metadata":{"name":"s"}}`, "split.smi-spec.io/v1alpha2", "unknown kind"},
		"cross group":       {`{"apiVersion":"split.smi-spec.io/v1alpha1","kind":"TrafficSplit","metadata":{"name":"s"}}`, "specs.smi-spec.io/v1alpha2", "between groups"},
		"unknown version":   {`{"apiVersion":"split.smi-spec.io/v1alpha1","kind":"TrafficSplit","metadata":{"name":"s"}}`, "split.smi-spec.io/v2", "has versions"},
		"not an object":     {`[1]`, "split.smi-spec.io/v1alpha2", "decode"},
	} {
		_, err := Convert([]byte(tc.obj), tc.to)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to mention %q", name, err, tc.want)
		}
	}
}

// The webhook counts the objects it converts by source and desired apiVersion.
func TestReviewCountsConversions(t *testing.T) {
	from, to := "split.smi-spec.io/v1alpha2", "split.smi-spec.io/v1alpha4"
	before := testutil.ToFloat64(Conversions.WithLabelValues(from, to))
	raw := []byte(`{"apiVersion":"split.smi-spec.io/v1alpha2","kind":"TrafficSplit","metadata":{"name":"s","namespace":"n"},"spec":{"service":"root","backends":[{"service":"v1","weight":1}]}}`)
	resp := Review(&apiextv1.ConversionRequest{UID: "u", DesiredAPIVersion: to, Objects: []runtime.RawExtension{{Raw: raw}, {Raw: raw}}})
	if resp.Result.Status != metav1.StatusSuccess {
		t.Fatalf("review failed: %s", resp.Result.Message)
	}
	if got := testutil.ToFloat64(Conversions.WithLabelValues(from, to)) - before; got != 2 {
		t.Errorf("counted %v conversions %s -> %s, want 2", got, from, to)
	}
}
