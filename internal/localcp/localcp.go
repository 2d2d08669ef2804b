// Package localcp runs a real local Kubernetes control plane (etcd + kube-apiserver, built by
// hack/kube-assets.sh) for `make run` without a cluster and for the test suites.
package localcp

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// AssetsEnv names the directory holding etcd, kube-apiserver and kube-controller-manager.
const AssetsEnv = "KUBEBUILDER_ASSETS"

// ControlPlane is a running local control plane.
type ControlPlane struct {
	env *envtest.Environment
	// Config is an admin client config for the control plane.
	Config *rest.Config
	// Kubeconfig is the path of an admin kubeconfig file for kubectl.
	Kubeconfig string
	// AssetsDir is where the control plane binaries came from.
	AssetsDir string
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
	env := &envtest.Environment{
		BinaryAssetsDirectory:    assets,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("start local control plane: %w", err)
	}
	cp := &ControlPlane{env: env, Config: cfg, AssetsDir: assets}
	if kubeconfigPath != "" {
		if err := cp.writeKubeconfig(kubeconfigPath); err != nil {
			_ = env.Stop()
			return nil, err
		}
	}
	return cp, nil
}

func (cp *ControlPlane) writeKubeconfig(path string) error {
	user, err := cp.env.AddUser(envtest.User{Name: "smi2istio-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("create admin user for the local control plane: %w", err)
	}
	data, err := user.KubeConfig()
	if err != nil {
		return fmt.Errorf("render kubeconfig: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create kubeconfig directory: %w", err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	cp.Kubeconfig = path
	return nil
}

// Stop stops the control plane and removes its data.
func (cp *ControlPlane) Stop() error {
	if err := cp.env.Stop(); err != nil {
		return fmt.Errorf("stop local control plane: %w", err)
	}
	return nil
}
