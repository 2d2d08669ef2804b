package membership

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/smi2istio/smi2istio/api/v1alpha1"
)

// Open Service Mesh's settings that carry over, read the same way by the operator (from the
// cluster) and by the offline CLI (from a dump of it): its monitored namespaces, the permissive
// switch of its MeshConfig, and its policy kinds smi2istio does not translate.
var (
	// OSMMeshConfigGK is OSM's MeshConfig (config.openservicemesh.io; v1alpha2 stored, v1alpha1 served).
	OSMMeshConfigGK = schema.GroupKind{Group: "config.openservicemesh.io", Kind: "MeshConfig"}
	// OSMPolicyGKs are OSM's policy kinds (policy.openservicemesh.io) that have no SMI equivalent.
	OSMPolicyGKs = []schema.GroupKind{
		{Group: "policy.openservicemesh.io", Kind: "Egress"},
		{Group: "policy.openservicemesh.io", Kind: "IngressBackend"},
		{Group: "policy.openservicemesh.io", Kind: "Retry"},
		{Group: "policy.openservicemesh.io", Kind: "UpstreamTrafficSetting"},
	}
)

// IsOSMPolicy reports whether a kind is one of OSM's untranslated policy kinds.
func IsOSMPolicy(gk schema.GroupKind) bool {
	for _, p := range OSMPolicyGKs {
		if p == gk {
			return true
		}
	}
	return false
}

// OSMMonitored reports whether namespace labels say OSM monitors it (the mesh named meshName, or
// any mesh when meshName is empty).
func OSMMonitored(labels map[string]string, meshName string) bool {
	v, ok := labels[OSMMonitoredLabel]
	return ok && (meshName == "" || v == meshName)
}

// FromNamespaces evaluates a membership over namespace objects alone (a dump of a cluster, for the
// offline CLI): OSM, Labels and Explicit as in a cluster; Auto and DiscoverySelectors by the
// injection labels, the discovery selectors being unknown (a superset of their members); Auto with
// OSM's monitored namespaces when one is. ok is false for MemberRoll, which needs the roll's status.
func FromNamespaces(m v1alpha1.Membership, nss []corev1.Namespace) (members map[string]bool, ok bool) {
	members = map[string]bool{}
	switch m.Provider {
	case v1alpha1.MemberRoll:
		return nil, false
	case v1alpha1.Explicit:
		for _, ns := range m.Namespaces {
			members[ns] = true
		}
		return members, true
	}
	anyOSM := false
	for i := range nss {
		anyOSM = anyOSM || OSMMonitored(nss[i].Labels, m.OSMMeshName)
	}
	for i := range nss {
		ns := &nss[i]
		osm := OSMMonitored(ns.Labels, m.OSMMeshName)
		switch m.Provider {
		case v1alpha1.OSM:
			members[ns.Name] = osm
		case v1alpha1.Labels, v1alpha1.DiscoverySelectors:
			members[ns.Name] = IsMeshLabelled(ns)
		default: // Auto
			members[ns.Name] = IsMeshLabelled(ns) || (anyOSM && osm)
		}
		if !members[ns.Name] {
			delete(members, ns.Name)
		}
	}
	return members, true
}

// OSMAccessMode reads OSM's MeshConfigs: Permissive when every one of them sets
// spec.traffic.enablePermissiveTrafficPolicyMode to true, else Enforcing; source names them and
// their setting. Fail closed: a MeshConfig whose setting is not a boolean gives Enforcing, and
// source says why. With no MeshConfig, mode is empty.
func OSMAccessMode(items []unstructured.Unstructured) (mode v1alpha1.AccessMode, source string) {
	if len(items) == 0 {
		return "", ""
	}
	permissive := true
	read := make([]string, 0, len(items))
	for i := range items {
		u := &items[i]
		name := fmt.Sprintf("MeshConfig %s/%s", u.GetNamespace(), u.GetName())
		v, set, err := unstructured.NestedFieldNoCopy(u.Object, "spec", "traffic", "enablePermissiveTrafficPolicyMode")
		b, isBool := v.(bool)
		switch {
		case err != nil:
			return v1alpha1.Enforcing, fmt.Sprintf("Open Service Mesh's %s could not be decoded (%v): Enforcing, failing closed", name, err)
		case set && !isBool:
			return v1alpha1.Enforcing, fmt.Sprintf("Open Service Mesh's %s could not be decoded (spec.traffic.enablePermissiveTrafficPolicyMode: %v is not a boolean): Enforcing, failing closed", name, v)
		case !set: // OSM's default: not permissive
			permissive = false
			read = append(read, name+" (spec.traffic.enablePermissiveTrafficPolicyMode unset: false)")
		default:
			permissive = permissive && b
			read = append(read, fmt.Sprintf("%s (spec.traffic.enablePermissiveTrafficPolicyMode: %t)", name, b))
		}
	}
	sort.Strings(read)
	mode = v1alpha1.Enforcing
	if permissive {
		mode = v1alpha1.Permissive
	}
	return mode, "Open Service Mesh's " + strings.Join(read, ", ")
}
