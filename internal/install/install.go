// Package install renders the non-OLM install manifest (dist/install.yaml) from config/default
// with kustomize's Go API (no kustomize binary needed).
package install

import (
	"fmt"
	"strings"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
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
