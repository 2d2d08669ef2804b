//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"text/template"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/smi2istio/smi2istio/internal/smi/crds"
	"github.com/smi2istio/smi2istio/internal/testing/testenv"
)

// A live OSM 1.2 cluster taken over. Before smi2istio is installed, the control plane holds what an
// OSM 1.2 install running the bookstore demo leaves: OSM's own CRDs (osm-bootstrap's, unchanged:
// split served and stored as v1alpha2 only, access v1alpha3, specs v1alpha4, no status
// subresource; its MeshConfig and policy CRDs), the MeshConfig made of the Helm chart's
// preset-mesh-config as `osm install --set=osm.enablePermissiveTrafficPolicy=true` renders it (OSM's
// getting-started guide), the demo's namespaces labelled only as `osm namespace add` labels them,
// the demo's apps and SMI objects applied unchanged (stored in OSM's versions) and two OSM policy
// objects. Then smi2istio's CRDs are installed over OSM's and the operator starts with no
// SMI2IstioConfig. Judged on istiod's output: the mesh is OSM's monitored namespaces and the
// access mode OSM's (permissive: everything allowed, the v1alpha2 split routed with its weights);
// the config says both came from OSM and names the untranslated policy objects; the storage
// migration leaves every CRD storing its storage version only. Then, as the migration guide says,
// the user sets spec.accessMode to Enforcing: the TrafficTargets applied under OSM allow exactly the
// demo's paths. At the end every SMI object (and OSM's MeshConfig and policy objects) is still
// there, never edited (generation 1), and reads back in every served version as applied.
func TestOSM12ClusterTakenOver(t *testing.T) {
	start := time.Now()
	var live osmLive
	cl := newClusterWith(t, clusterOptions{beforeInstall: func(cl *cluster) { live = cl.runOSM12() }})
	ctx := context.Background()
	t.Logf("OSM 1.2 cluster set up and taken over, operator ready: %s", time.Since(start).Round(time.Second))

	cl.expectCRDsTakenOver()

	// The configuration the operator created: OSM's access mode and mesh, OSM's leftovers named.
	cl.expectConfig("the configuration takes OSM's settings", func(cfg *unstructured.Unstructured) error {
		if mode, _, _ := unstructured.NestedString(cfg.Object, "spec", "accessMode"); mode != "Permissive" {
			return fmt.Errorf("spec.accessMode %q, want Permissive (OSM's MeshConfig is permissive)", mode)
		}
		src, _, _ := unstructured.NestedString(cfg.Object, "status", "accessModeSource")
		if !strings.Contains(src, "Open Service Mesh's MeshConfig osm-system/osm-mesh-config (spec.traffic.enablePermissiveTrafficPolicyMode: true)") {
			return fmt.Errorf("status.accessModeSource %q does not name OSM's MeshConfig", src)
		}
		if p, _, _ := unstructured.NestedString(cfg.Object, "status", "mesh", "provider"); p != "OSM" {
			return fmt.Errorf("status.mesh.provider %q, want OSM", p)
		}
		members, _, _ := unstructured.NestedStringSlice(cfg.Object, "status", "members")
		if sort.Strings(members); !slices.Equal(members, osmLiveNamespaces) {
			return fmt.Errorf("status.members %v, want OSM's monitored namespaces %v", members, osmLiveNamespaces)
		}
		return expectUntranslated(cfg, live.policies)
	})

	w := cl.osm12Workloads()
	store2 := cl.register("bookstore", "bookstore-v2")

	// Permissive, as under OSM: everyone may call everyone; the v1alpha2 split routes 50/50.
	cl.expectAccess("permissive", w.store, allow(w.booksBought(w.buyer)), allow(w.booksBought(w.thief)), allow(w.buyABook(w.thief)),
		allow(get(w.warehouse, 14001, "/")))
	cl.expectAccess("permissive", store2, allow(w.buyABook(w.buyer)), allow(w.buyABook(w.thief)))
	cl.expectAccess("permissive", w.warehouse, allow(httpReq(w.store, 14001, "POST", "/restock-books")), allow(get(w.thief, 14001, "/")))
	cl.expectAccess("permissive", w.mysql, allow(tcp(w.warehouse, 3306)), allow(tcp(w.thief, 3306)))
	split := "default -> " + cluster14001("bookstore-v1") + "=50 " + cluster14001("bookstore-v2") + "=50"
	cl.expectRoutes("the v1alpha2 split", w.buyer, "bookstore.bookstore.svc.cluster.local", 14001, split)

	// The storage migration: TrafficSplits rewritten from v1alpha2, every CRD storing one version.
	cl.expectConfig("storage migration done", func(cfg *unstructured.Unstructured) error {
		return cl.migrated(cfg)
	})

	// The migration guide: "change spec.accessMode to change it".
	cl.patchConfig(`{"accessMode":"Enforcing"}`)
	cl.expectAccess("enforcing", w.store,
		allow(w.booksBought(w.buyer)), allow(w.buyABook(w.buyer)),
		deny(get(w.buyer, 14001, "/books-bought", "user-agent", "curl/8", "client-app", "bookbuyer")),
		deny(get(w.buyer, 14001, "/buy-a-book/old")),
		deny(w.booksBought(w.thief)), deny(w.buyABook(w.thief)), deny(w.buyABook(w.warehouse)))
	cl.expectAccess("enforcing", store2, allow(w.booksBought(w.buyer)), allow(w.buyABook(w.buyer)), deny(w.buyABook(w.thief)))
	cl.expectAccess("enforcing", w.warehouse,
		allow(httpReq(w.store, 14001, "POST", "/restock-books")), allow(httpReq(w.store, 14001, "POST", "/anything")),
		deny(get(w.store, 14001, "/restock-books")), deny(httpReq(w.buyer, 14001, "POST", "/restock-books")),
		deny(httpReq(w.thief, 14001, "POST", "/restock-books")))
	cl.expectAccess("enforcing", w.mysql,
		allow(tcp(w.warehouse, 3306)), deny(tcp(w.store, 3306)), deny(tcp(w.thief, 3306)), deny(tcp(w.warehouse, 3307)))
	cl.expectRoutes("the v1alpha2 split, enforcing", w.buyer, "bookstore.bookstore.svc.cluster.local", 14001, split)
	// Every namespace OSM monitored has its allow-nothing baseline (the mesh is OSM's).
	aps := cl.managed(schema.GroupVersionKind{Group: "security.istio.io", Version: "v1beta1", Kind: "AuthorizationPolicy"})
	for _, ns := range osmLiveNamespaces {
		if !slices.Contains(aps, ns+"/smi2istio-default-deny") {
			t.Errorf("no baseline in %s: the generated AuthorizationPolicies are %v", ns, aps)
		}
	}
	cl.expectConfig("the access mode is now the user's", func(cfg *unstructured.Unstructured) error {
		if src, _, _ := unstructured.NestedString(cfg.Object, "status", "accessModeSource"); src != "spec.accessMode of SMI2IstioConfig default" {
			return fmt.Errorf("status.accessModeSource %q", src)
		}
		if err := cl.migrated(cfg); err != nil {
			return err
		}
		return expectUntranslated(cfg, live.policies)
	})

	// OSM's own objects are as OSM left them.
	for _, o := range live.osm {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(o.GroupVersionKind())
		must(t, cl.c.Get(ctx, client.ObjectKeyFromObject(o), got))
		if got.GetGeneration() != 1 || !reflect.DeepEqual(content(t, got.Object), content(t, o.Object)) {
			t.Errorf("%s %s/%s was edited: generation %d, %v", o.GetKind(), o.GetNamespace(), o.GetName(), got.GetGeneration(), got.Object["spec"])
		}
	}

	// The guide's step 3: the namespaces labelled for Istio's injection, OSM's injection annotation
	// removed (the restart is the harness's registered pods). The mesh is the same.
	cl.relabelOSMNamespaces(func(ns *corev1.Namespace) {
		ns.Labels["istio-injection"] = "enabled"
		delete(ns.Annotations, "openservicemesh.io/sidecar-injection")
	})
	for _, name := range []string{"meshconfigs.config.openservicemesh.io", "egresses.policy.openservicemesh.io",
		"ingressbackends.policy.openservicemesh.io", "retries.policy.openservicemesh.io", "upstreamtrafficsettings.policy.openservicemesh.io"} {
		must(t, cl.c.Delete(ctx, &apiextv1.CustomResourceDefinition{ObjectMeta: metav1.ObjectMeta{Name: name}}))
	}
	// Step 4: the monitored-by labels removed (Auto: the mesh is now the namespaces Istio injects).
	cl.relabelOSMNamespaces(func(ns *corev1.Namespace) { delete(ns.Labels, "openservicemesh.io/monitored-by") })
	cl.expectConfig("OSM's labels removed: the mesh is Istio's injected namespaces", func(cfg *unstructured.Unstructured) error {
		if p, _, _ := unstructured.NestedString(cfg.Object, "status", "mesh", "provider"); p == "OSM" || p == "" {
			return fmt.Errorf("status.mesh.provider %q, want Istio's", p)
		}
		members, _, _ := unstructured.NestedStringSlice(cfg.Object, "status", "members")
		if sort.Strings(members); !slices.Equal(members, osmLiveNamespaces) {
			return fmt.Errorf("status.members %v, want %v", members, osmLiveNamespaces)
		}
		if mode, _, _ := unstructured.NestedString(cfg.Object, "spec", "accessMode"); mode != "Enforcing" {
			return fmt.Errorf("spec.accessMode %q, want Enforcing", mode)
		}
		return expectUntranslated(cfg, map[string][]string{})
	})
	cl.expectAccess("OSM's labels removed", w.store,
		allow(w.booksBought(w.buyer)), allow(w.buyABook(w.buyer)), deny(w.booksBought(w.thief)), deny(w.buyABook(w.thief)))
	cl.expectAccess("OSM's labels removed", w.mysql, allow(tcp(w.warehouse, 3306)), deny(tcp(w.thief, 3306)))
	cl.expectRoutes("OSM's labels removed", w.buyer, "bookstore.bookstore.svc.cluster.local", 14001, split)

	// Nothing the user wrote was edited: every SMI object reads back as applied, in every version.
	for _, o := range live.smi {
		cl.expectReady(o.GetKind(), o.GetNamespace(), o.GetName())
	}
	cl.expectReadBack(live.smi)
	cl.expectIstiodClean()
	t.Logf("wall time %s", time.Since(start).Round(time.Second))
}

