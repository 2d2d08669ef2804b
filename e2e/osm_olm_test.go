//go:build e2e

package e2e

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
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/internal/build/install"
	"github.com/smi2istio/smi2istio/internal/smi/conversion"
	"github.com/smi2istio/smi2istio/internal/smi/crds"
	"github.com/smi2istio/smi2istio/internal/testing/olm"
	"github.com/smi2istio/smi2istio/internal/testing/testenv"
)

// The SMI CRDs OSM 1.2 installs, and the version each stores its objects in under OSM.
var osmStored = map[string]string{
	"trafficsplits.split.smi-spec.io":   "v1alpha2",
	"traffictargets.access.smi-spec.io": "v1alpha3",
	"httproutegroups.specs.smi-spec.io": "v1alpha4",
	"tcproutes.specs.smi-spec.io":       "v1alpha4",
}

// osmNamespaces are the OSM 1.2 bookstore demo's namespaces, added to OSM's mesh.
var osmNamespaces = []string{"bookbuyer", "bookstore", "bookthief", "bookwarehouse"}

// An OSM 1.2 cluster — OSM's real SMI, config and policy CRDs as osm-bootstrap creates them, the
// MeshConfig it makes of the Helm chart's preset-mesh-config, the bookstore demo's namespaces added
// to the mesh (`osm namespace add`) and its SMI objects stored in OSM's versions (split v1alpha2,
// access v1alpha3, specs v1alpha4) — then bundle/ installed over it as OLM installs it: its CRDs
// replace OSM's through the InstallPlan's CRD step (which first refuses a CRD dropping a stored
// version, and one whose schema the existing objects fail without a conversion webhook), and the
// operator runs under its ServiceAccount with the CSV's rights. No user object is written by
// anyone but the operator, whose only write of an object's body is the storage migration's
// rewrite of the TrafficSplit (told apart by watching every object: see writeRecorder; the
// apiserver stores the rewrite only if no status write re-encoded the split in v1alpha4 before,
// as the operator's first status write usually does — that it is stored in v1alpha4 is proved by
// reading it from a CRD without v1alpha2, which the apiserver accepts once storedVersions allow); every
// object reads back in every served version, is Ready and translated; the storage migration
// leaves each CRD's storedVersions at its storage version; the configuration the operator creates
// takes OSM's monitored namespaces and the MeshConfig's access mode; nothing is forbidden.
func TestOLMBundleOverOSM(t *testing.T) {
	start := time.Now()
	e := newBareInstallEnv(t)
	ctx := context.Background()
	const ns = "operators"
	dyn, err := dynamic.NewForConfig(e.cp.Config)
	must(t, err)

	e.installOSM()
	e.demo = e.osmBookstore()
	if len(e.demo) != 8 {
		t.Fatalf("%d SMI objects in the OSM bookstore demo, want 8", len(e.demo))
	}
	for name, v := range osmStored {
		if got := e.storedVersions(name); !slices.Equal(got, []string{v}) {
			t.Fatalf("under OSM, CRD %s stores %v, want [%s]", name, got, v)
		}
	}
	writes := e.recordWrites(dyn)
	t.Logf("OSM 1.2 cluster ready after %s", time.Since(start).Round(time.Second))

	n, err := olm.ReadBundle(filepath.Join(testenv.RepoRoot(), "bundle"))
	must(t, err)
	const split = "trafficsplits.split.smi-spec.io"
	if n.CRD(split) == nil {
		t.Fatalf("the bundle has no CRD %s", split)
	}

	// OLM's CRD step refuses what would lose or invalidate OSM's objects, before writing anything.
	refused := func(what string, b *olm.Bundle, want error) {
		t.Helper()
		before := &apiextv1.CustomResourceDefinition{}
		must(t, e.c.Get(ctx, client.ObjectKey{Name: split}, before))
		_, err := olm.InstallBundle(ctx, e.c, b, ns, e.pod("refused"))
		if !errors.Is(err, want) {
			t.Fatalf("a bundle %s: install error %v, want %v", what, err, want)
		}
		t.Logf("as expected, a bundle %s is refused: %v", what, err)
		after := &apiextv1.CustomResourceDefinition{}
		must(t, e.c.Get(ctx, client.ObjectKey{Name: split}, after))
		if after.ResourceVersion != before.ResourceVersion {
			t.Fatalf("a bundle %s: refused, yet CRD %s was written", what, split)
		}
	}
	noV1alpha2 := n.DeepCopy()
	noV1alpha2.CRDs = []*apiextv1.CustomResourceDefinition{noV1alpha2.CRD(split)}
	noV1alpha2.CRDs[0].Spec.Versions = slices.DeleteFunc(noV1alpha2.CRDs[0].Spec.Versions, func(v apiextv1.CustomResourceDefinitionVersion) bool { return v.Name == "v1alpha2" })
	refused("whose TrafficSplit CRD drops v1alpha2 (OSM's stored version)", noV1alpha2, olm.ErrDataLoss)
	strict := n.DeepCopy()
	strict.CRDs = []*apiextv1.CustomResourceDefinition{strict.CRD(split)}
	strictCRD := strict.CRDs[0]
	strictCRD.Spec.Conversion = &apiextv1.CustomResourceConversion{Strategy: apiextv1.NoneConverter}
	for i := range strictCRD.Spec.Versions {
		if v := &strictCRD.Spec.Versions[i]; v.Name == "v1alpha2" {
			spec := v.Schema.OpenAPIV3Schema.Properties["spec"]
			spec.Properties["owner"] = apiextv1.JSONSchemaProps{Type: "string"}
			spec.Required = append(spec.Required, "owner")
			v.Schema.OpenAPIV3Schema.Properties["spec"] = spec
		}
	}
	refused("whose TrafficSplit v1alpha2 schema OSM's split fails, without a conversion webhook", strict, olm.ErrTooRestrictive)

	// Bundle N over OSM's CRDs, as OLM installs it.
	op := e.installBundle(n, ns, "bundle-over-osm")
	for _, w := range op.InstallWarnings {
		t.Errorf("OLM would warn: %s", w)
	}
	installed := time.Now()
	e.checkCRDsTakenOver(n, ns)
	e.eventually("bundle "+n.CSV.Name+" working over OSM's objects", func() error { return e.working(op) })
	t.Logf("translated and Ready %s after the install", time.Since(installed).Round(time.Second))

	// The storage migration: every SMI CRD's storedVersions is its storage version, reported.
	storage := map[string]string{}
	for _, crd := range n.CRDs {
		if strings.HasSuffix(crd.Name, ".smi-spec.io") {
			for _, v := range crd.Spec.Versions {
				if v.Storage {
					storage[crd.Name] = v.Name
				}
			}
		}
	}
	e.eventually("the storage migration done", func() error {
		if err := noForbidden(op); err != nil {
			return err
		}
		cfg := e.config()
		report := map[string]map[string]any{}
		entries, _, _ := unstructured.NestedSlice(cfg.Object, "status", "storageMigration")
		for _, m := range entries {
			m, _ := m.(map[string]any)
			report[fmt.Sprint(m["name"])] = m
		}
		for name, v := range storage {
			if got := e.storedVersions(name); !slices.Equal(got, []string{v}) {
				return fmt.Errorf("CRD %s: storedVersions %v, want [%s] (report: %v)", name, got, v, report[name])
			}
			m := report[name]
			if m["state"] != "Done" || fmt.Sprint(m["storedVersions"]) != fmt.Sprint([]any{v}) {
				return fmt.Errorf("CRD %s: status.storageMigration %v", name, m)
			}
		}
		if msg := fmt.Sprint(report[split]["message"]); !strings.Contains(msg, "1 object(s) rewritten, v1alpha2 removed") {
			return fmt.Errorf("CRD %s: the migration says %q, want the split rewritten", split, msg)
		}
		return nil
	})
	t.Logf("storage migration done %s after the install", time.Since(installed).Round(time.Second))

	// OSM's settings carried over: its monitored namespaces are the mesh, its MeshConfig's mode.
	cfg := e.config()
	members := nestedStrings(cfg.Object, "status", "members")
	sort.Strings(members)
	if provider, _, _ := unstructured.NestedString(cfg.Object, "status", "mesh", "provider"); provider != "OSM" || !slices.Equal(members, osmNamespaces) {
		t.Errorf("membership: provider %q, members %v; want OSM's monitored namespaces %v", provider, members, osmNamespaces)
	}
	mode, _, _ := unstructured.NestedString(cfg.Object, "spec", "accessMode")
	source, _, _ := unstructured.NestedString(cfg.Object, "status", "accessModeSource")
	if mode != "Enforcing" || !strings.Contains(source, "MeshConfig osm-system/osm-mesh-config (spec.traffic.enablePermissiveTrafficPolicyMode: false)") {
		t.Errorf("access mode %q from %q, want Enforcing from OSM's MeshConfig (permissive: false)", mode, source)
	}

	// The objects are really stored in v1alpha4 now: a CRD without v1alpha2 (what a later release
	// may ship) is accepted, and the split still reads (an object stored as v1alpha2 would not
	// decode). Then the bundle's CRD again.
	e.withoutVersion(split, "v1alpha2", func() {
		for _, v := range []string{"v1alpha4", "v1alpha3"} {
			got := &unstructured.Unstructured{}
			got.SetAPIVersion("split.smi-spec.io/" + v)
			got.SetKind("TrafficSplit")
			if err := e.c.Get(ctx, client.ObjectKey{Namespace: "bookstore", Name: "bookstore-split"}, got); err != nil {
				t.Errorf("TrafficSplit read as %s with v1alpha2 gone from the CRD: %v", v, err)
			}
		}
	})

	// Every object reads back in every served version, as applied, with status.
	e.readBackEverywhere(n)

	for _, d := range writes.stop() {
		t.Error(d)
	}
	if err := noForbidden(op); err != nil {
		t.Error(err)
	}
	t.Logf("wall time %s", time.Since(start).Round(time.Second))
}

