package controllers_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/smi2istio/smi2istio/api/v1alpha1"
	"github.com/smi2istio/smi2istio/controllers"
	"github.com/smi2istio/smi2istio/internal/build/install"
	"github.com/smi2istio/smi2istio/internal/cache"
	"github.com/smi2istio/smi2istio/internal/localcp"
	"github.com/smi2istio/smi2istio/internal/membership"
	"github.com/smi2istio/smi2istio/internal/recorder"
	"github.com/smi2istio/smi2istio/internal/smi/conversion"
	"github.com/smi2istio/smi2istio/internal/smi/crds"
	"github.com/smi2istio/smi2istio/internal/testing/istiocheck"
	"github.com/smi2istio/smi2istio/internal/testing/testenv"
	"github.com/smi2istio/smi2istio/translate"
)

// The SMI CRD names, and what each stores in OSM 1.2 and in smi2istio.
const (
	splitCRD  = "trafficsplits.split.smi-spec.io"
	targetCRD = "traffictargets.access.smi-spec.io"
	hrgCRD    = "httproutegroups.specs.smi-spec.io"
	tcpCRD    = "tcproutes.specs.smi-spec.io"
	udpCRD    = "udproutes.specs.smi-spec.io"
)

// takeoverCluster is a control plane of its own (the suite's has smi2istio's CRDs from the start):
// OSM's SMI CRDs are installed first, as osm-bootstrap does.
type takeoverCluster struct {
	cp     *localcp.ControlPlane
	c      client.Client
	dyn    dynamic.Interface
	scheme *runtime.Scheme
}

func startTakeoverCluster(t *testing.T) *takeoverCluster {
	t.Helper()
	cp, err := localcp.Start("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	scheme := runtime.NewScheme()
	must(t, errors.Join(clientgoscheme.AddToScheme(scheme), apiextv1.AddToScheme(scheme), v1alpha1.AddToScheme(scheme), cache.AddToScheme(scheme)))
	c, err := client.New(cp.Config, client.Options{Scheme: scheme})
	must(t, err)
	dyn, err := dynamic.NewForConfig(cp.Config)
	must(t, err)
	return &takeoverCluster{cp: cp, c: c, dyn: dyn, scheme: scheme}
}

func waitEstablished(t *testing.T, c client.Client, names ...string) {
	t.Helper()
	for _, name := range names {
		eventually(t, "CRD "+name+" established", func() error {
			crd := &apiextv1.CustomResourceDefinition{}
			if err := c.Get(context.Background(), client.ObjectKey{Name: name}, crd); err != nil {
				return err
			}
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextv1.Established && cond.Status == apiextv1.ConditionTrue {
					return nil
				}
			}
			return fmt.Errorf("not established: %+v", crd.Status.Conditions)
		})
	}
}

// installOSM creates OSM 1.2's SMI CRDs as osm-bootstrap does (a create, its own field manager),
// OSM's config and policy CRDs, and Istio's CRDs.
func (k *takeoverCluster) installOSM(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	var names []string
	for _, f := range []string{"smi_traffic_split.yaml", "smi_traffic_access.yaml", "smi_http_route_group.yaml", "smi_tcp_route.yaml"} {
		list, err := crds.LoadFile(filepath.Join(testenv.RepoRoot(), "controllers", "testdata", "osm-v1.2-smi-crds", f))
		must(t, err)
		for _, crd := range list {
			must(t, k.c.Create(ctx, crd, client.FieldOwner("osm-bootstrap")))
			names = append(names, crd.Name)
		}
	}
	waitEstablished(t, k.c, names...)
	for _, f := range []string{"config_meshconfig.yaml", "policy_egress.yaml", "policy_ingress_backend.yaml", "policy_retry.yaml", "policy_upstream_traffic_setting.yaml"} {
		list, err := crds.LoadFile(filepath.Join(testenv.RepoRoot(), "internal", "membership", "testdata", "osm-v1.2", f))
		must(t, err)
		must(t, crds.Install(ctx, k.c, list))
	}
	f, err := istiocheck.CRDFile()
	must(t, err)
	istio, err := crds.LoadFile(f)
	must(t, err)
	must(t, crds.Install(ctx, k.c, istio))
}

