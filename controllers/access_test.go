package controllers_test

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/smi2istio/smi2istio/api/v1alpha1"
	"github.com/smi2istio/smi2istio/controllers"
	"github.com/smi2istio/smi2istio/internal/cache"
	"github.com/smi2istio/smi2istio/internal/testing/istiocheck"
	"github.com/smi2istio/smi2istio/translate"
)

func objOf(gvk schema.GroupVersionKind) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	return u
}

// meshNamespace creates a namespace, or moves it into (member) or out of the mesh.
func meshNamespace(t *testing.T, name string, member ...bool) {
	t.Helper()
	ensureNamespace(t, name)
	value := "enabled"
	if len(member) > 0 && !member[0] {
		value = "disabled"
	}
	ns := &corev1.Namespace{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Name: name}, ns); err != nil {
		t.Fatal(err)
	}
	if ns.Labels["istio-injection"] != value {
		if ns.Labels == nil {
			ns.Labels = map[string]string{}
		}
		ns.Labels["istio-injection"] = value
		if err := env.Client.Update(context.Background(), ns); err != nil {
			t.Fatal(err)
		}
	}
}

// setConfig applies the SMI2IstioConfig singleton's spec, as a user would.
func setConfig(t *testing.T, spec string) {
	t.Helper()
	applyYAML(t, "", "apiVersion: smi2istio.io/v1alpha1\nkind: SMI2IstioConfig\nmetadata: {name: default}\nspec: "+spec+"\n")
}

func waitBaselines(t *testing.T, present bool, namespaces ...string) {
	t.Helper()
	for _, ns := range namespaces {
		eventually(t, fmt.Sprintf("baseline in %s present=%v", ns, present), func() error {
			if baselineExists(ns) != present {
				return fmt.Errorf("baseline present=%v", baselineExists(ns))
			}
			return nil
		})
	}
}

// policy summarises an AuthorizationPolicy: its selector and, per rule, principals and operation.
type policy struct {
	Selector map[string]string
	Rules    []string
}

func policiesOf(t *testing.T, ns, destination string) map[string]policy {
	t.Helper()
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(controllers.AuthorizationPolicyGVK.GroupVersion().WithKind("AuthorizationPolicyList"))
	if err := env.Client.List(context.Background(), list, client.InNamespace(ns), client.MatchingLabels{translate.DestinationLabel: destination}); err != nil {
		t.Fatal(err)
	}
	out := map[string]policy{}
	for i := range list.Items {
		ap := &list.Items[i]
		sel, _, _ := unstructured.NestedStringMap(ap.Object, "spec", "selector", "matchLabels")
		rules, _, _ := unstructured.NestedSlice(ap.Object, "spec", "rules")
		p := policy{Selector: sel}
		for _, r := range rules {
			rm := r.(map[string]any)
			from, _, _ := unstructured.NestedSlice(rm, "from")
			to, _, _ := unstructured.NestedSlice(rm, "to")
			var principals []any
			if len(from) > 0 {
				principals, _, _ = unstructured.NestedSlice(from[0].(map[string]any), "source", "principals")
			}
			var op any
			if len(to) > 0 {
				op = to[0].(map[string]any)["operation"]
			}
			p.Rules = append(p.Rules, fmt.Sprintf("%v -> %v", principals, op))
		}
		sort.Strings(p.Rules)
		out[ap.GetLabels()[translate.SourceNameLabel]] = p
	}
	return out
}

func waitPolicies(t *testing.T, ns, destination string, check func(map[string]policy) error) {
	t.Helper()
	eventually(t, "AuthorizationPolicies for "+ns+"/"+destination, func() error { return check(policiesOf(t, ns, destination)) })
}

func ttCondition(ns, name, typ string) (string, string, error) {
	u, err := get(objOf(controllers.TrafficTargetGVK), ns, name)
	if err != nil {
		return "", "", err
	}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m := c.(map[string]any)
		if m["type"] == typ {
			return fmt.Sprint(m["status"]), fmt.Sprint(m["reason"]), nil
		}
	}
	return "", "", fmt.Errorf("no %s condition", typ)
}

func waitTTReady(t *testing.T, ns, name, status, reason string) {
	t.Helper()
	eventually(t, fmt.Sprintf("TrafficTarget %s/%s Ready=%s/%s", ns, name, status, reason), func() error {
		s, r, err := ttCondition(ns, name, "Ready")
		if err != nil {
			return err
		}
		if s != status || r != reason {
			return fmt.Errorf("got %s/%s", s, r)
		}
		return nil
	})
}

