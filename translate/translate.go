// Package translate turns fetched SMI objects into the Istio objects that enforce them. It is pure:
// no client, clock or I/O; the controllers and the offline CLI both call it.
package translate

import (
	"fmt"
	"strings"
)

// Labels and values on every generated object.
const (
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "smi2istio"
	// SourceLabel names the SMI object (kind.group/name) an output was generated from.
	SourceKindLabel = "smi2istio.io/source-kind"
	SourceNameLabel = "smi2istio.io/source-name"
	// DestinationLabel names the destination ServiceAccount of access policy outputs.
	DestinationLabel = "smi2istio.io/destination"
)

// Mesh holds the mesh-wide settings translation depends on.
type Mesh struct {
	// ClusterDomain is the DNS suffix of Services (default cluster.local).
	ClusterDomain string `json:"clusterDomain,omitempty"`
	// TrustDomain of workload identities, from Istio's mesh config (default cluster.local).
	TrustDomain string `json:"trustDomain,omitempty"`
	// RegexPolicy for regexes an AuthorizationPolicy cannot express (default Envoy).
	RegexPolicy RegexPolicy `json:"regexPolicy,omitempty"`
	// PathTemplates allows {*} path templates in AuthorizationPolicies (Istio >= 1.22).
	PathTemplates bool `json:"pathTemplates,omitempty"`
}

func (m Mesh) trustDomain() string {
	if m.TrustDomain == "" {
		return "cluster.local"
	}
	return m.TrustDomain
}

func (m Mesh) regexPolicy() RegexPolicy {
	if m.RegexPolicy == "" {
		return RegexEnvoy
	}
	return m.RegexPolicy
}

func (m Mesh) domain() string {
	if m.ClusterDomain == "" {
		return "cluster.local"
	}
	return m.ClusterDomain
}

// Finding is something the translation reports about a field of the source object.
type Finding struct {
	// Field is the path in the source object, e.g. spec.backends[1].service.
	Field string `json:"field"`
	// Reason is CamelCase and doubles as a condition reason.
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

func (f Finding) String() string { return fmt.Sprintf("%s: %s: %s", f.Field, f.Reason, f.Message) }

// InvalidError is input that cannot be translated at all (the object is not Accepted).
type InvalidError struct {
	Finding
}

func (e *InvalidError) Error() string { return e.Field + ": " + e.Message }

func invalid(field, reason, format string, args ...any) *InvalidError {
	return &InvalidError{Finding{Field: field, Reason: reason, Message: fmt.Sprintf(format, args...)}}
}

func finding(field, reason, format string, args ...any) Finding {
	return Finding{Field: field, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// ServiceFQDN is the cluster-local DNS name of a Service.
func ServiceFQDN(name, namespace string, mesh Mesh) string { return fqdn(name, namespace, mesh) }

// fqdn is the cluster-local DNS name of a Service.
func fqdn(name, namespace string, mesh Mesh) string {
	return name + "." + namespace + ".svc." + mesh.domain()
}

// ParseServiceRef reads a TrafficSplit's spec.service: name, name.namespace, name.namespace.svc,
// ... up to the FQDN. It returns the Service name, which must be in the split's namespace.
func ParseServiceRef(ref, namespace string, mesh Mesh) (string, error) {
	parts := strings.Split(ref, ".")
	if ref == "" || parts[0] == "" {
		return "", fmt.Errorf("%q is not a Service name", ref)
	}
	if len(parts) == 1 {
		return parts[0], nil
	}
	if parts[1] != namespace {
		return "", fmt.Errorf("%q names a Service in namespace %q; the root Service must be in the TrafficSplit's namespace %q", ref, parts[1], namespace)
	}
	want := strings.Split("svc."+mesh.domain(), ".")
	rest := parts[2:]
	if len(rest) > len(want) {
		return "", fmt.Errorf("%q is not a Service name of the form name[.namespace[.svc[.%s]]]", ref, mesh.domain())
	}
	for i, p := range rest {
		if p != want[i] {
			return "", fmt.Errorf("%q is not a Service name of the form name[.namespace[.svc[.%s]]]", ref, mesh.domain())
		}
	}
	return parts[0], nil
}
