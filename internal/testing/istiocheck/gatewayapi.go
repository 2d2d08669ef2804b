package istiocheck

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"

	apiextensionsinternal "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	schemaobjectmeta "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/objectmeta"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"

	"github.com/smi2istio/smi2istio/internal/manifests"
)

// GatewayAPIModule is the module holding the Gateway API CRDs (the version go.mod requires is the
// one the pinned Istio uses).
const GatewayAPIModule = "sigs.k8s.io/gateway-api"

// gatewayAPIExperimental are the CRDs taken from the experimental channel instead of the standard
// one: TCPRoute there serves v1alpha2 besides v1 (clusters with older Gateway API releases only
// have v1alpha2).
var gatewayAPIExperimental = map[string]bool{"gateway.networking.k8s.io_tcproutes.yaml": true}

// GatewayAPICRDs is one multi-document YAML file holding the Gateway API CRDs of the
// sigs.k8s.io/gateway-api version go.mod requires: every CRD of the standard channel, with
// TCPRoute from the experimental channel (it serves v1 and v1alpha2). No other kind (the standard
// channel's ValidatingAdmissionPolicy is left out). The file is built once from the module's
// config/crd and cached in $SMI2ISTIO_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/smi2istio,
// as hack/lib.sh) under gateway-api/<version>/crds.yaml.
func GatewayAPICRDs() (string, error) {
	version, err := goList("-m", "-f", "{{.Version}}", GatewayAPIModule)
	if err != nil {
		return "", err
	}
	if version == "" {
		return "", fmt.Errorf("module %s is not in the module graph", GatewayAPIModule)
	}
	cache, err := cacheDir()
	if err != nil {
		return "", err
	}
	out := filepath.Join(cache, "gateway-api", version, "crds.yaml")
	if fi, err := os.Stat(out); err == nil && fi.Size() > 0 {
		return out, nil
	}
	dir, err := moduleDir(GatewayAPIModule, version)
	if err != nil {
		return "", err
	}
	data, err := gatewayAPIBundle(filepath.Join(dir, "config", "crd"), version)
	if err != nil {
		return "", err
	}
	if err := writeAtomic(out, data); err != nil {
		return "", err
	}
	return out, nil
}