// installOSM creates OSM 1.2's CRDs (the SMI ones, its MeshConfig and policy CRDs) as
// osm-bootstrap does, then its MeshConfig from the Helm chart's preset-mesh-config.
func (e *installEnv) installOSM() {
	e.t.Helper()
	ctx := context.Background()
	root := testenv.RepoRoot()
	var names []string
	for _, f := range []string{
		// Byte for byte OSM's cmd/osm-bootstrap/crds (see the SOURCE files there).
		"controllers/testdata/osm-v1.2-smi-crds/smi_traffic_split.yaml", "controllers/testdata/osm-v1.2-smi-crds/smi_traffic_access.yaml",
		"controllers/testdata/osm-v1.2-smi-crds/smi_http_route_group.yaml", "controllers/testdata/osm-v1.2-smi-crds/smi_tcp_route.yaml",
		"internal/membership/testdata/osm-v1.2/config_meshconfig.yaml", "internal/membership/testdata/osm-v1.2/policy_egress.yaml",
		"internal/membership/testdata/osm-v1.2/policy_ingress_backend.yaml", "internal/membership/testdata/osm-v1.2/policy_retry.yaml",
		"internal/membership/testdata/osm-v1.2/policy_upstream_traffic_setting.yaml",
	} {
		list, err := crds.LoadFile(filepath.Join(root, filepath.FromSlash(f)))
		must(e.t, err)
		for _, crd := range list {
			must(e.t, e.c.Create(ctx, crd, client.FieldOwner("osm-bootstrap")))
			names = append(names, crd.Name)
		}
	}
	e.eventually("OSM's CRDs established", func() error {
		for _, name := range names {
			crd := &apiextv1.CustomResourceDefinition{}
			if err := e.c.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
				return err
			}
			if !slices.ContainsFunc(crd.Status.Conditions, func(c apiextv1.CustomResourceDefinitionCondition) bool {
				return c.Type == apiextv1.Established && c.Status == apiextv1.ConditionTrue
			}) {
				return fmt.Errorf("CRD %s not established", name)
			}
		}
		return nil
	})

	// helm install: the preset-mesh-config ConfigMap; osm-bootstrap: the MeshConfig made of it.
	must(e.t, e.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "osm-system"}}))
	cm := renderOSMPresetMeshConfig(e.t, nil)
	must(e.t, e.c.Create(ctx, cm, client.FieldOwner("helm")))
	spec := map[string]any{}
	must(e.t, json.Unmarshal([]byte(cm.Data["preset-mesh-config.json"]), &spec))
	mc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "config.openservicemesh.io/v1alpha2", "kind": "MeshConfig",
		"metadata": map[string]any{"name": "osm-mesh-config", "namespace": cm.Namespace},
		"spec":     spec,
	}}
	// Strict: the rendered spec is one OSM's MeshConfig CRD takes as it is (no field pruned).
	must(e.t, e.c.Create(ctx, mc, client.FieldOwner("osm-bootstrap"), client.FieldValidation("Strict")))
}

