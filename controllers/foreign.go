package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/smi2istio/smi2istio/api/v1alpha1"
	"github.com/smi2istio/smi2istio/internal/cache"
	"github.com/smi2istio/smi2istio/internal/smi/crds"
)

// Values of --smi-crds: whose SMI CRDs the operator works with.
const (
	// SMICRDsAuto: smi2istio's own CRDs where installed (its labels), another installer's as they
	// are otherwise.
	SMICRDsAuto = "auto"
	// SMICRDsOwn: smi2istio's own CRDs, in the versions they store, with a status subresource.
	SMICRDsOwn = "own"
	// SMICRDsForeign: the CRDs installed are kept as they are (Open Service Mesh's): each kind is
	// watched in a version they serve, status goes to Events where they have no status subresource.
	SMICRDsForeign = "foreign"
)

// DetectSMICRDs decides, per SMI kind, the CRD the operator works with, the version it watches
// and where its objects' conditions go. In own mode every kind is smi2istio's, in the versions its
// CRDs store. Otherwise the CRDs are read (r: a direct client, before the cache exists): a kind is
// watched in its CRD's storage version when that version is served and one smi2istio reads, else
// in the newest such version served; a kind without a CRD, or without such a version, is absent
// (not watched: references to it resolve to nothing, which allows nothing).
func DetectSMICRDs(ctx context.Context, r client.Reader, mode string) ([]v1alpha1.SMICRD, error) {
	switch mode {
	case SMICRDsAuto, SMICRDsOwn, SMICRDsForeign:
	default:
		return nil, fmt.Errorf("--smi-crds=%q: want auto, own or foreign", mode)
	}
	var out []v1alpha1.SMICRD
	for _, want := range crds.All() {
		e := v1alpha1.SMICRD{Kind: want.Spec.Names.Kind, CRD: want.Name}
		if mode == SMICRDsOwn {
			e.Owner, e.Version, e.Status = v1alpha1.SMICRDOwnedBySMI2Istio, storageVersion(want), v1alpha1.SMIStatusSubresource
			e.Message = "--smi-crds=own"
			out = append(out, e)
			continue
		}
		have := &apiextv1.CustomResourceDefinition{}
		if err := r.Get(ctx, client.ObjectKey{Name: want.Name}, have); err != nil {
			if !apierrors.IsNotFound(err) {
				return nil, fmt.Errorf("read CRD %s: %w", want.Name, err)
			}
			e.Owner, e.Message = v1alpha1.SMICRDAbsent, "no CRD: the kind is not watched; references to it resolve to nothing"
			out = append(out, e)
			continue
		}
		e.Owner = v1alpha1.SMICRDForeign
		if crds.Ours(have) {
			e.Owner = v1alpha1.SMICRDOwnedBySMI2Istio
		}
		v, ok := chooseVersion(want, have)
		if !ok {
			e.Owner = v1alpha1.SMICRDAbsent
			e.Message = fmt.Sprintf("CRD serves no version smi2istio reads (it reads %v): the kind is not watched", versionNames(want))
			out = append(out, e)
			continue
		}
		e.Version, e.Status = v.Name, v1alpha1.SMIStatusSubresource
		e.Message = "status subresource"
		if v.Subresources == nil || v.Subresources.Status == nil {
			e.Status, e.Message = v1alpha1.SMIStatusEvents, "no status subresource: conditions reported as Events"
		}
		if e.Owner == v1alpha1.SMICRDForeign {
			e.Message = "another installer's CRD, left as it is; " + e.Message
		}
		out = append(out, e)
	}
	return out, nil
}

func storageVersion(c *apiextv1.CustomResourceDefinition) string {
	for _, v := range c.Spec.Versions {
		if v.Storage {
			return v.Name
		}
	}
	return ""
}

func versionNames(c *apiextv1.CustomResourceDefinition) []string {
	var out []string
	for _, v := range c.Spec.Versions {
		out = append(out, v.Name)
	}
	return out
}

