package controllers_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/yaml"

	"github.com/smi2istio/smi2istio/api/v1alpha1"
	"github.com/smi2istio/smi2istio/controllers"
	"github.com/smi2istio/smi2istio/internal/membership"
	"github.com/smi2istio/smi2istio/internal/offline"
	"github.com/smi2istio/smi2istio/internal/smi/crds"
	"github.com/smi2istio/smi2istio/internal/testing/testenv"
	"github.com/smi2istio/smi2istio/translate"
)

// The OSM 1.2 bookstore's namespaces, renamed so that the other tests' "bookstore" objects are not
// part of the dump.
var osmNamespaces = map[string]string{"bookstore": "osm-bookstore", "bookbuyer": "osm-bookbuyer", "bookthief": "osm-bookthief", "bookwarehouse": "osm-bookwarehouse"}

// renameNamespaces moves an object of the OSM demo to the renamed namespaces: its own namespace,
// a TrafficTarget's destination and sources, a TrafficSplit's root Service (name.namespace).
func renameNamespaces(t *testing.T, u *unstructured.Unstructured) {
	t.Helper()
	rename := func(ns string) string {
		if n, ok := osmNamespaces[ns]; ok {
			return n
		}
		return ns
	}
	u.SetNamespace(rename(u.GetNamespace()))
	switch u.GetKind() {
	case "TrafficTarget":
		if ns, ok, _ := unstructured.NestedString(u.Object, "spec", "destination", "namespace"); ok {
			must(t, unstructured.SetNestedField(u.Object, rename(ns), "spec", "destination", "namespace"))
		}
		sources, _, _ := unstructured.NestedSlice(u.Object, "spec", "sources")
		for _, s := range sources {
			if m, ok := s.(map[string]any); ok {
				if ns, ok := m["namespace"].(string); ok {
					m["namespace"] = rename(ns)
				}
			}
		}
		if sources != nil {
			must(t, unstructured.SetNestedSlice(u.Object, sources, "spec", "sources"))
		}
	case "TrafficSplit":
		svc, _, _ := unstructured.NestedString(u.Object, "spec", "service")
		if name, ns, ok := strings.Cut(svc, "."); ok {
			must(t, unstructured.SetNestedField(u.Object, name+"."+rename(ns), "spec", "service"))
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func fromYAML(t *testing.T, manifest string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	must(t, yaml.Unmarshal([]byte(manifest), &u.Object))
	return u
}

// osmClusterDump is what `kubectl get namespaces,meshconfigs,egresses,...,trafficsplits,... -o yaml`
// shows of an OSM 1.2 cluster running the bookstore demo: the namespaces as `osm namespace add`
// labels them, OSM's MeshConfig, two OSM policy objects, and the demo's objects (from the fixture
// files, in OSM's versions).
func osmClusterDump(t *testing.T, permissive bool) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	var names []string
	for _, ns := range osmNamespaces {
		names = append(names, ns)
	}
	sort.Strings(names)
	for _, ns := range names {
		objs = append(objs, fromYAML(t, fmt.Sprintf(`{apiVersion: v1, kind: Namespace, metadata: {name: %s,
  labels: {%s: osm}, annotations: {openservicemesh.io/sidecar-injection: enabled}}}`, ns, membership.OSMMonitoredLabel)))
	}
	objs = append(objs,
		fromYAML(t, fmt.Sprintf(`{apiVersion: config.openservicemesh.io/v1alpha2, kind: MeshConfig, metadata: {name: osm-mesh-config, namespace: osm-system},
  spec: {traffic: {enableEgress: false, enablePermissiveTrafficPolicyMode: %t}}}`, permissive)),
		fromYAML(t, `{apiVersion: policy.openservicemesh.io/v1alpha1, kind: Egress, metadata: {name: books-api, namespace: osm-bookbuyer},
  spec: {sources: [{kind: ServiceAccount, name: bookbuyer, namespace: osm-bookbuyer}], hosts: [books.example.com], ports: [{number: 443, protocol: https}]}}`),
		fromYAML(t, `{apiVersion: policy.openservicemesh.io/v1alpha1, kind: UpstreamTrafficSetting, metadata: {name: bookstore, namespace: osm-bookstore},
  spec: {host: bookstore.osm-bookstore.svc.cluster.local}}`))
	for _, f := range []string{"apps/bookstore.yaml", "apps/bookstore-v2.yaml", "apps/bookbuyer.yaml", "apps/bookthief.yaml", "apps/bookwarehouse.yaml",
		"apps/mysql.yaml", "access/traffic-access-v1.yaml", "split/traffic-split-50-50.yaml"} {
		docs, err := testenv.ReadManifests(fixture("osm-v1.2-bookstore", filepath.FromSlash(f)))
		must(t, err)
		for _, d := range docs {
			renameNamespaces(t, d)
			objs = append(objs, d)
		}
	}
	return objs
}

// listDocument is the dump as one `kind: List` document.
func listDocument(t *testing.T, objs []*unstructured.Unstructured) string {
	t.Helper()
	items := make([]any, 0, len(objs))
	for _, o := range objs {
		items = append(items, o.Object)
	}
	out, err := yaml.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "metadata": map[string]any{"resourceVersion": ""}, "items": items})
	must(t, err)
	return string(out)
}