// osmLiveNamespaces are the bookstore demo's namespaces, added to OSM's mesh, sorted.
var osmLiveNamespaces = []string{"bookbuyer", "bookstore", "bookthief", "bookwarehouse"}

// osmLiveCRDs are the SMI CRDs OSM 1.2 installs and the version each stores under OSM.
var osmLiveCRDs = map[string]string{
	"trafficsplits.split.smi-spec.io":   "v1alpha2",
	"traffictargets.access.smi-spec.io": "v1alpha3",
	"httproutegroups.specs.smi-spec.io": "v1alpha4",
	"tcproutes.specs.smi-spec.io":       "v1alpha4",
}

// relabelOSMNamespaces edits the labels and annotations of the demo's namespaces, as `kubectl label` does.
func (cl *cluster) relabelOSMNamespaces(edit func(*corev1.Namespace)) {
	cl.t.Helper()
	for _, n := range osmLiveNamespaces {
		ns := &corev1.Namespace{}
		must(cl.t, cl.c.Get(context.Background(), client.ObjectKey{Name: n}, ns))
		if ns.Labels == nil {
			ns.Labels = map[string]string{}
		}
		edit(ns)
		must(cl.t, cl.c.Update(context.Background(), ns))
	}
}

// osmLive is what runOSM12 applied: the demo's SMI objects, OSM's own objects (MeshConfig,
// policies) and the policy objects' "Kind namespace/name".
type osmLive struct {
	smi, osm []*unstructured.Unstructured
	policies map[string][]string // by kind (group-qualified, as the status names it): namespace/name
}