// osmBookstore adds the demo's namespaces to OSM's mesh as `osm namespace add` does (the
// monitored-by label, the sidecar-injection annotation), and applies the demo's apps and SMI
// objects unchanged (kubectl apply --server-side). It returns the SMI objects as applied.
func (e *installEnv) osmBookstore() []*unstructured.Unstructured {
	e.t.Helper()
	ctx := context.Background()
	for _, n := range osmNamespaces {
		must(e.t, e.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n,
			Labels:      map[string]string{"openservicemesh.io/monitored-by": "osm"},
			Annotations: map[string]string{"openservicemesh.io/sidecar-injection": "enabled"}}}))
	}
	var smi []*unstructured.Unstructured
	for _, f := range []string{"apps/bookstore.yaml", "apps/bookstore-v2.yaml", "apps/bookbuyer.yaml", "apps/bookthief.yaml", "apps/bookwarehouse.yaml",
		"apps/mysql.yaml", "access/traffic-access-v1.yaml", "split/traffic-split-50-50.yaml"} {
		docs, err := testenv.ReadManifests(fixture("osm-v1.2-bookstore/" + f))
		must(e.t, err)
		must(e.t, install.Apply(ctx, e.c, docs))
		for _, d := range docs {
			if strings.HasSuffix(d.GroupVersionKind().Group, ".smi-spec.io") {
				smi = append(smi, d)
			}
		}
	}
	return smi
}