// comparable is what an output means: kind, namespace, name, labels, annotations and spec. The
// annotations by which the operator tracks which policies rely on an Envoy-rung filter (for its
// finalizer; the CLI's outputs have no operator to release them) are left out.
func comparable(u *unstructured.Unstructured) string {
	spec, _, _ := unstructured.NestedFieldNoCopy(u.Object, "spec")
	annotations := u.GetAnnotations()
	delete(annotations, controllers.ReliesOnAnnotation)
	if len(annotations) == 0 {
		annotations = nil
	}
	b, _ := yaml.Marshal(map[string]any{"labels": u.GetLabels(), "annotations": annotations, "spec": spec})
	return string(b)
}

func key(u *unstructured.Unstructured) string {
	return fmt.Sprintf("%s %s/%s", u.GetKind(), u.GetNamespace(), u.GetName())
}

// operatorOutputs are the objects the operator wrote in the dump's namespaces.
func operatorOutputs(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, ns := range osmNamespaces {
		for _, gvk := range []schema.GroupVersionKind{controllers.VirtualServiceGVK, controllers.DestinationRuleGVK,
			controllers.AuthorizationPolicyGVK, controllers.PeerAuthenticationGVK, controllers.EnvoyFilterGVK} {
			list := &unstructured.UnstructuredList{}
			list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
			must(t, env.Client.List(context.Background(), list, client.InNamespace(ns),
				client.MatchingLabels{translate.ManagedByLabel: translate.ManagedByValue}))
			for i := range list.Items {
				out[key(&list.Items[i])] = comparable(&list.Items[i])
			}
		}
	}
	return out
}

// cliOutputs runs `smi2istio translate -f -` on the dump.
func cliOutputs(t *testing.T, dump string) (map[string]string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := offline.Main([]string{"-f", "-"}, strings.NewReader(dump), &stdout, &stderr); code != 0 {
		t.Fatalf("translate: exit %d: %s", code, stderr.String())
	}
	docs, err := offline.Decode(stdout.Bytes())
	must(t, err)
	out := map[string]string{}
	for _, d := range docs {
		out[key(d)] = comparable(d)
	}
	return out, stderr.String()
}