// runOSM12 makes the bare control plane what OSM 1.2 leaves running the bookstore demo, through a
// client of its own (the cluster's must not remember OSM's API versions).
func (cl *cluster) runOSM12() osmLive {
	t := cl.t
	t.Helper()
	ctx := context.Background()
	scheme := kruntime.NewScheme()
	must(t, clientgoscheme.AddToScheme(scheme))
	must(t, apiextv1.AddToScheme(scheme))
	c, err := client.New(cl.cp.Config, client.Options{Scheme: scheme})
	must(t, err)
	root := testenv.RepoRoot()

	// osm-bootstrap creates its CRDs (byte for byte OSM's cmd/osm-bootstrap/crds: see SOURCE there).
	var names []string
	for _, f := range []string{
		"controllers/testdata/osm-v1.2-smi-crds/smi_traffic_split.yaml", "controllers/testdata/osm-v1.2-smi-crds/smi_traffic_access.yaml",
		"controllers/testdata/osm-v1.2-smi-crds/smi_http_route_group.yaml", "controllers/testdata/osm-v1.2-smi-crds/smi_tcp_route.yaml",
		"internal/membership/testdata/osm-v1.2/config_meshconfig.yaml", "internal/membership/testdata/osm-v1.2/policy_egress.yaml",
		"internal/membership/testdata/osm-v1.2/policy_ingress_backend.yaml", "internal/membership/testdata/osm-v1.2/policy_retry.yaml",
		"internal/membership/testdata/osm-v1.2/policy_upstream_traffic_setting.yaml",
	} {
		list, err := crds.LoadFile(filepath.Join(root, filepath.FromSlash(f)))
		must(t, err)
		for _, crd := range list {
			must(t, c.Create(ctx, crd, client.FieldOwner("osm-bootstrap")))
			names = append(names, crd.Name)
		}
	}
	eventually(t, "OSM's CRDs established", func() error {
		for _, name := range names {
			crd := &apiextv1.CustomResourceDefinition{}
			if err := c.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
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
	var live osmLive
	must(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "osm-system"}}))
	cm := renderOSMPresetMeshConfig(t, map[string]any{"enablePermissiveTrafficPolicy": true})
	must(t, c.Create(ctx, cm, client.FieldOwner("helm")))
	spec := map[string]any{}
	must(t, json.Unmarshal([]byte(cm.Data["preset-mesh-config.json"]), &spec))
	mc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "config.openservicemesh.io/v1alpha2", "kind": "MeshConfig",
		"metadata": map[string]any{"name": "osm-mesh-config", "namespace": cm.Namespace},
		"spec":     spec,
	}}
	// Strict: OSM's MeshConfig CRD takes the rendered spec as it is (no field pruned).
	must(t, c.Create(ctx, mc, client.FieldOwner("osm-bootstrap"), client.FieldValidation("Strict")))
	live.osm = append(live.osm, mc) // as created: with the defaults of OSM's CRD

	// osm namespace add: the monitored-by label and the sidecar-injection annotation, nothing of Istio's.
	for _, n := range osmLiveNamespaces {
		must(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n,
			Labels:      map[string]string{"openservicemesh.io/monitored-by": "osm"},
			Annotations: map[string]string{"openservicemesh.io/sidecar-injection": "enabled"}}}))
	}
	// The demo as OSM publishes it, kubectl apply --server-side.
	for _, f := range []string{"apps/bookstore.yaml", "apps/bookstore-v2.yaml", "apps/bookbuyer.yaml", "apps/bookthief.yaml", "apps/bookwarehouse.yaml",
		"apps/mysql.yaml", "access/traffic-access-v1.yaml", "split/traffic-split-50-50.yaml"} {
		docs, err := testenv.ReadManifests(fixture("osm-v1.2-bookstore/" + f))
		must(t, err)
		for _, d := range docs {
			//nolint:staticcheck // SSA of an unstructured object, as kubectl apply --server-side does.
			must(t, c.Patch(ctx, d.DeepCopy(), client.Apply, client.FieldOwner("kubectl"), client.ForceOwnership))
			if strings.HasSuffix(d.GroupVersionKind().Group, ".smi-spec.io") {
				live.smi = append(live.smi, d)
			}
		}
	}
	if len(live.smi) != 8 {
		t.Fatalf("%d SMI objects in the OSM 1.2 bookstore demo, want 8", len(live.smi))
	}
	// Two of OSM's policies smi2istio does not translate (OSM's docs' examples, for the demo).
	live.policies = map[string][]string{}
	for _, p := range []string{
		`{apiVersion: policy.openservicemesh.io/v1alpha1, kind: Egress, metadata: {name: books-api, namespace: bookbuyer},
  spec: {sources: [{kind: ServiceAccount, name: bookbuyer, namespace: bookbuyer}], hosts: [books.example.com], ports: [{number: 443, protocol: https}]}}`,
		`{apiVersion: policy.openservicemesh.io/v1alpha1, kind: UpstreamTrafficSetting, metadata: {name: bookstore, namespace: bookstore},
  spec: {host: bookstore.bookstore.svc.cluster.local, connectionSettings: {tcp: {maxConnections: 100}}}}`,
	} {
		u := &unstructured.Unstructured{}
		must(t, yaml.Unmarshal([]byte(p), &u.Object))
		must(t, c.Create(ctx, u, client.FieldOwner("kubectl"), client.FieldValidation("Strict")))
		live.osm = append(live.osm, u)
		gk := u.GroupVersionKind().GroupKind().String()
		live.policies[gk] = append(live.policies[gk], u.GetNamespace()+"/"+u.GetName())
	}
	// Stored as OSM stores them.
	for name, v := range osmLiveCRDs {
		crd := &apiextv1.CustomResourceDefinition{}
		must(t, c.Get(ctx, client.ObjectKey{Name: name}, crd))
		if !slices.Equal(crd.Status.StoredVersions, []string{v}) {
			t.Fatalf("under OSM, CRD %s stores %v, want [%s]", name, crd.Status.StoredVersions, v)
		}
	}
	return live
}

