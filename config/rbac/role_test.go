// Package rbac_test checks the generated ClusterRole (role.yaml, from the +kubebuilder:rbac markers)
// and the other grants of config/rbac as config/default installs them.
package rbac_test

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/smi2istio/smi2istio/internal/build/install"
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
		// Ambient namespaces' TrafficSplits (GAMMA).
		"gateway.networking.k8s.io/httproutes": true, "gateway.networking.k8s.io/tcproutes": true,
	}
	// Storage migration rewrites SMI objects unchanged (update only): they are re-encoded in the
	// storage version before old versions leave the CRDs' storedVersions.
	migrated := map[string]bool{
		"split.smi-spec.io/trafficsplits": true, "access.smi-spec.io/traffictargets": true,
		"specs.smi-spec.io/httproutegroups": true, "specs.smi-spec.io/tcproutes": true, "specs.smi-spec.io/udproutes": true,
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
				// ConfigMaps cluster-wide: only those named istio (the default revision's mesh config;
				// the cache lists and watches them by field selector, which RBAC authorizes by name).
				// Revisions' mesh configs are read in Istio's namespace only (TestMeshConfigReader).
				if g == "" && res == "configmaps" && (len(r.ResourceNames) != 1 || r.ResourceNames[0] != "istio") {
					t.Errorf("ConfigMaps readable cluster-wide beyond those named istio: %+v", r)
				}
				for _, verb := range r.Verbs {
					if verb == "get" || verb == "list" || verb == "watch" {
						continue
					}
					switch {
					case writable[g+"/"+res]:
					case verb == "update" && migrated[g+"/"+res]:
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

// Revisions' mesh configs: the ConfigMaps of Istio's namespace are readable there only. The
// mesh-config-reader ClusterRole reads ConfigMaps and nothing else, and config/default binds it to
// the operator by a RoleBinding in istio-system, never cluster-wide.
func TestMeshConfigReaderIsBoundInIstiosNamespaceOnly(t *testing.T) {
	objs, err := install.Objects(filepath.Join("..", "default"))
	if err != nil {
		t.Fatal(err)
	}
	var bindings int
	for _, o := range objs {
		switch o.GetKind() {
		case "ClusterRole":
			if o.GetName() != "smi2istio-mesh-config-reader" {
				continue
			}
			role := &rbacv1.ClusterRole{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, role); err != nil {
				t.Fatal(err)
			}
			want := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "watch"}}}
			if !reflect.DeepEqual(role.Rules, want) {
				t.Errorf("mesh-config-reader rules %+v, want %+v", role.Rules, want)
			}
		case "ClusterRoleBinding", "RoleBinding":
			if name, _, _ := unstructured.NestedString(o.Object, "roleRef", "name"); name != "smi2istio-mesh-config-reader" {
				continue
			}
			subjects, _, _ := unstructured.NestedSlice(o.Object, "subjects")
			want := []any{map[string]any{"kind": "ServiceAccount", "name": "smi2istio-controller-manager", "namespace": "smi2istio-system"}}
			if o.GetKind() != "RoleBinding" || o.GetNamespace() != "istio-system" || !reflect.DeepEqual(subjects, want) {
				t.Errorf("mesh-config-reader bound by %s %s/%s to %v: want a RoleBinding in istio-system to the operator", o.GetKind(), o.GetNamespace(), o.GetName(), subjects)
			}
			bindings++
		}
	}
	if bindings != 1 {
		t.Errorf("mesh-config-reader bound %d times, want once (in istio-system)", bindings)
	}
}
