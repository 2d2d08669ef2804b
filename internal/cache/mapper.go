package cache

import (
	"sync"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Mappings is mapper with its answers to RESTMapping for one explicit version remembered: the
// client asks it for every request it builds. controller-runtime's dynamic mapper keeps what it
// learnt too, but answers each question by asking every API group's mapper in turn, allocating a
// no-match error for each (a quarter of a GB at 10,000 SMI objects, docs/benchmarks.md).
//
// Only answers the wrapped mapper gave are kept, for a kind at one named version: that mapping (the
// resource's name and scope) is what the wrapped mapper, which never forgets a version it has
// served until a lookup of the same group fails, would keep answering. A kind not found is asked
// again every time (a CRD installed later is seen as before), and so is a question without a
// version (the preferred version may change).
func Mappings(mapper meta.RESTMapper) meta.RESTMapper {
	return &mappings{RESTMapper: mapper, known: map[schema.GroupVersionKind]meta.RESTMapping{}}
}

type mappings struct {
	meta.RESTMapper
	mu    sync.RWMutex
	known map[schema.GroupVersionKind]meta.RESTMapping
}

// RESTMapping implements meta.RESTMapper. What it returns is the caller's own.
func (m *mappings) RESTMapping(gk schema.GroupKind, versions ...string) (*meta.RESTMapping, error) {
	if len(versions) != 1 || versions[0] == "" {
		return m.RESTMapper.RESTMapping(gk, versions...)
	}
	gvk := gk.WithVersion(versions[0])
	m.mu.RLock()
	known, ok := m.known[gvk]
	m.mu.RUnlock()
	if ok {
		return &known, nil
	}
	mapping, err := m.RESTMapper.RESTMapping(gk, versions...)
	if err != nil || mapping == nil {
		return mapping, err
	}
	m.mu.Lock()
	m.known[gvk] = *mapping
	m.mu.Unlock()
	return mapping, nil
}
