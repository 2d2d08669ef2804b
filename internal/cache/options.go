package cache

import (
	"context"
	"fmt"
	"reflect"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Options are the manager cache's options, the cache the reconcilers are built for: no managedFields
// anywhere, Services trimmed to what translation reads, and of ConfigMaps only Istio's mesh config.
// SMI and Istio objects are read through the compact types (AddToScheme registers them): Istio
// objects as metadata, hosts and a hash of the spec, SMI objects with their spec as JSON. Pods and
// pod templates are not in it: the access reconciler has its own compact index of them
// (WorkloadIndex).
func Options() crcache.Options {
	// No ByObject entries for Istio's kinds: those need Istio's CRDs to be served when the manager
	// is made, and the operator may start before Istio.
	byObject := map[client.Object]crcache.ByObject{
		// Only the default revision's mesh config ("istio", in any namespace): the ClusterRole may
		// read no other ConfigMap (resourceNames; the apiserver authorizes a list or watch with this
		// field selector as a request for that name). Revisions' mesh configs come from the config
		// reconciler's own cache of --mesh-config-namespaces.
		&corev1.ConfigMap{}: {Field: fields.OneTermEqualSelector("metadata.name", "istio")},
	}
	for _, t := range kindTransforms {
		byObject[t.obj] = crcache.ByObject{Transform: t.transform}
	}
	return crcache.Options{DefaultTransform: StripTransform, NewInformer: pagedInformer, ByObject: byObject}
}

// kindTransforms are the kinds cached with a transform of their own instead of StripTransform: the
// one table Options and pagedInformer both read.
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
