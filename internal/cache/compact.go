package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The compact types the cache holds objects in: Istio objects as their metadata, the hosts their
// spec routes and a hash of the whole spec (Generated); SMI objects as their metadata, their spec as
// JSON and their status (SMI).
//
// An object cached as unstructured is a tree of maps: a generated VirtualService (spec trimmed to
// its hosts) about 2.6 KB, a TrafficSplit with its conditions about 4.5 KB; in these types about
// 1.2 KB each (BenchmarkRetained). The hash is of the spec as it is in the cluster, so an edit by
// hand still shows as a difference from the spec the operator wants (SpecHash).

// Kind names the Istio kind a Generated holds: one Go type per kind, so that the scheme maps each
// type to exactly one GroupVersionKind.
type Kind interface {
	GVK() schema.GroupVersionKind
}

// The Istio kinds the operator generates, in the API versions it writes (DESIGN §6).
type (
	VirtualService      struct{}
	DestinationRule     struct{}
	AuthorizationPolicy struct{}
	PeerAuthentication  struct{}
	EnvoyFilter         struct{}
)

func (VirtualService) GVK() schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: "networking.istio.io", Version: "v1beta1", Kind: "VirtualService"}
}

func (DestinationRule) GVK() schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: "networking.istio.io", Version: "v1beta1", Kind: "DestinationRule"}
}

func (AuthorizationPolicy) GVK() schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: "security.istio.io", Version: "v1beta1", Kind: "AuthorizationPolicy"}
}

func (PeerAuthentication) GVK() schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: "security.istio.io", Version: "v1beta1", Kind: "PeerAuthentication"}
}

func (EnvoyFilter) GVK() schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: "networking.istio.io", Version: "v1alpha3", Kind: "EnvoyFilter"}
}

// The Gateway API kinds the operator generates for ambient namespaces (GAMMA: routes attached to a
// Service), in the versions it writes.
type (
	// Gateway is read for waypoints (gatewayClassName istio-waypoint), never written.
	Gateway   struct{}
	HTTPRoute struct{}
	// GRPCRoute, TLSRoute and UDPRoute are read (never written): a waypoint applies them too.
	GRPCRoute       struct{}
	TLSRoute        struct{}
	GatewayUDPRoute struct{}
	// GatewayTCPRoute is TCPRoute v1 (standard since Gateway API 1.5); GatewayTCPRouteV1Alpha2 the
	// experimental version older Istio releases ship with.
	GatewayTCPRoute         struct{}
	GatewayTCPRouteV1Alpha2 struct{}
)

func (Gateway) GVK() schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: "gateway.networking.k8s.io", Version: "v1", Kind: "Gateway"}
}

func (GRPCRoute) GVK() schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: "gateway.networking.k8s.io", Version: "v1", Kind: "GRPCRoute"}
}

func (TLSRoute) GVK() schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: "gateway.networking.k8s.io", Version: "v1", Kind: "TLSRoute"}
}

func (GatewayUDPRoute) GVK() schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: "gateway.networking.k8s.io", Version: "v1", Kind: "UDPRoute"}
}

func (HTTPRoute) GVK() schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: "gateway.networking.k8s.io", Version: "v1", Kind: "HTTPRoute"}
}

func (GatewayTCPRoute) GVK() schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: "gateway.networking.k8s.io", Version: "v1", Kind: "TCPRoute"}
}

func (GatewayTCPRouteV1Alpha2) GVK() schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: "gateway.networking.k8s.io", Version: "v1alpha2", Kind: "TCPRoute"}
}

// The SMI kinds, in the versions the operator watches: by default the versions smi2istio's CRDs
// store (normalize converts any version); SetSMIVersions chooses others at start-up.
type (
	TrafficSplit   struct{}
	HTTPRouteGroup struct{}
	TCPRoute       struct{}
	UDPRoute       struct{}
	TrafficTarget  struct{}
)

