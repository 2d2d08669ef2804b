package membership_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/yaml"

	"github.com/smi2istio/smi2istio/api/v1alpha1"
	"github.com/smi2istio/smi2istio/internal/membership"
	"github.com/smi2istio/smi2istio/internal/meshconfig"
	"github.com/smi2istio/smi2istio/internal/smi/crds"
	"github.com/smi2istio/smi2istio/internal/testing/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, &env, testenv.Options{})) }

// freshMapper sees CRDs installed during the test.
func freshMapper(t *testing.T) meta.RESTMapper {
	t.Helper()
	hc, err := rest.HTTPClientFor(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	m, err := apiutil.NewDynamicRESTMapper(env.Config, hc)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func namespace(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := env.Client.Create(context.Background(), ns); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		if err := env.Client.Get(context.Background(), client.ObjectKey{Name: name}, ns); err != nil {
			t.Fatal(err)
		}
		ns.Labels = labels
		if err := env.Client.Update(context.Background(), ns); err != nil {
			t.Fatal(err)
		}
	}
}

func apply(t *testing.T, manifest string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(manifest), &u.Object); err != nil {
		t.Fatal(err)
	}
	status, hasStatus := u.Object["status"]
	//nolint:staticcheck // SSA of an unstructured object.
	if err := env.Client.Patch(context.Background(), u, client.Apply, client.FieldOwner("test"), client.ForceOwnership); err != nil {
		t.Fatal(err)
	}
	if hasStatus {
		u.Object["status"] = status
		if err := env.Client.Status().Update(context.Background(), u); err != nil {
			t.Fatal(err)
		}
	}
	return u
}

func members(t *testing.T, spec v1alpha1.SMI2IstioConfigSpec) membership.Result {
	t.Helper()
	mapper := freshMapper(t)
	mesh, err := meshconfig.Reader{Client: env.Client, Mapper: mapper}.Resolve(context.Background(), "istio-system")
	if err != nil {
		t.Fatal(err)
	}
	r, err := membership.Resolve(context.Background(), env.Client, mapper, spec, mesh)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func expect(t *testing.T, r membership.Result, provider v1alpha1.MembershipProvider, want ...string) {
	t.Helper()
	got := []string{}
	for _, ns := range r.Sorted() {
		if strings.HasPrefix(ns, "m-") {
			got = append(got, ns)
		}
	}
	if want == nil {
		want = []string{}
	}
	if r.Provider != provider || !reflect.DeepEqual(got, want) {
		t.Errorf("%s %v (%s), want %s %v", r.Provider, got, r.Message, provider, want)
	}
}

// Runs first: without the ServiceMeshMemberRoll CRD, discovery selectors and labels decide.
func TestA_DiscoverySelectorsAndLabels(t *testing.T) {
	namespace(t, "istio-system", nil)
	namespace(t, "m-shop", map[string]string{"istio-injection": "enabled", "team": "shop"})
	namespace(t, "m-blog", map[string]string{"istio.io/rev": "canary", "team": "blog"})
	namespace(t, "m-off", map[string]string{"istio-injection": "disabled", "team": "shop"})
	namespace(t, "m-plain", map[string]string{"team": "shop"})

	expect(t, members(t, v1alpha1.SMI2IstioConfigSpec{}), v1alpha1.DiscoverySelectors, "m-blog", "m-shop")
	expect(t, members(t, v1alpha1.SMI2IstioConfigSpec{Membership: v1alpha1.Membership{Provider: v1alpha1.Labels}}), v1alpha1.Labels, "m-blog", "m-shop")

	apply(t, `
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    trustDomain: example.org
    discoverySelectors:
    - matchLabels: {team: shop}
`)
	expect(t, members(t, v1alpha1.SMI2IstioConfigSpec{}), v1alpha1.DiscoverySelectors, "m-shop")
	expect(t, members(t, v1alpha1.SMI2IstioConfigSpec{Membership: v1alpha1.Membership{Provider: v1alpha1.Explicit, Namespaces: []string{"m-plain"}}}),
		v1alpha1.Explicit, "m-plain")
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "istio", Namespace: "istio-system"}}
	if err := env.Client.Delete(context.Background(), cm); err != nil {
		t.Fatal(err)
	}
}

