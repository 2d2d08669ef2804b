package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/smi2istio/smi2istio/api/v1alpha1"
	"github.com/smi2istio/smi2istio/controllers"
	"github.com/smi2istio/smi2istio/internal/cache"
	"github.com/smi2istio/smi2istio/internal/recorder"
	"github.com/smi2istio/smi2istio/internal/smi/crds"
	"github.com/smi2istio/smi2istio/internal/testing/istiocheck"
	"github.com/smi2istio/smi2istio/internal/testing/testenv"
	"github.com/smi2istio/smi2istio/translate"
)

var (
	env *testenv.Env
	// apiserver writes (objects, status, events) made by each reconciler
	splitWrites, accessWrites, baselineWrites atomic.Int64
	splitR                                    *controllers.TrafficSplitReconciler
	accessR                                   *controllers.AccessReconciler
	baselineR                                 *controllers.BaselineReconciler
)

// countingClient counts every write the reconciler makes through it.
type countingClient struct {
	client.Client
	writes *atomic.Int64
}

func (c countingClient) Create(ctx context.Context, o client.Object, opts ...client.CreateOption) error {
	c.writes.Add(1)
	return c.Client.Create(ctx, o, opts...)
}

func (c countingClient) Update(ctx context.Context, o client.Object, opts ...client.UpdateOption) error {
	c.writes.Add(1)
	return c.Client.Update(ctx, o, opts...)
}

func (c countingClient) Patch(ctx context.Context, o client.Object, p client.Patch, opts ...client.PatchOption) error {
	c.writes.Add(1)
	return c.Client.Patch(ctx, o, p, opts...)
}

func (c countingClient) Delete(ctx context.Context, o client.Object, opts ...client.DeleteOption) error {
	c.writes.Add(1)
	return c.Client.Delete(ctx, o, opts...)
}

func (c countingClient) DeleteAllOf(ctx context.Context, o client.Object, opts ...client.DeleteAllOfOption) error {
	c.writes.Add(1)
	return c.Client.DeleteAllOf(ctx, o, opts...)
}

func (c countingClient) Status() client.SubResourceWriter {
	return countingStatus{c.Client.Status(), c.writes}
}

type countingStatus struct {
	client.SubResourceWriter
	writes *atomic.Int64
}

func (s countingStatus) Update(ctx context.Context, o client.Object, opts ...client.SubResourceUpdateOption) error {
	s.writes.Add(1)
	return s.SubResourceWriter.Update(ctx, o, opts...)
}

func (s countingStatus) Patch(ctx context.Context, o client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
	s.writes.Add(1)
	return s.SubResourceWriter.Patch(ctx, o, p, opts...)
}

type countingRecorder struct {
	events.EventRecorder
	writes *atomic.Int64
}

