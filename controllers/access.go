package controllers

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	accessv1alpha2 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/access/v1alpha2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/smi2istio/smi2istio/internal/cache"
	"github.com/smi2istio/smi2istio/internal/smi/normalize"
	"github.com/smi2istio/smi2istio/internal/syncset"
	"github.com/smi2istio/smi2istio/translate"
)

// AccessMode mirrors OSM's permissive switch.
type AccessMode string

const (
	// Enforcing: deny by default (a baseline per member namespace); TrafficTargets allow.
	Enforcing AccessMode = "Enforcing"
	// Permissive: no baseline, TrafficTargets are not enforced.
	Permissive AccessMode = "Permissive"
)

// AccessReconciler makes Istio enforce the TrafficTargets of one destination ServiceAccount
// (the reconcile request is <namespace>/<ServiceAccount>).
type AccessReconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
	// State gives the configuration in effect (mode, mesh settings, membership); Resync, when set,
	// re-reconciles every destination when it changes.
	State  StateSource
	Resync func(fan func(context.Context) []reconcile.Request) source.Source
	// Workloads is the index of pods and pod templates; SetupWithManager makes one when nil.
	Workloads *cache.WorkloadIndex

	syncer *syncset.Syncer
	// The field indexes SetupWithManager registers (see kinds.go).
	targetsByDestination, targetsByRoute *cache.NamespacedIndex[cache.SMIObject]
	// Ambient namespaces (found at set-up): the Gateway CRD is served (waypoints), and the served
	// Gateway API route kinds, read uncached through reader.
	gateways   bool
	routeKinds []schema.GroupVersionKind
	reader     client.Reader
}

// +kubebuilder:rbac:groups=access.smi-spec.io,resources=traffictargets,verbs=get;list;watch
// +kubebuilder:rbac:groups=access.smi-spec.io,resources=traffictargets/status,verbs=get;patch
// +kubebuilder:rbac:groups=access.smi-spec.io,resources=traffictargets/finalizers,verbs=update
// +kubebuilder:rbac:groups=specs.smi-spec.io,resources=tcproutes;udproutes,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods;serviceaccounts,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=deployments;statefulsets;daemonsets,verbs=get;list;watch
// +kubebuilder:rbac:groups=security.istio.io,resources=authorizationpolicies;peerauthentications,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=networking.istio.io,resources=envoyfilters,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=grpcroutes,verbs=get;list;watch