// chooseVersion is the version of have to watch: its storage version when served and known (one
// of want's, smi2istio's CRD of the kind, which lists them oldest first, with a spec), else the
// newest known version served.
func chooseVersion(want, have *apiextv1.CustomResourceDefinition) (apiextv1.CustomResourceDefinitionVersion, bool) {
	// Only versions that keep their content under spec: the compact cache type keeps the spec (and
	// metadata) alone, so TrafficTarget v1alpha1, HTTPRouteGroup and TCPRoute v1alpha1–2 are not
	// watched (they would read as empty).
	var known []string
	for _, v := range want.Spec.Versions {
		if v.Schema != nil && v.Schema.OpenAPIV3Schema != nil {
			if _, ok := v.Schema.OpenAPIV3Schema.Properties["spec"]; ok {
				known = append(known, v.Name)
			}
		}
	}
	best, bestRank := apiextv1.CustomResourceDefinitionVersion{}, -1
	for _, v := range have.Spec.Versions {
		rank := slices.Index(known, v.Name)
		if !v.Served || rank < 0 {
			continue
		}
		if v.Storage {
			return v, true
		}
		if rank > bestRank {
			best, bestRank = v, rank
		}
	}
	return best, bestRank >= 0
}

// The SMI kinds' choice in effect: set once by UseSMIKinds, before the manager is built.
var (
	smiKindsMu sync.RWMutex
	smiCRDs    []v1alpha1.SMICRD
	// statusByEvents are the kinds whose CRD has no status subresource.
	statusByEvents = map[schema.GroupKind]bool{}
)

// UseSMIKinds makes a choice of DetectSMICRDs the process's: the compact cache types' versions
// (cache.SetSMIVersions), this package's GVK variables and owner apiVersions, and where status
// goes. It is process-wide and must be called once, before the scheme (cache.AddToScheme), the
// manager or any reconciler is made. Tests of this package keep the defaults (no call).
func UseSMIKinds(choice []v1alpha1.SMICRD) error {
	var v cache.SMIVersions
	events := map[schema.GroupKind]bool{}
	for _, e := range choice {
		if e.Owner == v1alpha1.SMICRDAbsent {
			continue
		}
		switch e.Kind {
		case "TrafficSplit":
			v.TrafficSplit = e.Version
		case "TrafficTarget":
			v.TrafficTarget = e.Version
		case "HTTPRouteGroup":
			v.HTTPRouteGroup = e.Version
		case "TCPRoute":
			v.TCPRoute = e.Version
		case "UDPRoute":
			v.UDPRoute = e.Version
		default:
			return fmt.Errorf("unknown SMI kind %q", e.Kind)
		}
		if e.Status == v1alpha1.SMIStatusEvents {
			events[schema.GroupKind{Group: groupOf(e.CRD), Kind: e.Kind}] = true
		}
	}
	if err := cache.SetSMIVersions(v); err != nil {
		return err
	}
	smiKindsMu.Lock()
	defer smiKindsMu.Unlock()
	TrafficSplitGVK = cache.TrafficSplit{}.GVK()
	TrafficTargetGVK = cache.TrafficTarget{}.GVK()
	HTTPRouteGroupGVK = cache.HTTPRouteGroup{}.GVK()
	TCPRouteGVK = cache.TCPRoute{}.GVK()
	UDPRouteGVK = cache.UDPRoute{}.GVK()
	trafficSplitOwnerAPIVersion = TrafficSplitGVK.GroupVersion().String()
	trafficTargetOwnerAPIVersion = TrafficTargetGVK.GroupVersion().String()
	smiCRDs = slices.Clone(choice)
	statusByEvents = events
	return nil
}

// AbsentSMIKinds are the kinds of a choice that are not served: the cache reads them as empty
// (cache.WithoutKinds).
func AbsentSMIKinds(choice []v1alpha1.SMICRD) []schema.GroupVersionKind {
	var out []schema.GroupVersionKind
	for _, e := range choice {
		if e.Owner != v1alpha1.SMICRDAbsent {
			continue
		}
		for _, gvk := range cache.SMIGVKs() {
			if gvk.Kind == e.Kind {
				out = append(out, gvk)
			}
		}
	}
	return out
}

func groupOf(crdName string) string {
	for i := range crdName {
		if crdName[i] == '.' {
			return crdName[i+1:]
		}
	}
	return crdName
}

