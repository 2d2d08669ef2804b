package crds

import (
	"fmt"

	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// FileName is the name of the CRD's manifest under config/crd/bases (Kubebuilder's convention).
func FileName(c *apiextv1.CustomResourceDefinition) string {
	return c.Spec.Group + "_" + c.Spec.Names.Plural + ".yaml"
}

// Marshal renders a CRD as a manifest: deterministic, without the empty status and timestamps a
// plain marshal would add.
func Marshal(c *apiextv1.CustomResourceDefinition) ([]byte, error) {
	raw, err := yaml.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("marshal CRD %s: %w", c.Name, err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("re-read CRD %s: %w", c.Name, err)
	}
	delete(m, "status")
	if md, ok := m["metadata"].(map[string]any); ok {
		delete(md, "creationTimestamp")
	}
	out, err := yaml.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("marshal CRD %s: %w", c.Name, err)
	}
	return append([]byte("---\n"), out...), nil
}
