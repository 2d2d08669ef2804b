// Package offline translates a set of manifests without a cluster: it builds the same translate
// inputs the controllers fetch, and renders the Istio YAML plus a fidelity report (the `translate`
// command and the golden tests).
package offline

import (
	"bytes"
	"errors"
	"fmt"
	"sort"

	accessv1alpha2 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/access/v1alpha2"
	splitv1alpha4 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/split/v1alpha4"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/smi2istio/smi2istio/internal/manifests"
	"github.com/smi2istio/smi2istio/internal/smi/normalize"
	"github.com/smi2istio/smi2istio/translate"
)

// Set is the translatable content of some manifests, by namespace.
type Set struct {
	Services    map[string]map[string]*corev1.Service
	RouteGroups map[string]map[string]*normalize.HTTPRouteGroup
	// RouteGroupErrors: route groups that cannot be read; the objects using them are not accepted.
	RouteGroupErrors map[string]map[string]*normalize.FieldError
	PortRoutes       map[string]map[string]*normalize.PortRoute // "TCPRoute/<name>", "UDPRoute/<name>"
	Workloads        map[string][]translate.Workload
	Splits           []*splitv1alpha4.TrafficSplit
	Targets          []*accessv1alpha2.TrafficTarget
}

// Outcome is the translation of one SMI object.
type Outcome struct {
	// Source names the object: "TrafficSplit <namespace>/<name>".
	Source string
	Split  *translate.SplitResult
	Target *translate.TargetResult
	// Findings reported for the object besides its own result (e.g. about its destination's workloads).
	Findings []translate.Finding
	// Extra objects that belong to no single SMI object (EnvoyFilters of a destination).
	Extra []runtime.Object
	Err   error
}

// Decode splits multi-document YAML (or JSON) into objects.
func Decode(data []byte) ([]*unstructured.Unstructured, error) { return manifests.Decode(data) }

func describe(u *unstructured.Unstructured) string {
	return fmt.Sprintf("%s %s/%s", u.GetKind(), u.GetNamespace(), u.GetName())
}

// Load reads the objects translation needs; other kinds are ignored. Objects without a namespace
// are in "default", as kubectl would put them; a later document for the same object wins.
func Load(objs []*unstructured.Unstructured) (*Set, error) {
	s := &Set{
		Services:         map[string]map[string]*corev1.Service{},
		RouteGroups:      map[string]map[string]*normalize.HTTPRouteGroup{},
		RouteGroupErrors: map[string]map[string]*normalize.FieldError{},
		PortRoutes:       map[string]map[string]*normalize.PortRoute{},
		Workloads:        map[string][]translate.Workload{},
	}
	splits := map[string]int{} // namespace/name -> index in s.Splits
	targets := map[string]int{}
	for _, u := range objs {
		if u.GetNamespace() == "" {
			u = u.DeepCopy()
			u.SetNamespace("default")
		}
		ns := u.GetNamespace()
		gv := u.GroupVersionKind()
		switch {
		case gv.Group == "" && gv.Kind == "Service":
			svc := &corev1.Service{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, svc); err != nil {
				return nil, fmt.Errorf("%s: %w", describe(u), err)
			}
			if s.Services[ns] == nil {
				s.Services[ns] = map[string]*corev1.Service{}
			}
			s.Services[ns][svc.Name] = svc
		case gv.Group == "specs.smi-spec.io" && gv.Kind == "HTTPRouteGroup":
			g, err := normalize.ReadHTTPRouteGroup(u)
			var fe *normalize.FieldError
			if errors.As(err, &fe) {
				if s.RouteGroupErrors[ns] == nil {
					s.RouteGroupErrors[ns] = map[string]*normalize.FieldError{}
				}
				s.RouteGroupErrors[ns][u.GetName()] = fe
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", describe(u), err)
			}
			if s.RouteGroups[ns] == nil {
				s.RouteGroups[ns] = map[string]*normalize.HTTPRouteGroup{}
			}
			s.RouteGroups[ns][g.Name] = g
		case gv.Group == "specs.smi-spec.io" && (gv.Kind == "TCPRoute" || gv.Kind == "UDPRoute"):
			r, err := normalize.ReadPortRoute(u)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", describe(u), err)
			}
			if s.PortRoutes[ns] == nil {
				s.PortRoutes[ns] = map[string]*normalize.PortRoute{}
			}
			s.PortRoutes[ns][r.Kind+"/"+r.Name] = r
		case gv.Group == "access.smi-spec.io" && gv.Kind == "TrafficTarget":
			tt, err := normalize.ReadTrafficTarget(u)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", describe(u), err)
			}
			key := tt.Namespace + "/" + tt.Name
			if i, ok := targets[key]; ok {
				s.Targets[i] = tt
				continue
			}
			targets[key] = len(s.Targets)
			s.Targets = append(s.Targets, tt)
		case isWorkload(gv.Group, gv.Kind):
			w, err := workloadOf(u)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", describe(u), err)
			}
			s.Workloads[ns] = replaceWorkload(s.Workloads[ns], w)
		case gv.Group == "split.smi-spec.io" && gv.Kind == "TrafficSplit":
			ts, err := normalize.ReadTrafficSplit(u)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", describe(u), err)
			}
			// A later document for the same object replaces the earlier one, as with kubectl apply.
			key := ts.Namespace + "/" + ts.Name
			if i, ok := splits[key]; ok {
				s.Splits[i] = ts
				continue
			}
			splits[key] = len(s.Splits)
			s.Splits = append(s.Splits, ts)
		}
	}
	sort.SliceStable(s.Splits, func(i, j int) bool {
		if s.Splits[i].Namespace != s.Splits[j].Namespace {
			return s.Splits[i].Namespace < s.Splits[j].Namespace
		}
		return s.Splits[i].Name < s.Splits[j].Name
	})
	return s, nil
}

