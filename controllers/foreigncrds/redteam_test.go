package foreigncrds_test

// Red-team tests of --smi-crds=foreign: another installer's CRDs may keep anything (no schema, or
// x-kubernetes-preserve-unknown-fields at the root), and may change while the operator runs. Each
// test fails when Istio is left allowing more than the SMI objects do, or when the operator reports
// Ready where nothing (or something else) is enforced.

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/controllers"
	"github.com/smi2istio/smi2istio/internal/build/install"
	"github.com/smi2istio/smi2istio/internal/cache"
)

func rtObj(t *testing.T, js string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	must(t, json.Unmarshal([]byte(js), &u.Object))
	return u
}

// rtNamespace makes a namespace in the mesh with a workload of the ServiceAccount db.
func rtNamespace(t *testing.T, ns string) {
	t.Helper()
	err := c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"istio-injection": "enabled"}}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	must(t, install.Apply(context.Background(), c, []*unstructured.Unstructured{
		rtObj(t, `{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"db","namespace":"`+ns+`"}}`),
		rtObj(t, `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"db","namespace":"`+ns+`"},
		 "spec":{"selector":{"matchLabels":{"app":"db"}},"template":{"metadata":{"labels":{"app":"db"}},
		  "spec":{"serviceAccountName":"db","containers":[{"name":"db","image":"db"}]}}}}`),
	}))
}

// rtLoosen makes the CRD's version keep anything (a schema of x-kubernetes-preserve-unknown-fields
// at the root alone, as a CRD without schema does), and restores the CRD when the test ends.
func rtLoosen(t *testing.T, crdName, version string) {
	t.Helper()
	ctx := context.Background()
	orig := &apiextv1.CustomResourceDefinition{}
	must(t, c.Get(ctx, client.ObjectKey{Name: crdName}, orig))
	must(t, rtUpdateCRD(crdName, func(crd *apiextv1.CustomResourceDefinition) {
		for i := range crd.Spec.Versions {
			if crd.Spec.Versions[i].Name == version {
				crd.Spec.Versions[i].Schema.OpenAPIV3Schema = &apiextv1.JSONSchemaProps{Type: "object", XPreserveUnknownFields: ptrTo(true)}
			}
		}
	}))
	t.Cleanup(func() {
		if err := rtUpdateCRD(crdName, func(crd *apiextv1.CustomResourceDefinition) { crd.Spec.Versions = orig.Spec.Versions }); err != nil {
			t.Errorf("restore CRD %s: %v", crdName, err)
		}
	})
}

func rtUpdateCRD(name string, mutate func(*apiextv1.CustomResourceDefinition)) error {
	ctx := context.Background()
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		crd := &apiextv1.CustomResourceDefinition{}
		if err := c.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
			return err
		}
		mutate(crd)
		return c.Update(ctx, crd, client.FieldOwner("osm-bootstrap"))
	})
}

// rtApplyKept applies an object until the apiserver keeps the field at path (the loosened schema
// takes a moment to be in effect).
func rtApplyKept(t *testing.T, o *unstructured.Unstructured, path ...string) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s %s stored with %v", o.GetKind(), o.GetName(), path), func() error {
		if err := install.Apply(context.Background(), c, []*unstructured.Unstructured{o}); err != nil {
			return err
		}
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(o.GroupVersionKind())
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(o), got); err != nil {
			return err
		}
		if _, ok, _ := unstructured.NestedFieldNoCopy(got.Object, path...); !ok {
			time.Sleep(500 * time.Millisecond)
			return fmt.Errorf("%v pruned", path)
		}
		return nil
	})
}

// rtAllows reports the AuthorizationPolicies of ns that name a principal of the ServiceAccount sa.
func rtAllows(t *testing.T, ns, sa string) []string {
	t.Helper()
	var out []string
	for _, p := range generated(t, "AuthorizationPolicy", "security.istio.io/v1beta1", ns) {
		if raw, _ := json.Marshal(p.Object["spec"]); strings.Contains(string(raw), "/sa/"+sa+`"`) {
			out = append(out, p.GetName()+": "+string(raw))
		}
	}
	return out
}

func rtTarget(ns, name, dest, src, ruleKind, rule string) string {
	return fmt.Sprintf(`{"apiVersion":"access.smi-spec.io/v1alpha3","kind":"TrafficTarget",
	 "metadata":{"name":%q,"namespace":%q},
	 "spec":{"destination":{"kind":"ServiceAccount","name":%q,"namespace":%q},
	  "rules":[{"kind":%q,"name":%q}],
	  "sources":[{"kind":"ServiceAccount","name":%q,"namespace":%q}]}}`, name, ns, dest, ns, ruleKind, rule, src, ns)
}

