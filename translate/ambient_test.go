package translate_test

import (
	"strings"
	"testing"

	accessv1alpha2 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/access/v1alpha2"
	securityv1beta1 "istio.io/client-go/pkg/apis/security/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/smi2istio/smi2istio/internal/testing/istiocheck"
	"github.com/smi2istio/smi2istio/translate"
)

func TestServiceWaypoint(t *testing.T) {
	svc := func(labels map[string]string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "shop", Labels: labels}}
	}
	ns := map[string]string{translate.UseWaypointLabel: "waypoint"}
	nsOther := map[string]string{translate.UseWaypointLabel: "shared", translate.UseWaypointNamespaceLabel: "platform"}
	for _, tc := range []struct {
		name     string
		svc      *corev1.Service
		nsLabels map[string]string
		want     string
	}{
		{"no label", svc(nil), nil, ""},
		{"the namespace's", svc(nil), ns, "shop/waypoint"},
		{"the namespace's, in another namespace", svc(nil), nsOther, "platform/shared"},
		{"the Service's wins", svc(map[string]string{translate.UseWaypointLabel: "mine"}), ns, "shop/mine"},
		{"the Service's namespace label goes with its own name only", svc(map[string]string{translate.UseWaypointLabel: "mine"}), nsOther, "shop/mine"},
		{"the Service opts out", svc(map[string]string{translate.UseWaypointLabel: "none"}), ns, ""},
		{"the namespace opts out", svc(nil), map[string]string{translate.UseWaypointLabel: "none"}, ""},
		{"empty", svc(map[string]string{translate.UseWaypointLabel: ""}), ns, ""},
		{"a waypoint's own Service", svc(map[string]string{"gateway.istio.io/managed": "istio.io-mesh-controller"}), ns, ""},
	} {
		if got := translate.ServiceWaypoint(tc.svc, tc.nsLabels); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

// ambientInput is one destination (api) with an HTTP and an L4 TrafficTarget.
func ambientInput(waypoint bool) translate.AmbientAccessInput {
	tt := func(name string, rules ...accessv1alpha2.TrafficTargetRule) *accessv1alpha2.TrafficTarget {
		t := &accessv1alpha2.TrafficTarget{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"}}
		t.Spec.Destination = accessv1alpha2.IdentityBindingSubject{Kind: "ServiceAccount", Name: "api"}
		t.Spec.Sources = []accessv1alpha2.IdentityBindingSubject{{Kind: "ServiceAccount", Name: "web"}}
		t.Spec.Rules = rules
		return t
	}
	in := translate.AmbientAccessInput{
		AccessInput: translate.AccessInput{
			Namespace: "shop", ServiceAccount: "api",
			Targets: []*accessv1alpha2.TrafficTarget{
				tt("http", accessv1alpha2.TrafficTargetRule{Kind: "HTTPRouteGroup", Name: "routes"}),
				tt("tcp", accessv1alpha2.TrafficTargetRule{Kind: "TCPRoute", Name: "tcp"}),
			},
			RouteGroups: map[string]*translate.HTTPRouteGroup{"routes": {ObjectMeta: metav1.ObjectMeta{Name: "routes", Namespace: "shop"},
				Matches: []translate.HTTPMatch{{Name: "a", PathRegex: "/a/[0-9]+"}, {Name: "b", PathRegex: "/b", Methods: []string{"GET"}}}}},
			PortRoutes: map[string]*translate.PortRoute{"TCPRoute/tcp": {ObjectMeta: metav1.ObjectMeta{Name: "tcp", Namespace: "shop"}, Kind: "TCPRoute", Ports: []int{8080}}},
			Workloads:  []translate.Workload{{Name: "Deployment/api", ServiceAccount: "api", Labels: map[string]string{"app": "api"}}},
			Mesh:       translate.Mesh{RegexPolicy: translate.RegexEnvoy},
		},
		Services: []*corev1.Service{{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "shop"},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "api"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}}},
	}
	if waypoint {
		in.NamespaceLabels = map[string]string{translate.UseWaypointLabel: "waypoint"}
		in.Waypoint = &translate.Waypoint{Namespace: "shop", Name: "waypoint", ServiceAccount: "waypoint-sa"}
	}
	return in
}

