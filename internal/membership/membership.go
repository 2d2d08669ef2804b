// Package membership decides which namespaces are in the mesh: OSSM 2.x's ServiceMeshMemberRoll,
// Open Service Mesh's monitored namespaces, Istio's discovery selectors and injection labels, or an
// explicit list.
package membership

import (
	"context"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/selection"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/api/v1alpha1"
	"github.com/smi2istio/smi2istio/internal/meshconfig"
)

// OSSM 2.x kinds (maistra.io). No Go module for them is fetchable: they are read as unstructured
// through the minimal read-only types below.
var (
	MemberRollGVK   = schema.GroupVersionKind{Group: "maistra.io", Version: "v1", Kind: "ServiceMeshMemberRoll"}
	ControlPlaneGVK = meshconfig.ControlPlaneGVK
)

// Mesh flavours.
const (
	FlavourOSSM2 = "OSSM2"
	FlavourIstio = "Istio"
)

// Result is the mesh's membership.
type Result struct {
	// Provider actually used (Auto resolved).
	Provider v1alpha1.MembershipProvider
	Members  map[string]bool
	// Ready is false when the source of truth is not settled (e.g. a member roll that is not Ready);
	// Members is then what that source has configured so far, not a guess.
	Ready            bool
	Message          string
	Flavour, Version string
	// Ambient holds the members labelled istio.io/dataplane-mode=ambient and not for sidecar
	// injection (Istio injects a sidecar where both are set, and ztunnel leaves such pods alone).
	Ambient map[string]bool
}

// Has reports whether a namespace is a member.
func (r Result) Has(namespace string) bool { return r.Members[namespace] }

// Sorted lists the members.
func (r Result) Sorted() []string {
	out := make([]string, 0, len(r.Members))
	for ns := range r.Members {
		out = append(out, ns)
	}
	sort.Strings(out)
	return out
}

// Provider computes membership.
type Provider interface {
	Members(ctx context.Context) (Result, error)
}

// Resolve picks the provider the configuration asks for (Auto: MemberRoll when its CRD and a roll
// exist; else OSM's monitored namespaces and DiscoverySelectors' members together when a namespace
// is labelled as monitored by OSM; else DiscoverySelectors) and computes membership; mesh is the
// mesh config in effect.
func Resolve(ctx context.Context, c client.Reader, mapper meta.RESTMapper, spec v1alpha1.SMI2IstioConfigSpec, mesh meshconfig.InEffect) (Result, error) {
	p, err := For(ctx, c, mapper, spec, mesh)
	if err != nil {
		return Result{}, err
	}
	r, err := p.Members(ctx)
	if err != nil {
		return r, err
	}
	r.Ambient = map[string]bool{}
	var nss corev1.NamespaceList
	if err := c.List(ctx, &nss, client.MatchingLabels{DataplaneModeLabel: DataplaneAmbient}); err != nil {
		return r, fmt.Errorf("list ambient namespaces: %w", err)
	}
	for i := range nss.Items {
		if ns := &nss.Items[i]; r.Members[ns.Name] && IsAmbient(ns) {
			r.Ambient[ns.Name] = true
		}
	}
	return r, nil
}

// For returns the provider for a configuration.
func For(ctx context.Context, c client.Reader, mapper meta.RESTMapper, spec v1alpha1.SMI2IstioConfigSpec, mesh meshconfig.InEffect) (Provider, error) {
	istioNS := spec.IstioNamespace
	if istioNS == "" {
		istioNS = "istio-system"
	}
	switch spec.Membership.Provider {
	case v1alpha1.MemberRoll:
		return memberRoll{c: c, mapper: mapper, istioNamespace: istioNS}, nil
	case v1alpha1.DiscoverySelectors:
		return discovery{c: c, mesh: mesh}, nil
	case v1alpha1.Labels:
		return injectionLabels{c: c}, nil
	case v1alpha1.Explicit:
		return explicit(spec.Membership.Namespaces), nil
	case v1alpha1.OSM:
		return osmMonitored{c: c, meshName: spec.Membership.OSMMeshName}, nil
	case v1alpha1.Auto, "":
		has, err := memberRollExists(ctx, c, mapper)
		if err != nil {
			return nil, err
		}
		if has {
			return memberRoll{c: c, mapper: mapper, istioNamespace: istioNS}, nil
		}
		osm := osmMonitored{c: c, meshName: spec.Membership.OSMMeshName}
		if has, err = osm.any(ctx); err != nil {
			return nil, err
		}
		if has {
			return union{osm, discovery{c: c, mesh: mesh}}, nil
		}
		return discovery{c: c, mesh: mesh}, nil
	}
	return nil, fmt.Errorf("unknown membership provider %q", spec.Membership.Provider)
}

