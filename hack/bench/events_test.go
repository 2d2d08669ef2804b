package main

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
)

func TestSummarizeEvents(t *testing.T) {
	ev := func(typ, reason, kind, name, note string) eventsv1.Event {
		return eventsv1.Event{Type: typ, Reason: reason, Note: note,
			Regarding: corev1.ObjectReference{Kind: kind, Namespace: "bench-000", Name: name}}
	}
	evs := []eventsv1.Event{
		ev("Warning", "NotReady", "TrafficTarget", "a", "waiting for HTTPRouteGroup bench-000/r"),
		ev("Normal", "Applied", "TrafficSplit", "s", "ok"),
		ev("Warning", "NotReady", "TrafficTarget", "b", strings.Repeat("x", 200)),
		ev("Warning", "NotReady", "TrafficTarget", "c", "third"),
	}
	got := summarizeEvents(evs, 2)
	want := []string{
		`1 × Normal Applied on TrafficSplit (bench-000/s: "ok")`,
		fmt.Sprintf(`3 × Warning NotReady on TrafficTarget (bench-000/a: "waiting for HTTPRouteGroup bench-000/r"; bench-000/b: %q)`, strings.Repeat("x", 160)+"…"),
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("summarizeEvents:\n got %q\nwant %q", got, want)
	}
	if got := summarizeEvents(nil, 2); len(got) != 0 {
		t.Errorf("no Events: got %q", got)
	}
}
