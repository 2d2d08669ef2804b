package controllers

import (
	"sync"

	accessv1alpha2 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/access/v1alpha2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/internal/smi/normalize"
)

// targetMemo remembers the TrafficTargets decoded last for the index functions and event handlers,
// by UID and resourceVersion (which name one content): one informer event decodes the same object
// for each index, for the old object and the new one, and for the handler. What it returns is
// shared: read only. Objects without a UID or resourceVersion (not from the apiserver) are
// decoded every time.
type targetMemo struct {
	mu   sync.Mutex
	m    map[string]targetRead
	ring []string // keys in insertion order; the oldest is forgotten first
	next int
}

type targetRead struct {
	tt  *accessv1alpha2.TrafficTarget
	err error
}

func newTargetMemo(size int) *targetMemo {
	return &targetMemo{m: make(map[string]targetRead, size), ring: make([]string, size)}
}

// sharedTargets serves the TrafficTarget indexes and event handlers.
var sharedTargets = newTargetMemo(256)

// read is normalize.ReadTrafficTarget(o), remembered.
func (m *targetMemo) read(o client.Object) (*accessv1alpha2.TrafficTarget, error) {
	uid, rv := o.GetUID(), o.GetResourceVersion()
	if uid == "" || rv == "" {
		return normalize.ReadTrafficTarget(o)
	}
	key := string(uid) + "/" + rv
	m.mu.Lock()
	r, ok := m.m[key]
	m.mu.Unlock()
	if ok {
		return r.tt, r.err
	}
	tt, err := normalize.ReadTrafficTarget(o)
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.m[key]; !ok {
		if old := m.ring[m.next]; old != "" {
			delete(m.m, old)
		}
		m.ring[m.next] = key
		m.next = (m.next + 1) % len(m.ring)
		m.m[key] = targetRead{tt: tt, err: err}
	}
	return tt, err
}