// renderOSMPresetMeshConfig renders OSM's charts/osm/templates/preset-mesh-config.yaml in namespace
// osm-system with the chart's default values (charts/osm/values.yaml, those the template reads)
// and set over osm's values, as `osm install --set=osm.<key>=<value>` does.
func renderOSMPresetMeshConfig(t *testing.T, set map[string]any) *corev1.ConfigMap {
	t.Helper()
	text, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "e2e", "testdata", "osm-v1.2", "preset-mesh-config.helm-template.yaml"))
	must(t, err)
	osm := map[string]any{
		"enablePrivilegedInitContainer": false, "envoyLogLevel": "error", "maxDataPlaneConnections": 0,
		"configResyncInterval": "0s", "localProxyMode": "Localhost",
		"enableEgress": false, "enablePermissiveTrafficPolicy": false,
		"outboundPortExclusionList": []any{}, "inboundPortExclusionList": []any{}, "outboundIPRangeExclusionList": []any{},
		"outboundIPRangeInclusionList": []any{}, "networkInterfaceExclusionList": []any{},
		"enableDebugServer": false, "controllerLogLevel": "info",
		"tracing":             map[string]any{"enable": false, "port": 9411, "endpoint": "/api/v2/spans", "address": ""},
		"certificateProvider": map[string]any{"serviceCertValidityDuration": "24h", "certKeyBitSize": 2048},
		"trustDomain":         "cluster.local",
		"featureFlags": map[string]any{
			"enableWASMStats": true, "enableSnapshotCacheMode": false, "enableAsyncProxyServiceMapping": false,
			"enableIngressBackendPolicy": true, "enableEnvoyActiveHealthChecks": false, "enableRetryPolicy": false,
			"enableMeshRootCertificate": false,
		},
	}
	for k, v := range set {
		if _, ok := osm[k]; !ok {
			t.Fatalf("the chart has no value osm.%s", k)
		}
		osm[k] = v
	}
	const namespace = "osm-system"
	tmpl, err := template.New("preset-mesh-config").Option("missingkey=error").Funcs(template.FuncMap{
		"mustToJson": func(v any) (string, error) { b, err := json.Marshal(v); return string(b), err },
		"include": func(name string, _ any) (string, error) {
			switch name {
			case "osm.namespace":
				return namespace, nil
			case "osm.tracingAddress":
				return "jaeger." + namespace + ".svc.cluster.local", nil
			}
			return "", fmt.Errorf("no template %s", name)
		},
	}).Parse(string(text))
	must(t, err)
	var out strings.Builder
	must(t, tmpl.Execute(&out, map[string]any{"Values": map[string]any{"osm": osm, "contour": map[string]any{"enabled": false}}}))
	cm := &corev1.ConfigMap{}
	must(t, yaml.UnmarshalStrict([]byte(out.String()), cm))
	if !json.Valid([]byte(cm.Data["preset-mesh-config.json"])) {
		t.Fatalf("the rendered preset-mesh-config.json is not JSON:\n%s", cm.Data["preset-mesh-config.json"])
	}
	return cm
}