// A revision install (no ConfigMap "istio"): the discoverySelectors of istio-<rev> decide, for the
// namespaces of that revision; with "istio" back, each namespace is judged by its own revision's.
func TestA2_RevisionedDiscoverySelectors(t *testing.T) {
	namespace(t, "m-rev-in", map[string]string{"istio.io/rev": "canary", "team": "in"})
	namespace(t, "m-rev-out", map[string]string{"istio.io/rev": "canary", "team": "out"})
	canary := `
apiVersion: v1
kind: ConfigMap
metadata: {name: istio-canary, namespace: istio-system, labels: {istio.io/rev: canary}}
data:
  mesh: |
    trustDomain: canary.example
    discoverySelectors:
    - matchLabels: {team: %s}
`
	apply(t, fmt.Sprintf(canary, "in"))
	t.Cleanup(func() {
		for _, name := range []string{"istio-canary", "istio"} {
			_ = env.Client.Delete(context.Background(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "istio-system"}})
		}
	})
	// m-shop (istio-injection: the default revision, whose config is absent) is judged by every
	// config in effect: canary's selectors leave it out.
	expect(t, members(t, v1alpha1.SMI2IstioConfigSpec{}), v1alpha1.DiscoverySelectors, "m-rev-in")
	apply(t, fmt.Sprintf(canary, "blog"))
	expect(t, members(t, v1alpha1.SMI2IstioConfigSpec{}), v1alpha1.DiscoverySelectors, "m-blog")

	apply(t, `
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    discoverySelectors:
    - matchLabels: {team: shop}
`)
	expect(t, members(t, v1alpha1.SMI2IstioConfigSpec{}), v1alpha1.DiscoverySelectors, "m-blog", "m-shop")
}

// Open Service Mesh's monitored namespaces (openservicemesh.io/monitored-by=<mesh name>, as `osm
// namespace add` labels them): the OSM provider takes them (those of one mesh when osmMeshName is
// set); Auto, when any exists, takes them together with the namespaces Istio injects.
func TestA3_OSMMonitoredNamespaces(t *testing.T) {
	namespace(t, "m-osm-store", map[string]string{membership.OSMMonitoredLabel: "osm"})
	namespace(t, "m-osm-buyer", map[string]string{membership.OSMMonitoredLabel: "osm", "istio-injection": "enabled"})
	namespace(t, "m-osm-other", map[string]string{membership.OSMMonitoredLabel: "other-mesh"})
	t.Cleanup(func() {
		for _, ns := range []string{"m-osm-store", "m-osm-buyer", "m-osm-other"} {
			namespace(t, ns, nil)
		}
	})
	osm := func(name string) v1alpha1.SMI2IstioConfigSpec {
		return v1alpha1.SMI2IstioConfigSpec{Membership: v1alpha1.Membership{Provider: v1alpha1.OSM, OSMMeshName: name}}
	}
	auto := func(name string) v1alpha1.SMI2IstioConfigSpec {
		return v1alpha1.SMI2IstioConfigSpec{Membership: v1alpha1.Membership{OSMMeshName: name}}
	}
	r := members(t, osm(""))
	expect(t, r, v1alpha1.OSM, "m-osm-buyer", "m-osm-other", "m-osm-store")
	if !r.Ready || !strings.Contains(r.Message, membership.OSMMonitoredLabel) {
		t.Errorf("OSM provider: %+v", r)
	}
	expect(t, members(t, osm("osm")), v1alpha1.OSM, "m-osm-buyer", "m-osm-store")
	expect(t, members(t, osm("absent")), v1alpha1.OSM)
	// Auto: OSM's namespaces and Istio's injected ones (m-blog, m-rev-*, m-shop) together.
	r = members(t, auto(""))
	expect(t, r, v1alpha1.OSM, "m-blog", "m-osm-buyer", "m-osm-other", "m-osm-store", "m-rev-in", "m-rev-out", "m-shop")
	if !strings.Contains(r.Message, membership.OSMMonitoredLabel) || !strings.Contains(r.Message, "injection") {
		t.Errorf("Auto over OSM must name both sources: %q", r.Message)
	}
	expect(t, members(t, auto("osm")), v1alpha1.OSM, "m-blog", "m-osm-buyer", "m-osm-store", "m-rev-in", "m-rev-out", "m-shop")
	// No namespace of that mesh: Auto is DiscoverySelectors as before (m-osm-buyer is injected).
	expect(t, members(t, auto("absent")), v1alpha1.DiscoverySelectors, "m-blog", "m-osm-buyer", "m-rev-in", "m-rev-out", "m-shop")
}