func served(mapper meta.RESTMapper, gvk schema.GroupVersionKind) bool {
	_, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	return err == nil
}

func memberRollExists(ctx context.Context, c client.Reader, mapper meta.RESTMapper) (bool, error) {
	if !served(mapper, MemberRollGVK) {
		return false, nil
	}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(MemberRollGVK.GroupVersion().WithKind("ServiceMeshMemberRollList"))
	if err := c.List(ctx, list, client.Limit(1)); err != nil {
		return false, fmt.Errorf("list ServiceMeshMemberRolls: %w", err)
	}
	return len(list.Items) > 0, nil
}

// ---- explicit ----

type explicit []string

func (e explicit) Members(context.Context) (Result, error) {
	r := Result{Provider: v1alpha1.Explicit, Members: map[string]bool{}, Ready: true, Flavour: FlavourIstio,
		Message: "explicit list of namespaces"}
	for _, ns := range e {
		r.Members[ns] = true
	}
	return r, nil
}

// ---- injection labels ----

// DataplaneModeLabel puts a namespace (or a pod) in Istio's ambient data plane with the value
// DataplaneAmbient ("none" on a pod opts it out).
const (
	DataplaneModeLabel = "istio.io/dataplane-mode"
	DataplaneAmbient   = "ambient"
)

// IsAmbient says whether a namespace's pods are in Istio's ambient data plane: labelled
// istio.io/dataplane-mode=ambient and not for sidecar injection.
func IsAmbient(ns *corev1.Namespace) bool {
	return ns.Labels[DataplaneModeLabel] == DataplaneAmbient && !IsInjected(ns)
}

// IsMeshLabelled says whether a namespace is labelled for Istio's data plane: sidecar injection
// (istio-injection=enabled, istio.io/rev) or ambient (istio.io/dataplane-mode=ambient).
func IsMeshLabelled(ns *corev1.Namespace) bool {
	return IsInjected(ns) || ns.Labels[DataplaneModeLabel] == DataplaneAmbient
}

// IsInjected says whether a namespace is labelled for sidecar injection.
func IsInjected(ns *corev1.Namespace) bool {
	if v, ok := ns.Labels["istio-injection"]; ok {
		return v == "enabled"
	}
	_, ok := ns.Labels["istio.io/rev"]
	return ok
}

type injectionLabels struct {
	c client.Reader
}

func (l injectionLabels) Members(ctx context.Context) (Result, error) {
	r := Result{Provider: v1alpha1.Labels, Members: map[string]bool{}, Ready: true, Flavour: FlavourIstio,
		Message: "namespaces labelled istio-injection=enabled, istio.io/rev or istio.io/dataplane-mode=ambient"}
	var nss corev1.NamespaceList
	if err := l.c.List(ctx, &nss); err != nil {
		return r, fmt.Errorf("list namespaces: %w", err)
	}
	for i := range nss.Items {
		if IsMeshLabelled(&nss.Items[i]) {
			r.Members[nss.Items[i].Name] = true
		}
	}
	return r, nil
}

// ---- Open Service Mesh's monitored namespaces ----

// OSMMonitoredLabel is the namespace label by which an OSM mesh monitors a namespace (`osm
// namespace add` sets it to the mesh's name; OSM's controller watches the namespaces labelled with
// its own mesh name).
const OSMMonitoredLabel = "openservicemesh.io/monitored-by"

type osmMonitored struct {
	c        client.Reader
	meshName string
}

func (o osmMonitored) selector() (labels.Selector, string, error) {
	op, values, says := selection.Exists, []string(nil), OSMMonitoredLabel
	if o.meshName != "" {
		op, values, says = selection.Equals, []string{o.meshName}, OSMMonitoredLabel+"="+o.meshName
	}
	req, err := labels.NewRequirement(OSMMonitoredLabel, op, values)
	if err != nil {
		return nil, "", fmt.Errorf("select namespaces labelled %s: %w", says, err)
	}
	return labels.NewSelector().Add(*req), says, nil
}

