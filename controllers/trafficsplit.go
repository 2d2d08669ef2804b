package controllers

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	splitv1alpha4 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/split/v1alpha4"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
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

// TrafficSplitReconciler makes Istio route as TrafficSplits say.
type TrafficSplitReconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
	// Mesh holds the cluster domain (fixed for the process).
	Mesh translate.Mesh
	// State gives the configuration in effect (membership); Resync, when set, re-reconciles every
	// split when it changes.
	State  StateSource
	Resync func(fan func(context.Context) []reconcile.Request) source.Source

	syncer *syncset.Syncer
	// The field indexes SetupWithManager registers (see kinds.go).
	splitsByService, splitsByRoot, splitsByRouteGroup *cache.NamespacedIndex[cache.SMIObject]
	virtualServicesByHost                             *cache.ClusterIndex[cache.Object]
	// routesByParent indexes the Gateway API routes by their Service parents (nil when the
	// HTTPRoute CRD is not served).
	routesByParent, tcpRoutesByParent *cache.ClusterIndex[cache.Object]
	// gateway is what the Gateway API serves (found at set-up).
	gateway gatewayKinds
	kinds   []syncset.Kind
}

// +kubebuilder:rbac:groups=split.smi-spec.io,resources=trafficsplits,verbs=get;list;watch
// +kubebuilder:rbac:groups=split.smi-spec.io,resources=trafficsplits/status,verbs=get;patch
// +kubebuilder:rbac:groups=split.smi-spec.io,resources=trafficsplits/finalizers,verbs=update
// +kubebuilder:rbac:groups=specs.smi-spec.io,resources=httproutegroups,verbs=get;list;watch
// +kubebuilder:rbac:groups=specs.smi-spec.io,resources=httproutegroups/status;tcproutes/status;udproutes/status,verbs=get;patch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups=networking.istio.io,resources=virtualservices;destinationrules,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=httproutes;tcproutes,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// SetupWithManager registers the field indexes and watches.
func (r *TrafficSplitReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	r.syncer = newSyncer(r.Client, mgr.GetAPIReader())
	r.gateway = servedGatewayKinds(mgr.GetRESTMapper())
	r.kinds = r.gateway.splitKinds()
	c := mgr.GetCache()
	splitRefs := func(f func(*splitv1alpha4.TrafficSplit) []string) func(cache.SMIObject) []string {
		return func(o cache.SMIObject) []string {
			ts, err := sharedSplits.read(o)
			if err != nil {
				return nil
			}
			return f(ts)
		}
	}
	var err error
	if r.splitsByService, err = cache.NewNamespacedIndex(ctx, c, cache.NewSMI(TrafficSplitGVK), indexSplitServices, splitRefs(func(ts *splitv1alpha4.TrafficSplit) []string {
		var out []string
		if root, err := translate.ParseServiceRef(ts.Spec.Service, ts.Namespace, r.Mesh); err == nil {
			out = append(out, root)
		}
		for _, b := range ts.Spec.Backends {
			out = append(out, b.Service)
		}
		return out
	})); err != nil {
		return fmt.Errorf("index TrafficSplit services: %w", err)
	}
	if r.splitsByRoot, err = cache.NewNamespacedIndex(ctx, c, cache.NewSMI(TrafficSplitGVK), indexSplitRoot, splitRefs(func(ts *splitv1alpha4.TrafficSplit) []string {
		if root, err := translate.ParseServiceRef(ts.Spec.Service, ts.Namespace, r.Mesh); err == nil {
			return []string{root}
		}
		return nil
	})); err != nil {
		return fmt.Errorf("index TrafficSplit root: %w", err)
	}
	if r.splitsByRouteGroup, err = cache.NewNamespacedIndex(ctx, c, cache.NewSMI(TrafficSplitGVK), indexSplitRouteGroups, splitRefs(func(ts *splitv1alpha4.TrafficSplit) []string {
		var out []string
		for _, m := range ts.Spec.Matches {
			out = append(out, m.Name)
		}
		return out
	})); err != nil {
		return fmt.Errorf("index TrafficSplit route groups: %w", err)
	}
	if r.virtualServicesByHost, err = cache.NewClusterIndex(ctx, c, cache.New(VirtualServiceGVK), indexVirtualServiceHost, func(o cache.Object) []string {
		hosts := o.Hosts()
		out := make([]string, 0, len(hosts))
		for _, h := range hosts {
			out = append(out, qualifyHost(h, o.GetNamespace(), r.Mesh))
		}
		return out
	}); err != nil {
		return fmt.Errorf("index VirtualService hosts: %w", err)
	}
	for _, gvk := range r.gateway.routeKinds() {
		ix, err := cache.NewClusterIndex(ctx, c, cache.New(gvk), indexRouteParents+"."+gvk.Version+"."+gvk.Kind, func(o cache.Object) []string {
			hosts := o.Hosts()
			out := make([]string, 0, len(hosts))
			for _, h := range hosts {
				out = append(out, qualifyHost(h, o.GetNamespace(), r.Mesh))
			}
			return out
		})
		if err != nil {
			return fmt.Errorf("index %s parents: %w", gvk.Kind, err)
		}
		if gvk.Kind == "HTTPRoute" {
			r.routesByParent = ix
		} else {
			r.tcpRoutesByParent = ix
		}
	}

	splitsBy := func(index *cache.NamespacedIndex[cache.SMIObject], keys func(client.Object) (string, []string)) handler.EventHandler {
		return handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			ns, values := keys(o)
			return splitsOf(ctx, index, ns, values)
		})
	}
	byName := func(o client.Object) (string, []string) { return o.GetNamespace(), []string{o.GetName()} }
	rootOf := func(o client.Object) (string, []string) {
		ts, err := sharedSplits.read(o)
		if err != nil {
			return "", nil
		}
		root, err := translate.ParseServiceRef(ts.Spec.Service, ts.Namespace, r.Mesh)
		if err != nil {
			return "", nil
		}
		return ts.Namespace, []string{root}
	}

	b := ctrl.NewControllerManagedBy(mgr).
		Named(trafficSplitController)
	if r.Resync != nil {
		b = b.WatchesRawSource(r.Resync(func(ctx context.Context) []reconcile.Request {
			list := cache.NewSMIList(TrafficSplitGVK)
			if err := r.Client.List(ctx, list, client.UnsafeDisableDeepCopy); err != nil {
				ctrl.LoggerFrom(ctx).Error(err, "list TrafficSplits for resync")
				return nil
			}
			objs := list.Objects()
			out := make([]reconcile.Request, 0, len(objs))
			for _, ts := range objs {
				out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ts.GetNamespace(), Name: ts.GetName()}})
			}
			return out
		}))
	}
	for _, gvk := range r.gateway.routeKinds() {
		// Ours (owned), and someone else's for a root Service (Conflict while it exists).
		b = b.Watches(cache.New(gvk), r.ownerOf(mgr)).Watches(cache.New(gvk), echoless(trafficSplitController, r.splitsOfHosts()))
	}
	return b.
		For(cache.NewSMI(TrafficSplitGVK), builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Watches(cache.New(VirtualServiceGVK), r.ownerOf(mgr)).
		Watches(cache.New(DestinationRuleGVK), r.ownerOf(mgr)).
		Watches(&corev1.Service{}, splitsBy(r.splitsByService, byName)).
		Watches(cache.NewSMI(HTTPRouteGroupGVK), splitsBy(r.splitsByRouteGroup, byName), builder.WithPredicates(ignoreStatusWrites)).
		// Splits that share a root: the oldest wins, so a change to one concerns the others.
		// The split itself comes through For (whose predicates pass whatever these do): a second add
		// of it landed while its first reconcile ran, and reconciled it twice.
		Watches(cache.NewSMI(TrafficSplitGVK), siblingsOnly(splitsBy(r.splitsByRoot, rootOf)), builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// An object for a root host that a split does not own blocks it (someone else's, or a
		// sibling's not yet garbage collected): its change or removal concerns every split of that root.
		Watches(cache.New(VirtualServiceGVK), echoless(trafficSplitController, r.splitsOfHosts())).
		Watches(cache.New(DestinationRuleGVK), echoless(trafficSplitController, r.splitsOfHosts())).
		Complete(reconcilingAs(trafficSplitController, r))
}

// ownerOf maps an output to the split that owns it (as the builder's Owns does), without the
// echo of the split's own write (echoless).
func (r *TrafficSplitReconciler) ownerOf(mgr ctrl.Manager) handler.EventHandler {
	return echoless(trafficSplitController, handler.EnqueueRequestForOwner(mgr.GetScheme(), mgr.GetRESTMapper(), cache.NewSMI(TrafficSplitGVK), handler.OnlyControllerOwner()))
}

// siblingsOnly wraps h (a split's event mapped to the splits of its root): every split but the one
// the event is of.
func siblingsOnly(h handler.EventHandler) handler.EventHandler {
	self := func(o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) workqueue.TypedRateLimitingInterface[reconcile.Request] {
		skip := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}}
		return addVia(q, func(req reconcile.Request) {
			if req != skip {
				q.Add(req)
			}
		})
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			h.Create(ctx, e, self(e.Object, q))
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			h.Update(ctx, e, self(e.ObjectNew, q))
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			h.Delete(ctx, e, self(e.Object, q))
		},
		GenericFunc: h.Generic,
	}
}