// SetupWithManager registers the indexes and watches.
func (r *AccessReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	targetIndex := func(f func(*accessv1alpha2.TrafficTarget) []string) func(cache.SMIObject) []string {
		return func(o cache.SMIObject) []string {
			tt, err := sharedTargets.read(o)
			if err != nil {
				return nil
			}
			return f(tt)
		}
	}
	c := mgr.GetCache()
	var err error
	if r.targetsByDestination, err = cache.NewNamespacedIndex(ctx, c, cache.NewSMI(TrafficTargetGVK), indexTargetDestination, func(o cache.SMIObject) []string {
		return []string{destinationKey(o)}
	}); err != nil {
		return fmt.Errorf("index TrafficTarget destination: %w", err)
	}
	if r.targetsByRoute, err = cache.NewNamespacedIndex(ctx, c, cache.NewSMI(TrafficTargetGVK), indexTargetRoutes, targetIndex(func(tt *accessv1alpha2.TrafficTarget) []string {
		var out []string
		for _, rule := range tt.Spec.Rules {
			out = append(out, rule.Kind+"/"+rule.Name)
		}
		return out
	})); err != nil {
		return fmt.Errorf("index TrafficTarget routes: %w", err)
	}

	// A TrafficTarget whose destination changes concerns its old destination too (whose outputs
	// it held), not only the new one.
	destOf := func(o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: destinationKey(o)}})
	}
	destOfTarget := handler.Funcs{
		CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			destOf(e.Object, q)
		},
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			destOf(e.ObjectOld, q)
			destOf(e.ObjectNew, q)
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			destOf(e.Object, q)
		},
		GenericFunc: func(_ context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			destOf(e.Object, q)
		},
	}
	routeFanIn := func(kind string) handler.EventHandler {
		return handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			targets, err := r.targetsByRoute.Lookup(ctx, o.GetNamespace(), kind+"/"+o.GetName())
			if err != nil {
				ctrl.LoggerFrom(ctx).Error(err, "list TrafficTargets for fan-in", "namespace", o.GetNamespace())
				return nil
			}
			return destinationsOf(o.GetNamespace(), targets)
		})
	}
	// Our outputs map to their destination; anybody else's object of those kinds may hold (or
	// release) the name of one of our outputs: every destination of its namespace takes another look.
	byDestinationLabel := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
		if strings.HasPrefix(o.GetName(), translate.WaypointBaselinePrefix) {
			return r.everyDestination(ctx) // a waypoint may serve other namespaces
		}
		if o.GetLabels()[translate.ManagedByLabel] != translate.ManagedByValue || o.GetName() == BaselineName {
			return r.destinations(ctx, o.GetNamespace())
		}
		if d := o.GetLabels()[translate.DestinationLabel]; d != "" {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: d}}}
		}
		return nil
	})
	saFanIn := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}}}
	})
	if r.Workloads == nil {
		r.Workloads = cache.NewWorkloadIndex()
	}
	workloads := &workloadSource{index: r.Workloads, changes: r.Workloads.Subscribe(), cfg: mgr.GetConfig(), fan: r.destinations}
	r.syncer = newSyncer(r.Client, mgr.GetAPIReader())
	r.reader = mgr.GetAPIReader()
	gw := servedGatewayKinds(mgr.GetRESTMapper())
	r.routeKinds = gw.routeKinds()
	for _, gvk := range []schema.GroupVersionKind{cache.GRPCRoute{}.GVK(), cache.TLSRoute{}.GVK(), cache.GatewayUDPRoute{}.GVK()} {
		if served(mgr.GetRESTMapper(), gvk) {
			r.routeKinds = append(r.routeKinds, gvk) // read: a waypoint applies them too
		}
	}
	r.gateways = served(mgr.GetRESTMapper(), GatewayGVK)
	// Ambient namespaces: the destination's Services, the namespace's waypoint labels and the
	// routes attached to its Services decide what passes a waypoint.
	ambientNamespace := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
		ns := o.GetNamespace()
		if ns == "" {
			ns = o.GetName() // a Namespace
		}
		if state, ok := r.State(); !ok || !state.Ambient(ns) {
			return nil
		}
		return r.destinations(ctx, ns)
	})

	b := ctrl.NewControllerManagedBy(mgr).
		Named(accessController)
	if r.gateways {
		b = b.Watches(cache.New(GatewayGVK), handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
			return r.everyDestination(ctx)
		}))
	}
	for _, gvk := range r.routeKinds {
		b = b.Watches(cache.New(gvk), ambientNamespace)
	}
	// A VirtualService for a Service of an ambient namespace (a waypoint applies it).
	b = b.Watches(cache.New(VirtualServiceGVK), handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
		state, ok := r.State()
		if !ok {
			return nil
		}
		var out []reconcile.Request
		seen := map[string]bool{}
		for _, h := range o.(cache.Object).Hosts() {
			if _, ns, ok := serviceOfHost(qualifyHost(h, o.GetNamespace(), state.Mesh), state.Mesh); ok && !seen[ns] && state.Ambient(ns) {
				seen[ns] = true
				out = append(out, r.destinations(ctx, ns)...)
			}
		}
		return out
	}))
	if r.Resync != nil {
		b = b.WatchesRawSource(r.Resync(func(ctx context.Context) []reconcile.Request {
			return forEachNamespace(ctx, r.Client, func(ns string) []reconcile.Request {
				return append(r.destinations(ctx, ns), r.destinationsWithOutputs(ctx, ns)...)
			})
		}))
	}
	return b.
		Watches(cache.NewSMI(TrafficTargetGVK), destOfTarget, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(cache.NewSMI(HTTPRouteGroupGVK), routeFanIn("HTTPRouteGroup"), builder.WithPredicates(ignoreStatusWrites)).
		Watches(cache.NewSMI(TCPRouteGVK), routeFanIn("TCPRoute"), builder.WithPredicates(ignoreStatusWrites)).
		Watches(cache.NewSMI(UDPRouteGVK), routeFanIn("UDPRoute"), builder.WithPredicates(ignoreStatusWrites)).
		Watches(&corev1.ServiceAccount{}, saFanIn).
		Watches(&corev1.Service{}, ambientNamespace).
		Watches(&corev1.Namespace{}, ambientNamespace, builder.WithPredicates(predicate.LabelChangedPredicate{})).
		// A workload change can make another ServiceAccount's selector imprecise: recompute every
		// destination of the namespace (they are few; workloads are many).
		WatchesRawSource(workloads).
		Watches(cache.New(AuthorizationPolicyGVK), echoless(accessController, byDestinationLabel)).
		Watches(cache.New(PeerAuthenticationGVK), echoless(accessController, byDestinationLabel)).
		Watches(cache.New(EnvoyFilterGVK), byDestinationLabel). // a guard's own creation included
		Complete(reconcilingAs(accessController, r))
}

// destinations lists the destination ServiceAccounts of a namespace's TrafficTargets.
func (r *AccessReconciler) destinations(ctx context.Context, ns string) []reconcile.Request {
	list := cache.NewSMIList(TrafficTargetGVK)
	if err := r.Client.List(ctx, list, client.InNamespace(ns), client.UnsafeDisableDeepCopy); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "list TrafficTargets for fan-in", "namespace", ns)
		return nil
	}
	return destinationsOf(ns, list.Objects())
}

