package translate

// TrafficTargets in Istio's ambient data plane (DESIGN §10). There is no sidecar: ztunnel, on every
// node, enforces L4 (the peer's identity and the destination port) for every pod; L7 needs a
// waypoint proxy. What istiod does with our AuthorizationPolicies there (verified in
// istio.io/istio@v0.0.0-20260827124520-eed52ebb66ad, the version go.mod requires):
//
//   - ztunnel gets the policies without targetRefs only, converted by
//     pilot/pkg/serviceregistry/ambient/authorization.go convertAuthorizationPolicy: a selector
//     policy applies to the workloads it selects, a policy without selector to its namespace (the
//     namespace baseline), and in an ALLOW policy handleRule drops every rule that holds an L7
//     field (hosts, methods, paths, their not* forms, requestPrincipals, remoteIpBlocks, a when
//     key other than source.ip/namespace/principal and destination.ip/port): such a rule allows
//     nothing, so an HTTPRouteGroup rule written for ztunnel would deny, never widen.
//   - A waypoint never uses selectors (pilot/pkg/model/policyattachment.go ShouldAttachPolicy,
//     "waypoints never use selector"): it applies the policies whose targetRefs name the Service
//     the request was addressed to (group "", kind Service, same namespace) or the waypoint's
//     Gateway (same namespace), ORed in one RBAC filter per Service chain
//     (pilot/pkg/networking/core/listener_waypoint.go buildWaypointHTTPFilters →
//     authz.NewBuilderForService; security/authz/builder: an ALLOW policy without rules is a
//     policy that never matches). With no ALLOW policy at all, a Service chain allows everything;
//     so does the direct-to-pod chain (Gateway policies only). The namespace baseline does not
//     apply there. The ports a waypoint policy matches are the Service's ports (the chain is
//     chosen by the Service VIP and port), not the pods'.
//   - The waypoint forwards to the pod as itself: the pod's ztunnel sees the waypoint's identity
//     (and the target port), not the source's. istiod's implicit "allow the waypoint" policy
//     (policies.go implicitWaypointPolicy) is off by default (PILOT_AUTO_ALLOW_WAYPOINT_POLICY).
//   - STRICT PeerAuthentication with a selector makes istiod attach its static STRICT DENY policy
//     to the workloads (authorization.go convertedSelectorPeerAuthentications): as in sidecar mode.
//
// So, per destination ServiceAccount:
//   - No waypoint: the TrafficTargets whose rules are L4 only (TCPRoutes, no HTTPRouteGroup)
//     become selector ALLOW policies, exactly as in sidecar mode (principals and ports only).
//     A TrafficTarget with an HTTPRouteGroup rule allows nothing (its TCPRoutes only restrict its
//     HTTP rules, they never allow TCP of their own) and reports WaypointRequired for each.
//   - A waypoint: every rule becomes an ALLOW policy with targetRefs to each Service that sends
//     only to the destination's workloads and passes the waypoint, with its ports mapped to the
//     Service's; every other Service of the waypoint that may reach the workloads gets an
//     allow-nothing policy; and the workloads' ztunnel admits the waypoint's identity (on the
//     rules' pod ports) and nobody else, so nothing bypasses the waypoint. The waypoint itself
//     needs an allow-nothing policy of its own (WaypointBaseline) for the paths no Service policy
//     covers (direct-to-pod traffic, Services of other namespaces): the lead applies it before
//     any policy that admits the waypoint and removes it last.
//   - Regexes: exact rung or Reject rung only (a waypoint silently ignores EnvoyFilters).

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	accessv1alpha2 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/access/v1alpha2"
	securityapi "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	securityv1beta1 "istio.io/client-go/pkg/apis/security/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// ReasonWaypointRequired is the reason of the finding on each HTTPRouteGroup rule of a
// TrafficTarget whose destination no waypoint serves (ztunnel enforces L4 only).
const ReasonWaypointRequired = "WaypointRequired"

// Istio's labels that bind a Service (or a namespace's Services) to a waypoint.
const (
	UseWaypointLabel          = "istio.io/use-waypoint"
	UseWaypointNamespaceLabel = "istio.io/use-waypoint-namespace"
	// gatewayManagedLabel marks the waypoint's own Service (istio.io-mesh-controller): it has no waypoint.
	gatewayManagedLabel = "gateway.istio.io/managed"
)