// splitsOfHosts maps an Istio object to the splits whose root is one of its hosts.
func (r *TrafficSplitReconciler) splitsOfHosts() handler.EventHandler {
	return handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
		var out []reconcile.Request
		for _, h := range o.(cache.Object).Hosts() {
			if name, ns, ok := serviceOfHost(qualifyHost(h, o.GetNamespace(), r.Mesh), r.Mesh); ok {
				out = append(out, splitsOf(ctx, r.splitsByRoot, ns, []string{name})...)
			}
		}
		return out
	})
}

// splitsOf lists the TrafficSplits of a namespace whose index holds any of the values.
func splitsOf(ctx context.Context, index *cache.NamespacedIndex[cache.SMIObject], ns string, values []string) []reconcile.Request {
	seen := map[types.NamespacedName]bool{}
	var out []reconcile.Request
	for _, v := range values {
		splits, err := index.Lookup(ctx, ns, v)
		if err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "list TrafficSplits for fan-in", "value", v)
			continue
		}
		for _, ts := range splits {
			key := types.NamespacedName{Namespace: ts.GetNamespace(), Name: ts.GetName()}
			if !seen[key] {
				seen[key] = true
				out = append(out, reconcile.Request{NamespacedName: key})
			}
		}
	}
	return out
}