// everyDestination lists the destinations of every namespace (a waypoint changed: it may serve
// Services of any namespace).
func (r *AccessReconciler) everyDestination(ctx context.Context) []reconcile.Request {
	return forEachNamespace(ctx, r.Client, func(ns string) []reconcile.Request { return r.destinations(ctx, ns) })
}

// destinationsWithOutputs lists the destinations our access outputs in ns were written for. A
// resync covers them too, not only the destinations of today's TrafficTargets: one whose only
// TrafficTarget moved to another destination, or became unreadable, while the operator was not
// running would otherwise keep its outputs (and allow its old sources) until an event about them.
func (r *AccessReconciler) destinationsWithOutputs(ctx context.Context, ns string) []reconcile.Request {
	var objs []metav1.Object
	for _, gvk := range []schema.GroupVersionKind{AuthorizationPolicyGVK, PeerAuthenticationGVK, EnvoyFilterGVK} {
		list := cache.NewList(gvk)
		if err := r.Client.List(ctx, list, client.InNamespace(ns), client.MatchingLabels{translate.ManagedByLabel: translate.ManagedByValue},
			client.UnsafeDisableDeepCopy); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "list outputs for resync", "kind", gvk.Kind, "namespace", ns)
			continue
		}
		for _, o := range list.Objects() {
			objs = append(objs, o)
		}
	}
	return outputDestinations(ns, objs)
}

// outputDestinations are the destinations named by the destination label of objs, once each.
func outputDestinations(ns string, objs []metav1.Object) []reconcile.Request {
	keys := make([]string, 0, len(objs))
	for _, o := range objs {
		if d := o.GetLabels()[translate.DestinationLabel]; d != "" {
			keys = append(keys, d)
		}
	}
	return requestsOnce(ns, keys)
}

// destinationsOf lists the destination ServiceAccounts of TrafficTargets of namespace ns.
func destinationsOf(ns string, targets []cache.SMIObject) []reconcile.Request {
	keys := make([]string, 0, len(targets))
	for _, o := range targets {
		keys = append(keys, destinationKey(o))
	}
	return requestsOnce(ns, keys)
}

// requestsOnce is a reconcile request of namespace ns per key, in order, each key once.
func requestsOnce(ns string, keys []string) []reconcile.Request {
	seen := map[string]bool{}
	var out []reconcile.Request
	for _, k := range keys {
		if !seen[k] {
			seen[k] = true
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: k}})
		}
	}
	return out
}

// unreadableTargets is the reconcile key (in place of a destination ServiceAccount's name) of a
// namespace's TrafficTargets that internal/smi/normalize cannot read (a field their version does
// not have, kept by a CRD that does not prune): their destination is unknown, so they allow
// nothing; the key is only there to report them. No ServiceAccount name holds a colon.
const unreadableTargets = ":unreadable"

// destinationKey is what a TrafficTarget is reconciled under: its destination ServiceAccount's
// name, or unreadableTargets.
func destinationKey(o client.Object) string {
	tt, err := sharedTargets.read(o)
	if err != nil || tt.Spec.Destination.Name == unreadableTargets {
		return unreadableTargets
	}
	return tt.Spec.Destination.Name
}

// reportUnreadable writes Accepted=False, naming the field, on each TrafficTarget of the namespace
// that cannot be read. Nothing is written for them: no destination's set includes them.
func (r *AccessReconciler) reportUnreadable(ctx context.Context, ns string) error {
	list, err := r.targetsByDestination.Lookup(ctx, ns, unreadableTargets)
	if err != nil {
		return fmt.Errorf("list unreadable TrafficTargets of %s: %w", ns, err)
	}
	for _, u := range list {
		if !u.GetDeletionTimestamp().IsZero() {
			continue
		}
		_, readErr := normalize.ReadTrafficTarget(u)
		if readErr == nil { // a destination named like the key: no ServiceAccount can be
			readErr = &translate.FieldError{Field: "spec.destination.name", Reason: "InvalidName",
				Message: fmt.Sprintf("%q is not a ServiceAccount name", unreadableTargets)}
		}
		st := unreadableConditions(readErr, "nothing is allowed by this TrafficTarget")
		reconcileOutcomes.WithLabelValues("TrafficTarget", st.outcome).Inc()
		if err := writeStatus(ctx, r.Client, r.Recorder, u, st.accepted.Message, st.conditions()...); err != nil {
			return err
		}
	}
	return nil
}

