package controllers

import (
	"context"
	"fmt"
	"reflect"
	"time"
	"unique"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/internal/cached"
)

// CacheOptions is the manager cache the reconcilers are built for: no managedFields anywhere,
// Services trimmed to what translation reads, and of ConfigMaps only Istio's mesh config. SMI and
// Istio objects are read through the compact types of internal/cached (AddToScheme registers
// them): Istio objects as metadata, hosts and a hash of the spec, SMI objects with their spec as
// JSON. Pods and pod templates are not in it: the access reconciler has its own compact index of
// them (internal/workloads).
func CacheOptions() cache.Options {
	// No ByObject entries for Istio's kinds: those need Istio's CRDs to be served when the manager
	// is made, and the operator may start before Istio.
	byObject := map[client.Object]cache.ByObject{
		// Only Istio's mesh config is read: never cache other ConfigMaps.
		&corev1.ConfigMap{}: {Field: fields.OneTermEqualSelector("metadata.name", "istio")},
	}
	for _, t := range kindTransforms {
		byObject[t.obj] = cache.ByObject{Transform: t.transform}
	}
	return cache.Options{DefaultTransform: StripTransform, NewInformer: pagedInformer, ByObject: byObject}
}

// kindTransforms are the kinds cached with a transform of their own instead of StripTransform: the
// one table CacheOptions and pagedInformer both read.
var kindTransforms = []struct {
	obj       client.Object
	transform toolscache.TransformFunc
}{
	{&corev1.Service{}, ServiceTransform},
}

// transformFor is the transform the cache applies to objects of obj's type.
func transformFor(obj runtime.Object) toolscache.TransformFunc {
	for _, t := range kindTransforms {
		if reflect.TypeOf(t.obj) == reflect.TypeOf(obj) {
			return t.transform
		}
	}
	return StripTransform
}

// listPageSize is how many objects an informer's initial list asks for at a time.
const listPageSize = 500

// pagedInformer is client-go's shared informer whose initial list comes page by page, each page
// reduced by the cache's transform before the next is fetched. The reflector asks for its first
// list at resourceVersion 0, which the apiserver's watch cache answers with every object in one
// response, whatever the limit: at 15,000 objects of a kind, the response and its decoded objects
// — managed fields included — would all be in memory at once before the transform ran. Asked for
// the current state instead (resourceVersion ""), the apiserver honours the limit; the reflector
// follows the continue tokens and starts its watch at the list's resourceVersion, as always.
func pagedInformer(lw toolscache.ListerWatcher, obj runtime.Object, resync time.Duration, indexers toolscache.Indexers) toolscache.SharedIndexInformer {
	return toolscache.NewSharedIndexInformer(&pagedLister{lw: toolscache.ToListerWatcherWithContext(lw), transform: transformFor(obj)}, obj, resync, indexers)
}

type pagedLister struct {
	lw        toolscache.ListerWatcherWithContext
	transform toolscache.TransformFunc
}

func (p *pagedLister) List(opts metav1.ListOptions) (runtime.Object, error) {
	return p.ListWithContext(context.Background(), opts)
}

func (p *pagedLister) Watch(opts metav1.ListOptions) (watch.Interface, error) {
	return p.WatchWithContext(context.Background(), opts)
}

func (p *pagedLister) WatchWithContext(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	return p.lw.WatchWithContext(ctx, opts)
}

func (p *pagedLister) ListWithContext(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
	if opts.ResourceVersion == "0" && opts.Continue == "" {
		opts.ResourceVersion = ""
		if opts.Limit == 0 {
			opts.Limit = listPageSize
		}
	}
	list, err := p.lw.ListWithContext(ctx, opts)
	if err != nil {
		return nil, err
	}
	// Only the reduced objects are kept while the next page is fetched; the informer runs the
	// transform again on each (it is idempotent).
	var items []runtime.Object
	if err := meta.EachListItem(list, func(item runtime.Object) error {
		out, err := p.transform(item)
		if err != nil {
			return err
		}
		o, ok := out.(runtime.Object)
		if !ok {
			return fmt.Errorf("transform of a %T returned a %T", item, out)
		}
		items = append(items, o)
		return nil
	}); err != nil {
		return nil, err
	}
	if err := meta.SetList(list, items); err != nil {
		return nil, err
	}
	return list, nil
}