func (TrafficSplit) GVK() schema.GroupVersionKind   { return smiGVK(0) }
func (HTTPRouteGroup) GVK() schema.GroupVersionKind { return smiGVK(1) }
func (TCPRoute) GVK() schema.GroupVersionKind       { return smiGVK(2) }
func (UDPRoute) GVK() schema.GroupVersionKind       { return smiGVK(3) }
func (TrafficTarget) GVK() schema.GroupVersionKind  { return smiGVK(4) }

// Compact is an object of any of the package's types.
type Compact interface {
	client.Object
	// DefaultGVK is the kind of the type: decoding leaves TypeMeta empty, the cache sets it to this.
	DefaultGVK() schema.GroupVersionKind
}

// Object is a cached Istio object of any kind.
type Object interface {
	Compact
	// Hosts are the spec's hosts (a VirtualService's spec.hosts, a DestinationRule's spec.host; a
	// Gateway API route's Service parents as "<name>" or "<name>.<namespace>", which qualify to the
	// Service's FQDN as a VirtualService's short hosts do).
	Hosts() []string
	// SpecHash is the hash of the spec as the cluster has it (SpecHash of the decoded spec).
	SpecHash() string
	// Scope is the spec's gateways and exportTo as written (nil when not set).
	Scope() (gateways, exportTo []string)
	// Class is a Gateway's gatewayClassName ("" for other kinds).
	Class() string
}

// ObjectList is a list of cached Istio objects of one kind.
type ObjectList interface {
	client.ObjectList
	Objects() []Object
}

// Generated is the cached form of an Istio object of kind K.
type Generated[K Kind] struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              Spec `json:"spec"`
}

// Spec is what the cache keeps of a spec. It is only ever decoded: it has no JSON form of its own
// and a Generated is never written to the apiserver.
type Spec struct {
	Hosts []string
	Hash  string
	// Scope is where a VirtualService applies, when not everywhere: its gateways and exportTo
	// (see Scope); "" for the default (the mesh gateway, exported to every namespace).
	Scope string
	// Class is a Gateway's gatewayClassName.
	Class string
}

// UnmarshalJSON keeps the hosts and the hash of the spec.
func (s *Spec) UnmarshalJSON(raw []byte) error {
	var spec any
	// Numbers decode as int64 or float64, like an unstructured object's: the hash is the one of the
	// same spec decoded as unstructured.
	if err := utiljson.Unmarshal(raw, &spec); err != nil {
		return fmt.Errorf("decode spec: %w", err)
	}
	h, err := SpecHash(spec)
	if err != nil {
		return err
	}
	*s = Spec{Hash: h}
	m, _ := spec.(map[string]any)
	if hosts, ok := m["hosts"].([]any); ok {
		for _, h := range hosts {
			if h, ok := h.(string); ok {
				s.Hosts = append(s.Hosts, h)
			}
		}
	}
	if h, ok := m["host"].(string); ok {
		s.Hosts = append(s.Hosts, h)
	}
	parents, _ := m["parentRefs"].([]any)
	for _, p := range parents {
		ref, _ := p.(map[string]any)
		group, _ := ref["group"].(string)
		kind, _ := ref["kind"].(string)
		name, _ := ref["name"].(string)
		if name == "" || kind != "Service" || (group != "" && group != "core") {
			continue // a Gateway parent: north-south, not the mesh's routing of a Service
		}
		if ns, _ := ref["namespace"].(string); ns != "" {
			name += "." + ns
		}
		s.Hosts = append(s.Hosts, name)
	}
	s.Class, _ = m["gatewayClassName"].(string)
	gateways, exportTo := stringList(m["gateways"]), stringList(m["exportTo"])
	if len(gateways)+len(exportTo) > 0 {
		s.Scope = strings.Join(gateways, ",") + ";" + strings.Join(exportTo, ",")
	}
	return nil
}

