package main

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/smi2istio/smi2istio/internal/manifests"
	"github.com/smi2istio/smi2istio/internal/offline"
	"github.com/smi2istio/smi2istio/translate"
)

// unitsPerNamespace is how many services (with their SMI objects) share a namespace.
const unitsPerNamespace = 25

// size is one row of the benchmark: SMI objects (4 per service unit) and pods.
type size struct {
	Name  string
	Units int
	Pods  int
}

func (s size) namespaces() int { return (s.Units + unitsPerNamespace - 1) / unitsPerNamespace }
func (s size) smiObjects() int { return 4 * s.Units }

// istioObjects is what the operator writes for the SMI objects: per unit a VirtualService, a
// DestinationRule, and an AuthorizationPolicy and a PeerAuthentication per workload selector (v1, v2).
func (s size) istioObjects() int { return 6 * s.Units }

func nsName(i int) string { return fmt.Sprintf("bench-%03d", i) }

// unit is one service of the synthetic mesh: root Service svc-N selecting app=svc-N, versions v1
// and v2 (Services, Deployments), a ServiceAccount, a TrafficSplit (subset mode), an
// HTTPRouteGroup and a TCPRoute, and a TrafficTarget letting the previous unit's ServiceAccount call
// it on both. Expected outputs: VirtualService, DestinationRule, and per version an
// AuthorizationPolicy and a PeerAuthentication (plus one baseline AuthorizationPolicy per namespace).
type unit struct {
	ns   string
	name string
	prev string
}

func units(s size) []unit {
	var out []unit
	for i := range s.Units {
		ns := nsName(i / unitsPerNamespace)
		prev := fmt.Sprintf("svc-%d", i-1)
		if i%unitsPerNamespace == 0 {
			prev = fmt.Sprintf("svc-%d", i+unitsPerNamespace-1)
			if i+unitsPerNamespace-1 >= s.Units {
				prev = fmt.Sprintf("svc-%d", s.Units-1)
			}
		}
		out = append(out, unit{ns: ns, name: fmt.Sprintf("svc-%d", i), prev: prev})
	}
	return out
}

func obj(apiVersion, kind, ns, name string, fields map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": apiVersion, "kind": kind,
		"metadata": map[string]any{"name": name, "namespace": ns}}}
	for k, v := range fields {
		u.Object[k] = v
	}
	return u
}

func service(ns, name string, selector map[string]any) *unstructured.Unstructured {
	return obj("v1", "Service", ns, name, map[string]any{"spec": map[string]any{
		"selector": selector,
		"ports":    []any{map[string]any{"name": "http", "port": int64(8080)}, map[string]any{"name": "tcp-db", "port": int64(5432)}},
	}})
}

// workloads are the unit's Kubernetes objects (before SMI).
func (u unit) workloads() []*unstructured.Unstructured {
	out := []*unstructured.Unstructured{
		obj("v1", "ServiceAccount", u.ns, u.name, nil),
		service(u.ns, u.name, map[string]any{"app": u.name}),
	}
	for _, v := range []string{"v1", "v2"} {
		labels := map[string]any{"app": u.name, "version": v}
		out = append(out, service(u.ns, u.name+"-"+v, labels), obj("apps/v1", "Deployment", u.ns, u.name+"-"+v, map[string]any{"spec": map[string]any{
			"replicas": int64(1),
			"selector": map[string]any{"matchLabels": labels},
			"template": map[string]any{
				"metadata": map[string]any{"labels": labels},
				"spec": map[string]any{"serviceAccountName": u.name, "containers": []any{map[string]any{
					"name": "app", "image": "example.com/app:1", "ports": []any{map[string]any{"containerPort": int64(8080)}},
				}}},
			},
		}}))
	}
	return out
}

// pod is replica i of the unit (alternating versions), as a ReplicaSet would create it.
func (u unit) pod(i int) *unstructured.Unstructured {
	v := []string{"v1", "v2"}[i%2]
	p := obj("v1", "Pod", u.ns, fmt.Sprintf("%s-%s-%d", u.name, v, i), map[string]any{"spec": map[string]any{
		"serviceAccountName": u.name,
		"nodeName":           "bench-node",
		"containers": []any{map[string]any{"name": "app", "image": "example.com/app:1",
			"ports": []any{map[string]any{"containerPort": int64(8080)}}}},
	}})
	p.SetLabels(map[string]string{"app": u.name, "version": v, "pod-template-hash": "5d8f9c7b6"})
	return p
}

// smi is the unit's SMI objects, in the versions the CRDs store (no conversion needed).
func (u unit) smi(weights [2]int64) []*unstructured.Unstructured {
	return []*unstructured.Unstructured{
		obj("specs.smi-spec.io/v1alpha4", "HTTPRouteGroup", u.ns, u.name+"-routes", map[string]any{"spec": map[string]any{
			"matches": []any{
				map[string]any{"name": "read", "pathRegex": "/api/items", "methods": []any{"GET"}},
				map[string]any{"name": "write", "pathRegex": "/api/orders/.*", "methods": []any{"POST"}},
			},
		}}),
		obj("specs.smi-spec.io/v1alpha4", "TCPRoute", u.ns, u.name+"-db", map[string]any{"spec": map[string]any{
			"matches": map[string]any{"ports": []any{int64(5432)}},
		}}),
		u.split(weights),
		obj("access.smi-spec.io/v1alpha3", "TrafficTarget", u.ns, u.name, map[string]any{"spec": map[string]any{
			"destination": map[string]any{"kind": "ServiceAccount", "name": u.name, "namespace": u.ns},
			"sources":     []any{map[string]any{"kind": "ServiceAccount", "name": u.prev, "namespace": u.ns}},
			"rules": []any{
				map[string]any{"kind": "HTTPRouteGroup", "name": u.name + "-routes", "matches": []any{"read", "write"}},
				map[string]any{"kind": "TCPRoute", "name": u.name + "-db"},
			},
		}}),
	}
}