// WaypointBaselinePrefix starts the name of a waypoint's allow-nothing AuthorizationPolicy.
const WaypointBaselinePrefix = "smi2istio-default-deny-waypoint-"

// Waypoint is a waypoint proxy: its Gateway (class istio-waypoint) and the ServiceAccount its pods
// run as, whose principal the destination's ztunnel admits.
type Waypoint struct {
	Namespace, Name string
	ServiceAccount  string
}

func (w *Waypoint) key() string { return w.Namespace + "/" + w.Name }

// AmbientAccessInput is everything the access policy of one destination ServiceAccount in an
// ambient namespace depends on.
type AmbientAccessInput struct {
	AccessInput
	// Services of the destination's namespace, every one of them: those that may send to the
	// destination's workloads are found here.
	Services []*corev1.Service
	// NamespaceLabels of the destination's namespace (istio.io/use-waypoint there binds the
	// Services that do not say otherwise).
	NamespaceLabels map[string]string
	// ServiceBackends: for a Service with routes, the Services they send to (backends and request
	// mirrors; the TrafficSplit's backends, the root itself when a rule sends there); a waypoint
	// routes a request to the Service to their endpoints. The routes a waypoint applies to a
	// Service are those in the Service's namespace or in the waypoint's (istiod's
	// getVirtualServiceForWaypoint): HTTPRoutes, GRPCRoutes, TCPRoutes with the Service as parent,
	// and VirtualServices whose hosts match it. A backend that is not a Service of this namespace
	// is named so that it matches none (e.g. "<namespace>/<name>"): the Service's reach is then
	// unknown. A Service not in the map sends to its own endpoints.
	ServiceBackends map[string][]string
	// Waypoint that serves the destination's Services; nil when none does (ztunnel only).
	Waypoint *Waypoint
}

// AmbientAccessResult is the desired access policy of one destination ServiceAccount in ambient
// mode. AccessResult.EnvoyFilters is always empty (waypoints ignore EnvoyFilters).
type AmbientAccessResult struct {
	AccessResult
	// ServiceFindings are about the Services that may send to the ServiceAccount's workloads; they
	// concern every TrafficTarget.
	ServiceFindings []Finding
	// WaypointBaseline is the waypoint's allow-nothing policy (WaypointBaseline), when a waypoint
	// serves the destination. Every policy that admits the waypoint relies on it: apply it first,
	// remove it last; it is shared by every destination of the waypoint.
	WaypointBaseline *securityv1beta1.AuthorizationPolicy
}

// ServiceWaypoint is the waypoint ("namespace/name") istiod binds a Service's traffic to: the
// Service's istio.io/use-waypoint label, else its namespace's ("none" or "": no waypoint), the
// waypoint's namespace from istio.io/use-waypoint-namespace on the same object, else the
// Service's (istiod's fetchWaypointForTarget and GetUseWaypoint, ambient/waypoints.go). A
// waypoint's own Service has none. "" for none.
func ServiceWaypoint(svc *corev1.Service, namespaceLabels map[string]string) string {
	if svc.Labels[gatewayManagedLabel] == "istio.io-mesh-controller" {
		return ""
	}
	labels := svc.Labels
	if _, ok := labels[UseWaypointLabel]; !ok {
		labels = namespaceLabels
	}
	name, ok := labels[UseWaypointLabel]
	if !ok || name == "" || name == "none" {
		return ""
	}
	ns := svc.Namespace
	if o, ok := labels[UseWaypointNamespaceLabel]; ok {
		ns = o
	}
	return ns + "/" + name
}