func stringList(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// Gateways reads a Spec's Scope: the gateways and exportTo as written (nil when not set).
func (s Spec) Gateways() (gateways, exportTo []string) {
	if s.Scope == "" {
		return nil, nil
	}
	g, e, _ := strings.Cut(s.Scope, ";")
	if g != "" {
		gateways = strings.Split(g, ",")
	}
	if e != "" {
		exportTo = strings.Split(e, ",")
	}
	return gateways, exportTo
}

// MarshalJSON refuses: a cached object holds no spec to write.
func (s Spec) MarshalJSON() ([]byte, error) {
	return nil, fmt.Errorf("a cached spec (hash %s) cannot be encoded", s.Hash)
}

// SpecHash is the SHA-256 (first 128 bits, hex) of a spec's JSON; encoding/json sorts map keys, so
// equal content hashes equally whatever the numeric types it was decoded into.
func SpecHash(spec any) (string, error) {
	raw, err := json.Marshal(spec)
	if err != nil {
		return "", fmt.Errorf("encode spec: %w", err)
	}
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:16]), nil
}

func (g *Generated[K]) Hosts() []string { return g.Spec.Hosts }

// Scope is the object's gateways and exportTo as written (nil when not set).
func (g *Generated[K]) Scope() (gateways, exportTo []string) { return g.Spec.Gateways() }

// Class is a Gateway's gatewayClassName ("" for other kinds).
func (g *Generated[K]) Class() string { return g.Spec.Class }

// DefaultGVK is the kind K.
func (g *Generated[K]) DefaultGVK() schema.GroupVersionKind {
	var k K
	return k.GVK()
}

func (g *Generated[K]) SpecHash() string { return g.Spec.Hash }

// DeepCopyInto copies g into out.
func (g *Generated[K]) DeepCopyInto(out *Generated[K]) {
	*out = Generated[K]{TypeMeta: g.TypeMeta, Spec: Spec{Hash: g.Spec.Hash, Scope: g.Spec.Scope, Class: g.Spec.Class}}
	g.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	if g.Spec.Hosts != nil {
		out.Spec.Hosts = append([]string(nil), g.Spec.Hosts...)
	}
}

// DeepCopy copies g.
func (g *Generated[K]) DeepCopy() *Generated[K] {
	if g == nil {
		return nil
	}
	out := new(Generated[K])
	g.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (g *Generated[K]) DeepCopyObject() runtime.Object { return g.DeepCopy() }

// GeneratedList is a list of cached Istio objects of kind K.
type GeneratedList[K Kind] struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Generated[K] `json:"items"`
}

// Objects are the list's items.
func (l *GeneratedList[K]) Objects() []Object {
	out := make([]Object, len(l.Items))
	for i := range l.Items {
		out[i] = &l.Items[i]
	}
	return out
}

// DeepCopyInto copies l into out.
func (l *GeneratedList[K]) DeepCopyInto(out *GeneratedList[K]) {
	*out = GeneratedList[K]{TypeMeta: l.TypeMeta}
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	if l.Items != nil {
		out.Items = make([]Generated[K], len(l.Items))
		for i := range l.Items {
			l.Items[i].DeepCopyInto(&out.Items[i])
		}
	}
}

// DeepCopyObject implements runtime.Object.
func (l *GeneratedList[K]) DeepCopyObject() runtime.Object {
	out := new(GeneratedList[K])
	l.DeepCopyInto(out)
	return out
}

// kindTypes are an empty object and an empty list of a cached kind.
type kindTypes struct {
	obj  func() Compact
	list func() client.ObjectList
}

