package main

import (
	"context"
	"fmt"
	"sort"
	"strings"

	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// operatorEvents lists the Events the operator wrote in the benchmark's namespaces (not the
// harness's: eventsAlone deletes those, and they name another reporting instance).
func operatorEvents(ctx context.Context, c client.Client, s size) ([]eventsv1.Event, error) {
	var out []eventsv1.Event
	for i := range s.namespaces() {
		var list eventsv1.EventList
		if err := c.List(ctx, &list, client.InNamespace(nsName(i))); err != nil {
			return nil, fmt.Errorf("list the Events in %s: %w", nsName(i), err)
		}
		for _, ev := range list.Items {
			if ev.ReportingController == "smi2istio" && ev.ReportingInstance != benchReportingInstance {
				out = append(out, ev)
			}
		}
	}
	return out, nil
}

// summarizeEvents groups Events by type, reason and the kind they regard, with the count and
// up to `examples` of them (object and note) per group, one line per group, sorted.
func summarizeEvents(evs []eventsv1.Event, examples int) []string {
	type group struct {
		n        int
		examples []string
	}
	groups := map[string]*group{}
	for _, ev := range evs {
		key := fmt.Sprintf("%s %s on %s", ev.Type, ev.Reason, ev.Regarding.Kind)
		g := groups[key]
		if g == nil {
			g = &group{}
			groups[key] = g
		}
		g.n++
		if len(g.examples) < examples {
			note := ev.Note
			if len(note) > 160 {
				note = note[:160] + "…"
			}
			g.examples = append(g.examples, fmt.Sprintf("%s/%s: %q", ev.Regarding.Namespace, ev.Regarding.Name, note))
		}
	}
	keys := make([]string, 0, len(groups))
	for key := range groups {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	lines := make([]string, 0, len(keys))
	for _, key := range keys {
		g := groups[key]
		lines = append(lines, fmt.Sprintf("%d × %s (%s)", g.n, key, strings.Join(g.examples, "; ")))
	}
	return lines
}
