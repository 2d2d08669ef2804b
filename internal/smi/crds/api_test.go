package crds_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/smi2istio/smi2istio/internal/smi/conversion"
	"github.com/smi2istio/smi2istio/internal/testing/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, &env, testenv.Options{})) }

var nsCounter atomic.Int64

// freshNamespace creates a namespace for one test case.
func freshNamespace(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("t%d", nsCounter.Add(1))
	ensureNamespace(t, name)
	return name
}

func ensureNamespace(t *testing.T, name string) {
	t.Helper()
	err := env.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create namespace %s: %v", name, err)
	}
}

// apply is `kubectl apply --server-side`: strict field validation, one field manager.
func apply(ctx context.Context, u *unstructured.Unstructured) error {
	u = u.DeepCopy()
	//nolint:staticcheck // SSA of an unstructured object, as kubectl does.
	return env.Client.Patch(ctx, u, client.Apply, client.FieldOwner("kubectl"), client.ForceOwnership,
		client.FieldValidation("Strict"))
}

func get(ctx context.Context, gvk schema.GroupVersionKind, ns, name string) (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, u)
	return u, err
}

// content is what differs between versions: everything but apiVersion, kind, metadata and status.
func content(u *unstructured.Unstructured) map[string]any {
	out := map[string]any{}
	for k, v := range u.Object {
		switch k {
		case "apiVersion", "kind", "metadata", "status":
		default:
			out[k] = v
		}
	}
	return out
}

func isSMI(gvk schema.GroupVersionKind) bool { return strings.HasSuffix(gvk.Group, ".smi-spec.io") }

// Every OSM bookstore manifest applies unchanged and reads back equal in its own version.
func TestOSMFixturesApplyUnchanged(t *testing.T) {
	ctx := context.Background()
	root := filepath.Join(testenv.RepoRoot(), "testdata", "fixtures")
	var files []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".yaml") {
			files = append(files, p)
		}
		return err
	})
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures under %s: %v", root, err)
	}
	sort.Strings(files)
	// Each walk-through is its own cluster's worth of objects (the two reuse names with different
	// immutable selectors): apply one set, check it, delete it, then the next.
	sets := map[string][]string{}
	for _, f := range files {
		rel, _ := filepath.Rel(root, f)
		set, _, _ := strings.Cut(rel, string(filepath.Separator))
		sets[set] = append(sets[set], f)
	}
	smiSeen := 0
	for set, files := range sets {
		var applied []*unstructured.Unstructured
		for _, f := range files {
			docs, err := testenv.ReadManifests(f)
			if err != nil {
				t.Fatal(err)
			}
			rel, _ := filepath.Rel(root, f)
			for _, doc := range docs {
				if ns := doc.GetNamespace(); ns != "" {
					ensureNamespace(t, ns)
				}
			}
			for _, doc := range docs {
				gvk := doc.GroupVersionKind()
				what := fmt.Sprintf("%s: %s %s/%s", rel, gvk, doc.GetNamespace(), doc.GetName())
				if err := apply(ctx, doc); err != nil {
					t.Errorf("%s: apply: %v", what, err)
					continue
				}
				applied = append(applied, doc)
				if !isSMI(gvk) {
					continue
				}
				smiSeen++
				got, err := get(ctx, gvk, doc.GetNamespace(), doc.GetName())
				if err != nil {
					t.Errorf("%s: read back: %v", what, err)
					continue
				}
				if !reflect.DeepEqual(content(got), content(doc)) {
					t.Errorf("%s: read back differs\n want: %v\n  got: %v", what, content(doc), content(got))
				}
				if _, ok := got.GetAnnotations()[conversion.AnnotationKey]; ok {
					t.Errorf("%s: conversion annotation leaked into its own version: %v", what, got.GetAnnotations())
				}
			}
		}
		for _, doc := range applied {
			if doc.GetKind() == "Namespace" {
				continue // no namespace controller here; the names are reused by the next set
			}
			if err := env.Client.Delete(ctx, doc.DeepCopy()); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("%s: delete %s %s/%s: %v", set, doc.GetKind(), doc.GetNamespace(), doc.GetName(), err)
			}
		}
	}
	if smiSeen < 20 {
		t.Errorf("only %d SMI objects in the fixtures, want every one of them checked", smiSeen)
	}
}

func loadCases(t *testing.T) map[string]*unstructured.Unstructured {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(testenv.RepoRoot(), "internal", "smi", "testdata", "roundtrip", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no round-trip cases: %v", err)
	}
	out := map[string]*unstructured.Unstructured{}
	for _, f := range files {
		docs, err := testenv.ReadManifests(f)
		if err != nil || len(docs) != 1 {
			t.Fatalf("%s: want one document: %v", f, err)
		}
		out[strings.TrimSuffix(filepath.Base(f), ".yaml")] = docs[0]
	}
	return out
}

