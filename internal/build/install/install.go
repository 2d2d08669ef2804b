// Package install renders the non-OLM install manifest (dist/install.yaml) from config/default
// with kustomize's Go API (no kustomize binary needed), and applies it the way kubectl does.
package install

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/smi2istio/smi2istio/internal/manifests"
)

// Render builds a kustomization directory (e.g. config/default) into one multi-document YAML.
func Render(dir string) ([]byte, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	res, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	out, err := res.AsYaml()
	if err != nil {
		return nil, fmt.Errorf("render %s: %w", dir, err)
	}
	return out, nil
}

// WithImage replaces the manager's image in a rendered manifest.
func WithImage(manifest []byte, image string) ([]byte, error) {
	const current = "ghcr.io/smi2istio/smi2istio:"
	s := string(manifest)
	i := strings.Index(s, "image: "+current)
	if i < 0 {
		return nil, fmt.Errorf("the manager image %s* is not in the manifest", current)
	}
	end := strings.IndexByte(s[i:], '\n')
	return []byte(s[:i] + "image: " + image + s[i+end:]), nil
}

// Objects renders a kustomization and decodes it in apply order: Namespaces, then CRDs, then the
// rest (what `kubectl apply -f` of the file needs).
func Objects(dir string) ([]*unstructured.Unstructured, error) {
	data, err := Render(dir)
	if err != nil {
		return nil, err
	}
	objs, err := manifests.Decode(data)
	if err != nil {
		return nil, err
	}
	rank := func(kind string) int {
		switch kind {
		case "Namespace":
			return 0
		case "CustomResourceDefinition":
			return 1
		}
		return 2
	}
	sort.SliceStable(objs, func(i, j int) bool { return rank(objs[i].GetKind()) < rank(objs[j].GetKind()) })
	return objs, nil
}

// Apply applies objects as `kubectl apply --server-side` does: field manager kubectl, strict
// field validation.
func Apply(ctx context.Context, c client.Client, objs []*unstructured.Unstructured) error {
	for _, o := range objs {
		//nolint:staticcheck // SSA of an unstructured object, as kubectl apply --server-side does.
		if err := c.Patch(ctx, o.DeepCopy(), client.Apply, client.FieldOwner("kubectl"), client.ForceOwnership,
			client.FieldValidation("Strict")); err != nil {
			return fmt.Errorf("apply %s %s: %w", o.GetKind(), o.GetName(), err)
		}
	}
	return nil
}

// ManagerArgs returns the manager container's arguments.
func ManagerArgs(objs []*unstructured.Unstructured) ([]string, error) {
	for _, o := range objs {
		if o.GetKind() != "Deployment" {
			continue
		}
		containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		if len(containers) == 0 {
			return nil, fmt.Errorf("deployment %s has no container", o.GetName())
		}
		args, _, err := unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
		return args, err
	}
	return nil, fmt.Errorf("no Deployment in the manifest")
}