// osmBookstore is the OSM 1.2 bookstore demo as OSM runs it: its namespaces added to the mesh
// (`osm namespace add` labels them), the apps, the access policies and the 50/50 split, applied
// unchanged in OSM's versions. It returns the SMI objects as applied.
func (k *takeoverCluster) osmBookstore(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	ctx := context.Background()
	for _, ns := range []string{"bookstore", "bookbuyer", "bookthief", "bookwarehouse"} {
		must(t, k.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns,
			Labels:      map[string]string{membership.OSMMonitoredLabel: "osm"},
			Annotations: map[string]string{"openservicemesh.io/sidecar-injection": "enabled"}}}))
	}
	var smi []*unstructured.Unstructured
	for _, f := range []string{"apps/bookstore.yaml", "apps/bookstore-v2.yaml", "apps/bookbuyer.yaml", "apps/bookthief.yaml", "apps/bookwarehouse.yaml",
		"apps/mysql.yaml", "access/traffic-access-v1.yaml", "split/traffic-split-50-50.yaml"} {
		docs, err := testenv.ReadManifests(fixture("osm-v1.2-bookstore", filepath.FromSlash(f)))
		must(t, err)
		must(t, install.Apply(ctx, k.c, docs)) // kubectl apply --server-side
		for _, d := range docs {
			if strings.HasSuffix(d.GroupVersionKind().Group, ".smi-spec.io") {
				smi = append(smi, d)
			}
		}
	}
	return smi
}

// ourCRDs are the CRDs of dist/install.yaml (config/default rendered), their conversion pointed at
// the suite's webhook (in a cluster: the webhook Service, whose caBundle the operator sets).
func ourCRDs(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	objs, err := install.Objects(filepath.Join(testenv.RepoRoot(), "config", "default"))
	must(t, err)
	suite := &apiextv1.CustomResourceDefinition{}
	must(t, env.Client.Get(context.Background(), client.ObjectKey{Name: splitCRD}, suite))
	cc, err := runtime.DefaultUnstructuredConverter.ToUnstructured(suite.Spec.Conversion.Webhook.ClientConfig)
	must(t, err)
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" {
			continue
		}
		if s, _, _ := unstructured.NestedString(o.Object, "spec", "conversion", "strategy"); s == string(apiextv1.WebhookConverter) {
			must(t, unstructured.SetNestedMap(o.Object, cc, "spec", "conversion", "webhook", "clientConfig"))
		}
		out = append(out, o)
	}
	if len(out) != 6 {
		t.Fatalf("%d CRDs in config/default, want 6", len(out))
	}
	return out
}

func typedCRD(t *testing.T, u *unstructured.Unstructured) *apiextv1.CustomResourceDefinition {
	t.Helper()
	crd := &apiextv1.CustomResourceDefinition{}
	must(t, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, crd))
	return crd
}

// checkCRDsAreOurs: every SMI CRD is now exactly smi2istio's (no version, schema or column left
// from OSM's), converts through the webhook and has the status subresource in every version.
func checkCRDsAreOurs(t *testing.T, c client.Client, ours map[string]*apiextv1.CustomResourceDefinition) {
	t.Helper()
	for name, want := range ours {
		got := &apiextv1.CustomResourceDefinition{}
		must(t, c.Get(context.Background(), client.ObjectKey{Name: name}, got))
		if got.Labels["app.kubernetes.io/part-of"] != "smi2istio" {
			t.Errorf("%s: labels %v", name, got.Labels)
		}
		if !reflect.DeepEqual(got.Spec.Conversion.Strategy, want.Spec.Conversion.Strategy) {
			t.Errorf("%s: conversion %s, want %s", name, got.Spec.Conversion.Strategy, want.Spec.Conversion.Strategy)
		}
		var gotNames, wantNames []string
		for _, v := range got.Spec.Versions {
			gotNames = append(gotNames, v.Name)
		}
		for _, w := range want.Spec.Versions {
			wantNames = append(wantNames, w.Name)
			i := slices.IndexFunc(got.Spec.Versions, func(v apiextv1.CustomResourceDefinitionVersion) bool { return v.Name == w.Name })
			if i < 0 {
				continue
			}
			g := got.Spec.Versions[i]
			switch {
			case g.Served != w.Served || g.Storage != w.Storage:
				t.Errorf("%s %s: served %v storage %v, want %v %v", name, w.Name, g.Served, g.Storage, w.Served, w.Storage)
			case g.Subresources == nil || g.Subresources.Status == nil:
				t.Errorf("%s %s: no status subresource", name, w.Name)
			case !reflect.DeepEqual(g.Schema, w.Schema):
				t.Errorf("%s %s: the schema is not smi2istio's (merged with OSM's?)", name, w.Name)
			case !reflect.DeepEqual(g.AdditionalPrinterColumns, w.AdditionalPrinterColumns):
				t.Errorf("%s %s: printer columns %+v, want %+v", name, w.Name, g.AdditionalPrinterColumns, w.AdditionalPrinterColumns)
			}
		}
		sort.Strings(gotNames)
		sort.Strings(wantNames)
		if !slices.Equal(gotNames, wantNames) {
			t.Errorf("%s: versions %v, want %v", name, gotNames, wantNames)
		}
	}
}