func servedVersions(t *testing.T, gk schema.GroupKind) []string {
	t.Helper()
	mapping, err := env.Client.RESTMapper().RESTMappings(gk)
	if err != nil {
		t.Fatalf("versions of %s: %v", gk, err)
	}
	var out []string
	for _, m := range mapping {
		out = append(out, m.GroupVersionKind.Version)
	}
	sort.Strings(out)
	return out
}

// An object created in version A, read in B, written back in B and read in A is unchanged —
// through the real apiserver, storage and conversion webhook.
func TestRoundTripThroughAPIServer(t *testing.T) {
	ctx := context.Background()
	for name, orig := range loadCases(t) {
		gvk := orig.GroupVersionKind()
		for _, v := range servedVersions(t, gvk.GroupKind()) {
			t.Run(name+"/via-"+v, func(t *testing.T) {
				ns := freshNamespace(t)
				obj := orig.DeepCopy()
				obj.SetNamespace(ns)
				status, hasStatus := obj.Object["status"]
				delete(obj.Object, "status")
				if err := env.Client.Create(ctx, obj); err != nil {
					t.Fatalf("create in %s: %v", gvk.Version, err)
				}
				if hasStatus {
					obj.Object["status"] = status
					if err := env.Client.Status().Update(ctx, obj); err != nil {
						t.Fatalf("update status in %s: %v", gvk.Version, err)
					}
				}
				inB, err := get(ctx, schema.GroupVersionKind{Group: gvk.Group, Version: v, Kind: gvk.Kind}, ns, obj.GetName())
				if err != nil {
					t.Fatalf("read in %s: %v", v, err)
				}
				if hasStatus && !reflect.DeepEqual(inB.Object["status"], status) {
					t.Errorf("status read in %s differs: %v", v, inB.Object["status"])
				}
				if err := env.Client.Update(ctx, inB); err != nil {
					t.Fatalf("write back in %s: %v", v, err)
				}
				back, err := get(ctx, gvk, ns, obj.GetName())
				if err != nil {
					t.Fatalf("read in %s: %v", gvk.Version, err)
				}
				if !reflect.DeepEqual(content(back), content(orig)) {
					t.Errorf("content changed\n want: %v\n  got: %v\n   in %s: %v", content(orig), content(back), v, content(inB))
				}
				if !reflect.DeepEqual(back.GetAnnotations(), orig.GetAnnotations()) {
					t.Errorf("annotations changed: want %v, got %v", orig.GetAnnotations(), back.GetAnnotations())
				}
				if hasStatus && !reflect.DeepEqual(back.Object["status"], status) {
					t.Errorf("status changed: %v", back.Object["status"])
				}
			})
		}
	}
}