// Reconcile: fetch the destination's TrafficTargets → translate them together → sync the
// destination's set (all or nothing; when it cannot be written exactly, nothing is allowed) →
// status of each TrafficTarget.
func (r *AccessReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	state, ok := r.State()
	if !ok {
		return reconcile.Result{}, nil // the first resolution of the configuration resyncs everything
	}
	if req.Name == unreadableTargets {
		return reconcile.Result{}, r.reportUnreadable(ctx, req.Namespace)
	}
	items, targets, err := r.targets(ctx, req)
	if err != nil {
		return reconcile.Result{}, err
	}
	byName := make(map[string]cache.SMIObject, len(items))
	for _, u := range items {
		byName[u.GetName()] = u
	}
	scope := accessScopeOf(state, req.Namespace, r.Workloads.Sidecars(req.Namespace))
	if scope.enforcing() {
		if scope.baselineMissing, scope.baselineWidened, err = r.baselineState(ctx, req.Namespace); err != nil {
			return reconcile.Result{}, err
		}
	}
	var res *translate.AccessResult
	if len(items) > 0 {
		if state.Ambient(req.Namespace) {
			res, scope.dataplane, err = r.translateAmbient(ctx, req, targets, state.Mesh, state.RootNamespaces)
		} else {
			res, err = r.translate(ctx, req, targets, state.Mesh)
			scope.dataplane = "sidecar data plane"
		}
		if err != nil {
			// The destination's exact set cannot be known: allow nothing to it until it can.
			reconcileOutcomes.WithLabelValues("TrafficTarget", OutcomeError).Inc()
			return reconcile.Result{}, r.allowNothing(ctx, req, err)
		}
	}
	set, err := accessSet(req, items, byName, res, scope.enforcing())
	if err != nil {
		return reconcile.Result{}, r.allowNothing(ctx, req, err) // as for a translation error
	}
	synced, syncErr := r.syncer.Sync(ctx, set)
	if errors.Is(syncErr, syncset.ErrRelied) {
		// A policy of the set applied a moment ago is not in the cache yet: prune it, then let go.
		ctrl.LoggerFrom(ctx).Info("filter kept until the policies relying on it are pruned", "destination", req.Name, "reason", syncErr.Error())
		return reconcile.Result{RequeueAfter: time.Second}, nil
	}
	if syncErr != nil {
		// Reported on the object, then retried: what the set held was removed (access) or left.
		synced.Problems = append(synced.Problems, syncset.Problem{Reason: ReasonApplyFailed, Message: syncErr.Error()})
	}
	if synced.Wrote() {
		ctrl.LoggerFrom(ctx).Info("synced", "destination", req.Name, "applied", refNames(synced.Applied), "pruned", refNames(synced.Pruned))
	}
	if len(synced.Withheld) > 0 && syncErr == nil {
		// The policies wait for their filter to reach the proxies: status once they are applied.
		ctrl.LoggerFrom(ctx).V(1).Info("policies wait for their filter", "destination", req.Name, "withheld", refNames(synced.Withheld), "wait", synced.Wait)
		return reconcile.Result{RequeueAfter: synced.Wait}, nil
	}
	recordRungs(req.Namespace, req.Name, res)
	if res == nil {
		return afterSync(synced, syncErr)
	}
	for _, tr := range res.Targets {
		st := targetConditions(tr, res, scope, synced)
		reconcileOutcomes.WithLabelValues("TrafficTarget", st.outcome).Inc()
		if err := writeStatus(ctx, r.Client, r.Recorder, byName[tr.Name], st.ready.Message, st.conditions()...); err != nil {
			return reconcile.Result{}, err
		}
	}
	return afterSync(synced, syncErr)
}

// allowNothing removes the destination's outputs after err (its exact set cannot be known or built:
// nothing is allowed to it until it can) and returns err, with the removal's if it failed.
func (r *AccessReconciler) allowNothing(ctx context.Context, req reconcile.Request, err error) error {
	empty, _ := accessSet(req, nil, nil, nil, false)
	if _, rerr := r.syncer.Sync(ctx, empty); rerr != nil {
		err = errors.Join(err, rerr)
	}
	return err
}

// afterSync is when a destination is looked at again: on error (with backoff), once an object being
// deleted is gone, once a wait of the sync is over, or (nobody tells us) later when a policy that is
// not ours holds a filter.
func afterSync(synced syncset.Result, syncErr error) (reconcile.Result, error) {
	switch {
	case syncErr != nil:
		return reconcile.Result{}, syncErr
	case synced.Pending():
		return reconcile.Result{RequeueAfter: synced.Wait}, nil
	}
	if _, waiting := synced.Problem(syncset.ReasonTerminating); waiting {
		return reconcile.Result{RequeueAfter: time.Second}, nil
	}
	if len(synced.Held) > 0 {
		return reconcile.Result{RequeueAfter: time.Minute}, nil
	}
	return reconcile.Result{}, nil
}

// baselineState reports whether the namespace lacks its deny-by-default baseline (ours, not being
// deleted, enforced by Istio), and whether the policy enforced under its name holds another spec
// than smi2istio's, whoever's it is now: widened (by someone else's edit kept by an admission step,
// syncset.ErrForeignFieldsKept, or relabelled; or another writer's policy holds the name). Any
// other spec counts, one that would allow nothing included: wrong on the closed side only.
func (r *AccessReconciler) baselineState(ctx context.Context, ns string) (missing, widened bool, err error) {
	ap := cache.New(AuthorizationPolicyGVK)
	err = r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: BaselineName}, ap, client.UnsafeDisableDeepCopy)
	if apierrors.IsNotFound(err) {
		return true, false, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("get the baseline of %s: %w", ns, err)
	}
	set, err := baselineSet(ns, false, nil)
	if err != nil {
		return false, false, err
	}
	if !enforcedByIstio(ap) {
		return true, false, nil // what it says is not in force
	}
	spec, err := baselineSpec()
	if err != nil {
		return false, false, err
	}
	return !set.Owns(ap) || !ap.GetDeletionTimestamp().IsZero(), ap.SpecHash() != spec, nil
}

