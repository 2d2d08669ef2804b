package cache_test

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/smi2istio/smi2istio/internal/cache"
)

// countingMapper counts the RESTMapping questions that reach it.
type countingMapper struct {
	*meta.DefaultRESTMapper
	asked int
}

func (c *countingMapper) RESTMapping(gk schema.GroupKind, versions ...string) (*meta.RESTMapping, error) {
	c.asked++
	return c.DefaultRESTMapper.RESTMapping(gk, versions...)
}

func TestMappingsRemembersFoundKindsAtOneVersion(t *testing.T) {
	ap := schema.GroupVersionKind{Group: "security.istio.io", Version: "v1", Kind: "AuthorizationPolicy"}
	pa := schema.GroupVersionKind{Group: "security.istio.io", Version: "v1", Kind: "PeerAuthentication"}
	under := &countingMapper{DefaultRESTMapper: meta.NewDefaultRESTMapper([]schema.GroupVersion{ap.GroupVersion()})}
	under.Add(ap, meta.RESTScopeNamespace)
	m := cache.Mappings(under)

	first, err := m.RESTMapping(ap.GroupKind(), ap.Version)
	if err != nil {
		t.Fatal(err)
	}
	if first.Resource.Resource != "authorizationpolicies" || first.Scope.Name() != meta.RESTScopeNameNamespace {
		t.Fatalf("mapping %+v: want authorizationpolicies, namespaced", first)
	}
	first.Resource.Resource = "changed by the caller"
	again, err := m.RESTMapping(ap.GroupKind(), ap.Version)
	if err != nil {
		t.Fatal(err)
	}
	if under.asked != 1 {
		t.Errorf("the wrapped mapper was asked %d times for one kind and version, want 1", under.asked)
	}
	if again.Resource.Resource != "authorizationpolicies" {
		t.Errorf("a caller's change to its mapping reached the next caller: %q", again.Resource.Resource)
	}

	// A kind not found is asked again: served later, it is found.
	if _, err := m.RESTMapping(pa.GroupKind(), pa.Version); !meta.IsNoMatchError(err) {
		t.Fatalf("PeerAuthentication before it is served: %v, want no match", err)
	}
	under.Add(pa, meta.RESTScopeNamespace)
	if got, err := m.RESTMapping(pa.GroupKind(), pa.Version); err != nil || got.Resource.Resource != "peerauthentications" {
		t.Fatalf("PeerAuthentication once served: %v, %v", got, err)
	}

	// Without one named version (the preferred version may change), every question is passed on.
	before := under.asked
	for range 2 {
		if _, err := m.RESTMapping(ap.GroupKind()); err != nil {
			t.Fatal(err)
		}
	}
	if under.asked != before+2 {
		t.Errorf("questions without a version: the wrapped mapper was asked %d times, want 2", under.asked-before)
	}
}
