package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/smi2istio/smi2istio/api/v1alpha1"
	"github.com/smi2istio/smi2istio/internal/cache"
	"github.com/smi2istio/smi2istio/internal/membership"
	"github.com/smi2istio/smi2istio/internal/meshconfig"
	"github.com/smi2istio/smi2istio/translate"
)

// State is the configuration in effect: what the SMI2IstioConfig says (or the defaults), resolved
// against the cluster.
type State struct {
	Mode           AccessMode
	Mesh           translate.Mesh
	IstioNamespace string
	Members        membership.Result
	// RootNamespaces are Istio's root namespaces, sorted: the rootNamespace of every mesh config in
	// effect (each revision's), the Istio namespace without one. See SelectorOutputsAllowed.
	RootNamespaces []string
	// MeshConfigs are the mesh config ConfigMaps in effect (namespace/name), sorted.
	MeshConfigs []string
	// MeshConflict, when not empty, says how the mesh configs in effect disagree (their trust
	// domains): Mesh.TrustDomain is then one of them, which denies the traffic of the namespaces of
	// the others (their principals never match) but allows nothing more.
	MeshConflict string
	// meshNote tells the status about mesh configs looked for and not found.
	meshNote string
	// Config owns the namespace baselines, so that uninstalling removes them.
	Config *metav1.OwnerReference
	// Dataplane is the configured data-plane mode (Auto: per namespace, Members.Ambient);
	// RouteAPI the API TrafficSplits are written to in sidecar namespaces.
	Dataplane v1alpha1.DataplaneMode
	RouteAPI  v1alpha1.RouteAPI
}

// Ambient reports whether a namespace's outputs are for Istio's ambient data plane (ztunnel and
// waypoints) rather than sidecars.
func (s State) Ambient(namespace string) bool {
	switch s.Dataplane {
	case v1alpha1.DataplaneAmbient:
		return true
	case v1alpha1.DataplaneSidecar:
		return false
	}
	return s.Members.Ambient[namespace]
}

// GatewayRoutes reports whether a namespace's TrafficSplits are written as Gateway API routes
// (always in ambient namespaces, where VirtualService is alpha on waypoints).
func (s State) GatewayRoutes(namespace string) bool {
	return s.Ambient(namespace) || s.RouteAPI == v1alpha1.RouteGatewayAPI
}

// DataplaneDescription names a namespace's data plane for conditions: "sidecar" or "ambient".
func (s State) DataplaneDescription(namespace string) string {
	if s.Ambient(namespace) {
		return "ambient"
	}
	return "sidecar"
}

// InMesh reports whether smi2istio acts in a namespace.
func (s State) InMesh(namespace string) bool { return s.Members.Has(namespace) }

// SelectorOutputsAllowed reports whether smi2istio may write, in a namespace, objects with a workload
// selector (AuthorizationPolicies, PeerAuthentications, EnvoyFilters) or the namespace baseline:
// not in a root namespace of Istio, where such an object applies to the workloads of every
// namespace. Without resolved root namespaces, the Istio namespace counts as one (Istio's default).
func (s State) SelectorOutputsAllowed(namespace string) bool {
	if namespace == "" {
		return false
	}
	if len(s.RootNamespaces) == 0 {
		return namespace != s.IstioNamespace
	}
	for _, root := range s.RootNamespaces {
		if namespace == root {
			return false
		}
	}
	return true
}

// StateSource returns the state in effect, and false until the ConfigReconciler has resolved it
// once: until then dependants do nothing (acting on an empty membership would prune everything).
type StateSource func() (State, bool)

// Shared holds the published state and the resync channels of the reconcilers that depend on it.
type Shared struct {
	mu     sync.RWMutex
	state  State
	ready  bool
	resync []chan event.GenericEvent
	// istioMissing lists the Istio kinds not served (the reconcilers writing them wait); poke
	// re-reconciles the config (its status says so).
	istioMissing []string
	poke         chan event.GenericEvent
}

// SetIstioMissing records the Istio kinds the apiserver does not serve; the config's status
// reports them (IstioDetected). A change re-reconciles the config.
func (s *Shared) SetIstioMissing(missing []string) {
	s.mu.Lock()
	changed := fmt.Sprint(s.istioMissing) != fmt.Sprint(missing)
	s.istioMissing = missing
	s.mu.Unlock()
	if changed {
		s.PokeConfig()
	}
}

// IstioMissing lists the Istio kinds not served.
func (s *Shared) IstioMissing() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.istioMissing
}