func baselineExists(ns string) bool {
	_, err := get(objOf(controllers.AuthorizationPolicyGVK), ns, controllers.BaselineName)
	return err == nil
}

func reconcileAll(t *testing.T, namespaces []string, destinations [][2]string) {
	t.Helper()
	for _, ns := range namespaces {
		if _, err := baselineR.Reconcile(context.Background(), reconcile.Request{NamespacedName: types.NamespacedName{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range destinations {
		if _, err := accessR.Reconcile(context.Background(), reconcile.Request{NamespacedName: types.NamespacedName{Namespace: d[0], Name: d[1]}}); err != nil {
			t.Fatal(err)
		}
	}
}

func validateAll(t *testing.T, ns string, gvks ...schema.GroupVersionKind) {
	t.Helper()
	for _, gvk := range gvks {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := env.Client.List(context.Background(), list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		for i := range list.Items {
			if err := istiocheck.Validate(&list.Items[i]); err != nil {
				t.Errorf("applied object fails Istio's validation: %v", err)
			}
		}
	}
}

// The OSM 1.2 walk-through: bookbuyer -> bookstore (regexes: Envoy rung), bookstore -> bookwarehouse
// (POST), bookwarehouse -> mysql (TCP 3306); then bookthief is allowed too; workloads change;
// Permissive <-> Enforcing; deleting a TrafficTarget removes its policies.
func TestOSMBookstoreAccess(t *testing.T) {
	namespaces := []string{"bookstore", "bookbuyer", "bookthief", "bookwarehouse"}
	for _, ns := range namespaces {
		meshNamespace(t, ns)
	}
	for _, f := range []string{"bookstore.yaml", "bookbuyer.yaml", "bookthief.yaml", "bookwarehouse.yaml", "mysql.yaml"} {
		applyFile(t, fixture("osm-v1.2-bookstore", "apps", f), "")
	}
	for _, ns := range namespaces {
		eventually(t, "baseline in "+ns, func() error {
			if !baselineExists(ns) {
				return fmt.Errorf("no %s", controllers.BaselineName)
			}
			return nil
		})
	}

	applyFile(t, fixture("osm-v1.2-bookstore", "access", "traffic-access-v1.yaml"), "")
	const buyer, thief = "cluster.local/ns/bookbuyer/sa/bookbuyer", "cluster.local/ns/bookthief/sa/bookthief"
	v1 := map[string]string{"app": "bookstore", "version": "v1"}
	waitPolicies(t, "bookstore", "bookstore", func(ps map[string]policy) error {
		p, ok := ps["bookstore"]
		if !ok || !reflect.DeepEqual(p.Selector, v1) || len(p.Rules) != 2 {
			return fmt.Errorf("got %+v", ps)
		}
		for _, r := range p.Rules {
			if r[:len("["+buyer+"]")] != "["+buyer+"]" {
				return fmt.Errorf("only bookbuyer may be allowed: %v", p.Rules)
			}
		}
		return nil
	})
	waitPolicies(t, "bookwarehouse", "bookwarehouse", func(ps map[string]policy) error {
		want := []string{"[cluster.local/ns/bookstore/sa/bookstore] -> map[methods:[POST]]"}
		if p := ps["bookstore-access-bookwarehouse"]; !reflect.DeepEqual(p.Rules, want) {
			return fmt.Errorf("got %+v", ps)
		}
		return nil
	})
	waitPolicies(t, "bookwarehouse", "mysql", func(ps map[string]policy) error {
		want := []string{"[cluster.local/ns/bookwarehouse/sa/bookwarehouse] -> map[ports:[3306]]"}
		if p := ps["mysql"]; !reflect.DeepEqual(p.Rules, want) || !reflect.DeepEqual(p.Selector, map[string]string{"app": "mysql"}) {
			return fmt.Errorf("got %+v", ps)
		}
		return nil
	})
	eventually(t, "EnvoyFilter for the regexes", func() error {
		_, err := get(objOf(controllers.EnvoyFilterGVK), "bookstore", "bookstore-"+translate.Selector{Labels: v1}.Key())
		return err
	})
	waitTTReady(t, "bookstore", "bookstore", "True", controllers.ReasonApplied)
	waitTTReady(t, "bookwarehouse", "mysql", "True", controllers.ReasonApplied)
	validateAll(t, "bookstore", controllers.AuthorizationPolicyGVK, controllers.PeerAuthenticationGVK, controllers.EnvoyFilterGVK)
	validateAll(t, "bookwarehouse", controllers.AuthorizationPolicyGVK, controllers.PeerAuthenticationGVK)

	// Nothing changed: reconciling again writes nothing.
	settle(t, &accessWrites, &baselineWrites)
	before := accessWrites.Load() + baselineWrites.Load()
	reconcileAll(t, namespaces, [][2]string{{"bookstore", "bookstore"}, {"bookwarehouse", "bookwarehouse"}, {"bookwarehouse", "mysql"}})
	if n := accessWrites.Load() + baselineWrites.Load() - before; n != 0 {
		t.Errorf("reconciling unchanged access made %d write(s), want 0", n)
	}

	applyFile(t, fixture("osm-v1.2-bookstore", "access", "traffic-access-v1-allow-bookthief.yaml"), "")
	waitPolicies(t, "bookstore", "bookstore", func(ps map[string]policy) error {
		p := ps["bookstore"]
		if len(p.Rules) != 2 || p.Rules[0][:len("["+buyer+" "+thief+"]")] != "["+buyer+" "+thief+"]" {
			return fmt.Errorf("bookthief must be allowed too: %+v", p.Rules)
		}
		return nil
	})

	// Scaling changes no selector; new labels move the policy to the new selector.
	dep := objOf(schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"})
	dep.SetNamespace("bookstore")
	dep.SetName("bookstore")
	settle(t, &accessWrites)
	before = accessWrites.Load()
	if err := env.Client.Patch(context.Background(), dep, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"replicas":3}}`))); err != nil {
		t.Fatal(err)
	}
	reconcileAll(t, nil, [][2]string{{"bookstore", "bookstore"}})
	if n := accessWrites.Load() - before; n != 0 {
		t.Errorf("scaling a Deployment made %d write(s), want 0", n)
	}
	if err := env.Client.Patch(context.Background(), dep, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"template":{"metadata":{"labels":{"tier":"web"}}}}}`))); err != nil {
		t.Fatal(err)
	}
	withTier := map[string]string{"app": "bookstore", "version": "v1", "tier": "web"}
	waitPolicies(t, "bookstore", "bookstore", func(ps map[string]policy) error {
		if p := ps["bookstore"]; !reflect.DeepEqual(p.Selector, withTier) || len(ps) != 1 {
			return fmt.Errorf("want one policy selecting %v, got %+v", withTier, ps)
		}
		return nil
	})

	// Permissive (switched in the config): no baselines, no policies, TrafficTargets report it.
	setConfig(t, "{accessMode: Permissive}")
	waitBaselines(t, false, namespaces...)
	waitPolicies(t, "bookstore", "bookstore", func(ps map[string]policy) error {
		if len(ps) != 0 {
			return fmt.Errorf("Permissive: policies remain: %+v", ps)
		}
		return nil
	})
	waitTTReady(t, "bookstore", "bookstore", "False", controllers.ReasonNotEnforced)
	setConfig(t, "{accessMode: Enforcing}")
	waitBaselines(t, true, namespaces...)
	waitTTReady(t, "bookstore", "bookstore", "True", controllers.ReasonApplied)

	// Regex policy Reject (in the config): no EnvoyFilter; bookstore's matches all need regexes, so
	// nothing is allowed to it.
	efName := "bookstore-" + translate.Selector{Labels: withTier}.Key()
	setConfig(t, "{regexPolicy: Reject}")
	waitGone(t, objOf(controllers.EnvoyFilterGVK), "bookstore", efName)
	waitTTReady(t, "bookstore", "bookstore", "False", controllers.ReasonNothingToDo)
	eventually(t, "TrafficTarget bookstore/bookstore Accepted=True/Approximated", func() error {
		s, r, err := ttCondition("bookstore", "bookstore", "Accepted")
		if err != nil {
			return err
		}
		if s != "True" || r != controllers.ReasonApproximated {
			return fmt.Errorf("got %s/%s", s, r)
		}
		return nil
	})
	setConfig(t, "{regexPolicy: Envoy}")
	eventually(t, "EnvoyFilter back", func() error {
		_, err := get(objOf(controllers.EnvoyFilterGVK), "bookstore", efName)
		return err
	})
	waitTTReady(t, "bookstore", "bookstore", "True", controllers.ReasonApplied)
	if _, r, _ := ttCondition("bookstore", "bookstore", "Accepted"); r != controllers.ReasonAccepted {
		t.Errorf("with the Envoy rung everything is exact: Accepted reason %s, want %s", r, controllers.ReasonAccepted)
	}

	// A namespace leaving the mesh loses its outputs and baseline; joining brings them back.
	meshNamespace(t, "bookwarehouse", false)
	waitBaselines(t, false, "bookwarehouse")
	waitPolicies(t, "bookwarehouse", "mysql", func(ps map[string]policy) error {
		if len(ps) != 0 {
			return fmt.Errorf("not in the mesh: policies remain: %+v", ps)
		}
		return nil
	})
	waitTTReady(t, "bookwarehouse", "mysql", "False", controllers.ReasonNotInMesh)
	meshNamespace(t, "bookwarehouse", true)
	waitBaselines(t, true, "bookwarehouse")
	waitTTReady(t, "bookwarehouse", "mysql", "True", controllers.ReasonApplied)

	// The config's status reports the mesh and its members.
	eventually(t, "SMI2IstioConfig status", func() error {
		cfg, err := get(objOf(v1alpha1.GroupVersion.WithKind("SMI2IstioConfig")), "", v1alpha1.ConfigName)
		if err != nil {
			return err
		}
		provider, _, _ := unstructured.NestedString(cfg.Object, "status", "mesh", "provider")
		members, _, _ := unstructured.NestedStringSlice(cfg.Object, "status", "members")
		has := map[string]bool{}
		for _, m := range members {
			has[m] = true
		}
		if provider != string(v1alpha1.DiscoverySelectors) || !has["bookstore"] || !has["bookwarehouse"] {
			return fmt.Errorf("provider %q, members %v", provider, members)
		}
		counts, _, _ := unstructured.NestedSlice(cfg.Object, "status", "objects")
		for _, c := range counts {
			m := c.(map[string]any)
			if m["kind"] == "TrafficTarget" && fmt.Sprint(m["ready"]) == "3" {
				return nil
			}
		}
		return fmt.Errorf("want 3 ready TrafficTargets counted, got %v", counts)
	})
	eventually(t, "smi2istio_objects metric", func() error {
		families, err := metrics.Registry.Gather()
		if err != nil {
			return err
		}
		for _, f := range families {
			if f.GetName() != "smi2istio_objects" {
				continue
			}
			for _, m := range f.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				if labels["kind"] == "TrafficTarget" && labels["state"] == "Ready" && m.GetGauge().GetValue() == 3 {
					return nil
				}
			}
		}
		return fmt.Errorf("no smi2istio_objects{kind=TrafficTarget,state=Ready} = 3")
	})

	// Deleting a TrafficTarget removes its policies.
	tt, err := get(objOf(controllers.TrafficTargetGVK), "bookwarehouse", "mysql")
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Delete(context.Background(), tt); err != nil {
		t.Fatal(err)
	}
	waitPolicies(t, "bookwarehouse", "mysql", func(ps map[string]policy) error {
		if len(ps) != 0 {
			return fmt.Errorf("still %+v", ps)
		}
		return nil
	})
	waitGone(t, objOf(controllers.PeerAuthenticationGVK), "bookwarehouse", "mysql-"+translate.Selector{Labels: map[string]string{"app": "mysql"}}.Key())
}

// Istio's root namespace never gets a baseline, even when labelled.
func TestNoBaselineInIstioNamespace(t *testing.T) {
	meshNamespace(t, "istio-system")
	other := freshNamespace(t)
	meshNamespace(t, other)
	eventually(t, "baseline in "+other, func() error {
		if !baselineExists(other) {
			return fmt.Errorf("missing")
		}
		return nil
	})
	reconcileAll(t, []string{"istio-system"}, nil)
	if baselineExists("istio-system") {
		t.Error("a baseline in Istio's root namespace would close the whole mesh")
	}
	// Baselines are owned by the configuration singleton: uninstalling smi2istio removes them.
	b, err := get(objOf(controllers.AuthorizationPolicyGVK), other, controllers.BaselineName)
	if err != nil {
		t.Fatal(err)
	}
	if refs := b.GetOwnerReferences(); len(refs) != 1 || refs[0].Kind != "SMI2IstioConfig" || refs[0].Name != v1alpha1.ConfigName {
		t.Errorf("baseline owner %+v, want the SMI2IstioConfig %s", refs, v1alpha1.ConfigName)
	}
}

// A namespace that leaves the mesh (its injection label turned off) keeps its pods' sidecars until
// they restart, and they keep enforcing what istiod gives them: SMI stays enforced (policies and
// baseline kept, and said so) until the last such pod is gone; then the outputs go.
func TestLeavingTheMeshKeepsEnforcingWhileSidecarsRun(t *testing.T) {
	ns := freshNamespace(t)
	meshNamespace(t, ns)
	applyYAML(t, ns, regexAccess)
	waitTTReady(t, ns, "a", "True", controllers.ReasonApplied)
	waitBaselines(t, true, ns)
	applyYAML(t, ns, `
apiVersion: v1
kind: Pod
metadata:
  name: api-0
  labels: {app: api}
  annotations: {sidecar.istio.io/status: '{"containers":["istio-proxy"]}'}
spec:
  serviceAccountName: api
  containers: [{name: api, image: x}, {name: istio-proxy, image: proxyv2}]
`)
	meshNamespace(t, ns, false)
	eventually(t, "a says its outputs are kept for the remaining sidecar", func() error {
		u, err := get(objOf(controllers.TrafficTargetGVK), ns, "a")
		if err != nil {
			return err
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			if m := c.(map[string]any); m["type"] == "Ready" && m["status"] == "False" && m["reason"] == controllers.ReasonLeftMesh && strings.Contains(fmt.Sprint(m["message"]), "1 of its pods still run Istio's sidecar") {
				return nil
			}
		}
		return fmt.Errorf("conditions %v", conds)
	})
	if !baselineExists(ns) {
		t.Error("the baseline went while a sidecar still runs")
	}
	if ps := policiesOf(t, ns, "api"); len(ps) != 2 {
		t.Errorf("policies of api while a sidecar still runs: %v", ps)
	}
	pod := &corev1.Pod{}
	pod.SetNamespace(ns)
	pod.SetName("api-0")
	if err := env.Client.Delete(context.Background(), pod, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	waitTTReady(t, ns, "a", "False", controllers.ReasonNotInMesh)
	waitBaselines(t, false, ns)
	waitPolicies(t, ns, "api", func(ps map[string]policy) error {
		if len(ps) > 0 {
			return fmt.Errorf("policies left: %v", ps)
		}
		return nil
	})
}

// "Nothing is allowed" holds only with the namespace's deny-by-default baseline in place: while a
// foreign AuthorizationPolicy (here an allow-all: it may open every workload of the namespace, not
// only those nothing allows) holds the baseline's name, a TrafficTarget says so; once the baseline
// is ours, it says what it allows.
func TestNothingAllowedNeedsTheBaseline(t *testing.T) {
	// A namespace never in the mesh until the user's policy is there (freshNamespace's are labelled
	// for injection at once: a baseline could come and go under the user's apply).
	ns := fmt.Sprintf("ts%d", nsCounter.Add(1))
	if err := env.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	applyYAML(t, ns, `
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: `+controllers.BaselineName+`}
spec: {rules: [{}]}
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: a}
spec:
  destination: {kind: ServiceAccount, name: api}
  sources: [{kind: ServiceAccount, name: web}]
  rules: [{kind: HTTPRouteGroup, name: missing}]
`)
	// The operator's cache has seen the user's policy: a baseline applied before that would take it
	// over (TestForeignFieldsAreNotKept covers that race).
	eventually(t, "the user's policy in the operator's cache", func() error {
		err := accessR.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: controllers.BaselineName}, cache.New(controllers.AuthorizationPolicyGVK))
		if err != nil {
			_, aerr := get(objOf(controllers.AuthorizationPolicyGVK), ns, controllers.BaselineName)
			return fmt.Errorf("%w (in the apiserver: %w)", err, aerr)
		}
		return nil
	})
	meshNamespace(t, ns)
	waitTTReady(t, ns, "a", "False", controllers.ReasonBaselineWidened)
	user, err := get(objOf(controllers.AuthorizationPolicyGVK), ns, controllers.BaselineName)
	if err != nil || user.GetLabels()[translate.ManagedByLabel] == translate.ManagedByValue {
		t.Fatalf("the user's policy was touched: %v %v", user, err)
	}
	if err := env.Client.Delete(context.Background(), user); err != nil {
		t.Fatal(err)
	}
	waitBaselines(t, true, ns)
	waitTTReady(t, ns, "a", "False", controllers.ReasonNothingToDo)
}

