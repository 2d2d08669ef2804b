package main

import (
	"path/filepath"
	"reflect"
	"sort"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/smi2istio/smi2istio/internal/build/install"
	"github.com/smi2istio/smi2istio/internal/testing/testenv"
)

// The namespaces where the operator of dist/install.yaml reads revisions' mesh configs
// (--mesh-config-namespaces, by default) are exactly those where the manifest grants it the read of
// ConfigMaps (RoleBindings of mesh-config-reader).
func TestMeshConfigNamespacesAreGranted(t *testing.T) {
	objs, err := install.Objects(filepath.Join(testenv.RepoRoot(), "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	args, err := install.ManagerArgs(objs)
	if err != nil {
		t.Fatal(err)
	}
	var granted []string
	for _, o := range objs {
		if name, _, _ := unstructured.NestedString(o.Object, "roleRef", "name"); o.GetKind() == "RoleBinding" && name == "smi2istio-mesh-config-reader" {
			granted = append(granted, o.GetNamespace())
		}
	}
	read := append([]string(nil), parseFlags(t, args...).meshConfigNS...)
	sort.Strings(read)
	sort.Strings(granted)
	if !reflect.DeepEqual(read, granted) || len(read) == 0 {
		t.Errorf("the operator reads mesh configs in %v, the manifest grants ConfigMaps in %v", read, granted)
	}
	if got := parseFlags(t, "--mesh-config-namespaces= istio-system, cp ,").meshConfigNS; !reflect.DeepEqual(got, []string{"istio-system", "cp"}) {
		t.Errorf("--mesh-config-namespaces parsed as %v", got)
	}
}
