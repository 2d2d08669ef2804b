// Package meshconfig finds Istio's mesh config in effect: the ConfigMap "istio" of the default
// revision, "istio-<rev>" of the revisions namespaces name in their istio.io/rev label (Istio's
// charts, Sail / OSSM 3), and "istio-<name>" of each OSSM 2 ServiceMeshControlPlane in its own
// namespace. It reads what smi2istio needs from them: trustDomain, rootNamespace and
// discoverySelectors, decoding them as istiod does (istio.io/api's MeshConfig through jsonpb: proto
// and JSON field names alike, unknown fields ignored).
package meshconfig

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	meshapi "istio.io/api/mesh/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

const (
	// DefaultName is the mesh config of the default revision.
	DefaultName = "istio"
	// RevisionLabel names a namespace's revision, and labels each revision's mesh config with it.
	RevisionLabel = "istio.io/rev"
	// InjectionLabel (enabled) selects the default revision; it takes precedence over RevisionLabel.
	InjectionLabel = "istio-injection"
	// MemberOfLabel is set by OSSM 2 on member namespaces: the control plane's namespace.
	MemberOfLabel = "maistra.io/member-of"
	// DefaultTrustDomain is Istio's trust domain when the mesh config sets none.
	DefaultTrustDomain = "cluster.local"
	// DefaultRootNamespace is istiod's root namespace when its mesh config sets none, whatever
	// istiod's own namespace (istio.io/istio pkg/config/mesh DefaultMeshConfig), and when it has no
	// mesh config at all or rejects the one it has.
	DefaultRootNamespace = "istio-system"
	// DefaultRevision is the revision of the ConfigMap "istio".
	DefaultRevision = "default"
	// MeshKey is the ConfigMap key holding the mesh config.
	MeshKey = "mesh"
)

// ControlPlaneGVK is OSSM 2's ServiceMeshControlPlane (read as unstructured: no Go module for it).
var ControlPlaneGVK = schema.GroupVersionKind{Group: "maistra.io", Version: "v2", Kind: "ServiceMeshControlPlane"}

// Config is what smi2istio reads from one mesh config.
type Config struct {
	// Namespace and Name of the ConfigMap.
	Namespace, Name string
	// Revision it serves: DefaultRevision for "istio", <rev> for "istio-<rev>".
	Revision string
	// TrustDomain, DefaultTrustDomain when unset.
	TrustDomain string
	// RootNamespaces istiod may use, sorted: the rootNamespace set, else both istiod's default
	// (DefaultRootNamespace) and the ConfigMap's namespace (what installers that write none mean).
	// An extra root namespace only denies (nothing selector-based is written there); a missing one
	// could open every namespace.
	RootNamespaces []string
	// Selectors are the discoverySelectors; none: istiod discovers every namespace.
	Selectors []labels.Selector
}

// Key is namespace/name.
func (c Config) Key() string { return c.Namespace + "/" + c.Name }

// Discovers says whether this config's istiod discovers a namespace with these labels.
func (c Config) Discovers(nsLabels map[string]string) bool {
	if len(c.Selectors) == 0 {
		return true
	}
	for _, s := range c.Selectors {
		if s.Matches(labels.Set(nsLabels)) {
			return true
		}
	}
	return false
}

// RevisionOf is the revision a mesh config's name is for ("" when the name is not one).
func RevisionOf(name string) string {
	if name == DefaultName {
		return DefaultRevision
	}
	if rev, ok := strings.CutPrefix(name, DefaultName+"-"); ok {
		return rev
	}
	return ""
}

// NameOf is the name of a revision's mesh config.
func NameOf(revision string) string {
	if revision == "" {
		return DefaultName
	}
	return DefaultName + "-" + revision
}