func (e *installEnv) storedVersions(name string) []string {
	e.t.Helper()
	crd := &apiextv1.CustomResourceDefinition{}
	must(e.t, e.c.Get(context.Background(), client.ObjectKey{Name: name}, crd))
	return crd.Status.StoredVersions
}

func (e *installEnv) config() *unstructured.Unstructured {
	e.t.Helper()
	cfg := &unstructured.Unstructured{}
	cfg.SetAPIVersion("smi2istio.io/v1alpha1")
	cfg.SetKind("SMI2IstioConfig")
	must(e.t, e.c.Get(context.Background(), client.ObjectKey{Name: "default"}, cfg))
	return cfg
}

func nestedStrings(obj map[string]any, fields ...string) []string {
	l, _, _ := unstructured.NestedStringSlice(obj, fields...)
	return l
}

// checkCRDsTakenOver: each SMI CRD is the bundle's as OLM's update leaves it — the bundle's spec
// (the conversion webhook OLM wired aside), its labels with olm.managed (none of OSM's left), the
// installed-alongside annotation of the CSV.
func (e *installEnv) checkCRDsTakenOver(b *olm.Bundle, namespace string) {
	e.t.Helper()
	for name := range osmStored {
		want := b.CRD(name)
		if want == nil {
			e.t.Fatalf("the bundle has no CRD %s: it cannot take OSM's over", name)
		}
		got := &apiextv1.CustomResourceDefinition{}
		must(e.t, e.c.Get(context.Background(), client.ObjectKey{Name: name}, got))
		gs, ws := got.Spec.DeepCopy(), want.Spec.DeepCopy()
		gs.Conversion, ws.Conversion = nil, nil
		if !reflect.DeepEqual(gs.Versions, ws.Versions) || !reflect.DeepEqual(gs.Names, ws.Names) || gs.Scope != ws.Scope {
			e.t.Errorf("CRD %s: its spec is not the bundle's", name)
		}
		for k, v := range want.Labels {
			if got.Labels[k] != v {
				e.t.Errorf("CRD %s: label %s=%q, want the bundle's %q", name, k, got.Labels[k], v)
			}
		}
		if got.Labels[olm.ManagedLabel] != "true" || len(got.Labels) != len(want.Labels)+1 {
			e.t.Errorf("CRD %s: labels %v, want the bundle's and %s=true only", name, got.Labels, olm.ManagedLabel)
		}
		if !slices.ContainsFunc(mapValues(got.Annotations), func(v string) bool { return v == namespace+"/"+b.CSV.Name }) {
			e.t.Errorf("CRD %s: annotations %v name no CSV %s/%s it was installed alongside", name, got.Annotations, namespace, b.CSV.Name)
		}
	}
}

