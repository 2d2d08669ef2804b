package bundle_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"

	olmmanifests "github.com/operator-framework/api/pkg/manifests"
	"github.com/operator-framework/api/pkg/validation"
	"github.com/operator-framework/api/pkg/validation/errors"

	"github.com/smi2istio/smi2istio/internal/build/bundle"
	"github.com/smi2istio/smi2istio/internal/testing/testenv"
)

// bundle/ and bundle.Dockerfile are what `make bundle` generates: running it again changes nothing.
func TestBundleUpToDate(t *testing.T) {
	root := testenv.RepoRoot()
	files, err := bundle.Build(root, "0.1.0", "ghcr.io/smi2istio/smi2istio:0.1.0")
	if err != nil {
		t.Fatal(err)
	}
	again, err := bundle.Build(root, "0.1.0", "ghcr.io/smi2istio/smi2istio:0.1.0")
	if err != nil {
		t.Fatal(err)
	}
	var onDisk []string
	_ = filepath.WalkDir(filepath.Join(root, "bundle"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(filepath.Join(root, "bundle"), p)
			onDisk = append(onDisk, rel)
		}
		return err
	})
	sort.Strings(onDisk)
	if len(onDisk) != len(files) {
		t.Errorf("bundle/ has %v, the generator writes %d files: run make bundle", onDisk, len(files))
	}
	for path, data := range files {
		if !bytes.Equal(data, again[path]) {
			t.Errorf("%s differs between two builds: the bundle is not reproducible", path)
		}
		have, err := os.ReadFile(filepath.Join(root, "bundle", path))
		if err != nil || !bytes.Equal(have, data) {
			t.Errorf("bundle/%s is out of date: run make bundle (%v)", path, err)
		}
	}
	if have, err := os.ReadFile(filepath.Join(root, "bundle.Dockerfile")); err != nil || !bytes.Equal(have, bundle.Dockerfile()) {
		t.Errorf("bundle.Dockerfile is out of date: run make bundle (%v)", err)
	}
}

// The bundle passes the validators OLM and OperatorHub use, with no error.
func TestBundleValidates(t *testing.T) {
	b, err := olmmanifests.GetBundleFromDir(filepath.Join(testenv.RepoRoot(), "bundle"))
	if err != nil {
		t.Fatal(err)
	}
	// alm-examples use owned APIs, in versions the bundled CRDs serve.
	served := map[string]bool{}
	for _, crd := range b.V1CRDs {
		for _, v := range crd.Spec.Versions {
			if v.Served {
				served[crd.Spec.Group+"/"+v.Name+"/"+crd.Spec.Names.Kind] = true
			}
		}
	}
	owned := map[string]bool{}
	for _, o := range b.CSV.Spec.CustomResourceDefinitions.Owned {
		owned[o.Kind] = true
	}
	var examples []map[string]any
	if err := json.Unmarshal([]byte(b.CSV.Annotations["alm-examples"]), &examples); err != nil || len(examples) == 0 {
		t.Fatalf("alm-examples: %v", err)
	}
	for _, ex := range examples {
		apiVersion, _ := ex["apiVersion"].(string)
		kind, _ := ex["kind"].(string)
		if !owned[kind] || !served[apiVersion+"/"+kind] {
			t.Errorf("alm-example %s %s is not an owned API served by the bundle's CRDs", apiVersion, kind)
		}
	}

	validators := validation.DefaultBundleValidators.WithValidators(
		validation.OperatorHubV2Validator, validation.GoodPracticesValidator, validation.AlphaDeprecatedAPIsValidator)
	// As `operator-sdk bundle validate --select-optional suite=operatorframework` does: the bundle's
	// objects (CRDs, CSV, the bundle), so that the CSV's own checks run too.
	objs := append(b.ObjectsToValidate(), map[string]string{"k8s-version": "1.36"})
	results := validators.Validate(objs...)
	for _, r := range results {
		for _, e := range r.Errors {
			t.Errorf("%s: %s", r.Name, e.Error())
		}
		for _, w := range r.Warnings {
			if w.Level == errors.LevelWarn {
				t.Errorf("warning (%s): %s", r.Name, w.Error())
			}
		}
	}
}
