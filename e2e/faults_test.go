//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/internal/testing/proc"
)

// Faults on the OSM 1.2 demo: the operator crashes and restarts mid-walk-through, generated
// objects are deleted or edited by hand, kube-apiserver and istiod restart. After each, istiod's
// config for the sidecars converges back to what the SMI objects say.
func TestFaults(t *testing.T) {
	cl := newCluster(t)
	cl.createNamespaces("bookstore", "bookbuyer", "bookthief", "bookwarehouse")
	cl.joinMesh("bookstore", "bookbuyer", "bookthief", "bookwarehouse")
	for _, f := range []string{"bookbuyer", "bookthief", "bookstore", "bookwarehouse", "mysql"} {
		cl.applyFile(fixture("osm-v1.2-bookstore/apps/" + f + ".yaml"))
	}
	w := cl.osm12Workloads()
	cl.applyFile(fixture("osm-v1.2-bookstore/access/traffic-access-v1.yaml"))
	cl.applyFile(fixture("osm-v1.2-bookstore/split/traffic-split-v1.yaml"))
	storeAccess := []check{allow(w.booksBought(w.buyer)), allow(w.buyABook(w.buyer)), deny(w.buyABook(w.thief))}
	cl.expectAccess("before the faults", w.store, storeAccess...)
	cl.expectRoutes("before the faults", w.buyer, "bookstore.bookstore.svc.cluster.local", 14001, "default -> "+cluster14001("bookstore-v1")+"=100")
	before := cl.generated()

	// The operator crashes; bookstore-v2 and its TrafficTarget (v1alpha3, the stored version: no
	// conversion needed) arrive while it is down. The v1alpha2 split waits for it: converting needs
	// the operator's webhook, so the apiserver refuses it until the operator is back.
	cl.operator.Kill()
	cl.applyFile(fixture("osm-v1.2-bookstore/apps/bookstore-v2.yaml"))
	store2 := cl.register("bookstore", "bookstore-v2")
	must(t, cl.operator.Start())
	cl.applyFile(fixture("osm-v1.2-bookstore/split/traffic-split-50-50.yaml"))
	fiftyFifty := "default -> " + cluster14001("bookstore-v1") + "=50 " + cluster14001("bookstore-v2") + "=50"
	cl.expectRoutes("operator restarted mid-walk-through", w.buyer, "bookstore.bookstore.svc.cluster.local", 14001, fiftyFifty)
	cl.expectAccess("operator restarted mid-walk-through", store2, allow(w.buyABook(w.buyer)), deny(w.buyABook(w.thief)))
	cl.expectAccess("operator restarted mid-walk-through", w.store, storeAccess...)
	after := cl.generated()
	// Nothing lost (every object from before is still there) and nothing duplicated (the only new
	// objects are bookstore-v2's policies; still one VirtualService and one DestinationRule).
	var added []string
	for k := range after {
		if _, ok := before[k]; !ok {
			added = append(added, k)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			t.Errorf("lost across the operator restart: %s", k)
		}
	}
	sort.Strings(added)
	if len(added) != 3 || !strings.HasPrefix(added[0], "AuthorizationPolicy bookstore/bookstore-v2-") ||
		!strings.HasPrefix(added[1], "EnvoyFilter bookstore/bookstore-v2-") || !strings.HasPrefix(added[2], "PeerAuthentication bookstore/bookstore-v2-") {
		t.Errorf("objects added across the restart: %v, want bookstore-v2's AuthorizationPolicy, EnvoyFilter and PeerAuthentication\n%s", added, cl.state())
	}

	// A clean restart with nothing changed writes nothing: every generated object keeps its
	// resourceVersion once the new process has reconciled every SMI object.
	cl.operator.Stop()
	must(t, cl.operator.Start())
	cl.waitReconciled(5) // 4 TrafficTargets and 1 TrafficSplit
	if again := cl.generated(); fmt.Sprint(again) != fmt.Sprint(after) {
		t.Errorf("a restart with nothing changed rewrote generated objects:\nbefore %v\nafter  %v", after, again)
	}

	// A generated object deleted by hand is restored; one edited by hand is put back.
	ap := cl.generatedObject("AuthorizationPolicy", "bookstore", "bookstore")
	must(t, cl.c.Delete(context.Background(), ap))
	eventually(t, "the deleted AuthorizationPolicy is restored", func() error {
		return cl.c.Get(context.Background(), client.ObjectKeyFromObject(ap), ap.DeepCopy())
	})
	cl.expectAccess("AuthorizationPolicy deleted by hand", w.store, storeAccess...)
	vs := cl.generatedObject("VirtualService", "bookstore", "bookstore")
	edit := []byte(`{"spec":{"http":[{"route":[{"destination":{"host":"bookstore.bookstore.svc.cluster.local","subset":"bookstore-v1"},"weight":100}]}]}}`)
	must(t, cl.c.Patch(context.Background(), vs, client.RawPatch("application/merge-patch+json", edit), client.FieldOwner("kubectl-edit")))
	cl.expectRoutes("VirtualService edited by hand", w.buyer, "bookstore.bookstore.svc.cluster.local", 14001, fiftyFifty)

	// kube-apiserver restarts; the operator's watches resume and a later change still lands.
	must(t, cl.cp.RestartAPIServer())
	split := cl.applyFile(fixture("osm-v1.2-bookstore/split/traffic-split-50-50.yaml"))[0]
	setWeights(t, split, 25, 75)
	cl.apply(split)
	cl.expectRoutes("after an apiserver restart", w.buyer, "bookstore.bookstore.svc.cluster.local", 14001,
		"default -> "+cluster14001("bookstore-v1")+"=25 "+cluster14001("bookstore-v2")+"=75")

	// istiod restarts: it rebuilds the same config from our objects.
	cl.istiod.Stop()
	must(t, cl.istiod.Start())
	cl.expectAccess("after an istiod restart", w.store, storeAccess...)
	cl.expectAccess("after an istiod restart", w.mysql, allow(tcp(w.warehouse, 3306)), deny(tcp(w.thief, 3306)))
	cl.expectRoutes("after an istiod restart", w.buyer, "bookstore.bookstore.svc.cluster.local", 14001,
		"default -> "+cluster14001("bookstore-v1")+"=25 "+cluster14001("bookstore-v2")+"=75")
	cl.expectIstiodClean()
}