// qualifyHost turns a VirtualService host into an FQDN the way Istio does for short names.
func qualifyHost(host, namespace string, mesh translate.Mesh) string {
	domain := mesh.ClusterDomain
	if domain == "" {
		domain = "cluster.local"
	}
	switch strings.Count(host, ".") {
	case 0:
		return host + "." + namespace + ".svc." + domain
	case 1:
		return host + ".svc." + domain
	}
	if strings.HasSuffix(host, ".svc") {
		return host + "." + domain
	}
	return host
}

// serviceOfHost reads name and namespace from a Service FQDN.
func serviceOfHost(fqdn string, mesh translate.Mesh) (name, namespace string, ok bool) {
	domain := mesh.ClusterDomain
	if domain == "" {
		domain = "cluster.local"
	}
	rest, found := strings.CutSuffix(fqdn, ".svc."+domain)
	if !found {
		return "", "", false
	}
	name, namespace, ok = strings.Cut(rest, ".")
	return name, namespace, ok && !strings.Contains(namespace, ".")
}

// Reconcile: fetch → translate → sync the split's set (a foreign object for the root host blocks
// it and leaves what we applied) → status.
func (r *TrafficSplitReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	u := cache.NewSMI(TrafficSplitGVK)
	if err := r.Client.Get(ctx, req.NamespacedName, u); err != nil {
		// Deleted: the garbage collector removes what it owned.
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !u.GetDeletionTimestamp().IsZero() {
		return reconcile.Result{}, nil
	}
	state, ok := r.State()
	if !ok {
		return reconcile.Result{}, nil // the first resolution of the configuration resyncs every split
	}
	inMesh := state.InMesh(u.GetNamespace())
	var out splitTranslation
	if inMesh { // outside the mesh nothing is read or translated: every output is pruned
		ts, err := normalize.ReadTrafficSplit(u)
		if err != nil {
			// Not accepted, naming the field; its outputs are pruned, as for any invalid split.
			out.err = unreadable(err)
		} else if out, err = r.translate(ctx, ts, state.GatewayRoutes(ts.Namespace), state.DataplaneDescription(ts.Namespace)); err != nil {
			reconcileOutcomes.WithLabelValues("TrafficSplit", OutcomeError).Inc()
			return reconcile.Result{}, err
		}
	}
	set, err := splitSet(u, out, r.kinds)
	if err != nil {
		return reconcile.Result{}, err
	}
	synced, syncErr := r.syncer.Sync(ctx, set)
	if syncErr != nil {
		// Reported on the object, then retried: what the set held was removed (access) or left.
		synced.Problems = append(synced.Problems, syncset.Problem{Reason: ReasonApplyFailed, Message: syncErr.Error()})
	}
	if synced.Wrote() {
		ctrl.LoggerFrom(ctx).Info("synced", "applied", refNames(synced.Applied), "pruned", refNames(synced.Pruned))
	}
	st := splitConditions(u.GetNamespace(), inMesh, out, synced)
	reconcileOutcomes.WithLabelValues("TrafficSplit", st.outcome).Inc()
	if err := writeStatus(ctx, r.Client, r.Recorder, u, readyNote(st), st.conditions()...); err != nil {
		return reconcile.Result{}, err
	}
	if _, waiting := synced.Problem(syncset.ReasonTerminating); waiting && syncErr == nil {
		return reconcile.Result{RequeueAfter: time.Second}, nil
	}
	return reconcile.Result{}, syncErr
}

// splitTranslation is what translating a split found: its result, or why there is none.
type splitTranslation struct {
	res *routeResult
	// err is an *translate.InvalidError, or a *ConflictError when an older split has the same root.
	err error
	// blockers are foreign objects that route the root host for the same clients.
	blockers []syncset.Problem
	// unavailable says why the route API the namespace needs cannot be written (its CRD is not
	// served): nothing is applied.
	unavailable string
}

// ConflictError says another SMI object takes precedence for the same Istio objects.
type ConflictError struct{ Message string }

func (e *ConflictError) Error() string { return e.Message }

// splitKinds: the DestinationRule before the VirtualService that names its subsets (the Gateway
// API's routes after them where served: see gatewayKinds.splitKinds).
var splitKinds = []syncset.Kind{{GVK: DestinationRuleGVK}, {GVK: VirtualServiceGVK}}

// splitSet is the desired set of one split: its outputs owned by it; nothing when it is not
// translated (outside the mesh, invalid, or an older split has the root). kinds are every kind a
// split may write, so that switching route API prunes the other API's objects.
func splitSet(u cache.SMIObject, out splitTranslation, kinds []syncset.Kind) (*syncset.Set, error) {
	if kinds == nil {
		kinds = splitKinds
	}
	set := &syncset.Set{
		Namespace: u.GetNamespace(),
		Kinds:     kinds,
		Labels: map[string]string{
			translate.ManagedByLabel: translate.ManagedByValue, translate.SourceKindLabel: TrafficSplitGVK.Kind, translate.SourceNameLabel: u.GetName(),
		},
		OwnerKinds: []string{TrafficSplitGVK.Kind},
		Blockers:   out.blockers,
		OnBlocked:  syncset.Keep,
		Writer:     writerOf(trafficSplitController, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: u.GetNamespace(), Name: u.GetName()}}),

		ExactLabels:      istioExactLabels,
		ExactAnnotations: istioExactAnnotations,
	}
	if out.res == nil {
		return set, nil
	}
	objs, err := render(out.res.objects, ownerRef(u, trafficSplitOwnerAPIVersion, TrafficSplitGVK.Kind))
	if err != nil {
		return nil, err
	}
	set.Objects = objs
	return set, nil
}