func goList(args ...string) (string, error) {
	out, err := exec.Command("go", append([]string{"list"}, args...)...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("go list %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(ee.Stderr))
		}
		return "", fmt.Errorf("go list %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

// moduleDir downloads (if needed) module@version and returns its directory.
func moduleDir(module, version string) (string, error) {
	out, err := exec.Command("go", "mod", "download", "-json", module+"@"+version).Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s@%s: %w", module, version, err)
	}
	var info struct{ Dir, Error string }
	if err := json.Unmarshal(out, &info); err != nil {
		return "", fmt.Errorf("go mod download %s@%s: %w", module, version, err)
	}
	if info.Error != "" || info.Dir == "" {
		return "", fmt.Errorf("go mod download %s@%s: no module directory: %s", module, version, info.Error)
	}
	return info.Dir, nil
}

// cacheDir mirrors hack/lib.sh: SMI2ISTIO_CACHE, else ${XDG_CACHE_HOME:-$HOME/.cache}/smi2istio.
func cacheDir() (string, error) {
	if d := os.Getenv("SMI2ISTIO_CACHE"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "smi2istio"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("locate the cache (set SMI2ISTIO_CACHE): %w", err)
	}
	return filepath.Join(home, ".cache", "smi2istio"), nil
}

// gatewayAPIBundle concatenates the CRD files of the standard channel under crdDir, taking the
// experimental channel's file for the kinds in gatewayAPIExperimental. Files holding anything but
// CRDs are left out; each kept file is copied as published.
func gatewayAPIBundle(crdDir, version string) ([]byte, error) {
	files, err := filepath.Glob(filepath.Join(crdDir, "standard", "*.yaml"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# Gateway API CRDs of %s %s: the standard channel, TCPRoute from the experimental channel.\n",
		GatewayAPIModule, version)
	fmt.Fprintf(&buf, "# Generated by internal/testing/istiocheck.GatewayAPICRDs from the module's config/crd.\n")
	crds := 0
	for _, f := range files {
		base := filepath.Base(f)
		if base == "kustomization.yaml" {
			continue
		}
		if gatewayAPIExperimental[base] {
			f = filepath.Join(crdDir, "experimental", base)
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		docs, err := manifests.Decode(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		onlyCRDs := len(docs) > 0
		for _, d := range docs {
			onlyCRDs = onlyCRDs && d.GetKind() == "CustomResourceDefinition" && d.GetAPIVersion() == "apiextensions.k8s.io/v1"
		}
		if !onlyCRDs {
			continue
		}
		crds += len(docs)
		buf.WriteString("---\n")
		buf.Write(bytes.TrimPrefix(data, []byte("---\n")))
		if !bytes.HasSuffix(data, []byte("\n")) {
			buf.WriteByte('\n')
		}
	}
	if crds == 0 {
		return nil, fmt.Errorf("no Gateway API CRDs under %s", crdDir)
	}
	return buf.Bytes(), nil
}

func writeAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// gatewayCRD is what the apiserver checks a Gateway API object of one version against.
type gatewayCRD struct {
	structural *structuralschema.Structural
	validator  apiservervalidation.SchemaValidator
	cel        *cel.Validator
	namespaced bool
}

var (
	gatewayOnce    sync.Once
	gatewaySchemas map[schema.GroupVersionKind]*gatewayCRD
	gatewayErr     error
)

func gatewayAPISchemas() (map[schema.GroupVersionKind]*gatewayCRD, error) {
	gatewayOnce.Do(func() {
		var f string
		if f, gatewayErr = GatewayAPICRDs(); gatewayErr != nil {
			return
		}
		gatewaySchemas, gatewayErr = loadGatewaySchemas(f)
	})
	return gatewaySchemas, gatewayErr
}

func loadGatewaySchemas(path string) (map[schema.GroupVersionKind]*gatewayCRD, error) {
	objs, err := manifests.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[schema.GroupVersionKind]*gatewayCRD{}
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" {
			continue
		}
		crd := &apiextv1.CustomResourceDefinition{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, crd); err != nil {
			return nil, fmt.Errorf("decode CRD %s: %w", o.GetName(), err)
		}
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
			out[gvk] = &gatewayCRD{
				structural: structural,
				validator:  validator,
				cel:        cel.NewValidator(structural, true, celconfig.PerCallLimit),
				namespaced: crd.Spec.Scope == apiextv1.NamespaceScoped,
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no served CRD versions in %s", path)
	}
	return out, nil
}

// ValidateGatewayAPI checks one object of a Gateway API kind (typed or unstructured) as the
// apiserver does on create with the CRDs of GatewayAPICRDs and strict field validation: unknown
// fields, metadata, the OpenAPI schema, list types and the CEL x-kubernetes-validations (on the
// defaulted object, as the apiserver). It also refuses an object that CRD defaulting would change:
// a generated object must be stored as written, or its spec hash never matches the live one and
// it is rewritten on every reconcile.
func ValidateGatewayAPI(obj runtime.Object) error {
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return fmt.Errorf("to unstructured: %w", err)
	}
	// As sent over the wire: a JSON round trip (typed objects carry int64s, no float64s).
	js, err := json.Marshal(content)
	if err != nil {
		return err
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(js); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	delete(u.Object, "status")
	if md, ok := u.Object["metadata"].(map[string]any); ok && md["creationTimestamp"] == nil {
		delete(md, "creationTimestamp")
	}
	schemas, err := gatewayAPISchemas()
	if err != nil {
		return err
	}
	gvk := u.GroupVersionKind()
	cs := schemas[gvk]
	if cs == nil {
		return fmt.Errorf("%s is not served by the Gateway API CRDs", gvk)
	}
	name := fmt.Sprintf("%s %s/%s", gvk.Kind, u.GetNamespace(), u.GetName())
	if errs := cs.check(u); len(errs) > 0 {
		return fmt.Errorf("%s: %w", name, errs.ToAggregate())
	}
	return nil
}

func (cs *gatewayCRD) check(u *unstructured.Unstructured) field.ErrorList {
	obj := u.DeepCopy().Object
	var errs field.ErrorList
	meta, _, unknownMeta, err := schemaobjectmeta.GetObjectMetaWithOptions(obj, schemaobjectmeta.ObjectMetaOptions{ReturnUnknownFieldPaths: true})
	if err != nil {
		return field.ErrorList{field.Invalid(field.NewPath("metadata"), nil, err.Error())}
	}
	unknown := append([]string(nil), unknownMeta...)
	unknown = append(unknown, pruning.PruneWithOptions(obj, cs.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})...)
	sort.Strings(unknown)
	for _, p := range unknown {
		errs = append(errs, field.Invalid(field.NewPath(p), nil, "unknown field"))
	}
	if meta == nil {
		errs = append(errs, field.Required(field.NewPath("metadata"), "metadata.name is required"))
	} else {
		errs = append(errs, apimachineryvalidation.ValidateObjectMeta(meta, cs.namespaced, apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))...)
	}
	before := runtime.DeepCopyJSON(obj)
	defaulting.Default(obj, cs.structural)
	if !reflect.DeepEqual(before, obj) {
		errs = append(errs, field.Invalid(field.NewPath("spec"), diffPaths("", before, obj),
			"CRD defaulting changes the object: write the defaulted values"))
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

// diffPaths lists the paths where a and b differ (for the defaulting error).
func diffPaths(path string, a, b any) []string {
	if reflect.DeepEqual(a, b) {
		return nil
	}
	switch ta := a.(type) {
	case map[string]any:
		tb, ok := b.(map[string]any)
		if !ok {
			return []string{path}
		}
		keys := map[string]bool{}
		for k := range ta {
			keys[k] = true
		}
		for k := range tb {
			keys[k] = true
		}
		var sorted []string
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		var out []string
		for _, k := range sorted {
			out = append(out, diffPaths(path+"."+k, ta[k], tb[k])...)
		}
		return out
	case []any:
		tb, ok := b.([]any)
		if !ok || len(ta) != len(tb) {
			return []string{path}
		}
		var out []string
		for i := range ta {
			out = append(out, diffPaths(fmt.Sprintf("%s[%d]", path, i), ta[i], tb[i])...)
		}
		return out
	}
	return []string{path}
}
