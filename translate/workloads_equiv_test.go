package translate

import (
	"math/rand"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// resolveSelectorsOld is the REFERENCE: ResolveSelectors as it was before commit 41b60ac (which
// memoizes what a label set also selects), copied verbatim. TestResolveSelectorsEquivalent checks
// the new implementation against it.
func resolveSelectorsOld(serviceAccount string, namespaceWorkloads []Workload) ([]Selector, []Finding) {
	var out []Selector
	var findings []Finding
	byKey := map[string]int{}
	ws := append([]Workload(nil), namespaceWorkloads...)
	sort.SliceStable(ws, func(i, j int) bool { return ws[i].Name < ws[j].Name })
	for _, w := range ws {
		if w.ServiceAccount != serviceAccount {
			continue
		}
		sel := Selector{Labels: StableLabels(w.Labels)}
		if len(sel.Labels) == 0 {
			findings = append(findings, finding("spec.destination", "NoPreciseSelector",
				"%s runs as ServiceAccount %s but has no stable labels to select it by: nothing is allowed to it", w.Name, serviceAccount))
			continue
		}
		var clash []string
		for _, other := range ws {
			if other.ServiceAccount != serviceAccount && sel.matches(other.Labels) {
				clash = append(clash, other.Name+" (ServiceAccount "+other.ServiceAccount+")")
			}
		}
		if len(clash) > 0 {
			findings = append(findings, finding("spec.destination", "NoPreciseSelector",
				"the labels of %s (ServiceAccount %s) also select %s: nothing is allowed to it", w.Name, serviceAccount, strings.Join(clash, ", ")))
			continue
		}
		key := sel.Key()
		if i, ok := byKey[key]; ok {
			out[i].Workloads = append(out[i].Workloads, w.Name)
			continue
		}
		sel.Workloads = []string{w.Name}
		byKey[key] = len(out)
		out = append(out, sel)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out, findings
}

// Small pools so that names repeat, label sets are shared, and the sets of other ServiceAccounts are
// supersets or subsets of each other. Keys may hold ';' but not '=' (Kubernetes allows neither);
// values may hold both.
var (
	equivNames  = []string{"Deployment/a", "Deployment/a", "Pod/a", "Pod/a-1", "Pod/a-10", "Pod/a-2", "pod/A", "Deployment/b", "", " ", "Z", "a", "Ä", "Pod/a\x00", "StatefulSet/web-0"}
	equivSAs    = []string{"web", "web", "api", "default", "", "WEB"}
	equivKeys   = []string{"app", "version", "a", "a;b", ";", "x.io/name", "", "pod-template-hash", "controller-revision-hash", "statefulset.kubernetes.io/pod-name", "pod-template-generation", "app=web", "a=b"}
	equivValues = []string{"", "web", "v1", "v2", "b=c", "=", ";", "b;c=d", "a=b;", "web ", "web\x00version=v1", "web=v1", "3:a"}
)

func randomWorkloads(r *rand.Rand) []Workload {
	n := r.Intn(9)
	ws := make([]Workload, 0, n)
	var shared []map[string]string
	for range n {
		var labels map[string]string
		switch k := r.Intn(6); {
		case k == 0:
			labels = nil
		case k == 1 && len(shared) > 0:
			// the same set as another workload (maybe of another ServiceAccount)
			labels = shared[r.Intn(len(shared))]
		case k == 2 && len(shared) > 0:
			// a superset or subset of another workload's set
			base := shared[r.Intn(len(shared))]
			labels = map[string]string{}
			for key, v := range base {
				if r.Intn(3) > 0 {
					labels[key] = v
				}
			}
			for range r.Intn(3) {
				labels[equivKeys[r.Intn(len(equivKeys))]] = equivValues[r.Intn(len(equivValues))]
			}
		default:
			labels = map[string]string{}
			for range r.Intn(4) {
				labels[equivKeys[r.Intn(len(equivKeys))]] = equivValues[r.Intn(len(equivValues))]
			}
		}
		if labels != nil {
			shared = append(shared, labels)
		}
		ws = append(ws, Workload{
			Name:           equivNames[r.Intn(len(equivNames))],
			ServiceAccount: equivSAs[r.Intn(len(equivSAs))],
			Labels:         labels,
		})
	}
	return ws
}

func TestResolveSelectorsEquivalent(t *testing.T) {
	seed := int64(20261201)
	r := rand.New(rand.NewSource(seed))
	selectorsSeen, findingsSeen, clashesSeen := 0, 0, 0
	for i := range 200000 {
		ws := randomWorkloads(r)
		sa := equivSAs[r.Intn(len(equivSAs))]
		wantSel, wantFind := resolveSelectorsOld(sa, ws)
		gotSel, gotFind := ResolveSelectors(sa, ws)
		if !reflect.DeepEqual(gotSel, wantSel) || !reflect.DeepEqual(gotFind, wantFind) {
			t.Fatalf("case %d (seed %d): ResolveSelectors(%q, %#v)\n got %#v %#v\nwant %#v %#v", i, seed, sa, ws, gotSel, gotFind, wantSel, wantFind)
		}
		selectorsSeen += len(wantSel)
		findingsSeen += len(wantFind)
		for _, f := range wantFind {
			if strings.Contains(f.Message, "also select") {
				clashesSeen++
			}
		}
	}
	// The generator must reach every branch, or the equivalence says nothing.
	if selectorsSeen == 0 || findingsSeen == 0 || clashesSeen == 0 {
		t.Fatalf("generator too narrow: %d selectors, %d findings, %d clashes", selectorsSeen, findingsSeen, clashesSeen)
	}
	t.Logf("%d selectors, %d findings, %d clashes", selectorsSeen, findingsSeen, clashesSeen)
}