// WaypointBaseline is the waypoint's allow-nothing AuthorizationPolicy: attached to its Gateway,
// it is ORed into every chain of the waypoint, so that a request is allowed only by a policy
// attached to the Service it was addressed to (a waypoint with no ALLOW policy for a chain allows
// everything, and the namespace baseline does not apply there).
func WaypointBaseline(w Waypoint) *securityv1beta1.AuthorizationPolicy {
	ap := &securityv1beta1.AuthorizationPolicy{
		TypeMeta: metav1.TypeMeta{APIVersion: "security.istio.io/v1beta1", Kind: "AuthorizationPolicy"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      WaypointBaselinePrefix + w.Name,
			Namespace: w.Namespace,
			Labels:    map[string]string{ManagedByLabel: ManagedByValue, SourceKindLabel: "Gateway", SourceNameLabel: w.Name},
		},
	}
	ap.Spec.TargetRefs = []*typev1beta1.PolicyTargetReference{{Group: "gateway.networking.k8s.io", Kind: "Gateway", Name: w.Name}}
	ap.Spec.Action = securityapi.AuthorizationPolicy_ALLOW
	return ap
}

// serviceReach is what the translation knows of one Service of the namespace.
type serviceReach struct {
	svc      *corev1.Service
	waypoint string // ServiceWaypoint
	// known: every workload the Service may send to is in workloads (a selector without volatile
	// labels, backends that exist).
	known     bool
	workloads []Workload
	// why the reach is not known
	unknown string
}

// TranslateAmbientAccess translates the TrafficTargets of one destination ServiceAccount in an
// ambient namespace. Problems with a single TrafficTarget are in its TargetResult (reason
// WaypointRequired for HTTP rules without a waypoint); the error is for input or output that
// cannot be built (then nothing is applied for the destination).
//
// Every output is checked with ValidateOutput: a TrafficTarget whose outputs fail gets an
// *InvalidError with reason InvalidOutput and no outputs.
func TranslateAmbientAccess(in AmbientAccessInput) (*AmbientAccessResult, error) {
	res := &AmbientAccessResult{}
	if w := in.Waypoint; w != nil {
		for _, err := range []*InvalidError{
			checkName("waypoint namespace", w.Namespace, namespaceName),
			checkName("waypoint name", w.Name, serviceAccountName, labelValue),
			checkName("waypoint ServiceAccount", w.ServiceAccount, serviceAccountName),
		} {
			if err != nil {
				return nil, fmt.Errorf("waypoint %s/%s of ServiceAccount %s/%s: %w", w.Namespace, w.Name, in.Namespace, in.ServiceAccount, err)
			}
		}
		res.WaypointBaseline = WaypointBaseline(*w)
		if err := ValidateOutput(res.WaypointBaseline); err != nil {
			return nil, fmt.Errorf("waypoint %s/%s baseline: %w", w.Namespace, w.Name, err)
		}
		if why := waypointNotTrusted(in); why != "" {
			// ztunnel would admit the waypoint's identity for any request: whoever else holds it
			// skips the waypoint. Translated as without a waypoint (less, never more).
			res.ServiceFindings = append(res.ServiceFindings, finding("spec.destination", "WaypointNotUsed",
				"waypoint %s/%s is not relied on: %s", w.Namespace, w.Name, why))
			in.Waypoint, res.WaypointBaseline = nil, nil
		}
	}
	// No Envoy rung: a waypoint silently ignores EnvoyFilters, and ztunnel has no HTTP filters.
	base := in.AccessInput
	base.Mesh.RegexPolicy = RegexReject

	res.Selectors, res.SelectorFindings = ResolveSelectors(in.ServiceAccount, in.Workloads)
	if len(res.Selectors) == 0 && len(res.SelectorFindings) == 0 {
		res.SelectorFindings = append(res.SelectorFindings, finding("spec.destination", "NoWorkloads",
			"no workload runs as ServiceAccount %s/%s: nothing to allow yet", in.Namespace, in.ServiceAccount))
	}
	services := in.reach()
	res.ServiceFindings = append(res.ServiceFindings, in.serviceFindings(services)...)

	targets := append([]*accessv1alpha2.TrafficTarget(nil), in.Targets...)
	sort.SliceStable(targets, func(i, j int) bool { return targets[i].Name < targets[j].Name })
	for _, tt := range targets {
		tr, rules := translateTarget(base, tt)
		if tr.Err == nil {
			for _, r := range rules {
				if r.envoy {
					return nil, fmt.Errorf("TrafficTarget %s/%s: a rule on the Envoy rung in ambient mode", tt.Namespace, tt.Name)
				}
			}
			if in.Waypoint == nil {
				in.ztunnelOnly(&tr, tt, rules, res.Selectors)
			} else {
				in.throughWaypoint(&tr, tt, rules, res.Selectors, services)
			}
			if err := validateObjects(&tr); err != nil {
				tr.Err, tr.AuthorizationPolicies, tr.PeerAuthentications = err, nil, nil
			}
		}
		res.Targets = append(res.Targets, tr)
	}
	return res, nil
}