// eventsOnly reports whether the objects of a kind have no status subresource.
func eventsOnly(gk schema.GroupKind) bool {
	smiKindsMu.RLock()
	defer smiKindsMu.RUnlock()
	return statusByEvents[gk]
}

// SMICRDReporter writes the choice of UseSMIKinds to the config's status.smiCRDs (that field
// alone, a JSON merge patch), when the config appears or the field changed.
type SMICRDReporter struct {
	Client client.Client
}

// SetupWithManager watches the config, and forgets what was reported of objects of the Events-only
// kinds once they are deleted.
func (r *SMICRDReporter) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	for _, gvk := range cache.SMIGVKs() {
		if !eventsOnly(gvk.GroupKind()) {
			continue
		}
		inf, err := mgr.GetCache().GetInformer(ctx, cache.NewSMI(gvk))
		if err != nil {
			return fmt.Errorf("watch %s: %w", gvk.Kind, err)
		}
		gk := gvk.GroupKind()
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{DeleteFunc: func(obj any) {
			if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if o, ok := obj.(client.Object); ok {
				reportedEvents.forget(gk, o.GetNamespace(), o.GetName())
			}
		}}); err != nil {
			return fmt.Errorf("watch %s deletions: %w", gvk.Kind, err)
		}
	}
	one := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: v1alpha1.ConfigName}}}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("smicrds").
		Watches(&v1alpha1.SMI2IstioConfig{}, one, builder.WithPredicates(configStatusChanged(smiCRDsOf))).
		Complete(r)
}

// Reconcile writes status.smiCRDs when it differs from the choice in effect.
func (r *SMICRDReporter) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	smiKindsMu.RLock()
	want := slices.Clone(smiCRDs)
	smiKindsMu.RUnlock()
	if want == nil {
		return reconcile.Result{}, nil
	}
	return reconcile.Result{}, patchConfigStatusField(ctx, r.Client, "smiCRDs", smiCRDsOf, want)
}

func smiCRDsOf(s *v1alpha1.SMI2IstioConfigStatus) any { return s.SMICRDs }

// SMICRDWatch reads the SMI CRDs again every Interval (by name, with the rights the operator has)
// and returns an error when DetectSMICRDs would now choose differently (another owner, version or
// status): the versions watched are chosen once per process, so the manager stops and the process
// exits, to be started again with the new choice, rather than watching a version no longer served
// (its informers would fail every relist, their view of the kind frozen with what it last saw) or
// writing status where there is none. A failed read is retried at the next tick.
type SMICRDWatch struct {
	Reader   client.Reader // uncached: the cache does not watch CRDs
	Mode     string
	Choice   []v1alpha1.SMICRD
	Interval time.Duration
}

// NeedLeaderElection: every replica watches, the ones waiting for the lease too.
func (w *SMICRDWatch) NeedLeaderElection() bool { return false }

// Start returns nil when ctx ends, an error when the choice changed.
func (w *SMICRDWatch) Start(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("smicrds")
	t := time.NewTicker(w.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		now, err := DetectSMICRDs(ctx, w.Reader, w.Mode)
		if err != nil {
			log.Error(err, "read the SMI CRDs again")
			continue
		}
		if changes := choiceChanges(w.Choice, now); len(changes) > 0 {
			return fmt.Errorf("%w: %s: restarting to work with what they serve now", ErrSMICRDsChanged, strings.Join(changes, "; "))
		}
	}
}

// ErrSMICRDsChanged: the SMI CRDs no longer serve what the process chose at start-up.
var ErrSMICRDsChanged = errors.New("the SMI CRDs changed")

// choiceChanges says which kinds DetectSMICRDs chose differently (owner, version or status).
func choiceChanges(before, now []v1alpha1.SMICRD) []string {
	was := map[string]v1alpha1.SMICRD{}
	for _, c := range before {
		was[c.Kind] = c
	}
	var out []string
	for _, c := range now {
		b := was[c.Kind]
		if b.Owner != c.Owner || b.Version != c.Version || b.Status != c.Status {
			out = append(out, fmt.Sprintf("%s: %s %s %s -> %s %s %s", c.Kind, b.Owner, b.Version, b.Status, c.Owner, c.Version, c.Status))
		}
	}
	return out
}
