package controllers

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	accessv1alpha2 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/access/v1alpha2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/smi2istio/smi2istio/internal/cached"
	"github.com/smi2istio/smi2istio/internal/smi/normalize"
	"github.com/smi2istio/smi2istio/internal/workloads"
	"github.com/smi2istio/smi2istio/translate"
)

// GVKs the access reconciler reads and writes. TrafficTargets are watched in their stored version
// (v1alpha3), so that no watch event or status write goes through the conversion webhook, and
// converted in process to the hub v1alpha2 (the only version with both the spec wrapper and
// destination.port, which v1alpha3 keeps in the conversion annotation) by normalize.
var (
	TrafficTargetGVK       = cached.TrafficTarget{}.GVK()
	TCPRouteGVK            = cached.TCPRoute{}.GVK()
	UDPRouteGVK            = cached.UDPRoute{}.GVK()
	AuthorizationPolicyGVK = cached.AuthorizationPolicy{}.GVK()
	PeerAuthenticationGVK  = cached.PeerAuthentication{}.GVK()
	EnvoyFilterGVK         = cached.EnvoyFilter{}.GVK()
)

// trafficTargetOwnerAPIVersion is the apiVersion generated objects name their TrafficTarget owner
// by: the stored one, so that the garbage collector's lookups of owners need no conversion either.
var trafficTargetOwnerAPIVersion = TrafficTargetGVK.GroupVersion().String()

// Field indexes, within one namespace only (indexInNamespace).
const (
	indexTargetDestination = "smi2istio.target.destination" // destination ServiceAccount name
	indexTargetRoutes      = "smi2istio.target.routes"      // "<Kind>/<name>" of each rule
)

// AccessMode mirrors OSM's permissive switch.
type AccessMode string

const (
	// Enforcing: deny by default (a baseline per member namespace); TrafficTargets allow.
	Enforcing AccessMode = "Enforcing"
	// Permissive: no baseline, TrafficTargets are not enforced.
	Permissive AccessMode = "Permissive"
)

// Condition reasons specific to access.
const (
	ReasonNotEnforced = "NotEnforced"
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
	Workloads *workloads.Index
}

// +kubebuilder:rbac:groups=access.smi-spec.io,resources=traffictargets,verbs=get;list;watch
// +kubebuilder:rbac:groups=access.smi-spec.io,resources=traffictargets/status,verbs=get;patch
// +kubebuilder:rbac:groups=access.smi-spec.io,resources=traffictargets/finalizers,verbs=update
// +kubebuilder:rbac:groups=specs.smi-spec.io,resources=tcproutes;udproutes,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods;serviceaccounts,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=deployments;statefulsets;daemonsets,verbs=get;list;watch
// +kubebuilder:rbac:groups=security.istio.io,resources=authorizationpolicies;peerauthentications,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=networking.istio.io,resources=envoyfilters,verbs=get;list;watch;create;update;patch;delete

// SetupWithManager registers the indexes and watches.
func (r *AccessReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	targetIndex := func(f func(*accessv1alpha2.TrafficTarget) []string) client.IndexerFunc {
		return func(o client.Object) []string {
			tt, err := normalize.ReadTrafficTarget(o)
			if err != nil {
				return nil
			}
			return f(tt)
		}
	}
	c := mgr.GetCache()
	if err := indexInNamespace(ctx, c, cached.NewSMI(TrafficTargetGVK), indexTargetDestination, targetIndex(func(tt *accessv1alpha2.TrafficTarget) []string {
		return []string{tt.Spec.Destination.Name}
	})); err != nil {
		return fmt.Errorf("index TrafficTarget destination: %w", err)
	}
	if err := indexInNamespace(ctx, c, cached.NewSMI(TrafficTargetGVK), indexTargetRoutes, targetIndex(func(tt *accessv1alpha2.TrafficTarget) []string {
		var out []string
		for _, rule := range tt.Spec.Rules {
			out = append(out, rule.Kind+"/"+rule.Name)
		}
		return out
	})); err != nil {
		return fmt.Errorf("index TrafficTarget routes: %w", err)
	}

	destOfTarget := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		tt, err := normalize.ReadTrafficTarget(o)
		if err != nil {
			return nil
		}
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: tt.Namespace, Name: tt.Spec.Destination.Name}}}
	})
	routeFanIn := func(kind string) handler.EventHandler {
		return handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return r.destinations(ctx, o.GetNamespace(), client.MatchingFields{indexTargetRoutes: kind + "/" + o.GetName()})
		})
	}
	byDestinationLabel := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		d := o.GetLabels()[translate.DestinationLabel]
		if d == "" || o.GetLabels()[translate.ManagedByLabel] != translate.ManagedByValue {
			return nil
		}
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: d}}}
	})
	saFanIn := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}}}
	})
	if r.Workloads == nil {
		r.Workloads = workloads.New()
	}

	b := ctrl.NewControllerManagedBy(mgr).
		Named("access")
	if r.Resync != nil {
		b = b.WatchesRawSource(r.Resync(func(ctx context.Context) []reconcile.Request {
			return forEachNamespace(ctx, r.Client, func(ns string) []reconcile.Request { return r.destinations(ctx, ns) })
		}))
	}
	return b.
		Watches(cached.NewSMI(TrafficTargetGVK), destOfTarget, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(cached.NewSMI(HTTPRouteGroupGVK), routeFanIn("HTTPRouteGroup")).
		Watches(cached.NewSMI(TCPRouteGVK), routeFanIn("TCPRoute")).
		Watches(cached.NewSMI(UDPRouteGVK), routeFanIn("UDPRoute")).
		Watches(&corev1.ServiceAccount{}, saFanIn).
		// A workload change can make another ServiceAccount's selector imprecise: recompute every
		// destination of the namespace (they are few; workloads are many).
		WatchesRawSource(&workloadSource{index: r.Workloads, cfg: mgr.GetConfig(), fan: r.destinations}).
		Watches(cached.New(AuthorizationPolicyGVK), byDestinationLabel).
		Watches(cached.New(PeerAuthenticationGVK), byDestinationLabel).
		Watches(cached.New(EnvoyFilterGVK), byDestinationLabel).
		Complete(r)
}