// splitConditions is what a reconcile decided about a split.
func splitConditions(ns string, inMesh bool, out splitTranslation, synced syncset.Result) conditionSet {
	st := applied()
	var inv *translate.InvalidError
	var conflict *ConflictError
	switch {
	case !inMesh:
		st.ready = notReady(ReasonNotInMesh, "namespace "+ns+" is not in the mesh: nothing is applied")
		st.outcome = OutcomeNotInMesh
		return st
	case errors.As(out.err, &inv):
		st.accepted = metav1.Condition{Type: ConditionAccepted, Status: metav1.ConditionFalse, Reason: inv.Reason, Message: inv.Error()}
		st.ready = notReady(ReasonInvalid, "not applied: traffic goes to the root Service as if there were no TrafficSplit")
		st.outcome = OutcomeInvalid
		return st
	case errors.As(out.err, &conflict):
		st.ready = notReady(ReasonConflict, conflict.Message)
		st.outcome = OutcomeConflict
		return st
	case out.unavailable != "":
		st.ready = notReady(ReasonGatewayAPIMissing, out.unavailable)
		st.outcome = OutcomeInvalid
		return st
	}
	res := out.res
	st.accepted.Message = res.summary
	if len(res.Unresolved) > 0 {
		st.resolved = metav1.Condition{Type: ConditionResolvedRefs, Status: metav1.ConditionFalse, Reason: res.Unresolved[0].Reason, Message: joinFindings(res.Unresolved)}
		st.outcome = OutcomeUnresolved
	}
	var names []string
	for _, o := range res.objects {
		if m, ok := o.(metav1.Object); ok {
			names = append(names, o.GetObjectKind().GroupVersionKind().Kind+" "+m.GetName())
		}
	}
	switch {
	case synced.Blocked():
		st.ready, st.outcome = blockedReady(synced.Problems, func(syncset.Ref) bool { return true },
			": what was applied before is left as it is")
		return st
	case len(names) == 0:
		st.ready = notReady(ReasonNothingToDo, "nothing to route: "+joinFindings(res.Unresolved))
	default:
		st.ready.Message = "applied " + strings.Join(names, " and ")
	}
	if len(res.Warnings) > 0 {
		st.ready.Message += "; " + joinFindings(res.Warnings)
	}
	if st.outcome == OutcomeApplied && !synced.Wrote() {
		st.outcome = OutcomeUnchanged
	}
	return st
}

