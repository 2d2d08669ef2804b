// Package localcp runs a real local Kubernetes control plane (etcd, kube-apiserver and
// kube-controller-manager's garbage collector and namespace controller, built by
// hack/kube-assets.sh) for `make run` without a cluster and for the test suites.
package localcp

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// AssetsEnv names the directory holding etcd, kube-apiserver and kube-controller-manager.
const AssetsEnv = "KUBEBUILDER_ASSETS"

// ServiceCIDR is the Service cluster IP range of the local control plane.
const ServiceCIDR = "10.96.0.0/16"

// ControlPlane is a running local control plane.
type ControlPlane struct {
	env *envtest.Environment
	// Config is an admin client config for the control plane.
	Config *rest.Config
	// Kubeconfig is the path of an admin kubeconfig file for kubectl.
	Kubeconfig string
	// AssetsDir is where the control plane binaries came from.
	AssetsDir string
	kcm       *exec.Cmd
	kcmDone   chan struct{}
	tmpDir    string
}

// Start starts etcd and kube-apiserver and writes an admin kubeconfig to kubeconfigPath (if not
// empty). The binaries come from $KUBEBUILDER_ASSETS.
func Start(kubeconfigPath string) (*ControlPlane, error) {
	assets := os.Getenv(AssetsEnv)
	if assets == "" {
		return nil, errors.New(AssetsEnv + " is not set: run `hack/kube-assets.sh` (or use `make run` / `make test`), which builds the control plane binaries and prints their directory")
	}
	for _, bin := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(assets, bin)); err != nil {
			return nil, fmt.Errorf("control plane binary %s missing in %s: run hack/kube-assets.sh: %w", bin, assets, err)
		}
	}
	dir, err := os.MkdirTemp("", "smi2istio-localcp-")
	if err != nil {
		return nil, fmt.Errorf("create control plane directory: %w", err)
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory:    assets,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	// A certificate directory of our own (not envtest's throw-away one) keeps the serving
	// certificate and the client CA across RestartAPIServer, so clients keep working.
	certDir := filepath.Join(dir, "apiserver")
	if err := os.Mkdir(certDir, 0o700); err != nil {
		return nil, fmt.Errorf("create apiserver certificate directory: %w", err)
	}
	env.ControlPlane.APIServer = &envtest.APIServer{CertDir: certDir}
	// Room for tens of thousands of Services (envtest's default /24 has 254 addresses).
	env.ControlPlane.APIServer.Configure().Set("service-cluster-ip-range", ServiceCIDR)
	cfg, err := env.Start()
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start local control plane: %w", err)
	}
	cp := &ControlPlane{env: env, Config: cfg, AssetsDir: assets, tmpDir: dir}
	if err := cp.start(kubeconfigPath); err != nil {
		_ = cp.Stop()
		return nil, err
	}
	return cp, nil
}

// RestartAPIServer stops kube-apiserver and starts it again on the same port, certificates and
// etcd (what a control plane upgrade or crash looks like to clients). kube-apiserver drains open
// watches for a long time on SIGTERM; after a few seconds it is killed.
func (cp *ControlPlane) RestartAPIServer() error {
	api := cp.env.ControlPlane.APIServer
	stopTimeout := api.StopTimeout
	api.StopTimeout = 5 * time.Second
	if err := api.Stop(); err != nil && !strings.Contains(err.Error(), "timeout waiting for process") {
		return fmt.Errorf("stop kube-apiserver: %w", err)
	}
	api.StopTimeout = stopTimeout
	addr := net.JoinHostPort(api.Address, api.Port)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break // the old process is gone
		}
		_ = conn.Close()
	}
	if err := api.Start(); err != nil {
		return fmt.Errorf("start kube-apiserver again: %w", err)
	}
	return nil
}

func (cp *ControlPlane) start(kubeconfigPath string) error {
	if kubeconfigPath != "" {
		if err := cp.writeKubeconfig(kubeconfigPath); err != nil {
			return err
		}
	}
	return cp.startControllerManager()
}

// startControllerManager runs the garbage collector (owner references) and the namespace
// controller (namespace deletion); nothing else a test or a local run needs.
func (cp *ControlPlane) startControllerManager() error {
	bin := filepath.Join(cp.AssetsDir, "kube-controller-manager")
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("control plane binary kube-controller-manager missing in %s: run hack/kube-assets.sh: %w", cp.AssetsDir, err)
	}
	kc := filepath.Join(cp.tmpDir, "controller-manager.kubeconfig")
	if err := writeUserKubeconfig(cp.env, "system:kube-controller-manager", kc); err != nil {
		return err
	}
	log, err := os.Create(filepath.Join(cp.tmpDir, "kube-controller-manager.log"))
	if err != nil {
		return fmt.Errorf("create controller-manager log: %w", err)
	}
	cmd := exec.Command(bin,
		"--kubeconfig="+kc,
		"--controllers=garbagecollector,namespace",
		"--leader-elect=false",
		"--secure-port=0",
		"--concurrent-gc-syncs=5",
	)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		_ = log.Close()
		return fmt.Errorf("start kube-controller-manager: %w", err)
	}
	cp.kcm, cp.kcmDone = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = log.Close()
		close(cp.kcmDone)
	}()
	return nil
}

func (cp *ControlPlane) writeKubeconfig(path string) error {
	if err := writeUserKubeconfig(cp.env, "smi2istio-admin", path); err != nil {
		return err
	}
	cp.Kubeconfig = path
	return nil
}

// writeUserKubeconfig creates a system:masters user and writes its kubeconfig (mode 0600).
func writeUserKubeconfig(env *envtest.Environment, name, path string) error {
	user, err := env.AddUser(envtest.User{Name: name, Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("create user %s for the local control plane: %w", name, err)
	}
	data, err := user.KubeConfig()
	if err != nil {
		return fmt.Errorf("render the kubeconfig of %s: %w", name, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create kubeconfig directory: %w", err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}

// Stop stops the control plane and removes its data.
func (cp *ControlPlane) Stop() error {
	if cp.kcm != nil {
		_ = cp.kcm.Process.Signal(syscall.SIGTERM)
		select {
		case <-cp.kcmDone:
		case <-time.After(3 * time.Second):
			_ = cp.kcm.Process.Kill()
			<-cp.kcmDone
		}
	}
	err := cp.env.Stop()
	if cp.tmpDir != "" {
		_ = os.RemoveAll(cp.tmpDir)
	}
	if err != nil {
		return fmt.Errorf("stop local control plane: %w", err)
	}
	return nil
}