// enforcedByIstio reports whether istiod enforces a policy as far as its metadata says: not a dry
// run, and of no revision but the default one (objects without istio.io/rev are read by every
// revision).
func enforcedByIstio(o metav1.Object) bool {
	if _, dry := o.GetAnnotations()["istio.io/dry-run"]; dry {
		return false
	}
	rev, ok := o.GetLabels()["istio.io/rev"]
	return !ok || rev == "default"
}

// translate fetches what the destination's TrafficTargets reference and translates them together.
func (r *AccessReconciler) translate(ctx context.Context, req reconcile.Request, targets []*accessv1alpha2.TrafficTarget, mesh translate.Mesh) (*translate.AccessResult, error) {
	in, err := r.fetch(ctx, req.Namespace, req.Name, targets, mesh)
	if err != nil {
		return nil, err
	}
	return translate.TranslateAccess(in)
}

// targets lists the destination's TrafficTargets that are not being deleted, by name.
func (r *AccessReconciler) targets(ctx context.Context, req reconcile.Request) ([]cache.SMIObject, []*accessv1alpha2.TrafficTarget, error) {
	list, err := r.targetsByDestination.Lookup(ctx, req.Namespace, req.Name)
	if err != nil {
		return nil, nil, fmt.Errorf("list TrafficTargets of %s: %w", req, err)
	}
	var items []cache.SMIObject
	var targets []*accessv1alpha2.TrafficTarget
	for _, u := range list {
		if !u.GetDeletionTimestamp().IsZero() {
			continue
		}
		tt, err := normalize.ReadTrafficTarget(u)
		if err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "unreadable TrafficTarget", "name", u.GetName())
			continue
		}
		items, targets = append(items, u), append(targets, tt)
	}
	sort.Slice(items, func(i, j int) bool { return items[i].GetName() < items[j].GetName() })
	sort.Slice(targets, func(i, j int) bool { return targets[i].Name < targets[j].Name })
	return items, targets, nil
}

// accessScope is what the configuration in effect says about a destination's namespace.
type accessScope struct {
	inMesh, enforcingMode, rootNamespace bool
	// baselineMissing: the namespace's deny-by-default baseline is not (ours and) in place, so a
	// destination with no ALLOW policy is open to every source.
	baselineMissing bool
	// baselineWidened: the policy Istio enforces under its name holds another spec than ours (kept
	// so by an admission step, or someone else's): an ALLOW policy that may apply to every workload
	// of the namespace, what it allows passes whatever the TrafficTargets' policies say.
	baselineWidened bool
	// dataplane describes the data plane enforcing the destination's outputs, for Accepted.
	dataplane string
	// leftWithSidecars counts the pods that still run Istio's sidecar in a namespace that is not
	// (any more) in the mesh: they keep enforcing what istiod gives them, so SMI stays enforced.
	leftWithSidecars int
}

// accessScopeOf: a namespace is in the mesh for access when the membership says so, or while any
// of its pods runs Istio's sidecar (see meshedNamespace).
func accessScopeOf(state State, ns string, sidecars int) accessScope {
	// Istio's own namespace gets no baseline (controllers/baseline.go): without one, removing an
	// ALLOW policy there would open its workload, so nothing is written there either.
	scope := accessScope{inMesh: meshedNamespace(state, ns, sidecars), enforcingMode: state.Mode == Enforcing,
		rootNamespace: !state.SelectorOutputsAllowed(ns) || ns == state.IstioNamespace}
	if !state.InMesh(ns) {
		scope.leftWithSidecars = sidecars
	}
	return scope
}

// meshedNamespace: SMI is enforced in a namespace the membership puts in the mesh, and in one with
// pods that run Istio's sidecar whatever the membership says — a namespace that left the mesh (its
// injection label removed) keeps its sidecars until the pods restart, and they keep enforcing the
// policies they have: removing our policies and baseline would open them. Outputs go once the
// last such pod has.
func meshedNamespace(state State, ns string, sidecars int) bool {
	return state.InMesh(ns) || sidecars > 0
}

// enforcing: outputs are written.
func (s accessScope) enforcing() bool { return s.inMesh && s.enforcingMode && !s.rootNamespace }

// accessKinds are the kinds of a destination's set in apply order: the Envoy rung's filter before
// the policies that rely on it, removed after them; stale ALLOW policies go before anything else.
var accessKinds = []syncset.Kind{
	{GVK: EnvoyFilterGVK, Guard: true},
	{GVK: PeerAuthenticationGVK},
	{GVK: AuthorizationPolicyGVK, PruneFirst: true, Inert: inertPolicy},
}