// WaypointGatewayNameLabel is on the pods Istio runs for a Gateway (a waypoint's included).
const WaypointGatewayNameLabel = "gateway.networking.k8s.io/gateway-name"

// waypointNotTrusted says why the destination's ztunnel must not admit the waypoint's identity:
// the waypoint is in another namespace (whose workloads, and the routes and policies attached to a
// waypoint shared that way, are not known here), or a workload that is not one of the waypoint's
// own pods runs as its ServiceAccount (a waypoint told to run as "default", an ingress gateway
// annotated with the same ServiceAccount): it would be admitted too, skipping the waypoint. "" when
// the waypoint can be relied on.
func waypointNotTrusted(in AmbientAccessInput) string {
	w := in.Waypoint
	if w.Namespace != in.Namespace {
		return fmt.Sprintf("it is in namespace %s, not the destination's (%s): a waypoint shared across namespaces is not relied on", w.Namespace, in.Namespace)
	}
	var impostors []string
	for _, wl := range in.Workloads {
		if wl.ServiceAccount == w.ServiceAccount && wl.Labels[WaypointGatewayNameLabel] != w.Name {
			impostors = append(impostors, wl.Name)
		}
	}
	if len(impostors) > 0 {
		sort.Strings(impostors)
		return fmt.Sprintf("its ServiceAccount %s also runs %s, which would be admitted as the waypoint is", w.ServiceAccount, strings.Join(impostors, ", "))
	}
	return ""
}

// ztunnelOnly: L4 rules become selector policies ztunnel enforces; HTTP rules allow nothing.
func (in *AmbientAccessInput) ztunnelOnly(tr *TargetResult, tt *accessv1alpha2.TrafficTarget, rules []accessRule, sels []Selector) {
	portRoutes := false
	for _, rule := range tt.Spec.Rules {
		portRoutes = portRoutes || rule.Kind == "TCPRoute" || rule.Kind == "UDPRoute"
	}
	hasHTTP := false
	for i, rule := range tt.Spec.Rules {
		if rule.Kind != "HTTPRouteGroup" {
			continue
		}
		hasHTTP = true
		also := ""
		if portRoutes {
			also = " (the TrafficTarget's TCPRoutes only restrict its HTTP rules: they allow no TCP of their own)"
		}
		tr.Warnings = append(tr.Warnings, finding(fmt.Sprintf("spec.rules[%d]", i), ReasonWaypointRequired,
			"HTTPRouteGroup %s needs a waypoint: ztunnel enforces only identities and ports, and no waypoint serves ServiceAccount %s/%s (istio.io/use-waypoint on the namespace or its Services): nothing is allowed for this rule%s",
			rule.Name, in.Namespace, in.ServiceAccount, also))
	}
	if hasHTTP {
		// Every rule of the TrafficTarget is an HTTP rule (a TCPRoute beside one only restricts
		// it): none reaches ztunnel, so the fidelity of their regexes does not matter.
		tr.Rungs = nil
		var warnings []Finding
		for _, w := range tr.Warnings {
			if w.Reason != "TCPRoutesRestrictHTTP" { // says where the HTTP rules are allowed: nowhere here
				warnings = append(warnings, w)
			}
		}
		tr.Warnings = warnings
		return
	}
	var l4 []accessRule
	for _, r := range rules {
		if r.anyHTTP { // always, without HTTPRouteGroup rules; an HTTP rule would be left out (fail closed)
			l4 = append(l4, r)
		}
	}
	for _, sel := range sels {
		if ap := authorizationPolicy(tt, sel, l4); ap != nil {
			tr.AuthorizationPolicies = append(tr.AuthorizationPolicies, ap)
			tr.PeerAuthentications = append(tr.PeerAuthentications, peerAuthentication(tt, sel))
		}
	}
}

