package main

import (
	"fmt"
	"sort"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/smi2istio/smi2istio/internal/manifests"
	"github.com/smi2istio/smi2istio/internal/offline"
	"github.com/smi2istio/smi2istio/translate"
)

func kinds(objs []*unstructured.Unstructured) string {
	n := map[string]int{}
	for _, o := range objs {
		n[o.GetKind()]++
	}
	var out []string
	for k, v := range n {
		out = append(out, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(out)
	return fmt.Sprint(out)
}

// The benchmark waits for exactly the objects the translator makes of its synthetic mesh, and its
// baseline writes the same kinds and numbers: both are checked against the real translator.
func TestSyntheticMeshTranslation(t *testing.T) {
	s := size{Name: "test", Units: 3}
	var in, baseline []*unstructured.Unstructured
	for _, u := range units(s) {
		in = append(in, u.workloads()...)
		in = append(in, u.pod(0), u.pod(1))
		in = append(in, u.smi([2]int64{50, 50})...)
		baseline = append(baseline, u.istio()...)
	}
	set, err := offline.Load(in)
	if err != nil {
		t.Fatal(err)
	}
	out, report, failed, err := offline.Render(set.Translate(translate.Mesh{}))
	if err != nil || failed != 0 {
		t.Fatalf("translate: %v, %d failed, report %v", err, failed, report)
	}
	objs, err := manifests.Decode(out)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprint([]string{
		fmt.Sprintf("AuthorizationPolicy=%d", 2*s.Units), fmt.Sprintf("DestinationRule=%d", s.Units),
		fmt.Sprintf("PeerAuthentication=%d", 2*s.Units), fmt.Sprintf("VirtualService=%d", s.Units),
	})
	if got := kinds(objs); got != want || len(objs) != s.istioObjects() {
		t.Errorf("the translator makes %s (%d objects) of the synthetic mesh, the benchmark expects %s (%d)", got, len(objs), want, s.istioObjects())
	}
	if got := kinds(baseline); got != want {
		t.Errorf("the baseline writes %s, the operator %s", got, want)
	}
}
