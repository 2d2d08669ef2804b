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
	securityv1beta1 "istio.io/client-go/pkg/apis/security/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/smi2istio/smi2istio/api/v1alpha1"
	"github.com/smi2istio/smi2istio/internal/manifests"
	"github.com/smi2istio/smi2istio/internal/membership"
	"github.com/smi2istio/smi2istio/internal/smi/normalize"
	"github.com/smi2istio/smi2istio/translate"
)

// Set is the translatable content of some manifests, by namespace.
type Set struct {
	Services    map[string]map[string]*corev1.Service
	RouteGroups map[string]map[string]*translate.HTTPRouteGroup
	// RouteGroupErrors: route groups that cannot be read; the objects using them are not accepted.
	RouteGroupErrors map[string]map[string]*translate.FieldError
	PortRoutes       map[string]map[string]*translate.PortRoute // "TCPRoute/<name>", "UDPRoute/<name>"
	Workloads        map[string][]translate.Workload
	Splits           []*splitv1alpha4.TrafficSplit
	Targets          []*accessv1alpha2.TrafficTarget
	// Namespaces holding SMI objects (of any SMI kind): they get the Enforcing mode's baseline.
	Namespaces map[string]bool
	// NamespaceObjects are the input's Namespaces (a dump of a cluster): the members among them
	// get the baseline too (Options.Membership).
	NamespaceObjects []corev1.Namespace
	// OSMMeshConfigs are Open Service Mesh's MeshConfigs in the input (they give the access mode
	// when no SMI2IstioConfig does, as in the operator).
	OSMMeshConfigs []unstructured.Unstructured
	// Untranslated are the input's objects of OSM's policy kinds, which smi2istio does not translate.
	Untranslated []*unstructured.Unstructured
	// Gateways are the input's Gateway API Gateways, by namespace and name: those of class
	// istio-waypoint are waypoints (their baselines, and the destinations they serve).
	Gateways map[string]map[string]*Gateway
	// Routes are the input's Gateway API routes (HTTPRoute, GRPCRoute, TCPRoute): where the Services
	// they are attached to send (ambient), and Conflicts with a TrafficSplit's route.
	Routes []*unstructured.Unstructured
}

// Gateway is a Gateway API Gateway of the input.
type Gateway struct {
	Namespace, Name, Class string
	// ServiceAccount its pods run as: the gateway.istio.io/service-account annotation, else its name.
	ServiceAccount string
	// Deleting: the Gateway has a deletion timestamp.
	Deleting bool
}

