package syncset

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Red team (helper-44, against 89ef7ad). Writers run (Begin … Record … end … done) while their echoes
// and other writers' arrive from other goroutines: nothing deadlocks (enqueue is called with mu
// free: here it takes a lock a writer holds around Begin), every echo is decided exactly once, no
// echo waits once every writer is done, and an echo is dropped only when its writer's latest
// finished sync recorded exactly that version.
func TestEchoRedTeamConcurrentWritersNeitherLoseNorLeakEchoes(t *testing.T) {
	e := NewOwnWrites(64)
	var queueMu sync.Mutex // the queue's lock: enqueue takes it; writers take it around Begin/done
	var decided, enqueued atomic.Int64
	var wrong atomic.Int64
	const writers, rounds = 4, 300
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			name := fmt.Sprintf("w%d", w)
			for i := range rounds {
				queueMu.Lock()
				done := e.Begin(name)
				queueMu.Unlock()
				uid := types.UID(fmt.Sprintf("%s-%d", name, i%5))
				rv := fmt.Sprint(i)
				e.Record(uid, rv, name)
				kept := map[types.UID]bool{uid: i%3 != 0} // every third sync leaves its object behind
				e.end(name, kept)
				done()
			}
		}(w)
	}
	var echoes sync.WaitGroup
	for w := range writers {
		echoes.Add(1)
		go func(w int) {
			defer echoes.Done()
			name := fmt.Sprintf("w%d", w)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				uid := types.UID(fmt.Sprintf("%s-%d", name, i%5))
				rv := fmt.Sprint(i % rounds)
				var once atomic.Int32
				if e.Writer(uid, rv) == "" {
					continue // not an echo: delivered as is by echoQueue
				}
				decided.Add(1)
				e.Echo(name, uid, rv, func() {
					if once.Add(1) > 1 {
						wrong.Add(1)
					}
					queueMu.Lock()
					enqueued.Add(1)
					queueMu.Unlock()
				})
			}
		}(w)
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(60 * time.Second):
		t.Fatal("DEADLOCK: writers did not finish")
	}
	close(stop)
	echoes.Wait()
	if wrong.Load() > 0 {
		t.Errorf("%d echoes enqueued more than once", wrong.Load())
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.running) != 0 {
		t.Errorf("LEAK: %d writers still marked running, with echoes waiting", len(e.running))
	}
	// Each writer's records: only its latest sync's (at most one object here).
	for w, uids := range e.byWriter {
		if len(uids) > 1 {
			t.Errorf("writer %s keeps %d records after its last sync: %v", w, len(uids), uids)
		}
	}
	t.Logf("%d echoes decided, %d enqueued", decided.Load(), enqueued.Load())
}

// An echo that arrives while its writer runs, for a version the writer's previous (finished) sync
// recorded and the running sync applies again unchanged (a no-op apply returns the same version):
// dropped at the end. The same echo, when the running sync fails: delivered.
func TestEchoRedTeamPendingEchoFollowsTheRunningSyncsOutcome(t *testing.T) {
	e := NewOwnWrites(8)
	var sent []string
	echo := func(uid types.UID, rv string) {
		e.Echo("w", uid, rv, func() { sent = append(sent, string(uid)+"@"+rv) })
	}
	e.Record("x", "5", "w")
	e.end("w", map[types.UID]bool{"x": true})

	done := e.Begin("w")
	echo("x", "5")
	e.Record("x", "5", "w") // no-op apply
	e.end("w", map[types.UID]bool{"x": true})
	done()
	if len(sent) != 0 {
		t.Fatalf("no-op re-apply: enqueued %v", sent)
	}

	done = e.Begin("w")
	echo("x", "5")
	e.Record("x", "5", "w")
	e.end("w", nil) // the sync failed after applying x
	done()
	if len(sent) != 1 || sent[0] != "x@5" {
		t.Fatalf("failed sync: enqueued %v, want x@5", sent)
	}
}
