// Package testenv starts what the envtest suites share: the real local control plane, the SMI
// CRDs from config/crd/bases, and the conversion webhook served over TLS from this process.
package testenv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/go-logr/logr"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/internal/certs"
	"github.com/smi2istio/smi2istio/internal/localcp"
	"github.com/smi2istio/smi2istio/internal/manifests"
	"github.com/smi2istio/smi2istio/internal/smi/conversion"
	"github.com/smi2istio/smi2istio/internal/smi/crds"
	"github.com/smi2istio/smi2istio/internal/testing/istiocheck"
)

// Env is a running control plane with the SMI CRDs installed and converted by this process.
type Env struct {
	ControlPlane *localcp.ControlPlane
	Config       *rest.Config
	Client       client.Client
	Scheme       *kruntime.Scheme
	webhook      *http.Server
}

// RepoRoot is the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// Options selects what a suite needs besides the SMI CRDs.
type Options struct {
	// IstioCRDs installs Istio's CRDs from the istio.io/istio version in go.mod.
	IstioCRDs bool
}

// Start starts the control plane (with kube-controller-manager's garbage collector), the conversion
// webhook, and installs the CRDs from config/crd/bases (the files users get), pointed at the webhook.
func Start(ctx context.Context, log logr.Logger, opts Options) (*Env, error) {
	cp, err := localcp.Start("")
	if err != nil {
		return nil, err
	}
	env := &Env{ControlPlane: cp, Config: cp.Config, Scheme: kruntime.NewScheme()}
	if err := start(ctx, env, log, opts); err != nil {
		_ = env.Stop()
		return nil, err
	}
	return env, nil
}

func start(ctx context.Context, env *Env, log logr.Logger, opts Options) error {
	if err := clientgoscheme.AddToScheme(env.Scheme); err != nil {
		return err
	}
	if err := apiextv1.AddToScheme(env.Scheme); err != nil {
		return err
	}
	c, err := client.New(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		return fmt.Errorf("create client: %w", err)
	}
	env.Client = c

	bundle, err := certs.SelfSigned([]string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, time.Now(), 24*time.Hour)
	if err != nil {
		return err
	}
	pair, err := tls.X509KeyPair(bundle.CertPEM, bundle.KeyPEM)
	if err != nil {
		return fmt.Errorf("load webhook certificate: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen for the conversion webhook: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle(crds.ConversionPath, conversion.Handler(log))
	env.webhook = &http.Server{
		Handler:           mux,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() {
		if err := env.webhook.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error(err, "conversion webhook stopped")
		}
	}()

	list, err := crds.Load(filepath.Join(RepoRoot(), "config", "crd", "bases"))
	if err != nil {
		return err
	}
	cc := apiextv1.WebhookClientConfig{URL: ptr.To("https://" + ln.Addr().String() + crds.ConversionPath), CABundle: bundle.CAPEM}
	list = crds.WithClientConfig(list, cc)
	if opts.IstioCRDs {
		f, err := istiocheck.CRDFile()
		if err != nil {
			return err
		}
		istio, err := crds.LoadFile(f)
		if err != nil {
			return err
		}
		list = append(list, istio...)
	}
	return crds.Install(ctx, c, list)
}

// Stop stops the webhook and the control plane.
func (e *Env) Stop() error {
	if e.webhook != nil {
		_ = e.webhook.Close()
	}
	return e.ControlPlane.Stop()
}

// ReadManifests decodes every document of a multi-document YAML file.
func ReadManifests(path string) ([]*unstructured.Unstructured, error) {
	return manifests.ReadFile(path)
}

// Main is a TestMain body for suites that only need the environment: it starts it into *env, runs
// the tests and stops it, returning the exit code.
func Main(m interface{ Run() int }, env **Env, opts Options) int {
	var err error
	*env, err = Start(context.Background(), logr.Discard(), opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "start test environment:", err)
		return 1
	}
	defer func() { _ = (*env).Stop() }()
	return m.Run()
}
