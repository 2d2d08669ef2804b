//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/smi2istio/smi2istio/internal/localcp"
	"github.com/smi2istio/smi2istio/internal/smi/crds"
	"github.com/smi2istio/smi2istio/internal/testing/istiocheck"
	"github.com/smi2istio/smi2istio/internal/testing/proc"
	"github.com/smi2istio/smi2istio/internal/testing/testenv"
)

// Binaries the suite runs: built (operator) or provided by hack/istiod.sh (istiod) in TestMain.
var operatorBin, istiodBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	ctrllog.SetLogger(logr.Discard()) // envtest logs through controller-runtime; the processes log to files
	root := testenv.RepoRoot()
	dir, err := os.MkdirTemp("", "smi2istio-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }()
	// The operator under test is this tree, built the way `make build` builds it.
	if operatorBin, err = proc.BuildOperator(root, dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// istiod of the Istio version go.mod pins, built once and cached outside the clone.
	out, err := exec.Command(filepath.Join(root, "hack", "istiod.sh")).Output()
	if err != nil {
		fmt.Fprintln(os.Stderr, "hack/istiod.sh:", err)
		return 1
	}
	istiodBin = strings.TrimSpace(string(out))
	return m.Run()
}

// cluster is one isolated mesh: a local control plane, istiod and the operator as processes.
type cluster struct {
	t          *testing.T
	dir        string
	cp         *localcp.ControlPlane
	c          client.Client
	operator   *proc.Process
	istiod     *proc.Process
	opMetrics  string // operator metrics address
	opProbes   string
	istiodGRPC string
	istiodMon  string
	istiodHTTP string
	nextIP     int
}

// newCluster starts a control plane with the SMI, config and Istio CRDs, istiod and the operator.
func newCluster(t *testing.T) *cluster {
	t.Helper()
	return newClusterWith(t, clusterOptions{})
}

// clusterOptions change what newClusterWith starts; the zero value is newCluster's mesh.
type clusterOptions struct {
	crds       []*apiextv1.CustomResourceDefinition // installed with Istio's, before istiod starts
	istiodEnv  []string                             // added to istiod's environment
	noOperator bool                                 // istiod only: the harness's own tests
	// beforeInstall runs on the bare control plane, before smi2istio's and Istio's CRDs are
	// installed: a cluster that already runs something (OSM) when smi2istio is installed over it.
	beforeInstall func(*cluster)
}

func newClusterWith(t *testing.T, opts clusterOptions) *cluster {
	t.Helper()
	dir := t.TempDir()
	cp, err := localcp.Start(filepath.Join(dir, "kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	cl := &cluster{t: t, dir: dir, cp: cp, nextIP: 10}
	t.Cleanup(func() {
		if t.Failed() {
			cl.dumpLogs()
		}
		cl.operator.Stop()
		cl.istiod.Stop()
		if err := cp.Stop(); err != nil {
			t.Log(err)
		}
	})
	scheme := kruntime.NewScheme()
	must(t, clientgoscheme.AddToScheme(scheme))
	must(t, apiextv1.AddToScheme(scheme))
	cl.c, err = client.New(cp.Config, client.Options{Scheme: scheme})
	must(t, err)

	if opts.beforeInstall != nil {
		opts.beforeInstall(cl)
	}

	webhook := freeAddr(t)
	ctx := context.Background()
	istioCRDs, err := istiocheck.CRDFile()
	must(t, err)
	must(t, proc.InstallCRDs(ctx, cl.c, testenv.RepoRoot(), webhook, nil, istioCRDs))
	if len(opts.crds) > 0 {
		must(t, crds.Install(ctx, cl.c, opts.crds))
	}

	// Istio's namespace and mesh config.
	must(t, proc.InstallMeshConfig(ctx, cl.c))
	meshFile := filepath.Join(dir, "mesh.yaml")
	must(t, os.WriteFile(meshFile, []byte(proc.MeshConfig), 0o600))

	cl.istiodGRPC, cl.istiodMon, cl.istiodHTTP = freeAddr(t), freeAddr(t), freeAddr(t)
	cl.istiod = &proc.Process{Name: "istiod", Path: istiodBin, Log: filepath.Join(dir, "istiod.log"),
		Env: append([]string{"POD_NAMESPACE=istio-system", "POD_NAME=istiod-e2e", "REVISION=default"}, opts.istiodEnv...),
		Args: []string{"discovery", "--kubeconfig=" + cp.Kubeconfig, "--meshConfig=" + meshFile,
			"--httpAddr=" + cl.istiodHTTP, "--monitoringAddr=" + cl.istiodMon, "--grpcAddr=" + cl.istiodGRPC,
			"--secureGRPCAddr=", "--httpsAddr=", "--domain=cluster.local", "--log_output_level=default:info"},
		Ready: "http://" + cl.istiodHTTP + "/ready"}
	must(t, cl.istiod.Start())

	if opts.noOperator {
		return cl
	}
	cl.opMetrics, cl.opProbes = freeAddr(t), freeAddr(t)
	cl.operator = proc.Operator(operatorBin, filepath.Join(dir, "smi2istio.log"), cp.Kubeconfig, webhook, "", cl.opMetrics, cl.opProbes)
	must(t, cl.operator.Start())
	return cl
}

// dumpLogs prints the tail of every process log of a failed test.
func (cl *cluster) dumpLogs() {
	for _, p := range []*proc.Process{cl.operator, cl.istiod} {
		if p != nil {
			cl.t.Logf("last lines of %s's log:\n%s", p.Name, p.Tail(60))
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	a, err := proc.FreeAddr()
	must(t, err)
	return a
}

// apply server-side applies every document of a manifest file as `kubectl apply --server-side`.
func (cl *cluster) applyFile(path string) []*unstructured.Unstructured {
	cl.t.Helper()
	objs, err := testenv.ReadManifests(path)
	must(cl.t, err)
	for _, o := range objs {
		cl.apply(o)
	}
	return objs
}

func (cl *cluster) apply(o *unstructured.Unstructured) {
	cl.t.Helper()
	//nolint:staticcheck // SSA of an unstructured object, as kubectl apply --server-side does.
	if err := cl.c.Patch(context.Background(), o.DeepCopy(), client.Apply, client.FieldOwner("kubectl"), client.ForceOwnership); err != nil {
		cl.t.Fatalf("apply %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
	}
}

// fixture is the path of a file of the OSM demos (testdata/fixtures, as OSM publishes them).
func fixture(rel string) string {
	return filepath.Join(testenv.RepoRoot(), "testdata", "fixtures", rel)
}

// joinMesh labels namespaces for sidecar injection: `osm namespace add` becomes this.
func (cl *cluster) joinMesh(names ...string) {
	cl.t.Helper()
	for _, n := range names {
		ns := &corev1.Namespace{}
		must(cl.t, cl.c.Get(context.Background(), client.ObjectKey{Name: n}, ns))
		if ns.Labels == nil {
			ns.Labels = map[string]string{}
		}
		ns.Labels["istio-injection"] = "enabled"
		must(cl.t, cl.c.Update(context.Background(), ns))
	}
}

// patchConfig merges spec fields into the operator's SMI2IstioConfig "default".
func (cl *cluster) patchConfig(spec string) {
	cl.t.Helper()
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("smi2istio.io/v1alpha1")
	u.SetKind("SMI2IstioConfig")
	u.SetName("default")
	eventually(cl.t, "the operator created its configuration", func() error {
		return cl.c.Get(context.Background(), client.ObjectKeyFromObject(u), u)
	})
	must(cl.t, cl.c.Patch(context.Background(), u, client.RawPatch("application/merge-patch+json", []byte(`{"spec":`+spec+`}`))))
}