// EnvoyRungFinalizer keeps the Envoy rung's filter in effect until the policies that rely on it
// are gone, however it is deleted (the garbage collector deletes it and the policies of its last
// TrafficTargets in no particular order).
const EnvoyRungFinalizer = "smi2istio.io/envoy-rung"

// ReliesOnAnnotation names, on a destination's policies, the Envoy rung's filters they rely on: the
// filter is let go only once no AuthorizationPolicy or PeerAuthentication of the namespace names it,
// whoever manages that object now (a relabelled policy still relies on the filter).
const ReliesOnAnnotation = "smi2istio.io/relies-on"

// EnvoyRungSettle is how long a new Envoy-rung filter exists before the policies relying on it are
// applied, and how long a filter stays after the last policy relying on it went. istiod watches
// EnvoyFilters and AuthorizationPolicies separately and debounces pushes (100 ms by default): the
// order the apiserver saw is not necessarily the order proxies get. Far above the skew between two
// watches of one apiserver; a wait only delays an allow, or a release.
const EnvoyRungSettle = 3 * time.Second

// accessSet is the complete desired set of one destination ServiceAccount: each TrafficTarget's
// policies owned by it, and the Envoy rung's filters owned by every TrafficTarget of the destination
// (they hold their union; none is their controller, so deleting one TrafficTarget leaves them).
// Nothing is desired when not enforcing. A set that cannot be written exactly is removed.
func accessSet(req reconcile.Request, items []cache.SMIObject, byName map[string]cache.SMIObject, res *translate.AccessResult, enforcing bool) (*syncset.Set, error) {
	set := &syncset.Set{
		Namespace: req.Namespace,
		Kinds:     accessKinds,
		Labels: map[string]string{
			translate.ManagedByLabel: translate.ManagedByValue, translate.DestinationLabel: req.Name,
		},
		OwnerKinds: []string{TrafficTargetGVK.Kind},
		OnBlocked:  syncset.Remove,
		Writer:     writerOf(accessController, req),
		Finalizer:  EnvoyRungFinalizer,
		ReliesOn:   ReliesOnAnnotation,
		Settle:     EnvoyRungSettle,
		Now:        time.Now(),

		ExactLabels:      istioExactLabels,
		ExactAnnotations: istioExactAnnotations,
	}
	if !enforcing || res == nil {
		return set, nil
	}
	var all []metav1.OwnerReference
	for _, u := range items {
		ref := ownerRef(u, trafficTargetOwnerAPIVersion, TrafficTargetGVK.Kind)
		ref.Controller = nil
		all = append(all, ref)
	}
	for _, tr := range res.Targets {
		owner, ok := byName[tr.Name]
		if !ok {
			return nil, fmt.Errorf("translation of %s returned TrafficTarget %s, which was not fetched", req, tr.Name)
		}
		objs, err := render(tr.Objects(), ownerRef(owner, trafficTargetOwnerAPIVersion, TrafficTargetGVK.Kind))
		if err != nil {
			return nil, err
		}
		set.Objects = append(set.Objects, objs...)
	}
	filters := make([]runtime.Object, 0, len(res.EnvoyFilters))
	for _, ef := range res.EnvoyFilters {
		filters = append(filters, ef)
	}
	objs, err := render(filters, all...)
	if err != nil {
		return nil, err
	}
	set.Objects = append(set.Objects, objs...)
	return set, nil
}

// recordRungs sets the fidelity gauge of a destination: no series for a rung without values.
func recordRungs(ns, destination string, res *translate.AccessResult) {
	if res == nil {
		fidelityRungs.DeletePartialMatch(map[string]string{"namespace": ns, "destination": destination})
		return
	}
	for _, rung := range []string{translate.RungExact, translate.RungEnvoy, translate.RungReject} {
		n := 0
		for _, tr := range res.Targets {
			for _, f := range tr.Rungs {
				if f.Reason == rung {
					n++
				}
			}
		}
		if n == 0 {
			fidelityRungs.DeleteLabelValues(ns, destination, rung)
		} else {
			fidelityRungs.WithLabelValues(ns, destination, rung).Set(float64(n))
		}
	}
}