func storedVersions(t *testing.T, c client.Client, name string) []string {
	t.Helper()
	crd := &apiextv1.CustomResourceDefinition{}
	must(t, c.Get(context.Background(), client.ObjectKey{Name: name}, crd))
	return crd.Status.StoredVersions
}

// dropVersion updates the CRD without the version (what a later smi2istio release could ship).
func dropVersion(c client.Client, name, version string, dryRun bool) error {
	crd := &apiextv1.CustomResourceDefinition{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: name}, crd); err != nil {
		return err
	}
	crd.Spec.Versions = slices.DeleteFunc(crd.Spec.Versions, func(v apiextv1.CustomResourceDefinitionVersion) bool { return v.Name == version })
	var opts []client.UpdateOption
	if dryRun {
		opts = append(opts, client.DryRunAll)
	}
	return c.Update(context.Background(), crd, opts...)
}

// meaning is an SMI object's content (all but apiVersion, kind, metadata and status) as plain JSON
// values, so that objects decoded differently compare equal.
func meaning(t *testing.T, obj map[string]any) any {
	t.Helper()
	out := map[string]any{}
	for k, v := range obj {
		switch k {
		case "apiVersion", "kind", "metadata", "status":
		default:
			out[k] = v
		}
	}
	b, err := json.Marshal(out)
	must(t, err)
	var v any
	must(t, json.Unmarshal(b, &v))
	return v
}

// convertTo converts an object in process (the webhook's code) and returns its meaning.
func convertTo(t *testing.T, obj map[string]any, apiVersion string) any {
	t.Helper()
	if obj["apiVersion"] == apiVersion {
		return meaning(t, obj)
	}
	raw, err := json.Marshal(obj)
	must(t, err)
	out, err := conversion.Convert(raw, apiVersion)
	must(t, err)
	m := map[string]any{}
	must(t, json.Unmarshal(out, &m))
	return meaning(t, m)
}

func gvrOf(crd *apiextv1.CustomResourceDefinition, version string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: crd.Spec.Group, Version: version, Resource: crd.Spec.Names.Plural}
}

func served(crd *apiextv1.CustomResourceDefinition) []string {
	var out []string
	for _, v := range crd.Spec.Versions {
		if v.Served {
			out = append(out, v.Name)
		}
	}
	return out
}

