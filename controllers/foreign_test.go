package controllers

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"

	"github.com/smi2istio/smi2istio/internal/cache"
	"github.com/smi2istio/smi2istio/internal/smi/crds"
)

func ourCRD(t *testing.T, kind string) *apiextv1.CustomResourceDefinition {
	t.Helper()
	for _, c := range crds.All() {
		if c.Spec.Names.Kind == kind {
			return c
		}
	}
	t.Fatalf("no CRD for %s", kind)
	return nil
}

// The version watched: the storage version when served and readable, else the newest readable one
// served; none when no readable version is served.
func TestChooseVersion(t *testing.T) {
	osm := map[string]string{"TrafficSplit": "smi_traffic_split.yaml", "TrafficTarget": "smi_traffic_access.yaml",
		"HTTPRouteGroup": "smi_http_route_group.yaml", "TCPRoute": "smi_tcp_route.yaml"}
	want := map[string]string{"TrafficSplit": "v1alpha2", "TrafficTarget": "v1alpha3", "HTTPRouteGroup": "v1alpha4", "TCPRoute": "v1alpha4"}
	for kind, f := range osm {
		list, err := crds.LoadFile(filepath.Join("testdata", "osm-v1.2-smi-crds", f))
		if err != nil || len(list) != 1 {
			t.Fatalf("%s: %v", f, err)
		}
		v, ok := chooseVersion(ourCRD(t, kind), list[0])
		if !ok || v.Name != want[kind] || v.Subresources != nil {
			t.Errorf("OSM's %s: %s %v (subresources %v), want %s without status", kind, v.Name, ok, v.Subresources, want[kind])
		}
		if crds.Ours(list[0]) {
			t.Errorf("OSM's %s CRD taken for smi2istio's", kind)
		}
	}
	for _, c := range crds.All() {
		v, ok := chooseVersion(c, c)
		if !ok || !v.Storage || v.Subresources == nil || v.Subresources.Status == nil || !crds.Ours(c) {
			t.Errorf("smi2istio's %s: %s %v", c.Name, v.Name, ok)
		}
	}
	// Storage version not served: the newest readable served one.
	split := ourCRD(t, "TrafficSplit").DeepCopy()
	for i := range split.Spec.Versions {
		split.Spec.Versions[i].Served = split.Spec.Versions[i].Name != "v1alpha4"
	}
	if v, ok := chooseVersion(ourCRD(t, "TrafficSplit"), split); !ok || v.Name != "v1alpha3" {
		t.Errorf("storage not served: %s %v, want v1alpha3", v.Name, ok)
	}
	// Only versions whose content is not under spec (the compact type would read them empty), or
	// unknown ones: none.
	target := ourCRD(t, "TrafficTarget").DeepCopy()
	for i := range target.Spec.Versions {
		target.Spec.Versions[i].Served = target.Spec.Versions[i].Name == "v1alpha1"
	}
	target.Spec.Versions = append(target.Spec.Versions, apiextv1.CustomResourceDefinitionVersion{Name: "v1beta9", Served: true})
	if v, ok := chooseVersion(ourCRD(t, "TrafficTarget"), target); ok {
		t.Errorf("v1alpha1 TrafficTarget or v1beta9 chosen: %s", v.Name)
	}
}

type capturedEvent struct{ typ, reason, note string }

type captureRecorder struct{ got *[]capturedEvent }

var _ events.EventRecorder = captureRecorder{}

func (r captureRecorder) Eventf(_, _ runtime.Object, typ, reason, _, note string, args ...any) {
	*r.got = append(*r.got, capturedEvent{typ, reason, fmt.Sprintf(note, args...)})
}

// Without a status subresource, conditions are Events on change only: remembered per object (UID,
// generation), forgotten on delete.
func TestReportByEvents(t *testing.T) {
	var got []capturedEvent
	rec := captureRecorder{&got}
	u := cache.NewSMI(TrafficTargetGVK)
	u.SetNamespace("ns")
	u.SetName("foreign-events-test")
	u.SetUID("uid-1")
	u.SetGeneration(1)
	ok := applied()
	report := func(note string, conds ...metav1.Condition) {
		t.Helper()
		if err := reportByEvents(t.Context(), rec, u, note, conds...); err != nil {
			t.Fatal(err)
		}
	}
	report("applied", ok.conditions()...)
	report("applied", ok.conditions()...) // an idle resync
	if len(got) != 1 || got[0].typ != "Normal" || got[0].reason != ReasonApplied {
		t.Fatalf("first report: %+v", got)
	}
	missing := ok
	missing.resolved = metav1.Condition{Type: ConditionResolvedRefs, Status: metav1.ConditionFalse, Reason: "RefNotFound", Message: "HTTPRouteGroup no-such-routes not found"}
	missing.ready = notReady(ReasonInvalid, "nothing is allowed by this TrafficTarget")
	report(missing.ready.Message, missing.conditions()...)
	report(missing.ready.Message, missing.conditions()...)
	if len(got) != 2 || got[1].typ != "Warning" || got[1].reason != ReasonInvalid || !strings.Contains(got[1].note, "no-such-routes") {
		t.Fatalf("a missing route: %+v", got)
	}
	u.SetGeneration(2) // a new generation is reported, even with the same conditions
	report(missing.ready.Message, missing.conditions()...)
	u.SetUID("uid-2") // recreated
	report(missing.ready.Message, missing.conditions()...)
	if len(got) != 4 {
		t.Fatalf("generation and UID changes: %+v", got)
	}
	reportedEvents.forget(u.DefaultGVK().GroupKind(), "ns", "foreign-events-test")
	report(missing.ready.Message, missing.conditions()...)
	if len(got) != 5 {
		t.Fatalf("after a delete: %+v", got)
	}
	reportedEvents.forget(u.DefaultGVK().GroupKind(), "ns", "foreign-events-test")
}
