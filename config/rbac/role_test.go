// Package rbac_test checks the generated ClusterRole (role.yaml, from the +kubebuilder:rbac markers).
package rbac_test

import (
	"os"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// Least privilege: no wildcard, no Secrets, and writes only to what smi2istio generates or reports on.
func TestClusterRoleIsLeastPrivilege(t *testing.T) {
	data, err := os.ReadFile("role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.UnmarshalStrict(data, role); err != nil {
		t.Fatal(err)
	}
	if len(role.Rules) == 0 {
		t.Fatal("no rules")
	}
	writable := map[string]bool{
		"networking.istio.io/virtualservices": true, "networking.istio.io/destinationrules": true, "networking.istio.io/envoyfilters": true,
		"security.istio.io/authorizationpolicies": true, "security.istio.io/peerauthentications": true,
		"events.k8s.io/events": true,
	}
	for _, r := range role.Rules {
		for _, list := range [][]string{r.Verbs, r.Resources, r.APIGroups} {
			for _, v := range list {
				if v == "*" {
					t.Errorf("wildcard in rule %+v", r)
				}
			}
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				if res == "secrets" {
					t.Errorf("access to Secrets: %+v", r)
				}
				for _, verb := range r.Verbs {
					if verb == "get" || verb == "list" || verb == "watch" {
						continue
					}
					switch {
					case writable[g+"/"+res]:
					case g == "smi2istio.io" && res == "smi2istioconfigs" && verb == "create": // its own singleton, with defaults
					case len(res) > 7 && (res[len(res)-7:] == "/status" || (len(res) > 11 && res[len(res)-11:] == "/finalizers")):
					case g == "apiextensions.k8s.io" && res == "customresourcedefinitions" && len(r.ResourceNames) > 0 && verb == "patch":
					case verb == "create" && (g == "authentication.k8s.io" && res == "tokenreviews" || g == "authorization.k8s.io" && res == "subjectaccessreviews"):
						// The metrics endpoint's authentication and authorization of its scrapers: reviews
						// are answers, nothing is stored.
					default:
						t.Errorf("%s on %s/%s is more than smi2istio writes", verb, g, res)
					}
				}
			}
		}
	}
}
