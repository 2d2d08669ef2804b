package offline

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	apiextensionsinternal "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	schemaobjectmeta "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/objectmeta"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"

	"github.com/smi2istio/smi2istio/internal/smi/crds"
)

// crdSchema is what the apiserver checks a custom resource of one version against.
type crdSchema struct {
	structural *structuralschema.Structural
	validator  apiservervalidation.SchemaValidator
	cel        *cel.Validator
}

// schemaSet maps a group/version/kind served by a set of CRDs to its schema.
type schemaSet map[schema.GroupVersionKind]*crdSchema

var (
	smiSchemasOnce sync.Once
	smiSchemas     schemaSet
	errSMISchemas  error
)

// smiSchemaSet is the schemas of the SMI CRDs smi2istio serves (internal/smi/crds).
func smiSchemaSet() (schemaSet, error) {
	smiSchemasOnce.Do(func() { smiSchemas, errSMISchemas = newSchemaSet(crds.All()...) })
	return smiSchemas, errSMISchemas
}

func newSchemaSet(defs ...*apiextv1.CustomResourceDefinition) (schemaSet, error) {
	out := schemaSet{}
	for _, crd := range defs {
		for _, v := range crd.Spec.Versions {
			if !v.Served || v.Schema == nil {
				continue
			}
			internal := &apiextensionsinternal.CustomResourceValidation{}
			if err := apiextv1.Convert_v1_CustomResourceValidation_To_apiextensions_CustomResourceValidation(v.Schema, internal, nil); err != nil {
				return nil, fmt.Errorf("schema of %s %s: %w", crd.Name, v.Name, err)
			}
			structural, err := structuralschema.NewStructural(internal.OpenAPIV3Schema)
			if err != nil {
				return nil, fmt.Errorf("structural schema of %s %s: %w", crd.Name, v.Name, err)
			}
			validator, _, err := apiservervalidation.NewSchemaValidator(internal.OpenAPIV3Schema)
			if err != nil {
				return nil, fmt.Errorf("schema validator of %s %s: %w", crd.Name, v.Name, err)
			}
			gvk := schema.GroupVersionKind{Group: crd.Spec.Group, Version: v.Name, Kind: crd.Spec.Names.Kind}
			out[gvk] = &crdSchema{
				structural: structural,
				validator:  validator,
				cel:        cel.NewValidator(structural, true, celconfig.PerCallLimit),
			}
		}
	}
	return out, nil
}

// groups are the API groups the set's CRDs define.
func (s schemaSet) groups() map[string]bool {
	out := map[string]bool{}
	for gvk := range s {
		out[gvk.Group] = true
	}
	return out
}

// check validates one object of a kind the set defines as the apiserver does on create with
// strict field validation (kubectl apply's default): unknown fields (pruning), metadata, the
// OpenAPI schema, list types and x-kubernetes-validations. namespaced says whether the kind is.
func (cs *crdSchema) check(u *unstructured.Unstructured, namespaced bool) field.ErrorList {
	obj := u.DeepCopy().Object
	var errs field.ErrorList
	meta, _, unknownMeta, err := schemaobjectmeta.GetObjectMetaWithOptions(obj, schemaobjectmeta.ObjectMetaOptions{ReturnUnknownFieldPaths: true})
	if err != nil {
		return field.ErrorList{field.Invalid(field.NewPath("metadata"), nil, err.Error())}
	}
	unknown := append([]string(nil), unknownMeta...)
	unknown = append(unknown, pruning.PruneWithOptions(obj, cs.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})...)
	if ferr, paths := schemaobjectmeta.CoerceWithOptions(nil, obj, cs.structural, false, schemaobjectmeta.CoerceOptions{ReturnUnknownFieldPaths: true}); ferr != nil {
		errs = append(errs, ferr)
	} else {
		unknown = append(unknown, paths...)
	}
	sort.Strings(unknown)
	for _, p := range unknown {
		errs = append(errs, field.Invalid(fieldPath(p), nil, "unknown field (a misspelt field would be ignored: the CRD rejects it)"))
	}
	// The status subresource: create ignores the status the object carries.
	delete(obj, "status")
	if meta == nil {
		errs = append(errs, field.Required(field.NewPath("metadata"), "metadata.name is required"))
	} else {
		errs = append(errs, apimachineryvalidation.ValidateObjectMeta(meta, namespaced, apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))...)
	}
	errs = append(errs, apiservervalidation.ValidateCustomResource(nil, obj, cs.validator)...)
	errs = append(errs, schemaobjectmeta.Validate(context.Background(), nil, obj, cs.structural, false)...)
	errs = append(errs, listtype.ValidateListSetsAndMaps(nil, cs.structural, obj)...)
	if len(errs) == 0 { // as the apiserver, CEL rules only run on an object of the right shape
		celErrs, _ := cs.cel.Validate(context.Background(), nil, cs.structural, obj, nil, celconfig.RuntimeCELCostBudget)
		errs = append(errs, celErrs...)
	}
	return errs
}

// fieldPath turns a pruning path ("spec.matches[0].pathRegexp") into a field path.
func fieldPath(p string) *field.Path {
	var out *field.Path
	for _, part := range strings.Split(p, ".") {
		if out == nil {
			out = field.NewPath(part)
		} else {
			out = out.Child(part)
		}
	}
	return out
}

// ValidateSMI checks every SMI object of the input as `kubectl apply` would against smi2istio's
// CRDs (internal/smi/crds, the source of config/crd/bases): an unknown or misspelt field, a value
// the schema rejects or an SMI kind or version the CRDs do not serve is an error naming the object
// and the field. Other kinds are not checked. It returns one error per field, in input order.
func ValidateSMI(objs []*unstructured.Unstructured) ([]error, error) {
	set, err := smiSchemaSet()
	if err != nil {
		return nil, err
	}
	groups := set.groups()
	var out []error
	for _, u := range objs {
		gvk := u.GroupVersionKind()
		if !groups[gvk.Group] {
			continue
		}
		cs, ok := set[gvk]
		if !ok {
			out = append(out, fmt.Errorf("%s: apiVersion: no kind %q is served in version %q by smi2istio's CRDs", describeInput(u), gvk.Kind, gvk.GroupVersion()))
			continue
		}
		if u.GetNamespace() == "" { // kubectl's default namespace, as in Load
			u = u.DeepCopy()
			u.SetNamespace("default")
		}
		if u.GetName() == "" { // kubectl apply needs a name (generateName is for create)
			out = append(out, fmt.Errorf("%s: %w", describeInput(u), field.Required(field.NewPath("metadata", "name"), "")))
		}
		for _, e := range cs.check(u, true) {
			out = append(out, fmt.Errorf("%s: %w", describeInput(u), e))
		}
	}
	return out, nil
}

// describeInput names an input object as Load does (no namespace means "default").
func describeInput(u *unstructured.Unstructured) string {
	ns := u.GetNamespace()
	if ns == "" {
		ns = "default"
	}
	return fmt.Sprintf("%s %s/%s", u.GetKind(), ns, u.GetName())
}