func (u unit) split(weights [2]int64) *unstructured.Unstructured {
	return obj("split.smi-spec.io/v1alpha4", "TrafficSplit", u.ns, u.name, map[string]any{"spec": map[string]any{
		"service": u.name,
		"backends": []any{
			map[string]any{"service": u.name + "-v1", "weight": weights[0]},
			map[string]any{"service": u.name + "-v2", "weight": weights[1]},
		},
	}})
}

// istioFor is what the operator writes for the units' SMI objects: the translator's outputs (as the
// offline renderer prints them; the reconcilers call the same translate functions), so that the
// baselines write the very objects the operator must write: the same names, labels and specs. The
// bench checks them against the operator's once it has converged (watcher.differs). The namespace
// baselines (one allow-nothing AuthorizationPolicy per namespace) are not among them.
func istioFor(us []unit) ([]*unstructured.Unstructured, error) {
	var in []*unstructured.Unstructured
	for _, u := range us {
		in = append(in, u.workloads()...)
		in = append(in, u.pod(0), u.pod(1))
		in = append(in, u.smi([2]int64{50, 50})...)
	}
	set, err := offline.Load(in)
	if err != nil {
		return nil, fmt.Errorf("load the synthetic mesh: %w", err)
	}
	out, report, failed, err := offline.Render(set.Translate(translate.Mesh{}))
	if err != nil {
		return nil, fmt.Errorf("translate the synthetic mesh: %w", err)
	}
	if failed != 0 {
		return nil, fmt.Errorf("translate the synthetic mesh: %d objects failed: %v", failed, report)
	}
	return manifests.Decode(out)
}

// operatorConditions are the conditions the operator writes on an SMI object of the synthetic mesh
// once its outputs are applied (controllers: writeStatus, with the messages of its happy path):
// Accepted, ResolvedRefs (TrafficSplits and TrafficTargets) and Ready, all True.
func operatorConditions(o *unstructured.Unstructured) []metav1.Condition {
	name, host := o.GetName(), o.GetName()+"."+o.GetNamespace()+".svc.cluster.local"
	cond := func(typ, reason, message string) metav1.Condition {
		return metav1.Condition{Type: typ, Status: metav1.ConditionTrue, Reason: reason, Message: message}
	}
	resolved := cond("ResolvedRefs", "ResolvedRefs", "all references found")
	switch o.GetKind() {
	case "TrafficSplit":
		return []metav1.Condition{cond("Accepted", "Accepted", "subset mode for "+host), resolved,
			cond("Ready", "Applied", "applied VirtualService "+name+" and DestinationRule "+name)}
	case "TrafficTarget":
		var applied []string
		for _, k := range []string{"AuthorizationPolicy", "PeerAuthentication"} {
			applied = append(applied, k+" "+name+"-v1", k+" "+name+"-v2")
		}
		return []metav1.Condition{cond("Accepted", "Accepted", "regexes by rung: ExactRung: 2"), resolved,
			cond("Ready", "Applied", "applied "+strings.Join(applied, ", "))}
	default: // the route kinds
		return []metav1.Condition{cond("Accepted", "Valid", "valid"), cond("Ready", "Valid", "usable by TrafficTargets and TrafficSplits")}
	}
}

// operatorStatus is the status patch the operator writes on o (as created, with its generation):
// its conditions with o's generation observed, as writeStatus sends it.
func operatorStatus(o *unstructured.Unstructured, now time.Time) (*unstructured.Unstructured, error) {
	conds := operatorConditions(o)
	raw := make([]any, 0, len(conds))
	for i := range conds {
		conds[i].ObservedGeneration = o.GetGeneration()
		conds[i].LastTransitionTime = metav1.NewTime(now)
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&conds[i])
		if err != nil {
			return nil, err
		}
		raw = append(raw, m)
	}
	patch := &unstructured.Unstructured{}
	patch.SetGroupVersionKind(o.GroupVersionKind())
	patch.SetNamespace(o.GetNamespace())
	patch.SetName(o.GetName())
	patch.Object["status"] = map[string]any{"observedGeneration": o.GetGeneration(), "conditions": raw}
	return patch, nil
}

// benchReportingInstance names the harness's Events (eventsAlone) apart from the operator's.
const benchReportingInstance = "smi2istio-bench"

// operatorEvent is the Event the operator emits when o becomes Ready (internal/recorder: an
// events.k8s.io/v1 Event, its note the Ready condition's message); i makes its name unique.
func operatorEvent(o *unstructured.Unstructured, i int, now time.Time) (*unstructured.Unstructured, error) {
	conds := operatorConditions(o)
	ready := conds[len(conds)-1]
	ev := &eventsv1.Event{
		ObjectMeta:          metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", o.GetName(), now.UnixNano()+int64(i)), Namespace: o.GetNamespace()},
		EventTime:           metav1.NewMicroTime(now),
		ReportingController: "smi2istio",
		ReportingInstance:   benchReportingInstance,
		Action:              "Reconcile",
		Reason:              ready.Reason,
		Regarding:           corev1.ObjectReference{APIVersion: o.GetAPIVersion(), Kind: o.GetKind(), Namespace: o.GetNamespace(), Name: o.GetName()},
		Note:                ready.Message,
		Type:                corev1.EventTypeNormal,
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ev)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetAPIVersion("events.k8s.io/v1")
	u.SetKind("Event")
	return u, nil
}