// throughWaypoint: every rule is enforced at the waypoint, on the Services that send only to the
// destination's workloads; their ztunnel admits the waypoint only.
func (in *AmbientAccessInput) throughWaypoint(tr *TargetResult, tt *accessv1alpha2.TrafficTarget, rules []accessRule, sels []Selector, services []serviceReach) {
	for i := range tr.Rungs {
		if tr.Rungs[i].Reason == RungReject {
			tr.Rungs[i].Message = strings.Replace(tr.Rungs[i].Message, "and EnvoyFilters are not allowed",
				"and a waypoint ignores EnvoyFilters (no Envoy rung in ambient mode)", 1)
		}
	}
	var policies []*securityv1beta1.AuthorizationPolicy
	var admitted []accessRule // the rules some Service policy carries, with their pod ports
	for _, s := range services {
		if s.waypoint != in.Waypoint.key() || !s.reaches(in.ServiceAccount) {
			continue
		}
		var mapped []accessRule
		if s.precise(in.ServiceAccount) {
			var lost []string
			for _, r := range rules {
				m, ok := in.servicePorts(s.svc, r)
				if !ok {
					for _, p := range r.ports {
						lost = append(lost, strconv.Itoa(p))
					}
					continue
				}
				mapped = append(mapped, m)
				admitted = append(admitted, r) // its pod ports, which the waypoint connects to
			}
			if len(lost) > 0 {
				tr.Warnings = append(tr.Warnings, finding("spec.rules", "NoServicePort",
					"Service %s has no port whose target ports are all among the pod ports %s of the rules (a named targetPort cannot be told here): the rules restricted to them are not allowed through it",
					s.svc.Name, strings.Join(sortedUniqueStrings(lost), ", ")))
			}
		}
		policies = append(policies, waypointPolicy(tt, s.svc.Name, mapped))
	}
	if len(admitted) == 0 || len(sels) == 0 {
		// Nothing passes the waypoint: the workloads' ztunnel does not admit it, and the
		// allow-nothing policies protect nothing.
		return
	}
	tr.AuthorizationPolicies = append(tr.AuthorizationPolicies, policies...)
	ports := portSet{}
	for _, r := range admitted {
		ports = ports.union(portSet{ports: r.ports, all: len(r.ports) == 0})
	}
	admit := accessRule{principals: []string{principal(in.Mesh, in.Waypoint.Namespace, in.Waypoint.ServiceAccount)}, ports: ports.ports, anyHTTP: true}
	for _, sel := range sels {
		tr.AuthorizationPolicies = append(tr.AuthorizationPolicies, authorizationPolicy(tt, sel, []accessRule{admit}))
		tr.PeerAuthentications = append(tr.PeerAuthentications, peerAuthentication(tt, sel))
	}
}

// waypointPolicy is the ALLOW policy of one TrafficTarget attached to one Service: its rules (none:
// allow nothing through this Service, a policy that never matches).
func waypointPolicy(tt *accessv1alpha2.TrafficTarget, service string, rules []accessRule) *securityv1beta1.AuthorizationPolicy {
	// authorizationPolicy renders the rules; the selector is replaced by the Service.
	ap := authorizationPolicy(tt, Selector{Labels: map[string]string{"service": service}}, rules)
	if ap == nil {
		ap = &securityv1beta1.AuthorizationPolicy{TypeMeta: metav1.TypeMeta{APIVersion: "security.istio.io/v1beta1", Kind: "AuthorizationPolicy"}}
		ap.Spec.Action = securityapi.AuthorizationPolicy_ALLOW
	}
	ap.ObjectMeta = accessMeta(tt.Name+"-"+service+"-"+nameKey("Service/"+service), tt.Namespace, tt.Spec.Destination.Name, "TrafficTarget", tt.Name)
	ap.Spec.Selector = nil
	ap.Spec.TargetRefs = []*typev1beta1.PolicyTargetReference{{Group: "", Kind: "Service", Name: service}}
	return ap
}

