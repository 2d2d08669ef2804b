package normalize

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"

	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"

	"github.com/smi2istio/smi2istio/internal/smi/crds"
	"github.com/smi2istio/smi2istio/translate"
)

// Fail closed on fields the schema does not know. smi2istio's CRDs prune them, but another
// installer's (Open Service Mesh's, kept with --smi-crds=foreign) may keep them
// (x-kubernetes-preserve-unknown-fields), and a dump read by the CLI keeps whatever it holds. A
// misspelt field ("pathRegexp", "matchs") read as absent would widen a rule (every path, every
// match): the object is refused instead, naming the field. Objects are checked against
// smi2istio's own schema of the version they come in.

// schemas are the OpenAPI schemas of smi2istio's CRDs, by "<group>/<version>/<kind>".
var schemas = sync.OnceValue(func() map[string]*apiextv1.JSONSchemaProps {
	out := map[string]*apiextv1.JSONSchemaProps{}
	for _, c := range crds.All() {
		for _, v := range c.Spec.Versions {
			if v.Schema != nil && v.Schema.OpenAPIV3Schema != nil {
				out[c.Spec.Group+"/"+v.Name+"/"+c.Spec.Names.Kind] = v.Schema.OpenAPIV3Schema
			}
		}
	}
	return out
})

// checkFields refuses an object (its JSON) with a field its version's schema does not have, outside
// metadata and status.
func checkFields(raw []byte, apiVersion, kind string) error {
	s, ok := schemas()[apiVersion+"/"+kind]
	if !ok {
		return nil // an unknown version: conversion refuses it
	}
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		return fmt.Errorf("decode %s: %w", kind, err)
	}
	var unknown []string
	for k, v := range obj {
		switch k {
		case "apiVersion", "kind", "metadata", "status":
			continue
		}
		p, ok := s.Properties[k]
		if !ok {
			unknown = append(unknown, k)
			continue
		}
		unknown = append(unknown, unknownFields(v, &p, k)...)
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	return &translate.FieldError{Field: unknown[0], Reason: "UnknownField",
		Message: fmt.Sprintf("unknown field(s) %s in %s %s: a field read as absent could widen what the object allows; fix the spelling",
			strings.Join(unknown, ", "), kind, apiVersion)}
}

func unknownFields(v any, s *apiextv1.JSONSchemaProps, path string) []string {
	if s == nil || (s.XPreserveUnknownFields != nil && *s.XPreserveUnknownFields) {
		return nil
	}
	var out []string
	switch v := v.(type) {
	case map[string]any:
		for k, val := range v {
			if p, ok := s.Properties[k]; ok {
				out = append(out, unknownFields(val, &p, path+"."+k)...)
				continue
			}
			if ap := s.AdditionalProperties; ap != nil && (ap.Allows || ap.Schema != nil) {
				out = append(out, unknownFields(val, ap.Schema, path+"."+k)...)
				continue
			}
			out = append(out, path+"."+k)
		}
	case []any:
		if s.Items == nil || s.Items.Schema == nil {
			return nil
		}
		for i, item := range v {
			out = append(out, unknownFields(item, s.Items.Schema, fmt.Sprintf("%s[%d]", path, i))...)
		}
	}
	return out
}
