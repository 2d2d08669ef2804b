package foreigncrds_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/smi2istio/smi2istio/api/v1alpha1"
	"github.com/smi2istio/smi2istio/controllers"
	"github.com/smi2istio/smi2istio/internal/cache"
	"github.com/smi2istio/smi2istio/internal/localcp"
	"github.com/smi2istio/smi2istio/internal/recorder"
	"github.com/smi2istio/smi2istio/internal/smi/crds"
	"github.com/smi2istio/smi2istio/internal/testing/istiocheck"
	"github.com/smi2istio/smi2istio/internal/testing/testenv"
	"github.com/smi2istio/smi2istio/translate"
)

var (
	cp     *localcp.ControlPlane
	c      client.Client // the test's own client (no cache)
	scheme = runtime.NewScheme()
	choice []v1alpha1.SMICRD
	// writes counts every apiserver write of the operator's reconcilers (objects, status, Events);
	// smiStatusCalls the calls of an SMI object's status subresource.
	writes, smiStatusCalls atomic.Int64
	splitR                 *controllers.TrafficSplitReconciler
	accessR                *controllers.AccessReconciler
)

// osmCRDFiles are Open Service Mesh 1.2's SMI CRDs (no UDPRoute), as osm-bootstrap installs them.
var osmCRDFiles = []string{"smi_traffic_split.yaml", "smi_traffic_access.yaml", "smi_http_route_group.yaml", "smi_tcp_route.yaml"}

func TestMain(m *testing.M) {
	if os.Getenv(localcp.AssetsEnv) == "" {
		fmt.Fprintln(os.Stderr, "set "+localcp.AssetsEnv+" (make test does: hack/kube-assets.sh)")
		os.Exit(1)
	}
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := testr.New(&testing.T{})
	ctrl.SetLogger(log)
	var err error
	if cp, err = localcp.Start(""); err != nil {
		fmt.Fprintln(os.Stderr, "start control plane:", err)
		return 1
	}
	defer func() { _ = cp.Stop() }()
	if err := setup(ctx, log); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// setup installs OSM's SMI CRDs, Istio's and smi2istio's config CRD, then runs the operator's
// reconcilers as main.go does with --smi-crds=foreign: the kinds chosen from the CRDs, the cache
// types registered after, absent kinds read as empty.
func setup(ctx context.Context, log logr.Logger) error {
	if err := errors.Join(clientgoscheme.AddToScheme(scheme), apiextv1.AddToScheme(scheme), v1alpha1.AddToScheme(scheme)); err != nil {
		return err
	}
	var err error
	if c, err = client.New(cp.Config, client.Options{Scheme: scheme}); err != nil {
		return err
	}
	var list []*apiextv1.CustomResourceDefinition
	for _, f := range osmCRDFiles {
		l, err := crds.LoadFile(filepath.Join(testenv.RepoRoot(), "controllers", "testdata", "osm-v1.2-smi-crds", f))
		if err != nil {
			return err
		}
		for _, crd := range l {
			if err := c.Create(ctx, crd, client.FieldOwner("osm-bootstrap")); err != nil {
				return fmt.Errorf("create OSM CRD %s: %w", crd.Name, err)
			}
		}
		list = append(list, l...)
	}
	istioFile, err := istiocheck.CRDFile()
	if err != nil {
		return err
	}
	istio, err := crds.LoadFile(istioFile)
	if err != nil {
		return err
	}
	own, err := crds.LoadFile(filepath.Join(testenv.RepoRoot(), "config", "crd", "bases", "smi2istio.io_smi2istioconfigs.yaml"))
	if err != nil {
		return err
	}
	if err := crds.Install(ctx, c, append(istio, own...)); err != nil {
		return err
	}
	for _, crd := range list {
		if err := waitEstablished(ctx, crd.Name); err != nil {
			return err
		}
	}

	// main.go's chooseSMIKinds.
	if choice, err = controllers.DetectSMICRDs(ctx, c, controllers.SMICRDsForeign); err != nil {
		return err
	}
	if err := controllers.UseSMIKinds(choice); err != nil {
		return err
	}
	if err := cache.AddToScheme(scheme); err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(cp.Config, ctrl.Options{
		Scheme:   scheme,
		Client:   client.Options{Cache: &client.CacheOptions{Unstructured: true}},
		Metrics:  metricsserver.Options{BindAddress: "0"},
		Cache:    cache.Options(),
		NewCache: cache.WithoutKinds(controllers.AbsentSMIKinds(choice)),
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	rec := recorder.New(kubernetes.NewForConfigOrDie(cp.Config).EventsV1(), scheme, "smi2istio", 4096, log)
	if err := mgr.Add(rec); err != nil {
		return err
	}
	counted := countingClient{mgr.GetClient()}
	events := countingRecorder{rec}
	shared := controllers.NewShared("")
	if err := (&controllers.ConfigReconciler{Client: mgr.GetClient(), Shared: shared, Recount: 2 * time.Second}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&controllers.SMICRDReporter{Client: mgr.GetClient()}).SetupWithManager(ctx, mgr); err != nil {
		return err
	}
	if err := (&controllers.StorageMigrationReconciler{Client: counted, Reader: mgr.GetAPIReader(), Settle: -1}).SetupWithManager(mgr); err != nil {
		return err
	}
	splitR = &controllers.TrafficSplitReconciler{Client: counted, Recorder: events, State: shared.Current, Resync: shared.Resync, Mesh: translate.Mesh{}}
	if err := splitR.SetupWithManager(ctx, mgr); err != nil {
		return err
	}
	workloads := cache.NewWorkloadIndex()
	accessR = &controllers.AccessReconciler{Client: counted, Recorder: events, State: shared.Current, Resync: shared.Resync, Workloads: workloads}
	if err := accessR.SetupWithManager(ctx, mgr); err != nil {
		return err
	}
	for _, gvk := range []schema.GroupVersionKind{controllers.HTTPRouteGroupGVK, controllers.TCPRouteGVK, controllers.UDPRouteGVK} {
		if err := (&controllers.RouteReconciler{Client: counted, Recorder: events, GVK: gvk, State: shared.Current, Resync: shared.Resync}).SetupWithManager(mgr); err != nil {
			return err
		}
	}
	if err := (&controllers.BaselineReconciler{Client: counted, State: shared.Current, Resync: shared.Resync, Workloads: workloads}).SetupWithManager(mgr); err != nil {
		return err
	}
	go func() {
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "manager:", err)
		}
	}()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		return errors.New("cache did not sync")
	}
	return nil
}