// ourSMICRDs are smi2istio's SMI CRDs (config/crd/bases) by name.
func ourSMICRDs(t *testing.T) map[string]*apiextv1.CustomResourceDefinition {
	t.Helper()
	list, err := crds.Load(filepath.Join(testenv.RepoRoot(), "config", "crd", "bases"))
	must(t, err)
	out := map[string]*apiextv1.CustomResourceDefinition{}
	for _, c := range list {
		if _, ok := osmLiveCRDs[c.Name]; ok {
			out[c.Name] = c
		}
	}
	if len(out) != len(osmLiveCRDs) {
		t.Fatalf("config/crd/bases has %d of OSM's %d SMI CRDs", len(out), len(osmLiveCRDs))
	}
	return out
}

// expectCRDsTakenOver: every SMI CRD OSM installed is now smi2istio's: its versions (served,
// storage, schema, status subresource) and its conversion webhook, nothing of OSM's left.
func (cl *cluster) expectCRDsTakenOver() {
	cl.t.Helper()
	for name, want := range ourSMICRDs(cl.t) {
		got := &apiextv1.CustomResourceDefinition{}
		must(cl.t, cl.c.Get(context.Background(), client.ObjectKey{Name: name}, got))
		if !crds.Ours(got) {
			cl.t.Errorf("CRD %s: labels %v, not smi2istio's", name, got.Labels)
		}
		if got.Spec.Conversion == nil || got.Spec.Conversion.Strategy != apiextv1.WebhookConverter {
			cl.t.Errorf("CRD %s: conversion %+v, want the webhook", name, got.Spec.Conversion)
		}
		if len(got.Spec.Versions) != len(want.Spec.Versions) {
			cl.t.Errorf("CRD %s: %d versions, want smi2istio's %d", name, len(got.Spec.Versions), len(want.Spec.Versions))
			continue
		}
		for i, w := range want.Spec.Versions {
			g := got.Spec.Versions[i]
			if g.Name != w.Name || g.Served != w.Served || g.Storage != w.Storage || !reflect.DeepEqual(g.Schema, w.Schema) ||
				!reflect.DeepEqual(g.Subresources, w.Subresources) {
				cl.t.Errorf("CRD %s: version %s is not smi2istio's %s", name, g.Name, w.Name)
			}
		}
	}
}

