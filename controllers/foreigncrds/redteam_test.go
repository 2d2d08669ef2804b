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

	"github.com/smi2istio/smi2istio/internal/build/install"
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