// A foreign TrafficTarget CRD keeps anything, `status` included (no status subresource: status is
// an ordinary field any writer of the object sets). One object whose status is not the shape the
// operator's cache decodes must not stop the operator from seeing the kind: a TrafficTarget
// deleted afterwards must stop being allowed.
func TestRedteamForeignStatusPoisonFreezesRevocation(t *testing.T) {
	ctx := context.Background()
	const ns = "rt-poison"
	rtNamespace(t, ns)
	rtLoosen(t, "traffictargets.access.smi-spec.io", "v1alpha3")
	must(t, install.Apply(ctx, c, []*unstructured.Unstructured{rtObj(t, `{"apiVersion":"specs.smi-spec.io/v1alpha4","kind":"TCPRoute",
	 "metadata":{"name":"db","namespace":"`+ns+`"},"spec":{"matches":{"ports":[5432]}}}`)}))
	good := rtObj(t, rtTarget(ns, "good", "db", "alice", "TCPRoute", "db"))
	must(t, install.Apply(ctx, c, []*unstructured.Unstructured{good}))
	eventually(t, "alice allowed", func() error {
		if len(rtAllows(t, ns, "alice")) == 0 {
			return fmt.Errorf("no AuthorizationPolicy names alice")
		}
		return nil
	})

	poison := rtObj(t, rtTarget(ns, "poison", "other", "bob", "TCPRoute", "db"))
	poison.Object["status"] = map[string]any{"observedGeneration": "lie", "conditions": []any{map[string]any{"type": "Ready", "status": "True"}}}
	rtApplyKept(t, poison, "status")
	t.Cleanup(func() { _ = c.Delete(ctx, poison) })

	// Until the apiserver tears down the kind's storage of the old schema (about a minute), its
	// watches still serve the objects pruned: wait until a new TrafficTarget is no longer seen by
	// the operator's cache (it is frozen), or two minutes (it is not).
	seen := func(name string) bool {
		cached := cache.NewSMIList(controllers.TrafficTargetGVK)
		if err := accessR.Client.List(ctx, cached, client.InNamespace(ns)); err != nil {
			return false
		}
		for _, o := range cached.Objects() {
			if o.GetName() == name {
				return true
			}
		}
		return false
	}
	for end, i := time.Now().Add(2*time.Minute), 0; time.Now().Before(end); i++ {
		canary := rtObj(t, rtTarget(ns, fmt.Sprintf("canary-%d", i), "db", "canary", "TCPRoute", "db"))
		must(t, install.Apply(ctx, c, []*unstructured.Unstructured{canary}))
		ok := false
		for j := 0; j < 40 && !ok; j++ {
			time.Sleep(250 * time.Millisecond)
			ok = seen(canary.GetName())
		}
		must(t, c.Delete(ctx, canary))
		if !ok {
			t.Errorf("TrafficTarget %s not in the operator's cache 10s after its creation: the kind is frozen by an object whose status it cannot decode", canary.GetName())
			break
		}
	}
	must(t, c.Delete(ctx, good))
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && len(rtAllows(t, ns, "alice")) > 0 {
		time.Sleep(500 * time.Millisecond)
	}
	if got := rtAllows(t, ns, "alice"); len(got) > 0 {
		cached := cache.NewSMIList(controllers.TrafficTargetGVK)
		err := accessR.Client.List(ctx, cached, client.InNamespace(ns))
		var names []string
		for _, o := range cached.Objects() {
			names = append(names, o.GetName())
		}
		t.Errorf("TrafficTarget good deleted 30s ago, Istio still allows alice (one TrafficTarget with a status the cache cannot decode); the operator's cache holds %v (%v): %v", names, err, got)
	}
}