// any reports whether a namespace is monitored by OSM.
func (o osmMonitored) any(ctx context.Context) (bool, error) {
	sel, _, err := o.selector()
	if err != nil {
		return false, err
	}
	var nss corev1.NamespaceList
	if err := o.c.List(ctx, &nss, client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return false, fmt.Errorf("list namespaces: %w", err)
	}
	return len(nss.Items) > 0, nil
}

// Members: the namespaces labelled openservicemesh.io/monitored-by (=<mesh name> when one is
// configured), i.e. the mesh as OSM had it. A member whose pods have no Istio sidecar (yet) gets
// outputs no proxy applies: they allow nothing that is not already allowed there.
func (o osmMonitored) Members(ctx context.Context) (Result, error) {
	sel, says, err := o.selector()
	if err != nil {
		return Result{}, err
	}
	r := Result{Provider: v1alpha1.OSM, Members: map[string]bool{}, Ready: true, Flavour: FlavourIstio,
		Message: "namespaces labelled " + says + " (Open Service Mesh's monitored namespaces)"}
	var nss corev1.NamespaceList
	if err := o.c.List(ctx, &nss, client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return r, fmt.Errorf("list namespaces: %w", err)
	}
	for i := range nss.Items {
		r.Members[nss.Items[i].Name] = true
	}
	return r, nil
}

// union: the members of every provider (Auto on a cluster moving from OSM: OSM's monitored
// namespaces and those Istio injects, so that a namespace labelled for Istio but no longer, or
// not yet, for OSM stays in the mesh). The first provider names the result.
type union []Provider

func (u union) Members(ctx context.Context) (Result, error) {
	var out Result
	var msgs []string
	for i, p := range u {
		r, err := p.Members(ctx)
		if err != nil {
			return r, err
		}
		if i == 0 {
			out, out.Members = r, map[string]bool{}
		}
		out.Ready = out.Ready && r.Ready
		for ns := range r.Members {
			out.Members[ns] = true
		}
		msgs = append(msgs, r.Message)
	}
	out.Message = strings.Join(msgs, ", and ")
	return out, nil
}

// ---- discovery selectors ----

type discovery struct {
	c    client.Reader
	mesh meshconfig.InEffect
}

// Members: namespaces labelled for injection or ambient that the istiod serving them discovers: the
// discoverySelectors of the mesh config that governs the namespace (its revision's; every config in
// effect when the labels name none of them); every namespace when there are none.
func (d discovery) Members(ctx context.Context) (Result, error) {
	r, err := injectionLabels{c: d.c}.Members(ctx)
	if err != nil {
		return r, err
	}
	r.Provider = v1alpha1.DiscoverySelectors
	described := d.mesh.SelectorsDescription()
	if described == "" {
		r.Message = "no discoverySelectors in Istio's mesh config: " + r.Message
		return r, nil
	}
	var nss corev1.NamespaceList
	if err := d.c.List(ctx, &nss); err != nil {
		return r, fmt.Errorf("list namespaces: %w", err)
	}
	for i := range nss.Items {
		ns := &nss.Items[i]
		if r.Members[ns.Name] && !d.mesh.Discovers(ns.Labels) {
			delete(r.Members, ns.Name)
		}
	}
	r.Message = "namespaces labelled for injection or ambient and discovered by the istiod serving them (discoverySelectors: " + described + ")"
	return r, nil
}

// ---- ServiceMeshMemberRoll ----

// memberRollView is the part of maistra.io/v1 ServiceMeshMemberRoll smi2istio reads.
type memberRollView struct {
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Members         []string               `json:"members"`
		MemberSelectors []metav1.LabelSelector `json:"memberSelectors"`
	} `json:"spec"`
	Status struct {
		ConfiguredMembers []string `json:"configuredMembers"`
		Conditions        []struct {
			Type    string `json:"type"`
			Status  string `json:"status"`
			Reason  string `json:"reason"`
			Message string `json:"message"`
		} `json:"conditions"`
	} `json:"status"`
}