// destinations lists the destination ServiceAccounts of a namespace's TrafficTargets (optionally
// filtered).
func (r *AccessReconciler) destinations(ctx context.Context, ns string, opts ...client.ListOption) []reconcile.Request {
	list := cached.NewSMIList(TrafficTargetGVK)
	if err := r.Client.List(ctx, list, append(opts, client.InNamespace(ns), client.UnsafeDisableDeepCopy)...); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "list TrafficTargets for fan-in", "namespace", ns)
		return nil
	}
	seen := map[string]bool{}
	var out []reconcile.Request
	for _, o := range list.Objects() {
		tt, err := normalize.ReadTrafficTarget(o)
		if err != nil || seen[tt.Spec.Destination.Name] {
			continue
		}
		seen[tt.Spec.Destination.Name] = true
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: tt.Spec.Destination.Name}})
	}
	return out
}

// Reconcile: fetch every TrafficTarget of the destination -> translate -> check ownership ->
// apply -> prune -> status of each TrafficTarget.
func (r *AccessReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	log := ctrl.LoggerFrom(ctx).WithValues("destination", req.Name)
	state, ok := r.State()
	if !ok {
		return reconcile.Result{}, nil // the first resolution of the configuration resyncs everything
	}
	list := cached.NewSMIList(TrafficTargetGVK)
	if err := r.Client.List(ctx, list, client.InNamespace(req.Namespace), client.MatchingFields{indexTargetDestination: req.Name}, client.UnsafeDisableDeepCopy); err != nil {
		return reconcile.Result{}, fmt.Errorf("list TrafficTargets of %s: %w", req, err)
	}
	var items []cached.SMIObject
	var targets []*accessv1alpha2.TrafficTarget
	for _, u := range list.Objects() {
		if !u.GetDeletionTimestamp().IsZero() {
			continue
		}
		tt, err := normalize.ReadTrafficTarget(u)
		if err != nil {
			log.Error(err, "unreadable TrafficTarget", "name", u.GetName())
			continue
		}
		items, targets = append(items, u), append(targets, tt)
	}
	if len(items) == 0 {
		// No TrafficTarget for this ServiceAccount (any more): remove what it had, nothing to read.
		for _, gvk := range []schema.GroupVersionKind{EnvoyFilterGVK, AuthorizationPolicyGVK, PeerAuthenticationGVK} {
			if err := r.prune(ctx, gvk, req.Namespace, req.Name, nil); err != nil {
				return reconcile.Result{}, err
			}
		}
		fidelityRungs.DeletePartialMatch(map[string]string{"namespace": req.Namespace, "destination": req.Name})
		return reconcile.Result{}, nil
	}
	sort.Slice(items, func(i, j int) bool { return items[i].GetName() < items[j].GetName() })
	sort.Slice(targets, func(i, j int) bool { return targets[i].Name < targets[j].Name })
	in, err := r.fetch(ctx, req.Namespace, req.Name, targets, state.Mesh)
	if err != nil {
		reconcileOutcomes.WithLabelValues("TrafficTarget", "error").Inc()
		return reconcile.Result{}, err
	}
	res, err := translate.TranslateAccess(in)
	if err != nil {
		reconcileOutcomes.WithLabelValues("TrafficTarget", "error").Inc()
		return reconcile.Result{}, err
	}
	inMesh := state.InMesh(req.Namespace)
	enforcing := state.Mode == Enforcing && inMesh

	byName := map[string]cached.SMIObject{}
	for _, u := range items {
		byName[u.GetName()] = u
	}
	type wanted struct {
		obj    *unstructured.Unstructured
		target string // TrafficTarget it belongs to; "" for the destination's EnvoyFilters
	}
	var want []wanted
	if enforcing {
		for _, tr := range res.Targets {
			owner := byName[tr.Name]
			a := applier{c: r.Client, owner: ownerRef(owner, trafficTargetOwnerAPIVersion, TrafficTargetGVK.Kind)}
			for _, o := range tr.Objects() {
				d, err := a.desired(o)
				if err != nil {
					return reconcile.Result{}, err
				}
				want = append(want, wanted{obj: d, target: tr.Name})
			}
		}
		if len(res.EnvoyFilters) > 0 {
			// Owned by every TrafficTarget of the destination (it holds their union); the oldest
			// by name is the controller.
			for _, ef := range res.EnvoyFilters {
				d, err := translate.ToUnstructured(ef)
				if err != nil {
					return reconcile.Result{}, err
				}
				var refs []metav1.OwnerReference
				for i, u := range items {
					ref := ownerRef(u, trafficTargetOwnerAPIVersion, TrafficTargetGVK.Kind)
					ref.Controller = ptr.To(i == 0)
					refs = append(refs, ref)
				}
				d.SetOwnerReferences(refs)
				want = append(want, wanted{obj: d})
			}
		}
	}

	// Check every output before writing any: a conflict writes nothing for the destination.
	conflicts := map[string]string{}
	haves := make([]cached.Object, len(want))
	for i, w := range want {
		have, err := r.check(ctx, w.obj, items)
		var ce *ConflictError
		if errors.As(err, &ce) {
			conflicts[w.target] = ce.Message
			continue
		}
		if err != nil {
			return reconcile.Result{}, err
		}
		haves[i] = have
	}
	keep := map[schema.GroupVersionKind]map[string]bool{AuthorizationPolicyGVK: {}, PeerAuthenticationGVK: {}, EnvoyFilterGVK: {}}
	for i, w := range want {
		if len(conflicts) > 0 && (w.target == "" || conflicts[w.target] != "") {
			continue // an EnvoyFilter needs every part of the union; a conflicted target gets nothing
		}
		a := applier{c: r.Client}
		did, err := a.apply(ctx, w.obj, haves[i])
		if err != nil {
			return reconcile.Result{}, err
		}
		keep[w.obj.GroupVersionKind()][w.obj.GetName()] = true
		if did {
			log.Info("applied", "kind", w.obj.GetKind(), "name", w.obj.GetName())
		}
	}
	for _, gvk := range []schema.GroupVersionKind{EnvoyFilterGVK, AuthorizationPolicyGVK, PeerAuthenticationGVK} {
		if err := r.prune(ctx, gvk, req.Namespace, req.Name, keep[gvk]); err != nil {
			return reconcile.Result{}, err
		}
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
		// No series for a rung without values: at most one or two per destination, not three.
		if n == 0 {
			fidelityRungs.DeleteLabelValues(req.Namespace, req.Name, rung)
		} else {
			fidelityRungs.WithLabelValues(req.Namespace, req.Name, rung).Set(float64(n))
		}
	}
	for _, tr := range res.Targets {
		st := targetStatus(tr, res, state.Mode == Enforcing, inMesh, conflicts[tr.Name])
		reconcileOutcomes.WithLabelValues("TrafficTarget", st.outcome).Inc()
		if err := writeStatus(ctx, r.Client, r.Recorder, byName[tr.Name], st.ready.Message, st.accepted, st.resolved, st.ready); err != nil {
			return reconcile.Result{}, err
		}
	}
	return reconcile.Result{}, nil
}

