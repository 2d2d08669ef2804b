package meshconfig_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/smi2istio/smi2istio/api/v1alpha1"
	"github.com/smi2istio/smi2istio/controllers"
	"github.com/smi2istio/smi2istio/internal/cache"
	"github.com/smi2istio/smi2istio/internal/testing/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, &env, testenv.Options{})) }

// countingClient counts the reconciles of the ConfigReconciler (each starts by getting the config).
type countingClient struct {
	client.Client
	reconciles *atomic.Int64
}

func (c countingClient) Get(ctx context.Context, key client.ObjectKey, o client.Object, opts ...client.GetOption) error {
	if _, ok := o.(*v1alpha1.SMI2IstioConfig); ok {
		c.reconciles.Add(1)
	}
	return c.Client.Get(ctx, key, o, opts...)
}

func create(t *testing.T, o client.Object) {
	t.Helper()
	if err := env.Client.Create(context.Background(), o); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// The ConfigReconciler (alone here, never recounting) re-resolves on the events of the mesh
// configs in effect, revisioned ones included, and on no other ConfigMap's.
func TestConfigReconcilerWatchesMeshConfigs(t *testing.T) {
	if err := errors.Join(v1alpha1.AddToScheme(env.Scheme), cache.AddToScheme(env.Scheme)); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*corev1.Namespace{ns("istio-system", nil), ns("tenant", nil), ns("app", map[string]string{"istio.io/rev": "canary"})} {
		create(t, n)
	}
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:  env.Scheme,
		Client:  client.Options{Cache: &client.CacheOptions{Unstructured: true}},
		Metrics: metricsserver.Options{BindAddress: "0"},
		Cache:   cache.Options(),
	})
	if err != nil {
		t.Fatal(err)
	}
	var reconciles atomic.Int64
	shared := controllers.NewShared("")
	r := &controllers.ConfigReconciler{Client: countingClient{mgr.GetClient(), &reconciles}, Shared: shared, Recount: time.Hour}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })

	waitTrustDomain := func(want string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			st, ok := shared.Current()
			if ok && st.Mesh.TrustDomain == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("trust domain %q (resolved: %v), want %q", st.Mesh.TrustDomain, ok, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// settle waits until no reconcile happened for a while and returns the count.
	settle := func(quiet time.Duration) int64 {
		last, since := reconciles.Load(), time.Now()
		for time.Since(since) < quiet {
			time.Sleep(100 * time.Millisecond)
			if n := reconciles.Load(); n != last {
				last, since = n, time.Now()
			}
		}
		return last
	}
	waitTrustDomain("cluster.local")
	// The first events of the config itself may come seconds after the namespaces' (its informer's
	// watch starts later).
	before := settle(5 * time.Second)

	// Not mesh configs: the sidecar injector's (labelled), a leader election ConfigMap, a tenant's
	// look-alike.
	create(t, cm("istio-system", "istio-sidecar-injector-canary", "canary", "trustDomain: x\n"))
	create(t, cm("istio-system", "istio-leader", "", ""))
	create(t, cm("tenant", "istio-canary", "canary", "trustDomain: evil.example\n"))
	create(t, cm("tenant", "istio", "", "trustDomain: evil.example\n"))
	if n := settle(3 * time.Second); n != before {
		t.Errorf("%d reconciles on events of ConfigMaps that are no mesh config", n-before)
	}

	// The revision's mesh config: created, changed, then the default revision's appears.
	canary := cm("istio-system", "istio-canary", "canary", "trustDomain: canary.example\n")
	create(t, canary)
	waitTrustDomain("canary.example")
	canary.Data["mesh"] = "trustDomain: canary2.example\n"
	if err := env.Client.Update(context.Background(), canary); err != nil {
		t.Fatal(err)
	}
	waitTrustDomain("canary2.example")
	create(t, cm("istio-system", "istio", "", "trustDomain: default.example\n"))
	waitTrustDomain("default.example")
	if st, _ := shared.Current(); st.MeshConflict == "" {
		t.Error("two trust domains in effect and no conflict reported")
	}
	if err := env.Client.Delete(context.Background(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "istio"}}); err != nil {
		t.Fatal(err)
	}
	waitTrustDomain("canary2.example")
	if st, _ := shared.Current(); st.MeshConflict != "" || fmt.Sprint(st.MeshConfigs) != "[istio-system/istio-canary]" {
		t.Errorf("conflict %q, configs %v", st.MeshConflict, st.MeshConfigs)
	}
}
