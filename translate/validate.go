package translate

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	networkingapi "istio.io/api/networking/v1alpha3"
	securityapi "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	networkingv1beta1 "istio.io/client-go/pkg/apis/networking/v1beta1"
	securityv1beta1 "istio.io/client-go/pkg/apis/security/v1beta1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	metavalidation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/smi2istio/smi2istio/translate/regex"
)

// ReasonInvalidOutput is the reason of an *InvalidError for a source whose generated object fails
// ValidateOutput: nothing of that source is applied.
const ReasonInvalidOutput = "InvalidOutput"

// rbacFilterType is the typed_config of the Envoy rung's filter.
const rbacFilterType = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"

// maxRegexLen is the longest regex Istio's validation accepts (it approximates Envoy's RE2
// program size limit by the length).
const maxRegexLen = 1024

// headerName is an HTTP header name as Envoy and Istio accept it: an RFC 7230 token, or a
// pseudo-header.
var headerName = regexp.MustCompile("^:?[0-9a-zA-Z!#$%&'*+\\-.^_|~`]+$")

// nameKind is what a name of the input must be to reach an output safely.
type nameKind int

const (
	serviceAccountName nameKind = iota // DNS-1123 subdomain, as Kubernetes requires
	namespaceName                      // DNS-1123 label
	labelValue                         // a label value: at most 63 characters
)

// checkName refuses a name that is not of every kind given: in a principal, a selector or a label
// it would be read as a pattern (Istio reads a trailing or leading * as a wildcard) or rejected.
func checkName(field, name string, kinds ...nameKind) *InvalidError {
	for _, k := range kinds {
		var msgs []string
		var what string
		switch k {
		case serviceAccountName:
			msgs, what = validation.IsDNS1123Subdomain(name), "a ServiceAccount name (DNS-1123 subdomain)"
		case namespaceName:
			msgs, what = validation.IsDNS1123Label(name), "a namespace name (DNS-1123 label)"
		case labelValue:
			msgs, what = validation.IsValidLabelValue(name), "a label value, as it is written on the outputs"
		}
		if len(msgs) > 0 {
			return invalid(field, "InvalidName", "%q is not %s: %s", name, what, strings.Join(msgs, "; "))
		}
	}
	return nil
}

// ValidateOutput checks one generated object the way Istio's validation checks the fields
// smi2istio emits, and, for an EnvoyFilter, the way Envoy checks the RBAC filter it carries (the
// filter's own proto validation, RE2 regexes, no empty or case-folded safe_regex): istiod accepts
// a filter Envoy refuses, and a sidecar that refuses a listener keeps its old one, so later
// revocations would never take effect. It also refuses what smi2istio never emits on purpose: a
// `*` in a principal, an ALLOW rule without sources, an object kind it does not generate.
// It is pure; the error names the object.
func ValidateOutput(obj runtime.Object) error {
	if u, ok := obj.(*unstructured.Unstructured); ok {
		typed, err := typedOutput(u)
		if err != nil {
			return err
		}
		obj = typed
	}
	var (
		meta    metav1.Object
		tm      metav1.TypeMeta
		kind    string
		apiVers []string
		errs    []error
	)
	switch o := obj.(type) {
	case *securityv1beta1.AuthorizationPolicy:
		meta, tm, kind, apiVers = o, o.TypeMeta, "AuthorizationPolicy", []string{"security.istio.io/v1beta1", "security.istio.io/v1"}
		errs = validateAuthorizationPolicy(&o.Spec)
	case *securityv1beta1.PeerAuthentication:
		meta, tm, kind, apiVers = o, o.TypeMeta, "PeerAuthentication", []string{"security.istio.io/v1beta1", "security.istio.io/v1"}
		errs = validatePeerAuthentication(&o.Spec)
	case *networkingv1alpha3.EnvoyFilter:
		meta, tm, kind, apiVers = o, o.TypeMeta, "EnvoyFilter", []string{"networking.istio.io/v1alpha3"}
		errs = validateEnvoyFilter(&o.Spec)
	case *networkingv1beta1.VirtualService:
		meta, tm, kind, apiVers = o, o.TypeMeta, "VirtualService", []string{"networking.istio.io/v1beta1", "networking.istio.io/v1alpha3", "networking.istio.io/v1"}
		errs = validateVirtualService(&o.Spec)
	case *networkingv1beta1.DestinationRule:
		meta, tm, kind, apiVers = o, o.TypeMeta, "DestinationRule", []string{"networking.istio.io/v1beta1", "networking.istio.io/v1alpha3", "networking.istio.io/v1"}
		errs = validateDestinationRule(&o.Spec)
	default:
		return fmt.Errorf("validate %T: not an object smi2istio generates", obj)
	}
	if tm.Kind != kind || !contains(apiVers, tm.APIVersion) {
		errs = append(errs, fmt.Errorf("apiVersion/kind %s %s: want kind %s in one of %v", tm.APIVersion, tm.Kind, kind, apiVers))
	}
	errs = append(errs, validateMeta(meta)...)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s %s/%s: %w", kind, meta.GetNamespace(), meta.GetName(), err)
	}
	return nil
}

