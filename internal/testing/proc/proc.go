// Package proc runs the operator binary and istiod as child processes against a control plane, for
// the e2e suite and the benchmarks: build, start (until ready), stop, kill, their logs and metrics,
// and the CRDs and mesh config they need on the control plane.
package proc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/internal/certs"
	"github.com/smi2istio/smi2istio/internal/smi/crds"
)

// Process is a child process that can be stopped and started again; its output is appended to Log.
type Process struct {
	Name, Path, Log string
	// Ready is an HTTP URL that answers 200 once the process is ready.
	Ready     string
	Args, Env []string
	cmd       *exec.Cmd
	done      chan struct{}
}

// Start starts the process and waits (up to 2 minutes) until Ready answers 200.
func (p *Process) Start() error {
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("open log of %s: %w", p.Name, err)
	}
	_, _ = fmt.Fprintf(f, "=== %s start %s\n", p.Name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = f.Close()
		close(p.done)
	}()
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited during start-up (log %s):\n%s", p.Name, p.Log, p.Tail(30))
		default:
		}
		resp, err := http.Get(p.Ready) //nolint:noctx // a short-lived readiness poll
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	return fmt.Errorf("%s not ready at %s after 2 minutes:\n%s", p.Name, p.Ready, p.Tail(30))
}

// Stop sends SIGTERM and waits (SIGKILL after 20 s). A stopped process can be started again.
func (p *Process) Stop() {
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

// Kill ends the process without a chance to clean up (a crash, an OOM kill).
func (p *Process) Kill() {
	if p == nil || p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	p.cmd = nil
}

// PID is the running process's id (0 when not running).
func (p *Process) PID() int {
	if p == nil || p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Tail returns the last n lines of the log.
func (p *Process) Tail(n int) string {
	f, err := os.Open(p.Log)
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

// FreeAddr is a free loopback address (host:port).
//
// The port is below Linux's ephemeral range (32768 and up by default): a port the kernel hands out
// (":0") can be taken as the source port of any outgoing connection before the process that is to
// listen on it starts — or restarts, as the fault tests do — and then its bind fails.
func FreeAddr() (string, error) {
	for range 100 {
		port := 20000 + rand.IntN(12000)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		addr := l.Addr().String()
		_ = l.Close()
		return addr, nil
	}
	return "", errors.New("no free port in 20000-31999 on 127.0.0.1")
}

// BuildOperator builds the operator from the repository at root into dir, as `make build` does.
func BuildOperator(root, dir string) (string, error) {
	bin := filepath.Join(dir, "smi2istio")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
	build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("build the operator: %w", err)
	}
	return bin, nil
}

// InstallCRDs installs what a cluster admin installs before the operator: the CRDs of
// config/crd/bases under root (SMI kinds with their conversion pointed at webhookAddr, where the
// operator serves it; caBundle nil: the operator sets it, in its self-signed mode; the config CRD)
// and Istio's CRDs from istioCRDs (crd-all.gen.yaml of the pinned Istio, hack/istio-crds.sh).
func InstallCRDs(ctx context.Context, c client.Client, root, webhookAddr string, caBundle []byte, istioCRDs string) error {
	list, err := crds.Load(filepath.Join(root, "config", "crd", "bases"))
	if err != nil {
		return err
	}
	list = crds.WithClientConfig(list, apiextv1.WebhookClientConfig{URL: ptr.To("https://" + webhookAddr + crds.ConversionPath), CABundle: caBundle})
	istio, err := crds.LoadFile(istioCRDs)
	if err != nil {
		return err
	}
	return crds.Install(ctx, c, append(list, istio...))
}

// MeshConfig is Istio's mesh configuration of the suites' meshes: istiod's --meshConfig file and
// the istio ConfigMap the operator reads the trust domain from.
const MeshConfig = `trustDomain: cluster.local
rootNamespace: istio-system
defaultConfig:
  discoveryAddress: istiod.istio-system.svc:15012
`

// InstallMeshConfig creates Istio's namespace and its istio ConfigMap holding MeshConfig.
func InstallMeshConfig(ctx context.Context, c client.Client) error {
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "istio-system"}}); err != nil {
		return fmt.Errorf("create namespace istio-system: %w", err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "istio", Namespace: "istio-system"}, Data: map[string]string{"mesh": MeshConfig}}
	if err := c.Create(ctx, cm); err != nil {
		return fmt.Errorf("create the istio ConfigMap: %w", err)
	}
	return nil
}

// Operator describes the operator process against the cluster of kubeconfig, serving its
// conversion webhook at webhookAddr, metrics at metricsAddr (plain HTTP: --metrics-secure=false)
// and probes at probeAddr. With an empty
// certDir it makes a self-signed webhook certificate at each start (and sets the CRDs' caBundle);
// else it serves the one in certDir (see ProvidedCert), as under OLM.
func Operator(bin, logFile, kubeconfig, webhookAddr, certDir, metricsAddr, probeAddr string) *Process {
	host, port, _ := net.SplitHostPort(webhookAddr)
	cert := []string{"--webhook-cert-mode=self-signed"}
	if certDir != "" {
		cert = []string{"--webhook-cert-mode=provided", "--webhook-cert-dir=" + certDir}
	}
	return &Process{Name: "smi2istio", Path: bin, Log: logFile,
		Args: append([]string{"--kubeconfig=" + kubeconfig, "--local-control-plane=never",
			"--webhook-host=" + host, "--webhook-port=" + port,
			// Plain HTTP on loopback, scraped without a token (the operator's default is HTTPS for
			// bearer tokens allowed GET on /metrics).
			"--metrics-bind-address=" + metricsAddr, "--metrics-secure=false", "--health-probe-bind-address=" + probeAddr}, cert...),
		Ready: "http://" + probeAddr + "/readyz"}
}

// ProvidedCert writes a serving certificate for the loopback webhook into dir (what OLM or
// cert-manager mounts) and returns its CA for the CRDs' caBundle.
func ProvidedCert(dir string) ([]byte, error) {
	b, err := certs.SelfSigned([]string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, time.Now(), 24*time.Hour)
	if err != nil {
		return nil, err
	}
	if err := b.WriteServing(dir); err != nil {
		return nil, err
	}
	return b.CAPEM, nil
}

// Metrics fetches a Prometheus text endpoint: the samples of each metric by name.
func Metrics(url string) (map[string][]Sample, error) {
	resp, err := http.Get(url) //nolint:noctx // a local metrics endpoint
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return ParseMetrics(resp.Body)
}

// ParseMetrics reads Prometheus text: the samples of each metric by name.
func ParseMetrics(r io.Reader) (map[string][]Sample, error) {
	out := map[string][]Sample{}
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		line := s.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, labels := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
			if line[i] == '{' {
				j := strings.LastIndex(line, "}")
				labels = line[i+1 : j]
			}
		}
		f := strings.Fields(line)
		var v float64
		if _, err := fmt.Sscan(f[len(f)-1], &v); err != nil {
			continue
		}
		out[name] = append(out[name], Sample{Labels: labels, Value: v})
	}
	return out, s.Err()
}

// Sample is one sample of a metric: its label text (`a="b",c="d"`) and value.
type Sample struct {
	Labels string
	Value  float64
}