// expectConfig waits until the SMI2IstioConfig "default" passes check.
func (cl *cluster) expectConfig(what string, check func(*unstructured.Unstructured) error) {
	cl.t.Helper()
	eventually(cl.t, what, func() error {
		cfg := &unstructured.Unstructured{}
		cfg.SetAPIVersion("smi2istio.io/v1alpha1")
		cfg.SetKind("SMI2IstioConfig")
		if err := cl.c.Get(context.Background(), client.ObjectKey{Name: "default"}, cfg); err != nil {
			return err
		}
		if err := check(cfg); err != nil {
			return fmt.Errorf("%w\nstatus: %v", err, cfg.Object["status"])
		}
		return nil
	})
}

// expectUntranslated: status.untranslated names exactly OSM's policy objects.
func expectUntranslated(cfg *unstructured.Unstructured, want map[string][]string) error {
	list, _, _ := unstructured.NestedSlice(cfg.Object, "status", "untranslated")
	got := map[string][]string{}
	for _, e := range list {
		m, _ := e.(map[string]any)
		kind, _ := m["kind"].(string)
		names, _, _ := unstructured.NestedStringSlice(m, "names")
		if count, _, _ := unstructured.NestedInt64(m, "count"); count != int64(len(names)) {
			return fmt.Errorf("status.untranslated: %s counts %d, names %v", kind, count, names)
		}
		got[kind] = names
	}
	if !reflect.DeepEqual(got, want) {
		return fmt.Errorf("status.untranslated %v, want %v", got, want)
	}
	return nil
}

