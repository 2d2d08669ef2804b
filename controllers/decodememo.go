package controllers

import (
	"sync"

	accessv1alpha2 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/access/v1alpha2"
	splitv1alpha4 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/split/v1alpha4"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/internal/smi/normalize"
)

// decodeMemo remembers the SMI objects decoded last for the index functions and event handlers,
// by UID and resourceVersion (which name one content): one informer event decodes the same object
// for each index, for the old object and the new one, and for the handler. What it returns is
// shared: read only. Objects without a UID or resourceVersion (not from the apiserver) are
// decoded every time.
type decodeMemo[T any] struct {
	decode func(normalize.Object) (T, error)
	mu     sync.Mutex
	m      map[string]decoded[T]
	ring   []string // keys in insertion order; the oldest is forgotten first
	next   int
}

type decoded[T any] struct {
	v   T
	err error
}

func newDecodeMemo[T any](size int, decode func(normalize.Object) (T, error)) *decodeMemo[T] {
	return &decodeMemo[T]{decode: decode, m: make(map[string]decoded[T], size), ring: make([]string, size)}
}

// sharedTargets serves the TrafficTarget indexes and event handlers, sharedSplits the
// TrafficSplit ones. Reconcilers decode for themselves: what they hold they may change.
var (
	sharedTargets = newDecodeMemo[*accessv1alpha2.TrafficTarget](256, normalize.ReadTrafficTarget)
	sharedSplits  = newDecodeMemo[*splitv1alpha4.TrafficSplit](256, normalize.ReadTrafficSplit)
)

// read is the memo's decode(o), remembered.
func (m *decodeMemo[T]) read(o client.Object) (T, error) {
	uid, rv := o.GetUID(), o.GetResourceVersion()
	if uid == "" || rv == "" {
		return m.decode(o)
	}
	key := string(uid) + "/" + rv
	m.mu.Lock()
	r, ok := m.m[key]
	m.mu.Unlock()
	if ok {
		return r.v, r.err
	}
	v, err := m.decode(o)
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.m[key]; !ok {
		if old := m.ring[m.next]; old != "" {
			delete(m.m, old)
		}
		m.ring[m.next] = key
		m.next = (m.next + 1) % len(m.ring)
		m.m[key] = decoded[T]{v: v, err: err}
	}
	return v, err
}
