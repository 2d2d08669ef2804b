package translate_test

// Red team of TranslateAmbientAccess (helper H7): a hole found, a regression test now that the
// translation closes it (waypointNotTrusted).

import (
	"testing"

	"github.com/smi2istio/smi2istio/translate"
)

// The destination's ztunnel admits the waypoint's identity (the ServiceAccount named by the
// Gateway's gateway.istio.io/service-account annotation, else the Gateway's name) on the rules' pod
// ports, for any request. Every other pod that runs as that ServiceAccount gets the same admission
// and skips the waypoint: a waypoint told to run as "default" (the ServiceAccount of most pods of
// a namespace), an unmanaged waypoint Gateway whose name is an ordinary ServiceAccount's, or an
// ingress Gateway (another class) annotated with the waypoint's ServiceAccount. SMI allows those
// pods nothing. The translation knows the namespace's workloads: a waypoint whose ServiceAccount
// also runs workloads that are not its own pods (label gateway.networking.k8s.io/gateway-name with
// the waypoint's name) must not be admitted.
func TestRedTeamAmbientWaypointIdentityOfOtherWorkloads(t *testing.T) {
	for _, tc := range []struct {
		name     string
		sa       string
		impostor translate.Workload
	}{
		{"a waypoint running as default", "default",
			translate.Workload{Name: "Deployment/debug", ServiceAccount: "default", Labels: map[string]string{"app": "debug"}}},
		{"an ingress gateway annotated with the waypoint's ServiceAccount", "waypoint-sa",
			translate.Workload{Name: "Deployment/ingress-istio", ServiceAccount: "waypoint-sa", Labels: map[string]string{"gateway.networking.k8s.io/gateway-name": "ingress"}}},
	} {
		in := ambientInput(true)
		in.Waypoint.ServiceAccount = tc.sa
		in.Workloads = append(in.Workloads,
			translate.Workload{Name: "Deployment/waypoint", ServiceAccount: tc.sa, Labels: map[string]string{"gateway.networking.k8s.io/gateway-name": "waypoint"}},
			tc.impostor)
		o := redTeamTranslate(t, in)
		for _, port := range []uint32{8080} {
			if ok, why := o.ztunnel(t, map[string]string{"app": "api"}, tc.sa, port); ok {
				t.Errorf("%s: %s (SMI allows it nothing) connects straight to api's pod port %d with any request, skipping the waypoint: %s",
					tc.name, tc.impostor.Name, port, why)
			}
		}
	}
}
