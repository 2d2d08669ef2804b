package controllers

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	securityv1beta1 "istio.io/client-go/pkg/apis/security/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/smi2istio/smi2istio/internal/cache"
	"github.com/smi2istio/smi2istio/internal/syncset"
	"github.com/smi2istio/smi2istio/translate"
)

// BaselineName is the allow-nothing AuthorizationPolicy of a member namespace in Enforcing mode.
const BaselineName = "smi2istio-default-deny"

// BaselineReconciler gives every mesh namespace SMI's default deny in Enforcing mode: one
// allow-nothing AuthorizationPolicy (never in Istio's root namespace, where it would close the mesh),
// owned by the SMI2IstioConfig so that uninstalling smi2istio removes it.
type BaselineReconciler struct {
	Client client.Client
	// State gives the configuration in effect (mode, membership, Istio's namespace); Resync, when
	// set, re-reconciles every namespace when it changes.
	State  StateSource
	Resync func(fan func(context.Context) []reconcile.Request) source.Source
	// Workloads is the index of pods (shared with the access reconciler); SetupWithManager makes
	// one when nil. A namespace whose pods run Istio's sidecar keeps its baseline (meshedNamespace).
	Workloads *cache.WorkloadIndex

	syncer *syncset.Syncer
	// waypoints: the Gateway CRD is served (found at set-up): waypoints get their baseline too.
	waypoints bool
}

// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch

// SetupWithManager watches namespaces and the baselines.
func (r *BaselineReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.syncer = newSyncer(r.Client, mgr.GetAPIReader())
	r.waypoints = served(mgr.GetRESTMapper(), GatewayGVK)
	if r.Workloads == nil {
		r.Workloads = cache.NewWorkloadIndex()
	}
	b := ctrl.NewControllerManagedBy(mgr).
		Named("baseline").
		WatchesRawSource(&workloadSource{index: r.Workloads, changes: r.Workloads.Subscribe(), cfg: mgr.GetConfig(),
			fan: func(_ context.Context, ns string) []reconcile.Request {
				return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: ns}}}
			}})
	if r.Resync != nil {
		b = b.WatchesRawSource(r.Resync(func(ctx context.Context) []reconcile.Request {
			return forEachNamespace(ctx, r.Client, func(ns string) []reconcile.Request {
				return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: ns}}}
			})
		}))
	}
	if r.waypoints {
		b = b.Watches(cache.New(GatewayGVK), handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: o.GetNamespace()}}}
		}))
	}
	return b.
		For(&corev1.Namespace{}).
		Watches(cache.New(AuthorizationPolicyGVK), handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			if o.GetName() != BaselineName && !strings.HasPrefix(o.GetName(), translate.WaypointBaselinePrefix) {
				return nil
			}
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: o.GetNamespace()}}}
		})).
		Complete(r)
}