// PokeConfig re-reconciles the config.
func (s *Shared) PokeConfig() {
	select {
	case s.pokeChan() <- event.GenericEvent{Object: &v1alpha1.SMI2IstioConfig{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.ConfigName}}}:
	default:
	}
}

func (s *Shared) pokeChan() chan event.GenericEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.poke == nil {
		s.poke = make(chan event.GenericEvent, 1)
	}
	return s.poke
}

// NewShared starts with the defaults and no member namespace until the first resolution.
func NewShared(clusterDomain string) *Shared {
	return &Shared{state: State{Mode: Enforcing, IstioNamespace: "istio-system", RootNamespaces: []string{"istio-system"},
		Mesh: translate.Mesh{ClusterDomain: clusterDomain, RegexPolicy: translate.RegexEnvoy}}}
}

// Current is a StateSource.
func (s *Shared) Current() (State, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.state, s.ready
}

// Resync returns a channel source that fires when the state changes; fan maps it to requests.
func (s *Shared) Resync(fan func(context.Context) []reconcile.Request) source.Source {
	ch := make(chan event.GenericEvent, 1)
	s.mu.Lock()
	s.resync = append(s.resync, ch)
	s.mu.Unlock()
	return source.Channel(ch, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
		return fan(ctx)
	}))
}

// publish stores a new state; dependants re-reconcile everything when it changed.
func (s *Shared) publish(st State) bool {
	s.mu.Lock()
	changed := !s.ready || !reflect.DeepEqual(s.state, st)
	s.state, s.ready = st, true
	chans := s.resync
	s.mu.Unlock()
	if changed {
		for _, ch := range chans {
			select {
			case ch <- event.GenericEvent{Object: &corev1.Namespace{}}:
			default: // a resync is already pending
			}
		}
	}
	return changed
}

// ConfigReconciler resolves the SMI2IstioConfig singleton (defaults when absent) and mesh
// membership, publishes the state, and reports it on the config's status.
type ConfigReconciler struct {
	Client client.Client
	Shared *Shared
	// Recount is how often the status's object counts are refreshed.
	Recount time.Duration

	// countsWritten is when the object counts were last written (the operator's clock): counts that
	// alone changed are written at most every countsEvery, or every status write (each one an event
	// that reconciles the config again) would recount objects still converging and write again —
	// ≈600 writes while 10,000 SMI objects converge (the bench's "other" writes).
	countsWritten atomic.Int64

	// MeshConfigNamespaces are the only namespaces where revisions' mesh configs ("istio-<rev>",
	// OSSM 2's "istio-<smcp>") are read and watched: Istio's and OSSM 2's control plane namespaces
	// (--mesh-config-namespaces), where the operator is granted read access to ConfigMaps. Empty:
	// every namespace. The ConfigMaps named "istio" are read in every namespace (cache.Options).
	MeshConfigNamespaces []string

	// revisioned holds the ConfigMaps labelled istio.io/rev (revisions' mesh configs) and direct
	// reads the apiserver: both set by SetupWithManager (without them, Client is read).
	revisioned, direct client.Reader
	// mesh is the last mesh config resolved: its control plane namespaces and wanted names select
	// the ConfigMap events that re-resolve.
	mesh atomic.Pointer[meshconfig.InEffect]
}

// +kubebuilder:rbac:groups=smi2istio.io,resources=smi2istioconfigs,verbs=get;list;watch;create
// +kubebuilder:rbac:groups=smi2istio.io,resources=smi2istioconfigs/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=maistra.io,resources=servicemeshmemberrolls;servicemeshcontrolplanes,verbs=get;list;watch
// ConfigMaps named "istio" in every namespace (the manager's cache lists and watches them with the
// field selector metadata.name=istio, which RBAC authorizes as a request for that name). The
// revisions' mesh configs are read only in MeshConfigNamespaces, granted there by a RoleBinding of
// config/rbac's mesh-config-reader ClusterRole (docs/decisions.md, "ConfigMaps").
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch,resourceNames=istio

var configRequest = reconcile.Request{NamespacedName: types.NamespacedName{Name: v1alpha1.ConfigName}}