type memberRoll struct {
	c              client.Reader
	mapper         meta.RESTMapper
	istioNamespace string
}

// excludedFromWildcard: namespaces OSSM never adds for members: ["*"].
func excludedFromWildcard(ns, controlPlane string) bool {
	return ns == controlPlane || strings.HasPrefix(ns, "kube-") || ns == "kube-system" ||
		strings.HasPrefix(ns, "openshift-") || ns == "openshift" || ns == "default"
}

// Members: the roll's status.configuredMembers (what OSSM configured), plus what members: ["*"]
// and memberSelectors select. A roll that is not Ready is reported as such.
func (m memberRoll) Members(ctx context.Context) (Result, error) {
	r := Result{Provider: v1alpha1.MemberRoll, Members: map[string]bool{}, Flavour: FlavourOSSM2}
	if !served(m.mapper, MemberRollGVK) {
		r.Message = "the ServiceMeshMemberRoll CRD (maistra.io/v1) is not installed"
		return r, nil
	}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(MemberRollGVK.GroupVersion().WithKind("ServiceMeshMemberRollList"))
	if err := m.c.List(ctx, list); err != nil {
		return r, fmt.Errorf("list ServiceMeshMemberRolls: %w", err)
	}
	if len(list.Items) == 0 {
		r.Message = "no ServiceMeshMemberRoll exists"
		return r, nil
	}
	var nss corev1.NamespaceList
	if err := m.c.List(ctx, &nss); err != nil {
		return r, fmt.Errorf("list namespaces: %w", err)
	}
	r.Ready = true
	var notes []string
	for i := range list.Items {
		var roll memberRollView
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(list.Items[i].Object, &roll); err != nil {
			return r, fmt.Errorf("read ServiceMeshMemberRoll %s/%s: %w", list.Items[i].GetNamespace(), list.Items[i].GetName(), err)
		}
		name := roll.Namespace + "/" + roll.Name
		ready := false
		for _, c := range roll.Status.Conditions {
			if c.Type == "Ready" {
				ready = c.Status == "True"
				if !ready {
					notes = append(notes, fmt.Sprintf("ServiceMeshMemberRoll %s is not Ready (%s: %s)", name, c.Reason, c.Message))
				}
			}
		}
		if !ready && len(roll.Status.Conditions) == 0 {
			notes = append(notes, fmt.Sprintf("ServiceMeshMemberRoll %s has no status yet", name))
		}
		r.Ready = r.Ready && ready
		for _, ns := range roll.Status.ConfiguredMembers {
			r.Members[ns] = true
		}
		wildcard := false
		for _, mem := range roll.Spec.Members {
			wildcard = wildcard || mem == "*"
		}
		var selectors []labels.Selector
		for j := range roll.Spec.MemberSelectors {
			s, err := metav1.LabelSelectorAsSelector(&roll.Spec.MemberSelectors[j])
			if err != nil {
				return r, fmt.Errorf("ServiceMeshMemberRoll %s memberSelectors[%d]: %w", name, j, err)
			}
			selectors = append(selectors, s)
		}
		for _, ns := range nss.Items {
			if excludedFromWildcard(ns.Name, roll.Namespace) || ns.Name == m.istioNamespace {
				continue
			}
			selected := wildcard
			for _, s := range selectors {
				selected = selected || s.Matches(labels.Set(ns.Labels))
			}
			if selected {
				r.Members[ns.Name] = true
			}
		}
	}
	r.Message = fmt.Sprintf("%d ServiceMeshMemberRoll(s)", len(list.Items))
	if len(notes) > 0 {
		r.Message = strings.Join(notes, "; ")
	}
	r.Version = m.controlPlaneVersion(ctx)
	return r, nil
}

// controlPlaneVersion reads spec.version of a ServiceMeshControlPlane (e.g. v2.5), when one exists.
func (m memberRoll) controlPlaneVersion(ctx context.Context) string {
	if !served(m.mapper, ControlPlaneGVK) {
		return ""
	}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(ControlPlaneGVK.GroupVersion().WithKind("ServiceMeshControlPlaneList"))
	if err := m.c.List(ctx, list, client.Limit(1)); err != nil || len(list.Items) == 0 {
		return ""
	}
	v, _, _ := unstructured.NestedString(list.Items[0].Object, "spec", "version")
	return v
}
