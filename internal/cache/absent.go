package cache

import (
	"context"
	"fmt"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// WithoutKinds is a NewCacheFunc whose cache holds no object of the absent kinds, which the
// apiserver does not serve (an SMI kind without a CRD, when the user keeps another installer's SMI
// CRDs): Get finds nothing (NotFound), List is empty, and their informers (watches, indexes) never
// see an object. A reference to such an object resolves to nothing, as one to a missing object
// does. A controller can watch the kind as if it were served. Other kinds go to crcache.New.
func WithoutKinds(absent []schema.GroupVersionKind) crcache.NewCacheFunc {
	return func(cfg *rest.Config, opts crcache.Options) (crcache.Cache, error) {
		inner, err := crcache.New(cfg, opts)
		if err != nil || len(absent) == 0 {
			return inner, err
		}
		c := &absentCache{Cache: inner, scheme: opts.Scheme, kinds: map[schema.GroupVersionKind]bool{},
			informers: map[schema.GroupVersionKind]toolscache.SharedIndexInformer{}}
		for _, gvk := range absent {
			c.kinds[gvk] = true
		}
		return c, nil
	}
}

type absentCache struct {
	crcache.Cache
	scheme *runtime.Scheme
	kinds  map[schema.GroupVersionKind]bool // the absent kinds (read-only)

	mu        sync.Mutex
	started   context.Context //nolint:containedctx // the cache's run context, for informers made after Start
	informers map[schema.GroupVersionKind]toolscache.SharedIndexInformer
}

// absent reports whether obj is of an absent kind.
func (c *absentCache) absent(obj runtime.Object) (schema.GroupVersionKind, bool) {
	gvk, err := apiutil.GVKForObject(obj, c.scheme)
	if err != nil {
		return gvk, false
	}
	if _, isList := obj.(client.ObjectList); isList {
		gvk.Kind = gvk.Kind[:len(gvk.Kind)-len("List")]
	}
	return gvk, c.kinds[gvk]
}

func (c *absentCache) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if gvk, ok := c.absent(obj); ok {
		return apierrors.NewNotFound(schema.GroupResource{Group: gvk.Group, Resource: gvk.Kind}, key.Name)
	}
	return c.Cache.Get(ctx, key, obj, opts...)
}

func (c *absentCache) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if _, ok := c.absent(list); ok {
		return meta.SetList(list, nil)
	}
	return c.Cache.List(ctx, list, opts...)
}

func (c *absentCache) GetInformer(ctx context.Context, obj client.Object, opts ...crcache.InformerGetOption) (crcache.Informer, error) {
	if gvk, ok := c.absent(obj); ok {
		return c.informer(gvk)
	}
	return c.Cache.GetInformer(ctx, obj, opts...)
}

func (c *absentCache) GetInformerForKind(ctx context.Context, gvk schema.GroupVersionKind, opts ...crcache.InformerGetOption) (crcache.Informer, error) {
	if c.kinds[gvk] {
		return c.informer(gvk)
	}
	return c.Cache.GetInformerForKind(ctx, gvk, opts...)
}

func (c *absentCache) RemoveInformer(ctx context.Context, obj client.Object) error {
	if _, ok := c.absent(obj); ok {
		return nil
	}
	return c.Cache.RemoveInformer(ctx, obj)
}

func (c *absentCache) IndexField(ctx context.Context, obj client.Object, field string, extract client.IndexerFunc) error {
	if _, ok := c.absent(obj); ok {
		return nil
	}
	return c.Cache.IndexField(ctx, obj, field, extract)
}

// informer is the kind's informer of nothing: client-go's, on a list that is always empty and a
// watch that never sends.
func (c *absentCache) informer(gvk schema.GroupVersionKind) (toolscache.SharedIndexInformer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if inf, ok := c.informers[gvk]; ok {
		return inf, nil
	}
	obj, err := c.scheme.New(gvk)
	if err != nil {
		return nil, fmt.Errorf("absent kind %s: %w", gvk, err)
	}
	listGVK := gvk.GroupVersion().WithKind(gvk.Kind + "List")
	lw := emptyListWatch{&toolscache.ListWatch{
		ListWithContextFunc: func(context.Context, metav1.ListOptions) (runtime.Object, error) {
			list, err := c.scheme.New(listGVK)
			if err != nil {
				return nil, fmt.Errorf("absent kind %s: %w", gvk, err)
			}
			return list, nil
		},
		WatchFuncWithContext: func(context.Context, metav1.ListOptions) (watch.Interface, error) {
			return watch.NewFake(), nil
		},
	}}
	inf := toolscache.NewSharedIndexInformer(lw, obj, 0, toolscache.Indexers{})
	c.informers[gvk] = inf
	if c.started != nil {
		go inf.RunWithContext(c.started)
	}
	return inf, nil
}

func (c *absentCache) Start(ctx context.Context) error {
	c.mu.Lock()
	c.started = ctx
	for _, inf := range c.informers {
		go inf.RunWithContext(ctx)
	}
	c.mu.Unlock()
	return c.Cache.Start(ctx)
}

func (c *absentCache) WaitForCacheSync(ctx context.Context) bool {
	c.mu.Lock()
	var synced []toolscache.InformerSynced
	for _, inf := range c.informers {
		synced = append(synced, inf.HasSynced)
	}
	c.mu.Unlock()
	return toolscache.WaitForCacheSync(ctx.Done(), synced...) && c.Cache.WaitForCacheSync(ctx)
}

// emptyListWatch lists and watches nothing, without the watch-list protocol (its watch sends no
// bookmark).
type emptyListWatch struct{ *toolscache.ListWatch }

func (emptyListWatch) IsWatchListSemanticsUnSupported() bool { return true }