// Validate checks every output of the split with ValidateOutput. The error is an *InvalidError
// with reason InvalidOutput naming the first object that fails: nothing of the split is applied.
func (r *SplitResult) Validate() error {
	for _, o := range r.Objects() {
		if err := ValidateOutput(o); err != nil {
			return invalid("spec", ReasonInvalidOutput, "the generated %v; nothing is applied for this TrafficSplit", err)
		}
	}
	return nil
}

// typedOutput decodes an unstructured object into the client-go type of its kind: the spec with
// protojson, in one pass, refusing a field the proto does not know and a null where it holds a
// value (the types' own UnmarshalJSON, github.com/golang/protobuf's jsonpb, re-reads each nested
// message, ignores unknown fields — what an apply with strict field validation refuses — and reads
// a null list element as ""; protojson also reads "080" as 80 for an integer map key, which
// canonicalPortKeys refuses), the rest (apiVersion, kind, metadata, status) through encoding/json
// as before (small, and read as the types read it).
// TestTypedOutputDecodesAsTheTypes holds it to the types' decoding.
func typedOutput(u *unstructured.Unstructured) (runtime.Object, error) {
	var (
		obj  runtime.Object
		spec proto.Message
	)
	switch u.GetKind() {
	case "AuthorizationPolicy":
		o := &securityv1beta1.AuthorizationPolicy{}
		obj, spec = o, &o.Spec
	case "PeerAuthentication":
		o := &securityv1beta1.PeerAuthentication{}
		obj, spec = o, &o.Spec
	case "EnvoyFilter":
		o := &networkingv1alpha3.EnvoyFilter{}
		obj, spec = o, &o.Spec
	case "VirtualService":
		o := &networkingv1beta1.VirtualService{}
		obj, spec = o, &o.Spec
	case "DestinationRule":
		o := &networkingv1beta1.DestinationRule{}
		obj, spec = o, &o.Spec
	default:
		return nil, fmt.Errorf("validate %s %s/%s: not a kind smi2istio generates", u.GetKind(), u.GetNamespace(), u.GetName())
	}
	rest := make(map[string]any, len(u.Object))
	for k, v := range u.Object {
		if k != "spec" {
			rest[k] = v
		}
	}
	js, err := json.Marshal(rest)
	if err == nil {
		err = json.Unmarshal(js, obj)
	}
	if err != nil {
		return nil, fmt.Errorf("validate %s %s/%s: decode: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	if s, ok := u.Object["spec"]; ok && s != nil {
		js, err := json.Marshal(s)
		if err != nil {
			return nil, fmt.Errorf("validate %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
		if err := protojson.Unmarshal(js, spec); err != nil {
			return nil, fmt.Errorf("validate %s %s/%s: decode spec: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
		if err := canonicalPortKeys(s); err != nil {
			return nil, fmt.Errorf("validate %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
	}
	return obj, nil
}

// canonicalPortKeys refuses a spec.portLevelMtls key (the one map with integer keys among the kinds
// smi2istio writes) that is not a port number written canonically: protojson reads "080" as 80,
// but jsonpb, which istiod decodes with, refuses it, and one object istiod cannot decode stops
// its view of every PeerAuthentication.
func canonicalPortKeys(spec any) error {
	m, _ := spec.(map[string]any)
	ports, _ := m["portLevelMtls"].(map[string]any)
	for k := range ports {
		if n, err := strconv.ParseUint(k, 10, 32); err != nil || strconv.FormatUint(n, 10) != k {
			return fmt.Errorf("spec.portLevelMtls: key %q is not a port number written as istiod reads it", k)
		}
	}
	return nil
}

func contains(xs []string, x string) bool {
	for _, s := range xs {
		if s == x {
			return true
		}
	}
	return false
}

func validateMeta(m metav1.Object) []error {
	var errs []error
	for _, msg := range validation.IsDNS1123Subdomain(m.GetName()) {
		errs = append(errs, fmt.Errorf("metadata.name %q: %s", m.GetName(), msg))
	}
	for _, msg := range validation.IsDNS1123Label(m.GetNamespace()) {
		errs = append(errs, fmt.Errorf("metadata.namespace %q: %s", m.GetNamespace(), msg))
	}
	if err := metavalidation.ValidateLabels(m.GetLabels(), field.NewPath("metadata", "labels")).ToAggregate(); err != nil {
		errs = append(errs, err)
	}
	if err := apivalidation.ValidateAnnotations(m.GetAnnotations(), field.NewPath("metadata", "annotations")).ToAggregate(); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// validateSelector checks workload selector labels as Kubernetes label selectors and Istio do: a
// selector, when present, selects by at least one valid label and never by a wildcard.
func validateSelector(path string, labels map[string]string) []error {
	if len(labels) == 0 {
		return []error{fmt.Errorf("%s: a selector without labels selects every workload of the namespace", path)}
	}
	var errs []error
	if err := metavalidation.ValidateLabels(labels, field.NewPath(path)).ToAggregate(); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// checkValues: every value non-empty; a `*` only alone, or once at the start or the end (what
// Istio reads as presence, suffix and prefix), and nowhere when wildcards are not wanted.
func checkValues(path string, values []string, wildcards bool) []error {
	var errs []error
	for i, v := range values {
		p := fmt.Sprintf("%s[%d]", path, i)
		n := strings.Count(v, "*")
		switch {
		case v == "":
			errs = append(errs, fmt.Errorf("%s: empty value", p))
		case n > 0 && !wildcards:
			errs = append(errs, fmt.Errorf("%s %q: a wildcard where smi2istio writes a name", p, v))
		case n > 1 || (n == 1 && v != "*" && !strings.HasPrefix(v, "*") && !strings.HasSuffix(v, "*")):
			errs = append(errs, fmt.Errorf("%s %q: a wildcard is only allowed alone or once at the start or the end", p, v))
		}
	}
	return errs
}

// checkPaths adds Istio's path template rules: braces only in whole {*} / {**} segments ({**} last),
// and, in a path holding a template, every other segment a non-empty RFC 3986 pchar literal.
func checkPaths(path string, values []string) []error {
	plain := make([]string, len(values)) // the wildcard rule applies outside template operators
	for i, v := range values {
		plain[i] = strings.NewReplacer("{**}", "x", "{*}", "x").Replace(v)
	}
	errs := checkValues(path, plain, true)
	for i, v := range values {
		p := fmt.Sprintf("%s[%d]", path, i)
		tmpl := strings.Contains(v, "{*}") || strings.Contains(v, "{**}")
		sawAny := false
		for _, seg := range strings.Split(strings.Trim(v, "/"), "/") {
			switch {
			case (seg == "{*}" || seg == "{**}") && sawAny:
				errs = append(errs, fmt.Errorf("%s %q: {**} must be the last operator", p, v))
			case seg == "{*}":
			case seg == "{**}":
				sawAny = true
			case strings.ContainsAny(seg, "{}"):
				errs = append(errs, fmt.Errorf("%s %q: '{' or '}' outside a path template", p, v))
			case tmpl && !pcharSegment.MatchString(seg):
				errs = append(errs, fmt.Errorf("%s %q: segment %q is not a valid path template literal", p, v, seg))
			}
		}
	}
	return errs
}

var pcharSegment = regexp.MustCompile(`^[a-zA-Z0-9-._~%!$&'()+,;:@=]+$`)

func checkPorts(path string, ports []string) []error {
	var errs []error
	for i, s := range ports {
		if n, err := strconv.ParseUint(s, 10, 16); err != nil || n == 0 || strconv.FormatUint(n, 10) != s {
			errs = append(errs, fmt.Errorf("%s[%d] %q: not a port number 1-65535", path, i, s))
		}
	}
	return errs
}

func checkHeaderName(path, name string) []error {
	if !headerName.MatchString(name) {
		return []error{fmt.Errorf("%s %q: not a valid HTTP header name", path, name)}
	}
	return nil
}

func checkRegex(path, re string) []error {
	switch {
	case re == "":
		return []error{fmt.Errorf("%s: empty regex", path)}
	case len(re) > maxRegexLen:
		return []error{fmt.Errorf("%s: regex longer than %d characters", path, maxRegexLen)}
	}
	if _, err := regexp.Compile(re); err != nil {
		return []error{fmt.Errorf("%s %q: not an RE2 regex: %w", path, re, err)}
	}
	// Envoy rejects a listener or route whose regex compiles to a larger RE2 program than Istio
	// allows, and the proxy then keeps its old configuration: revocations would stop.
	if n, err := regex.RE2ProgramSizeBound(re); err != nil || n > regex.RE2ProgramLimit {
		return []error{fmt.Errorf("%s: regex too large for Envoy's RE2 (program size up to %d, limit %d)", path, n, regex.RE2ProgramLimit)}
	}
	// Go accepts (?<name>...); RE2 releases before 2023, in the Envoys of older Istio versions, do not.
	if strings.Contains(re, "(?<") {
		return []error{fmt.Errorf("%s %q: named groups must be written (?P<name>...) for the RE2 of older Envoys", path, re)}
	}
	return nil
}

func validateAuthorizationPolicy(spec *securityapi.AuthorizationPolicy) []error {
	var errs []error
	if spec.Action != securityapi.AuthorizationPolicy_ALLOW {
		errs = append(errs, fmt.Errorf("spec.action %s: smi2istio writes ALLOW policies only", spec.Action))
	}
	if spec.GetProvider() != nil {
		errs = append(errs, errors.New("spec.provider: only for CUSTOM policies"))
	}
	errs = append(errs, validateTargets(spec.Selector, spec.TargetRef, spec.TargetRefs)...)
	for i, r := range spec.Rules {
		p := fmt.Sprintf("spec.rules[%d]", i)
		if r == nil {
			errs = append(errs, fmt.Errorf("%s: empty rule", p))
			continue
		}
		if len(r.From) == 0 {
			errs = append(errs, fmt.Errorf("%s.from: an ALLOW rule without sources allows every caller", p))
		}
		for j, f := range r.From {
			fp := fmt.Sprintf("%s.from[%d].source", p, j)
			s := f.GetSource()
			if s == nil {
				errs = append(errs, fmt.Errorf("%s: missing", fp))
				continue
			}
			if len(s.Principals) == 0 {
				errs = append(errs, fmt.Errorf("%s.principals: smi2istio names every source by its principal", fp))
			}
			if len(s.RequestPrincipals)+len(s.NotRequestPrincipals)+len(s.Namespaces)+len(s.NotNamespaces)+len(s.IpBlocks)+
				len(s.NotIpBlocks)+len(s.RemoteIpBlocks)+len(s.NotRemoteIpBlocks)+len(s.ServiceAccounts)+
				len(s.NotServiceAccounts)+len(s.TrustDomains)+len(s.NotTrustDomains) > 0 {
				errs = append(errs, fmt.Errorf("%s: only principals and notPrincipals are written by smi2istio", fp))
			}
			errs = append(errs, checkValues(fp+".principals", s.Principals, false)...)
			errs = append(errs, checkValues(fp+".notPrincipals", s.NotPrincipals, false)...)
		}
		if r.To != nil && len(r.To) == 0 {
			errs = append(errs, fmt.Errorf("%s.to: empty", p))
		}
		for j, t := range r.To {
			tp := fmt.Sprintf("%s.to[%d].operation", p, j)
			op := t.GetOperation()
			if op == nil {
				errs = append(errs, fmt.Errorf("%s: missing", tp))
				continue
			}
			if len(op.Ports)+len(op.Methods)+len(op.Paths)+len(op.Hosts)+len(op.NotPorts)+len(op.NotMethods)+len(op.NotPaths)+len(op.NotHosts) == 0 {
				errs = append(errs, fmt.Errorf("%s: empty operation", tp))
			}
			errs = append(errs, checkPorts(tp+".ports", op.Ports)...)
			errs = append(errs, checkPorts(tp+".notPorts", op.NotPorts)...)
			errs = append(errs, checkValues(tp+".methods", op.Methods, false)...)
			errs = append(errs, checkValues(tp+".notMethods", op.NotMethods, false)...)
			errs = append(errs, checkPaths(tp+".paths", op.Paths)...)
			errs = append(errs, checkPaths(tp+".notPaths", op.NotPaths)...)
			errs = append(errs, checkValues(tp+".hosts", op.Hosts, true)...)
			errs = append(errs, checkValues(tp+".notHosts", op.NotHosts, true)...)
		}
		for j, c := range r.When {
			cp := fmt.Sprintf("%s.when[%d]", p, j)
			if c == nil {
				errs = append(errs, fmt.Errorf("%s: empty condition", cp))
				continue
			}
			name, prefixed := strings.CutPrefix(c.Key, "request.headers[")
			name, suffixed := strings.CutSuffix(name, "]")
			if !prefixed || !suffixed {
				errs = append(errs, fmt.Errorf("%s.key %q: smi2istio writes request.headers[<name>] conditions only", cp, c.Key))
			} else {
				errs = append(errs, checkHeaderName(cp+".key", name)...)
			}
			if len(c.Values)+len(c.NotValues) == 0 {
				errs = append(errs, fmt.Errorf("%s: no values", cp))
			}
			errs = append(errs, checkValues(cp+".values", c.Values, true)...)
			errs = append(errs, checkValues(cp+".notValues", c.NotValues, true)...)
		}
	}
	return errs
}

// validateTargets: a workload selector (with labels) or policy target references, not both.
func validateTargets(sel *typev1beta1.WorkloadSelector, ref *typev1beta1.PolicyTargetReference, refs []*typev1beta1.PolicyTargetReference) []error {
	var errs []error
	if ref != nil {
		refs = append([]*typev1beta1.PolicyTargetReference{ref}, refs...)
	}
	if sel != nil && len(refs) > 0 {
		errs = append(errs, errors.New("spec: a selector and targetRefs together"))
	}
	if sel != nil {
		errs = append(errs, validateSelector("spec.selector.matchLabels", sel.MatchLabels)...)
	}
	for i, r := range refs {
		if r.GetKind() == "" {
			errs = append(errs, fmt.Errorf("spec.targetRefs[%d].kind: empty", i))
		}
		for _, msg := range validation.IsDNS1123Subdomain(r.GetName()) {
			errs = append(errs, fmt.Errorf("spec.targetRefs[%d].name %q: %s", i, r.GetName(), msg))
		}
	}
	return errs
}

func validatePeerAuthentication(spec *securityapi.PeerAuthentication) []error {
	var errs []error
	if spec.Selector != nil {
		errs = append(errs, validateSelector("spec.selector.matchLabels", spec.Selector.MatchLabels)...)
	}
	for p := range spec.PortLevelMtls {
		if p == 0 || p > 65535 {
			errs = append(errs, fmt.Errorf("spec.portLevelMtls: port %d out of range", p))
		}
	}
	if spec.PortLevelMtls != nil && spec.Selector == nil {
		errs = append(errs, errors.New("spec.portLevelMtls: needs a workload selector"))
	}
	return errs
}

func validateEnvoyFilter(spec *networkingapi.EnvoyFilter) []error {
	var errs []error
	if spec.WorkloadSelector == nil {
		errs = append(errs, errors.New("spec.workloadSelector: an EnvoyFilter without a selector applies to every workload of the namespace"))
	} else {
		errs = append(errs, validateSelector("spec.workloadSelector.labels", spec.WorkloadSelector.Labels)...)
	}
	if spec.GetTargetRefs() != nil {
		errs = append(errs, errors.New("spec.targetRefs: not written by smi2istio"))
	}
	if len(spec.ConfigPatches) != len(rbacFilterMatches) {
		errs = append(errs, fmt.Errorf("spec.configPatches: %d, want one per context the filter goes to (%d)", len(spec.ConfigPatches), len(rbacFilterMatches)))
	}
	for i, cp := range spec.ConfigPatches {
		p := fmt.Sprintf("spec.configPatches[%d]", i)
		if cp == nil || cp.Patch == nil || cp.Patch.Value == nil {
			errs = append(errs, fmt.Errorf("%s: no patch value", p))
			continue
		}
		if i >= len(rbacFilterMatches) || !proto.Equal(cp.Match, rbacFilterMatches[i]) || cp.ApplyTo != networkingapi.EnvoyFilter_HTTP_FILTER ||
			cp.Patch.Operation != networkingapi.EnvoyFilter_Patch_INSERT_FIRST || cp.Patch.FilterClass != networkingapi.EnvoyFilter_Patch_UNSPECIFIED {
			errs = append(errs, fmt.Errorf("%s: smi2istio inserts its RBAC filter first in the HTTP connection managers of inbound sidecar and gateway listeners only", p))
		}
		errs = append(errs, validateRBACFilter(p+".patch.value", cp.Patch.Value.AsMap())...)
	}
	return errs
}

// validateRBACFilter decodes an HTTP filter patch value as Envoy's RBAC filter and checks it as
// Envoy would before accepting the listener.
func validateRBACFilter(path string, value map[string]any) []error {
	if name, _ := value["name"].(string); name == "" {
		return []error{fmt.Errorf("%s.name: empty", path)}
	}
	tc, ok := value["typed_config"].(map[string]any)
	if !ok {
		return []error{fmt.Errorf("%s.typed_config: missing", path)}
	}
	if tc["@type"] != rbacFilterType {
		return []error{fmt.Errorf("%s.typed_config: @type %v, smi2istio writes %s only", path, tc["@type"], rbacFilterType)}
	}
	body := make(map[string]any, len(tc))
	for k, v := range tc {
		if k != "@type" {
			body[k] = v
		}
	}
	js, err := json.Marshal(body)
	if err != nil {
		return []error{fmt.Errorf("%s.typed_config: %w", path, err)}
	}
	cfg := &rbacv3.RBAC{}
	if err := protojson.Unmarshal(js, cfg); err != nil {
		return []error{fmt.Errorf("%s.typed_config: not an Envoy RBAC filter config: %w", path, err)}
	}
	var errs []error
	if err := cfg.ValidateAll(); err != nil {
		errs = append(errs, fmt.Errorf("%s.typed_config: %w", path, err))
	}
	walkMessages(cfg, func(m proto.Message) {
		switch t := m.(type) {
		case *matcherv3.StringMatcher:
			if re := t.GetSafeRegex(); re != nil && t.GetIgnoreCase() {
				errs = append(errs, fmt.Errorf("%s.typed_config: safe_regex %q with ignore_case, which Envoy rejects", path, re.GetRegex()))
			}
		case *matcherv3.RegexMatcher:
			errs = append(errs, checkRegex(path+".typed_config: safe_regex", t.GetRegex())...)
		}
	})
	return errs
}

// walkMessages calls fn on m and on every message it holds, in fields, lists and maps.
func walkMessages(m proto.Message, fn func(proto.Message)) {
	fn(m)
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				walkMessages(l.Get(i).Message().Interface(), fn)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				walkMessages(mv.Message().Interface(), fn)
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			walkMessages(v.Message().Interface(), fn)
		}
		return true
	})
}

// checkHost: a Service FQDN as smi2istio writes it (never a wildcard): DNS-1123 labels of at most
// 63 characters each, 253 in all.
func checkHost(path, host string) []error {
	msgs := validation.IsDNS1123Subdomain(host)
	if len(msgs) == 0 {
		for _, label := range strings.Split(host, ".") {
			msgs = append(msgs, validation.IsDNS1123Label(label)...)
		}
	}
	var errs []error
	for _, msg := range msgs {
		errs = append(errs, fmt.Errorf("%s %q: %s", path, host, msg))
	}
	return errs
}

// checkGateway: "mesh", a gateway name, or <namespace>/<name>, each a DNS-1123 label (Istio warns
// about the legacy <name>.<namespace> form).
func checkGateway(path, g string) []error {
	if g == "mesh" {
		return nil
	}
	parts := strings.SplitN(g, "/", 2)
	var msgs []string
	for _, p := range parts {
		msgs = append(msgs, validation.IsDNS1123Label(p)...)
	}
	if len(msgs) > 0 {
		return []error{fmt.Errorf("%s %q: not mesh, a gateway name or <namespace>/<name>: %s", path, g, strings.Join(msgs, "; "))}
	}
	return nil
}

func checkStringMatch(path string, sm *networkingapi.StringMatch) []error {
	switch m := sm.GetMatchType().(type) {
	case *networkingapi.StringMatch_Regex:
		return checkRegex(path+".regex", m.Regex)
	case *networkingapi.StringMatch_Exact:
		if m.Exact == "" {
			return []error{fmt.Errorf("%s.exact: empty", path)}
		}
	case *networkingapi.StringMatch_Prefix:
		if m.Prefix == "" {
			return []error{fmt.Errorf("%s.prefix: empty", path)}
		}
	}
	return nil
}

func checkDestination(path string, d *networkingapi.Destination) []error {
	if d == nil {
		return []error{fmt.Errorf("%s: missing", path)}
	}
	errs := checkHost(path+".host", d.Host)
	if d.Subset != "" {
		for _, msg := range validation.IsDNS1123Label(d.Subset) {
			errs = append(errs, fmt.Errorf("%s.subset %q: %s", path, d.Subset, msg))
		}
	}
	if d.Port != nil && (d.Port.Number == 0 || d.Port.Number > 65535) {
		errs = append(errs, fmt.Errorf("%s.port: %d out of range", path, d.Port.Number))
	}
	return errs
}

func validateVirtualService(spec *networkingapi.VirtualService) []error {
	var errs []error
	if len(spec.Hosts) == 0 {
		errs = append(errs, errors.New("spec.hosts: empty"))
	}
	for i, h := range spec.Hosts {
		errs = append(errs, checkHost(fmt.Sprintf("spec.hosts[%d]", i), h)...)
	}
	for i, g := range spec.Gateways {
		errs = append(errs, checkGateway(fmt.Sprintf("spec.gateways[%d]", i), g)...)
	}
	if len(spec.Http)+len(spec.Tcp)+len(spec.Tls) == 0 {
		errs = append(errs, errors.New("spec: no routes"))
	}
	for i, r := range spec.Http {
		p := fmt.Sprintf("spec.http[%d]", i)
		if len(r.Route) == 0 {
			errs = append(errs, fmt.Errorf("%s.route: empty", p))
		}
		if len(r.Match) == 0 && i < len(spec.Http)-1 {
			errs = append(errs, fmt.Errorf("%s: a route without matches before the last one makes the next ones unused", p))
		}
		for j, m := range r.Match {
			mp := fmt.Sprintf("%s.match[%d]", p, j)
			errs = append(errs, checkStringMatch(mp+".uri", m.Uri)...)
			errs = append(errs, checkStringMatch(mp+".method", m.Method)...)
			errs = append(errs, checkStringMatch(mp+".authority", m.Authority)...)
			errs = append(errs, checkStringMatch(mp+".scheme", m.Scheme)...)
			if m.GetUri().GetExact() == "" && m.GetUri().GetPrefix() == "" && m.GetUri().GetRegex() == "" && m.Uri != nil {
				errs = append(errs, fmt.Errorf("%s.uri: empty", mp))
			}
			for name, h := range m.Headers {
				errs = append(errs, checkHeaderName(mp+".headers", name)...)
				errs = append(errs, checkStringMatch(mp+".headers["+name+"]", h)...)
			}
			if m.Port > 65535 {
				errs = append(errs, fmt.Errorf("%s.port: %d out of range", mp, m.Port))
			}
		}
		total := int32(0)
		for j, d := range r.Route {
			errs = append(errs, checkDestination(fmt.Sprintf("%s.route[%d].destination", p, j), d.GetDestination())...)
			if d.GetWeight() < 0 || d.GetWeight() > 100 {
				errs = append(errs, fmt.Errorf("%s.route[%d].weight: %d out of 0-100", p, j, d.GetWeight()))
			}
			total += d.GetWeight()
		}
		if len(r.Route) > 1 && total == 0 {
			errs = append(errs, fmt.Errorf("%s.route: total weight 0", p))
		}
	}
	for i, r := range spec.Tcp {
		p := fmt.Sprintf("spec.tcp[%d]", i)
		if len(r.Route) == 0 {
			errs = append(errs, fmt.Errorf("%s.route: empty", p))
		}
		if len(r.Match) == 0 && i < len(spec.Tcp)-1 {
			errs = append(errs, fmt.Errorf("%s: a route without matches before the last one makes the next ones unused", p))
		}
		for j, m := range r.Match {
			if m.Port > 65535 {
				errs = append(errs, fmt.Errorf("%s.match[%d].port: %d out of range", p, j, m.Port))
			}
		}
		total := int32(0)
		for j, d := range r.Route {
			errs = append(errs, checkDestination(fmt.Sprintf("%s.route[%d].destination", p, j), d.GetDestination())...)
			if d.GetWeight() < 0 || d.GetWeight() > 100 {
				errs = append(errs, fmt.Errorf("%s.route[%d].weight: %d out of 0-100", p, j, d.GetWeight()))
			}
			total += d.GetWeight()
		}
		if len(r.Route) > 1 && total == 0 {
			errs = append(errs, fmt.Errorf("%s.route: total weight 0", p))
		}
	}
	return errs
}

func validateDestinationRule(spec *networkingapi.DestinationRule) []error {
	errs := checkHost("spec.host", spec.Host)
	for i, s := range spec.Subsets {
		p := fmt.Sprintf("spec.subsets[%d]", i)
		for _, msg := range validation.IsDNS1123Label(s.GetName()) {
			errs = append(errs, fmt.Errorf("%s.name %q: %s", p, s.GetName(), msg))
		}
		if err := metavalidation.ValidateLabels(s.GetLabels(), field.NewPath(p, "labels")).ToAggregate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}
