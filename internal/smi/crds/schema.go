package crds

import (
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/utils/ptr"
)

// Small builders for structural OpenAPI schemas. Every node has a type (or is explicitly
// int-or-string / preserve-unknown), as apiextensions.k8s.io/v1 requires.

type props = apiextv1.JSONSchemaProps

func str(desc string) props { return props{Type: "string", Description: desc} }

func nonEmptyStr(desc string) props {
	return props{Type: "string", Description: desc, MinLength: ptr.To[int64](1)}
}

// Names that reach Istio outputs (principals, selectors, hosts, label values) are checked as what
// Kubernetes says they are, so that none is read as a pattern there (a trailing * is a prefix
// match in a principal). The translator checks them too (for objects stored before these rules).
const (
	dns1123Label     = `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	dns1123Subdomain = `^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	dns1035Label     = `^[a-z]([-a-z0-9]*[a-z0-9])?$`
)

// nameStr is a non-empty string matching pattern, at most maxLen characters.
func nameStr(desc, pattern string, maxLen int64) props {
	return props{Type: "string", Description: desc, MinLength: ptr.To[int64](1), MaxLength: ptr.To(maxLen), Pattern: pattern}
}

func enumStr(desc string, values ...string) props {
	p := str(desc)
	for _, v := range values {
		p.Enum = append(p.Enum, apiextv1.JSON{Raw: []byte(`"` + v + `"`)})
	}
	return p
}

func port(desc string) props {
	return props{Type: "integer", Format: "int32", Description: desc, Minimum: ptr.To(1.0), Maximum: ptr.To(65535.0)}
}

func object(desc string, required []string, properties map[string]props) props {
	return props{Type: "object", Description: desc, Required: required, Properties: properties}
}

func array(desc string, items props) props {
	return props{Type: "array", Description: desc, Items: &apiextv1.JSONSchemaPropsOrArray{Schema: &items}}
}

// statusSchema is shared by every kind and version, so status never needs conversion.
func statusSchema() props {
	condition := object("Condition contains details for one aspect of the current state of this SMI object.",
		[]string{"type", "status", "lastTransitionTime", "reason", "message"},
		map[string]props{
			"type":               {Type: "string", Description: "Type of condition: Accepted, ResolvedRefs or Ready.", MaxLength: ptr.To[int64](316), Pattern: `^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$`},
			"status":             enumStr("Status of the condition.", "True", "False", "Unknown"),
			"observedGeneration": {Type: "integer", Format: "int64", Minimum: ptr.To(0.0), Description: "The metadata.generation the condition was set for."},
			"lastTransitionTime": {Type: "string", Format: "date-time", Description: "Last time the condition changed status."},
			"reason":             {Type: "string", Description: "CamelCase reason for the condition's last transition.", MinLength: ptr.To[int64](1), MaxLength: ptr.To[int64](1024), Pattern: `^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`},
			"message":            {Type: "string", Description: "Human readable message.", MaxLength: ptr.To[int64](32768)},
		})
	conditions := array("Conditions reported by smi2istio: Accepted, ResolvedRefs, Ready.", condition)
	conditions.XListType = ptr.To("map")
	conditions.XListMapKeys = []string{"type"}
	conditions.MaxItems = ptr.To[int64](16)
	return object("Status written by smi2istio.", nil, map[string]props{
		"observedGeneration": {Type: "integer", Format: "int64", Description: "The metadata.generation smi2istio last processed."},
		"conditions":         conditions,
	})
}

// root builds the top-level schema of one version: the kind's own fields plus metadata and status.
func root(desc string, required []string, fields map[string]props) *apiextv1.CustomResourceValidation {
	all := map[string]props{
		"apiVersion": str("APIVersion defines the versioned schema of this representation of an object."),
		"kind":       str("Kind is a string value representing the REST resource this object represents."),
		"metadata":   {Type: "object"},
		"status":     statusSchema(),
	}
	for k, v := range fields {
		all[k] = v
	}
	s := object(desc, required, all)
	return &apiextv1.CustomResourceValidation{OpenAPIV3Schema: &s}
}