// SetupWithManager watches the config, namespaces, Istio's mesh configs and (when OSSM's CRDs are
// served) member rolls and control planes; all of them map to the one singleton request.
func (r *ConfigReconciler) SetupWithManager(mgr ctrl.Manager) error {
	one := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{configRequest}
	})
	// The manager's cache holds only the ConfigMaps named "istio" (cache.Options); the revisions'
	// mesh configs ("istio-<rev>", labelled istio.io/rev=<rev>) come from a cache of their own,
	// which keeps only their "mesh" key.
	revisioned, err := newMeshConfigCache(mgr, r.MeshConfigNamespaces)
	if err != nil {
		return err
	}
	if err := mgr.Add(revisioned); err != nil {
		return fmt.Errorf("add the mesh config cache: %w", err)
	}
	r.revisioned, r.direct = revisioned, mgr.GetAPIReader()
	// Namespace events (one per namespace at start) also trigger the first resolution.
	b := ctrl.NewControllerManagedBy(mgr).
		Named("config").
		For(&v1alpha1.SMI2IstioConfig{}).
		Watches(&corev1.Namespace{}, one).
		Watches(&corev1.ConfigMap{}, one, builder.WithPredicates(meshConfigEvents[client.Object](r.relevant))).
		WatchesRawSource(source.Channel(r.Shared.pokeChan(), one)).
		WatchesRawSource(source.Kind(revisioned, &corev1.ConfigMap{},
			handler.TypedEnqueueRequestsFromMapFunc(func(context.Context, *corev1.ConfigMap) []reconcile.Request {
				return []reconcile.Request{configRequest}
			}),
			meshConfigEvents[*corev1.ConfigMap](r.relevant)))
	for _, gvk := range []schema.GroupVersionKind{membership.MemberRollGVK, meshconfig.ControlPlaneGVK} {
		if served(mgr.GetRESTMapper(), gvk) {
			// Unstructured: no Go type of OSSM's is fetchable here (DESIGN §8). SMI and Istio kinds
			// are read only through internal/cache's compact types: an unstructured read of one would start
			// a second informer holding every object of the kind again.
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(gvk)
			b = b.Watches(u, one)
		}
	}
	return b.Complete(r)
}

// relevant says whether a ConfigMap event may change the mesh config in effect.
func (r *ConfigReconciler) relevant(cm client.Object) bool {
	if e := r.mesh.Load(); e != nil {
		return e.Relevant(cm)
	}
	return meshconfig.InEffect{}.Relevant(cm)
}

// meshConfigEvents passes the events of the ConfigMaps that are, or were, mesh configs.
func meshConfigEvents[T client.Object](relevant func(client.Object) bool) predicate.TypedFuncs[T] {
	return predicate.TypedFuncs[T]{
		CreateFunc:  func(e event.TypedCreateEvent[T]) bool { return relevant(e.Object) },
		UpdateFunc:  func(e event.TypedUpdateEvent[T]) bool { return relevant(e.ObjectOld) || relevant(e.ObjectNew) },
		DeleteFunc:  func(e event.TypedDeleteEvent[T]) bool { return relevant(e.Object) },
		GenericFunc: func(e event.TypedGenericEvent[T]) bool { return relevant(e.Object) },
	}
}

// newMeshConfigCache caches the ConfigMaps labelled istio.io/rev (revisions' mesh configs, and a few
// other Istio ConfigMaps, e.g. the sidecar injector's) of these namespaces (all when none), keeping
// only the "mesh" key of each.
func newMeshConfigCache(mgr ctrl.Manager, namespaces []string) (crcache.Cache, error) {
	hasRev, err := labels.NewRequirement(meshconfig.RevisionLabel, selection.Exists, nil)
	if err != nil {
		return nil, fmt.Errorf("select ConfigMaps labelled %s: %w", meshconfig.RevisionLabel, err)
	}
	c, err := crcache.New(mgr.GetConfig(), crcache.Options{
		HTTPClient: mgr.GetHTTPClient(),
		Scheme:     mgr.GetScheme(),
		Mapper:     mgr.GetRESTMapper(),
		ByObject: map[client.Object]crcache.ByObject{
			&corev1.ConfigMap{}: {Label: labels.NewSelector().Add(*hasRev), Transform: meshConfigTransform},
		},
		DefaultNamespaces: inNamespaces(namespaces),
	})
	if err != nil {
		return nil, fmt.Errorf("create the mesh config cache: %w", err)
	}
	return c, nil
}

// inNamespaces restricts a cache to these namespaces (nil: all).
func inNamespaces(namespaces []string) map[string]crcache.Config {
	if len(namespaces) == 0 {
		return nil
	}
	out := make(map[string]crcache.Config, len(namespaces))
	for _, ns := range namespaces {
		out[ns] = crcache.Config{}
	}
	return out
}