func (r countingRecorder) Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	r.writes.Add(1)
	r.EventRecorder.Eventf(regarding, related, eventtype, reason, action, note, args...)
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := testr.New(&testing.T{})
	var err error
	env, err = testenv.Start(ctx, log, testenv.Options{IstioCRDs: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start test environment:", err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	ctrl.SetLogger(log)
	// OSSM's ServiceMeshMemberRoll CRD is installed (as on an OSSM cluster) but no roll exists until
	// a test creates one: until then membership comes from namespace labels.
	smmr, err := crds.LoadFile(filepath.Join(testenv.RepoRoot(), "internal", "membership", "testdata", "maistra.io_servicemeshmemberrolls.yaml"))
	if err == nil {
		err = crds.Install(ctx, env.Client, smmr)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "install the ServiceMeshMemberRoll CRD:", err)
		return 1
	}
	// The Gateway API's CRDs (as Istio's ambient installs require them): TrafficSplits of ambient
	// namespaces, and of every namespace with routeAPI GatewayAPI, become HTTPRoutes and TCPRoutes.
	gatewayCRDs, err := istiocheck.GatewayAPICRDs()
	if err == nil {
		var list []*apiextv1.CustomResourceDefinition
		if list, err = crds.LoadFile(gatewayCRDs); err == nil {
			err = crds.Install(ctx, env.Client, list)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "install the Gateway API CRDs:", err)
		return 1
	}
	if err := errors.Join(v1alpha1.AddToScheme(env.Scheme), cache.AddToScheme(env.Scheme)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:  env.Scheme,
		Client:  client.Options{Cache: &client.CacheOptions{Unstructured: true}},
		Metrics: metricsserver.Options{BindAddress: "0"},
		Cache:   cache.Options(),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "create manager:", err)
		return 1
	}
	rec := recorder.New(kubernetes.NewForConfigOrDie(env.Config).EventsV1(), env.Scheme, "smi2istio", 4096, log)
	if err := mgr.Add(rec); err != nil {
		fmt.Fprintln(os.Stderr, "add event recorder:", err)
		return 1
	}
	shared := controllers.NewShared("")
	cfgR := &controllers.ConfigReconciler{Client: mgr.GetClient(), Shared: shared, Recount: 2 * time.Second}
	if err := cfgR.SetupWithManager(mgr); err != nil {
		fmt.Fprintln(os.Stderr, "set up config controller:", err)
		return 1
	}
	splitR = &controllers.TrafficSplitReconciler{
		Client:   countingClient{mgr.GetClient(), &splitWrites},
		Recorder: countingRecorder{rec, &splitWrites},
		Mesh:     translate.Mesh{},
		State:    shared.Current,
		Resync:   shared.Resync,
	}
	workloads := cache.NewWorkloadIndex() // shared, as main.go does
	accessR = &controllers.AccessReconciler{
		Client:    countingClient{mgr.GetClient(), &accessWrites},
		Recorder:  countingRecorder{rec, &accessWrites},
		State:     shared.Current,
		Resync:    shared.Resync,
		Workloads: workloads,
	}
	baselineR = &controllers.BaselineReconciler{Client: countingClient{mgr.GetClient(), &baselineWrites}, State: shared.Current, Resync: shared.Resync, Workloads: workloads}
	if err := splitR.SetupWithManager(ctx, mgr); err != nil {
		fmt.Fprintln(os.Stderr, "set up controller:", err)
		return 1
	}
	if err := accessR.SetupWithManager(ctx, mgr); err != nil {
		fmt.Fprintln(os.Stderr, "set up access controller:", err)
		return 1
	}
	for _, gvk := range []schema.GroupVersionKind{controllers.HTTPRouteGroupGVK, controllers.TCPRouteGVK, controllers.UDPRouteGVK} {
		routes := &controllers.RouteReconciler{Client: mgr.GetClient(), Recorder: rec, GVK: gvk, State: shared.Current, Resync: shared.Resync}
		if err := routes.SetupWithManager(mgr); err != nil {
			fmt.Fprintln(os.Stderr, "set up route controller:", err)
			return 1
		}
	}
	if err := baselineR.SetupWithManager(mgr); err != nil {
		fmt.Fprintln(os.Stderr, "set up baseline controller:", err)
		return 1
	}
	mgrDone := make(chan struct{})
	go func() {
		defer close(mgrDone)
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "manager:", err)
		}
	}()
	// Stop the manager before the control plane, or the apiserver waits for its watches to drain.
	defer func() { cancel(); <-mgrDone }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		fmt.Fprintln(os.Stderr, "cache did not sync")
		return 1
	}
	return m.Run()
}

var nsCounter atomic.Int64

// ensureNamespace creates a namespace in the mesh (labelled for injection; membership is by labels
// here: no member roll, no discovery selectors).
func ensureNamespace(t *testing.T, name string) {
	t.Helper()
	err := env.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name,
		Labels: map[string]string{"istio-injection": "enabled"}}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create namespace %s: %v", name, err)
	}
}

func freshNamespace(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("ts%d", nsCounter.Add(1))
	ensureNamespace(t, name)
	return name
}

// apply is `kubectl apply --server-side` of one object as a user would.
func apply(t *testing.T, u *unstructured.Unstructured) {
	t.Helper()
	//nolint:staticcheck // SSA of an unstructured object, as kubectl does.
	if err := env.Client.Patch(context.Background(), u.DeepCopy(), client.Apply, client.FieldOwner("kubectl"),
		client.ForceOwnership, client.FieldValidation("Strict")); err != nil {
		t.Fatalf("apply %s %s/%s: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
}

func applyFile(t *testing.T, path string, namespaceOverride string) []*unstructured.Unstructured {
	t.Helper()
	docs, err := testenv.ReadManifests(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		if namespaceOverride != "" && d.GetKind() != "Namespace" {
			d.SetNamespace(namespaceOverride)
		}
		if ns := d.GetNamespace(); ns != "" {
			ensureNamespace(t, ns)
		}
		if d.GetKind() == "Namespace" {
			ensureNamespace(t, d.GetName())
			continue
		}
		apply(t, d)
	}
	return docs
}

func applyYAML(t *testing.T, ns, manifest string) {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(manifest); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	applyFile(t, f.Name(), ns)
}

// eventually polls cond until it returns nil or the timeout passes. The timeout is generous: the
// garbage collector's first sync alone takes ~30s on a loaded 2-core machine.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}

func get(gvkObj *unstructured.Unstructured, ns, name string) (*unstructured.Unstructured, error) {
	u := gvkObj.DeepCopy()
	err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, u)
	return u, err
}

// settle waits until a reconciler has made no write for a second (background work triggered by
// earlier changes is done), so that a following measurement sees only what it caused.
func settle(t *testing.T, counters ...*atomic.Int64) {
	t.Helper()
	sum := func() int64 {
		n := int64(0)
		for _, c := range counters {
			n += c.Load()
		}
		return n
	}
	deadline := time.Now().Add(30 * time.Second)
	last, since := sum(), time.Now()
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		if n := sum(); n != last {
			last, since = n, time.Now()
			continue
		}
		if time.Since(since) >= time.Second {
			return
		}
	}
	t.Fatalf("reconcilers kept writing for 30s")
}