// checkReadBack reads every object in every version the CRDs serve (through the apiserver: storage,
// then the conversion webhook): read in its own version it is the object as applied; in any other,
// what the conversion makes of the object as applied; and that converts back to the object as
// applied. With status: every object has a Ready condition.
func checkReadBack(t *testing.T, k *takeoverCluster, ours map[string]*apiextv1.CustomResourceDefinition, objs []*unstructured.Unstructured, withStatus bool) {
	t.Helper()
	byKind := map[string]*apiextv1.CustomResourceDefinition{}
	for _, crd := range ours {
		byKind[crd.Spec.Group+"/"+crd.Spec.Names.Kind] = crd
	}
	reads := 0
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		crd := byKind[gvk.Group+"/"+gvk.Kind]
		if crd == nil {
			t.Fatalf("no CRD for %s", gvk)
		}
		what := fmt.Sprintf("%s %s/%s", gvk.Kind, o.GetNamespace(), o.GetName())
		for _, v := range served(crd) {
			got, err := k.dyn.Resource(gvrOf(crd, v)).Namespace(o.GetNamespace()).Get(context.Background(), o.GetName(), metav1.GetOptions{})
			if err != nil {
				t.Errorf("%s: read as %s: %v", what, v, err)
				continue
			}
			reads++
			apiVersion := gvk.Group + "/" + v
			if w, g := convertTo(t, o.Object, apiVersion), meaning(t, got.Object); !reflect.DeepEqual(w, g) {
				t.Errorf("%s read as %s:\n got: %v\nwant: %v", what, v, g, w)
			}
			if b, w := convertTo(t, got.Object, gvk.GroupVersion().String()), meaning(t, o.Object); !reflect.DeepEqual(b, w) {
				t.Errorf("%s read as %s does not convert back to the object as applied:\n got: %v\nwant: %v", what, v, b, w)
			}
			if withStatus {
				conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
				if !slices.ContainsFunc(conds, func(c any) bool { m, _ := c.(map[string]any); return m["type"] == controllers.ConditionReady }) {
					t.Errorf("%s read as %s: no Ready condition in its status: %v", what, v, got.Object["status"])
				}
			}
		}
	}
	if reads < 2*len(objs) {
		t.Errorf("only %d reads of %d objects", reads, len(objs))
	}
}

// resourceVersions of the objects now, by kind/namespace/name.
func resourceVersions(t *testing.T, k *takeoverCluster, ours map[string]*apiextv1.CustomResourceDefinition, objs []*unstructured.Unstructured) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, o := range objs {
		var crd *apiextv1.CustomResourceDefinition
		for _, c := range ours {
			if c.Spec.Names.Kind == o.GetKind() && c.Spec.Group == o.GroupVersionKind().Group {
				crd = c
			}
		}
		got, err := k.dyn.Resource(gvrOf(crd, o.GroupVersionKind().Version)).Namespace(o.GetNamespace()).Get(context.Background(), o.GetName(), metav1.GetOptions{})
		must(t, err)
		out[key(o)] = got.GetResourceVersion()
	}
	return out
}

// failingUpdates fails every update of a TrafficSplit while fail is set (an object the migration
// cannot rewrite: a webhook denying it, an apiserver error).
type failingUpdates struct {
	client.Client
	fail     atomic.Bool
	attempts atomic.Int64
}

func (f *failingUpdates) Update(ctx context.Context, o client.Object, opts ...client.UpdateOption) error {
	if f.fail.Load() && o.GetObjectKind().GroupVersionKind().Kind == "TrafficSplit" {
		f.attempts.Add(1)
		return apierrors.NewInternalError(errors.New("injected failure"))
	}
	return f.Client.Update(ctx, o, opts...)
}

func migrationStatus(t *testing.T, c client.Client) (v1alpha1.SMI2IstioConfigStatus, map[string]v1alpha1.StorageMigration, error) {
	t.Helper()
	cfg := &v1alpha1.SMI2IstioConfig{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: v1alpha1.ConfigName}, cfg); err != nil {
		return v1alpha1.SMI2IstioConfigStatus{}, nil, err
	}
	out := map[string]v1alpha1.StorageMigration{}
	for _, m := range cfg.Status.StorageMigration {
		out[m.Name] = m
	}
	return cfg.Status, out, nil
}