// Reconcile applies or removes the baseline of one namespace: a set of one object, owned by the
// config.
func (r *BaselineReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	ns := &corev1.Namespace{}
	if err := r.Client.Get(ctx, req.NamespacedName, ns); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	state, ok := r.State()
	if !ok {
		return reconcile.Result{}, nil // the first resolution of the configuration resyncs everything
	}
	want := state.Mode == Enforcing && meshedNamespace(state, ns.Name, r.Workloads.Sidecars(ns.Name)) && state.SelectorOutputsAllowed(ns.Name) && ns.Name != state.IstioNamespace && ns.DeletionTimestamp == nil
	if want && state.Config == nil {
		return reconcile.Result{}, nil // no owner yet: the config's creation resyncs every namespace
	}
	set, err := baselineSet(ns.Name, want, state.Config)
	if err != nil {
		return reconcile.Result{}, err
	}
	synced, err := r.syncer.Sync(ctx, set)
	if r.waypoints {
		// A set of its own, synced whatever became of the namespace's (one kept widened, say).
		wsynced, werr := r.syncWaypoints(ctx, ns.Name, want, state.Config)
		err = errors.Join(err, werr)
		synced.Applied, synced.Pruned = append(synced.Applied, wsynced.Applied...), append(synced.Pruned, wsynced.Pruned...)
		synced.Problems = append(synced.Problems, wsynced.Problems...)
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	log := ctrl.LoggerFrom(ctx)
	if p, blocked := synced.Problem(syncset.ReasonConflict); blocked {
		log.Info("an AuthorizationPolicy we did not write has the baseline's name: left untouched", "namespace", ns.Name, "problem", p.Message)
	}
	if synced.Wrote() {
		log.Info("synced the deny-by-default baseline", "namespace", ns.Name, "applied", refNames(synced.Applied), "pruned", refNames(synced.Pruned))
	}
	return reconcile.Result{}, nil
}

// syncWaypoints syncs the baselines of namespace ns's waypoints.
func (r *BaselineReconciler) syncWaypoints(ctx context.Context, ns string, want bool, owner *metav1.OwnerReference) (syncset.Result, error) {
	waypoints, err := r.waypointsOf(ctx, ns)
	if err != nil {
		return syncset.Result{}, err
	}
	set, err := waypointBaselineSet(ns, waypoints, want, owner)
	if err != nil {
		return syncset.Result{}, err
	}
	return r.syncer.Sync(ctx, set)
}

// WaypointClass is the GatewayClass of Istio's waypoint proxies.
const WaypointClass = "istio-waypoint"

// waypointsOf lists the namespace's waypoints (Gateways of class istio-waypoint not being deleted),
// by name.
func (r *BaselineReconciler) waypointsOf(ctx context.Context, ns string) ([]string, error) {
	list := cache.NewList(GatewayGVK)
	if err := r.Client.List(ctx, list, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("list the Gateways of %s: %w", ns, err)
	}
	var out []string
	for _, gw := range list.Objects() {
		if gw.Class() == WaypointClass && gw.GetDeletionTimestamp().IsZero() {
			out = append(out, gw.GetName())
		}
	}
	sort.Strings(out)
	return out, nil
}

// baselineSpec is the hash of the spec smi2istio writes for a namespace's baseline (allow nothing).
var baselineSpec = sync.OnceValues(func() (string, error) {
	set, err := baselineSet("baseline", true, &metav1.OwnerReference{})
	if err != nil {
		return "", err
	}
	return cache.SpecHash(set.Objects[0].Object["spec"])
})

// waypointBaselineSpec is the hash of the spec smi2istio writes for the baseline of waypoint
// ns/name.
func waypointBaselineSpec(ns, name string) (string, error) {
	set, err := waypointBaselineSet(ns, []string{name}, true, &metav1.OwnerReference{})
	if err != nil {
		return "", err
	}
	return cache.SpecHash(set.Objects[0].Object["spec"])
}

// waypointBaselineSet is the allow-nothing policy of each waypoint of a namespace (attached to its
// Gateway): a waypoint applies only policies attached to it or to the Service a request is for, and
// allows everything on a chain without any ALLOW policy; the namespace baseline does not reach it.
// With it, the waypoint allows only what a TrafficTarget's policy for a Service allows.
func waypointBaselineSet(ns string, waypoints []string, want bool, owner *metav1.OwnerReference) (*syncset.Set, error) {
	labels := map[string]string{translate.ManagedByLabel: translate.ManagedByValue, translate.SourceKindLabel: "Waypoints", translate.SourceNameLabel: ns}
	set := &syncset.Set{
		Namespace:  ns,
		Kinds:      []syncset.Kind{{GVK: AuthorizationPolicyGVK}},
		Labels:     labels,
		OwnerKinds: []string{"SMI2IstioConfig"},
		OnBlocked:  syncset.Keep,
		// As the namespace's: deleting one opens its waypoint until it is back.
		RepairInPlace: true,
	}
	if !want || owner == nil {
		return set, nil
	}
	objs := make([]runtime.Object, 0, len(waypoints))
	for _, w := range waypoints {
		ap := translate.WaypointBaseline(translate.Waypoint{Namespace: ns, Name: w, ServiceAccount: w})
		ap.Labels = labels
		objs = append(objs, ap)
	}
	rendered, err := render(objs, *owner)
	if err != nil {
		return nil, err
	}
	set.Objects = rendered
	return set, nil
}

// baselineSet is a namespace's baseline: the allow-nothing AuthorizationPolicy when wanted.
func baselineSet(ns string, want bool, owner *metav1.OwnerReference) (*syncset.Set, error) {
	labels := map[string]string{translate.ManagedByLabel: translate.ManagedByValue, translate.SourceKindLabel: "Namespace", translate.SourceNameLabel: ns}
	set := &syncset.Set{
		Namespace:  ns,
		Kinds:      []syncset.Kind{{GVK: AuthorizationPolicyGVK}},
		Labels:     labels,
		OwnerKinds: []string{"SMI2IstioConfig"},
		OnBlocked:  syncset.Keep,
		// Never deleted to be written again: that would open the namespace until it is back. A spec
		// someone widened is written back in place; one an admission step widens again on that
		// write, and one with metadata that keeps Istio from enforcing it (no exact keys: a tool
		// that keeps labelling it would keep it open), is reported instead
		// (AccessReconciler.baselineState).
		RepairInPlace: true,
	}
	if !want {
		return set, nil
	}
	ap := &securityv1beta1.AuthorizationPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "security.istio.io/v1beta1", Kind: "AuthorizationPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: BaselineName, Namespace: ns, Labels: labels},
	}
	objs, err := render([]runtime.Object{ap}, *owner)
	if err != nil {
		return nil, err
	}
	set.Objects = objs
	return set, nil
}