// withoutVersion updates the CRD without the version (refused by the apiserver while
// status.storedVersions lists it), runs f, and puts the version back as it was.
func (e *installEnv) withoutVersion(name, version string, f func()) {
	e.t.Helper()
	ctx := context.Background()
	var removed apiextv1.CustomResourceDefinitionVersion
	var group, listKind string
	must(e.t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
		crd := &apiextv1.CustomResourceDefinition{}
		if err := e.c.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
			return err
		}
		i := slices.IndexFunc(crd.Spec.Versions, func(v apiextv1.CustomResourceDefinitionVersion) bool { return v.Name == version })
		if i < 0 {
			return fmt.Errorf("CRD %s has no version %s", name, version)
		}
		removed, group, listKind = crd.Spec.Versions[i], crd.Spec.Group, crd.Spec.Names.ListKind
		crd.Spec.Versions = slices.Delete(crd.Spec.Versions, i, i+1)
		return e.c.Update(ctx, crd)
	}))
	e.eventually("CRD "+name+" without "+version+" in effect", func() error {
		u := &unstructured.UnstructuredList{}
		u.SetAPIVersion(group + "/" + version)
		u.SetKind(listKind)
		err := e.c.List(ctx, u)
		if err == nil {
			return fmt.Errorf("%s still served", version)
		}
		return nil
	})
	f()
	must(e.t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
		crd := &apiextv1.CustomResourceDefinition{}
		if err := e.c.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
			return err
		}
		crd.Spec.Versions = append(crd.Spec.Versions, removed)
		sort.Slice(crd.Spec.Versions, func(i, j int) bool { return crd.Spec.Versions[i].Name < crd.Spec.Versions[j].Name })
		return e.c.Update(ctx, crd)
	}))
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// readBackEverywhere reads every SMI object of the demo in every version its CRD serves: its
// content is what the conversion makes of the object as applied, it converts back to the object as
// applied, and its status has Ready=True.
func (e *installEnv) readBackEverywhere(b *olm.Bundle) {
	e.t.Helper()
	reads := 0
	for _, o := range e.demo {
		gvk := o.GroupVersionKind()
		var crd *apiextv1.CustomResourceDefinition
		for _, c := range b.CRDs {
			if c.Spec.Group == gvk.Group && c.Spec.Names.Kind == gvk.Kind {
				crd = c
			}
		}
		if crd == nil {
			e.t.Fatalf("the bundle has no CRD for %s", gvk)
		}
		for _, v := range crd.Spec.Versions {
			if !v.Served {
				continue
			}
			what := fmt.Sprintf("%s %s/%s read as %s", gvk.Kind, o.GetNamespace(), o.GetName(), v.Name)
			got := &unstructured.Unstructured{}
			got.SetGroupVersionKind(schema.GroupVersionKind{Group: gvk.Group, Version: v.Name, Kind: gvk.Kind})
			if err := e.c.Get(context.Background(), client.ObjectKeyFromObject(o), got); err != nil {
				e.t.Errorf("%s: %v", what, err)
				continue
			}
			reads++
			if w, g := convertTo(e.t, o.Object, got.GetAPIVersion()), content(e.t, got.Object); !reflect.DeepEqual(w, g) {
				e.t.Errorf("%s:\n got: %v\nwant: %v", what, g, w)
			}
			if back, w := convertTo(e.t, got.Object, o.GetAPIVersion()), content(e.t, o.Object); !reflect.DeepEqual(back, w) {
				e.t.Errorf("%s does not convert back to the object as applied:\n got: %v\nwant: %v", what, back, w)
			}
			if err := readyNow(got); err != nil {
				e.t.Errorf("%s: %v", what, err)
			}
		}
	}
	if reads < 2*len(e.demo) {
		e.t.Errorf("only %d reads of %d objects", reads, len(e.demo))
	}
}

// content is an SMI object's content (all but apiVersion, kind, metadata and status) as plain JSON.
func content(t *testing.T, obj map[string]any) any {
	t.Helper()
	out := map[string]any{}
	for k, v := range obj {
		switch k {
		case "apiVersion", "kind", "metadata", "status":
		default:
			out[k] = v
		}
	}
	raw, err := json.Marshal(out)
	must(t, err)
	var v any
	must(t, json.Unmarshal(raw, &v))
	return v
}

