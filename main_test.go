package main

import (
	"context"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/api/v1alpha1"
	"github.com/smi2istio/smi2istio/controllers"
	"github.com/smi2istio/smi2istio/internal/build/install"
	"github.com/smi2istio/smi2istio/internal/localcp"
	"github.com/smi2istio/smi2istio/internal/smi/crds"
	"github.com/smi2istio/smi2istio/internal/testing/istiocheck"
	"github.com/smi2istio/smi2istio/internal/testing/testenv"
)

// The manager's arguments in dist/install.yaml are flags this binary has (a renamed or mistyped
// flag would crash the pod at start).
func TestInstallArgsAreFlags(t *testing.T) {
	objs, err := install.Objects(filepath.Join(testenv.RepoRoot(), "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	args, err := install.ManagerArgs(objs)
	if err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("smi2istio", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var opts options
	bindFlags(fs, &opts)
	if err := fs.Parse(args); err != nil {
		t.Errorf("args %v: %v", args, err)
	}
	if opts.localControlPlane != "never" || !opts.leaderElect {
		t.Errorf("in a cluster: want --local-control-plane=never and --leader-elect, got %+v", opts)
	}
	if _, err := wantLocal(opts.localControlPlane); err != nil {
		t.Error(err)
	}
}

// The image is built by `make build` (the same flags as here), and ends distroless and non-root.
func TestDockerfileUsesMakeBuild(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"RUN make build ", "FROM gcr.io/distroless/static:nonroot", "USER 65532:65532", `ENTRYPOINT ["/manager"]`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}

// The operator runs from dist/install.yaml's container args against a cluster where the install
// manifest and Istio's CRDs were applied: it becomes ready, sets the CRDs' caBundle (no OLM, no
// cert-manager here) and creates its configuration. Only the two listen addresses are moved to free
// ports; every other flag is the manifest's.
func TestOperatorRunsFromInstallArgs(t *testing.T) {
	runsInTests = true
	objs, err := install.Objects(filepath.Join(testenv.RepoRoot(), "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	args, err := install.ManagerArgs(objs)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := localcp.Start(filepath.Join(t.TempDir(), "kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cp.Stop() }()
	c, err := client.New(cp.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Istio comes first: its namespace, where the manifest grants the read of mesh configs.
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "istio-system"}}); err != nil {
		t.Fatal(err)
	}
	if err := install.Apply(ctx, c, objs); err != nil {
		t.Fatal(err)
	}
	istioCRDs, err := istiocheck.CRDFile()
	if err != nil {
		t.Fatal(err)
	}
	list, err := crds.LoadFile(istioCRDs)
	if err != nil {
		t.Fatal(err)
	}
	if err := crds.Install(ctx, c, list); err != nil {
		t.Fatal(err)
	}

	probe := freePort(t)
	args = append(args, "--metrics-bind-address="+freePort(t), "--health-probe-bind-address="+probe)
	fs := flag.NewFlagSet("smi2istio", flag.ContinueOnError)
	var opts options
	bindFlags(fs, &opts)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", cp.Kubeconfig)
	t.Setenv("POD_NAMESPACE", "smi2istio-system")
	done := make(chan error, 1)
	go func() { done <- run(ctx, logr.Discard(), opts) }()

	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get("http://" + probe + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("the operator stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the operator did not become ready")
		}
		time.Sleep(200 * time.Millisecond)
	}
	crd := &apiextv1.CustomResourceDefinition{}
	if err := c.Get(ctx, client.ObjectKey{Name: "trafficsplits.split.smi-spec.io"}, crd); err != nil {
		t.Fatal(err)
	}
	if len(crd.Spec.Conversion.Webhook.ClientConfig.CABundle) == 0 {
		t.Error("self-signed mode must set the SMI CRDs' caBundle")
	}
	deadline = time.Now().Add(60 * time.Second)
	for {
		cfg := &v1alpha1.SMI2IstioConfig{}
		if err := c.Get(ctx, client.ObjectKey{Name: v1alpha1.ConfigName}, cfg); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the operator did not create its configuration")
		}
		time.Sleep(200 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("the operator stopped with an error: %v", err)
	}
}

// Istio installed after the operator: it starts, says on its configuration which of Istio's CRDs
// are missing (IstioDetected=False), and once they are served it starts translating without a
// restart (a TrafficTarget's outputs appear, IstioDetected=True).
func TestIstioInstalledLater(t *testing.T) {
	runsInTests = true
	objs, err := install.Objects(filepath.Join(testenv.RepoRoot(), "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	args, err := install.ManagerArgs(objs)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := localcp.Start(filepath.Join(t.TempDir(), "kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cp.Stop() }()
	c, err := client.New(cp.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, ns := range []string{"istio-system", "shop"} {
		labels := map[string]string{}
		if ns == "shop" {
			labels["istio-injection"] = "enabled"
		}
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := install.Apply(ctx, c, objs); err != nil {
		t.Fatal(err)
	}
	args = append(args, "--metrics-bind-address="+freePort(t), "--health-probe-bind-address="+freePort(t))
	fs := flag.NewFlagSet("smi2istio", flag.ContinueOnError)
	var opts options
	bindFlags(fs, &opts)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", cp.Kubeconfig)
	t.Setenv("POD_NAMESPACE", "smi2istio-system")
	done := make(chan error, 1)
	go func() { done <- run(ctx, logr.Discard(), opts) }()

	condition := func(want metav1.ConditionStatus, contains string) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		var last string
		for time.Now().Before(deadline) {
			select {
			case err := <-done:
				t.Fatalf("the operator stopped: %v", err)
			default:
			}
			cfg := &v1alpha1.SMI2IstioConfig{}
			if err := c.Get(ctx, client.ObjectKey{Name: v1alpha1.ConfigName}, cfg); err == nil {
				for _, cond := range cfg.Status.Conditions {
					if cond.Type == "IstioDetected" {
						last = string(cond.Status) + " " + cond.Message
						if cond.Status == want && strings.Contains(cond.Message, contains) {
							return
						}
					}
				}
			}
			time.Sleep(250 * time.Millisecond)
		}
		t.Fatalf("IstioDetected=%s with %q: last %q", want, contains, last)
	}
	condition(metav1.ConditionFalse, "AuthorizationPolicy.security.istio.io/v1")

	istioCRDs, err := istiocheck.CRDFile()
	if err != nil {
		t.Fatal(err)
	}
	list, err := crds.LoadFile(istioCRDs)
	if err != nil {
		t.Fatal(err)
	}
	if err := crds.Install(ctx, c, list); err != nil {
		t.Fatal(err)
	}
	condition(metav1.ConditionTrue, "served")
	// The namespace's deny-by-default baseline: an Istio object written without a restart.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ap := &metav1.PartialObjectMetadata{}
		ap.SetGroupVersionKind(controllers.AuthorizationPolicyGVK)
		if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: controllers.BaselineName}, ap); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no baseline in shop after Istio's CRDs were installed")
		}
		time.Sleep(250 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("the operator stopped with an error: %v", err)
	}
}