// Server-side apply merges: a field another manager owns survives every apply of ours. A rule added
// by hand to a namespace's baseline (allow-all) is not kept: the baseline's spec is written back in
// place as smi2istio wants it — the same object, never deleted (the namespace would be open until it
// was back).
func TestForeignFieldsAreNotKept(t *testing.T) {
	ns := freshNamespace(t)
	meshNamespace(t, ns)
	waitBaselines(t, true, ns)
	before, err := get(objOf(controllers.AuthorizationPolicyGVK), ns, controllers.BaselineName)
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Patch(context.Background(), before.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(`{"spec":{"rules":[{}]}}`)), client.FieldOwner("kubectl-edit")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the baseline written back without the added rule", func() error {
		b, err := get(objOf(controllers.AuthorizationPolicyGVK), ns, controllers.BaselineName)
		if err != nil {
			return err
		}
		if b.GetUID() != before.GetUID() {
			t.Fatalf("the baseline was deleted and created again (uid %s → %s)", before.GetUID(), b.GetUID())
		}
		if spec, _, _ := unstructured.NestedMap(b.Object, "spec"); len(spec) > 0 {
			return fmt.Errorf("spec %v", spec)
		}
		return nil
	})
}

// An admission step that widens the baseline on every write (an allow-all rule, on create and on
// update): the operator does not delete it to write it again (the namespace would be as open while
// it is gone, and round and round), it keeps it, and a TrafficTarget says the baseline is widened
// (whatever the TrafficTarget allows, the baseline may allow more). Once the admission step is gone,
// the same baseline is written back and the TrafficTarget says nothing is allowed.
func TestBaselineWidenedByAdmissionIsReported(t *testing.T) {
	ns := rrPlainNamespace(t) // in the mesh only once the admission step is in effect
	unbind := rrWiden(t, ns, `object.metadata.name in ["`+controllers.BaselineName+`", "probe"]`,
		`[JSONPatch{op: "add", path: "/spec", value: {"rules": [{}]}}]`, `{}`)
	applyYAML(t, ns, `
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: a}
spec:
  destination: {kind: ServiceAccount, name: api}
  sources: [{kind: ServiceAccount, name: web}]
  rules: [{kind: HTTPRouteGroup, name: missing}]
`)
	meshNamespace(t, ns)
	waitTTReady(t, ns, "a", "False", controllers.ReasonBaselineWidened)
	// Kept, it is not written over and over (each write an event that would requeue the namespace
	// at once, past the error backoff): helper-43's review.
	time.Sleep(2 * time.Second) // the first retries (backoff 5 ms, 10 ms, ...)
	versions := map[string]bool{}
	for end := time.Now().Add(8 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		b, err := get(objOf(controllers.AuthorizationPolicyGVK), ns, controllers.BaselineName)
		if err != nil {
			t.Fatal(err)
		}
		versions[b.GetResourceVersion()] = true
	}
	if len(versions) > 4 {
		t.Fatalf("the kept baseline is written in a loop: %d resourceVersions in 8 s", len(versions))
	}
	widened, err := get(objOf(controllers.AuthorizationPolicyGVK), ns, controllers.BaselineName)
	if err != nil {
		t.Fatalf("the widened baseline was not kept: %v", err)
	}
	if rules, _, _ := unstructured.NestedSlice(widened.Object, "spec", "rules"); len(rules) != 1 {
		t.Fatalf("the baseline is not the widened one: spec %v", widened.Object["spec"])
	}
	unbind()
	touchNamespace(t, ns) // its reconcile is in its error backoff
	eventually(t, "the baseline written back in place", func() error {
		b, err := get(objOf(controllers.AuthorizationPolicyGVK), ns, controllers.BaselineName)
		if err != nil {
			return err
		}
		if b.GetUID() != widened.GetUID() {
			t.Fatalf("the baseline was deleted and created again (uid %s → %s)", widened.GetUID(), b.GetUID())
		}
		if spec, _, _ := unstructured.NestedMap(b.Object, "spec"); len(spec) > 0 {
			return fmt.Errorf("spec %v", spec)
		}
		return nil
	})
	waitTTReady(t, ns, "a", "False", controllers.ReasonNothingToDo)
}

// touchNamespace annotates namespace ns: an event for whatever reconciles namespaces.
func touchNamespace(t *testing.T, ns string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{"smi2istio.test/touched":%q}}}`, time.Now().Format(time.RFC3339Nano))
	if err := env.Client.Patch(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		t.Fatal(err)
	}
}
