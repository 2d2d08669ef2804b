package syncset

import (
	"slices"
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// OwnWrites remembers what each set's latest sync applied, as the apiserver stored it: by UID, the
// resourceVersion the apply returned and the set's Writer. A later sync of the set that finds such
// an object on the apiserver but not yet in the cache (the cache lags its own writes) knows it for
// its own, exactly as it left it (nobody has written it since: same UID and resourceVersion), and
// updates it instead of refusing it as someone else's (ErrExists). Labels and owner references
// prove nothing (anyone can write them); this record does.
//
// A set's records are its latest sync's only: when a sync ends, what the set recorded before and did
// not apply again is forgotten, and a sync that failed or was blocked leaves none. It holds the last
// size writes (older ones are forgotten: ErrExists as before, until the cache catches up). Safe for
// concurrent use.
type OwnWrites struct {
	mu       sync.Mutex
	last     map[types.UID]write
	byWriter map[string][]types.UID // the UIDs each writer has records of
	ring     []types.UID            // UIDs in the order written; the oldest is forgotten first
	next     int
	running  map[string]*running // writers whose reconcile runs (Begin), with the echoes to decide
}

type running struct {
	n       int
	pending []echo
}

type echo struct {
	uid             types.UID
	resourceVersion string
	enqueue         func()
}

type write struct {
	resourceVersion, writer string
	settled                 bool // as the writer's next Diff would leave it (its echo may be dropped)
	slot                    int  // its place in the ring
}

// OwnWritesSize is how many writes NewOwnWrites remembers: far more than are written while the
// cache catches up, even at 10,000 SMI objects applied at once.
const OwnWritesSize = 2048

// NewOwnWrites remembers the last size writes.
func NewOwnWrites(size int) *OwnWrites {
	return &OwnWrites{last: make(map[types.UID]write, size), byWriter: map[string][]types.UID{}, ring: make([]types.UID, size)}
}

// Record notes that writer stored the object uid at resourceVersion, as its next sync would leave it.
func (e *OwnWrites) Record(uid types.UID, resourceVersion, writer string) {
	e.record(uid, resourceVersion, writer, true)
}

// record notes that writer stored the object uid at resourceVersion; settled: as its next sync
// would leave it (Set.settled), else its echo is delivered all the same.
func (e *OwnWrites) record(uid types.UID, resourceVersion, writer string, settled bool) {
	if e == nil || uid == "" || resourceVersion == "" || writer == "" {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if w, known := e.last[uid]; known { // written again: it keeps its place in the ring
		e.forget(uid, w.writer)
		e.last[uid] = write{resourceVersion: resourceVersion, writer: writer, settled: settled, slot: w.slot}
		e.byWriter[writer] = append(e.byWriter[writer], uid)
		return
	}
	if old := e.ring[e.next]; old != "" {
		if w, ok := e.last[old]; ok && w.slot == e.next { // not a record made since in another slot
			e.forget(old, w.writer)
		}
	}
	e.ring[e.next] = uid
	e.last[uid] = write{resourceVersion: resourceVersion, writer: writer, settled: settled, slot: e.next}
	e.byWriter[writer] = append(e.byWriter[writer], uid)
	e.next = (e.next + 1) % len(e.ring)
}

// forget drops the record of uid, writer's.
func (e *OwnWrites) forget(uid types.UID, writer string) {
	delete(e.last, uid)
	uids := slices.DeleteFunc(e.byWriter[writer], func(u types.UID) bool { return u == uid })
	if len(uids) == 0 {
		delete(e.byWriter, writer)
	} else {
		e.byWriter[writer] = uids
	}
}

// wrote reports whether writer's latest sync (or the one running) stored the object uid at
// resourceVersion.
func (e *OwnWrites) wrote(writer string, uid types.UID, resourceVersion string) bool {
	if e == nil {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.matches(writer, uid, resourceVersion)
}

// Begin marks writer's reconcile as running until done is called (a reconcile calls it before its
// first read). Echoes of writer's objects that arrive meanwhile are decided when it is done.
func (e *OwnWrites) Begin(writer string) (done func()) {
	if e == nil || writer == "" {
		return func() {}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.running == nil {
		e.running = map[string]*running{}
	}
	r := e.running[writer]
	if r == nil {
		r = &running{}
		e.running[writer] = r
	}
	r.n++
	return func() {
		e.mu.Lock()
		var send []func()
		if r.n--; r.n <= 0 {
			delete(e.running, writer)
			for _, p := range r.pending {
				if !e.echoes(writer, p.uid, p.resourceVersion) {
					send = append(send, p.enqueue)
				}
			}
		}
		e.mu.Unlock()
		for _, f := range send {
			f()
		}
	}
}

// Writer names the writer whose latest sync (or the one running) stored the object uid at
// resourceVersion, or "" when none did (or anyone wrote it since).
func (e *OwnWrites) Writer(uid types.UID, resourceVersion string) string {
	if e == nil || uid == "" || resourceVersion == "" {
		return ""
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if w, ok := e.last[uid]; ok && w.resourceVersion == resourceVersion {
		return w.writer
	}
	return ""
}

// Echo decides whether the watch event of object uid at resourceVersion brings back writer's
// reconcile: enqueue is called unless writer's latest sync, finished, applied the object exactly as
// it stands (its record holds that resourceVersion: nobody wrote it since, and the sync neither
// failed nor left it behind) and as its next sync would leave it (settled: the set's own labels
// and controller, not being deleted, its metadata as desired — an admission step that strips a
// label makes the next sync report a Conflict, so that echo is delivered). While writer's reconcile runs the decision waits for its end: its
// sync may be about to leave behind, unpruned, an object its cache did not hold yet, whose record
// the end of the sync drops.
func (e *OwnWrites) Echo(writer string, uid types.UID, resourceVersion string, enqueue func()) {
	if e == nil {
		enqueue()
		return
	}
	e.mu.Lock()
	if r := e.running[writer]; r != nil {
		r.pending = append(r.pending, echo{uid: uid, resourceVersion: resourceVersion, enqueue: enqueue})
		e.mu.Unlock()
		return
	}
	echoed := e.echoes(writer, uid, resourceVersion)
	e.mu.Unlock()
	if !echoed {
		enqueue()
	}
}

// echoes: writer's record of uid holds resourceVersion and the write was settled. Called with mu held.
func (e *OwnWrites) echoes(writer string, uid types.UID, resourceVersion string) bool {
	return e.matches(writer, uid, resourceVersion) && e.last[uid].settled
}

// matches reports whether writer's record of uid holds resourceVersion. Called with mu held.
func (e *OwnWrites) matches(writer string, uid types.UID, resourceVersion string) bool {
	w, ok := e.last[uid]
	return ok && writer != "" && resourceVersion != "" && w.writer == writer && w.resourceVersion == resourceVersion
}

// end keeps of writer's records only those of the objects in kept (what its sync just applied).
func (e *OwnWrites) end(writer string, kept map[types.UID]bool) {
	if e == nil || writer == "" {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, uid := range slices.Clone(e.byWriter[writer]) {
		if !kept[uid] {
			e.forget(uid, writer)
		}
	}
}