// AddToScheme registers the Go types the reconcilers read from the cache with: the compact types
// of the SMI and Istio kinds (objects are written as unstructured, never in these types).
func AddToScheme(s *runtime.Scheme) error { return cached.AddToScheme(s) }

// lastApplied is where client-side `kubectl apply` (how the OSM guides apply SMI manifests) keeps a
// full copy of the object.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// StripTransform drops what no reconciler reads from every cached object: managed fields and
// kubectl's last-applied copy (which doubles an object's size in memory). It also interns strings:
// every decoded object has its own copy of each key ("metadata", "apiVersion", "type", ...) and of
// the values objects share (kinds, labels, condition types and reasons) — all of an unstructured
// object, the labels, owner references and condition types and reasons of a compact one
// (internal/cached: SMI and Istio objects).
func StripTransform(obj any) (any, error) {
	switch o := obj.(type) {
	case *unstructured.Unstructured:
		intern(o.Object)
	case cached.Compact:
		// Decoding a typed object leaves its TypeMeta empty: normalize and writeStatus read the kind.
		o.GetObjectKind().SetGroupVersionKind(o.DefaultGVK())
		internMeta(o)
		if s, ok := o.(cached.SMIObject); ok {
			conds := s.GetStatus().Conditions
			for i := range conds {
				conds[i].Type = unique.Make(conds[i].Type).Value()
				conds[i].Reason = unique.Make(conds[i].Reason).Value()
				conds[i].Status = metav1.ConditionStatus(unique.Make(string(conds[i].Status)).Value())
			}
		}
	}
	obj, err := cache.TransformStripManagedFields()(obj)
	if err != nil {
		return obj, err
	}
	if m, ok := obj.(metav1.Object); ok {
		if a := m.GetAnnotations(); a[lastApplied] != "" {
			kept := make(map[string]string, len(a)-1)
			for k, v := range a {
				if k != lastApplied {
					kept[k] = v
				}
			}
			m.SetAnnotations(kept)
		}
	}
	return obj, nil
}

// internMax is the longest string value interned: longer ones are seldom shared.
const internMax = 64

// intern replaces, in place, the keys and short string values of decoded JSON by canonical copies.
func intern(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, val := range v {
			// Assigning to an existing key stores the new (canonical) key string too.
			v[unique.Make(k).Value()] = intern(val)
		}
	case []any:
		for i := range v {
			v[i] = intern(v[i])
		}
	case string:
		if len(v) <= internMax {
			return unique.Make(v).Value()
		}
	}
	return v
}

// internMeta interns the labels and owner references of a typed object.
func internMeta(o metav1.Object) {
	if l := o.GetLabels(); l != nil {
		kept := make(map[string]string, len(l))
		for k, v := range l {
			kept[unique.Make(k).Value()] = unique.Make(v).Value()
		}
		o.SetLabels(kept)
	}
	refs := o.GetOwnerReferences()
	for i := range refs {
		refs[i].APIVersion = unique.Make(refs[i].APIVersion).Value()
		refs[i].Kind = unique.Make(refs[i].Kind).Value()
	}
}

// ServiceTransform keeps of a Service what translation reads: its identity, ports and selector.
func ServiceTransform(obj any) (any, error) {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return obj, nil
	}
	return &corev1.Service{
		TypeMeta: svc.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: svc.Name, Namespace: svc.Namespace, UID: svc.UID, ResourceVersion: svc.ResourceVersion,
			Generation: svc.Generation, Labels: svc.Labels, DeletionTimestamp: svc.DeletionTimestamp},
		Spec: corev1.ServiceSpec{Ports: svc.Spec.Ports, Selector: svc.Spec.Selector},
	}, nil
}