// Parse reads the "mesh" key of a mesh config ConfigMap as istiod does (istio.io/istio
// pkg/config/mesh ApplyMeshConfig, protomarshal.ApplyYAML): YAML to JSON, then istio.io/api's
// MeshConfig through jsonpb, which takes proto field names (root_namespace) as well as JSON names
// (rootNamespace; the JSON name wins when both are set), ignores unknown fields and fails on a value
// of the wrong type, as istiod does. istiod also validates the whole config and ignores it when
// invalid; that is not repeated here.
func Parse(cm *corev1.ConfigMap) (Config, error) {
	c := Config{Namespace: cm.Namespace, Name: cm.Name, Revision: RevisionOf(cm.Name)}
	js, err := yaml.YAMLToJSON([]byte(cm.Data[MeshKey]))
	if err != nil {
		return c, fmt.Errorf("parse Istio's mesh config %s: %w", c.Key(), err)
	}
	var mc meshapi.MeshConfig
	if err := mc.UnmarshalJSON(js); err != nil {
		return c, fmt.Errorf("parse Istio's mesh config %s: %w", c.Key(), err)
	}
	c.TrustDomain = mc.GetTrustDomain()
	if c.TrustDomain == "" {
		c.TrustDomain = DefaultTrustDomain
	}
	if root := mc.GetRootNamespace(); root != "" {
		c.RootNamespaces = []string{root}
	} else {
		// Unset (or set empty: istiod then has no root namespace at all, an extra one only denies).
		c.RootNamespaces = union(DefaultRootNamespace, cm.Namespace)
	}
	for i, ls := range mc.GetDiscoverySelectors() {
		s, err := selectorOf(ls)
		if err != nil {
			return c, fmt.Errorf("discoverySelectors[%d] of Istio's mesh config %s: %w", i, c.Key(), err)
		}
		c.Selectors = append(c.Selectors, s)
	}
	return c, nil
}

// selectorOf converts a discovery selector as istiod does (istio.io/istio pkg/config/mesh/
// labelselector): nil selects nothing, empty everything; an unknown operator or an invalid
// requirement is an error (istiod then keeps its previous discovery filter).
func selectorOf(ls *meshapi.LabelSelector) (labels.Selector, error) {
	if ls == nil {
		return labels.Nothing(), nil
	}
	m := metav1.LabelSelector{MatchLabels: ls.GetMatchLabels()}
	for _, r := range ls.GetMatchExpressions() {
		m.MatchExpressions = append(m.MatchExpressions, metav1.LabelSelectorRequirement{
			Key: r.GetKey(), Operator: metav1.LabelSelectorOperator(r.GetOperator()), Values: r.GetValues()})
	}
	return metav1.LabelSelectorAsSelector(&m)
}

// union is the sorted set of these namespaces, "" left out.
func union(namespaces ...string) []string {
	var out []string
	for _, ns := range namespaces {
		if ns != "" && !slices.Contains(out, ns) {
			out = append(out, ns)
		}
	}
	sort.Strings(out)
	return out
}

// InEffect is the set of mesh configs in effect.
type InEffect struct {
	// IstioNamespace is where the default revision and the revisions of namespace labels live.
	IstioNamespace string
	// ControlPlaneNamespaces: the Istio namespace and those of OSSM 2's ServiceMeshControlPlanes.
	ControlPlaneNamespaces []string
	// Configs in effect, by key.
	Configs []Config
	// Wanted are the keys of the mesh configs looked for (those of the revisions in use).
	Wanted []string
	// Missing are the wanted keys not found (a revision tag names no ConfigMap of its own).
	Missing []string
	// Fallback is true when no wanted config exists and the ConfigMaps labelled as some
	// revision's mesh config in a control plane namespace were used instead.
	Fallback bool
}

// Keys of the configs in effect.
func (e InEffect) Keys() []string {
	out := make([]string, len(e.Configs))
	for i, c := range e.Configs {
		out[i] = c.Key()
	}
	return out
}

// TrustDomain is the trust domain of the configs in effect (DefaultTrustDomain without any). When
// they disagree, conflict describes them and td is the default revision's (else the first by key):
// principals are then wrong for the namespaces of the other revisions, which denies their traffic
// (a principal never matches a workload of another trust domain) but never allows more.
func (e InEffect) TrustDomain() (td, conflict string) {
	if len(e.Configs) == 0 {
		return DefaultTrustDomain, ""
	}
	td = e.Configs[0].TrustDomain
	var parts []string
	distinct := map[string]bool{}
	for _, c := range e.Configs {
		distinct[c.TrustDomain] = true
		parts = append(parts, fmt.Sprintf("%s: %s", c.Key(), c.TrustDomain))
		if c.Namespace == e.IstioNamespace && c.Revision == DefaultRevision && c.Name == DefaultName {
			td = c.TrustDomain
		}
	}
	if len(distinct) == 1 {
		return td, ""
	}
	return td, fmt.Sprintf("the mesh configs in effect have different trust domains (%s); using %s", strings.Join(parts, ", "), td)
}

