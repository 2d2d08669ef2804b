package syncset

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// Echoes remembers the objects a Syncer applied, as it stored them: by UID, the resourceVersion the
// apply returned and the set's Echo (who wrote it). An informer event for an object at that
// resourceVersion is the echo of that write: the object is exactly what the writer's latest sync
// wanted (exact judged it so), so the writer learns nothing from it and need not run again for it.
// Anyone else's reconcile still does, and so does any other resourceVersion (a change by anyone, the
// object's deletion) or an event that is not a create or update.
//
// A writer's records are its latest sync's only: when a sync ends, what the writer recorded before
// and did not apply again is forgotten (a later sync that read the cache before the object reached
// it, and no longer wants the object, did not prune it: its event must bring the writer back), and
// a sync that failed or was blocked leaves none. While a writer's sync runs, none of its records
// counts (an event arriving meanwhile may be about an object that sync did not see).
//
// It holds the last Size writes (older ones are forgotten: their events are then not echoes, one
// reconcile more). Safe for concurrent use.
type Echoes struct {
	mu   sync.Mutex
	last map[types.UID]echo
	ring []types.UID // UIDs in the order written; the oldest is forgotten first
	next int
	busy map[string]int // writers whose sync is running
}

type echo struct{ resourceVersion, writer string }

// EchoesSize is how many writes NewEchoes remembers: far more than are written between an apply
// and its event reaching the informer, even at 10,000 SMI objects applied at once.
const EchoesSize = 2048

// NewEchoes remembers the last size writes.
func NewEchoes(size int) *Echoes {
	return &Echoes{last: make(map[types.UID]echo, size), ring: make([]types.UID, size), busy: map[string]int{}}
}

// Record notes that writer stored the object uid at resourceVersion.
func (e *Echoes) Record(uid types.UID, resourceVersion, writer string) {
	if e == nil || uid == "" || resourceVersion == "" || writer == "" {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, known := e.last[uid]; !known {
		if old := e.ring[e.next]; old != "" {
			delete(e.last, old)
		}
		e.ring[e.next] = uid
		e.next = (e.next + 1) % len(e.ring)
	}
	e.last[uid] = echo{resourceVersion: resourceVersion, writer: writer}
}

// Writer returns who wrote the object with this UID as it stands at resourceVersion, if this
// process's last write of it stored exactly that.
func (e *Echoes) Writer(uid types.UID, resourceVersion string) (string, bool) {
	if e == nil || uid == "" || resourceVersion == "" {
		return "", false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	w, ok := e.last[uid]
	if !ok || w.resourceVersion != resourceVersion || e.busy[w.writer] > 0 {
		return "", false
	}
	return w.writer, true
}

// wrote reports whether writer's latest sync (or the one running) stored the object uid at
// resourceVersion.
func (e *Echoes) wrote(writer string, uid types.UID, resourceVersion string) bool {
	if e == nil || writer == "" {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	w, ok := e.last[uid]
	return ok && w.writer == writer && w.resourceVersion == resourceVersion
}

// begin marks writer's sync as running.
func (e *Echoes) begin(writer string) {
	if e == nil || writer == "" {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.busy[writer]++
}

// end marks writer's sync as done, keeping of writer's records only those of the objects in kept
// (what that sync applied).
func (e *Echoes) end(writer string, kept map[types.UID]bool) {
	if e == nil || writer == "" {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for uid, w := range e.last {
		if w.writer == writer && !kept[uid] {
			delete(e.last, uid)
		}
	}
	if e.busy[writer]--; e.busy[writer] <= 0 {
		delete(e.busy, writer)
	}
}
