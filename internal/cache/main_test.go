package cache

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/smi2istio/smi2istio/internal/localcp"
	"github.com/smi2istio/smi2istio/internal/testing/testenv"
)

var (
	envOnce sync.Once
	env     *testenv.Env
	envErr  error
	nsCount atomic.Int64
)

func TestMain(m *testing.M) {
	if os.Getenv(localcp.AssetsEnv) == "" {
		fmt.Fprintln(os.Stderr, "set "+localcp.AssetsEnv+" (make test does: hack/kube-assets.sh)")
		os.Exit(1)
	}
	code := m.Run()
	if env != nil {
		_ = env.Stop()
	}
	os.Exit(code)
}

// controlPlane is the package's control plane with the SMI CRDs, started by the first test that
// needs one (the unit tests and benchmarks do not); its scheme holds the compact types.
func controlPlane(t *testing.T) *testenv.Env {
	t.Helper()
	envOnce.Do(func() {
		env, envErr = testenv.Start(context.Background(), logr.Discard(), testenv.Options{})
		if envErr == nil {
			envErr = AddToScheme(env.Scheme)
		}
	})
	if envErr != nil {
		t.Fatalf("start the control plane: %v", envErr)
	}
	return env
}

// freshNamespace creates a namespace of its own for a test.
func freshNamespace(t *testing.T) string {
	t.Helper()
	e := controlPlane(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cache%d", nsCount.Add(1))}}
	if err := e.Client.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}