// RootNamespaces are Istio's root namespaces: those of each config (Config.RootNamespaces), or,
// without any config, the Istio namespace and DefaultRootNamespace (istiod without a mesh config
// uses the latter, whatever its namespace). Any of them is the root namespace for some namespaces:
// an object with a workload selector written there applies in every namespace that revision serves.
func (e InEffect) RootNamespaces() []string {
	if len(e.Configs) == 0 {
		return union(e.IstioNamespace, DefaultRootNamespace)
	}
	var all []string
	for _, c := range e.Configs {
		all = append(all, c.RootNamespaces...)
	}
	return union(all...)
}

// For returns the configs that govern a namespace: istio-injection=enabled selects the default
// revision (as Istio's injector does, over istio.io/rev), istio.io/rev=<rev> that revision, OSSM 2's
// maistra.io/member-of=<ns> the control plane of that namespace. When none of these names a config
// in effect (no label, a revision tag, a revision whose config is missing), every config is returned.
func (e InEffect) For(nsLabels map[string]string) []Config {
	var out []Config
	pick := func(match func(Config) bool) bool {
		for _, c := range e.Configs {
			if match(c) {
				out = append(out, c)
			}
		}
		return len(out) > 0
	}
	inj, hasInj := nsLabels[InjectionLabel]
	rev, hasRev := nsLabels[RevisionLabel]
	switch {
	case hasInj && inj == "enabled":
		rev, hasRev = DefaultRevision, true
	case hasInj:
		hasRev = false
	}
	if hasRev && pick(func(c Config) bool { return c.Namespace == e.IstioNamespace && c.Revision == rev }) {
		return out
	}
	if cp, ok := nsLabels[MemberOfLabel]; ok && pick(func(c Config) bool { return c.Namespace == cp }) {
		return out
	}
	return e.Configs
}

// Discovers says whether the istiod serving a namespace discovers it: one of the configs that
// govern it (For) has no discoverySelectors or has one that selects it. Without any config, yes.
func (e InEffect) Discovers(nsLabels map[string]string) bool {
	governing := e.For(nsLabels)
	if len(governing) == 0 {
		return true
	}
	for _, c := range governing {
		if c.Discovers(nsLabels) {
			return true
		}
	}
	return false
}

