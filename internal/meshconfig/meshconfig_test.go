package meshconfig_test

import (
	"context"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/smi2istio/smi2istio/internal/meshconfig"
)

func ns(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func cm(namespace, name, rev, mesh string) *corev1.ConfigMap {
	c := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}, Data: map[string]string{"mesh": mesh}}
	if rev != "" {
		c.Labels = map[string]string{meshconfig.RevisionLabel: rev}
	}
	return c
}

func smcp(namespace, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(meshconfig.ControlPlaneGVK)
	u.SetNamespace(namespace)
	u.SetName(name)
	return u
}

// resolve runs Resolve over these objects; with OSSM 2's kind served when ossm.
func resolve(t *testing.T, ossm bool, objs ...client.Object) meshconfig.InEffect {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	mapper := meta.NewDefaultRESTMapper(nil)
	mapper.Add(schema.GroupVersionKind{Version: "v1", Kind: "Namespace"}, meta.RESTScopeRoot)
	mapper.Add(schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, meta.RESTScopeNamespace)
	if ossm {
		scheme.AddKnownTypeWithName(meshconfig.ControlPlaneGVK, &unstructured.Unstructured{})
		scheme.AddKnownTypeWithName(meshconfig.ControlPlaneGVK.GroupVersion().WithKind("ServiceMeshControlPlaneList"), &unstructured.UnstructuredList{})
		mapper.Add(meshconfig.ControlPlaneGVK, meta.RESTScopeNamespace)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithRESTMapper(mapper).WithObjects(objs...).Build()
	e, err := meshconfig.Reader{Client: c, Mapper: mapper}.Resolve(context.Background(), "istio-system")
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestRevisionedOnly(t *testing.T) {
	e := resolve(t, false,
		ns("shop", map[string]string{meshconfig.RevisionLabel: "canary"}),
		ns("blog", map[string]string{meshconfig.RevisionLabel: "canary", "team": "blog"}),
		cm("istio-system", "istio-canary", "canary", "trustDomain: canary.example\nrootNamespace: istio-config\ndiscoverySelectors:\n- matchLabels: {team: blog}\n"),
		cm("istio-system", "istio-sidecar-injector-canary", "canary", "trustDomain: wrong.example\n"),
		// A tenant's look-alike in another namespace is not Istio's.
		cm("tenant", "istio-canary", "canary", "trustDomain: evil.example\nrootNamespace: tenant\n"),
	)
	if got := e.Keys(); !reflect.DeepEqual(got, []string{"istio-system/istio-canary"}) {
		t.Fatalf("configs %v", got)
	}
	if td, conflict := e.TrustDomain(); td != "canary.example" || conflict != "" {
		t.Errorf("trust domain %q (%s)", td, conflict)
	}
	if got := e.RootNamespaces(); !reflect.DeepEqual(got, []string{"istio-config"}) {
		t.Errorf("root namespaces %v", got)
	}
	if e.Discovers(map[string]string{meshconfig.RevisionLabel: "canary"}) || !e.Discovers(map[string]string{meshconfig.RevisionLabel: "canary", "team": "blog"}) {
		t.Error("the canary revision's discoverySelectors are not applied")
	}
	if !reflect.DeepEqual(e.Missing, []string{"istio-system/istio"}) || e.Fallback {
		t.Errorf("missing %v, fallback %v", e.Missing, e.Fallback)
	}
}

// Default revision and a canary with another trust domain: a conflict, reported; the default
// revision's trust domain is used, and every root namespace counts.
func TestSeveralRevisions(t *testing.T) {
	e := resolve(t, false,
		ns("a", map[string]string{meshconfig.InjectionLabel: "enabled", "team": "a"}),
		ns("b", map[string]string{meshconfig.RevisionLabel: "canary", "team": "b"}),
		ns("c", map[string]string{meshconfig.RevisionLabel: "prod"}), // a revision tag: no ConfigMap
		// istio-injection takes precedence over istio.io/rev (as Istio's injector does).
		ns("d", map[string]string{meshconfig.InjectionLabel: "enabled", meshconfig.RevisionLabel: "canary", "team": "b"}),
		cm("istio-system", "istio", "", "trustDomain: td-default\ndiscoverySelectors:\n- matchLabels: {team: a}\n"),
		cm("istio-system", "istio-canary", "canary", "trustDomain: td-canary\nrootNamespace: canary-root\ndiscoverySelectors:\n- matchLabels: {team: b}\n"),
		cm("istio-system", "istio-unused", "unused", "trustDomain: td-unused\nrootNamespace: unused-root\n"),
	)
	if got := e.Keys(); !reflect.DeepEqual(got, []string{"istio-system/istio", "istio-system/istio-canary"}) {
		t.Fatalf("configs %v", got)
	}
	td, conflict := e.TrustDomain()
	if td != "td-default" || !strings.Contains(conflict, "istio-system/istio-canary: td-canary") {
		t.Errorf("trust domain %q, conflict %q", td, conflict)
	}
	if got := e.RootNamespaces(); !reflect.DeepEqual(got, []string{"canary-root", "istio-system"}) {
		t.Errorf("root namespaces %v", got)
	}
	if !reflect.DeepEqual(e.Missing, []string{"istio-system/istio-prod"}) {
		t.Errorf("missing %v", e.Missing)
	}
	for _, c := range []struct {
		labels map[string]string
		want   bool
	}{
		{map[string]string{meshconfig.InjectionLabel: "enabled", "team": "a"}, true},
		{map[string]string{meshconfig.InjectionLabel: "enabled", "team": "b"}, false},
		{map[string]string{meshconfig.RevisionLabel: "canary", "team": "b"}, true},
		{map[string]string{meshconfig.RevisionLabel: "canary", "team": "a"}, false},
		{map[string]string{meshconfig.InjectionLabel: "enabled", meshconfig.RevisionLabel: "canary", "team": "b"}, false},
		// A tag: its revision is unknown, any config that discovers it counts.
		{map[string]string{meshconfig.RevisionLabel: "prod", "team": "b"}, true},
		{map[string]string{meshconfig.RevisionLabel: "prod", "team": "c"}, false},
	} {
		if got := e.Discovers(c.labels); got != c.want {
			t.Errorf("Discovers(%v) = %v, want %v", c.labels, got, c.want)
		}
	}
}

// Nothing wanted exists (a Sail install whose revision is named by a tag): the ConfigMaps labelled
// as a revision's mesh config are used.
func TestFallbackToLabelled(t *testing.T) {
	e := resolve(t, false,
		ns("a", map[string]string{meshconfig.RevisionLabel: "stable"}),
		cm("istio-system", "istio-1-24-1", "1-24-1", "trustDomain: td\n"),
		cm("istio-system", "istio-sidecar-injector-1-24-1", "1-24-1", "trustDomain: wrong\n"),
		cm("istio-system", "istio-other", "", "trustDomain: unlabelled\n"),
	)
	if got := e.Keys(); !reflect.DeepEqual(got, []string{"istio-system/istio-1-24-1"}) || !e.Fallback {
		t.Fatalf("configs %v, fallback %v", got, e.Fallback)
	}
	if td, _ := e.TrustDomain(); td != "td" {
		t.Errorf("trust domain %q", td)
	}
	if got := e.RootNamespaces(); !reflect.DeepEqual(got, []string{"istio-system"}) {
		t.Errorf("root namespaces %v (unset: istiod's default, istio-system, and the config's namespace)", got)
	}
}

func TestNoConfig(t *testing.T) {
	e := resolve(t, false, ns("a", nil))
	if td, conflict := e.TrustDomain(); td != meshconfig.DefaultTrustDomain || conflict != "" {
		t.Errorf("trust domain %q (%s)", td, conflict)
	}
	if got := e.RootNamespaces(); !reflect.DeepEqual(got, []string{"istio-system"}) {
		t.Errorf("root namespaces %v", got)
	}
	if !e.Discovers(map[string]string{"x": "y"}) {
		t.Error("without discoverySelectors every namespace is discovered")
	}
}

// OSSM 2: istio-<control plane's name> in the control plane's namespace.
func TestServiceMeshControlPlane(t *testing.T) {
	e := resolve(t, true,
		ns("bookinfo", map[string]string{meshconfig.MemberOfLabel: "cp"}),
		smcp("cp", "basic"),
		cm("cp", "istio-basic", "basic", "trustDomain: ossm.example\n"),
	)
	if got := e.Keys(); !reflect.DeepEqual(got, []string{"cp/istio-basic"}) {
		t.Fatalf("configs %v", got)
	}
	if td, _ := e.TrustDomain(); td != "ossm.example" {
		t.Errorf("trust domain %q", td)
	}
	// No rootNamespace: istiod's default and the control plane's namespace both count.
	if got := e.RootNamespaces(); !reflect.DeepEqual(got, []string{"cp", "istio-system"}) {
		t.Errorf("root namespaces %v", got)
	}
	if !reflect.DeepEqual(e.ControlPlaneNamespaces, []string{"cp", "istio-system"}) {
		t.Errorf("control plane namespaces %v", e.ControlPlaneNamespaces)
	}
	// Without the label, OSSM 2's ConfigMap is still read (Direct/Client get by name).
	e = resolve(t, true, smcp("cp", "basic"), cm("cp", "istio-basic", "", "trustDomain: ossm.example\n"))
	if got := e.Keys(); !reflect.DeepEqual(got, []string{"cp/istio-basic"}) {
		t.Errorf("unlabelled: configs %v", got)
	}
}

func TestParseErrors(t *testing.T) {
	for _, mesh := range []string{"trustDomain: [a]\n", "discoverySelectors:\n- matchExpressions: [{key: a, operator: Bad}]\n"} {
		if _, err := meshconfig.Parse(cm("istio-system", "istio", "", mesh)); err == nil {
			t.Errorf("%q: no error", mesh)
		}
	}
}

func TestRelevant(t *testing.T) {
	e := meshconfig.InEffect{ControlPlaneNamespaces: []string{"istio-system"}, Wanted: []string{"istio-system/istio-plain"}}
	for _, c := range []struct {
		cm   *corev1.ConfigMap
		want bool
	}{
		{cm("istio-system", "istio", "", ""), true},
		{cm("istio-system", "istio-canary", "canary", ""), true},
		{cm("istio-system", "istio-plain", "", ""), true},
		{cm("istio-system", "istio-canary", "", ""), false},
		{cm("istio-system", "istio-sidecar-injector-canary", "canary", ""), false},
		{cm("istio-system", "istio-leader", "", ""), false},
		{cm("tenant", "istio", "", ""), false},
		{cm("tenant", "istio-canary", "canary", ""), false},
	} {
		if got := e.Relevant(c.cm); got != c.want {
			t.Errorf("Relevant(%s/%s %v) = %v, want %v", c.cm.Namespace, c.cm.Name, c.cm.Labels, got, c.want)
		}
	}
	// Before the first resolution, any namespace.
	if !(meshconfig.InEffect{}).Relevant(cm("elsewhere", "istio", "", "")) {
		t.Error("before the first resolution every mesh config name is relevant")
	}
}
