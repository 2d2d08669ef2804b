package controllers

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/go-logr/logr"
	splitv1alpha4 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/split/v1alpha4"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/smi2istio/smi2istio/internal/cached"
	"github.com/smi2istio/smi2istio/internal/smi/normalize"
	"github.com/smi2istio/smi2istio/translate"
)

// GVKs the TrafficSplit reconciler reads and writes. SMI objects are read in their hub version.
var (
	TrafficSplitGVK    = cached.TrafficSplit{}.GVK()
	HTTPRouteGroupGVK  = cached.HTTPRouteGroup{}.GVK()
	VirtualServiceGVK  = cached.VirtualService{}.GVK()
	DestinationRuleGVK = cached.DestinationRule{}.GVK()
)

// Field indexes: the split ones within one namespace only (indexInNamespace); the VirtualService
// hosts across namespaces (a host may be claimed from any namespace).
const (
	indexSplitServices      = "smi2istio.split.services"       // root and backend Service names
	indexSplitRoot          = "smi2istio.split.root"           // root Service name
	indexSplitRouteGroups   = "smi2istio.split.routeGroups"    // HTTPRouteGroup names in spec.matches
	indexVirtualServiceHost = "smi2istio.virtualservice.hosts" // FQDN hosts of any VirtualService
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
}