func waitEstablished(ctx context.Context, name string) error {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		crd := &apiextv1.CustomResourceDefinition{}
		if err := c.Get(ctx, client.ObjectKey{Name: name}, crd); err == nil {
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextv1.Established && cond.Status == apiextv1.ConditionTrue {
					return nil
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("CRD %s not established", name)
}

// countingClient counts the reconcilers' writes, and their calls of an SMI object's status.
type countingClient struct{ client.Client }

func (k countingClient) Create(ctx context.Context, o client.Object, opts ...client.CreateOption) error {
	writes.Add(1)
	return k.Client.Create(ctx, o, opts...)
}

func (k countingClient) Update(ctx context.Context, o client.Object, opts ...client.UpdateOption) error {
	writes.Add(1)
	return k.Client.Update(ctx, o, opts...)
}

func (k countingClient) Patch(ctx context.Context, o client.Object, p client.Patch, opts ...client.PatchOption) error {
	writes.Add(1)
	return k.Client.Patch(ctx, o, p, opts...)
}

func (k countingClient) Delete(ctx context.Context, o client.Object, opts ...client.DeleteOption) error {
	writes.Add(1)
	return k.Client.Delete(ctx, o, opts...)
}

func (k countingClient) Status() client.SubResourceWriter { return countingStatus{k.Client.Status()} }

type countingStatus struct{ client.SubResourceWriter }

func isSMI(o client.Object) bool {
	gvk, err := apiutil.GVKForObject(o, scheme)
	return err == nil && strings.HasSuffix(gvk.Group, ".smi-spec.io")
}

func (s countingStatus) Update(ctx context.Context, o client.Object, opts ...client.SubResourceUpdateOption) error {
	writes.Add(1)
	if isSMI(o) {
		smiStatusCalls.Add(1)
	}
	return s.SubResourceWriter.Update(ctx, o, opts...)
}

func (s countingStatus) Patch(ctx context.Context, o client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
	writes.Add(1)
	if isSMI(o) {
		smiStatusCalls.Add(1)
	}
	return s.SubResourceWriter.Patch(ctx, o, p, opts...)
}

type countingRecorder struct{ events.EventRecorder }

func (r countingRecorder) Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	writes.Add(1)
	r.EventRecorder.Eventf(regarding, related, eventtype, reason, action, note, args...)
}
