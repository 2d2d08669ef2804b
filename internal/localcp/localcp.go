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
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// AssetsEnv names the directory holding etcd, kube-apiserver and kube-controller-manager.
const AssetsEnv = "KUBEBUILDER_ASSETS"

// dirPrefix starts the name of every control plane's directory, which every one of its processes
// names on its command line.
const dirPrefix = "smi2istio-localcp-"

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

// Option changes how the control plane is started.
type Option func(*envtest.APIServer)

// WithAPIServerArg appends a value to a kube-apiserver flag, e.g. ("feature-gates", "X=false").
func WithAPIServerArg(name, value string) Option {
	return func(api *envtest.APIServer) { api.Configure().Append(name, value) }
}

// Start starts etcd and kube-apiserver and writes an admin kubeconfig to kubeconfigPath (if not
// empty). The binaries come from $KUBEBUILDER_ASSETS.
func Start(kubeconfigPath string, opts ...Option) (*ControlPlane, error) {
	assets := os.Getenv(AssetsEnv)
	if assets == "" {
		return nil, errors.New(AssetsEnv + " is not set: run `hack/kube-assets.sh` (or use `make run` / `make test`), which builds the control plane binaries and prints their directory")
	}
	for _, bin := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(assets, bin)); err != nil {
			return nil, fmt.Errorf("control plane binary %s missing in %s: run hack/kube-assets.sh: %w", bin, assets, err)
		}
	}
	reapOrphans()
	dir, err := os.MkdirTemp("", dirPrefix)
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
	// etcd's data under the same directory: every process of this control plane names it.
	env.ControlPlane.Etcd = &envtest.Etcd{DataDir: filepath.Join(dir, "etcd")}
	// Room for tens of thousands of Services (envtest's default /24 has 254 addresses).
	env.ControlPlane.APIServer.Configure().Set("service-cluster-ip-range", ServiceCIDR)
	// As OpenShift does: setting blockOwnerDeletion on an owner reference needs the right to update
	// the owner's finalizers, so that tests under the operator's own rights prove it has it.
	env.ControlPlane.APIServer.Configure().Append("enable-admission-plugins", "OwnerReferencesPermissionEnforcement")
	for _, opt := range opts {
		opt(env.ControlPlane.APIServer)
	}
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

// RestartAPIServer kills kube-apiserver and starts it again on the same port, certificates and
// etcd (what a crash or a control plane upgrade looks like to clients). It is made for loaded
// machines: the old process is killed outright (SIGTERM drains watches for a long time) and
// waited for, the port must be free before the new one binds, and readiness (/readyz) gets a
// deadline sized for a busy 2-core machine, with another attempt if the process exits early.
func (cp *ControlPlane) RestartAPIServer() error {
	api := cp.env.ControlPlane.APIServer
	for _, pid := range processesWith(api.CertDir, "kube-apiserver") {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	stopTimeout := api.StopTimeout
	api.StopTimeout = 30 * time.Second
	err := api.Stop() // the process is dead: Stop reaps it
	api.StopTimeout = stopTimeout
	if err != nil {
		return fmt.Errorf("stop kube-apiserver: %w", err)
	}
	addr := net.JoinHostPort(api.Address, api.Port)
	if err := waitPortFree(addr, time.Minute); err != nil {
		return fmt.Errorf("start kube-apiserver again: %w", err)
	}
	startTimeout := api.StartTimeout
	api.StartTimeout = 2 * time.Minute
	defer func() { api.StartTimeout = startTimeout }()
	var errs []error
	for attempt := 1; attempt <= 3; attempt++ {
		err := api.Start()
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("attempt %d: %w", attempt, err))
		if werr := waitPortFree(addr, time.Minute); werr != nil {
			errs = append(errs, werr)
		}
	}
	return fmt.Errorf("start kube-apiserver again on %s: %w", addr, errors.Join(errs...))
}

// waitPortFree waits until addr can be bound (the old process has let go of it).
func waitPortFree(addr string, timeout time.Duration) error {
	var err error
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var l net.Listener
		if l, err = net.Listen("tcp", addr); err == nil {
			return l.Close()
		}
	}
	return fmt.Errorf("port %s still in use after %s: %w", addr, timeout, err)
}

// processesWith lists the processes whose command line holds every one of parts (e.g. a binary
// name and a directory only its invocation names).
func processesWith(parts ...string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		all := true
		for _, p := range parts {
			all = all && p != "" && strings.Contains(string(cmdline), p)
		}
		if all {
			out = append(out, pid)
		}
	}
	return out
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
	// Whatever envtest left (a process that outlived its stop timeout) is killed and waited for.
	if left := killAndWait(cp.tmpDir, 30*time.Second); left != nil {
		err = errors.Join(err, left)
	}
	if cp.tmpDir != "" {
		_ = os.RemoveAll(cp.tmpDir)
	}
	if err != nil {
		return fmt.Errorf("stop local control plane: %w", err)
	}
	return nil
}

// killAndWait kills every process naming dir on its command line and waits until none is left.
func killAndWait(dir string, timeout time.Duration) error {
	if dir == "" {
		return nil
	}
	for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		pids := processesWith(dir)
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v of %s still running after %s", pids, dir, timeout)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// reapOrphans kills the processes of control planes whose owner died without stopping them (a
// crash, a panic, SIGKILL): their parent is gone (re-parented to init).
func reapOrphans() {
	for _, pid := range processesWith(dirPrefix) {
		stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so read after the last ')'.
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) > 1 && fields[1] == "1" {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
