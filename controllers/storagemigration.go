package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/smi2istio/smi2istio/api/v1alpha1"
	"github.com/smi2istio/smi2istio/internal/smi/crds"
)

// The SMI CRDs are read (by name: no cluster-wide list or watch of CRDs, whose failure would stop
// the manager) and their status written, to drop the versions no object is stored in any more.
// +kubebuilder:rbac:groups=apiextensions.k8s.io,resources=customresourcedefinitions,verbs=get,resourceNames=trafficsplits.split.smi-spec.io;traffictargets.access.smi-spec.io;httproutegroups.specs.smi-spec.io;tcproutes.specs.smi-spec.io;udproutes.specs.smi-spec.io
// +kubebuilder:rbac:groups=apiextensions.k8s.io,resources=customresourcedefinitions/status,verbs=update,resourceNames=trafficsplits.split.smi-spec.io;traffictargets.access.smi-spec.io;httproutegroups.specs.smi-spec.io;tcproutes.specs.smi-spec.io;udproutes.specs.smi-spec.io
// Every SMI object is listed and written back unchanged, which re-encodes it in the storage version.
// +kubebuilder:rbac:groups=split.smi-spec.io,resources=trafficsplits,verbs=get;list;update
// +kubebuilder:rbac:groups=access.smi-spec.io,resources=traffictargets,verbs=get;list;update
// +kubebuilder:rbac:groups=specs.smi-spec.io,resources=httproutegroups;tcproutes;udproutes,verbs=get;list;update

// StorageMigrationReconciler migrates the objects of each SMI CRD into its storage version, as
// kube-storage-version-migrator does, and then removes the older versions from the CRD's
// status.storedVersions, so that a later CRD can stop serving them. A CRD taken over from Open
// Service Mesh (TrafficSplit stored as v1alpha2) has objects stored in a version smi2istio no
// longer stores: the apiserver keeps that version in storedVersions until someone says every
// object was rewritten, and refuses a CRD without it.
//
// Fail safe: storedVersions is changed only after every object of the kind was rewritten without
// error, and with the CRD unchanged since it was read (an optimistic-concurrency update). On any
// error it is left as it is and the migration is retried after RetryAfter. Progress is reported on
// the SMI2IstioConfig's status.storageMigration, a field only this reconciler writes (JSON merge
// patch of that field alone).
type StorageMigrationReconciler struct {
	// Client writes the SMI objects, the CRDs' status and the config's status, and reads the config.
	Client client.Client
	// Reader reads the CRDs and lists the SMI objects from the apiserver (the manager's API reader:
	// an unstructured list through the cache would start an informer holding every object again).
	// Client when nil.
	Reader client.Reader
	// RetryAfter is how long after a failure the migration is tried again (one minute when zero).
	RetryAfter time.Duration
	// Settle is how long a CRD's generation must have been seen unchanged before its objects are
	// rewritten (10 s when zero): every apiserver must write the new storage version by then, or a
	// rewrite could store the old one again. A negative value does not wait.
	Settle time.Duration
	// Recheck is how often the CRDs are looked at again when nothing is left to do (ten minutes
	// when zero): a CRD changed since (a new storage version) is migrated then, or at the next start.
	Recheck time.Duration
	// CRDs are the names of the CRDs to migrate; every SMI CRD when empty.
	CRDs []string

	// seen is when each CRD's generation was first seen (name -> generation and time).
	seen map[string]generationSeen
	// migrated is the report of each migration this process completed: kept while the CRD's
	// storedVersions stay as it left them (the status read back may be older than the report).
	migrated map[string]v1alpha1.StorageMigration
}

type generationSeen struct {
	generation int64
	at         time.Time
}

// Labels of smi2istio's CRDs (internal/smi/crds): a CRD without them is someone else's (OSM's,
// kept when smi2istio is told not to install its own) and is left alone.
const (
	partOfLabel = "app.kubernetes.io/part-of"
	partOfValue = "smi2istio"
)