// convertTo is the content of obj converted to apiVersion by the webhook's code, in process.
func convertTo(t *testing.T, obj map[string]any, apiVersion string) any {
	t.Helper()
	if obj["apiVersion"] == apiVersion {
		return content(t, obj)
	}
	raw, err := json.Marshal(obj)
	must(t, err)
	out, err := conversion.Convert(raw, apiVersion)
	must(t, err)
	m := map[string]any{}
	must(t, json.Unmarshal(out, &m))
	return content(t, m)
}

// writeRecorder watches every SMI object of the demo, in the version it was applied in, from just
// after it was applied, and classifies each write by what it changed: "content" (anything but
// metadata and status: the user's object rewritten), "status", "metadata" (labels, annotations,
// finalizers, owners), or "rewrite" — nothing visible changed, only the resourceVersion: the
// object stored again as it was, which is what the storage migration does (an update that changes
// nothing is not written by the apiserver at all, unless the encoding it stores changes). Should a
// watch be cut off for good (a resourceVersion too old once the CRD changed), the objects are
// listed again and the difference classified as one write, marked "(across a gap)".
type writeRecorder struct {
	e      *installEnv
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	since  metav1.Time // when the recording started, the demo applied
	last   map[string]*unstructured.Unstructured
	writes map[string][]string
	errs   []string
}

func objKey(o *unstructured.Unstructured) string {
	return o.GetKind() + " " + o.GetNamespace() + "/" + o.GetName()
}

func (e *installEnv) recordWrites(dyn dynamic.Interface) *writeRecorder {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &writeRecorder{e: e, cancel: cancel, since: metav1.Now(), last: map[string]*unstructured.Unstructured{}, writes: map[string][]string{}}
	e.t.Cleanup(r.halt)
	gvrs := map[schema.GroupVersionResource]bool{}
	for _, o := range e.demo {
		gvk := o.GroupVersionKind()
		gvrs[gvk.GroupVersion().WithResource(strings.ToLower(gvk.Kind)+"s")] = true
	}
	for gvr := range gvrs {
		rv := r.list(ctx, dyn, gvr, false, true)
		r.wg.Add(1)
		go r.watch(ctx, dyn, gvr, rv)
	}
	return r
}

// list reads every object of gvr (classifying the difference to what was seen, after a gap) and
// returns the list's resourceVersion.
func (r *writeRecorder) list(ctx context.Context, dyn dynamic.Interface, gvr schema.GroupVersionResource, gap, initial bool) string {
	for {
		list, err := dyn.Resource(gvr).List(ctx, metav1.ListOptions{})
		if err != nil {
			if ctx.Err() != nil {
				return ""
			}
			time.Sleep(200 * time.Millisecond) // the CRD changing: served again shortly
			continue
		}
		for i := range list.Items {
			r.observe(&list.Items[i], gap, initial)
		}
		return list.GetResourceVersion()
	}
}

func (r *writeRecorder) watch(ctx context.Context, dyn dynamic.Interface, gvr schema.GroupVersionResource, rv string) {
	defer r.wg.Done()
	for ctx.Err() == nil {
		w, err := dyn.Resource(gvr).Watch(ctx, metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true})
		switch {
		case ctx.Err() != nil:
			return
		case apierrors.IsResourceExpired(err) || apierrors.IsGone(err):
			rv = r.list(ctx, dyn, gvr, true, false)
			continue
		case err != nil: // the CRD changing: served again shortly
			time.Sleep(100 * time.Millisecond)
			continue
		}
		gone := false
		for ev := range w.ResultChan() {
			switch ev.Type {
			case watch.Modified, watch.Added:
				if u, ok := ev.Object.(*unstructured.Unstructured); ok {
					r.observe(u, false, false)
					rv = u.GetResourceVersion()
				}
			case watch.Deleted:
				if u, ok := ev.Object.(*unstructured.Unstructured); ok {
					r.fail(objKey(u) + " was deleted")
				}
			case watch.Bookmark:
				if u, ok := ev.Object.(*unstructured.Unstructured); ok {
					rv = u.GetResourceVersion()
				}
			case watch.Error:
				err := apierrors.FromObject(ev.Object)
				gone = gone || apierrors.IsResourceExpired(err) || apierrors.IsGone(err)
			}
		}
		w.Stop()
		if gone && ctx.Err() == nil {
			rv = r.list(ctx, dyn, gvr, true, false)
		}
	}
}

