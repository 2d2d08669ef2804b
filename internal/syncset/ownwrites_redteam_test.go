package syncset

import (
	"context"
	"reflect"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/smi2istio/smi2istio/internal/cache"
)

// Red team (helper-38, against an earlier design that skipped the informer event of a set's own
// write): R1 of destination api applies an ALLOW policy (recorded as api's). Before the policy
// reaches the cache, R2 of the same destination runs and wants nothing (its TrafficTarget moved,
// became invalid, lost its route group); Diff prunes only what the cache shows, so the policy stays
// until its event brings api back. Whatever uses the records must not take that policy for what
// api's latest sync wanted: a set's records are its latest sync's only.
func TestRedTeamRecordOfAnObjectTheWritersLaterSyncDidNotSee(t *testing.T) {
	ctx := context.Background()
	ns := "ownwrites-stale"
	c := cacheClient(t, ns)
	writes := NewOwnWrites(OwnWritesSize)
	const writer = "access/ownwrites-stale/api"
	set := func(objs ...*unstructured.Unstructured) *Set {
		for _, o := range objs {
			o.SetNamespace(ns)
		}
		s := newSet(Remove, objs...)
		s.Namespace, s.Writer = ns, writer
		return s
	}
	// R1: the TrafficTarget allows web -> api.
	r1 := &Syncer{Client: c, FieldManager: "smi2istio", Writes: writes}
	spec := `{"action":"ALLOW","rules":[{"from":[{"source":{"principals":["cluster.local/ns/shop/sa/web"]}}]}]}`
	if _, err := r1.Sync(ctx, set(desired(apGVK, "t1-api", spec))); err != nil {
		t.Fatal(err)
	}
	// R2: the TrafficTarget no longer applies to api; the cache has not seen R1's policy yet.
	apList := reflect.TypeOf(cache.NewList(apGVK))
	lagging := interceptor.NewClient(c, interceptor.Funcs{List: func(ctx context.Context, cl client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
		if reflect.TypeOf(list) == apList {
			return nil // the informer of AuthorizationPolicies is behind: none yet
		}
		return cl.List(ctx, list, opts...)
	}})
	r2 := &Syncer{Client: lagging, FieldManager: "smi2istio", Writes: writes}
	res, err := r2.Sync(ctx, set())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("R2 (lagging cache): applied %v, pruned %v", res.Applied, res.Pruned)

	stored := &unstructured.Unstructured{}
	stored.SetGroupVersionKind(apGVK)
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "t1-api"}, stored); err != nil {
		t.Fatalf("R2 pruned the policy after all (%v): no hole", err)
	}
	if writes.wrote(writer, stored.GetUID(), stored.GetResourceVersion()) {
		t.Errorf("AuthorizationPolicy %s/t1-api (rv %s) still allows web -> api after %s's latest sync wanted nothing, "+
			"and is still recorded as what %s's latest sync wanted",
			ns, stored.GetResourceVersion(), writer, writer)
	}
	// The reconcile that the event used to bring (cache caught up) prunes it: only that was missing.
	if res, err := r1.Sync(ctx, set()); err != nil || len(res.Pruned) != 1 {
		t.Fatalf("R3 with the cache caught up: pruned %v, %v; want the policy pruned", res.Pruned, err)
	}
}
