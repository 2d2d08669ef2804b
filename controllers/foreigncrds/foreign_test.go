package foreigncrds_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/smi2istio/smi2istio/api/v1alpha1"
	"github.com/smi2istio/smi2istio/controllers"
	"github.com/smi2istio/smi2istio/internal/build/install"
	"github.com/smi2istio/smi2istio/internal/testing/testenv"
	"github.com/smi2istio/smi2istio/translate"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}

// applyBookstore applies OSM 1.2's bookstore demo unchanged (server-side, as kubectl apply
// --server-side) into namespaces in the mesh, and returns the SMI objects as applied.
func applyBookstore(t *testing.T, files ...string) []*unstructured.Unstructured {
	t.Helper()
	ctx := context.Background()
	for _, ns := range []string{"bookstore", "bookbuyer", "bookthief", "bookwarehouse"} {
		err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"istio-injection": "enabled"}}})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	var smi []*unstructured.Unstructured
	for _, f := range files {
		docs, err := testenv.ReadManifests(filepath.Join(testenv.RepoRoot(), "testdata", "fixtures", "osm-v1.2-bookstore", filepath.FromSlash(f)))
		must(t, err)
		must(t, install.Apply(ctx, c, docs))
		for _, d := range docs {
			if strings.HasSuffix(d.GroupVersionKind().Group, ".smi-spec.io") {
				smi = append(smi, d)
			}
		}
	}
	return smi
}

func resourceVersions(t *testing.T, objs []*unstructured.Unstructured) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, o := range objs {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(o.GroupVersionKind())
		must(t, c.Get(context.Background(), client.ObjectKeyFromObject(o), u))
		if _, has := u.Object["status"]; has {
			t.Errorf("%s %s/%s has a status: %v", o.GetKind(), o.GetNamespace(), o.GetName(), u.Object["status"])
		}
		out[o.GetKind()+" "+o.GetNamespace()+"/"+o.GetName()] = u.GetResourceVersion()
	}
	return out
}

func crdVersions(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, e := range choice {
		crd := &apiextv1.CustomResourceDefinition{}
		err := c.Get(context.Background(), client.ObjectKey{Name: e.CRD}, crd)
		if apierrors.IsNotFound(err) {
			out[e.CRD] = "absent"
			continue
		}
		must(t, err)
		out[e.CRD] = crd.ResourceVersion
	}
	return out
}

// eventsOf lists the Events about an object, oldest first.
func eventsOf(t *testing.T, kind, ns, name string) []eventsv1.Event {
	t.Helper()
	list := &eventsv1.EventList{}
	must(t, c.List(context.Background(), list, client.InNamespace(ns)))
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.Kind == kind && e.Regarding.Name == name {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreationTimestamp.Before(&out[j].CreationTimestamp) })
	return out
}

func hasEvent(t *testing.T, kind, ns, name, typ, reason, noteHas string) error {
	t.Helper()
	evs := eventsOf(t, kind, ns, name)
	for _, e := range evs {
		if e.Type == typ && (reason == "" || e.Reason == reason) && strings.Contains(e.Note, noteHas) {
			return nil
		}
	}
	var got []string
	for _, e := range evs {
		got = append(got, e.Type+"/"+e.Reason+": "+e.Note)
	}
	return fmt.Errorf("no %s Event %s on %s %s/%s with %q; got %q", typ, reason, kind, ns, name, noteHas, got)
}

func generated(t *testing.T, kind, apiVersion, ns string) []unstructured.Unstructured {
	t.Helper()
	list := &unstructured.UnstructuredList{}
	list.SetAPIVersion(apiVersion)
	list.SetKind(kind + "List")
	must(t, c.List(context.Background(), list, client.InNamespace(ns), client.MatchingLabels{translate.ManagedByLabel: translate.ManagedByValue}))
	return list.Items
}

// splitWeights are the weights of the VirtualService generated for a TrafficSplit, by subset (one
// per backend).
func splitWeights(t *testing.T, ns, split string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, vs := range generated(t, "VirtualService", "networking.istio.io/v1beta1", ns) {
		if vs.GetLabels()[translate.SourceNameLabel] != split {
			continue
		}
		http, _, _ := unstructured.NestedSlice(vs.Object, "spec", "http")
		for _, h := range http {
			routes, _, _ := unstructured.NestedSlice(h.(map[string]any), "route")
			for _, r := range routes {
				subset, _, _ := unstructured.NestedString(r.(map[string]any), "destination", "subset")
				w, _, _ := unstructured.NestedInt64(r.(map[string]any), "weight")
				out[subset] = w
			}
		}
	}
	return out
}

