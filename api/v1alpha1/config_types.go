package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ConfigName is the name of the singleton.
const ConfigName = "default"

// AccessMode mirrors OSM's permissive switch.
// +kubebuilder:validation:Enum=Enforcing;Permissive
type AccessMode string

// Access modes.
const (
	// Enforcing denies by default in every mesh namespace; TrafficTargets allow.
	Enforcing AccessMode = "Enforcing"
	// Permissive allows everything; TrafficTargets are not enforced.
	Permissive AccessMode = "Permissive"
)

// RegexPolicy says what to do with regexes an AuthorizationPolicy cannot express.
// +kubebuilder:validation:Enum=Envoy;Reject
type RegexPolicy string

// DataplaneMode says which Istio data plane enforces a namespace's outputs.
// +kubebuilder:validation:Enum=Auto;Sidecar;Ambient
type DataplaneMode string

// Data-plane modes.
const (
	// DataplaneAuto: ambient where the namespace is labelled istio.io/dataplane-mode=ambient, else
	// sidecar.
	DataplaneAuto DataplaneMode = "Auto"
	// DataplaneSidecar: every member namespace is treated as sidecar-injected.
	DataplaneSidecar DataplaneMode = "Sidecar"
	// DataplaneAmbient: every member namespace is treated as ambient (ztunnel, waypoints).
	DataplaneAmbient DataplaneMode = "Ambient"
)

// RouteAPI names the Istio API a TrafficSplit is written to in sidecar namespaces.
// +kubebuilder:validation:Enum=VirtualService;GatewayAPI
type RouteAPI string

// Route APIs.
const (
	// RouteVirtualService: VirtualService and DestinationRule (the default for sidecars).
	RouteVirtualService RouteAPI = "VirtualService"
	// RouteGatewayAPI: the Gateway API's HTTPRoute (and TCPRoute) attached to the root Service (GAMMA).
	RouteGatewayAPI RouteAPI = "GatewayAPI"
)

// MembershipProvider names how mesh namespaces are found.
// +kubebuilder:validation:Enum=Auto;MemberRoll;OSM;DiscoverySelectors;Labels;Explicit
type MembershipProvider string

// Membership providers.
const (
	// Auto uses MemberRoll when the ServiceMeshMemberRoll CRD and a roll exist; else, when a
	// namespace is labelled openservicemesh.io/monitored-by, OSM's monitored namespaces together
	// with DiscoverySelectors' members; else DiscoverySelectors.
	Auto MembershipProvider = "Auto"
	// MemberRoll reads OSSM 2.x's ServiceMeshMemberRoll (maistra.io/v1).
	MemberRoll MembershipProvider = "MemberRoll"
	// OSM uses Open Service Mesh's monitored namespaces: those labelled
	// openservicemesh.io/monitored-by (with the value osmMeshName when it is set).
	OSM MembershipProvider = "OSM"
	// DiscoverySelectors uses the discoverySelectors of Istio's mesh config, or Labels without them.
	DiscoverySelectors MembershipProvider = "DiscoverySelectors"
	// Labels uses the istio-injection=enabled and istio.io/rev namespace labels.
	Labels MembershipProvider = "Labels"
	// Explicit uses spec.membership.namespaces.
	Explicit MembershipProvider = "Explicit"
)

// Membership says which namespaces are in the mesh.
// +kubebuilder:validation:XValidation:rule="self.provider != 'Explicit' || (has(self.namespaces) && size(self.namespaces) > 0)",message="the Explicit provider needs spec.membership.namespaces"
type Membership struct {
	// Provider of the member namespaces.
	// +kubebuilder:default=Auto
	// +optional
	Provider MembershipProvider `json:"provider,omitempty"`
	// Namespaces in the mesh, for the Explicit provider.
	// +kubebuilder:validation:MaxItems=1000
	// +kubebuilder:validation:items:MaxLength=63
	// +optional
	Namespaces []string `json:"namespaces,omitempty"`
	// OSMMeshName restricts the OSM provider (and Auto's OSM detection) to the namespaces OSM's mesh
	// of that name monitors (openservicemesh.io/monitored-by=<name>); any value of the label when
	// empty.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`
	// +optional
	OSMMeshName string `json:"osmMeshName,omitempty"`
}