// kinds are the cached kinds; the SMI ones are added in the versions chosen (smi.go).
var kinds = map[schema.GroupVersionKind]kindTypes{
	VirtualService{}.GVK():      {func() Compact { return &Generated[VirtualService]{} }, func() client.ObjectList { return &GeneratedList[VirtualService]{} }},
	DestinationRule{}.GVK():     {func() Compact { return &Generated[DestinationRule]{} }, func() client.ObjectList { return &GeneratedList[DestinationRule]{} }},
	AuthorizationPolicy{}.GVK(): {func() Compact { return &Generated[AuthorizationPolicy]{} }, func() client.ObjectList { return &GeneratedList[AuthorizationPolicy]{} }},
	PeerAuthentication{}.GVK():  {func() Compact { return &Generated[PeerAuthentication]{} }, func() client.ObjectList { return &GeneratedList[PeerAuthentication]{} }},
	EnvoyFilter{}.GVK():         {func() Compact { return &Generated[EnvoyFilter]{} }, func() client.ObjectList { return &GeneratedList[EnvoyFilter]{} }},
	Gateway{}.GVK():             {func() Compact { return &Generated[Gateway]{} }, func() client.ObjectList { return &GeneratedList[Gateway]{} }},
	GRPCRoute{}.GVK():           {func() Compact { return &Generated[GRPCRoute]{} }, func() client.ObjectList { return &GeneratedList[GRPCRoute]{} }},
	TLSRoute{}.GVK():            {func() Compact { return &Generated[TLSRoute]{} }, func() client.ObjectList { return &GeneratedList[TLSRoute]{} }},
	GatewayUDPRoute{}.GVK():     {func() Compact { return &Generated[GatewayUDPRoute]{} }, func() client.ObjectList { return &GeneratedList[GatewayUDPRoute]{} }},
	HTTPRoute{}.GVK():           {func() Compact { return &Generated[HTTPRoute]{} }, func() client.ObjectList { return &GeneratedList[HTTPRoute]{} }},
	GatewayTCPRoute{}.GVK():     {func() Compact { return &Generated[GatewayTCPRoute]{} }, func() client.ObjectList { return &GeneratedList[GatewayTCPRoute]{} }},
	GatewayTCPRouteV1Alpha2{}.GVK(): {func() Compact { return &Generated[GatewayTCPRouteV1Alpha2]{} }, func() client.ObjectList {
		return &GeneratedList[GatewayTCPRouteV1Alpha2]{}
	}},
}

func kind(gvk schema.GroupVersionKind) (obj func() Compact, list func() client.ObjectList) {
	k, ok := kindsInUse()[gvk]
	if !ok {
		// The kinds are fixed: asking for another is a programming error.
		panic("cache: no compact type for " + gvk.String())
	}
	return k.obj, k.list
}

// NewFor is an empty cached Istio object of the kind of a rendered object: an error, not a panic,
// for a kind (or version) this package has no type for.
func NewFor(gvk schema.GroupVersionKind) (Object, error) {
	k, ok := kindsInUse()[gvk]
	if !ok {
		return nil, fmt.Errorf("no cached type for %s", gvk)
	}
	obj, ok := k.obj().(Object)
	if !ok {
		return nil, fmt.Errorf("%s is not a generated Istio kind", gvk)
	}
	return obj, nil
}

// New is NewFor for the fixed kinds the controllers watch: it panics where NewFor fails.
func New(gvk schema.GroupVersionKind) Object {
	obj, err := NewFor(gvk)
	if err != nil {
		panic("cache: " + err.Error())
	}
	return obj
}

// NewList is an empty list of cached Istio objects of the kind gvk.
func NewList(gvk schema.GroupVersionKind) ObjectList {
	_, list := kind(gvk)
	return list().(ObjectList)
}

// NewSMI is an empty cached SMI object of the kind gvk (one of the SMI kinds).
func NewSMI(gvk schema.GroupVersionKind) SMIObject {
	obj, _ := kind(gvk)
	return obj().(SMIObject)
}

// NewSMIList is an empty list of cached SMI objects of the kind gvk.
func NewSMIList(gvk schema.GroupVersionKind) SMIObjectList {
	_, list := kind(gvk)
	return list().(SMIObjectList)
}

// AddToScheme registers the compact types as the Go types of the SMI and Istio kinds (and the meta
// types of their group versions). A scheme holding them must not also hold Istio's or smi-sdk-go's
// own Go types for the same kinds.
func AddToScheme(s *runtime.Scheme) error {
	groupVersions := map[schema.GroupVersion]bool{}
	for gvk, k := range kindsInUse() {
		s.AddKnownTypeWithName(gvk, k.obj())
		s.AddKnownTypeWithName(gvk.GroupVersion().WithKind(gvk.Kind+"List"), k.list())
		groupVersions[gvk.GroupVersion()] = true
	}
	for gv := range groupVersions {
		metav1.AddToGroupVersion(s, gv)
	}
	return nil
}
