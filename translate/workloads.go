package translate

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// VolatileLabels change with every rollout or pod and never select a workload.
var VolatileLabels = []string{"pod-template-hash", "controller-revision-hash", "statefulset.kubernetes.io/pod-name", "pod-template-generation"}

// Workload is a pod template (Deployment, StatefulSet, DaemonSet, ...) or a bare pod in a namespace.
type Workload struct {
	// Name identifies it in reports, e.g. "Deployment/bookstore".
	Name           string
	ServiceAccount string
	Labels         map[string]string
}

// Selector is the label selector of the workloads of one ServiceAccount that share it.
type Selector struct {
	Labels    map[string]string
	Workloads []string
}

// Key is a stable, short identity of the selector, used in output names.
func (s Selector) Key() string {
	keys := make([]string, 0, len(s.Labels))
	for k := range s.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := uint32(2166136261) // FNV-1a
	for _, k := range keys {
		for _, b := range []byte(k + "=" + s.Labels[k] + ";") {
			h = (h ^ uint32(b)) * 16777619
		}
	}
	return fmt.Sprintf("%08x", h)
}

func (s Selector) matches(labels map[string]string) bool {
	for k, v := range s.Labels {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// ResolveSelectors finds label selectors for the workloads of a ServiceAccount among the
// namespace's workloads. A workload whose stable labels also select a workload of another
// ServiceAccount has no precise selector: it is reported and gets nothing (fail closed).
func ResolveSelectors(serviceAccount string, namespaceWorkloads []Workload) ([]Selector, []Finding) {
	var out []Selector
	var findings []Finding
	byKey := map[string]int{}
	var own []Workload
	for _, w := range namespaceWorkloads {
		if w.ServiceAccount == serviceAccount {
			own = append(own, w)
		}
	}
	sort.SliceStable(own, func(i, j int) bool { return own[i].Name < own[j].Name })
	// The workloads of one ServiceAccount mostly share a few label sets (a namespace lists every
	// pod): what else a label set selects is looked for once per set.
	clashes := map[string][]string{}
	for _, w := range own {
		sel := Selector{Labels: StableLabels(w.Labels)}
		if len(sel.Labels) == 0 {
			findings = append(findings, finding("spec.destination", "NoPreciseSelector",
				"%s runs as ServiceAccount %s but has no stable labels to select it by: nothing is allowed to it", w.Name, serviceAccount))
			continue
		}
		exact := labelsString(sel.Labels)
		clash, seen := clashes[exact]
		if !seen {
			var others []Workload
			for _, other := range namespaceWorkloads {
				if other.ServiceAccount != serviceAccount && sel.matches(other.Labels) {
					others = append(others, other)
				}
			}
			sort.SliceStable(others, func(i, j int) bool { return others[i].Name < others[j].Name })
			for _, other := range others {
				clash = append(clash, other.Name+" (ServiceAccount "+other.ServiceAccount+")")
			}
			clashes[exact] = clash
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

// labelsString is labels in one canonical string: sorted pairs, each key and value prefixed by its
// length, so that two different label sets never give the same string (whatever they hold).
func labelsString(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(strconv.Itoa(len(k)))
		b.WriteByte(':')
		b.WriteString(k)
		b.WriteString(strconv.Itoa(len(labels[k])))
		b.WriteByte(':')
		b.WriteString(labels[k])
	}
	return b.String()
}

// StableLabels is a copy of labels without the VolatileLabels.
func StableLabels(labels map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range labels {
		out[k] = v
	}
	for _, k := range VolatileLabels {
		delete(out, k)
	}
	return out
}