// migrationPageSize is how many objects are listed at a time (kube-storage-version-migrator's chunk).
const migrationPageSize = 500

// maxReportedFailures bounds the objects named in a Failed message.
const maxReportedFailures = 3

var storageMigrationRequest = reconcile.Request{NamespacedName: types.NamespacedName{Name: "storage-migration"}}

// SetupWithManager watches the config: its creation (at start, the informer's first list) runs
// the migration; a change of status.storageMigration by anyone else has it reported again. The
// CRDs are not watched but looked at again every Recheck: a watch needs list and watch on every
// CRD, and without them the manager would not start. Installing or upgrading smi2istio applies the
// CRDs before the operator starts, so a start sees them.
func (r *StorageMigrationReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Reader == nil {
		r.Reader = mgr.GetAPIReader()
	}
	one := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{storageMigrationRequest}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("storagemigration").
		Watches(&v1alpha1.SMI2IstioConfig{}, one, builder.WithPredicates(configStatusChanged(storageMigrationOf))).
		Complete(r)
}

func (r *StorageMigrationReconciler) crdNames() []string {
	if len(r.CRDs) > 0 {
		return r.CRDs
	}
	var out []string
	for _, c := range crds.All() {
		out = append(out, c.Name)
	}
	return out
}

func (r *StorageMigrationReconciler) retryAfter() time.Duration {
	if r.RetryAfter > 0 {
		return r.RetryAfter
	}
	return time.Minute
}

func (r *StorageMigrationReconciler) recheck() time.Duration {
	if r.Recheck > 0 {
		return r.Recheck
	}
	return 10 * time.Minute
}

func (r *StorageMigrationReconciler) settle() time.Duration {
	switch {
	case r.Settle < 0:
		return 0
	case r.Settle == 0:
		return 10 * time.Second
	}
	return r.Settle
}

func (r *StorageMigrationReconciler) reader() client.Reader {
	if r.Reader != nil {
		return r.Reader
	}
	return r.Client
}

// Reconcile migrates every SMI CRD that needs it, one after the other, reporting as it goes.
func (r *StorageMigrationReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	names := r.crdNames()
	prev := map[string]v1alpha1.StorageMigration{}
	cfg := &v1alpha1.SMI2IstioConfig{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: v1alpha1.ConfigName}, cfg); err == nil {
		for _, m := range cfg.Status.StorageMigration {
			prev[m.Name] = m
		}
	}
	// The report starts from what is on the status: a progress report shows the CRDs not looked at
	// yet as they were (or not at all).
	report := make([]v1alpha1.StorageMigration, len(names))
	for i, n := range names {
		if p, ok := prev[n]; ok {
			report[i] = p
		}
	}
	requeue := r.recheck()
	later := func(d time.Duration) { requeue = min(requeue, d) }
	for i, name := range names {
		progress := func(m v1alpha1.StorageMigration) {
			report[i] = m
			known := slices.DeleteFunc(slices.Clone(report), func(m v1alpha1.StorageMigration) bool { return m.State == "" })
			if err := r.report(ctx, known); err != nil {
				log.Error(err, "report storage migration progress")
			}
		}
		m, wait, err := r.migrate(ctx, name, prev[name], progress)
		report[i] = m
		switch {
		case err != nil:
			log.Error(err, "storage version migration failed; storedVersions left as they are, retrying", "crd", name, "after", r.retryAfter())
			later(r.retryAfter())
		case wait > 0:
			later(wait)
		}
	}
	if err := r.report(ctx, report); err != nil {
		return reconcile.Result{}, err
	}
	return reconcile.Result{RequeueAfter: requeue}, nil
}

