package foreigncrds_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/api/v1alpha1"
	"github.com/smi2istio/smi2istio/internal/build/install"
)

// keepUnknown makes the schema node at path (property names below the root) of a CRD's version
// keep every field it does not know, as another installer's CRD may.
func keepUnknown(t *testing.T, name, version string, path ...string) {
	t.Helper()
	ctx := context.Background()
	crd := &unstructured.Unstructured{}
	crd.SetGroupVersionKind(apiextv1.SchemeGroupVersion.WithKind("CustomResourceDefinition"))
	must(t, c.Get(ctx, client.ObjectKey{Name: name}, crd))
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	for _, v := range versions {
		v := v.(map[string]any)
		if v["name"] != version {
			continue
		}
		fields := []string{"schema", "openAPIV3Schema"}
		for _, p := range path {
			fields = append(fields, "properties", p)
		}
		must(t, unstructured.SetNestedField(v, true, append(fields, "x-kubernetes-preserve-unknown-fields")...))
	}
	must(t, unstructured.SetNestedSlice(crd.Object, versions, "spec", "versions"))
	must(t, c.Update(ctx, crd, client.FieldOwner("osm-bootstrap")))
}

// applyUntilKept applies o until the apiserver stores the misspelt field (the CRD's new schema
// takes a moment to be in effect), then waits for a Warning Event naming it.
func applyUntilKept(t *testing.T, o *unstructured.Unstructured, path ...string) {
	t.Helper()
	ctx := context.Background()
	field := path[len(path)-1]
	i := 0
	eventually(t, o.GetKind()+" stored with "+field+" and a Warning Event naming it", func() error {
		// Each try a new generation: the CRD's new schema takes a moment to be in effect everywhere
		// (its storage replaced, watches re-established).
		i++
		must(t, unstructured.SetNestedField(o.Object, fmt.Sprint("try-", i), path...))
		if err := install.Apply(ctx, c, []*unstructured.Unstructured{o}); err != nil {
			time.Sleep(300 * time.Millisecond)
			return err // until the schema that keeps the field is in effect
		}
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(o.GroupVersionKind())
		must(t, c.Get(ctx, client.ObjectKeyFromObject(o), got))
		raw, _ := json.Marshal(got.Object["spec"])
		if !strings.Contains(string(raw), `"`+field+`"`) {
			time.Sleep(300 * time.Millisecond)
			return &pruned{field}
		}
		return hasEvent(t, o.GetKind(), o.GetNamespace(), o.GetName(), corev1.EventTypeWarning, "", field)
	})
}

type pruned struct{ field string }

func (p *pruned) Error() string { return p.field + " pruned by the apiserver" }

// A TrafficTarget or TrafficSplit with a field its version does not have, kept by a foreign CRD
// that does not prune: the object is not accepted and the Warning Event names the field (the
// TrafficTarget allows nothing, the split routes nothing), instead of no word at all.
func TestUnreadableTargetAndSplitReported(t *testing.T) {
	applyBookstore(t)
	keepUnknown(t, "traffictargets.access.smi-spec.io", "v1alpha3", "spec", "destination")
	keepUnknown(t, "trafficsplits.split.smi-spec.io", "v1alpha2", "spec")

	target := &unstructured.Unstructured{}
	must(t, json.Unmarshal([]byte(`{"apiVersion":"access.smi-spec.io/v1alpha3","kind":"TrafficTarget",
	 "metadata":{"name":"typo-target","namespace":"bookstore"},
	 "spec":{"destination":{"kind":"ServiceAccount","name":"bookstore","namespace":"bookstore"},
	  "rules":[{"kind":"TCPRoute","name":"typo-tcp"}],
	  "sources":[{"kind":"ServiceAccount","name":"typo-target-src","namespace":"bookbuyer"}]}}`), &target.Object))
	applyUntilKept(t, target, "spec", "destination", "namespce")

	split := &unstructured.Unstructured{}
	must(t, json.Unmarshal([]byte(`{"apiVersion":"split.smi-spec.io/v1alpha2","kind":"TrafficSplit",
	 "metadata":{"name":"typo-split","namespace":"bookstore"},
	 "spec":{"service":"bookstore","backends":[{"service":"bookstore-v1","weight":50},{"service":"bookstore-v2","weight":50}]}}`), &split.Object))
	applyUntilKept(t, split, "spec", "servce")

	for _, p := range generated(t, "AuthorizationPolicy", "security.istio.io/v1beta1", "bookstore") {
		if raw, _ := json.Marshal(p.Object["spec"]); strings.Contains(string(raw), "typo-target-src") {
			t.Errorf("AuthorizationPolicy %s allows the unreadable TrafficTarget's source: %s", p.GetName(), raw)
		}
	}
	if w := splitWeights(t, "bookstore", "typo-split"); len(w) > 0 {
		t.Errorf("the unreadable split is routed: %v", w)
	}
}

// The config's status counts the objects reported by Events as their Events say (Ready, not
// NotReady for want of a status): the OSM demo's split is Ready.
func TestConfigCountsObjectsReportedByEvents(t *testing.T) {
	applyBookstore(t, "apps/bookstore.yaml", "apps/bookstore-v2.yaml", "split/traffic-split-50-50.yaml")
	eventually(t, "the config counts the Ready split", func() error {
		cfg := &v1alpha1.SMI2IstioConfig{}
		if err := c.Get(context.Background(), client.ObjectKey{Name: v1alpha1.ConfigName}, cfg); err != nil {
			return err
		}
		for _, n := range cfg.Status.Objects {
			if n.Kind == "TrafficSplit" && n.Ready >= 1 {
				return nil
			}
		}
		return fmt.Errorf("status.objects %+v: no Ready TrafficSplit", cfg.Status.Objects)
	})
}
