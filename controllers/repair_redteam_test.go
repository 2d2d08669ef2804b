package controllers_test

// Red team (helper, against the uncommitted RepairInPlace change: a baseline an admission step
// widens on every write is kept, not deleted, and reported through BaselineMissing on the
// TrafficTargets that allow nothing). Each test looks for a state in which a kept, widened baseline
// lets more through than SMI allows while smi2istio says otherwise, or keeps other baselines from
// being written. They pass while the property holds.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/controllers"
	"github.com/smi2istio/smi2istio/internal/membership"
	"github.com/smi2istio/smi2istio/translate"
)

// rrPlainNamespace creates a namespace that is not in the mesh (yet).
func rrPlainNamespace(t *testing.T) string {
	t.Helper()
	ns := fmt.Sprintf("ts%d", nsCounter.Add(1))
	if err := env.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	return ns
}

// rrWiden installs a MutatingAdmissionPolicy (a mutating webhook's effect) bound to ns that applies
// the JSONPatch expression mutation to the AuthorizationPolicies of ns matching the CEL condition
// match, on every create and update, and waits until a dry-run creation of "probe" (spec probeSpec,
// JSON; match must take it in) comes back with rules. Removed at the end of the test, or by unbind,
// which waits until a probe comes back without rules.
func rrWiden(t *testing.T, ns, match, mutation, probeSpec string) (unbind func()) {
	t.Helper()
	ctx := context.Background()
	name := "rr-" + ns
	policy := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicy",
		"metadata": map[string]any{"name": name},
		"spec": map[string]any{
			"matchConstraints": map[string]any{"resourceRules": []any{map[string]any{
				"apiGroups": []any{"security.istio.io"}, "apiVersions": []any{"*"},
				"operations": []any{"CREATE", "UPDATE"}, "resources": []any{"authorizationpolicies"},
			}}},
			"matchConditions": []any{map[string]any{"name": "match", "expression": match}},
			"failurePolicy":   "Fail", "reinvocationPolicy": "Never",
			"mutations": []any{map[string]any{"patchType": "JSONPatch", "jsonPatch": map[string]any{"expression": mutation}}},
		},
	}}
	binding := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicyBinding",
		"metadata": map[string]any{"name": name},
		"spec": map[string]any{"policyName": name, "matchResources": map[string]any{
			"namespaceSelector": map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": ns}},
		}},
	}}
	for _, o := range []*unstructured.Unstructured{policy, binding} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatalf("create %s: %v", o.GetKind(), err)
		}
	}
	remove := func() error {
		return errors.Join(client.IgnoreNotFound(env.Client.Delete(context.Background(), binding)),
			client.IgnoreNotFound(env.Client.Delete(context.Background(), policy)))
	}
	t.Cleanup(func() { _ = remove() })
	inEffect := func(want bool) {
		eventually(t, fmt.Sprintf("the admission step in effect=%v", want), func() error {
			p := &unstructured.Unstructured{}
			if err := p.UnmarshalJSON([]byte(`{"apiVersion":"security.istio.io/v1beta1","kind":"AuthorizationPolicy","metadata":{"name":"probe","namespace":"` + ns + `"},"spec":` + probeSpec + `}`)); err != nil {
				t.Fatal(err)
			}
			if err := env.Client.Create(ctx, p, client.DryRunAll); err != nil {
				return err
			}
			if rules, _, _ := unstructured.NestedSlice(p.Object, "spec", "rules"); (len(rules) > 0) != want {
				return fmt.Errorf("a policy created now has rules %v", rules)
			}
			return nil
		})
	}
	inEffect(true)
	return func() {
		t.Helper()
		if err := remove(); err != nil {
			t.Fatal(err)
		}
		inEffect(false)
	}
}

// rrWidened waits until policy ns/name exists with rules (as the admission step left it).
func rrWidened(t *testing.T, ns, name string) {
	t.Helper()
	eventually(t, "policy "+ns+"/"+name+" written and widened", func() error {
		u, err := get(objOf(controllers.AuthorizationPolicyGVK), ns, name)
		if err != nil {
			return err
		}
		if rules, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules"); len(rules) == 0 {
			return fmt.Errorf("spec %v", u.Object["spec"])
		}
		return nil
	})
}

// rrNeverReady fails unless TrafficTarget ns/name ends up with a Ready condition other than True
// (and stays so for a few seconds).
func rrNeverReady(t *testing.T, ns, name, why string) {
	t.Helper()
	eventually(t, fmt.Sprintf("TrafficTarget %s/%s not Ready (%s)", ns, name, why), func() error {
		for range 20 {
			s, r, err := ttCondition(ns, name, "Ready")
			if err != nil {
				return err
			}
			if s == "True" {
				return fmt.Errorf("HOLE: Ready=%s/%s: %s", s, r, ttMessage(t, ns, name, "Ready"))
			}
			time.Sleep(250 * time.Millisecond)
		}
		return nil
	})
}