// migrate brings one CRD to a single stored version. It returns its report, how long to wait before
// looking again (the CRD is settling), and the error that failed the migration.
func (r *StorageMigrationReconciler) migrate(ctx context.Context, name string, prev v1alpha1.StorageMigration,
	progress func(v1alpha1.StorageMigration)) (v1alpha1.StorageMigration, time.Duration, error) {
	out := v1alpha1.StorageMigration{Name: name}
	fail := func(err error) (v1alpha1.StorageMigration, time.Duration, error) {
		out.State, out.Message = v1alpha1.MigrationFailed, err.Error()+"; status.storedVersions left as they are, retrying"
		return out, 0, err
	}
	crd := &apiextv1.CustomResourceDefinition{}
	if err := r.reader().Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
		switch {
		case apierrors.IsNotFound(err):
			out.State, out.Message = v1alpha1.MigrationSkipped, "the CRD is not installed"
			return out, 0, nil
		case apierrors.IsForbidden(err):
			// Not granted (an install whose RBAC leaves CRDs out): nothing is touched; looked at again
			// every Recheck.
			out.State = v1alpha1.MigrationSkipped
			out.Message = "not permitted to read the CRD: storage migration needs get on customresourcedefinitions and update on customresourcedefinitions/status"
			return out, 0, nil
		}
		return fail(fmt.Errorf("read CRD %s: %w", name, err))
	}
	stored := slices.Clone(crd.Status.StoredVersions)
	out.StoredVersions = stored
	if crd.Labels[partOfLabel] != partOfValue {
		out.State = v1alpha1.MigrationSkipped
		out.Message = fmt.Sprintf("not smi2istio's CRD (no label %s=%s): left alone", partOfLabel, partOfValue)
		return out, 0, nil
	}
	storage := ""
	for _, v := range crd.Spec.Versions {
		if v.Storage {
			storage = v.Name
		}
	}
	switch {
	case storage == "":
		return fail(fmt.Errorf("CRD %s has no storage version", name))
	case len(stored) == 1 && stored[0] == storage:
		out.State, out.Message = v1alpha1.MigrationDone, "every object is stored in "+storage
		// Keep what the migration did: this process's report, or the one on the status (from before
		// a restart).
		if m, ok := r.migrated[name]; ok && slices.Equal(m.StoredVersions, stored) {
			return m, 0, nil
		}
		if prev.State == v1alpha1.MigrationDone && slices.Equal(prev.StoredVersions, stored) && prev.Message != "" {
			out.Message = prev.Message
		}
		return out, 0, nil
	case !slices.Contains(stored, storage):
		// The apiserver adds the storage version when the CRD changes: not done yet.
		return fail(fmt.Errorf("storage version %s of CRD %s is not in its status.storedVersions %v yet", storage, name, stored))
	case !established(crd):
		return fail(fmt.Errorf("CRD %s is not established", name))
	}

	// Every apiserver must write the new storage version before objects are rewritten.
	if r.seen == nil {
		r.seen = map[string]generationSeen{}
	}
	s, ok := r.seen[name]
	if !ok || s.generation != crd.Generation {
		s = generationSeen{generation: crd.Generation, at: time.Now()}
		r.seen[name] = s
	}
	if wait := r.settle() - time.Since(s.at); wait > 0 {
		out.State = v1alpha1.MigrationMigrating
		out.Message = fmt.Sprintf("waiting for the apiservers to store %s (CRD generation %d) before rewriting objects stored in %s",
			storage, crd.Generation, strings.Join(without(stored, storage), ", "))
		return out, wait, nil
	}

	out.State = v1alpha1.MigrationMigrating
	out.Message = fmt.Sprintf("rewriting every object into %s (stored in %s)", storage, strings.Join(stored, ", "))
	progress(out)
	n, err := r.rewriteAll(ctx, crd, storage)
	if err != nil {
		return fail(fmt.Errorf("%d object(s) rewritten into %s, then: %w", n, storage, err))
	}
	// Optimistic concurrency: if the CRD changed since it was read (a new storage version, served
	// versions), the update conflicts and the migration starts over.
	crd.Status.StoredVersions = []string{storage}
	if err := r.Client.Status().Update(ctx, crd); err != nil {
		return fail(fmt.Errorf("%d object(s) rewritten into %s; set status.storedVersions of CRD %s: %w", n, storage, name, err))
	}
	out.StoredVersions = []string{storage}
	out.State = v1alpha1.MigrationDone
	out.Message = fmt.Sprintf("every object is stored in %s: %d object(s) rewritten, %s removed from status.storedVersions",
		storage, n, strings.Join(without(stored, storage), ", "))
	if r.migrated == nil {
		r.migrated = map[string]v1alpha1.StorageMigration{}
	}
	r.migrated[name] = out
	ctrl.LoggerFrom(ctx).Info("storage version migration done", "crd", name, "storageVersion", storage, "rewritten", n, "storedVersionsWere", stored)
	return out, 0, nil
}

