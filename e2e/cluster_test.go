//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/smi2istio/smi2istio/internal/istiocheck"
	"github.com/smi2istio/smi2istio/internal/localcp"
	"github.com/smi2istio/smi2istio/internal/smi/crds"
	"github.com/smi2istio/smi2istio/internal/testenv"
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
	operatorBin = filepath.Join(dir, "smi2istio")
	build := exec.Command("go", "build", "-o", operatorBin, ".")
	build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build the operator:", err)
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

// meshConfig is Istio's mesh configuration for istiod (--meshConfig) and the istio ConfigMap the
// operator reads the trust domain from.
const meshConfig = `trustDomain: cluster.local
rootNamespace: istio-system
defaultConfig:
  discoveryAddress: istiod.istio-system.svc:15012
`

// cluster is one isolated mesh: a local control plane, istiod and the operator as processes.
type cluster struct {
	t          *testing.T
	dir        string
	cp         *localcp.ControlPlane
	c          client.Client
	operator   *proc
	istiod     *proc
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
		cl.operator.stop()
		cl.istiod.stop()
		if err := cp.Stop(); err != nil {
			t.Log(err)
		}
	})
	scheme := kruntime.NewScheme()
	must(t, clientgoscheme.AddToScheme(scheme))
	must(t, apiextv1.AddToScheme(scheme))
	cl.c, err = client.New(cp.Config, client.Options{Scheme: scheme})
	must(t, err)

	// CRDs as a cluster admin installs them: ours (conversion pointed at the operator process,
	// which sets the caBundle itself) and Istio's, pinned by go.mod.
	webhook := freeAddr(t)
	list, err := crds.Load(filepath.Join(testenv.RepoRoot(), "config", "crd", "bases"))
	must(t, err)
	list = crds.WithClientConfig(list, apiextv1.WebhookClientConfig{URL: ptr.To("https://" + webhook + crds.ConversionPath)})
	f, err := istiocheck.CRDFile()
	must(t, err)
	istio, err := crds.LoadFile(f)
	must(t, err)
	ctx := context.Background()
	must(t, crds.Install(ctx, cl.c, append(list, istio...)))

	// Istio's namespace and mesh config.
	must(t, cl.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "istio-system"}}))
	must(t, cl.c.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "istio", Namespace: "istio-system"},
		Data: map[string]string{"mesh": meshConfig}}))
	meshFile := filepath.Join(dir, "mesh.yaml")
	must(t, os.WriteFile(meshFile, []byte(meshConfig), 0o600))

	cl.istiodGRPC, cl.istiodMon, cl.istiodHTTP = freeAddr(t), freeAddr(t), freeAddr(t)
	cl.istiod = &proc{name: "istiod", path: istiodBin, log: filepath.Join(dir, "istiod.log"),
		env: []string{"POD_NAMESPACE=istio-system", "POD_NAME=istiod-e2e", "REVISION=default"},
		args: []string{"discovery", "--kubeconfig=" + cp.Kubeconfig, "--meshConfig=" + meshFile,
			"--httpAddr=" + cl.istiodHTTP, "--monitoringAddr=" + cl.istiodMon, "--grpcAddr=" + cl.istiodGRPC,
			"--secureGRPCAddr=", "--httpsAddr=", "--domain=cluster.local", "--log_output_level=default:info"},
		ready: "http://" + cl.istiodHTTP + "/ready"}
	must(t, cl.istiod.start())

	cl.opMetrics, cl.opProbes = freeAddr(t), freeAddr(t)
	host, port, _ := net.SplitHostPort(webhook)
	cl.operator = &proc{name: "smi2istio", path: operatorBin, log: filepath.Join(dir, "smi2istio.log"),
		args: []string{"--kubeconfig=" + cp.Kubeconfig, "--local-control-plane=never",
			"--webhook-host=" + host, "--webhook-port=" + port, "--webhook-cert-mode=self-signed",
			"--metrics-bind-address=" + cl.opMetrics, "--health-probe-bind-address=" + cl.opProbes},
		ready: "http://" + cl.opProbes + "/readyz"}
	must(t, cl.operator.start())
	return cl
}

// dumpLogs prints the tail of every process log of a failed test.
func (cl *cluster) dumpLogs() {
	for _, p := range []*proc{cl.operator, cl.istiod} {
		if p == nil {
			continue
		}
		data, err := os.ReadFile(p.log)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > 60 {
			lines = lines[len(lines)-60:]
		}
		cl.t.Logf("last lines of %s's log:\n%s", p.name, strings.Join(lines, "\n"))
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
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}

// proc is a process of the suite (the operator, istiod) that can be stopped and started again.
type proc struct {
	name, path, log, ready string
	args, env              []string
	cmd                    *exec.Cmd
	done                   chan struct{}
}

func (p *proc) start() error {
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, _ = fmt.Fprintf(f, "=== %s start %s\n", p.name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.path, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = f.Close()
		close(p.done)
	}()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited during start-up (log %s):\n%s", p.name, p.log, tail(p.log, 30))
		default:
		}
		resp, err := http.Get(p.ready) //nolint:noctx // a short-lived readiness poll
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready at %s after 2 minutes:\n%s", p.name, p.ready, tail(p.log, 30))
}

// stop sends SIGTERM and waits (SIGKILL after 20 s).
func (p *proc) stop() {
	if p == nil || p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd = nil
}

// kill ends the process without a chance to clean up (a crash, an OOM kill).
func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
	p.cmd = nil
}

func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer func() { _ = f.Close() }()
	var lines []string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		lines = append(lines, s.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
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