func TestInvalidObjectsRejected(t *testing.T) {
	ctx := context.Background()
	ns := freshNamespace(t)
	for name, tc := range map[string]struct{ manifest, want string }{
		"negative weight": {`
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: neg}
spec: {service: root, backends: [{service: a, weight: -1}]}`, "should be greater than or equal to 0"},
		"negative quantity weight": {`
apiVersion: split.smi-spec.io/v1alpha1
kind: TrafficSplit
metadata: {name: negq}
spec: {service: root, backends: [{service: a, weight: "-500m"}]}`, "weight must be a non-negative quantity"},
		"weight not a quantity": {`
apiVersion: split.smi-spec.io/v1alpha1
kind: TrafficSplit
metadata: {name: badq}
spec: {service: root, backends: [{service: a, weight: lots}]}`, "weight must be a non-negative quantity"},
		"missing service": {`
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: nosvc}
spec: {backends: [{service: a, weight: 1}]}`, "spec.service: Required value"},
		"unknown rule kind": {`
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: badkind}
spec:
  destination: {kind: ServiceAccount, name: b}
  rules: [{kind: GRPCRoute, name: r}]`, `Unsupported value: "GRPCRoute"`},
		"unknown rule kind v1alpha1": {`
apiVersion: access.smi-spec.io/v1alpha1
kind: TrafficTarget
metadata: {name: badkind1}
destination: {kind: ServiceAccount, name: b}
specs: [{kind: GRPCRoute, name: r}]`, `Unsupported value: "GRPCRoute"`},
		"destination port out of range": {`
apiVersion: access.smi-spec.io/v1alpha2
kind: TrafficTarget
metadata: {name: badport}
spec: {destination: {kind: ServiceAccount, name: b, port: 70000}}`, "should be less than or equal to 65535"},
		"unknown method": {`
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: badmethod}
spec: {matches: [{name: m, methods: [FETCH]}]}`, `Unsupported value: "FETCH"`},
		// A name becomes a pattern: names that reach principals, selectors, hosts and labels are
		// DNS names in every version (a trailing * would be a prefix match in a principal).
		"wildcard source name": {`
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: wildsrc}
spec:
  destination: {kind: ServiceAccount, name: b}
  sources: [{kind: ServiceAccount, name: "web*"}]`, `spec.sources[0].name: Invalid value: "web*": spec.sources[0].name in body should match`},
		"wildcard source name v1alpha1": {`
apiVersion: access.smi-spec.io/v1alpha1
kind: TrafficTarget
metadata: {name: wildsrc1}
destination: {kind: ServiceAccount, name: b}
sources: [{kind: ServiceAccount, name: "web*"}]`, `sources[0].name: Invalid value: "web*"`},
		"wildcard source namespace": {`
apiVersion: access.smi-spec.io/v1alpha2
kind: TrafficTarget
metadata: {name: wildns}
spec:
  destination: {kind: ServiceAccount, name: b}
  sources: [{kind: ServiceAccount, name: web, namespace: "*"}]`, `spec.sources[0].namespace: Invalid value: "*"`},
		"uppercase destination namespace": {`
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: upperns}
spec:
  destination: {kind: ServiceAccount, name: b, namespace: Shop}`, `spec.destination.namespace: Invalid value: "Shop"`},
		"destination name longer than a label value": {`
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: longdest}
spec:
  destination: {kind: ServiceAccount, name: ` + strings.Repeat("a", 64) + `}`, `spec.destination.name: Too long: may not be more than 63`},
		"wildcard backend": {`
apiVersion: split.smi-spec.io/v1alpha1
kind: TrafficSplit
metadata: {name: wildbackend}
spec: {service: root, backends: [{service: "web*", weight: "1"}]}`, `spec.backends[0].service: Invalid value: "web*"`},
		"wildcard root service": {`
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: wildroot}
spec: {service: "*.shop", backends: [{service: a, weight: 1}]}`, `spec.service: Invalid value: "*.shop"`},
		"unknown field": {`
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: unknownfield}
spec: {service: root, backends: [{service: a, weight: 1, wieght: 2}]}`, `.spec.backends[0].wieght: field not declared in schema`},
	} {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(tc.manifest), &u.Object); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		u.SetNamespace(ns)
		err := apply(ctx, u)
		if err == nil {
			t.Errorf("%s: accepted, want rejected with %q", name, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: rejected with %q, want it to say %q", name, err, tc.want)
		}
	}

	// A malformed regex, and headers of the wrong shape (which a structural schema cannot
	// express), are accepted here and reported as a condition when translated.
	for _, m := range []string{`{name: m, pathRegex: "([a-z"}`, `{name: m, headers: [{x: [1]}]}`} {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(`
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: later}
spec: {matches: [`+m+`]}`), &u.Object); err != nil {
			t.Fatal(err)
		}
		u.SetNamespace(ns)
		if err := apply(ctx, u); err != nil {
			t.Errorf("%s must be accepted by the apiserver: %v", m, err)
		}
	}
}

// Status is a subresource: a main-resource write cannot change it, a status write can, in any version.
func TestStatusSubresource(t *testing.T) {
	ctx := context.Background()
	ns := freshNamespace(t)
	ts := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(`
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: st}
spec: {service: root, backends: [{service: a, weight: 1}]}
status: {observedGeneration: 9}`), &ts.Object); err != nil {
		t.Fatal(err)
	}
	ts.SetNamespace(ns)
	if err := env.Client.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := unstructured.NestedFieldNoCopy(ts.Object, "status", "observedGeneration"); found {
		t.Errorf("create must ignore status, got %v", ts.Object["status"])
	}
	cond := map[string]any{"type": "Ready", "status": "False", "reason": "BackendNotFound", "message": "service a not found",
		"lastTransitionTime": "2026-11-21T00:00:00Z", "observedGeneration": int64(1)}
	ts.Object["status"] = map[string]any{"observedGeneration": int64(1), "conditions": []any{cond}}
	if err := env.Client.Status().Update(ctx, ts); err != nil {
		t.Fatalf("status update: %v", err)
	}
	v4, err := get(ctx, schema.GroupVersionKind{Group: "split.smi-spec.io", Version: "v1alpha4", Kind: "TrafficSplit"}, ns, "st")
	if err != nil {
		t.Fatal(err)
	}
	conds, _, _ := unstructured.NestedSlice(v4.Object, "status", "conditions")
	if len(conds) != 1 || conds[0].(map[string]any)["reason"] != "BackendNotFound" {
		t.Errorf("status read in v1alpha4: %v", v4.Object["status"])
	}
	bad := v4.DeepCopy()
	bad.Object["status"] = map[string]any{"conditions": []any{map[string]any{"type": "Ready", "status": "Maybe"}}}
	if err := env.Client.Status().Update(ctx, bad); err == nil {
		t.Error("a condition without reason, message, lastTransitionTime and with status Maybe must be rejected")
	}
}