// meshConfigTransform keeps a ConfigMap's "mesh" key only (the sidecar injector's templates, also
// labelled istio.io/rev, are large).
func meshConfigTransform(obj any) (any, error) {
	if cm, ok := obj.(*corev1.ConfigMap); ok {
		mesh, has := cm.Data[meshconfig.MeshKey]
		cm.Data, cm.BinaryData = nil, nil
		if has {
			cm.Data = map[string]string{meshconfig.MeshKey: mesh}
		}
	}
	return cache.StripTransform(obj)
}

// Reconcile resolves and publishes the state and writes the config's status.
func (r *ConfigReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	cfg := &v1alpha1.SMI2IstioConfig{}
	err := r.Client.Get(ctx, client.ObjectKey{Name: v1alpha1.ConfigName}, cfg)
	if apierrors.IsNotFound(err) {
		// The singleton holds the status and owns the baselines: create it with the defaults, and
		// the access mode of Open Service Mesh's MeshConfig when there is one (controllers/osm.go).
		cfg = defaultConfig(ctx, r.reader(), r.Client.RESTMapper())
		if err := r.Client.Create(ctx, cfg); err != nil && !apierrors.IsAlreadyExists(err) {
			return reconcile.Result{}, fmt.Errorf("create SMI2IstioConfig %s: %w", v1alpha1.ConfigName, err)
		}
		return reconcile.Result{}, nil // its creation event brings us back
	}
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("get SMI2IstioConfig %s: %w", v1alpha1.ConfigName, err)
	}
	if !cfg.DeletionTimestamp.IsZero() {
		return reconcile.Result{}, nil
	}
	spec := withDefaults(cfg.Spec)
	st, err := r.resolve(ctx, spec)
	if err != nil {
		return reconcile.Result{}, err
	}
	st.Config = &metav1.OwnerReference{APIVersion: v1alpha1.GroupVersion.String(), Kind: "SMI2IstioConfig", Name: cfg.Name, UID: cfg.UID}
	if r.Shared.publish(st) {
		ctrl.LoggerFrom(ctx).Info("configuration in effect", "accessMode", st.Mode, "regexPolicy", st.Mesh.RegexPolicy,
			"trustDomain", st.Mesh.TrustDomain, "provider", st.Members.Provider, "members", len(st.Members.Members),
			"meshConfigs", st.MeshConfigs, "rootNamespaces", st.RootNamespaces, "meshConflict", st.MeshConflict)
	}
	return reconcile.Result{RequeueAfter: r.Recount}, r.writeStatus(ctx, cfg, st)
}

// reader reads the apiserver directly when set up with a manager (kinds read rarely, not cached).
func (r *ConfigReconciler) reader() client.Reader {
	if r.direct != nil {
		return r.direct
	}
	return r.Client
}

func withDefaults(s v1alpha1.SMI2IstioConfigSpec) v1alpha1.SMI2IstioConfigSpec {
	if s.AccessMode == "" {
		s.AccessMode = v1alpha1.Enforcing
	}
	if s.Membership.Provider == "" {
		s.Membership.Provider = v1alpha1.Auto
	}
	if s.RegexPolicy == "" {
		s.RegexPolicy = v1alpha1.RegexPolicy(translate.RegexEnvoy)
	}
	if s.MinIstioVersion == "" {
		s.MinIstioVersion = "1.16"
	}
	if s.IstioNamespace == "" {
		s.IstioNamespace = "istio-system"
	}
	return s
}

func (r *ConfigReconciler) resolve(ctx context.Context, spec v1alpha1.SMI2IstioConfigSpec) (State, error) {
	mesh, err := meshconfig.Reader{Client: r.Client, Revisioned: r.revisioned, Direct: r.direct, Mapper: r.Client.RESTMapper(),
		Namespaces: r.MeshConfigNamespaces}.
		Resolve(ctx, spec.IstioNamespace)
	if err != nil {
		return State{}, err
	}
	r.mesh.Store(&mesh)
	members, err := membership.Resolve(ctx, r.Client, r.Client.RESTMapper(), spec, mesh)
	if err != nil {
		return State{}, err
	}
	trustDomain, conflict := spec.TrustDomain, ""
	if trustDomain == "" {
		trustDomain, conflict = mesh.TrustDomain()
	}
	prev, _ := r.Shared.Current()
	return State{
		Mode:           AccessMode(spec.AccessMode),
		IstioNamespace: spec.IstioNamespace,
		Members:        members,
		RootNamespaces: mesh.RootNamespaces(),
		MeshConfigs:    mesh.Keys(),
		MeshConflict:   conflict,
		meshNote:       meshNote(mesh),
		Dataplane:      spec.DataplaneMode,
		RouteAPI:       spec.RouteAPI,
		Mesh: translate.Mesh{
			ClusterDomain: prev.Mesh.ClusterDomain,
			TrustDomain:   trustDomain,
			RegexPolicy:   translate.RegexPolicy(spec.RegexPolicy),
			PathTemplates: minorAtLeast(spec.MinIstioVersion, 22),
		},
	}, nil
}