// nameKey is a short stable hash (FNV-1a, as Selector.Key) that keeps output names apart.
func nameKey(s string) string {
	h := uint32(2166136261)
	for _, b := range []byte(s) {
		h = (h ^ uint32(b)) * 16777619
	}
	return fmt.Sprintf("%08x", h)
}

// servicePorts maps a rule's pod ports to the Service ports whose requests reach only those pod
// ports (a waypoint policy matches the Service's port); false when none does. A rule for every
// port stays so.
func (in *AmbientAccessInput) servicePorts(svc *corev1.Service, r accessRule) (accessRule, bool) {
	if len(r.ports) == 0 {
		return r, true
	}
	want := map[int]bool{}
	for _, p := range r.ports {
		want[p] = true
	}
	var out []int
	for _, sp := range svc.Spec.Ports {
		if sp.Protocol == corev1.ProtocolUDP {
			continue // a waypoint has no UDP chain
		}
		pods, ok := in.podPorts(svc, sp)
		if !ok || len(pods) == 0 {
			continue
		}
		all := true
		for _, p := range pods {
			all = all && want[p]
		}
		if all {
			out = append(out, int(sp.Port))
		}
	}
	if len(out) == 0 {
		return r, false
	}
	r.ports = sortedUnique(out)
	return r, true
}

// podPorts are the pod ports a request to port sp of svc may reach: the targetPort of every port
// of every Service it is routed to with sp's number or name. false when one cannot be told (a
// named targetPort, a backend that does not exist).
func (in *AmbientAccessInput) podPorts(svc *corev1.Service, sp corev1.ServicePort) ([]int, bool) {
	var out []int
	for _, name := range in.sendsTo(svc) {
		b := in.service(name)
		if b == nil {
			return nil, false
		}
		for _, bp := range b.Spec.Ports {
			if bp.Port != sp.Port && (sp.Name == "" || bp.Name != sp.Name) {
				continue
			}
			switch {
			case bp.TargetPort.Type == intstr.String && bp.TargetPort.StrVal != "":
				return nil, false
			case bp.TargetPort.IntVal != 0:
				out = append(out, int(bp.TargetPort.IntVal))
			default:
				out = append(out, int(bp.Port))
			}
		}
	}
	return sortedUnique(out), true
}

func (in *AmbientAccessInput) service(name string) *corev1.Service {
	for _, s := range in.Services {
		if s.Name == name && s.Namespace == in.Namespace {
			return s
		}
	}
	return nil
}

func (in *AmbientAccessInput) sendsTo(svc *corev1.Service) []string {
	if b, ok := in.ServiceBackends[svc.Name]; ok {
		return b
	}
	return []string{svc.Name}
}

// reach finds, for every Service of the namespace, the workloads it may send to.
func (in *AmbientAccessInput) reach() []serviceReach {
	var out []serviceReach
	for _, svc := range in.Services {
		if svc.Namespace != in.Namespace {
			continue
		}
		s := serviceReach{svc: svc, waypoint: ServiceWaypoint(svc, in.NamespaceLabels), known: true}
		seen := map[string]bool{}
		for _, name := range in.sendsTo(svc) {
			b := in.service(name)
			if b == nil {
				s.known, s.unknown = false, fmt.Sprintf("it is routed to Service %s, which does not exist", name)
				break
			}
			if b.Spec.Type == corev1.ServiceTypeExternalName {
				continue // no endpoints
			}
			if len(b.Spec.Selector) == 0 {
				s.known, s.unknown = false, fmt.Sprintf("Service %s has no selector (its endpoints are not told by labels)", b.Name)
				break
			}
			volatile := false
			for _, k := range VolatileLabels {
				_, has := b.Spec.Selector[k]
				volatile = volatile || has
			}
			if volatile {
				s.known, s.unknown = false, fmt.Sprintf("the selector of Service %s uses a label that changes with every rollout", b.Name)
				break
			}
			for _, w := range in.Workloads {
				if !seen[w.Name] && (Selector{Labels: b.Spec.Selector}).matches(w.Labels) {
					seen[w.Name] = true
					s.workloads = append(s.workloads, w)
				}
			}
		}
		if !s.known {
			s.workloads = nil
		}
		sort.SliceStable(s.workloads, func(i, j int) bool { return s.workloads[i].Name < s.workloads[j].Name })
		out = append(out, s)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].svc.Name < out[j].svc.Name })
	return out
}

