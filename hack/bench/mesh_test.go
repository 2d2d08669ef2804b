package main

import (
	"fmt"
	"sort"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/smi2istio/smi2istio/controllers"
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

// The benchmark waits for exactly the objects the translator makes of its synthetic mesh
// (watcher.converged counts them by kind), and its baselines write those objects (istioFor): the
// counts converged expects are checked against the real translator's output.
func TestSyntheticMeshTranslation(t *testing.T) {
	s := size{Name: "test", Units: 3}
	objs, err := istioFor(units(s))
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
	for _, o := range objs {
		if o.GetLabels()[translate.ManagedByLabel] != translate.ManagedByValue {
			t.Errorf("%s %s/%s: the watcher counts only objects labelled %s=%s, it has %v", o.GetKind(), o.GetNamespace(), o.GetName(),
				translate.ManagedByLabel, translate.ManagedByValue, o.GetLabels())
		}
	}
}

// Baseline (c) leaves every SMI object as the operator does once converged: the conditions the
// operator writes, of its kinds and reasons, Ready for the object's generation (what the harness
// waits for); and its Events can all be created (unique names).
func TestOperatorStatusAndEvents(t *testing.T) {
	want := map[string][]string{
		"TrafficSplit":   {controllers.ConditionAccepted + "/" + controllers.ReasonAccepted, controllers.ConditionResolvedRefs + "/" + controllers.ReasonResolvedRefs, controllers.ConditionReady + "/" + controllers.ReasonApplied},
		"TrafficTarget":  {controllers.ConditionAccepted + "/" + controllers.ReasonAccepted, controllers.ConditionResolvedRefs + "/" + controllers.ReasonResolvedRefs, controllers.ConditionReady + "/" + controllers.ReasonApplied},
		"HTTPRouteGroup": {controllers.ConditionAccepted + "/" + controllers.ReasonValid, controllers.ConditionReady + "/" + controllers.ReasonValid},
		"TCPRoute":       {controllers.ConditionAccepted + "/" + controllers.ReasonValid, controllers.ConditionReady + "/" + controllers.ReasonValid},
	}
	now := time.Now()
	names := map[string]bool{}
	i := 0
	for _, u := range units(size{Name: "test", Units: 3}) {
		for _, o := range u.smi([2]int64{50, 50}) {
			o.SetGeneration(2)
			patch, err := operatorStatus(o, now)
			if err != nil {
				t.Fatal(err)
			}
			if patch.GroupVersionKind() != o.GroupVersionKind() || patch.GetName() != o.GetName() || patch.GetNamespace() != o.GetNamespace() {
				t.Errorf("the status patch of %s %s/%s is for %s %s/%s", o.GetKind(), o.GetNamespace(), o.GetName(), patch.GetKind(), patch.GetNamespace(), patch.GetName())
			}
			if og, _, _ := unstructured.NestedInt64(patch.Object, "status", "observedGeneration"); og != 2 {
				t.Errorf("%s %s: status.observedGeneration %d, want 2", o.GetKind(), o.GetName(), og)
			}
			if ready(o) {
				t.Fatalf("%s %s is ready before its status", o.GetKind(), o.GetName())
			}
			o.Object["status"] = patch.Object["status"]
			if !ready(o) {
				t.Errorf("%s %s is not ready for its generation with the baseline's status %v", o.GetKind(), o.GetName(), o.Object["status"])
			}
			var got []string
			for _, c := range operatorConditions(o) {
				if c.Status != metav1.ConditionTrue || c.Message == "" {
					t.Errorf("%s %s: condition %+v", o.GetKind(), o.GetName(), c)
				}
				got = append(got, c.Type+"/"+c.Reason)
			}
			if fmt.Sprint(got) != fmt.Sprint(want[o.GetKind()]) {
				t.Errorf("%s: conditions %v, the operator writes %v", o.GetKind(), got, want[o.GetKind()])
			}
			ev, err := operatorEvent(o, i, now)
			if err != nil {
				t.Fatal(err)
			}
			i++
			if names[ev.GetNamespace()+"/"+ev.GetName()] {
				t.Errorf("two Events named %s/%s", ev.GetNamespace(), ev.GetName())
			}
			names[ev.GetNamespace()+"/"+ev.GetName()] = true
			if k, _, _ := unstructured.NestedString(ev.Object, "regarding", "kind"); k != o.GetKind() || ev.GetNamespace() != o.GetNamespace() {
				t.Errorf("the Event of %s %s/%s regards a %s in %s", o.GetKind(), o.GetNamespace(), o.GetName(), k, ev.GetNamespace())
			}
		}
	}
}

// Baseline (c) applied writes the Istio objects under the operator's own field manager.
func TestBaselineAppliesAsTheOperator(t *testing.T) {
	if operatorFieldManager != controllers.FieldManager {
		t.Errorf("baseline (c) applied as %q, the operator applies as %q", operatorFieldManager, controllers.FieldManager)
	}
}
