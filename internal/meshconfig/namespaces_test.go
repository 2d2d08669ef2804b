package meshconfig_test

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/smi2istio/smi2istio/internal/meshconfig"
)

// A mesh config other than "istio" is read only in Reader.Namespaces (where the operator may read
// and watch ConfigMaps): one wanted elsewhere (an OSSM 2 control plane in another namespace, a
// revision of an Istio namespace not listed) fails the resolution, never read once and left
// unwatched. Configs named "istio" are read anywhere.
func TestMeshConfigsOnlyInTheirNamespaces(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	mapper := meta.NewDefaultRESTMapper(nil)
	mapper.Add(schema.GroupVersionKind{Version: "v1", Kind: "Namespace"}, meta.RESTScopeRoot)
	mapper.Add(schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, meta.RESTScopeNamespace)
	scheme.AddKnownTypeWithName(meshconfig.ControlPlaneGVK, &unstructured.Unstructured{})
	scheme.AddKnownTypeWithName(meshconfig.ControlPlaneGVK.GroupVersion().WithKind("ServiceMeshControlPlaneList"), &unstructured.UnstructuredList{})
	mapper.Add(meshconfig.ControlPlaneGVK, meta.RESTScopeNamespace)
	run := func(istioNamespace string, objs ...client.Object) (meshconfig.InEffect, error) {
		c := fake.NewClientBuilder().WithScheme(scheme).WithRESTMapper(mapper).WithObjects(objs...).Build()
		return meshconfig.Reader{Client: c, Mapper: mapper, Namespaces: []string{"istio-system"}}.Resolve(context.Background(), istioNamespace)
	}

	e, err := run("istio-system", ns("app", map[string]string{meshconfig.RevisionLabel: "canary"}),
		cm("istio-system", "istio-canary", "canary", "trustDomain: canary.example\n"), cm("istio-system", "istio", "", ""))
	if err != nil || !reflect.DeepEqual(e.Keys(), []string{"istio-system/istio", "istio-system/istio-canary"}) {
		t.Errorf("in istio-system: configs %v, %v", e.Keys(), err)
	}
	if e, err = run("other", cm("other", "istio", "", "trustDomain: other.example\n")); err != nil || !reflect.DeepEqual(e.Keys(), []string{"other/istio"}) {
		t.Errorf("the default revision's config in another Istio namespace: configs %v, %v", e.Keys(), err)
	}
	for name, objs := range map[string][]client.Object{
		"OSSM 2 control plane elsewhere": {smcp("cp", "basic"), cm("cp", "istio-basic", "basic", "trustDomain: ossm.example\n")},
		"revision of an unlisted Istio namespace": {ns("app", map[string]string{meshconfig.RevisionLabel: "canary"}),
			cm("cp", "istio-canary", "canary", "trustDomain: canary.example\n")},
	} {
		istioNamespace := "istio-system"
		if strings.HasPrefix(name, "revision") {
			istioNamespace = "cp"
		}
		if e, err := run(istioNamespace, objs...); err == nil || !strings.Contains(err.Error(), "--mesh-config-namespaces") {
			t.Errorf("%s: configs %v, error %v; want a resolution error naming --mesh-config-namespaces", name, e.Keys(), err)
		}
	}
}
