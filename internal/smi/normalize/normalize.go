// Package normalize decodes SMI objects of any version into the hub Go types that translate and
// the controllers work with, through the same conversion the webhook serves.
package normalize

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/smi2istio/smi2istio/translate"

	accessv1alpha2 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/access/v1alpha2"
	splitv1alpha4 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/split/v1alpha4"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/smi2istio/smi2istio/internal/smi/conversion"
)

// Hub API versions: the superset versions objects are read in.
const (
	TrafficSplitAPIVersion   = "split.smi-spec.io/v1alpha4"
	HTTPRouteGroupAPIVersion = "specs.smi-spec.io/v1alpha4"
)

// Object is an SMI object as read: unstructured, or in a compact type of the cache
// (internal/cached); either way with its apiVersion and kind set, and encoding into its JSON.
type Object interface {
	metav1.Object
	runtime.Object
}

// toHub converts an object of any served version to apiVersion and decodes it into out.
func toHub(u Object, apiVersion string, out any) error {
	gvk := u.GetObjectKind().GroupVersionKind()
	raw, err := json.Marshal(u)
	if err != nil {
		return fmt.Errorf("encode %s %s/%s: %w", gvk.Kind, u.GetNamespace(), u.GetName(), err)
	}
	if err := checkFields(raw, gvk.GroupVersion().String(), gvk.Kind); err != nil {
		return err
	}
	if gvk.GroupVersion().String() != apiVersion {
		if raw, err = conversion.Convert(raw, apiVersion); err != nil {
			return &translate.FieldError{Field: "spec", Reason: "InvalidField",
				Message: fmt.Sprintf("%s %s/%s cannot be read: %v", gvk.Kind, u.GetNamespace(), u.GetName(), err)}
		}
	}
	if err := json.Unmarshal(raw, out); err != nil {
		// Input of the wrong type (a CRD that does not validate kept it): the object is refused,
		// naming the field, as a misspelt one is.
		field := "spec"
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			field = te.Field
		}
		return &translate.FieldError{Field: field, Reason: "InvalidField",
			Message: fmt.Sprintf("%s %s/%s: %s cannot be read as %s: %v", gvk.Kind, u.GetNamespace(), u.GetName(), field, apiVersion, err)}
	}
	return nil
}

// ReadTrafficSplit reads a TrafficSplit of any version. v1alpha1 weights arrive in milli-units, so
// weights stay relative to each other.
func ReadTrafficSplit(u Object) (*splitv1alpha4.TrafficSplit, error) {
	ts := &splitv1alpha4.TrafficSplit{}
	if err := toHub(u, TrafficSplitAPIVersion, ts); err != nil {
		return nil, err
	}
	return ts, nil
}

type rawHTTPRouteGroup struct {
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Matches []struct {
			Name      string          `json:"name"`
			Methods   []string        `json:"methods"`
			PathRegex string          `json:"pathRegex"`
			Headers   json.RawMessage `json:"headers"`
		} `json:"matches"`
	} `json:"spec"`
}

// ReadHTTPRouteGroup reads an HTTPRouteGroup of any version, accepting both header shapes.
func ReadHTTPRouteGroup(u Object) (*translate.HTTPRouteGroup, error) {
	var raw rawHTTPRouteGroup
	if err := toHub(u, HTTPRouteGroupAPIVersion, &raw); err != nil {
		return nil, err
	}
	g := &translate.HTTPRouteGroup{ObjectMeta: raw.ObjectMeta}
	for i, m := range raw.Spec.Matches {
		headers, err := parseHeaders(m.Headers, fmt.Sprintf("spec.matches[%d].headers", i))
		if err != nil {
			return nil, err
		}
		g.Matches = append(g.Matches, translate.HTTPMatch{Name: m.Name, Methods: m.Methods, PathRegex: m.PathRegex, Headers: headers})
	}
	return g, nil
}

func parseHeaders(raw json.RawMessage, field string) ([]translate.Header, error) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return nil, nil
	}
	bad := &translate.FieldError{Field: field, Reason: "InvalidHeaders",
		Message: "headers must be a map of header name to regex, or a list of single-entry maps"}
	var asMap map[string]string
	if strings.HasPrefix(s, "{") {
		if err := json.Unmarshal(raw, &asMap); err != nil {
			return nil, bad
		}
		return sortedHeaders(asMap), nil
	}
	var asList []map[string]string
	if err := json.Unmarshal(raw, &asList); err != nil {
		return nil, bad
	}
	var out []translate.Header
	for _, m := range asList {
		out = append(out, sortedHeaders(m)...)
	}
	return out, nil
}

func sortedHeaders(m map[string]string) []translate.Header {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	out := make([]translate.Header, 0, len(m))
	for _, n := range names {
		out = append(out, translate.Header{Name: n, Value: m[n]})
	}
	return out
}

// Hub API versions of the access kinds.
const (
	TrafficTargetAPIVersion = "access.smi-spec.io/v1alpha2" // the only version with spec and destination.port
	TCPRouteAPIVersion      = "specs.smi-spec.io/v1alpha4"
)

// ReadTrafficTarget reads a TrafficTarget of any version (v1alpha1's flat layout and
// destination.port included).
func ReadTrafficTarget(u Object) (*accessv1alpha2.TrafficTarget, error) {
	tt := &accessv1alpha2.TrafficTarget{}
	if err := toHub(u, TrafficTargetAPIVersion, tt); err != nil {
		return nil, err
	}
	return tt, nil
}

// ReadPortRoute reads a TCPRoute of any version, or a UDPRoute.
func ReadPortRoute(u Object) (*translate.PortRoute, error) {
	var raw struct {
		metav1.ObjectMeta `json:"metadata"`
		Spec              struct {
			Matches struct {
				Ports []int `json:"ports"`
			} `json:"matches"`
		} `json:"spec"`
	}
	gvk := u.GetObjectKind().GroupVersionKind()
	apiVersion := TCPRouteAPIVersion
	if gvk.Kind == "UDPRoute" {
		apiVersion = gvk.GroupVersion().String()
	}
	if err := toHub(u, apiVersion, &raw); err != nil {
		return nil, err
	}
	return &translate.PortRoute{ObjectMeta: raw.ObjectMeta, Kind: gvk.Kind, Ports: raw.Spec.Matches.Ports}, nil
}
