package cache

import (
	"context"
	"reflect"
	"sort"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// keys are the namespace/name of objects, sorted.
func keys[T client.Object](objs []T) []string {
	out := make([]string, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.GetNamespace()+"/"+o.GetName())
	}
	sort.Strings(out)
	return out
}

// A namespaced index finds objects within one namespace and keeps each value once, as
// "<namespace>/<value>" (no cluster-wide copy); a cluster index finds them across namespaces.
// Lookups wait for the informer's first list, and fail when the context ends first.
func TestFieldIndexes(t *testing.T) {
	env := controlPlane(t)
	a, b := freshNamespace(t), freshNamespace(t)
	for _, r := range []struct{ ns, name, ref string }{{a, "r1", "x"}, {a, "r2", "y"}, {b, "r3", "x"}} {
		route := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "TCPRoute",
			"metadata": map[string]any{"name": r.name, "namespace": r.ns, "labels": map[string]any{"test.smi2istio.io/ref": r.ref}},
			"spec":     map[string]any{"matches": map[string]any{"ports": []any{int64(8080)}}},
		}}
		if err := env.Client.Create(t.Context(), route); err != nil {
			t.Fatal(err)
		}
	}
	ref := func(o SMIObject) []string {
		if v := o.GetLabels()["test.smi2istio.io/ref"]; v != "" {
			return []string{v}
		}
		return nil
	}

	opts := Options()
	opts.Scheme = env.Scheme
	c, err := crcache.New(env.Config, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	inNamespace, err := NewNamespacedIndex(ctx, c, NewSMI(TCPRoute{}.GVK()), "test.namespaced", ref)
	if err != nil {
		t.Fatal(err)
	}
	acrossNamespaces, err := NewClusterIndex(ctx, c, NewSMI(TCPRoute{}.GVK()), "test.cluster", ref)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.Start(ctx) }()

	got, err := inNamespace.Lookup(ctx, a, "x")
	if err != nil {
		t.Fatal(err)
	}
	if k := keys(got); !reflect.DeepEqual(k, []string{a + "/r1"}) {
		t.Errorf("namespaced lookup of x in %s: %v", a, k)
	}
	if got[0].GetObjectKind().GroupVersionKind() != (TCPRoute{}).GVK() {
		t.Errorf("looked-up object without its kind: %v", got[0].GetObjectKind().GroupVersionKind())
	}
	if got, err := inNamespace.Lookup(ctx, b, "y"); err != nil || len(got) != 0 {
		t.Errorf("namespaced lookup of y in %s: %v, %v", b, keys(got), err)
	}
	got, err = acrossNamespaces.Lookup(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if k := keys(got); !reflect.DeepEqual(k, []string{a + "/r1", b + "/r3"}) {
		t.Errorf("cluster lookup of x: %v", k)
	}

	stored := func(ix index[SMIObject]) []string {
		v := ix.informer.GetIndexer().ListIndexFuncValues(ix.name)
		sort.Strings(v)
		return v
	}
	if v := stored(inNamespace.index); !reflect.DeepEqual(v, []string{a + "/x", a + "/y", b + "/x"}) {
		t.Errorf("namespaced index values %q, want each once with its namespace", v)
	}
	if v := stored(acrossNamespaces.index); !reflect.DeepEqual(v, []string{"x", "y"}) {
		t.Errorf("cluster index values %q", v)
	}

	// A cache that never starts: the lookup waits for the first list until its context ends.
	idle, err := crcache.New(env.Config, opts)
	if err != nil {
		t.Fatal(err)
	}
	never, err := NewNamespacedIndex(ctx, idle, NewSMI(TCPRoute{}.GVK()), "test.namespaced", ref)
	if err != nil {
		t.Fatal(err)
	}
	short, stop := context.WithTimeout(ctx, 300*time.Millisecond)
	defer stop()
	if got, err := never.Lookup(short, a, "x"); err == nil {
		t.Errorf("lookup on an informer that never listed: %v, no error", keys(got))
	}
}
