// Package offline translates a set of manifests without a cluster: it builds the same translate
// inputs the controllers fetch, and renders the Istio YAML plus a fidelity report (the `translate`
// command and the golden tests).
package offline

import (
	"bytes"
	"errors"
	"fmt"
	"sort"

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
	Splits      []*splitv1alpha4.TrafficSplit
}

// Outcome is the translation of one SMI object.
type Outcome struct {
	// Source names the object: "TrafficSplit <namespace>/<name>".
	Source string
	Split  *translate.SplitResult
	Err    error
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
		Services:    map[string]map[string]*corev1.Service{},
		RouteGroups: map[string]map[string]*normalize.HTTPRouteGroup{},
	}
	splits := map[string]int{} // namespace/name -> index in s.Splits
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
			if err != nil {
				return nil, fmt.Errorf("%s: %w", describe(u), err)
			}
			if s.RouteGroups[ns] == nil {
				s.RouteGroups[ns] = map[string]*normalize.HTTPRouteGroup{}
			}
			s.RouteGroups[ns][g.Name] = g
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

// Translate translates every SMI object of the set.
func (s *Set) Translate(mesh translate.Mesh) []Outcome {
	var out []Outcome
	for _, ts := range s.Splits {
		res, err := translate.TranslateSplit(translate.SplitInput{
			Split:       ts,
			Services:    s.Services[ts.Namespace],
			RouteGroups: s.RouteGroups[ts.Namespace],
			Mesh:        mesh,
		})
		out = append(out, Outcome{Source: fmt.Sprintf("TrafficSplit %s/%s", ts.Namespace, ts.Name), Split: res, Err: err})
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
		r := o.Split
		if r.Mode != "" {
			report = append(report, fmt.Sprintf("%s: spec.service: RoutingMode: %s mode for %s", o.Source, r.Mode, r.Host))
		}
		for _, f := range append(append([]translate.Finding(nil), r.Unresolved...), r.Warnings...) {
			report = append(report, fmt.Sprintf("%s: %s", o.Source, f))
		}
		for _, obj := range r.Objects() {
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