// meshNote says which mesh configs were looked for and not found, and when the fallback was used.
func meshNote(mesh meshconfig.InEffect) string {
	var notes []string
	if len(mesh.Configs) == 0 {
		notes = append(notes, "no Istio mesh config found (looked for "+strings.Join(mesh.Wanted, ", ")+
			"): trust domain "+meshconfig.DefaultTrustDomain+" and root namespaces "+strings.Join(mesh.RootNamespaces(), ", ")+" assumed")
	} else if len(mesh.Missing) > 0 {
		notes = append(notes, "no mesh config "+strings.Join(mesh.Missing, ", ")+" (revision tags have none)")
	}
	if mesh.Fallback {
		notes = append(notes, "no mesh config of a revision in use exists: using those labelled "+meshconfig.RevisionLabel+
			" ("+strings.Join(mesh.Keys(), ", ")+")")
	}
	return strings.Join(notes, "; ")
}

func minorAtLeast(version string, minor int) bool {
	_, m, ok := strings.Cut(version, ".")
	if !ok {
		return false
	}
	n, err := strconv.Atoi(m)
	return err == nil && n >= minor
}

func (r *ConfigReconciler) writeStatus(ctx context.Context, cfg *v1alpha1.SMI2IstioConfig, st State) error {
	want := cfg.Status.DeepCopy()
	want.ObservedGeneration = cfg.Generation
	want.Mesh = v1alpha1.MeshStatus{Flavour: st.Members.Flavour, Version: st.Members.Version, Provider: st.Members.Provider,
		TrustDomain: st.Mesh.TrustDomain, RootNamespaces: st.RootNamespaces, ConfigMaps: st.MeshConfigs}
	want.Members = st.Members.Sorted()
	for _, ns := range want.Members {
		if st.Ambient(ns) {
			want.Mesh.Ambient = append(want.Mesh.Ambient, ns)
		}
	}
	counts, err := r.count(ctx, st)
	if err != nil {
		return err
	}
	want.Objects = counts
	if !reflect.DeepEqual(want.Objects, cfg.Status.Objects) && cfg.Status.Objects != nil {
		since := time.Since(time.Unix(0, r.countsWritten.Load()))
		if every := min(countsEvery, r.Recount); every > 0 && since < every {
			want.Objects = cfg.Status.Objects // written with the next change, or at the next recount
		}
	}
	want.AccessModeSource = accessModeSource(cfg, v1alpha1.AccessMode(st.Mode))
	if want.Untranslated, err = countForeign(ctx, r.reader(), r.Client.RESTMapper()); err != nil {
		return err
	}
	detected := metav1.Condition{Type: "MeshDetected", Status: metav1.ConditionTrue, Reason: "Detected", Message: st.Members.Message, ObservedGeneration: cfg.Generation}
	if st.meshNote != "" {
		detected.Message += "; " + st.meshNote
	}
	switch {
	case st.MeshConflict != "":
		detected.Status, detected.Reason, detected.Message = metav1.ConditionFalse, "MeshConfigsDisagree", st.MeshConflict+"; "+detected.Message
	case !st.Members.Ready:
		detected.Status, detected.Reason = metav1.ConditionFalse, "MembershipNotReady"
	}
	meta.SetStatusCondition(&want.Conditions, detected)
	istio := metav1.Condition{Type: "IstioDetected", Status: metav1.ConditionTrue, Reason: "Served",
		Message: "Istio's CRDs are served", ObservedGeneration: cfg.Generation}
	if missing := r.Shared.IstioMissing(); len(missing) > 0 {
		istio.Status, istio.Reason = metav1.ConditionFalse, "CRDsMissing"
		istio.Message = "not served: " + strings.Join(missing, ", ") + "; install Istio: SMI objects are translated once they are (no restart needed)"
	}
	meta.SetStatusCondition(&want.Conditions, istio)
	meta.SetStatusCondition(&want.Conditions, metav1.Condition{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Applied",
		Message: fmt.Sprintf("%s mode, %d member namespace(s)", st.Mode, len(want.Members)), ObservedGeneration: cfg.Generation})
	if reflect.DeepEqual(*want, cfg.Status) {
		return nil
	}
	patched := cfg.DeepCopy()
	patched.Status = *want
	if err := r.Client.Status().Patch(ctx, patched, client.MergeFrom(cfg)); err != nil {
		return fmt.Errorf("update status of SMI2IstioConfig %s: %w", cfg.Name, err)
	}
	if !reflect.DeepEqual(want.Objects, cfg.Status.Objects) {
		r.countsWritten.Store(time.Now().UnixNano())
	}
	return nil
}

