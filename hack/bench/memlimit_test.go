package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"
)

// The benchmark runs the operator with the GOMEMLIMIT the install manifest gives it: the manifest
// derives GOMEMLIMIT from the container's memory limit, and that limit is manifestMemLimit.
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
		if e.Name == "GOMEMLIMIT" && e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil && e.ValueFrom.ResourceFieldRef.Resource == "limits.memory" {
			fromLimit = true
		}
	}
	if !fromLimit {
		t.Error("the manifest does not set GOMEMLIMIT from limits.memory")
	}
	want := resource.MustParse(strings.TrimSuffix(manifestMemLimit, "B"))
	if got := c.Resources.Limits.Memory(); got.Cmp(want) != 0 {
		t.Errorf("manifest memory limit %s, the benchmark's GOMEMLIMIT %s", got, manifestMemLimit)
	}
}