// SMI2IstioConfigSpec configures smi2istio. The zero value is the default configuration.
type SMI2IstioConfigSpec struct {
	// AccessMode: Enforcing (deny by default, TrafficTargets allow) or Permissive.
	// +kubebuilder:default=Enforcing
	// +optional
	AccessMode AccessMode `json:"accessMode,omitempty"`
	// Membership selects the mesh namespaces smi2istio acts in.
	// +kubebuilder:default={provider: Auto}
	// +optional
	Membership Membership `json:"membership,omitempty"`
	// RegexPolicy: Envoy (an EnvoyFilter checks regexes an AuthorizationPolicy cannot express) or
	// Reject (such matches are left out, i.e. denied).
	// +kubebuilder:default=Envoy
	// +optional
	RegexPolicy RegexPolicy `json:"regexPolicy,omitempty"`
	// MinIstioVersion is the oldest Istio the generated objects must work on ("1.16" for OSSM 2.x);
	// path templates are used from 1.22.
	// +kubebuilder:validation:Pattern=`^1\.[0-9]{1,3}$`
	// +kubebuilder:default="1.16"
	// +optional
	MinIstioVersion string `json:"minIstioVersion,omitempty"`
	// TrustDomain overrides the trust domain read from Istio's mesh config.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-zA-Z0-9]([-a-zA-Z0-9.]*[a-zA-Z0-9])?$`
	// +optional
	TrustDomain string `json:"trustDomain,omitempty"`
	// IstioNamespace is Istio's root namespace (mesh config, no baseline there).
	// +kubebuilder:default=istio-system
	// +kubebuilder:validation:MaxLength=63
	// +optional
	IstioNamespace string `json:"istioNamespace,omitempty"`
	// DataplaneMode: Auto (per namespace, from istio.io/dataplane-mode), Sidecar or Ambient. In
	// ambient namespaces TrafficSplits become Gateway API routes and TrafficTargets policies for
	// ztunnel (L4) or for the destination's waypoint (L7).
	// +kubebuilder:default=Auto
	// +optional
	DataplaneMode DataplaneMode `json:"dataplaneMode,omitempty"`
	// RouteAPI is the API TrafficSplits are written to in sidecar namespaces: VirtualService
	// (default) or GatewayAPI (HTTPRoute/TCPRoute). Ambient namespaces always use GatewayAPI.
	// +kubebuilder:default=VirtualService
	// +optional
	RouteAPI RouteAPI `json:"routeAPI,omitempty"`
}

// MeshStatus is what smi2istio detected about the mesh.
type MeshStatus struct {
	// Flavour: OSSM2 (ServiceMeshControlPlane/MemberRoll present) or Istio.
	// +optional
	Flavour string `json:"flavour,omitempty"`
	// Version of the control plane, when known.
	// +optional
	Version string `json:"version,omitempty"`
	// Provider is the membership provider in use (Auto resolved).
	// +optional
	Provider MembershipProvider `json:"provider,omitempty"`
	// TrustDomain in use.
	// +optional
	TrustDomain string `json:"trustDomain,omitempty"`
	// RootNamespaces are Istio's root namespaces: the rootNamespace of each mesh config in effect
	// (the Istio namespace by default). An object with a workload selector in a root namespace
	// applies in every namespace: smi2istio writes none there, and no baseline.
	// +optional
	RootNamespaces []string `json:"rootNamespaces,omitempty"`
	// ConfigMaps are Istio's mesh configs in effect (namespace/name): "istio", "istio-<revision>"
	// of the revisions namespaces are labelled with, "istio-<name>" of OSSM 2 control planes.
	// +optional
	ConfigMaps []string `json:"configMaps,omitempty"`
	// Ambient lists the member namespaces whose data plane is ambient (the others are sidecar).
	// +optional
	Ambient []string `json:"ambient,omitempty"`
}

// ObjectCounts counts SMI objects of one kind by their Ready condition.
type ObjectCounts struct {
	Kind string `json:"kind"`
	// +optional
	Ready int32 `json:"ready"`
	// +optional
	NotReady int32 `json:"notReady"`
	// +optional
	NotInMesh int32 `json:"notInMesh"`
}

// ForeignObjects counts the objects of a kind smi2istio does not translate (Open Service Mesh's
// policy.openservicemesh.io kinds): they are left to move by hand.
type ForeignObjects struct {
	// Kind, with its group: "Egress.policy.openservicemesh.io".
	Kind  string `json:"kind"`
	Count int32  `json:"count"`
	// Names of the objects (namespace/name), sorted; at most 50.
	// +optional
	Names []string `json:"names,omitempty"`
}

// StorageMigrationState is where the storage version migration of one SMI CRD stands.
// +kubebuilder:validation:Enum=Done;Migrating;Failed;Skipped
type StorageMigrationState string

// Storage migration states.
const (
	// MigrationDone: every object is stored in the storage version, the only version in the CRD's
	// status.storedVersions; a later CRD may drop the other versions.
	MigrationDone StorageMigrationState = "Done"
	// MigrationMigrating: objects are being rewritten into the storage version.
	MigrationMigrating StorageMigrationState = "Migrating"
	// MigrationFailed: an object could not be rewritten (or the CRD not read or updated):
	// status.storedVersions is left as it was, and the migration is retried.
	MigrationFailed StorageMigrationState = "Failed"
	// MigrationSkipped: the CRD is not installed, or is not smi2istio's (foreign SMI CRDs are left alone).
	MigrationSkipped StorageMigrationState = "Skipped"
)