func established(crd *apiextv1.CustomResourceDefinition) bool {
	for _, c := range crd.Status.Conditions {
		if c.Type == apiextv1.Established {
			return c.Status == apiextv1.ConditionTrue
		}
	}
	return false
}

func without(list []string, v string) []string {
	return slices.DeleteFunc(slices.Clone(list), func(s string) bool { return s == v })
}

// rewriteAll writes every object of the CRD back unchanged in the storage version, page by page.
// It goes through all of them and fails if any could not be written.
func (r *StorageMigrationReconciler) rewriteAll(ctx context.Context, crd *apiextv1.CustomResourceDefinition, storage string) (int, error) {
	gvk := schema.GroupVersionKind{Group: crd.Spec.Group, Version: storage, Kind: crd.Spec.Names.Kind}
	listKind := crd.Spec.Names.ListKind
	if listKind == "" {
		listKind = gvk.Kind + "List"
	}
	rewritten, failed := 0, 0
	var errs []error
	cont := ""
	for {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(listKind))
		if err := r.reader().List(ctx, list, client.Limit(migrationPageSize), client.Continue(cont)); err != nil {
			// An expired continue token too: the next attempt starts over.
			return rewritten, fmt.Errorf("list %s: %w", gvk.Kind, err)
		}
		for i := range list.Items {
			if err := r.rewrite(ctx, &list.Items[i]); err != nil {
				failed++
				if len(errs) < maxReportedFailures {
					errs = append(errs, err)
				}
				continue
			}
			rewritten++
		}
		if cont = list.GetContinue(); cont == "" {
			break
		}
	}
	if failed > 0 {
		return rewritten, fmt.Errorf("%d %s object(s) could not be rewritten: %w", failed, gvk.Kind, errors.Join(errs...))
	}
	return rewritten, nil
}

// rewrite writes one object back as it was read: the apiserver stores it again, encoded in the
// storage version. A conflict (written since it was listed) reads it again and retries; an object
// deleted meanwhile needs nothing.
func (r *StorageMigrationReconciler) rewrite(ctx context.Context, obj *unstructured.Unstructured) error {
	key := client.ObjectKeyFromObject(obj)
	gvk := obj.GroupVersionKind()
	retriable := func(err error) bool {
		return apierrors.IsConflict(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err)
	}
	err := retry.OnError(retry.DefaultRetry, retriable, func() error {
		err := r.Client.Update(ctx, obj)
		if apierrors.IsConflict(err) {
			fresh := &unstructured.Unstructured{}
			fresh.SetGroupVersionKind(gvk)
			if gerr := r.reader().Get(ctx, key, fresh); gerr != nil {
				return gerr
			}
			obj = fresh
		}
		return err
	})
	if err == nil || apierrors.IsNotFound(err) {
		return nil
	}
	return fmt.Errorf("rewrite %s %s: %w", gvk.Kind, key, err)
}

// report writes status.storageMigration of the config, and only that field (a JSON merge patch of
// the status subresource), when it changed. Without a config there is nothing to report on: its
// creation brings the reconciler back.
func (r *StorageMigrationReconciler) report(ctx context.Context, entries []v1alpha1.StorageMigration) error {
	return patchConfigStatusField(ctx, r.Client, "storageMigration", storageMigrationOf, entries)
}

func storageMigrationOf(s *v1alpha1.SMI2IstioConfigStatus) any { return s.StorageMigration }