func sameOutputs(cli, op map[string]string) error {
	var diffs []string
	for k, v := range cli {
		if w, ok := op[k]; !ok {
			diffs = append(diffs, "only the CLI writes "+k)
		} else if v != w {
			diffs = append(diffs, fmt.Sprintf("%s differs:\nCLI:\n%s\noperator:\n%s", k, v, w))
		}
	}
	for k := range op {
		if _, ok := cli[k]; !ok {
			diffs = append(diffs, "only the operator writes "+k)
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 0 {
		return fmt.Errorf("%d difference(s):\n%s", len(diffs), strings.Join(diffs, "\n"))
	}
	return nil
}

func configObject(t *testing.T) *v1alpha1.SMI2IstioConfig {
	t.Helper()
	cfg := &v1alpha1.SMI2IstioConfig{}
	eventually(t, "the SMI2IstioConfig", func() error {
		return env.Client.Get(context.Background(), client.ObjectKey{Name: v1alpha1.ConfigName}, cfg)
	})
	return cfg
}

// recreateConfig deletes the SMI2IstioConfig and waits for the operator to create a new one.
func recreateConfig(t *testing.T) *v1alpha1.SMI2IstioConfig {
	t.Helper()
	old := configObject(t)
	must(t, env.Client.Delete(context.Background(), old))
	var cfg *v1alpha1.SMI2IstioConfig
	eventually(t, "a new SMI2IstioConfig", func() error {
		cfg = &v1alpha1.SMI2IstioConfig{}
		if err := env.Client.Get(context.Background(), client.ObjectKey{Name: v1alpha1.ConfigName}, cfg); err != nil {
			return err
		}
		if cfg.UID == old.UID {
			return fmt.Errorf("not deleted yet")
		}
		return nil
	})
	return cfg
}

// An OSM cluster, dumped: OSM's CRDs, its MeshConfig (permissive or not), the bookstore demo in
// namespaces OSM monitors (not labelled for Istio), two OSM policy objects. With no
// SMI2IstioConfig, the operator creates one with the MeshConfig's access mode and says so; the
// mesh is OSM's namespaces (Auto); the policy objects are counted and named on the status; and
// `translate` on the List dump prints exactly the objects the operator writes, in both modes.
func TestOSMClusterDumpTranslatesAsTheOperator(t *testing.T) {
	ctx := context.Background()
	for _, f := range []string{"config_meshconfig.yaml", "policy_egress.yaml", "policy_ingress_backend.yaml", "policy_retry.yaml", "policy_upstream_traffic_setting.yaml"} {
		list, err := crds.LoadFile(filepath.Join(testenv.RepoRoot(), "internal", "membership", "testdata", "osm-v1.2", f))
		must(t, err)
		must(t, crds.Install(ctx, env.Client, list))
	}
	ensureNamespace(t, "osm-system")
	t.Cleanup(func() {
		// The suite's state back: no MeshConfig, no OSM-monitored namespace, a default configuration.
		_ = env.Client.Delete(ctx, fromYAML(t, `{apiVersion: config.openservicemesh.io/v1alpha2, kind: MeshConfig, metadata: {name: osm-mesh-config, namespace: osm-system}}`))
		for _, ns := range osmNamespaces {
			labelNamespace(t, ns, nil)
		}
		cfg := recreateConfig(t)
		if cfg.Spec.AccessMode != v1alpha1.Enforcing || cfg.Annotations[controllers.AccessModeSourceAnnotation] != "" {
			t.Errorf("without a MeshConfig the created configuration is the default one: %+v", cfg)
		}
	})

	for _, permissive := range []bool{false, true} {
		mode := v1alpha1.Enforcing
		if permissive {
			mode = v1alpha1.Permissive
		}
		t.Logf("MeshConfig enablePermissiveTrafficPolicyMode: %t", permissive)
		dump := osmClusterDump(t, permissive)
		for _, o := range dump {
			if o.GetKind() == "Namespace" {
				labelNamespace(t, o.GetName(), o.GetLabels())
				continue
			}
			apply(t, o)
		}
		cfg := recreateConfig(t)
		if cfg.Spec.AccessMode != mode || !strings.Contains(cfg.Annotations[controllers.AccessModeSourceAnnotation], "MeshConfig osm-system/osm-mesh-config") {
			t.Fatalf("created configuration: mode %s, annotations %v; want %s from the MeshConfig", cfg.Spec.AccessMode, cfg.Annotations, mode)
		}
		waitMeshStatus(t, "status: access mode source, OSM membership, untranslated OSM policies", func(s v1alpha1.SMI2IstioConfigStatus) error {
			want := []v1alpha1.ForeignObjects{
				{Kind: "Egress.policy.openservicemesh.io", Count: 1, Names: []string{"osm-bookbuyer/books-api"}},
				{Kind: "UpstreamTrafficSetting.policy.openservicemesh.io", Count: 1, Names: []string{"osm-bookstore/bookstore"}},
			}
			members := map[string]bool{}
			for _, m := range s.Members {
				members[m] = true
			}
			switch {
			case !strings.Contains(s.AccessModeSource, fmt.Sprintf("MeshConfig osm-system/osm-mesh-config (spec.traffic.enablePermissiveTrafficPolicyMode: %t)", permissive)):
				return fmt.Errorf("accessModeSource %q", s.AccessModeSource)
			case !reflect.DeepEqual(s.Untranslated, want):
				return fmt.Errorf("untranslated %+v", s.Untranslated)
			case s.Mesh.Provider != v1alpha1.OSM || !members["osm-bookstore"] || !members["osm-bookthief"]:
				return fmt.Errorf("provider %s, members %v", s.Mesh.Provider, s.Members)
			}
			return nil
		})
		ready := "True"
		reason := controllers.ReasonApplied
		if permissive {
			ready, reason = "False", controllers.ReasonNotEnforced
		}
		for _, tt := range [][2]string{{"osm-bookstore", "bookstore"}, {"osm-bookstore", "bookstore-v2"}, {"osm-bookwarehouse", "bookstore-access-bookwarehouse"}, {"osm-bookwarehouse", "mysql"}} {
			waitTTReady(t, tt[0], tt[1], ready, reason)
		}
		waitCondition(t, "osm-bookstore", "bookstore-split", "Ready", "True", controllers.ReasonApplied)
		for _, ns := range osmNamespaces {
			waitBaselines(t, !permissive, ns)
		}

		cli, stderr := cliOutputs(t, listDocument(t, dump))
		for _, want := range []string{"note: access mode " + string(mode) + ", taken from Open Service Mesh's MeshConfig osm-system/osm-mesh-config",
			"Egress osm-bookbuyer/books-api: policy.openservicemesh.io: NotTranslated", "UpstreamTrafficSetting osm-bookstore/bookstore: policy.openservicemesh.io: NotTranslated"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("the CLI's report must say %q:\n%s", want, stderr)
			}
		}
		settle(t, &splitWrites, &accessWrites, &baselineWrites)
		eventually(t, "the CLI prints what the operator writes", func() error { return sameOutputs(cli, operatorOutputs(t)) })
		if !permissive && len(cli) < 10 {
			t.Errorf("Enforcing: %d outputs, want the baselines, policies, filter and routes: %v", len(cli), cli)
		}
	}
}

// The MeshConfig's permissive setting is read fail closed: not a boolean, or unreadable, is
// Enforcing, and the source says why.
func TestOSMAccessModeFailsClosed(t *testing.T) {
	mc := func(traffic string) unstructured.Unstructured {
		return *fromYAML(t, `{apiVersion: config.openservicemesh.io/v1alpha2, kind: MeshConfig, metadata: {name: osm-mesh-config, namespace: osm-system}, spec: {traffic: `+traffic+`}}`)
	}
	for _, c := range []struct {
		name  string
		items []unstructured.Unstructured
		mode  v1alpha1.AccessMode
		says  string
	}{
		{"none", nil, "", ""},
		{"permissive", []unstructured.Unstructured{mc("{enablePermissiveTrafficPolicyMode: true}")}, v1alpha1.Permissive, "enablePermissiveTrafficPolicyMode: true"},
		{"unset", []unstructured.Unstructured{mc("{}")}, v1alpha1.Enforcing, "unset: false"},
		{"a string", []unstructured.Unstructured{mc(`{enablePermissiveTrafficPolicyMode: "true"}`)}, v1alpha1.Enforcing, "could not be decoded"},
		{"traffic not an object", []unstructured.Unstructured{mc(`[]`)}, v1alpha1.Enforcing, "could not be decoded"},
		{"two meshes disagree", []unstructured.Unstructured{mc("{enablePermissiveTrafficPolicyMode: true}"), mc("{enablePermissiveTrafficPolicyMode: false}")}, v1alpha1.Enforcing, ": false"},
	} {
		mode, says := membership.OSMAccessMode(c.items)
		if mode != c.mode || !strings.Contains(says, c.says) {
			t.Errorf("%s: %s (%q), want %s saying %q", c.name, mode, says, c.mode, c.says)
		}
	}
}

// In a cluster: no MeshConfig kind or none is "not found" (the defaults); MeshConfigs that cannot be
// listed are Enforcing, and the source says why.
func TestReadOSMAccessModeFailsClosed(t *testing.T) {
	gvk := membership.OSMMeshConfigGK.WithVersion("v1alpha2")
	mapper := meta.NewDefaultRESTMapper([]schema.GroupVersion{gvk.GroupVersion()})
	ctx := context.Background()
	if _, _, found := controllers.ReadOSMAccessMode(ctx, fake.NewClientBuilder().WithRESTMapper(mapper).Build(), mapper); found {
		t.Errorf("MeshConfig kind not served: found")
	}
	mapper.Add(gvk, meta.RESTScopeNamespace)
	ok := fake.NewClientBuilder().WithRESTMapper(mapper).Build()
	if _, _, found := controllers.ReadOSMAccessMode(ctx, ok, mapper); found {
		t.Errorf("no MeshConfig: found")
	}
	mc := fromYAML(t, `{apiVersion: config.openservicemesh.io/v1alpha2, kind: MeshConfig, metadata: {name: osm-mesh-config, namespace: osm-system}, spec: {traffic: {enablePermissiveTrafficPolicyMode: true}}}`)
	withOne := fake.NewClientBuilder().WithRESTMapper(mapper).WithObjects(mc).Build()
	if mode, _, found := controllers.ReadOSMAccessMode(ctx, withOne, mapper); !found || mode != v1alpha1.Permissive {
		t.Errorf("a permissive MeshConfig: %v %s", found, mode)
	}
	failing := interceptor.NewClient(fake.NewClientBuilder().WithRESTMapper(mapper).Build(), interceptor.Funcs{
		List: func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) error {
			return apierrors.NewForbidden(schema.GroupResource{Group: gvk.Group, Resource: "meshconfigs"}, "", fmt.Errorf("no RBAC"))
		}})
	mode, source, found := controllers.ReadOSMAccessMode(ctx, failing, mapper)
	if !found || mode != v1alpha1.Enforcing || !strings.Contains(source, "could not be listed") || !strings.Contains(source, "failing closed") {
		t.Errorf("unlistable MeshConfigs: %v %s %q", found, mode, source)
	}
}
