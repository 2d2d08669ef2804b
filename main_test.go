package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/smi2istio/smi2istio/internal/install"
	"github.com/smi2istio/smi2istio/internal/manifests"
	"github.com/smi2istio/smi2istio/internal/testenv"
)

// The manager's arguments in dist/install.yaml are flags this binary has (a renamed or mistyped
// flag would crash the pod at start).
func TestInstallArgsAreFlags(t *testing.T) {
	data, err := install.Render(filepath.Join(testenv.RepoRoot(), "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := manifests.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, o := range objs {
		if o.GetKind() != "Deployment" {
			continue
		}
		containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		args, _, _ := unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
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
		found = true
	}
	if !found {
		t.Fatal("no Deployment in the install manifest")
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