// translate fetches what the split references and translates it. Two splits for one root: the
// oldest wins and the others get a ConflictError. A VirtualService of someone else's that routes
// the root host for the same clients blocks the split without undoing what it applied.
func (r *TrafficSplitReconciler) translate(ctx context.Context, ts *splitv1alpha4.TrafficSplit, gatewayRoutes bool, dataplane string) (splitTranslation, error) {
	root, err := translate.ParseServiceRef(ts.Spec.Service, ts.Namespace, r.Mesh)
	if err != nil {
		return splitTranslation{err: &translate.InvalidError{Finding: translate.Finding{Field: "spec.service", Reason: "InvalidService", Message: err.Error()}}}, nil
	}
	siblings, err := r.splitsByRoot.Lookup(ctx, ts.Namespace, root)
	if err != nil {
		return splitTranslation{}, fmt.Errorf("list TrafficSplits for root %s: %w", root, err)
	}
	if winner := oldest(siblings); winner != nil && winner.GetUID() != ts.UID {
		return splitTranslation{err: &ConflictError{Message: fmt.Sprintf("TrafficSplit %s is older and splits the same root Service %s: this one is not applied", winner.GetName(), root)}}, nil
	}
	host := translate.ServiceFQDN(root, ts.Namespace, r.Mesh)
	others, err := r.virtualServicesByHost.Lookup(ctx, host)
	if err != nil {
		return splitTranslation{}, fmt.Errorf("list VirtualServices for host %s: %w", host, err)
	}
	var out splitTranslation
	ours := func(o client.Object) bool {
		return o.GetLabels()[translate.SourceKindLabel] == TrafficSplitGVK.Kind && o.GetLabels()[translate.SourceNameLabel] == ts.Name &&
			o.GetLabels()[translate.ManagedByLabel] == translate.ManagedByValue && o.GetNamespace() == ts.Namespace
	}
	for _, vs := range others {
		if !ours(vs) && sameClients(vs, ts.Namespace) {
			out.blockers = append(out.blockers, syncset.Problem{Object: syncset.RefOf(VirtualServiceGVK.Kind, vs), Reason: syncset.ReasonConflict,
				Message: fmt.Sprintf("VirtualService %s/%s already routes %s for the mesh's clients and is not managed by this TrafficSplit", vs.GetNamespace(), vs.GetName(), host)})
		}
	}
	// A Gateway API route attached to the root Service (GAMMA) routes it for every client too, in
	// either route API: Istio merges both into one route table in an order of its own.
	for _, ix := range []*cache.ClusterIndex[cache.Object]{r.routesByParent, r.tcpRoutesByParent} {
		if ix == nil {
			continue
		}
		routes, err := ix.Lookup(ctx, host)
		if err != nil {
			return splitTranslation{}, fmt.Errorf("list routes for Service %s: %w", host, err)
		}
		for _, rt := range routes {
			if !ours(rt) {
				kind := rt.GetObjectKind().GroupVersionKind().Kind
				if kind == "" {
					kind = rt.DefaultGVK().Kind
				}
				out.blockers = append(out.blockers, syncset.Problem{Object: syncset.RefOf(kind, rt), Reason: syncset.ReasonConflict,
					Message: fmt.Sprintf("%s %s/%s already routes Service %s and is not managed by this TrafficSplit", kind, rt.GetNamespace(), rt.GetName(), host)})
			}
		}
	}
	if gatewayRoutes && r.routesByParent == nil {
		out.unavailable = fmt.Sprintf("namespace %s is routed with the Gateway API (%s data plane) and the HTTPRoute CRD (gateway.networking.k8s.io/v1) is not served: nothing is applied; install the Gateway API CRDs and restart smi2istio", ts.Namespace, dataplane)
		return out, nil
	}

	in := translate.SplitInput{Split: ts, Services: map[string]*corev1.Service{}, RouteGroups: map[string]*translate.HTTPRouteGroup{},
		RouteGroupErrors: map[string]*translate.FieldError{}, Mesh: r.Mesh}
	names := []string{root}
	for _, b := range ts.Spec.Backends {
		names = append(names, b.Service)
	}
	for _, n := range names {
		svc := &corev1.Service{}
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: ts.Namespace, Name: n}, svc)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("get Service %s/%s: %w", ts.Namespace, n, err)
		}
		in.Services[n] = svc
	}
	for _, m := range ts.Spec.Matches {
		g := cache.NewSMI(HTTPRouteGroupGVK)
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: ts.Namespace, Name: m.Name}, g, client.UnsafeDisableDeepCopy)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("get HTTPRouteGroup %s/%s: %w", ts.Namespace, m.Name, err)
		}
		hrg, err := normalize.ReadHTTPRouteGroup(g)
		var fe *translate.FieldError
		if errors.As(err, &fe) {
			in.RouteGroupErrors[m.Name] = fe
			continue
		}
		if err != nil {
			return out, err
		}
		in.RouteGroups[m.Name] = hrg
	}
	if gatewayRoutes {
		res, err := translate.TranslateSplitGateway(in, translate.GatewayOptions{TCPRouteVersion: r.gateway.tcpRouteVersion})
		if err == nil {
			out.res = gatewayRouteResult(res, dataplane)
		}
		return invalidIsStatus(out, err)
	}
	res, err := translate.TranslateSplit(in)
	if err == nil {
		out.res = virtualServiceResult(res, dataplane)
	}
	return invalidIsStatus(out, err)
}