// SelectorsDescription names the discoverySelectors in effect, for messages.
func (e InEffect) SelectorsDescription() string {
	var parts []string
	for _, c := range e.Configs {
		if len(c.Selectors) > 0 {
			parts = append(parts, fmt.Sprintf("%d of %s", len(c.Selectors), c.Key()))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return strings.Join(parts, ", ")
}

// Relevant says whether an event of this ConfigMap may change the configs in effect: "istio" or
// "istio-<rev>" (labelled istio.io/rev=<rev>, or wanted) in a control plane namespace (in any
// namespace until the first resolution has named them). Other ConfigMaps, e.g. Istio's
// istio-sidecar-injector or leader election ConfigMaps, are not.
func (e InEffect) Relevant(cm client.Object) bool {
	if e.ControlPlaneNamespaces != nil && !slices.Contains(e.ControlPlaneNamespaces, cm.GetNamespace()) {
		return false
	}
	name := cm.GetName()
	if name == DefaultName || slices.Contains(e.Wanted, cm.GetNamespace()+"/"+name) {
		return true
	}
	rev, ok := cm.GetLabels()[RevisionLabel]
	return ok && rev != "" && name == NameOf(rev)
}

// Reader reads the mesh configs.
type Reader struct {
	// Client reads namespaces, ServiceMeshControlPlanes and the ConfigMaps named "istio".
	Client client.Reader
	// Revisioned lists the ConfigMaps labelled istio.io/rev (nil: Client).
	Revisioned client.Reader
	// Direct gets a wanted ConfigMap that neither holds (e.g. not labelled); nil: none.
	Direct client.Reader
	// Mapper says whether OSSM 2's ServiceMeshControlPlane is served.
	Mapper meta.RESTMapper
	// Namespaces are the only ones where a mesh config not named "istio" is read (Revisioned holds
	// those; the operator may read ConfigMaps there); empty: any. One wanted elsewhere is an error:
	// it could not be watched, and a change to it (a new rootNamespace) would go unseen.
	Namespaces []string
}

// Resolve finds the mesh configs in effect: "istio" in the Istio namespace; "istio-<rev>" there
// for each revision named by a namespace's istio.io/rev label; "istio-<name>" of each OSSM 2
// ServiceMeshControlPlane in its namespace. When none of them exists, the ConfigMaps of the
// control plane namespaces labelled istio.io/rev=<rev> and named istio-<rev> (or istio) are used.
func (r Reader) Resolve(ctx context.Context, istioNamespace string) (InEffect, error) {
	e := InEffect{IstioNamespace: istioNamespace, ControlPlaneNamespaces: []string{istioNamespace}}
	want := func(ns, name string) {
		if k := ns + "/" + name; !slices.Contains(e.Wanted, k) {
			e.Wanted = append(e.Wanted, k)
		}
	}
	want(istioNamespace, DefaultName)
	if r.Mapper != nil {
		if _, err := r.Mapper.RESTMapping(ControlPlaneGVK.GroupKind(), ControlPlaneGVK.Version); err == nil {
			list := &unstructured.UnstructuredList{}
			list.SetGroupVersionKind(ControlPlaneGVK.GroupVersion().WithKind("ServiceMeshControlPlaneList"))
			if err := r.Client.List(ctx, list); err != nil {
				return e, fmt.Errorf("list ServiceMeshControlPlanes: %w", err)
			}
			for _, cp := range list.Items {
				want(cp.GetNamespace(), NameOf(cp.GetName()))
				if !slices.Contains(e.ControlPlaneNamespaces, cp.GetNamespace()) {
					e.ControlPlaneNamespaces = append(e.ControlPlaneNamespaces, cp.GetNamespace())
				}
			}
		}
	}
	sort.Strings(e.ControlPlaneNamespaces)
	var nss corev1.NamespaceList
	if err := r.Client.List(ctx, &nss); err != nil {
		return e, fmt.Errorf("list namespaces: %w", err)
	}
	for i := range nss.Items {
		if rev := nss.Items[i].Labels[RevisionLabel]; rev != "" {
			want(istioNamespace, NameOf(rev))
		}
	}
	sort.Strings(e.Wanted)

	revisioned := r.Revisioned
	if revisioned == nil {
		revisioned = r.Client
	}
	byKey := map[string]*corev1.ConfigMap{}
	var labelled corev1.ConfigMapList
	if err := revisioned.List(ctx, &labelled, client.HasLabels{RevisionLabel}); err != nil {
		return e, fmt.Errorf("list ConfigMaps labelled %s: %w", RevisionLabel, err)
	}
	for i := range labelled.Items {
		cm := &labelled.Items[i]
		if slices.Contains(e.ControlPlaneNamespaces, cm.Namespace) {
			byKey[cm.Namespace+"/"+cm.Name] = cm
		}
	}
	var found []*corev1.ConfigMap
	for _, k := range e.Wanted {
		ns, name, _ := strings.Cut(k, "/")
		if name != DefaultName && len(r.Namespaces) > 0 && !slices.Contains(r.Namespaces, ns) {
			return e, fmt.Errorf("istio's mesh config %s is wanted, but smi2istio reads mesh configs other than %q only in %v: add %s to --mesh-config-namespaces and bind the mesh-config-reader ClusterRole to smi2istio's ServiceAccount there", k, DefaultName, r.Namespaces, ns)
		}
		cm := byKey[k]
		if cm == nil {
			var err error
			if cm, err = r.get(ctx, ns, name); err != nil {
				return e, err
			}
		}
		if cm == nil {
			e.Missing = append(e.Missing, k)
			continue
		}
		found = append(found, cm)
	}
	if len(found) == 0 {
		for _, k := range sortedKeys(byKey) {
			if cm := byKey[k]; cm.Name == DefaultName || cm.Name == NameOf(cm.Labels[RevisionLabel]) {
				found = append(found, cm)
				e.Fallback = true
			}
		}
	}
	for _, cm := range found {
		c, err := Parse(cm)
		if err != nil {
			return e, err
		}
		e.Configs = append(e.Configs, c)
	}
	sort.Slice(e.Configs, func(i, j int) bool { return e.Configs[i].Key() < e.Configs[j].Key() })
	return e, nil
}

// get reads a wanted ConfigMap through Client ("istio", or any without Direct) or Direct; nil
// when it does not exist.
func (r Reader) get(ctx context.Context, ns, name string) (*corev1.ConfigMap, error) {
	c := r.Client
	if name != DefaultName && r.Direct != nil {
		c = r.Direct
	}
	cm := &corev1.ConfigMap{}
	err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, cm)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read Istio's mesh config %s/%s: %w", ns, name, err)
	}
	return cm, nil
}

func sortedKeys(m map[string]*corev1.ConfigMap) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