// check returns the live object, or a ConflictError when it exists and is not ours (its controller
// is none of the destination's TrafficTargets).
func (r *AccessReconciler) check(ctx context.Context, want *unstructured.Unstructured, targets []cached.SMIObject) (cached.Object, error) {
	have, err := cached.NewFor(want.GroupVersionKind())
	if err != nil {
		return nil, err
	}
	err = r.Client.Get(ctx, client.ObjectKeyFromObject(want), have, client.UnsafeDisableDeepCopy)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get %s %s/%s: %w", want.GetKind(), want.GetNamespace(), want.GetName(), err)
	}
	for _, t := range targets {
		if controlledBy(have, t.GetUID()) {
			return have, nil
		}
	}
	return nil, &ConflictError{Message: fmt.Sprintf("%s %s/%s exists and is not managed by smi2istio for this destination: it is left untouched",
		want.GetKind(), want.GetNamespace(), want.GetName())}
}

// prune deletes the destination's generated objects that are no longer wanted.
func (r *AccessReconciler) prune(ctx context.Context, gvk schema.GroupVersionKind, ns, destination string, keep map[string]bool) error {
	list := cached.NewList(gvk)
	if err := r.Client.List(ctx, list, client.InNamespace(ns), client.UnsafeDisableDeepCopy, client.MatchingLabels{
		translate.ManagedByLabel: translate.ManagedByValue, translate.DestinationLabel: destination,
	}); err != nil {
		return fmt.Errorf("list %s: %w", gvk.Kind, err)
	}
	for _, obj := range list.Objects() {
		c := metav1.GetControllerOfNoCopy(obj)
		if keep[obj.GetName()] || c == nil || c.Kind != TrafficTargetGVK.Kind {
			continue
		}
		if err := r.Client.Delete(ctx, obj, client.Preconditions{UID: ptr.To(obj.GetUID())}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete %s %s/%s: %w", gvk.Kind, obj.GetNamespace(), obj.GetName(), err)
		}
	}
	return nil
}