// +kubebuilder:rbac:groups=split.smi-spec.io,resources=trafficsplits,verbs=get;list;watch
// +kubebuilder:rbac:groups=split.smi-spec.io,resources=trafficsplits/status,verbs=get;patch
// +kubebuilder:rbac:groups=split.smi-spec.io,resources=trafficsplits/finalizers,verbs=update
// +kubebuilder:rbac:groups=specs.smi-spec.io,resources=httproutegroups,verbs=get;list;watch
// +kubebuilder:rbac:groups=specs.smi-spec.io,resources=httproutegroups/status;tcproutes/status;udproutes/status,verbs=get;patch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups=networking.istio.io,resources=virtualservices;destinationrules,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// SetupWithManager registers the field indexes and watches.
func (r *TrafficSplitReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	c := mgr.GetCache()
	splitRefs := func(f func(*splitv1alpha4.TrafficSplit) []string) client.IndexerFunc {
		return func(o client.Object) []string {
			ts, err := normalize.ReadTrafficSplit(o)
			if err != nil {
				return nil
			}
			return f(ts)
		}
	}
	if err := indexInNamespace(ctx, c, cached.NewSMI(TrafficSplitGVK), indexSplitServices, splitRefs(func(ts *splitv1alpha4.TrafficSplit) []string {
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
	if err := indexInNamespace(ctx, c, cached.NewSMI(TrafficSplitGVK), indexSplitRoot, splitRefs(func(ts *splitv1alpha4.TrafficSplit) []string {
		if root, err := translate.ParseServiceRef(ts.Spec.Service, ts.Namespace, r.Mesh); err == nil {
			return []string{root}
		}
		return nil
	})); err != nil {
		return fmt.Errorf("index TrafficSplit root: %w", err)
	}
	if err := indexInNamespace(ctx, c, cached.NewSMI(TrafficSplitGVK), indexSplitRouteGroups, splitRefs(func(ts *splitv1alpha4.TrafficSplit) []string {
		var out []string
		for _, m := range ts.Spec.Matches {
			out = append(out, m.Name)
		}
		return out
	})); err != nil {
		return fmt.Errorf("index TrafficSplit route groups: %w", err)
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, cached.New(VirtualServiceGVK), indexVirtualServiceHost, func(o client.Object) []string {
		hosts := o.(cached.Object).Hosts()
		out := make([]string, 0, len(hosts))
		for _, h := range hosts {
			out = append(out, qualifyHost(h, o.GetNamespace(), r.Mesh))
		}
		return out
	}); err != nil {
		return fmt.Errorf("index VirtualService hosts: %w", err)
	}

	splitsBy := func(index string, keys func(client.Object) (string, []string)) handler.EventHandler {
		return handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			ns, values := keys(o)
			return r.splitsByIndex(ctx, ns, index, values)
		})
	}
	byName := func(o client.Object) (string, []string) { return o.GetNamespace(), []string{o.GetName()} }
	rootOf := func(o client.Object) (string, []string) {
		ts, err := normalize.ReadTrafficSplit(o)
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
		Named("trafficsplit")
	if r.Resync != nil {
		b = b.WatchesRawSource(r.Resync(func(ctx context.Context) []reconcile.Request {
			list := cached.NewSMIList(TrafficSplitGVK)
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
	return b.
		For(cached.NewSMI(TrafficSplitGVK), builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Owns(cached.New(VirtualServiceGVK)).
		Owns(cached.New(DestinationRuleGVK)).
		Watches(&corev1.Service{}, splitsBy(indexSplitServices, byName)).
		Watches(cached.NewSMI(HTTPRouteGroupGVK), splitsBy(indexSplitRouteGroups, byName)).
		// Splits that share a root: the oldest wins, so a change to one concerns the others.
		Watches(cached.NewSMI(TrafficSplitGVK), splitsBy(indexSplitRoot, rootOf), builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// An object for a root host that a split does not own blocks it (someone else's, or a
		// sibling's not yet garbage collected): its change or removal concerns every split of that root.
		Watches(cached.New(VirtualServiceGVK), r.splitsOfHosts()).
		Watches(cached.New(DestinationRuleGVK), r.splitsOfHosts()).
		Complete(r)
}

// splitsOfHosts maps an Istio object to the splits whose root is one of its hosts.
func (r *TrafficSplitReconciler) splitsOfHosts() handler.EventHandler {
	return handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
		var out []reconcile.Request
		for _, h := range o.(cached.Object).Hosts() {
			if name, ns, ok := serviceOfHost(qualifyHost(h, o.GetNamespace(), r.Mesh), r.Mesh); ok {
				out = append(out, r.splitsByIndex(ctx, ns, indexSplitRoot, []string{name})...)
			}
		}
		return out
	})
}

// splitsByIndex lists the TrafficSplits of a namespace whose index holds any of the values.
func (r *TrafficSplitReconciler) splitsByIndex(ctx context.Context, ns, index string, values []string) []reconcile.Request {
	seen := map[types.NamespacedName]bool{}
	var out []reconcile.Request
	for _, v := range values {
		list := cached.NewSMIList(TrafficSplitGVK)
		if err := r.Client.List(ctx, list, client.InNamespace(ns), client.MatchingFields{index: v}, client.UnsafeDisableDeepCopy); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "list TrafficSplits for fan-in", "index", index, "value", v)
			continue
		}
		for _, ts := range list.Objects() {
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

// Reconcile: fetch -> translate -> check ownership -> apply -> prune -> status.
func (r *TrafficSplitReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	u := cached.NewSMI(TrafficSplitGVK)
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
	st, err := r.reconcile(ctx, log, u, state.InMesh(u.GetNamespace()))
	if err != nil {
		reconcileOutcomes.WithLabelValues("TrafficSplit", "error").Inc()
		return reconcile.Result{}, err
	}
	reconcileOutcomes.WithLabelValues("TrafficSplit", st.outcome).Inc()
	return reconcile.Result{}, r.report(ctx, u, st)
}

func (r *TrafficSplitReconciler) reconcile(ctx context.Context, log logr.Logger, u cached.SMIObject, inMesh bool) (conditionSet, error) {
	st := applied()
	a := applier{c: r.Client, owner: ownerRef(u, TrafficSplitGVK.GroupVersion().String(), TrafficSplitGVK.Kind)}
	ts, err := normalize.ReadTrafficSplit(u)
	if err != nil {
		return st, reconcile.TerminalError(fmt.Errorf("read TrafficSplit %s/%s: %w", u.GetNamespace(), u.GetName(), err))
	}

	// Outside the mesh nothing is read or translated: every output is pruned.
	var res *translate.SplitResult
	var terr error
	if inMesh {
		res, terr = r.translate(ctx, ts)
	} else {
		st.ready = metav1.Condition{Type: ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonNotInMesh,
			Message: "namespace " + u.GetNamespace() + " is not in the mesh: nothing is applied"}
		st.outcome = "notinmesh"
	}
	var inv *translate.InvalidError
	var conflict *ConflictError
	switch {
	case errors.As(terr, &inv):
		st.accepted = metav1.Condition{Type: ConditionAccepted, Status: metav1.ConditionFalse, Reason: inv.Reason, Message: inv.Error()}
		st.ready = metav1.Condition{Type: ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonInvalid,
			Message: "not applied: traffic goes to the root Service as if there were no TrafficSplit"}
		st.outcome = "invalid"
	case errors.As(terr, &conflict):
		st.ready = metav1.Condition{Type: ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonConflict, Message: conflict.Message}
		st.outcome = "conflict"
	case terr != nil:
		return st, terr
	}

	var want []*unstructured.Unstructured
	if res != nil {
		st.accepted.Message = fmt.Sprintf("%s mode for %s", res.Mode, res.Host)
		if len(res.Unresolved) > 0 {
			st.resolved = metav1.Condition{Type: ConditionResolvedRefs, Status: metav1.ConditionFalse, Reason: res.Unresolved[0].Reason, Message: joinFindings(res.Unresolved)}
			st.outcome = "unresolved"
		}
		for _, o := range res.Objects() {
			d, err := a.desired(o)
			if err != nil {
				return st, err
			}
			want = append(want, d)
		}
		names := make([]string, 0, len(want))
		for _, w := range want {
			names = append(names, w.GetKind()+" "+w.GetName())
		}
		st.ready.Message = "applied " + strings.Join(names, " and ")
		if len(want) == 0 {
			st.ready = metav1.Condition{Type: ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonNothingToDo, Message: "nothing to route: " + joinFindings(res.Unresolved)}
		}
		if len(res.Warnings) > 0 {
			st.ready.Message += "; " + joinFindings(res.Warnings)
		}
	}

	// Check every output before writing any, so that a conflict writes nothing.
	haves := make([]cached.Object, len(want))
	for i, w := range want {
		have, err := a.check(ctx, w)
		if errors.As(err, &conflict) {
			st.ready = metav1.Condition{Type: ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonConflict, Message: conflict.Message}
			st.outcome = "conflict"
			want = nil
			break
		}
		if err != nil {
			return st, err
		}
		haves[i] = have
	}
	wrote := false
	for i, w := range want {
		did, err := a.apply(ctx, w, haves[i])
		if err != nil {
			return st, err
		}
		if did {
			wrote = true
			log.Info("applied", "kind", w.GetKind(), "name", w.GetName())
		}
	}
	keep := map[schema.GroupVersionKind]map[string]bool{VirtualServiceGVK: {}, DestinationRuleGVK: {}}
	for _, w := range want {
		keep[w.GroupVersionKind()][w.GetName()] = true
	}
	// Prune in reverse order: the VirtualService before the DestinationRule it names.
	for _, gvk := range []schema.GroupVersionKind{VirtualServiceGVK, DestinationRuleGVK} {
		n, err := a.prune(ctx, gvk, u.GetNamespace(), "TrafficSplit", u.GetName(), keep[gvk])
		if err != nil {
			return st, err
		}
		if n > 0 {
			wrote = true
			log.Info("pruned", "kind", gvk.Kind, "count", n)
		}
	}
	if st.outcome == "applied" && !wrote {
		st.outcome = "unchanged"
	}
	return st, nil
}

// translate fetches what the split references and translates it. Two splits for one root: the
// oldest wins and the others get a ConflictError; so does a VirtualService of someone else's for
// the root host.
func (r *TrafficSplitReconciler) translate(ctx context.Context, ts *splitv1alpha4.TrafficSplit) (*translate.SplitResult, error) {
	root, err := translate.ParseServiceRef(ts.Spec.Service, ts.Namespace, r.Mesh)
	if err != nil {
		return nil, &translate.InvalidError{Finding: translate.Finding{Field: "spec.service", Reason: "InvalidService", Message: err.Error()}}
	}
	siblings := cached.NewSMIList(TrafficSplitGVK)
	if err := r.Client.List(ctx, siblings, client.InNamespace(ts.Namespace), client.MatchingFields{indexSplitRoot: root}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("list TrafficSplits for root %s: %w", root, err)
	}
	if winner := oldest(siblings.Objects()); winner != nil && winner.GetUID() != ts.UID {
		return nil, &ConflictError{Message: fmt.Sprintf("TrafficSplit %s is older and splits the same root Service %s: this one is not applied", winner.GetName(), root)}
	}
	host := translate.ServiceFQDN(root, ts.Namespace, r.Mesh)
	others := cached.NewList(VirtualServiceGVK)
	if err := r.Client.List(ctx, others, client.MatchingFields{indexVirtualServiceHost: host}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("list VirtualServices for host %s: %w", host, err)
	}
	for _, vs := range others.Objects() {
		if !controlledBy(vs, ts.UID) {
			return nil, &ConflictError{Message: fmt.Sprintf("VirtualService %s/%s already routes %s and is not managed by this TrafficSplit: nothing is applied", vs.GetNamespace(), vs.GetName(), host)}
		}
	}

	in := translate.SplitInput{Split: ts, Services: map[string]*corev1.Service{}, RouteGroups: map[string]*normalize.HTTPRouteGroup{},
		RouteGroupErrors: map[string]*normalize.FieldError{}, Mesh: r.Mesh}
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
			return nil, fmt.Errorf("get Service %s/%s: %w", ts.Namespace, n, err)
		}
		in.Services[n] = svc
	}
	for _, m := range ts.Spec.Matches {
		g := cached.NewSMI(HTTPRouteGroupGVK)
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: ts.Namespace, Name: m.Name}, g, client.UnsafeDisableDeepCopy)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("get HTTPRouteGroup %s/%s: %w", ts.Namespace, m.Name, err)
		}
		hrg, err := normalize.ReadHTTPRouteGroup(g)
		var fe *normalize.FieldError
		if errors.As(err, &fe) {
			in.RouteGroupErrors[m.Name] = fe
			continue
		}
		if err != nil {
			return nil, err
		}
		in.RouteGroups[m.Name] = hrg
	}
	return translate.TranslateSplit(in)
}

// oldest is the split created first (name breaks ties).
func oldest(items []cached.SMIObject) cached.SMIObject {
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

func joinFindings(fs []translate.Finding) string {
	parts := make([]string, 0, len(fs))
	for _, f := range fs {
		parts = append(parts, f.String())
	}
	return strings.Join(parts, "; ")
}

// report writes the conditions when they changed, and an Event when Ready changed.
func (r *TrafficSplitReconciler) report(ctx context.Context, u cached.SMIObject, st conditionSet) error {
	return writeStatus(ctx, r.Client, r.Recorder, u, readyNote(st), st.accepted, st.resolved, st.ready)
}

func readyNote(st conditionSet) string {
	if st.ready.Message != "" {
		return st.ready.Message
	}
	return st.accepted.Message
}