// RC1. The namespace baseline widened by an admission step (an allow-all rule) is kept: every
// destination of the namespace is then open to every source (an ALLOW policy that matches every
// request is ORed with the TrafficTargets' own). A TrafficTarget that allows web on port 5432 only
// must not say Ready=True ("applied") meanwhile — BaselineMissing is only given to the
// TrafficTargets that allow nothing.
func TestRepairRedTeamWidenedBaselineOpensEveryDestination(t *testing.T) {
	ns := rrPlainNamespace(t)
	rrWiden(t, ns, `object.metadata.name in ["`+controllers.BaselineName+`", "probe"]`,
		`[JSONPatch{op: "add", path: "/spec", value: {"rules": [{}]}}]`, `{}`)
	applyYAML(t, ns, ambientApp)
	meshNamespace(t, ns)
	rrWidened(t, ns, controllers.BaselineName)
	rrNeverReady(t, ns, "db", "the namespace's baseline allows every request to every destination")
}

// RC2. The namespace baseline kept widened (its sync fails with ErrForeignFieldsKept, retried) must
// not keep the namespace's waypoints from getting their own allow-nothing policies: a waypoint
// without one allows every request on a chain without an ALLOW policy.
func TestRepairRedTeamWidenedBaselineBlocksWaypointBaselines(t *testing.T) {
	ns := rrPlainNamespace(t)
	rrWiden(t, ns, `object.metadata.name in ["`+controllers.BaselineName+`", "probe"]`,
		`[JSONPatch{op: "add", path: "/spec", value: {"rules": [{}]}}]`, `{}`)
	applyYAML(t, ns, redTeamWaypointGateway("istio-waypoint", "", ""))
	relabel(t, ns, map[string]string{membership.DataplaneModeLabel: membership.DataplaneAmbient})
	rrWidened(t, ns, controllers.BaselineName)
	eventually(t, "HOLE if it times out: the waypoint's allow-nothing policy written although the namespace baseline is kept widened", func() error {
		_, err := get(objOf(controllers.AuthorizationPolicyGVK), ns, translate.WaypointBaselinePrefix+"waypoint")
		return err
	})
}

// RC3. A waypoint's allow-nothing policy widened by an admission step (an allow-all rule, still
// attached to the Gateway) is kept: the waypoint then lets every source through to api. The access
// reconciler must not rely on that waypoint (ztunnel admitting its identity) nor say Ready=True;
// the waypoint check (usable waypoint) looks at the baseline's owner, deletion and dry-run, not at
// its spec.
func TestRepairRedTeamWidenedWaypointBaselineIsNotReliedOn(t *testing.T) {
	ns := rrPlainNamespace(t)
	prefix := translate.WaypointBaselinePrefix
	rrWiden(t, ns, `object.metadata.name.startsWith("`+prefix+`") || object.metadata.name == "probe"`,
		`[JSONPatch{op: "add", path: "/spec/rules", value: [{}]}]`,
		`{"targetRefs":[{"group":"gateway.networking.k8s.io","kind":"Gateway","name":"waypoint"}]}`)
	applyYAML(t, ns, redTeamWaypointGateway("istio-waypoint", "", ""))
	applyYAML(t, ns, ambientApp)
	relabel(t, ns, map[string]string{membership.DataplaneModeLabel: membership.DataplaneAmbient, translate.UseWaypointLabel: "waypoint"})
	rrWidened(t, ns, prefix+"waypoint")
	u, err := get(objOf(controllers.AuthorizationPolicyGVK), ns, prefix+"waypoint")
	if err != nil {
		t.Fatal(err)
	}
	if refs, _, _ := unstructured.NestedSlice(u.Object, "spec", "targetRefs"); len(refs) != 1 {
		t.Fatalf("the widened waypoint baseline is not attached to the waypoint: %v", u.Object["spec"])
	}
	waypoint := fmt.Sprintf("cluster.local/ns/%s/sa/waypoint", ns)
	key := ns + "/waypoint"
	// Watched for 20 seconds after the widened policy is written: the access reconciler has then
	// looked at the waypoint again (its baseline's events reach every destination).
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		accepted := ttMessage(t, ns, "http", "Accepted")
		if strings.Contains(accepted, "through waypoint "+key) || admitsPrincipal(t, ns, waypoint) {
			s, r, _ := ttCondition(ns, "http", "Ready")
			t.Fatalf("HOLE: the waypoint whose allow-nothing policy allows everything is relied on (Ready %s/%s; Accepted: %s; policies %v)", s, r, accepted, ambientPolicies(t, ns, "http"))
		}
	}
	if accepted := ttMessage(t, ns, "http", "Accepted"); !strings.Contains(accepted, "is not used") {
		t.Fatalf("the TrafficTarget does not say the waypoint is not used: %s", accepted)
	}
}