// fetch gathers what the destination's TrafficTargets reference, from the cache.
func (r *AccessReconciler) fetch(ctx context.Context, ns, sa string, targets []*accessv1alpha2.TrafficTarget, mesh translate.Mesh) (translate.AccessInput, error) {
	in := translate.AccessInput{Namespace: ns, ServiceAccount: sa, Targets: targets, Mesh: mesh,
		RouteGroups: map[string]*translate.HTTPRouteGroup{}, PortRoutes: map[string]*translate.PortRoute{},
		RouteGroupErrors: map[string]*translate.FieldError{}, PortRouteErrors: map[string]*translate.FieldError{}}
	for _, tt := range targets {
		for _, rule := range tt.Spec.Rules {
			var gvk schema.GroupVersionKind
			switch rule.Kind {
			case "HTTPRouteGroup":
				gvk = HTTPRouteGroupGVK
			case "TCPRoute":
				gvk = TCPRouteGVK
			case "UDPRoute":
				gvk = UDPRouteGVK
			default:
				continue
			}
			u := cache.NewSMI(gvk)
			err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: rule.Name}, u, client.UnsafeDisableDeepCopy)
			if apierrors.IsNotFound(err) {
				continue
			}
			if err != nil {
				return in, fmt.Errorf("get %s %s/%s: %w", rule.Kind, ns, rule.Name, err)
			}
			if rule.Kind == "HTTPRouteGroup" {
				g, err := normalize.ReadHTTPRouteGroup(u)
				var fe *translate.FieldError
				if errors.As(err, &fe) {
					in.RouteGroupErrors[rule.Name] = fe // the TrafficTarget is not Accepted
					continue
				}
				if err != nil {
					return in, err
				}
				in.RouteGroups[rule.Name] = g
				continue
			}
			pr, err := normalize.ReadPortRoute(u)
			var fe *translate.FieldError
			if errors.As(err, &fe) {
				in.PortRouteErrors[rule.Kind+"/"+rule.Name] = fe // the TrafficTarget is not Accepted
				continue
			}
			if err != nil {
				return in, err
			}
			in.PortRoutes[rule.Kind+"/"+rule.Name] = pr
		}
	}
	in.Workloads = r.Workloads.Workloads(ns)
	return in, nil
}

// workloadSource runs the workload index for a controller (once, whoever starts first) and
// enqueues what fan makes of every namespace whose workloads changed; workers start once the index
// has listed everything.
type workloadSource struct {
	index   *cache.WorkloadIndex
	changes *cache.Changes
	cfg     *rest.Config
	fan     func(ctx context.Context, ns string) []reconcile.Request
}

func (s *workloadSource) Start(ctx context.Context, queue workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	s.index.Start(ctx, s.cfg, func(err error) { ctrl.LoggerFrom(ctx).Error(err, "workload index stopped") })
	go func() {
		for {
			changed := s.changes.Next(ctx)
			if changed == nil {
				return
			}
			for _, ns := range changed {
				for _, req := range s.fan(ctx, ns) {
					queue.Add(req)
				}
			}
		}
	}()
	return nil
}

func (s *workloadSource) WaitForSync(ctx context.Context) error { return s.index.WaitForSync(ctx) }

// targetConditions is what a reconcile of its destination decided about one TrafficTarget.
func targetConditions(tr translate.TargetResult, res *translate.AccessResult, scope accessScope, synced syncset.Result) conditionSet {
	st := targetReadiness(tr, res, scope, synced)
	if scope.enforcing() && scope.baselineWidened {
		// Whatever this TrafficTarget allows, the widened baseline may allow more. The outcome
		// stays the translation's, as with a missing baseline.
		st.ready.Status = metav1.ConditionFalse
		st.ready.Message = fmt.Sprintf("the namespace's deny-by-default AuthorizationPolicy %s does not hold the spec smi2istio writes (someone widened it and an admission step keeps it so, or it is not smi2istio's: see the operator's log): what it allows may be allowed to every workload of the namespace, whatever the TrafficTargets say; %s: %s",
			BaselineName, st.ready.Reason, st.ready.Message)
		st.ready.Reason = ReasonBaselineWidened
		return st
	}
	if scope.enforcing() && scope.baselineMissing && st.ready.Status == metav1.ConditionFalse {
		// "Nothing is allowed" is only true with the namespace's deny-by-default baseline in place.
		st.ready.Message = fmt.Sprintf("the namespace's deny-by-default AuthorizationPolicy %s is missing or not smi2istio's (see the SMI2IstioConfig and the namespace's mesh membership): until it is in place, a destination with no policy allowing anything is open to every source; %s: %s",
			BaselineName, st.ready.Reason, st.ready.Message)
		st.ready.Reason = ReasonBaselineMissing
	}
	return st
}