// StorageMigration reports the storage version migration of one SMI CRD: its objects rewritten into
// the storage version, then the older versions removed from its status.storedVersions (as
// kube-storage-version-migrator does), so that a later CRD can stop serving them.
type StorageMigration struct {
	// Name of the CRD: "trafficsplits.split.smi-spec.io".
	Name string `json:"name"`
	// StoredVersions is the CRD's status.storedVersions when last looked at: the versions objects
	// may be stored in.
	// +optional
	StoredVersions []string `json:"storedVersions,omitempty"`
	// State: Done, Migrating, Failed (retried) or Skipped.
	State StorageMigrationState `json:"state"`
	// Message says what was done, or what failed.
	// +optional
	Message string `json:"message,omitempty"`
}

// SMICRDOwner says whose CRD serves an SMI kind.
// +kubebuilder:validation:Enum=smi2istio;foreign;absent
type SMICRDOwner string

const (
	// SMICRDOwnedBySMI2Istio: smi2istio's own CRD (labelled app.kubernetes.io/part-of=smi2istio).
	SMICRDOwnedBySMI2Istio SMICRDOwner = "smi2istio"
	// SMICRDForeign: another installer's CRD (Open Service Mesh's, kept with --smi-crds=foreign),
	// never written by smi2istio.
	SMICRDForeign SMICRDOwner = "foreign"
	// SMICRDAbsent: no CRD, or none of its served versions is one smi2istio reads: the kind is not
	// watched and references to its objects resolve to nothing.
	SMICRDAbsent SMICRDOwner = "absent"
)

// SMIStatusTarget says where the operator reports on the objects of an SMI kind.
// +kubebuilder:validation:Enum=subresource;events
type SMIStatusTarget string

const (
	// SMIStatusSubresource: conditions in the objects' status (kubectl wait, READY columns), and
	// Events when Ready changes.
	SMIStatusSubresource SMIStatusTarget = "subresource"
	// SMIStatusEvents: the CRD has no status subresource; the conditions are reported as Events
	// only, each time they change.
	SMIStatusEvents SMIStatusTarget = "events"
)

// SMICRD reports, for one SMI kind, whose CRD serves it, the version the operator watches it in
// and where its objects' conditions go (decided at start-up, --smi-crds).
type SMICRD struct {
	// Kind: TrafficSplit, TrafficTarget, HTTPRouteGroup, TCPRoute or UDPRoute.
	Kind string `json:"kind"`
	// CRD is the CRD's name: "trafficsplits.split.smi-spec.io".
	CRD string `json:"crd"`
	// Owner: smi2istio, foreign or absent.
	Owner SMICRDOwner `json:"owner"`
	// Version is the API version watched (empty when absent).
	// +optional
	Version string `json:"version,omitempty"`
	// Status: subresource or events (empty when absent).
	// +optional
	Status SMIStatusTarget `json:"status,omitempty"`
	// Message explains the choice.
	// +optional
	Message string `json:"message,omitempty"`
}

// SMI2IstioConfigStatus reports the configuration in effect.
type SMI2IstioConfigStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready, MeshDetected.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// +optional
	Mesh MeshStatus `json:"mesh,omitempty"`
	// Members are the mesh namespaces.
	// +optional
	Members []string `json:"members,omitempty"`
	// Objects counts SMI objects by kind and Ready condition.
	// +optional
	Objects []ObjectCounts `json:"objects,omitempty"`
	// AccessModeSource says where spec.accessMode came from: the SMI2IstioConfig's spec, or, for a
	// configuration the operator created, Open Service Mesh's MeshConfig (or why it was not used).
	// +optional
	AccessModeSource string `json:"accessModeSource,omitempty"`
	// Untranslated counts and names, by kind, the objects of Open Service Mesh's policy API
	// (Egress, IngressBackend, Retry, UpstreamTrafficSetting) that smi2istio does not translate,
	// for the kinds whose CRDs are served.
	// +optional
	Untranslated []ForeignObjects `json:"untranslated,omitempty"`
	// StorageMigration reports, per SMI CRD, the rewriting of its objects into the storage version
	// and the removal of older versions from its status.storedVersions (written by the storage
	// migration controller only).
	// +listType=map
	// +listMapKey=name
	// +optional
	StorageMigration []StorageMigration `json:"storageMigration,omitempty"`
	// SMICRDs says, per SMI kind, whose CRD serves it, the version watched and where status goes
	// (written at start-up by the operator).
	// +listType=map
	// +listMapKey=kind
	// +optional
	SMICRDs []SMICRD `json:"smiCRDs,omitempty"`
}

// SMI2IstioConfig is smi2istio's configuration: a cluster-scoped singleton named "default".
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=s2ic
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.accessMode`
// +kubebuilder:printcolumn:name="Mesh",type=string,JSONPath=`.status.mesh.flavour`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name == 'default'",message="SMI2IstioConfig is a singleton: its name must be default"
type SMI2IstioConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +kubebuilder:default={}
	// +optional
	Spec   SMI2IstioConfigSpec   `json:"spec,omitempty"`
	Status SMI2IstioConfigStatus `json:"status,omitempty"`
}

// SMI2IstioConfigList is a list of SMI2IstioConfig.
// +kubebuilder:object:root=true
type SMI2IstioConfigList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []SMI2IstioConfig `json:"items"`
}