// With OSM 1.2's SMI CRDs kept as they are and its bookstore objects applied as OSM publishes them,
// the operator (--smi-crds=foreign) watches TrafficSplit in v1alpha2, translates everything,
// reports through Events (no status subresource), writes no status, no CRD and no user object, and
// an idle resync writes nothing.
func TestOSMCRDsKept(t *testing.T) {
	ctx := context.Background()
	byKind := map[string]v1alpha1.SMICRD{}
	for _, e := range choice {
		byKind[e.Kind] = e
	}
	for kind, want := range map[string]v1alpha1.SMICRD{
		"TrafficSplit":   {Owner: v1alpha1.SMICRDForeign, Version: "v1alpha2", Status: v1alpha1.SMIStatusEvents},
		"TrafficTarget":  {Owner: v1alpha1.SMICRDForeign, Version: "v1alpha3", Status: v1alpha1.SMIStatusEvents},
		"HTTPRouteGroup": {Owner: v1alpha1.SMICRDForeign, Version: "v1alpha4", Status: v1alpha1.SMIStatusEvents},
		"TCPRoute":       {Owner: v1alpha1.SMICRDForeign, Version: "v1alpha4", Status: v1alpha1.SMIStatusEvents},
		"UDPRoute":       {Owner: v1alpha1.SMICRDAbsent},
	} {
		got := byKind[kind]
		if got.Owner != want.Owner || got.Version != want.Version || got.Status != want.Status {
			t.Errorf("%s: %+v, want %+v", kind, got, want)
		}
	}
	if controllers.TrafficSplitGVK.Version != "v1alpha2" {
		t.Errorf("TrafficSplit watched as %s", controllers.TrafficSplitGVK)
	}
	crdsBefore := crdVersions(t)

	smi := applyBookstore(t, "apps/bookstore.yaml", "apps/bookstore-v2.yaml", "apps/bookbuyer.yaml", "apps/bookthief.yaml",
		"apps/bookwarehouse.yaml", "apps/mysql.yaml", "access/traffic-access-v1.yaml", "split/traffic-split-50-50.yaml")
	applied := resourceVersions(t, smi)

	eventually(t, "the v1alpha2 split's VirtualService, 50/50", func() error {
		if w := splitWeights(t, "bookstore", "bookstore-split"); w["bookstore-v1"] != 50 || w["bookstore-v2"] != 50 {
			return fmt.Errorf("weights %v", w)
		}
		return nil
	})
	eventually(t, "AuthorizationPolicies of the TrafficTargets", func() error {
		for _, ns := range []string{"bookstore", "bookwarehouse"} {
			if len(generated(t, "AuthorizationPolicy", "security.istio.io/v1beta1", ns)) == 0 {
				return fmt.Errorf("no AuthorizationPolicy in %s", ns)
			}
		}
		return nil
	})
	eventually(t, "Ready reported as Events", func() error {
		for _, o := range [][3]string{{"TrafficTarget", "bookstore", "bookstore"}, {"TrafficTarget", "bookwarehouse", "mysql"},
			{"HTTPRouteGroup", "bookstore", "bookstore-service-routes"}, {"TCPRoute", "bookwarehouse", "mysql"}} {
			if len(eventsOf(t, o[0], o[1], o[2])) == 0 {
				return fmt.Errorf("no Event on %s %s/%s", o[0], o[1], o[2])
			}
		}
		return hasEvent(t, "TrafficSplit", "bookstore", "bookstore-split", corev1.EventTypeNormal, controllers.ReasonApplied, "")
	})

	// A TrafficTarget whose route is missing: a Warning naming it, nothing allowed for it.
	missing := &unstructured.Unstructured{}
	must(t, json.Unmarshal([]byte(`{"apiVersion":"access.smi-spec.io/v1alpha3","kind":"TrafficTarget",
	 "metadata":{"name":"thief","namespace":"bookstore"},
	 "spec":{"destination":{"kind":"ServiceAccount","name":"bookstore","namespace":"bookstore"},
	  "rules":[{"kind":"HTTPRouteGroup","name":"no-such-routes","matches":["buy-a-book"]}],
	  "sources":[{"kind":"ServiceAccount","name":"bookthief","namespace":"bookthief"}]}}`), &missing.Object))
	must(t, install.Apply(ctx, c, []*unstructured.Unstructured{missing}))
	smi = append(smi, missing)
	eventually(t, "a Warning Event naming the missing route", func() error {
		return hasEvent(t, "TrafficTarget", "bookstore", "thief", corev1.EventTypeWarning, "", "no-such-routes")
	})
	for _, p := range generated(t, "AuthorizationPolicy", "security.istio.io/v1beta1", "bookstore") {
		if raw, _ := json.Marshal(p.Object["spec"]); strings.Contains(string(raw), "bookthief") {
			t.Errorf("AuthorizationPolicy %s allows bookthief: %s", p.GetName(), raw)
		}
	}

	// The config says whose CRDs these are, and that UDPRoute is absent.
	eventually(t, "status.smiCRDs on the config", func() error {
		cfg := &v1alpha1.SMI2IstioConfig{}
		if err := c.Get(ctx, client.ObjectKey{Name: v1alpha1.ConfigName}, cfg); err != nil {
			return err
		}
		for _, e := range cfg.Status.SMICRDs {
			if e.Kind == "UDPRoute" && e.Owner == v1alpha1.SMICRDAbsent {
				if !slices.Equal(cfg.Status.SMICRDs, choice) {
					return fmt.Errorf("status.smiCRDs %+v, want %+v", cfg.Status.SMICRDs, choice)
				}
				return nil
			}
		}
		return fmt.Errorf("status.smiCRDs %+v", cfg.Status.SMICRDs)
	})

	// Idle: reconciling everything again writes nothing, and no Event.
	time.Sleep(2 * time.Second)
	before := writes.Load()
	for _, req := range []reconcile.Request{
		{NamespacedName: types.NamespacedName{Namespace: "bookstore", Name: "bookstore-split"}},
	} {
		_, err := splitR.Reconcile(ctx, req)
		must(t, err)
	}
	for _, req := range []reconcile.Request{
		{NamespacedName: types.NamespacedName{Namespace: "bookstore", Name: "bookstore"}},
		{NamespacedName: types.NamespacedName{Namespace: "bookwarehouse", Name: "bookwarehouse"}},
		{NamespacedName: types.NamespacedName{Namespace: "bookwarehouse", Name: "mysql"}},
	} {
		_, err := accessR.Reconcile(ctx, req)
		must(t, err)
	}
	if n := writes.Load() - before; n != 0 {
		t.Errorf("an idle reconcile wrote %d time(s)", n)
	}

	if n := smiStatusCalls.Load(); n != 0 {
		t.Errorf("the status subresource of SMI objects was called %d time(s)", n)
	}
	if after := resourceVersions(t, smi[:len(smi)-1]); !mapsEqual(after, applied) {
		t.Errorf("user objects rewritten: %v, applied %v", after, applied)
	}
	if after := crdVersions(t); !mapsEqual(after, crdsBefore) || after["udproutes.specs.smi-spec.io"] != "absent" {
		t.Errorf("CRDs written: %v, before %v", after, crdsBefore)
	}
	// The memory of what was reported is bounded by the live objects: a deletion forgets.
	remembered := controllers.ReportedByEvents()
	must(t, c.Delete(ctx, missing))
	eventually(t, "the deleted TrafficTarget forgotten", func() error {
		if n := controllers.ReportedByEvents(); n != remembered-1 {
			return fmt.Errorf("%d objects remembered, had %d", n, remembered)
		}
		return nil
	})

	cfg := &v1alpha1.SMI2IstioConfig{}
	must(t, c.Get(ctx, client.ObjectKey{Name: v1alpha1.ConfigName}, cfg))
	for _, m := range cfg.Status.StorageMigration {
		if m.Name != "udproutes.specs.smi-spec.io" && m.State != v1alpha1.MigrationSkipped {
			t.Errorf("storage migration of a foreign CRD: %+v", m)
		}
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// OSM's CRDs check no name: a TrafficTarget whose source is `web*` is stored. The translator refuses
// it (not accepted, a Warning Event), and no policy allows anything for it.
func TestUnvalidatedNamesFailClosed(t *testing.T) {
	ctx := context.Background()
	applyBookstore(t)
	tt := &unstructured.Unstructured{}
	must(t, json.Unmarshal([]byte(`{"apiVersion":"access.smi-spec.io/v1alpha3","kind":"TrafficTarget",
	 "metadata":{"name":"wild","namespace":"bookwarehouse"},
	 "spec":{"destination":{"kind":"ServiceAccount","name":"wild-dest","namespace":"bookwarehouse"},
	  "rules":[{"kind":"TCPRoute","name":"mysql"}],
	  "sources":[{"kind":"ServiceAccount","name":"web*","namespace":"bookbuyer"}]}}`), &tt.Object))
	must(t, install.Apply(ctx, c, []*unstructured.Unstructured{tt}))
	eventually(t, "a Warning Event on the TrafficTarget", func() error {
		return hasEvent(t, "TrafficTarget", "bookwarehouse", "wild", corev1.EventTypeWarning, "", "InvalidName")
	})
	for _, ns := range []string{"bookwarehouse", "bookbuyer"} {
		for _, p := range generated(t, "AuthorizationPolicy", "security.istio.io/v1beta1", ns) {
			if raw, _ := json.Marshal(p.Object["spec"]); strings.Contains(string(raw), "web") {
				t.Errorf("AuthorizationPolicy %s/%s names web*: %s", ns, p.GetName(), raw)
			}
		}
	}
	for _, e := range eventsOf(t, "TrafficTarget", "bookwarehouse", "wild") {
		if e.Type == corev1.EventTypeNormal {
			t.Errorf("a Normal Event: %s %s", e.Reason, e.Note)
		}
	}
}

// A foreign CRD may keep fields it does not know (x-kubernetes-preserve-unknown-fields): a misspelt
// `pathRegexp`, read as absent, would allow every path. The HTTPRouteGroup is not accepted (the
// Event names the field) and the TrafficTarget using it allows nothing.
func TestUnknownFieldsFailClosed(t *testing.T) {
	ctx := context.Background()
	applyBookstore(t)
	crd := &apiextv1.CustomResourceDefinition{}
	must(t, c.Get(ctx, client.ObjectKey{Name: "httproutegroups.specs.smi-spec.io"}, crd))
	for i, v := range crd.Spec.Versions {
		if v.Name == "v1alpha4" {
			items := v.Schema.OpenAPIV3Schema.Properties["spec"].Properties["matches"].Items.Schema
			items.XPreserveUnknownFields = ptrTo(true)
			crd.Spec.Versions[i] = v
		}
	}
	must(t, c.Update(ctx, crd, client.FieldOwner("osm-bootstrap")))
	routes := func(methods string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		must(t, json.Unmarshal([]byte(`{"apiVersion":"specs.smi-spec.io/v1alpha4","kind":"HTTPRouteGroup",
		 "metadata":{"name":"typo-routes","namespace":"bookstore"},
		 "spec":{"matches":[{"name":"admin","pathRegexp":"/admin","methods":[`+methods+`]}]}}`), &u.Object))
		return u
	}
	target := &unstructured.Unstructured{}
	must(t, json.Unmarshal([]byte(`{"apiVersion":"access.smi-spec.io/v1alpha3","kind":"TrafficTarget",
	 "metadata":{"name":"typo","namespace":"bookstore"},
	 "spec":{"destination":{"kind":"ServiceAccount","name":"bookstore","namespace":"bookstore"},
	  "rules":[{"kind":"HTTPRouteGroup","name":"typo-routes","matches":["admin"]}],
	  "sources":[{"kind":"ServiceAccount","name":"typo-src","namespace":"bookbuyer"}]}}`), &target.Object))
	must(t, install.Apply(ctx, c, []*unstructured.Unstructured{target}))
	// The CRD's new schema takes a moment to be in effect everywhere (the apiserver's storage of the
	// kind is replaced, watches re-established): each try is a new generation of the route group.
	i := 0
	eventually(t, "Warning Events naming the field", func() error {
		i++
		if err := install.Apply(ctx, c, []*unstructured.Unstructured{routes([]string{`"GET"`, `"GET","HEAD"`}[i%2])}); err != nil {
			return err // until the schema that keeps the field is in effect
		}
		time.Sleep(time.Second)
		if err := hasEvent(t, "HTTPRouteGroup", "bookstore", "typo-routes", corev1.EventTypeWarning, "", "pathRegexp"); err != nil {
			return err
		}
		return hasEvent(t, "TrafficTarget", "bookstore", "typo", corev1.EventTypeWarning, "", "")
	})
	for _, p := range generated(t, "AuthorizationPolicy", "security.istio.io/v1beta1", "bookstore") {
		if raw, _ := json.Marshal(p.Object["spec"]); strings.Contains(string(raw), "typo-src") {
			t.Errorf("AuthorizationPolicy %s allows typo-src: %s", p.GetName(), raw)
		}
	}
}

func ptrTo[T any](v T) *T { return &v }