func (r *writeRecorder) observe(u *unstructured.Unstructured, gap, initial bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := objKey(u)
	prev, ok := r.last[k]
	r.last[k] = u.DeepCopy()
	if !ok {
		if !initial {
			r.errs = append(r.errs, k+" appeared after the demo was applied")
		}
		return
	}
	if prev.GetResourceVersion() == u.GetResourceVersion() {
		return
	}
	var kinds []string
	if !reflect.DeepEqual(content(r.e.t, prev.Object), content(r.e.t, u.Object)) {
		kinds = append(kinds, "content")
	}
	if !reflect.DeepEqual(prev.Object["status"], u.Object["status"]) {
		kinds = append(kinds, "status")
	}
	pm, um := prev.DeepCopy(), u.DeepCopy()
	for _, m := range []*unstructured.Unstructured{pm, um} {
		m.SetResourceVersion("")
		m.SetManagedFields(nil)
		m.SetGeneration(0)
	}
	if !reflect.DeepEqual(pm.Object["metadata"], um.Object["metadata"]) {
		kinds = append(kinds, "metadata")
	}
	if prev.GetGeneration() != u.GetGeneration() && !slices.Contains(kinds, "content") {
		kinds = append(kinds, "content") // a change of content converted away would still bump it
	}
	if len(kinds) == 0 {
		kinds = append(kinds, "rewrite")
	}
	w := strings.Join(kinds, "+")
	if gap {
		w += " (across a gap)"
	}
	r.writes[k] = append(r.writes[k], w)
}

func (r *writeRecorder) fail(msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, msg)
}

func (r *writeRecorder) halt() {
	r.cancel()
	r.wg.Wait()
}

// stop ends the watches and returns what is wrong with the writes seen: any write of content or
// metadata, a rewrite of anything but a TrafficSplit stored in OSM's v1alpha2, no rewrite of the
// TrafficSplit, an object that got no status. The writes are logged.
func (r *writeRecorder) stop() []string {
	r.halt()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Clone(r.errs)
	for _, o := range r.e.demo {
		k := objKey(o)
		ws := r.writes[k]
		r.e.t.Logf("writes of %s: %v", k, ws)
		rewrites, status := 0, 0
		for _, w := range ws {
			switch strings.TrimSuffix(w, " (across a gap)") {
			case "rewrite":
				rewrites++
			case "status":
				status++
			default:
				out = append(out, fmt.Sprintf("%s: a write changed its %s", k, w))
			}
		}
		// The storage migration rewrites the split (stored as v1alpha2): the apiserver stores it
		// again only if no status write re-encoded it in v1alpha4 before (any write stores the
		// whole object in the storage version; one that changes nothing is not written).
		switch {
		case o.GetKind() == "TrafficSplit" && rewrites > 1:
			out = append(out, fmt.Sprintf("%s: %d rewrites of its body, want at most the storage migration's one", k, rewrites))
		case o.GetKind() != "TrafficSplit" && rewrites != 0:
			out = append(out, fmt.Sprintf("%s: %d rewrites of its body, stored in the storage version already: want none", k, rewrites))
		}
		// Who wrote: the harness's apply when it was created, and status writes.
		if last := r.last[k]; last != nil {
			for _, m := range last.GetManagedFields() {
				switch {
				case m.Subresource == "status":
				case m.Manager == "kubectl" && m.Operation == metav1.ManagedFieldsOperationApply && m.Time != nil && !m.Time.After(r.since.Time):
				default:
					out = append(out, fmt.Sprintf("%s: fields written by %s (%s %s at %v) after it was applied", k, m.Manager, m.Operation, m.Subresource, m.Time))
				}
			}
		}
		if status == 0 {
			out = append(out, k+": no status write seen")
		}
		// Its content, in the version it was applied in, is as applied.
		if last := r.last[k]; last == nil || !reflect.DeepEqual(content(r.e.t, last.Object), content(r.e.t, o.Object)) {
			out = append(out, fmt.Sprintf("%s: last seen %v, applied as %v", k, last, o.Object))
		} else if last.GetGeneration() != 1 {
			out = append(out, fmt.Sprintf("%s: generation %d: its spec was written", k, last.GetGeneration()))
		}
	}
	return out
}