// targetReadiness is targetConditions before the baseline is considered.
func targetReadiness(tr translate.TargetResult, res *translate.AccessResult, scope accessScope, synced syncset.Result) conditionSet {
	st := applied()
	st.accepted.Message = rungSummary(tr)
	if scope.dataplane != "" {
		st.accepted.Message += "; " + scope.dataplane
	}
	var rejected []translate.Finding
	for _, f := range tr.Rungs {
		if f.Reason == translate.RungReject {
			rejected = append(rejected, f)
		}
	}
	if len(rejected) > 0 {
		st.accepted.Reason = ReasonApproximated
		st.accepted.Message += "; left out (denied): " + joinFindings(rejected)
	}
	var inv *translate.InvalidError
	if errors.As(tr.Err, &inv) {
		st.accepted = metav1.Condition{Type: ConditionAccepted, Status: metav1.ConditionFalse, Reason: inv.Reason, Message: inv.Error()}
		st.ready = notReady(ReasonInvalid, "nothing is allowed by this TrafficTarget")
		st.outcome = OutcomeInvalid
		return st
	}
	unresolved := append(append([]translate.Finding(nil), res.SelectorFindings...), tr.Unresolved...)
	if len(unresolved) > 0 {
		st.resolved = metav1.Condition{Type: ConditionResolvedRefs, Status: metav1.ConditionFalse, Reason: unresolved[0].Reason, Message: joinFindings(unresolved)}
		st.outcome = OutcomeUnresolved
	}
	mine := map[syncset.Ref]bool{}
	var names []string
	for _, o := range tr.Objects() {
		if m, ok := o.(metav1.Object); ok {
			mine[syncset.Ref{Kind: o.GetObjectKind().GroupVersionKind().Kind, Namespace: m.GetNamespace(), Name: m.GetName()}] = true
			names = append(names, m.GetName())
		}
	}
	for _, ef := range res.EnvoyFilters {
		mine[syncset.Ref{Kind: EnvoyFilterGVK.Kind, Namespace: ef.Namespace, Name: ef.Name}] = true
	}
	sort.Strings(names)
	switch {
	case !scope.inMesh:
		st.ready = notReady(ReasonNotInMesh, "the destination's namespace is not in the mesh: nothing is applied")
		st.outcome = OutcomeNotInMesh
	case scope.rootNamespace:
		st.ready = notReady(ReasonRootNamespace, "the destination is in Istio's root namespace, where a workload selector applies to every namespace: nothing is applied, and this namespace has no deny-by-default baseline, so smi2istio does not restrict the destination (every source is allowed unless you restrict it yourself)")
		st.outcome = OutcomeInvalid
	case !scope.enforcingMode:
		st.ready = notReady(ReasonNotEnforced, "the access mode is Permissive: every source is allowed and this TrafficTarget is not enforced")
		st.outcome = OutcomePermissive
	case synced.Blocked():
		st.ready, st.outcome = blockedReady(synced.Problems, func(r syncset.Ref) bool { return mine[r] },
			": the destination's outputs are applied together or not at all, so nothing is allowed to it")
	case len(findingsOf(res.SelectorFindings, ReasonNotCaptured)) > 0:
		st.ready = notReady(ReasonNotCaptured, joinFindings(findingsOf(res.SelectorFindings, ReasonNotCaptured)))
	case len(findingsOf(tr.Warnings, translate.ReasonWaypointRequired)) > 0:
		// ztunnel cannot tell HTTP requests apart: the HTTP rules allow nothing.
		st.ready = notReady(ReasonWaypointRequired, joinFindings(append(unresolved, tr.Warnings...)))
		if len(names) > 0 {
			st.ready.Message = "applied " + strings.Join(names, ", ") + "; " + st.ready.Message
		}
	case len(names) == 0:
		st.ready = notReady(ReasonNothingToDo, "nothing is allowed: "+joinFindings(append(unresolved, tr.Warnings...)))
	default:
		st.ready.Message = "applied " + strings.Join(names, ", ")
		if len(tr.Warnings) > 0 {
			st.ready.Message += "; " + joinFindings(tr.Warnings)
		}
	}
	if scope.leftWithSidecars > 0 && scope.enforcing() && st.ready.Status == metav1.ConditionTrue {
		// Kept, but not claimed enforced: whether istiod still reads this namespace's policies
		// depends on why it left (an injection label removed: yes; discoverySelectors: no).
		st.ready = notReady(ReasonLeftMesh, fmt.Sprintf("the namespace is not in the mesh, but %d of its pods still run Istio's sidecar: %s is kept for them until they are restarted; it is enforced only while istiod still reads this namespace (if discoverySelectors exclude it, those pods allow every source)",
			scope.leftWithSidecars, strings.TrimPrefix(st.ready.Message, "applied ")))
		st.outcome = OutcomeNotInMesh
	}
	for _, h := range synced.Held {
		st.ready.Message += "; " + h.Message
	}
	return st
}

// findingsOf keeps the findings of one reason.
func findingsOf(fs []translate.Finding, reason string) []translate.Finding {
	var out []translate.Finding
	for _, f := range fs {
		if f.Reason == reason {
			out = append(out, f)
		}
	}
	return out
}

// rungSummary counts the rungs used, for the Accepted message.
func rungSummary(tr translate.TargetResult) string {
	counts := map[string]int{}
	for _, f := range tr.Rungs {
		counts[f.Reason]++
	}
	if len(counts) == 0 {
		return "no regexes"
	}
	var parts []string
	for _, rung := range []string{translate.RungExact, translate.RungEnvoy, translate.RungReject} {
		if counts[rung] > 0 {
			parts = append(parts, fmt.Sprintf("%s: %d", rung, counts[rung]))
		}
	}
	return "regexes by rung: " + strings.Join(parts, ", ")
}
