// Package istiocheck validates generated Istio objects the way Istio does: its own validation
// package, and the OpenAPI schema of Istio's CRDs (pinned istio.io/istio module) without pruned
// fields. It is imported by tests only: istio.io/istio is a heavy dependency.
package istiocheck

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"github.com/hashicorp/go-multierror"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/crd"
	"istio.io/istio/pkg/config/schema/collections"
	"istio.io/istio/pkg/util/protomarshal"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// IstioModule is the module path holding Istio's CRDs.
const IstioModule = "istio.io/istio"

// envoyFilterWarning is the warning Istio gives every EnvoyFilter; the Envoy rung uses one on purpose
// (DESIGN.md section 5). Any other warning fails.
const envoyFilterWarning = "EnvoyFilter exposes internal implementation details"

var (
	once      sync.Once
	validator *crd.Validator
	loadErr   error
)

// CRDFile is Istio's generated CRD bundle in the istio.io/istio version this module requires.
func CRDFile() (string, error) {
	// go list can fail for a moment while other go commands hold the module cache's locks (the
	// test binaries of several packages at once): tried again before giving up, with its stderr.
	var out []byte
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var stderr strings.Builder
		cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", IstioModule)
		cmd.Stderr = &stderr
		if out, err = cmd.Output(); err == nil {
			break
		}
		err = fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
		time.Sleep(time.Second)
	}
	if err != nil {
		return "", fmt.Errorf("locate module %s (go list -m): %w", IstioModule, err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return "", fmt.Errorf("module %s is not downloaded: run go mod download %s", IstioModule, IstioModule)
	}
	return filepath.Join(dir, "manifests", "charts", "base", "files", "crd-all.gen.yaml"), nil
}

func schemaValidator() (*crd.Validator, error) {
	once.Do(func() {
		var f string
		if f, loadErr = CRDFile(); loadErr != nil {
			return
		}
		validator, loadErr = crd.NewValidatorFromFiles(f)
	})
	return validator, loadErr
}

// Validate checks one generated object (a typed istio client-go object or unstructured) against
// Istio's CRD schema (no unknown fields) and Istio's own semantic validation. Warnings from Istio's
// validation are returned as errors too: generated objects must be clean.
func Validate(obj runtime.Object) error {
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return fmt.Errorf("to unstructured: %w", err)
	}
	u := &unstructured.Unstructured{Object: content}
	v, err := schemaValidator()
	if err != nil {
		return err
	}
	if err := v.ValidateCustomResource(u); err != nil {
		return fmt.Errorf("schema: %w", err)
	}

	gvk := u.GroupVersionKind()
	s, ok := collections.All.FindByGroupVersionAliasesKind(config.GroupVersionKind{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind})
	if !ok {
		return fmt.Errorf("istio has no schema for %s", gvk)
	}
	spec, err := s.NewInstance()
	if err != nil {
		return err
	}
	js, err := json.Marshal(u.Object["spec"])
	if err != nil {
		return err
	}
	if err := protomarshal.ApplyJSONStrict(string(js), spec.(proto.Message)); err != nil {
		return fmt.Errorf("decode spec as %s: %w", gvk.Kind, err)
	}
	cfg := config.Config{
		Meta: config.Meta{
			GroupVersionKind: s.GroupVersionKind(),
			Name:             u.GetName(),
			Namespace:        u.GetNamespace(),
			Labels:           u.GetLabels(),
			Annotations:      u.GetAnnotations(),
		},
		Spec: spec,
	}
	if gvk.Kind == "EnvoyFilter" {
		if err := validateEnvoyRBAC(u); err != nil {
			return err
		}
	}
	warn, err := s.ValidateConfig(cfg)
	if err != nil {
		return fmt.Errorf("istio validation of %s %s/%s: %w", gvk.Kind, u.GetNamespace(), u.GetName(), err)
	}
	if warn != nil && !onlyEnvoyFilterWarning(gvk.Kind, warn) {
		return fmt.Errorf("istio validation warning for %s %s/%s: %w", gvk.Kind, u.GetNamespace(), u.GetName(), warn)
	}
	return nil
}

// validateEnvoyRBAC parses every patch value that configures Envoy's RBAC HTTP filter as
// go-control-plane's RBAC type and runs its generated validation.
func validateEnvoyRBAC(u *unstructured.Unstructured) error {
	patches, _, _ := unstructured.NestedSlice(u.Object, "spec", "configPatches")
	for i, p := range patches {
		tc, ok, _ := unstructured.NestedMap(p.(map[string]any), "patch", "value", "typed_config")
		if !ok {
			continue
		}
		if tc["@type"] != "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC" {
			return fmt.Errorf("configPatches[%d]: unexpected typed_config %v", i, tc["@type"])
		}
		body := map[string]any{}
		for k, v := range tc {
			if k != "@type" {
				body[k] = v
			}
		}
		js, err := json.Marshal(body)
		if err != nil {
			return err
		}
		cfg := &rbacv3.RBAC{}
		if err := protojson.Unmarshal(js, cfg); err != nil {
			return fmt.Errorf("configPatches[%d]: not an Envoy RBAC config: %w", i, err)
		}
		if err := cfg.ValidateAll(); err != nil {
			return fmt.Errorf("configPatches[%d]: invalid Envoy RBAC config: %w", i, err)
		}
		for name, pol := range cfg.GetRules().GetPolicies() {
			if err := checkRegexes(pol); err != nil {
				return fmt.Errorf("configPatches[%d] policy %s: %w", i, name, err)
			}
		}
	}
	return nil
}

// checkRegexes compiles every safe_regex of a policy as RE2 (Envoy's engine).
func checkRegexes(m proto.Message) error {
	var err error
	js, _ := protojson.Marshal(m)
	var walk func(any)
	walk = func(v any) {
		switch t := v.(type) {
		case map[string]any:
			if sr, ok := t["safeRegex"].(map[string]any); ok {
				if re, ok := sr["regex"].(string); ok {
					if _, e := regexp.Compile(re); e != nil && err == nil {
						err = e
					}
				}
			}
			for _, c := range t {
				walk(c)
			}
		case []any:
			for _, c := range t {
				walk(c)
			}
		}
	}
	var doc any
	if e := json.Unmarshal(js, &doc); e != nil {
		return e
	}
	walk(doc)
	return err
}

// onlyEnvoyFilterWarning reports whether every warning is the one Istio gives any EnvoyFilter.
func onlyEnvoyFilterWarning(kind string, warn error) bool {
	if kind != "EnvoyFilter" {
		return false
	}
	ws := []error{warn}
	var me *multierror.Error
	if errors.As(warn, &me) {
		ws = me.Errors
	}
	for _, w := range ws {
		if !strings.Contains(w.Error(), envoyFilterWarning) {
			return false
		}
	}
	return true
}