// A TrafficTarget made unreadable by a misspelt field (a foreign CRD keeps it) allows nothing; the
// operator must say so: a Warning Event naming the field, after the Normal one that said Ready.
func TestRedteamForeignUnreadableTargetReported(t *testing.T) {
	ctx := context.Background()
	const ns = "rt-typo"
	rtNamespace(t, ns)
	rtLoosen(t, "traffictargets.access.smi-spec.io", "v1alpha3")
	must(t, install.Apply(ctx, c, []*unstructured.Unstructured{rtObj(t, `{"apiVersion":"specs.smi-spec.io/v1alpha4","kind":"TCPRoute",
	 "metadata":{"name":"db","namespace":"`+ns+`"},"spec":{"matches":{"ports":[5432]}}}`)}))
	tt := rtObj(t, rtTarget(ns, "carol-db", "db", "carol", "TCPRoute", "db"))
	must(t, install.Apply(ctx, c, []*unstructured.Unstructured{tt}))
	eventually(t, "a Normal Event and carol allowed", func() error {
		if len(rtAllows(t, ns, "carol")) == 0 {
			return fmt.Errorf("no AuthorizationPolicy names carol")
		}
		return hasEvent(t, "TrafficTarget", ns, "carol-db", corev1.EventTypeNormal, "", "")
	})
	// A misspelt key next to the destination: the object is refused (unknown field).
	must(t, unstructured.SetNestedField(tt.Object, "prod", "spec", "destination", "namespce"))
	rtApplyKept(t, tt, "spec", "destination", "namespce")
	eventually(t, "carol no longer allowed", func() error {
		if got := rtAllows(t, ns, "carol"); len(got) > 0 {
			return fmt.Errorf("still allowed: %v", got)
		}
		return nil
	})
	deadline := time.Now().Add(20 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = hasEvent(t, "TrafficTarget", ns, "carol-db", corev1.EventTypeWarning, "", "namespce"); err == nil {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Errorf("the TrafficTarget allows nothing, but its last Event still says Ready (no Warning naming the field): %v", err)
}

// An HTTPRouteGroup of a foreign CRD without schema may hold a wrong type (methods a string): the
// TrafficTarget using it must allow nothing (not keep what it allowed before), and say so.
func TestRedteamForeignWrongTypeRouteGroup(t *testing.T) {
	ctx := context.Background()
	const ns = "rt-types"
	rtNamespace(t, ns)
	rtLoosen(t, "httproutegroups.specs.smi-spec.io", "v1alpha4")
	hrg := rtObj(t, `{"apiVersion":"specs.smi-spec.io/v1alpha4","kind":"HTTPRouteGroup",
	 "metadata":{"name":"api","namespace":"`+ns+`"},
	 "spec":{"matches":[{"name":"admin","pathRegex":"/admin","methods":["GET"]}]}}`)
	must(t, install.Apply(ctx, c, []*unstructured.Unstructured{hrg}))
	must(t, install.Apply(ctx, c, []*unstructured.Unstructured{rtObj(t, rtTarget(ns, "dave-api", "db", "dave", "HTTPRouteGroup", "api"))}))
	eventually(t, "dave allowed", func() error {
		if len(rtAllows(t, ns, "dave")) == 0 {
			return fmt.Errorf("no AuthorizationPolicy names dave")
		}
		return nil
	})
	hrg.Object["spec"] = map[string]any{"matches": []any{map[string]any{"name": "admin", "pathRegex": "/admin", "methods": "GET"}}}
	eventually(t, "HTTPRouteGroup stored with methods a string", func() error {
		if err := install.Apply(ctx, c, []*unstructured.Unstructured{hrg}); err != nil {
			return err
		}
		time.Sleep(500 * time.Millisecond)
		return nil
	})
	eventually(t, "dave no longer allowed", func() error {
		if got := rtAllows(t, ns, "dave"); len(got) > 0 {
			return fmt.Errorf("still allowed: %v", got)
		}
		return nil
	})
	eventually(t, "a Warning Event on the TrafficTarget", func() error {
		return hasEvent(t, "TrafficTarget", ns, "dave-api", corev1.EventTypeWarning, "", "")
	})
}

// The version the operator watches stops being served (the other installer upgrades its CRD:
// v1beta1 served, v1alpha3 still stored but not served) while the operator runs. A TrafficTarget
// deleted afterwards (through the version served) must stop being allowed, or the operator must
// stop allowing what it can no longer see.
func TestRedteamForeignWatchedVersionUnserved(t *testing.T) {
	ctx := context.Background()
	const ns = "rt-unserved"
	rtNamespace(t, ns)
	must(t, install.Apply(ctx, c, []*unstructured.Unstructured{rtObj(t, `{"apiVersion":"specs.smi-spec.io/v1alpha4","kind":"TCPRoute",
	 "metadata":{"name":"db","namespace":"`+ns+`"},"spec":{"matches":{"ports":[5432]}}}`)}))
	tt := rtObj(t, rtTarget(ns, "erin-db", "db", "erin", "TCPRoute", "db"))
	must(t, install.Apply(ctx, c, []*unstructured.Unstructured{tt}))
	eventually(t, "erin allowed", func() error {
		if len(rtAllows(t, ns, "erin")) == 0 {
			return fmt.Errorf("no AuthorizationPolicy names erin")
		}
		return nil
	})
	const crdName = "traffictargets.access.smi-spec.io"
	orig := &apiextv1.CustomResourceDefinition{}
	must(t, c.Get(ctx, client.ObjectKey{Name: crdName}, orig))
	must(t, rtUpdateCRD(crdName, func(crd *apiextv1.CustomResourceDefinition) {
		next := *crd.Spec.Versions[0].DeepCopy()
		next.Name, next.Served, next.Storage = "v1beta1", true, false
		for i := range crd.Spec.Versions {
			crd.Spec.Versions[i].Served = false
		}
		crd.Spec.Versions = append(crd.Spec.Versions, next)
	}))
	t.Cleanup(func() {
		if err := rtUpdateCRD(crdName, func(crd *apiextv1.CustomResourceDefinition) { crd.Spec.Versions = orig.Spec.Versions }); err != nil {
			t.Errorf("restore CRD: %v", err)
		}
	})
	gone := &unstructured.Unstructured{}
	gone.SetAPIVersion("access.smi-spec.io/v1beta1")
	gone.SetKind("TrafficTarget")
	gone.SetNamespace(ns)
	gone.SetName("erin-db")
	eventually(t, "TrafficTarget deleted through v1beta1", func() error {
		err := c.Delete(ctx, gone)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && len(rtAllows(t, ns, "erin")) > 0 {
		time.Sleep(500 * time.Millisecond)
	}
	if got := rtAllows(t, ns, "erin"); len(got) > 0 {
		t.Errorf("TrafficTarget erin-db deleted 30s ago, the version watched no longer served: Istio still allows erin: %v", got)
	}
}