// reaches: the Service may send to a workload of the ServiceAccount.
func (s *serviceReach) reaches(sa string) bool {
	if !s.known {
		return true
	}
	for _, w := range s.workloads {
		if w.ServiceAccount == sa {
			return true
		}
	}
	return false
}

// precise: the Service sends to workloads of the ServiceAccount only.
func (s *serviceReach) precise(sa string) bool {
	if !s.known || len(s.workloads) == 0 {
		return false
	}
	for _, w := range s.workloads {
		if w.ServiceAccount != sa {
			return false
		}
	}
	return true
}

// serviceFindings reports the Services through which the destination's TrafficTargets are not
// (or only partly) enforced, and the workloads no Service reaches.
func (in *AmbientAccessInput) serviceFindings(services []serviceReach) []Finding {
	var out []Finding
	sa := in.ServiceAccount
	f := func(reason, format string, args ...any) {
		out = append(out, finding("spec.destination", reason, format, args...))
	}
	reached := map[string]bool{}
	for _, s := range services {
		if !s.reaches(sa) {
			continue
		}
		name := s.svc.Name
		switch {
		case in.Waypoint == nil && s.waypoint != "":
			f("ServiceOnOtherWaypoint", "Service %s sends through waypoint %s, which does not serve ServiceAccount %s: ztunnel sees that waypoint's identity, and nothing is allowed through the Service",
				name, s.waypoint, sa)
		case in.Waypoint == nil:
		case s.waypoint != in.Waypoint.key():
			via := "directly"
			if s.waypoint != "" {
				via = "through waypoint " + s.waypoint
			}
			f("ServiceNotOnWaypoint", "Service %s sends %s, not through waypoint %s, and ServiceAccount %s's ztunnel admits only that waypoint: nothing is allowed through the Service",
				name, via, in.Waypoint.key(), sa)
		case !s.known:
			f("ServiceEndpointsUnknown", "Service %s may send to ServiceAccount %s's workloads and others (%s): nothing is allowed through it",
				name, sa, s.unknown)
		case !s.precise(sa):
			var others []string
			for _, w := range s.workloads {
				if w.ServiceAccount != sa {
					others = append(others, w.Name+" (ServiceAccount "+w.ServiceAccount+")")
				}
			}
			f("ServiceSelectsOtherServiceAccounts", "Service %s also sends to %s: the waypoint checks requests per Service, so nothing is allowed through it (call a Service that selects only ServiceAccount %s's workloads)",
				name, strings.Join(others, ", "), sa)
		default:
			sent := map[string]bool{}
			for _, w := range s.workloads {
				sent[w.Name], reached[w.Name] = true, true
			}
			var missing []string
			for _, w := range in.Workloads {
				if w.ServiceAccount == sa && !sent[w.Name] {
					missing = append(missing, w.Name)
				}
			}
			sort.Strings(missing)
			if len(missing) > 0 {
				f("ServiceSelectsSomeWorkloads", "Service %s sends to only some of ServiceAccount %s's workloads, not to %s", name, sa, strings.Join(missing, ", "))
			}
		}
	}
	if in.Waypoint != nil {
		var unreached []string
		for _, w := range in.Workloads {
			if w.ServiceAccount == sa && !reached[w.Name] {
				unreached = append(unreached, w.Name)
			}
		}
		sort.Strings(unreached)
		if len(unreached) > 0 {
			f("NoServiceThroughWaypoint", "no Service through waypoint %s sends only to ServiceAccount %s's workloads %s: nothing is allowed to them (ztunnel admits only the waypoint)",
				in.Waypoint.key(), sa, strings.Join(unreached, ", "))
		}
	}
	return out
}

func sortedUniqueStrings(ss []string) []string {
	ss = append([]string(nil), ss...)
	sort.Strings(ss)
	out := ss[:0]
	for i, s := range ss {
		if i == 0 || s != ss[i-1] {
			out = append(out, s)
		}
	}
	return out
}