func TestAmbientNoWaypoint(t *testing.T) {
	res, err := translate.TranslateAmbientAccess(ambientInput(false))
	if err != nil {
		t.Fatal(err)
	}
	if res.WaypointBaseline != nil || len(res.EnvoyFilters) > 0 {
		t.Errorf("no waypoint: got a waypoint baseline or EnvoyFilters")
	}
	for _, tr := range res.Targets {
		switch tr.Name {
		case "http":
			if len(tr.Objects()) > 0 || len(tr.Rungs) > 0 {
				t.Errorf("http: the HTTP rules reach ztunnel: %v %v", tr.Objects(), tr.Rungs)
			}
			if len(tr.Warnings) != 1 || tr.Warnings[0].Reason != translate.ReasonWaypointRequired || tr.Warnings[0].Field != "spec.rules[0]" {
				t.Errorf("http: want one WaypointRequired on spec.rules[0], got %v", tr.Warnings)
			}
		case "tcp":
			if len(tr.AuthorizationPolicies) != 1 || len(tr.PeerAuthentications) != 1 {
				t.Fatalf("tcp: want one policy and one PeerAuthentication, got %v", tr.Objects())
			}
			ap := tr.AuthorizationPolicies[0]
			if ap.Spec.Selector == nil || len(ap.Spec.TargetRefs) > 0 || ap.Spec.Rules[0].To[0].Operation.Ports[0] != "8080" {
				t.Errorf("tcp: want a selector policy on pod port 8080, got %v", &ap.Spec)
			}
		}
	}
}

func TestAmbientWaypoint(t *testing.T) {
	res, err := translate.TranslateAmbientAccess(ambientInput(true))
	if err != nil {
		t.Fatal(err)
	}
	if res.WaypointBaseline == nil || res.WaypointBaseline.Namespace != "shop" || len(res.WaypointBaseline.Spec.Rules) > 0 ||
		res.WaypointBaseline.Spec.TargetRefs[0].Kind != "Gateway" {
		t.Fatalf("want the waypoint's allow-nothing baseline on its Gateway, got %v", res.WaypointBaseline)
	}
	if err := istiocheck.Validate(res.WaypointBaseline); err != nil {
		t.Error(err)
	}
	names := map[string]bool{}
	for _, tr := range res.Targets {
		if tr.Err != nil {
			t.Fatalf("%s: %v", tr.Name, tr.Err)
		}
		var sawAdmission bool
		for _, ap := range tr.AuthorizationPolicies {
			if names[ap.Name] {
				t.Errorf("%s: name %s twice", tr.Name, ap.Name)
			}
			names[ap.Name] = true
			if err := istiocheck.Validate(ap); err != nil {
				t.Error(err)
			}
			if ap.Spec.Selector != nil {
				sawAdmission = true
				from := ap.Spec.Rules[0].From[0].Source.Principals
				if len(ap.Spec.Rules) != 1 || len(from) != 1 || from[0] != "cluster.local/ns/shop/sa/waypoint-sa" {
					t.Errorf("%s: ztunnel must admit the waypoint only, got %v", tr.Name, &ap.Spec)
				}
				continue
			}
			if sawAdmission {
				t.Errorf("%s: a waypoint policy after the admission (apply order)", tr.Name)
			}
			if ap.Spec.TargetRefs[0].Kind != "Service" || ap.Spec.TargetRefs[0].Name != "api" {
				t.Errorf("%s: want targetRefs to Service api, got %v", tr.Name, ap.Spec.TargetRefs)
			}
		}
		if !sawAdmission {
			t.Errorf("%s: no ztunnel admission of the waypoint", tr.Name)
		}
		switch tr.Name {
		case "http":
			// "/a/[0-9]+" is on the Reject rung whatever the mesh says (no EnvoyFilter on a waypoint).
			if len(tr.Rungs) != 2 || tr.Rungs[0].Reason != translate.RungReject || !strings.Contains(tr.Rungs[0].Message, "waypoint") {
				t.Errorf("http: want the regex rejected, got %v", tr.Rungs)
			}
		case "tcp":
			rule := tr.AuthorizationPolicies[0].Spec.Rules[0]
			if got := rule.To[0].Operation.Ports; len(got) != 1 || got[0] != "80" {
				t.Errorf("tcp: the waypoint policy must match the Service port 80, got %v", got)
			}
			adm := tr.AuthorizationPolicies[1].Spec.Rules[0]
			if got := adm.To[0].Operation.Ports; len(got) != 1 || got[0] != "8080" {
				t.Errorf("tcp: ztunnel must admit the waypoint on the pod port 8080, got %v", got)
			}
		}
	}
	if len(res.EnvoyFilters) > 0 {
		t.Errorf("EnvoyFilters in ambient mode")
	}
}