// Outcome is the translation of one SMI object.
type Outcome struct {
	// Source names the object: "TrafficSplit <namespace>/<name>".
	Source string
	Split  *translate.SplitResult
	// GatewaySplit is a TrafficSplit's Gateway API routes (ambient namespaces, routeAPI GatewayAPI).
	GatewaySplit *translate.GatewaySplitResult
	// Dataplane names the data plane of a GatewaySplit's namespace ("ambient" or "sidecar").
	Dataplane string
	Target    *translate.TargetResult
	// Findings reported for the object besides its own result (e.g. about its destination's workloads).
	Findings []translate.Finding
	// Extra objects that belong to no single SMI object (a destination's EnvoyFilters, a
	// namespace's baseline).
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
		RouteGroups:      map[string]map[string]*translate.HTTPRouteGroup{},
		RouteGroupErrors: map[string]map[string]*translate.FieldError{},
		PortRoutes:       map[string]map[string]*translate.PortRoute{},
		Workloads:        map[string][]translate.Workload{},
		Namespaces:       map[string]bool{},
		Gateways:         map[string]map[string]*Gateway{},
	}
	splits := map[string]int{} // namespace/name -> index in s.Splits
	targets := map[string]int{}
	namespaces := map[string]int{}
	routes := map[string]int{}
	for _, u := range objs {
		gv := u.GroupVersionKind()
		if gv.Group == "" && gv.Kind == "Namespace" { // cluster-scoped
			nsObj := corev1.Namespace{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &nsObj); err != nil {
				return nil, fmt.Errorf("%s %s: %w", u.GetKind(), u.GetName(), err)
			}
			// A later document for the same Namespace replaces the earlier one.
			if i, ok := namespaces[nsObj.Name]; ok {
				s.NamespaceObjects[i] = nsObj
				continue
			}
			namespaces[nsObj.Name] = len(s.NamespaceObjects)
			s.NamespaceObjects = append(s.NamespaceObjects, nsObj)
			continue
		}
		if u.GetNamespace() == "" {
			u = u.DeepCopy()
			u.SetNamespace("default")
		}
		ns := u.GetNamespace()
		if smiGroups[gv.Group] {
			s.Namespaces[ns] = true
		}
		switch {
		case gv.GroupKind() == membership.OSMMeshConfigGK:
			s.OSMMeshConfigs = append(s.OSMMeshConfigs, *u)
		case membership.IsOSMPolicy(gv.GroupKind()):
			s.Untranslated = append(s.Untranslated, u)
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
			var fe *translate.FieldError
			if errors.As(err, &fe) {
				if s.RouteGroupErrors[ns] == nil {
					s.RouteGroupErrors[ns] = map[string]*translate.FieldError{}
				}
				s.RouteGroupErrors[ns][u.GetName()] = fe
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", describe(u), err)
			}
			if s.RouteGroups[ns] == nil {
				s.RouteGroups[ns] = map[string]*translate.HTTPRouteGroup{}
			}
			s.RouteGroups[ns][g.Name] = g
		case gv.Group == "specs.smi-spec.io" && (gv.Kind == "TCPRoute" || gv.Kind == "UDPRoute"):
			r, err := normalize.ReadPortRoute(u)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", describe(u), err)
			}
			if s.PortRoutes[ns] == nil {
				s.PortRoutes[ns] = map[string]*translate.PortRoute{}
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
		case gv.Group == gatewayGroup && gv.Kind == "Gateway":
			class, _, _ := unstructured.NestedString(u.Object, "spec", "gatewayClassName")
			gw := &Gateway{Namespace: ns, Name: u.GetName(), Class: class, ServiceAccount: u.GetAnnotations()[gatewayServiceAccountAnnotation],
				Deleting: u.GetDeletionTimestamp() != nil}
			if gw.ServiceAccount == "" {
				gw.ServiceAccount = gw.Name
			}
			if s.Gateways[ns] == nil {
				s.Gateways[ns] = map[string]*Gateway{}
			}
			s.Gateways[ns][gw.Name] = gw
		case gv.Group == gatewayGroup && gatewayRouteKinds[gv.Kind]:
			key := gv.Kind + "/" + ns + "/" + u.GetName()
			if i, ok := routes[key]; ok {
				s.Routes[i] = u
				continue
			}
			routes[key] = len(s.Routes)
			s.Routes = append(s.Routes, u)
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

var smiGroups = map[string]bool{"split.smi-spec.io": true, "access.smi-spec.io": true, "specs.smi-spec.io": true}

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
		// The deprecated alias: the apiserver copies it into serviceAccountName when that is empty.
		if sa, _, err = unstructured.NestedString(u.Object, append(specPath, "serviceAccount")...); err != nil {
			return w, err
		}
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

// Translate translates every SMI object of the set in Enforcing mode for sidecars (VirtualService),
// without the namespaces' baselines (TranslateWith adds them and the other settings of the
// operator's configuration).
func (s *Set) Translate(mesh translate.Mesh) []Outcome {
	dp := dataplanes{mode: v1alpha1.DataplaneSidecar}
	return append(s.translateSplits(mesh, dp), s.translateAccess(accessOptions{mesh: mesh, mode: v1alpha1.Enforcing, dp: dp})...)
}

// Options are the settings of the operator's SMI2IstioConfig that the translation depends on.
type Options struct {
	Mesh translate.Mesh
	// Mode: Enforcing (the default) or Permissive.
	Mode v1alpha1.AccessMode
	// RootNamespace is Istio's root namespace (default istio-system): no baseline there, and no
	// access outputs, which would apply to every namespace.
	RootNamespace string
	// Membership decides which of the input's Namespaces are in the mesh and get a baseline, besides
	// those holding SMI objects (membership.FromNamespaces; Auto by default).
	Membership v1alpha1.Membership
	// Dataplane: Auto (the default: ambient where the input's Namespace is labelled
	// istio.io/dataplane-mode=ambient and not for sidecar injection, as membership.IsAmbient says;
	// a namespace the input does not hold is sidecar), Sidecar or Ambient (every namespace).
	Dataplane v1alpha1.DataplaneMode
	// RouteAPI is the API TrafficSplits are written to in sidecar namespaces: VirtualService (the
	// default) or GatewayAPI. Ambient namespaces always get Gateway API routes.
	RouteAPI v1alpha1.RouteAPI
}

func (o Options) withDefaults() Options {
	if o.Mode == "" {
		o.Mode = v1alpha1.Enforcing
	}
	if o.RootNamespace == "" {
		o.RootNamespace = DefaultRootNamespace
	}
	return o
}

// DefaultRootNamespace is Istio's root namespace unless configured otherwise.
const DefaultRootNamespace = "istio-system"

// TranslateWith translates the set as the operator configured with o would: in Enforcing mode
// the namespaces' allow-nothing baselines (and their waypoints') first, then every SMI object; in
// Permissive mode no baseline and no access outputs (TrafficTargets are not enforced), which the
// report says. Ambient namespaces (Options.Dataplane) get Gateway API routes and ztunnel or
// waypoint policies, as the operator writes them.
func (s *Set) TranslateWith(o Options) []Outcome {
	o = o.withDefaults()
	dp := s.dataplanes(o)
	out, waypoints := s.baselines(o, dp)
	splits := s.translateSplits(o.Mesh, dp)
	out = append(out, splits...)
	return append(out, s.translateAccess(accessOptions{mesh: o.Mesh, mode: o.Mode, rootNamespace: o.RootNamespace,
		dp: dp, waypoints: waypoints, backends: s.serviceBackends(splits)})...)
}

// baselines are the Namespace outcomes: in Enforcing mode, the allow-nothing AuthorizationPolicy
// of every namespace holding SMI objects or in the mesh by the input's Namespaces, exactly as the
// operator writes it (without the owner reference to the SMI2IstioConfig, which exists only in a
// cluster), followed by the baseline of each of the namespace's waypoints (Gateways of class
// istio-waypoint in the input), which waypoints names ("namespace/name"): only those waypoints are
// used, as the operator uses a waypoint only once its baseline is in force.
func (s *Set) baselines(o Options, dp dataplanes) (out []Outcome, waypoints map[string]bool) {
	all := map[string]bool{}
	for ns := range s.Namespaces {
		all[ns] = true
	}
	// Members without SMI objects are denied everything, as the operator's baselines do.
	members, _ := membership.FromNamespaces(o.Membership, s.NamespaceObjects)
	for ns := range members {
		all[ns] = true
	}
	namespaces := make([]string, 0, len(all))
	for ns := range all {
		namespaces = append(namespaces, ns)
	}
	sort.Strings(namespaces)
	waypoints = map[string]bool{}
	for _, ns := range namespaces {
		src := "Namespace " + ns
		var findings []translate.Finding
		if f, ok := dp.finding(ns); ok {
			findings = append(findings, f)
		}
		switch {
		case o.Mode != v1alpha1.Enforcing:
			out = append(out, Outcome{Source: src, Findings: append(findings, translate.Finding{Field: "spec.accessMode", Reason: "NotEnforced",
				Message: "the access mode is Permissive: no allow-nothing baseline, every source may reach the namespace's workloads"})})
		case ns == o.RootNamespace:
			out = append(out, Outcome{Source: src, Findings: append(findings, translate.Finding{Field: "spec.istioNamespace", Reason: "RootNamespace",
				Message: "Istio's root namespace gets no baseline: an allow-nothing policy there would deny every namespace"})})
		default:
			extra := []runtime.Object{Baseline(ns)}
			for _, name := range s.waypointsOf(ns) {
				extra = append(extra, WaypointBaseline(ns, name))
				waypoints[ns+"/"+name] = true
			}
			out = append(out, Outcome{Source: src, Findings: findings, Extra: extra})
		}
	}
	return out, waypoints
}

// BaselineName is the name of a namespace's baseline: controllers.BaselineName (not imported, to
// keep the operator's controllers out of the CLI's dependencies).
const BaselineName = "smi2istio-default-deny"

// Baseline is the allow-nothing AuthorizationPolicy the operator writes in a member namespace in
// Enforcing mode (controllers.BaselineReconciler), without its owner reference.
func Baseline(namespace string) *securityv1beta1.AuthorizationPolicy {
	return &securityv1beta1.AuthorizationPolicy{
		TypeMeta: metav1.TypeMeta{APIVersion: "security.istio.io/v1beta1", Kind: "AuthorizationPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: BaselineName, Namespace: namespace, Labels: map[string]string{
			translate.ManagedByLabel: translate.ManagedByValue, translate.SourceKindLabel: "Namespace", translate.SourceNameLabel: namespace,
		}},
	}
}

func (s *Set) translateSplits(mesh translate.Mesh, dp dataplanes) []Outcome {
	var out []Outcome
	for _, ts := range s.Splits {
		src := fmt.Sprintf("TrafficSplit %s/%s", ts.Namespace, ts.Name)
		if err := s.routeConflict(ts, mesh); err != nil {
			out = append(out, Outcome{Source: src, Err: err})
			continue
		}
		in := translate.SplitInput{
			Split:            ts,
			Services:         s.Services[ts.Namespace],
			RouteGroups:      s.RouteGroups[ts.Namespace],
			RouteGroupErrors: s.RouteGroupErrors[ts.Namespace],
			Mesh:             mesh,
		}
		if dp.gatewayRoutes(ts.Namespace) {
			// TCPRoute v1: the Gateway API release the pinned Istio reads serves it.
			res, err := translate.TranslateSplitGateway(in, translate.GatewayOptions{TCPRouteVersion: translate.TCPRouteV1})
			out = append(out, Outcome{Source: src, GatewaySplit: res, Dataplane: dp.describe(ts.Namespace), Err: err})
			continue
		}
		res, err := translate.TranslateSplit(in)
		out = append(out, Outcome{Source: src, Split: res, Err: err})
	}
	return out
}

// accessOptions are what the translation of the TrafficTargets depends on besides the set.
type accessOptions struct {
	mesh          translate.Mesh
	mode          v1alpha1.AccessMode
	rootNamespace string
	dp            dataplanes
	// waypoints whose baseline is printed ("namespace/name"): the only ones a destination may use.
	waypoints map[string]bool
	// backends: by namespace, ServiceBackends (serviceBackends).
	backends map[string]map[string][]string
}

// translateAccess translates the TrafficTargets per destination ServiceAccount, as the operator
// does. The destination's EnvoyFilters are an outcome of their own ("ServiceAccount ns/name"),
// before its TrafficTargets' outcomes: they are printed whenever the policies they make exact are,
// whichever of the TrafficTargets fail, and applied before them. In the root namespace (when
// given) no access output is written: it would apply to every namespace. In ambient namespaces the
// destination's outcome says whether a waypoint serves it (translateAmbient).
func (s *Set) translateAccess(o accessOptions) []Outcome {
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
		sa := fmt.Sprintf("ServiceAccount %s/%s", d[0], d[1])
		if o.rootNamespace != "" && d[0] == o.rootNamespace && o.mode == v1alpha1.Enforcing {
			for _, tt := range byDest[d] {
				out = append(out, Outcome{Source: fmt.Sprintf("TrafficTarget %s/%s", tt.Namespace, tt.Name),
					Err: &translate.InvalidError{Finding: translate.Finding{Field: "metadata.namespace", Reason: "RootNamespace",
						Message: "the destination is in Istio's root namespace, where a workload selector applies to every namespace: nothing is applied, nothing is allowed"}}})
			}
			continue
		}
		in := translate.AccessInput{
			Namespace: d[0], ServiceAccount: d[1], Targets: byDest[d],
			RouteGroups: s.RouteGroups[d[0]], RouteGroupErrors: s.RouteGroupErrors[d[0]], PortRoutes: s.PortRoutes[d[0]],
			Workloads: s.Workloads[d[0]], Mesh: o.mesh,
		}
		var res *translate.AccessResult
		var err error
		var dest Outcome // the destination's own outcome: its EnvoyFilters, or its data plane
		if o.dp.ambient(d[0]) {
			var note string
			res, note, err = s.translateAmbient(in, o)
			if err == nil && o.mode == v1alpha1.Enforcing {
				dest.Findings = []translate.Finding{{Field: "spec.destination", Reason: "Dataplane", Message: note}}
			}
		} else {
			res, err = translate.TranslateAccess(in)
		}
		if err != nil {
			out = append(out, Outcome{Source: sa, Err: err})
			continue
		}
		if o.mode == v1alpha1.Enforcing {
			for _, ef := range res.EnvoyFilters {
				dest.Extra = append(dest.Extra, ef)
			}
		}
		if len(dest.Extra)+len(dest.Findings) > 0 {
			dest.Source = sa
			out = append(out, dest)
		}
		for i := range res.Targets {
			tr := &res.Targets[i]
			src := fmt.Sprintf("TrafficTarget %s/%s", d[0], tr.Name)
			if o.mode != v1alpha1.Enforcing && tr.Err == nil {
				out = append(out, Outcome{Source: src, Findings: []translate.Finding{{Field: "spec", Reason: "NotEnforced",
					Message: "the access mode is Permissive: every source is allowed and this TrafficTarget is not enforced"}}})
				continue
			}
			out = append(out, Outcome{Source: src, Target: tr, Findings: res.SelectorFindings, Err: tr.Err})
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
		if r := o.GatewaySplit; r != nil {
			report = append(report, fmt.Sprintf("%s: spec.service: RouteAPI: Gateway API routes for %s (%s data plane)", o.Source, r.Host, o.Dataplane))
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