// Ambient namespaces (istio.io/dataplane-mode=ambient) are members like injected ones, and are
// reported as ambient unless they are also labelled for injection (Istio injects there); "none"
// is no member.
func TestA4_AmbientNamespaces(t *testing.T) {
	namespace(t, "m-amb", map[string]string{membership.DataplaneModeLabel: "ambient", "team": "shop"})
	namespace(t, "m-amb-injected", map[string]string{membership.DataplaneModeLabel: "ambient", "istio-injection": "enabled"})
	namespace(t, "m-amb-off", map[string]string{membership.DataplaneModeLabel: "ambient", "istio-injection": "disabled", "team": "blog"})
	namespace(t, "m-amb-none", map[string]string{membership.DataplaneModeLabel: "none"})
	t.Cleanup(func() {
		for _, ns := range []string{"m-amb", "m-amb-injected", "m-amb-off", "m-amb-none"} {
			namespace(t, ns, nil)
		}
	})
	ambient := func(r membership.Result) []string {
		out := []string{}
		for ns := range r.Ambient {
			if strings.HasPrefix(ns, "m-amb") {
				out = append(out, ns)
			}
		}
		sort.Strings(out)
		return out
	}
	for _, p := range []v1alpha1.MembershipProvider{v1alpha1.Labels, v1alpha1.DiscoverySelectors} {
		r := members(t, v1alpha1.SMI2IstioConfigSpec{Membership: v1alpha1.Membership{Provider: p}})
		expect(t, r, p, "m-amb", "m-amb-injected", "m-amb-off", "m-blog", "m-rev-in", "m-rev-out", "m-shop")
		if got := ambient(r); !reflect.DeepEqual(got, []string{"m-amb", "m-amb-off"}) {
			t.Errorf("%s: ambient %v, want [m-amb m-amb-off]", p, got)
		}
	}
	// An ambient namespace that is not a member is not reported as ambient.
	r := members(t, v1alpha1.SMI2IstioConfigSpec{Membership: v1alpha1.Membership{Provider: v1alpha1.Explicit, Namespaces: []string{"m-amb-off"}}})
	if got := ambient(r); !reflect.DeepEqual(got, []string{"m-amb-off"}) {
		t.Errorf("Explicit: ambient %v, want [m-amb-off]", got)
	}
	// Discovery selectors apply to ambient namespaces as to injected ones.
	apply(t, `
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    discoverySelectors:
    - matchLabels: {team: shop}
`)
	t.Cleanup(func() {
		_ = env.Client.Delete(context.Background(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "istio", Namespace: "istio-system"}})
	})
	r = members(t, v1alpha1.SMI2IstioConfigSpec{})
	if !r.Has("m-amb") || r.Has("m-amb-off") || !r.Ambient["m-amb"] || r.Ambient["m-amb-off"] {
		t.Errorf("discoverySelectors {team: shop}: members %v, ambient %v", r.Sorted(), r.Ambient)
	}
}