func isWorkload(group, kind string) bool {
	switch {
	case group == "" && kind == "Pod":
		return true
	case group == "apps" && (kind == "Deployment" || kind == "StatefulSet" || kind == "DaemonSet" || kind == "ReplicaSet"):
		return true
	case group == "batch" && kind == "Job":
		return true
	}
	return false
}

// workloadOf reads the ServiceAccount and pod labels of a pod or of a controller's pod template.
func workloadOf(u *unstructured.Unstructured) (translate.Workload, error) {
	w := translate.Workload{Name: u.GetKind() + "/" + u.GetName()}
	labelsPath, specPath := []string{"spec", "template", "metadata", "labels"}, []string{"spec", "template", "spec"}
	if u.GetKind() == "Pod" {
		labelsPath, specPath = []string{"metadata", "labels"}, []string{"spec"}
	}
	labels, _, err := unstructured.NestedStringMap(u.Object, labelsPath...)
	if err != nil {
		return w, err
	}
	sa, _, err := unstructured.NestedString(u.Object, append(specPath, "serviceAccountName")...)
	if err != nil {
		return w, err
	}
	if sa == "" {
		sa = "default"
	}
	w.Labels, w.ServiceAccount = labels, sa
	return w, nil
}

func replaceWorkload(ws []translate.Workload, w translate.Workload) []translate.Workload {
	for i := range ws {
		if ws[i].Name == w.Name {
			ws[i] = w
			return ws
		}
	}
	return append(ws, w)
}

// Translate translates every SMI object of the set.
func (s *Set) Translate(mesh translate.Mesh) []Outcome {
	var out []Outcome
	for _, ts := range s.Splits {
		res, err := translate.TranslateSplit(translate.SplitInput{
			Split:            ts,
			Services:         s.Services[ts.Namespace],
			RouteGroups:      s.RouteGroups[ts.Namespace],
			RouteGroupErrors: s.RouteGroupErrors[ts.Namespace],
			Mesh:             mesh,
		})
		out = append(out, Outcome{Source: fmt.Sprintf("TrafficSplit %s/%s", ts.Namespace, ts.Name), Split: res, Err: err})
	}
	return append(out, s.translateAccess(mesh)...)
}

// translateAccess translates the TrafficTargets per destination ServiceAccount, as the operator does.
func (s *Set) translateAccess(mesh translate.Mesh) []Outcome {
	byDest := map[[2]string][]*accessv1alpha2.TrafficTarget{}
	var dests [][2]string
	for _, tt := range s.Targets {
		key := [2]string{tt.Namespace, tt.Spec.Destination.Name}
		if byDest[key] == nil {
			dests = append(dests, key)
		}
		byDest[key] = append(byDest[key], tt)
	}
	var out []Outcome
	for _, d := range dests {
		res, err := translate.TranslateAccess(translate.AccessInput{
			Namespace: d[0], ServiceAccount: d[1], Targets: byDest[d],
			RouteGroups: s.RouteGroups[d[0]], RouteGroupErrors: s.RouteGroupErrors[d[0]], PortRoutes: s.PortRoutes[d[0]],
			Workloads: s.Workloads[d[0]], Mesh: mesh,
		})
		if err != nil {
			out = append(out, Outcome{Source: fmt.Sprintf("ServiceAccount %s/%s", d[0], d[1]), Err: err})
			continue
		}
		for i := range res.Targets {
			tr := &res.Targets[i]
			o := Outcome{Source: fmt.Sprintf("TrafficTarget %s/%s", d[0], tr.Name), Target: tr, Findings: res.SelectorFindings, Err: tr.Err}
			if i == len(res.Targets)-1 {
				for _, ef := range res.EnvoyFilters {
					o.Extra = append(o.Extra, ef)
				}
			}
			out = append(out, o)
		}
	}
	return out
}

// Render prints the outcomes' Istio objects as multi-document YAML and the fidelity report, one
// line per finding ("<object>: <field>: <reason>: <message>"). failed counts objects that could
// not be translated.
func Render(outcomes []Outcome) (manifests []byte, report []string, failed int, err error) {
	var buf bytes.Buffer
	for _, o := range outcomes {
		if o.Err != nil {
			failed++
			var inv *translate.InvalidError
			if errors.As(o.Err, &inv) {
				report = append(report, fmt.Sprintf("%s: %s: %s: %s", o.Source, inv.Field, inv.Reason, inv.Message))
			} else {
				report = append(report, fmt.Sprintf("%s: %v", o.Source, o.Err))
			}
			continue
		}
		var objs []runtime.Object
		findings := append([]translate.Finding(nil), o.Findings...)
		if r := o.Split; r != nil {
			if r.Mode != "" {
				report = append(report, fmt.Sprintf("%s: spec.service: RoutingMode: %s mode for %s", o.Source, r.Mode, r.Host))
			}
			findings = append(append(findings, r.Unresolved...), r.Warnings...)
			objs = r.Objects()
		}
		if r := o.Target; r != nil {
			findings = append(append(append(findings, r.Unresolved...), r.Warnings...), r.Rungs...)
			objs = r.Objects()
		}
		for _, f := range findings {
			report = append(report, fmt.Sprintf("%s: %s", o.Source, f))
		}
		for _, obj := range append(objs, o.Extra...) {
			u, err := translate.ToUnstructured(obj)
			if err != nil {
				return nil, nil, failed, err
			}
			y, err := yaml.Marshal(u.Object)
			if err != nil {
				return nil, nil, failed, fmt.Errorf("render %s: %w", o.Source, err)
			}
			buf.WriteString("---\n")
			buf.Write(y)
		}
	}
	return buf.Bytes(), report, failed, nil
}