// migrated: status.storageMigration says Done for every SMI CRD of OSM's, and each CRD's
// storedVersions is its storage version alone.
func (cl *cluster) migrated(cfg *unstructured.Unstructured) error {
	list, _, _ := unstructured.NestedSlice(cfg.Object, "status", "storageMigration")
	states := map[string]string{}
	for _, e := range list {
		m, _ := e.(map[string]any)
		name, _ := m["name"].(string)
		state, _ := m["state"].(string)
		states[name] = state
	}
	for name, want := range ourSMICRDs(cl.t) {
		if states[name] != "Done" {
			return fmt.Errorf("status.storageMigration of %s: %q, want Done (%v)", name, states[name], list)
		}
		var storage string
		for _, v := range want.Spec.Versions {
			if v.Storage {
				storage = v.Name
			}
		}
		got := &apiextv1.CustomResourceDefinition{}
		if err := cl.c.Get(context.Background(), client.ObjectKey{Name: name}, got); err != nil {
			return err
		}
		if !slices.Equal(got.Status.StoredVersions, []string{storage}) {
			return fmt.Errorf("CRD %s: storedVersions %v, want [%s]", name, got.Status.StoredVersions, storage)
		}
	}
	return nil
}

// expectReadBack reads every SMI object in every version its CRD serves (the apiserver's storage,
// then the conversion webhook): never edited (generation 1), read in its own version it is the
// object as applied, in any other what the conversion makes of it, and that converts back.
func (cl *cluster) expectReadBack(objs []*unstructured.Unstructured) {
	cl.t.Helper()
	t := cl.t
	ours := ourSMICRDs(t)
	reads := 0
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		var crd *apiextv1.CustomResourceDefinition
		for _, c := range ours {
			if c.Spec.Group == gvk.Group && c.Spec.Names.Kind == gvk.Kind {
				crd = c
			}
		}
		if crd == nil {
			t.Fatalf("no CRD of smi2istio's for %s", gvk)
		}
		for _, v := range crd.Spec.Versions {
			if !v.Served {
				continue
			}
			what := fmt.Sprintf("%s %s/%s read as %s", gvk.Kind, o.GetNamespace(), o.GetName(), v.Name)
			got := &unstructured.Unstructured{}
			got.SetGroupVersionKind(schema.GroupVersionKind{Group: gvk.Group, Version: v.Name, Kind: gvk.Kind})
			if err := cl.c.Get(context.Background(), client.ObjectKeyFromObject(o), got); err != nil {
				t.Errorf("%s: %v", what, err)
				continue
			}
			reads++
			if got.GetGeneration() != 1 {
				t.Errorf("%s: generation %d: the object was edited", what, got.GetGeneration())
			}
			if w, g := convertTo(t, o.Object, got.GetAPIVersion()), content(t, got.Object); !reflect.DeepEqual(w, g) {
				t.Errorf("%s:\n got: %v\nwant: %v", what, g, w)
			}
			if back, w := convertTo(t, got.Object, o.GetAPIVersion()), content(t, o.Object); !reflect.DeepEqual(back, w) {
				t.Errorf("%s does not convert back to the object as applied:\n got: %v\nwant: %v", what, back, w)
			}
		}
	}
	if reads < 3*len(objs) {
		t.Errorf("only %d reads of %d objects", reads, len(objs))
	}
}