// invalidIsStatus: an *InvalidError is the split's (reported, nothing applied); any other error is
// the reconcile's.
func invalidIsStatus(out splitTranslation, err error) (splitTranslation, error) {
	var inv *translate.InvalidError
	if errors.As(err, &inv) {
		out.res, out.err = nil, err
		return out, nil
	}
	return out, err
}

// routeResult is a split's translation in either route API.
type routeResult struct {
	objects              []runtime.Object
	Unresolved, Warnings []translate.Finding
	summary              string
}

func virtualServiceResult(res *translate.SplitResult, dataplane string) *routeResult {
	return &routeResult{objects: res.Objects(), Unresolved: res.Unresolved, Warnings: res.Warnings,
		summary: fmt.Sprintf("%s mode for %s (%s data plane)", res.Mode, res.Host, dataplane)}
}

func gatewayRouteResult(res *translate.GatewaySplitResult, dataplane string) *routeResult {
	return &routeResult{objects: res.Objects(), Unresolved: res.Unresolved, Warnings: res.Warnings,
		summary: fmt.Sprintf("Gateway API routes for %s (%s data plane)", res.Host, dataplane)}
}

// gatewayKinds is what the Gateway API serves: the route kinds a split may write.
type gatewayKinds struct {
	httpRoute       bool
	tcpRouteVersion string // "" when TCPRoute is not served
}

