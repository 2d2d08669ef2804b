package cache

import (
	"context"
	"fmt"

	toolscache "k8s.io/client-go/tools/cache"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The field indexes: client-go indexers registered on the cache's informers (AddIndexers) under
// names of the operator's own, and read through the informer's indexer (ByIndex). Lookups return
// the cache's own objects, as a List with UnsafeDisableDeepCopy does: never modify them.

// NamespacedIndex finds the objects of one namespace whose values hold a value.
type NamespacedIndex[T client.Object] struct{ index[T] }

// ClusterIndex finds the objects of any namespace whose values hold a value.
type ClusterIndex[T client.Object] struct{ index[T] }

// NewNamespacedIndex indexes the cached objects of obj's kind by values(object) within their
// namespace: each value is kept once, as "<namespace>/<value>". controller-runtime's IndexField
// keeps each value twice, as "<namespace>/<value>" and as "__all_namespaces/<value>", with a set of
// object keys under each: at 10,000 SMI objects the second copies alone are some 5 MiB that the
// fan-ins, which look up references within the referring object's namespace, never read.
func NewNamespacedIndex[T client.Object](ctx context.Context, c crcache.Informers, obj T, name string, values func(T) []string) (*NamespacedIndex[T], error) {
	ix, err := newIndex(ctx, c, obj, name, func(o T) []string {
		out := values(o)
		for i, v := range out {
			out[i] = o.GetNamespace() + "/" + v
		}
		return out
	})
	if err != nil {
		return nil, err
	}
	return &NamespacedIndex[T]{ix}, nil
}

// Lookup lists the objects of namespace ns whose values hold value.
func (ix *NamespacedIndex[T]) Lookup(ctx context.Context, ns, value string) ([]T, error) {
	return ix.byKey(ctx, ns+"/"+value)
}

// NewClusterIndex indexes the cached objects of obj's kind by values(object) across namespaces:
// each value is kept once, as is.
func NewClusterIndex[T client.Object](ctx context.Context, c crcache.Informers, obj T, name string, values func(T) []string) (*ClusterIndex[T], error) {
	ix, err := newIndex(ctx, c, obj, name, values)
	if err != nil {
		return nil, err
	}
	return &ClusterIndex[T]{ix}, nil
}

// Lookup lists the objects of every namespace whose values hold value.
func (ix *ClusterIndex[T]) Lookup(ctx context.Context, value string) ([]T, error) {
	return ix.byKey(ctx, value)
}

// indexInformer is the part of client-go's SharedIndexInformer (what the cache's informers are)
// an index reads.
type indexInformer interface {
	HasSynced() bool
	GetIndexer() toolscache.Indexer
}

type index[T client.Object] struct {
	name     string
	informer indexInformer
}

func newIndex[T client.Object](ctx context.Context, c crcache.Informers, obj T, name string, keys func(T) []string) (index[T], error) {
	informer, err := c.GetInformer(ctx, obj, crcache.BlockUntilSynced(false))
	if err != nil {
		return index[T]{}, fmt.Errorf("index %s: %w", name, err)
	}
	ii, ok := informer.(indexInformer)
	if !ok {
		return index[T]{}, fmt.Errorf("index %s: the cache's informer for %T (a %T) has no indexer", name, obj, informer)
	}
	if err := informer.AddIndexers(toolscache.Indexers{name: func(raw any) ([]string, error) {
		o, ok := raw.(T)
		if !ok {
			return nil, fmt.Errorf("index %s: %T is not a %T", name, raw, obj)
		}
		return keys(o), nil
	}}); err != nil {
		return index[T]{}, fmt.Errorf("index %s: %w", name, err)
	}
	return index[T]{name: name, informer: ii}, nil
}

// byKey lists the objects under one key of the index, once the informer has listed its kind (as
// the cache's List waits).
func (ix index[T]) byKey(ctx context.Context, key string) ([]T, error) {
	if !ix.informer.HasSynced() && !toolscache.WaitForCacheSync(ctx.Done(), ix.informer.HasSynced) {
		return nil, fmt.Errorf("index %s: informer not synced: %w", ix.name, context.Cause(ctx))
	}
	items, err := ix.informer.GetIndexer().ByIndex(ix.name, key)
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", ix.name, err)
	}
	out := make([]T, 0, len(items))
	for _, item := range items {
		o, ok := item.(T)
		if !ok {
			return nil, fmt.Errorf("index %s: the cache holds a %T", ix.name, item)
		}
		out = append(out, o)
	}
	return out, nil
}
