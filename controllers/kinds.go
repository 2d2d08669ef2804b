package controllers

import (
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/smi2istio/smi2istio/internal/cache"
)

// The kinds the operator reads and writes, declared once. SMI objects are watched in their stored
// version (no watch event or status write goes through the conversion webhook) and converted in
// process to the hub types by internal/smi/normalize.
var (
	TrafficSplitGVK        = cache.TrafficSplit{}.GVK()
	TrafficTargetGVK       = cache.TrafficTarget{}.GVK()
	HTTPRouteGroupGVK      = cache.HTTPRouteGroup{}.GVK()
	TCPRouteGVK            = cache.TCPRoute{}.GVK()
	UDPRouteGVK            = cache.UDPRoute{}.GVK()
	VirtualServiceGVK      = cache.VirtualService{}.GVK()
	DestinationRuleGVK     = cache.DestinationRule{}.GVK()
	AuthorizationPolicyGVK = cache.AuthorizationPolicy{}.GVK()
	PeerAuthenticationGVK  = cache.PeerAuthentication{}.GVK()
	EnvoyFilterGVK         = cache.EnvoyFilter{}.GVK()
	// The Gateway API's routes (GAMMA), for ambient namespaces and routeAPI GatewayAPI.
	GatewayGVK                 = cache.Gateway{}.GVK()
	HTTPRouteGVK               = cache.HTTPRoute{}.GVK()
	GRPCRouteGVK               = cache.GRPCRoute{}.GVK()
	GatewayTCPRouteGVK         = cache.GatewayTCPRoute{}.GVK()
	GatewayTCPRouteV1Alpha2GVK = cache.GatewayTCPRouteV1Alpha2{}.GVK()
)

// Owner apiVersions generated objects name their SMI owners by: the stored ones, so that the
// garbage collector's lookups of owners need no conversion either.
var (
	trafficSplitOwnerAPIVersion  = TrafficSplitGVK.GroupVersion().String()
	trafficTargetOwnerAPIVersion = TrafficTargetGVK.GroupVersion().String()
)

// Field indexes (internal/cache). The SMI ones hold values within one namespace only
// (NewNamespacedIndex); the VirtualService hosts are across namespaces (NewClusterIndex: a host may
// be claimed from any namespace).
const (
	indexSplitServices      = "smi2istio.split.services"       // root and backend Service names
	indexSplitRoot          = "smi2istio.split.root"           // root Service name
	indexSplitRouteGroups   = "smi2istio.split.routeGroups"    // HTTPRouteGroup names in spec.matches
	indexVirtualServiceHost = "smi2istio.virtualservice.hosts" // FQDN hosts of any VirtualService
	indexRouteParents       = "smi2istio.route.parents"        // FQDNs of a Gateway API route's Service parents
	indexTargetDestination  = "smi2istio.target.destination"   // destination ServiceAccount name
	indexTargetRoutes       = "smi2istio.target.routes"        // "<Kind>/<name>" of each rule
)

// Keys that change what Istio makes of an object: istio.io/rev hides it from every istiod but that
// revision's (objects without it are read by all), istio.io/dry-run stops a policy from being
// enforced. Generated objects never carry them; a live one that does (a user's or a tool's edit) is
// written again (syncset.Set.ExactLabels).
var (
	istioExactLabels      = []string{"istio.io/rev"}
	istioExactAnnotations = []string{"istio.io/dry-run"}
)

// inertPolicy is the JSON merge patch that makes an ALLOW AuthorizationPolicy allow nothing (its
// selector kept): for a stale policy that someone else's finalizer keeps after we deleted it.
var inertPolicy = []byte(`{"spec":{"rules":null}}`)

// served reports whether the apiserver serves a kind in that version (as the mapper saw it when
// asked: kinds found at set-up).
func served(mapper meta.RESTMapper, gvk schema.GroupVersionKind) bool {
	_, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	return err == nil
}