// servedGatewayKinds looks the Gateway API's route kinds up (TCPRoute: v1, else v1alpha2).
func servedGatewayKinds(mapper meta.RESTMapper) gatewayKinds {
	var g gatewayKinds
	g.httpRoute = served(mapper, HTTPRouteGVK)
	for _, gvk := range []schema.GroupVersionKind{GatewayTCPRouteGVK, GatewayTCPRouteV1Alpha2GVK} {
		if g.tcpRouteVersion == "" && served(mapper, gvk) {
			g.tcpRouteVersion = gvk.Version
		}
	}
	return g
}

// routeKinds are the served route kinds, in the versions the operator writes.
func (g gatewayKinds) routeKinds() []schema.GroupVersionKind {
	var out []schema.GroupVersionKind
	if g.httpRoute {
		out = append(out, HTTPRouteGVK)
	}
	switch g.tcpRouteVersion {
	case GatewayTCPRouteGVK.Version:
		out = append(out, GatewayTCPRouteGVK)
	case GatewayTCPRouteV1Alpha2GVK.Version:
		out = append(out, GatewayTCPRouteV1Alpha2GVK)
	}
	return out
}

// splitKinds: VirtualService's kinds, then the served Gateway API routes.
func (g gatewayKinds) splitKinds() []syncset.Kind {
	out := append([]syncset.Kind(nil), splitKinds...)
	for _, gvk := range g.routeKinds() {
		out = append(out, syncset.Kind{GVK: gvk})
	}
	return out
}

// sameClients reports whether Istio would apply a VirtualService to the clients our split's
// VirtualService serves: it is bound to the mesh (no gateways, or "mesh" among them) and it is
// visible beyond its own namespace's private scope to those clients — in the split's namespace,
// or exported to every namespace or to the split's. One in another namespace that is private to it
// (exportTo ["."]) or exported elsewhere only concerns its own clients, not ours.
func sameClients(vs cache.Object, ns string) bool {
	gateways, exportTo := vs.Scope()
	mesh := len(gateways) == 0
	for _, g := range gateways {
		mesh = mesh || g == "mesh"
	}
	if !mesh {
		return false
	}
	if vs.GetNamespace() == ns || len(exportTo) == 0 {
		return true
	}
	for _, e := range exportTo {
		if e == "*" || e == ns {
			return true
		}
	}
	return false
}

// oldest is the split created first (name breaks ties).
func oldest(items []cache.SMIObject) cache.SMIObject {
	if len(items) == 0 {
		return nil
	}
	sort.Slice(items, func(i, j int) bool {
		ti, tj := items[i].GetCreationTimestamp(), items[j].GetCreationTimestamp()
		if !ti.Equal(&tj) {
			return ti.Before(&tj)
		}
		return items[i].GetName() < items[j].GetName()
	})
	return items[0]
}

func readyNote(st conditionSet) string {
	if st.ready.Message != "" {
		return st.ready.Message
	}
	return st.accepted.Message
}