// fetch gathers what the destination's TrafficTargets reference, from the cache.
func (r *AccessReconciler) fetch(ctx context.Context, ns, sa string, targets []*accessv1alpha2.TrafficTarget, mesh translate.Mesh) (translate.AccessInput, error) {
	in := translate.AccessInput{Namespace: ns, ServiceAccount: sa, Targets: targets, Mesh: mesh,
		RouteGroups: map[string]*normalize.HTTPRouteGroup{}, PortRoutes: map[string]*normalize.PortRoute{},
		RouteGroupErrors: map[string]*normalize.FieldError{}}
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
			u := cached.NewSMI(gvk)
			err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: rule.Name}, u, client.UnsafeDisableDeepCopy)
			if apierrors.IsNotFound(err) {
				continue
			}
			if err != nil {
				return in, fmt.Errorf("get %s %s/%s: %w", rule.Kind, ns, rule.Name, err)
			}
			if rule.Kind == "HTTPRouteGroup" {
				g, err := normalize.ReadHTTPRouteGroup(u)
				var fe *normalize.FieldError
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
			if err != nil {
				continue
			}
			in.PortRoutes[rule.Kind+"/"+rule.Name] = pr
		}
	}
	in.Workloads = r.Workloads.Workloads(ns)
	return in, nil
}

// workloadSource runs the workload index for the controller and enqueues the destinations of every
// namespace whose workloads changed; workers start once the index has listed everything.
type workloadSource struct {
	index *workloads.Index
	cfg   *rest.Config
	fan   func(ctx context.Context, ns string, opts ...client.ListOption) []reconcile.Request
}

func (s *workloadSource) Start(ctx context.Context, queue workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	go func() {
		if err := s.index.Run(ctx, s.cfg); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "workload index stopped")
		}
	}()
	go func() {
		for {
			changed := s.index.Changed(ctx)
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

func targetStatus(tr translate.TargetResult, res *translate.AccessResult, enforcing, inMesh bool, conflict string) conditionSet {
	st := applied()
	st.accepted.Message = rungSummary(tr)
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
		st.ready = metav1.Condition{Type: ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonInvalid, Message: "nothing is allowed by this TrafficTarget"}
		st.outcome = "invalid"
		return st
	}
	unresolved := append(append([]translate.Finding(nil), res.SelectorFindings...), tr.Unresolved...)
	if len(unresolved) > 0 {
		st.resolved = metav1.Condition{Type: ConditionResolvedRefs, Status: metav1.ConditionFalse, Reason: unresolved[0].Reason, Message: joinFindings(unresolved)}
		st.outcome = "unresolved"
	}
	names := make([]string, 0)
	for _, o := range tr.Objects() {
		if m, ok := o.(metav1.Object); ok {
			names = append(names, m.GetName())
		}
	}
	sort.Strings(names)
	switch {
	case !inMesh:
		st.ready = metav1.Condition{Type: ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonNotInMesh,
			Message: "the destination's namespace is not in the mesh: nothing is applied"}
		st.outcome = "notinmesh"
	case !enforcing:
		st.ready = metav1.Condition{Type: ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonNotEnforced,
			Message: "the access mode is Permissive: every source is allowed and this TrafficTarget is not enforced"}
		st.outcome = "permissive"
	case conflict != "":
		st.ready = metav1.Condition{Type: ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonConflict, Message: conflict}
		st.outcome = "conflict"
	case len(names) == 0:
		st.ready = metav1.Condition{Type: ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonNothingToDo,
			Message: "nothing is allowed: " + joinFindings(append(unresolved, tr.Warnings...))}
	default:
		st.ready.Message = "applied " + strings.Join(names, ", ")
		if len(tr.Warnings) > 0 {
			st.ready.Message += "; " + joinFindings(tr.Warnings)
		}
	}
	return st
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
