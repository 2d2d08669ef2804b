package syncset

import (
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

// An echo (the watch event of an object exactly as its writer's finished sync applied it) is not
// enqueued; everything else is, and an echo that arrives while its writer's reconcile runs waits
// for its end: that sync may leave the object behind (its cache did not hold it yet: nothing to
// prune), and then only the event brings the writer back to prune it.
func TestEchoIsDroppedOnlyForAFinishedSyncThatAppliedTheObject(t *testing.T) {
	type event struct {
		writer string
		uid    types.UID
		rv     string
	}
	var sent []event
	send := func(e *OwnWrites, ev event) {
		e.Echo(ev.writer, ev.uid, ev.rv, func() { sent = append(sent, ev) })
	}
	expect := func(step string, want ...event) {
		t.Helper()
		if len(sent) != len(want) {
			t.Fatalf("%s: enqueued %v, want %v", step, sent, want)
		}
		for i := range want {
			if sent[i] != want[i] {
				t.Fatalf("%s: enqueued %v, want %v", step, sent, want)
			}
		}
		sent = nil
	}

	e := NewOwnWrites(8)
	done := e.Begin("w")
	e.Record("x", "2", "w")
	e.end("w", map[types.UID]bool{"x": true})
	done()
	if got := e.Writer("x", "2"); got != "w" {
		t.Fatalf("Writer(x@2) = %q, want w", got)
	}
	send(e, event{"w", "x", "2"})
	expect("x@2 as w's finished sync applied it")
	send(e, event{"w", "x", "3"}) // someone wrote it since
	send(e, event{"v", "x", "2"}) // another writer's request
	send(e, event{"w", "y", "2"}) // not w's
	expect("other versions, writers, objects", event{"w", "x", "3"}, event{"v", "x", "2"}, event{"w", "y", "2"})
	if got := e.Writer("x", "3"); got != "" {
		t.Errorf("Writer(x@3) = %q, want none", got)
	}

	// w runs again; x's echo arrives meanwhile and waits. The sync applies x again: dropped at the end.
	done = e.Begin("w")
	send(e, event{"w", "x", "2"})
	e.Record("x", "2", "w")
	e.end("w", map[types.UID]bool{"x": true})
	expect("while w runs")
	done()
	expect("w applied x@2 again")

	// w runs; x's echo arrives; this sync does not hold x (its cache had not seen it): the record
	// goes at the sync's end, and the echo is delivered then, so that x is pruned.
	done = e.Begin("w")
	send(e, event{"w", "x", "2"})
	expect("while w runs")
	e.end("w", map[types.UID]bool{})
	done()
	expect("w's sync left x behind", event{"w", "x", "2"})

	// A failed or blocked sync keeps no record: its objects' echoes are delivered.
	e.Record("z", "5", "w")
	e.end("w", nil)
	send(e, event{"w", "z", "5"})
	expect("after a failed sync", event{"w", "z", "5"})

	// Nested Begin (not done by controller-runtime, which runs one reconcile per request at a
	// time): decided at the last end only.
	e.Record("z", "6", "w")
	d1, d2 := e.Begin("w"), e.Begin("w")
	send(e, event{"w", "z", "7"})
	d1()
	expect("one of two still running")
	d2()
	expect("both ended", event{"w", "z", "7"})

	// A write the next sync would not leave alone (an admission step stripped the set's label, it
	// is being deleted, its metadata is not as desired) is recorded as the set's own (applyOwn) but
	// its echo is delivered: the next sync reports it.
	e.record("s", "8", "w", false)
	if !e.wrote("w", "s", "8") {
		t.Error("an unsettled write is not the writer's own")
	}
	send(e, event{"w", "s", "8"})
	expect("an unsettled write", event{"w", "s", "8"})

	// Without OwnWrites everything is delivered.
	var none *OwnWrites
	none.Begin("w")()
	send(none, event{"w", "x", "2"})
	expect("nil OwnWrites", event{"w", "x", "2"})
	if none.Writer("x", "2") != "" {
		t.Error("nil OwnWrites named a writer")
	}
}
