package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"

	"github.com/smi2istio/smi2istio/internal/memlimit"
)

// The benchmark runs the operator with the memory limit the install manifest gives it: the
// manifest passes the container's memory limit in memlimit.Env, and that limit is manifestMemLimit.
func TestMemLimitMatchesManifest(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "config", "manager", "manager.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var dep *appsv1.Deployment
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var d appsv1.Deployment
		if err := yaml.UnmarshalStrict([]byte(doc), &d); err == nil && d.Kind == "Deployment" {
			dep = &d
		}
	}
	if dep == nil {
		t.Fatal("no Deployment in config/manager/manager.yaml")
	}
	c := dep.Spec.Template.Spec.Containers[0]
	fromLimit := false
	for _, e := range c.Env {
		if e.Name == memlimit.Env && e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil && e.ValueFrom.ResourceFieldRef.Resource == "limits.memory" {
			fromLimit = true
		}
	}
	if !fromLimit {
		t.Errorf("the manifest does not set %s from limits.memory", memlimit.Env)
	}
	want := resource.MustParse(manifestMemLimit)
	if got := c.Resources.Limits.Memory(); got.Cmp(want) != 0 {
		t.Errorf("manifest memory limit %s, the benchmark's %s", got, manifestMemLimit)
	}
}

func TestMemoryEnv(t *testing.T) {
	for in, want := range map[string]string{"256Mi": memlimit.Env + "=268435456", "128MiB": "GOMEMLIMIT=128MiB", "off": ""} {
		if got := strings.Join(memoryEnv(in), ","); got != want {
			t.Errorf("memoryEnv(%q) = %q, want %q", in, got, want)
		}
	}
}
