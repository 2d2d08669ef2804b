package offline

import (
	"fmt"
	"strings"
	"sync"

	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"

	"github.com/smi2istio/smi2istio/api/v1alpha1"
	crdmanifests "github.com/smi2istio/smi2istio/config/crd"
)

var (
	configSchemaOnce sync.Once
	configSchema     *crdSchema
	errConfigSchema  error
)

// configCRDSchema is the schema of SMI2IstioConfig v1alpha1, from the CRD manifest the binary embeds.
func configCRDSchema() (*crdSchema, error) {
	configSchemaOnce.Do(func() {
		crd := &apiextv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(crdmanifests.ConfigCRD, crd); err != nil {
			errConfigSchema = fmt.Errorf("read the SMI2IstioConfig CRD: %w", err)
			return
		}
		set, err := newSchemaSet(crd)
		if err != nil {
			errConfigSchema = err
			return
		}
		configSchema = set[v1alpha1.GroupVersion.WithKind("SMI2IstioConfig")]
		if configSchema == nil {
			errConfigSchema = fmt.Errorf("the SMI2IstioConfig CRD serves no %s", v1alpha1.GroupVersion)
		}
	})
	return configSchema, errConfigSchema
}

// checkConfig checks an SMI2IstioConfig against its CRD as kubectl apply would and decodes it.
func checkConfig(u *unstructured.Unstructured) (*v1alpha1.SMI2IstioConfig, error) {
	cs, err := configCRDSchema()
	if err != nil {
		return nil, err
	}
	u = u.DeepCopy()
	u.SetNamespace("") // cluster-scoped: the apiserver ignores a namespace
	if errs := cs.check(u, false); len(errs) > 0 {
		msgs := make([]string, 0, len(errs))
		for _, e := range errs {
			msgs = append(msgs, e.Error())
		}
		return nil, fmt.Errorf("SMI2IstioConfig %s: %s", u.GetName(), strings.Join(msgs, "; "))
	}
	cfg := &v1alpha1.SMI2IstioConfig{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, cfg, true); err != nil {
		return nil, fmt.Errorf("SMI2IstioConfig %s: %w", u.GetName(), err)
	}
	return cfg, nil
}

// checkSettings checks the values given by flags (by spec field) against the SMI2IstioConfig
// CRD, naming the flag. An empty value means the default and is not checked.
func checkSettings(flagSpec map[string]any) []string {
	spec := map[string]any{}
	for k, v := range flagSpec {
		if v != "" {
			spec[k] = v
		}
	}
	if len(spec) == 0 {
		return nil
	}
	cs, err := configCRDSchema()
	if err != nil {
		return []string{err.Error()}
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(), "kind": "SMI2IstioConfig",
		"metadata": map[string]any{"name": v1alpha1.ConfigName}, "spec": spec,
	}}
	var out []string
	for _, e := range cs.check(u, false) {
		out = append(out, fmt.Sprintf("--%s: %s", flagOf(e), e.ErrorBody()))
	}
	return out
}

func flagOf(e *field.Error) string {
	for _, s := range settingFlags {
		if e.Field == "spec."+s.field {
			return s.flag
		}
	}
	return e.Field
}
