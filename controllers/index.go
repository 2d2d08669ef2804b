package controllers

import (
	"context"
	"fmt"

	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// indexInNamespace is the manager's IndexField for lookups within one namespace: List with
// InNamespace and MatchingFields{field: value} finds the objects of that namespace whose extract
// holds value; a List across all namespaces finds nothing. controller-runtime's IndexField keeps
// each value twice, as "<namespace>/<value>" and as "__all_namespaces/<value>", with a set of
// object keys under each: at 10,000 SMI objects the second copies alone are some 5 MiB that the
// fan-ins, which look up references within the referring object's namespace, never read. The
// index has the name and the value format controller-runtime's cache reader looks for.
func indexInNamespace(ctx context.Context, c cache.Cache, obj client.Object, field string, extract client.IndexerFunc) error {
	informer, err := c.GetInformer(ctx, obj, cache.BlockUntilSynced(false))
	if err != nil {
		return err
	}
	return informer.AddIndexers(toolscache.Indexers{"field:" + field: func(raw any) ([]string, error) {
		o, ok := raw.(client.Object)
		if !ok {
			return nil, fmt.Errorf("index %s: %T is not an object", field, raw)
		}
		values := extract(o)
		for i, v := range values {
			values[i] = o.GetNamespace() + "/" + v
		}
		return values, nil
	}})
}
