package translate

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// The input types translate owns for the SMI kinds that have no usable hub Go type (the hub
// versions of TrafficSplit and TrafficTarget are smi-sdk-go's). internal/smi/normalize decodes
// objects of any version into them.

// HTTPRouteGroup is an HTTPRouteGroup with its headers in one shape: an ordered list.
type HTTPRouteGroup struct {
	metav1.ObjectMeta
	Matches []HTTPMatch
}

// HTTPMatch is one named match of an HTTPRouteGroup; all its fields must match.
type HTTPMatch struct {
	Name      string
	Methods   []string
	PathRegex string
	// Headers in the order written (a map is sorted by name).
	Headers []Header
}

// Header is one header name and the RE2 regex its value must fully match.
type Header struct {
	Name, Value string
}

// PortRoute is a TCPRoute or UDPRoute: named ports (none means every port).
type PortRoute struct {
	metav1.ObjectMeta
	Kind  string
	Ports []int
}

// FieldError is input that cannot be read, named by its field path (e.g. headers of a wrong shape).
type FieldError struct {
	Field, Reason, Message string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }
