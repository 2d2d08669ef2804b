package meshconfig_test

import (
	"context"
	"reflect"
	"slices"
	"testing"

	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/config/mesh/labelselector"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/smi2istio/smi2istio/internal/meshconfig"
)

// resolveOne resolves the mesh config "istio" of an Istio namespace that is not istio-system.
func resolveOne(t *testing.T, istioNamespace, meshYAML string) (meshconfig.InEffect, error) {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	mapper := meta.NewDefaultRESTMapper(nil)
	mapper.Add(schema.GroupVersionKind{Version: "v1", Kind: "Namespace"}, meta.RESTScopeRoot)
	mapper.Add(schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, meta.RESTScopeNamespace)
	c := fake.NewClientBuilder().WithScheme(scheme).WithRESTMapper(mapper).
		WithObjects(ns("app", nil), cm(istioNamespace, "istio", "", meshYAML)).Build()
	return meshconfig.Reader{Client: c, Mapper: mapper}.Resolve(context.Background(), istioNamespace)
}

// Each mesh config is read as istiod reads it (istio.io/istio's own ApplyMeshConfigDefaults, the
// function istiod applies to its ConfigMap): the same trust domain and discovery selectors, and a
// set of root namespaces that holds istiod's; what istiod fails to decode is an error here too.
// istiod decodes with jsonpb: proto field names count (root_namespace, trust_domain), and an unset
// rootNamespace is istio-system, not istiod's namespace (found by a red team: root_namespace was
// ignored and the ConfigMap's namespace assumed, so selector-based policies were written in the
// real root namespace, which Istio applies to every namespace).
func TestReadAsIstiodDoes(t *testing.T) {
	const istioNS = "istio-prod"
	for _, y := range []string{
		"root_namespace: tenant-root\ntrust_domain: prod.example",
		"trustDomain: prod.example",
		"",
		"rootNamespace: json-name\nroot_namespace: proto-name\ntrust_domain: proto.example\ntrustDomain: json.example",
		"rootNamespace: \"\"",
		"rootNamespace: null\ntrustDomain: null",
		"rootNamespace: tenant-root\nsomeFieldOfALaterIstio: {a: 1}\n",
		"defaultConfig:\n  drainDuration: 1m\n  unknownProxyField: x\nrootNamespace: tenant-root",
		"discovery_selectors:\n- matchLabels: {team: a}\n- matchExpressions: [{key: env, operator: In, values: [prod]}]",
		"discoverySelectors:\n- {}\n",
		"discoverySelectors:\n- match_labels: {team: a}\n", // matchLabels has no other name: an empty selector
		"discoverySelectors:\n- matchExpressions: [{key: a, operator: Bad}]\n",
		// istiod fails to decode these (and keeps its previous or default config): an error here.
		"rootNamespace: 5",
		"trustDomain: [a]",
		"connectTimeout: soon",
		"discoverySelectors: {team: a}",
		"- rootNamespace: tenant-root",
	} {
		e, err := resolveOne(t, istioNS, y)
		want, ierr := mesh.ApplyMeshConfigDefaults(y)
		var selectorErr error
		var wantSelectors []string
		for _, ls := range want.GetDiscoverySelectors() {
			s, err := labelselector.LabelSelectorAsSelector(ls)
			if err != nil {
				selectorErr = err
				break
			}
			wantSelectors = append(wantSelectors, s.String())
		}
		switch {
		case ierr != nil || selectorErr != nil:
			if err == nil {
				t.Errorf("mesh %q: istiod fails (%v, %v); smi2istio reads it", y, ierr, selectorErr)
			} else {
				t.Logf("mesh %q: istiod fails (%v, %v); smi2istio too: %v", y, ierr, selectorErr, err)
			}
			continue
		case err != nil:
			t.Errorf("mesh %q: istiod reads it; smi2istio fails: %v", y, err)
			continue
		}
		td, _ := e.TrustDomain()
		roots := e.RootNamespaces()
		t.Logf("mesh %q: istiod reads root %q, trust domain %q; smi2istio %v, %q", y, want.GetRootNamespace(), want.GetTrustDomain(), roots, td)
		if td != want.GetTrustDomain() {
			t.Errorf("mesh %q: smi2istio reads trust domain %q; istiod %q", y, td, want.GetTrustDomain())
		}
		// An empty rootNamespace leaves istiod without a root namespace: any set of ours holds it.
		if root := want.GetRootNamespace(); root != "" && !slices.Contains(roots, root) {
			t.Errorf("mesh %q: smi2istio reads root namespaces %v; istiod uses %q", y, roots, root)
		}
		var gotSelectors []string
		for _, s := range e.Configs[0].Selectors {
			gotSelectors = append(gotSelectors, s.String())
		}
		if !reflect.DeepEqual(gotSelectors, wantSelectors) {
			t.Errorf("mesh %q: smi2istio reads discovery selectors %q; istiod %q", y, gotSelectors, wantSelectors)
		}
	}
}

// The root namespaces counted: the one set, else istiod's default and the ConfigMap's namespace.
func TestRootNamespaces(t *testing.T) {
	for _, c := range []struct {
		mesh string
		want []string
	}{
		{"root_namespace: tenant-root", []string{"tenant-root"}},
		{"rootNamespace: tenant-root", []string{"tenant-root"}},
		{"rootNamespace: json\nroot_namespace: proto", []string{"json"}},
		{"trustDomain: td", []string{"istio-prod", "istio-system"}},
		{"rootNamespace: ''", []string{"istio-prod", "istio-system"}},
	} {
		got, err := meshconfig.Parse(cm("istio-prod", "istio", "", c.mesh))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.RootNamespaces, c.want) {
			t.Errorf("%q: root namespaces %v, want %v", c.mesh, got.RootNamespaces, c.want)
		}
	}
	// Without any mesh config, istiod (in istio-prod) runs with istio-system as its root namespace.
	e, err := resolveOne(t, "istio-prod", "")
	if err != nil {
		t.Fatal(err)
	}
	e.Configs = nil
	if got := e.RootNamespaces(); !reflect.DeepEqual(got, []string{"istio-prod", "istio-system"}) {
		t.Errorf("without a mesh config: root namespaces %v", got)
	}
}