// A Service that also sends to another ServiceAccount's workloads gets an allow-nothing policy,
// never the destination's rules.
func TestAmbientSharedService(t *testing.T) {
	in := ambientInput(true)
	in.Workloads = append(in.Workloads, translate.Workload{Name: "Deployment/canary", ServiceAccount: "canary", Labels: map[string]string{"app": "api", "track": "canary"}})
	res, err := translate.TranslateAmbientAccess(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.ServiceFindings) != 2 || res.ServiceFindings[0].Reason != "ServiceSelectsOtherServiceAccounts" || res.ServiceFindings[1].Reason != "NoServiceThroughWaypoint" {
		t.Errorf("want ServiceSelectsOtherServiceAccounts and NoServiceThroughWaypoint, got %v", res.ServiceFindings)
	}
	for _, tr := range res.Targets {
		if len(tr.Objects()) > 0 {
			t.Errorf("%s: nothing passes the waypoint, yet outputs: %v", tr.Name, tr.Objects())
		}
	}
	// With a precise Service beside it, the shared one is closed explicitly.
	in.Services = append(in.Services, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "api-stable", Namespace: "shop"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "api"}, Ports: []corev1.ServicePort{{Port: 8080}}}})
	in.Workloads[0].Labels = map[string]string{"app": "api", "track": "stable"}
	in.Services[1].Spec.Selector = map[string]string{"track": "stable"}
	res, err = translate.TranslateAmbientAccess(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range res.Targets {
		var closed, open bool
		for _, ap := range tr.AuthorizationPolicies {
			if len(ap.Spec.TargetRefs) == 0 {
				continue
			}
			switch ap.Spec.TargetRefs[0].Name {
			case "api":
				closed = len(ap.Spec.Rules) == 0
			case "api-stable":
				open = len(ap.Spec.Rules) > 0
			}
		}
		if !closed || !open {
			t.Errorf("%s: want api closed (allow nothing) and api-stable carrying the rules, got %v", tr.Name, tr.AuthorizationPolicies)
		}
	}
}

func TestAmbientInvalidWaypoint(t *testing.T) {
	for _, w := range []translate.Waypoint{
		{Namespace: "shop", Name: "waypoint", ServiceAccount: "web*"},
		{Namespace: "Shop", Name: "waypoint", ServiceAccount: "waypoint"},
		{Namespace: "shop", Name: "", ServiceAccount: "waypoint"},
		{Namespace: "shop", Name: strings.Repeat("w", 64), ServiceAccount: "waypoint"},
	} {
		in := ambientInput(true)
		in.Waypoint = &w
		if _, err := translate.TranslateAmbientAccess(in); err == nil {
			t.Errorf("waypoint %+v: accepted", w)
		}
	}
}

// Same input, same bytes; the input is not modified.
func TestAmbientDeterministic(t *testing.T) {
	render := func() string {
		in := ambientInput(true)
		res, err := translate.TranslateAmbientAccess(in)
		if err != nil {
			t.Fatal(err)
		}
		if in.Mesh.RegexPolicy != translate.RegexEnvoy {
			t.Errorf("the input's mesh was modified")
		}
		var b strings.Builder
		for _, tr := range res.Targets {
			for _, o := range tr.Objects() {
				switch x := o.(type) {
				case *securityv1beta1.AuthorizationPolicy:
					b.WriteString(x.Name + x.Spec.String())
				case *securityv1beta1.PeerAuthentication:
					b.WriteString(x.Name + x.Spec.String())
				}
			}
		}
		return b.String()
	}
	if a, b := render(), render(); a != b {
		t.Errorf("two translations differ:\n%s\n%s", a, b)
	}
}