// generated maps "Kind namespace/name" of every generated object to its resourceVersion.
func (cl *cluster) generated() map[string]string {
	out := map[string]string{}
	for _, gvk := range istioKinds {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		must(cl.t, cl.c.List(context.Background(), list, client.MatchingLabels{"app.kubernetes.io/managed-by": "smi2istio"}))
		for _, o := range list.Items {
			out[gvk.Kind+" "+o.GetNamespace()+"/"+o.GetName()] = o.GetResourceVersion()
		}
	}
	return out
}

// generatedObject finds the one generated object of a kind in a namespace whose name starts with prefix.
func (cl *cluster) generatedObject(kind, namespace, prefix string) *unstructured.Unstructured {
	cl.t.Helper()
	for _, gvk := range istioKinds {
		if gvk.Kind != kind {
			continue
		}
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		must(cl.t, cl.c.List(context.Background(), list, client.InNamespace(namespace), client.MatchingLabels{"app.kubernetes.io/managed-by": "smi2istio"}))
		for i := range list.Items {
			if strings.HasPrefix(list.Items[i].GetName(), prefix) && list.Items[i].GetLabels()["smi2istio.io/source-kind"] != "SMI2IstioConfig" {
				return &list.Items[i]
			}
		}
	}
	cl.t.Fatalf("no generated %s %s/%s*\n%s", kind, namespace, prefix, cl.state())
	return nil
}

// waitReconciled waits until the operator's process has finished at least n reconciles of SMI
// objects (its smi2istio_reconcile_outcomes_total counter).
func (cl *cluster) waitReconciled(n float64) {
	cl.t.Helper()
	eventually(cl.t, fmt.Sprintf("the operator reconciled %v SMI objects", n), func() error {
		ms, err := proc.Metrics("http://" + cl.opMetrics + "/metrics")
		if err != nil {
			return err
		}
		var sum float64
		for _, s := range ms["smi2istio_reconcile_outcomes_total"] {
			sum += s.Value
		}
		if sum < n {
			return fmt.Errorf("%v reconciles so far", sum)
		}
		return nil
	})
}
