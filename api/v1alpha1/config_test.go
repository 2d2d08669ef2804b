package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/smi2istio/smi2istio/api/v1alpha1"
	"github.com/smi2istio/smi2istio/internal/testing/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, &env, testenv.Options{})) }

func create(t *testing.T, manifest string) error {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(manifest), &u.Object); err != nil {
		t.Fatal(err)
	}
	return env.Client.Create(context.Background(), u)
}

// An empty configuration is the default one: the apiserver fills in every default.
func TestDefaults(t *testing.T) {
	if err := v1alpha1.AddToScheme(env.Scheme); err != nil {
		t.Fatal(err)
	}
	if err := create(t, "{apiVersion: smi2istio.io/v1alpha1, kind: SMI2IstioConfig, metadata: {name: default}}"); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &v1alpha1.SMI2IstioConfig{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: v1alpha1.ConfigName}, cfg); err != nil {
		t.Fatal(err)
	}
	want := v1alpha1.SMI2IstioConfigSpec{AccessMode: v1alpha1.Enforcing, Membership: v1alpha1.Membership{Provider: v1alpha1.Auto},
		RegexPolicy: "Envoy", MinIstioVersion: "1.16", IstioNamespace: "istio-system",
		DataplaneMode: v1alpha1.DataplaneAuto, RouteAPI: v1alpha1.RouteVirtualService}
	if fmt.Sprint(cfg.Spec) != fmt.Sprint(want) {
		t.Errorf("defaults: got %+v, want %+v", cfg.Spec, want)
	}
	if err := c.Delete(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
}

func TestInvalidConfigRejected(t *testing.T) {
	for name, tc := range map[string]struct{ manifest, want string }{
		"unknown mode":      {"{apiVersion: smi2istio.io/v1alpha1, kind: SMI2IstioConfig, metadata: {name: default}, spec: {accessMode: Sometimes}}", `Unsupported value: "Sometimes"`},
		"unknown provider":  {"{apiVersion: smi2istio.io/v1alpha1, kind: SMI2IstioConfig, metadata: {name: default}, spec: {membership: {provider: Guess}}}", `Unsupported value: "Guess"`},
		"unknown policy":    {"{apiVersion: smi2istio.io/v1alpha1, kind: SMI2IstioConfig, metadata: {name: default}, spec: {regexPolicy: Ignore}}", `Unsupported value: "Ignore"`},
		"not a singleton":   {"{apiVersion: smi2istio.io/v1alpha1, kind: SMI2IstioConfig, metadata: {name: other}}", "SMI2IstioConfig is a singleton: its name must be default"},
		"explicit, no list": {"{apiVersion: smi2istio.io/v1alpha1, kind: SMI2IstioConfig, metadata: {name: default}, spec: {membership: {provider: Explicit}}}", "the Explicit provider needs spec.membership.namespaces"},
		"bad istio version": {"{apiVersion: smi2istio.io/v1alpha1, kind: SMI2IstioConfig, metadata: {name: default}, spec: {minIstioVersion: latest}}", "spec.minIstioVersion"},
		"bad OSM mesh name": {"{apiVersion: smi2istio.io/v1alpha1, kind: SMI2IstioConfig, metadata: {name: default}, spec: {membership: {provider: OSM, osmMeshName: 'a b'}}}", "spec.membership.osmMeshName"},
		"bad trust domain":  {"{apiVersion: smi2istio.io/v1alpha1, kind: SMI2IstioConfig, metadata: {name: default}, spec: {trustDomain: 'a/b'}}", "spec.trustDomain"},
	} {
		err := create(t, tc.manifest)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to say %q", name, err, tc.want)
		}
	}
}