// countsEvery is the least time between two status writes for object counts that alone changed.
const countsEvery = 10 * time.Second

// count tallies SMI objects by Ready condition (NotInMesh separately).
func (r *ConfigReconciler) count(ctx context.Context, st State) ([]v1alpha1.ObjectCounts, error) {
	var out []v1alpha1.ObjectCounts
	for _, gvk := range []struct{ kind string }{{"TrafficSplit"}, {"TrafficTarget"}} {
		g := TrafficSplitGVK
		if gvk.kind == "TrafficTarget" {
			g = TrafficTargetGVK
		}
		list := cache.NewSMIList(g)
		if err := r.Client.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
			return nil, fmt.Errorf("list %s: %w", gvk.kind, err)
		}
		c := v1alpha1.ObjectCounts{Kind: gvk.kind}
		for _, o := range list.Objects() {
			status, reason := readyOf(o)
			switch {
			case !st.InMesh(o.GetNamespace()) || reason == ReasonNotInMesh:
				c.NotInMesh++
			case status == string(metav1.ConditionTrue):
				c.Ready++
			default:
				c.NotReady++
			}
		}
		out = append(out, c)
		objectsByCondition.WithLabelValues(c.Kind, "Ready").Set(float64(c.Ready))
		objectsByCondition.WithLabelValues(c.Kind, "NotReady").Set(float64(c.NotReady))
		objectsByCondition.WithLabelValues(c.Kind, "NotInMesh").Set(float64(c.NotInMesh))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Kind < out[j].Kind })
	return out, nil
}

// readyOf is the object's Ready condition: from its status, or for a kind without a status
// subresource from what its Events last reported.
func readyOf(o cache.SMIObject) (status, reason string) {
	conds := o.GetStatus().Conditions
	if eventsOnly(o.DefaultGVK().GroupKind()) {
		conds = reportedEvents.conditions(o)
	}
	if c := meta.FindStatusCondition(conds, ConditionReady); c != nil {
		return string(c.Status), c.Reason
	}
	return "", ""
}

// configStatusChanged is the watch predicate of a reconciler other than the config's own that
// writes one field of the SMI2IstioConfig's status (status.storageMigration, status.smiCRDs): it
// passes the config's creation and the updates that changed that field (a change made by someone
// else is written back). patchConfigStatusField writes the field alone (a JSON merge patch of the status subresource) when it
// differs. Without a config nothing is written: its creation brings the reconciler back.
func configStatusChanged(field func(*v1alpha1.SMI2IstioConfigStatus) any) predicate.Funcs {
	return predicate.Funcs{
		CreateFunc: func(event.CreateEvent) bool { return true },
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, ok1 := e.ObjectOld.(*v1alpha1.SMI2IstioConfig)
			n, ok2 := e.ObjectNew.(*v1alpha1.SMI2IstioConfig)
			return !ok1 || !ok2 || !reflect.DeepEqual(field(&o.Status), field(&n.Status))
		},
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}

func patchConfigStatusField(ctx context.Context, c client.Client, name string, field func(*v1alpha1.SMI2IstioConfigStatus) any, want any) error {
	cfg := &v1alpha1.SMI2IstioConfig{}
	if err := c.Get(ctx, client.ObjectKey{Name: v1alpha1.ConfigName}, cfg); err != nil {
		return client.IgnoreNotFound(err)
	}
	if reflect.DeepEqual(field(&cfg.Status), want) {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{name: want}})
	if err != nil {
		return fmt.Errorf("encode status.%s: %w", name, err)
	}
	if err := c.Status().Patch(ctx, cfg, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("patch status.%s of SMI2IstioConfig %s: %w", name, v1alpha1.ConfigName, err)
	}
	return nil
}
