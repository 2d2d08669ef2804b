package cache_test

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/smi2istio/smi2istio/internal/cache"
	"github.com/smi2istio/smi2istio/internal/syncset"
)

// A cached generated object is up to date with the spec, labels and owners the operator renders
// (weights as int64), whatever the JSON numbers; a hand edit of the spec or a lost label is not.
func TestUpToDate(t *testing.T) {
	const ours = `{"app.kubernetes.io/managed-by":"smi2istio"}`
	want := &unstructured.Unstructured{}
	if err := want.UnmarshalJSON([]byte(cache.VirtualServiceDoc(ours, "50"))); err != nil {
		t.Fatal(err)
	}
	route := want.Object["spec"].(map[string]any)["http"].([]any)[0].(map[string]any)["route"].([]any)[0].(map[string]any)
	route["weight"] = int64(50)
	if !syncset.UpToDate(want, cache.CachedObject(t, cache.VirtualServiceDoc(ours, "50"))) {
		t.Error("the cached copy of the same object is not up to date")
	}
	if !syncset.UpToDate(want, cache.CachedObject(t, cache.VirtualServiceDoc(ours, "50.0"))) {
		t.Error("a weight written 50.0 is not up to date with 50")
	}
	if syncset.UpToDate(want, cache.CachedObject(t, cache.VirtualServiceDoc(ours, "60"))) {
		t.Error("a hand-edited spec counts as up to date")
	}
	if syncset.UpToDate(want, cache.CachedObject(t, cache.VirtualServiceDoc(`{"app":"x"}`, "50"))) {
		t.Error("an object without our label counts as up to date")
	}
	want.SetOwnerReferences(nil)
	if syncset.UpToDate(want, cache.CachedObject(t, cache.VirtualServiceDoc(ours, "50"))) {
		t.Error("an object with other owners counts as up to date")
	}
}