func TestB_MemberRoll(t *testing.T) {
	list, err := crds.LoadFile(filepath.Join("testdata", "maistra.io_servicemeshmemberrolls.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := crds.Install(context.Background(), env.Client, list); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"m-bookstore", "m-bookbuyer", "m-bookthief"} {
		namespace(t, ns, nil)
	}
	namespace(t, "kube-public", nil)
	// An empty roll without status: Auto picks MemberRoll, reports it is not Ready, adds nobody.
	roll := apply(t, `
apiVersion: maistra.io/v1
kind: ServiceMeshMemberRoll
metadata: {name: default, namespace: istio-system}
spec: {members: [m-bookstore, m-bookbuyer]}
`)
	r := members(t, v1alpha1.SMI2IstioConfigSpec{})
	expect(t, r, v1alpha1.MemberRoll)
	if r.Ready || !strings.Contains(r.Message, "no status yet") || r.Flavour != membership.FlavourOSSM2 {
		t.Errorf("a roll without status must be reported, not guessed around: %+v", r)
	}

	setStatus := func(configured []string, ready string) {
		roll.Object["status"] = map[string]any{
			"configuredMembers": toAny(configured),
			"conditions":        []any{map[string]any{"type": "Ready", "status": ready, "reason": "Configured", "message": "roll " + ready}},
		}
		if err := env.Client.Status().Update(context.Background(), roll); err != nil {
			t.Fatal(err)
		}
	}
	setStatus([]string{"m-bookstore", "m-bookbuyer"}, "True")
	r = members(t, v1alpha1.SMI2IstioConfigSpec{})
	expect(t, r, v1alpha1.MemberRoll, "m-bookbuyer", "m-bookstore")
	if !r.Ready {
		t.Errorf("Ready roll reported not ready: %s", r.Message)
	}
	setStatus([]string{"m-bookstore", "m-bookbuyer", "m-bookthief"}, "True")
	expect(t, members(t, v1alpha1.SMI2IstioConfigSpec{}), v1alpha1.MemberRoll, "m-bookbuyer", "m-bookstore", "m-bookthief")
	setStatus([]string{"m-bookstore", "m-bookthief"}, "False")
	r = members(t, v1alpha1.SMI2IstioConfigSpec{})
	expect(t, r, v1alpha1.MemberRoll, "m-bookstore", "m-bookthief")
	if r.Ready || !strings.Contains(r.Message, "is not Ready") {
		t.Errorf("a roll that is not Ready must be reported: %+v", r)
	}

	// members: ["*"] covers every namespace except the excluded system ones.
	roll = apply(t, `
apiVersion: maistra.io/v1
kind: ServiceMeshMemberRoll
metadata: {name: default, namespace: istio-system}
spec: {members: ["*"]}
`)
	r = members(t, v1alpha1.SMI2IstioConfigSpec{})
	for _, ns := range []string{"m-bookstore", "m-bookbuyer", "m-bookthief", "m-plain"} {
		if !r.Has(ns) {
			t.Errorf("members [*]: %s missing: %v", ns, r.Sorted())
		}
	}
	for _, ns := range []string{"kube-system", "kube-public", "istio-system", "default"} {
		if r.Has(ns) {
			t.Errorf("members [*]: system namespace %s included", ns)
		}
	}

	// memberSelectors select by namespace labels.
	apply(t, `
apiVersion: maistra.io/v1
kind: ServiceMeshMemberRoll
metadata: {name: default, namespace: istio-system}
spec: {members: [], memberSelectors: [{matchLabels: {team: blog}}]}
`)
	if r := members(t, v1alpha1.SMI2IstioConfigSpec{Membership: v1alpha1.Membership{Provider: v1alpha1.MemberRoll}}); !r.Has("m-blog") || r.Has("m-plain") {
		t.Errorf("memberSelectors: %v", r.Sorted())
	}
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}