// An OSM 1.2 cluster running the bookstore demo (OSM's SMI CRDs, the objects stored in OSM's
// versions) takes smi2istio's CRDs applied over OSM's as dist/install.yaml does: the CRDs become
// smi2istio's, every object reads back in every version unchanged in meaning, the storage
// migration rewrites the TrafficSplits stored as v1alpha2 and drops v1alpha2 from storedVersions —
// not while an object cannot be rewritten — after which a CRD without v1alpha2 is accepted and the
// objects still read; the operator translates every object and gives it status, and the config's
// status reports the migration next to what the config reconciler writes.
func TestTakeoverFromOSMAndStorageMigration(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	k := startTakeoverCluster(t)
	k.installOSM(t)
	objs := k.osmBookstore(t)
	if len(objs) != 8 {
		t.Fatalf("%d SMI objects in the OSM bookstore demo, want 8", len(objs))
	}
	// In OSM's versions, before the takeover.
	for _, o := range objs {
		got := o.DeepCopy()
		must(t, k.c.Get(ctx, client.ObjectKeyFromObject(o), got))
		if !reflect.DeepEqual(meaning(t, got.Object), meaning(t, o.Object)) {
			t.Fatalf("%s under OSM's CRDs: %v", key(o), got.Object)
		}
	}
	if got := storedVersions(t, k.c, splitCRD); !slices.Equal(got, []string{"v1alpha2"}) {
		t.Fatalf("OSM's TrafficSplit CRD stores %v, want [v1alpha2]", got)
	}

	// Install smi2istio's CRDs over OSM's, as `kubectl apply --server-side -f dist/install.yaml`.
	crdObjs := ourCRDs(t)
	must(t, install.Apply(ctx, k.c, crdObjs))
	ours := map[string]*apiextv1.CustomResourceDefinition{}
	var names []string
	for _, u := range crdObjs {
		names = append(names, u.GetName())
		if strings.HasSuffix(u.GetName(), ".smi-spec.io") {
			ours[u.GetName()] = typedCRD(t, u)
		}
	}
	waitEstablished(t, k.c, names...)
	checkCRDsAreOurs(t, k.c, ours)
	for name, want := range map[string][]string{splitCRD: {"v1alpha2", "v1alpha4"}, targetCRD: {"v1alpha3"}, hrgCRD: {"v1alpha4"}, tcpCRD: {"v1alpha4"}, udpCRD: {"v1alpha4"}} {
		if got := storedVersions(t, k.c, name); !slices.Equal(got, want) {
			t.Errorf("after the takeover %s has storedVersions %v, want %v", name, got, want)
		}
	}
	// The apiserver refuses a CRD without a version objects may still be stored in.
	if err := dropVersion(k.c, splitCRD, "v1alpha2", true); err == nil || !strings.Contains(err.Error(), "storedVersions") {
		t.Fatalf("dropping v1alpha2 before the migration: %v, want refused for status.storedVersions", err)
	}
	checkReadBack(t, k, ours, objs, false)
	before := resourceVersions(t, k, ours, objs)
	t.Logf("takeover checked after %s", time.Since(start).Round(time.Second))

	// The operator: the config reconciler and the storage migration, which cannot rewrite the
	// TrafficSplit at first.
	log := testr.New(t)
	mgr, err := ctrl.NewManager(k.cp.Config, ctrl.Options{
		Scheme:  k.scheme,
		Client:  client.Options{Cache: &client.CacheOptions{Unstructured: true}},
		Metrics: metricsserver.Options{BindAddress: "0"},
		Cache:   cache.Options(),
		Logger:  log,
		// The suite's manager in this process has controllers of the same names.
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
	})
	must(t, err)
	shared := controllers.NewShared("")
	must(t, (&controllers.ConfigReconciler{Client: mgr.GetClient(), Shared: shared, Recount: 2 * time.Second}).SetupWithManager(mgr))
	failing := &failingUpdates{Client: mgr.GetClient()}
	failing.fail.Store(true)
	migration := &controllers.StorageMigrationReconciler{Client: failing, RetryAfter: time.Second, Settle: time.Second}
	must(t, migration.SetupWithManager(mgr))
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(mctx); err != nil {
			t.Errorf("manager: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done }) // before the control plane stops

	eventually(t, "the migration of TrafficSplits failed and reported", func() error {
		_, m, err := migrationStatus(t, k.c)
		if err != nil {
			return err
		}
		ts := m[splitCRD]
		if ts.State != v1alpha1.MigrationFailed || !strings.Contains(ts.Message, "bookstore/bookstore-split") ||
			!strings.Contains(ts.Message, "injected failure") || !strings.Contains(ts.Message, "storedVersions left as they are") ||
			!slices.Equal(ts.StoredVersions, []string{"v1alpha2", "v1alpha4"}) {
			return fmt.Errorf("%s: %+v", splitCRD, ts)
		}
		for _, name := range []string{targetCRD, hrgCRD, tcpCRD, udpCRD} {
			if m[name].State != v1alpha1.MigrationDone {
				return fmt.Errorf("%s: %+v", name, m[name])
			}
		}
		return nil
	})
	eventually(t, "the failed migration retried", func() error {
		if n := failing.attempts.Load(); n < 2 {
			return fmt.Errorf("%d attempt(s)", n)
		}
		return nil
	})
	if got := storedVersions(t, k.c, splitCRD); !slices.Equal(got, []string{"v1alpha2", "v1alpha4"}) {
		t.Fatalf("an object could not be rewritten, yet storedVersions is %v", got)
	}

	failing.fail.Store(false)
	eventually(t, "the migration of TrafficSplits done", func() error {
		_, m, err := migrationStatus(t, k.c)
		if err != nil {
			return err
		}
		ts := m[splitCRD]
		if ts.State != v1alpha1.MigrationDone || !slices.Equal(ts.StoredVersions, []string{"v1alpha4"}) ||
			!strings.Contains(ts.Message, "1 object(s) rewritten, v1alpha2 removed from status.storedVersions") {
			return fmt.Errorf("%+v", ts)
		}
		return nil
	})
	if got := storedVersions(t, k.c, splitCRD); !slices.Equal(got, []string{"v1alpha4"}) {
		t.Errorf("after the migration storedVersions is %v, want [v1alpha4]", got)
	}
	// Only the migration writes SMI objects so far: it rewrote the TrafficSplit, and nothing of the
	// kinds already stored in their storage version.
	after := resourceVersions(t, k, ours, objs)
	for _, o := range objs {
		changed := after[key(o)] != before[key(o)]
		if want := o.GetKind() == "TrafficSplit"; changed != want {
			t.Errorf("%s: rewritten %v (resourceVersion %s -> %s), want %v", key(o), changed, before[key(o)], after[key(o)], want)
		}
	}

	// A later CRD without v1alpha2 is accepted, and the objects (stored as v1alpha4, or they would
	// not decode) read in the versions it serves.
	must(t, dropVersion(k.c, splitCRD, "v1alpha2", false))
	split := ours[splitCRD]
	eventually(t, "v1alpha2 not served", func() error {
		_, err := k.dyn.Resource(gvrOf(split, "v1alpha2")).Namespace("bookstore").Get(ctx, "bookstore-split", metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("read as v1alpha2: %w", err)
		}
		return nil
	})
	dropped := split.DeepCopy()
	dropped.Spec.Versions = slices.DeleteFunc(dropped.Spec.Versions, func(v apiextv1.CustomResourceDefinitionVersion) bool { return v.Name == "v1alpha2" })
	splits := slices.DeleteFunc(slices.Clone(objs), func(o *unstructured.Unstructured) bool { return o.GetKind() != "TrafficSplit" })
	checkReadBack(t, k, map[string]*apiextv1.CustomResourceDefinition{splitCRD: dropped}, splits, false)
	// smi2istio's CRDs again (the user's objects are in every version at the end).
	must(t, install.Apply(ctx, k.c, crdObjs))
	eventually(t, "v1alpha2 served again", func() error {
		_, err := k.dyn.Resource(gvrOf(split, "v1alpha2")).Namespace("bookstore").Get(ctx, "bookstore-split", metav1.GetOptions{})
		return err
	})
	if got := storedVersions(t, k.c, splitCRD); !slices.Equal(got, []string{"v1alpha4"}) {
		t.Errorf("smi2istio's CRD again: storedVersions %v", got)
	}
	t.Logf("storage migration checked after %s", time.Since(start).Round(time.Second))

	// The reconcilers that translate (set up once the manager runs, as main.go does when Istio
	// comes later).
	rec := recorder.New(kubernetes.NewForConfigOrDie(k.cp.Config).EventsV1(), k.scheme, "smi2istio", 4096, log)
	must(t, mgr.Add(rec))
	must(t, (&controllers.TrafficSplitReconciler{Client: mgr.GetClient(), Recorder: rec, State: shared.Current, Resync: shared.Resync}).SetupWithManager(mctx, mgr))
	workloads := cache.NewWorkloadIndex()
	must(t, (&controllers.AccessReconciler{Client: mgr.GetClient(), Recorder: rec, State: shared.Current, Resync: shared.Resync, Workloads: workloads}).SetupWithManager(mctx, mgr))
	for _, gvk := range []schema.GroupVersionKind{controllers.HTTPRouteGroupGVK, controllers.TCPRouteGVK, controllers.UDPRouteGVK} {
		must(t, (&controllers.RouteReconciler{Client: mgr.GetClient(), Recorder: rec, GVK: gvk, State: shared.Current, Resync: shared.Resync}).SetupWithManager(mgr))
	}
	must(t, (&controllers.BaselineReconciler{Client: mgr.GetClient(), State: shared.Current, Resync: shared.Resync, Workloads: workloads}).SetupWithManager(mgr))

	// Every object gets status: Ready, and translated (outputs it owns).
	outputs := func() (map[ownerUID]int, error) { return ownedOutputs(ctx, k) }
	for _, o := range objs {
		eventually(t, key(o)+" Ready", func() error {
			got := o.DeepCopy()
			if err := k.c.Get(ctx, client.ObjectKeyFromObject(o), got); err != nil {
				return err
			}
			conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
			for _, c := range conds {
				m, _ := c.(map[string]any)
				if m["type"] == controllers.ConditionReady {
					if m["status"] != "True" || m["observedGeneration"] != got.GetGeneration() {
						return fmt.Errorf("Ready %v", m)
					}
					if o.GetKind() == "TrafficSplit" || o.GetKind() == "TrafficTarget" {
						owned, err := outputs()
						if err != nil {
							return err
						}
						if owned[ownerUID(got.GetUID())] == 0 {
							return fmt.Errorf("no output owned by it")
						}
					}
					return nil
				}
			}
			return fmt.Errorf("no Ready condition: %v", got.Object["status"])
		})
	}
	checkReadBack(t, k, ours, objs, true)
	for name, crd := range ours {
		list, err := k.dyn.Resource(gvrOf(crd, served(crd)[0])).List(ctx, metav1.ListOptions{})
		must(t, err)
		want := 0
		for _, o := range objs {
			if o.GroupVersionKind().Group == crd.Spec.Group && o.GetKind() == crd.Spec.Names.Kind {
				want++
			}
		}
		if len(list.Items) != want {
			t.Errorf("%s: %d objects, want the demo's %d", name, len(list.Items), want)
		}
	}
	// The config reconciler's status writes (object counts, after the translation) keep the
	// migration's report.
	eventually(t, "the config's status: object counts and the storage migration", func() error {
		st, m, err := migrationStatus(t, k.c)
		if err != nil {
			return err
		}
		ready := map[string]int32{}
		for _, c := range st.Objects {
			ready[c.Kind] = c.Ready
		}
		if ready["TrafficSplit"] != 1 || ready["TrafficTarget"] != 4 {
			return fmt.Errorf("objects %+v", st.Objects)
		}
		if ts := m[splitCRD]; ts.State != v1alpha1.MigrationDone || !strings.Contains(ts.Message, "1 object(s) rewritten") {
			return fmt.Errorf("storage migration %+v", st.StorageMigration)
		}
		return nil
	})
	t.Logf("translated and reported after %s", time.Since(start).Round(time.Second))
}

// ownerUID is an owner's UID.
type ownerUID string

// ownedOutputs counts the operator's outputs by the UID of each owner.
func ownedOutputs(ctx context.Context, k *takeoverCluster) (map[ownerUID]int, error) {
	out := map[ownerUID]int{}
	for _, gvk := range []schema.GroupVersionKind{controllers.VirtualServiceGVK, controllers.DestinationRuleGVK,
		controllers.AuthorizationPolicyGVK, controllers.EnvoyFilterGVK, controllers.PeerAuthenticationGVK} {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := k.c.List(ctx, list, client.MatchingLabels{translate.ManagedByLabel: translate.ManagedByValue}); err != nil {
			return nil, err
		}
		for _, o := range list.Items {
			for _, ref := range o.GetOwnerReferences() {
				out[ownerUID(ref.UID)]++
			}
		}
	}
	return out, nil
}
