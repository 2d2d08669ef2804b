package install_test

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/smi2istio/smi2istio/internal/build/install"
	"github.com/smi2istio/smi2istio/internal/testing/testenv"
)

// config/certmanager is config/default with cert-manager providing the webhook's certificate: the
// operator keeps every argument and is told the certificate is provided, the Certificate's Secret
// is mounted where the webhook server reads it, the Certificate names the webhook Service, and
// every CRD that converts through the webhook gets its caBundle from that Certificate.
func TestCertManagerOverlay(t *testing.T) {
	base, err := install.Objects(filepath.Join(testenv.RepoRoot(), "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := install.Objects(filepath.Join(testenv.RepoRoot(), "config", "certmanager"))
	if err != nil {
		t.Fatal(err)
	}
	baseArgs, err := install.ManagerArgs(base)
	if err != nil {
		t.Fatal(err)
	}
	args, err := install.ManagerArgs(objs)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range baseArgs {
		if !slices.Contains(args, a) {
			t.Errorf("argument %s of config/default lost", a)
		}
	}
	if !slices.Contains(args, "--webhook-cert-mode=provided") {
		t.Errorf("args %v: the operator is not told its certificate is provided", args)
	}
	byKind := map[string][]*unstructured.Unstructured{}
	for _, o := range objs {
		byKind[o.GetKind()] = append(byKind[o.GetKind()], o)
	}
	var svc *unstructured.Unstructured
	for _, o := range byKind["Service"] {
		if strings.HasSuffix(o.GetName(), "webhook-service") {
			svc = o
		}
	}
	if len(byKind["Certificate"]) != 1 || svc == nil || len(byKind["Deployment"]) != 1 {
		t.Fatalf("%d Certificates, webhook Service %v, %d Deployments", len(byKind["Certificate"]), svc != nil, len(byKind["Deployment"]))
	}
	cert, dep := byKind["Certificate"][0], byKind["Deployment"][0]
	dns, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
	if want := svc.GetName() + "." + svc.GetNamespace() + ".svc"; !slices.Contains(dns, want) {
		t.Errorf("the Certificate's dnsNames %v lack the webhook Service %s", dns, want)
	}
	secret, _, _ := unstructured.NestedString(cert.Object, "spec", "secretName")
	volumes, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "volumes")
	containers, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
	mounts, _, _ := unstructured.NestedSlice(containers[0].(map[string]any), "volumeMounts")
	mounted := false
	for _, v := range volumes {
		name, _, _ := unstructured.NestedString(v.(map[string]any), "name")
		if s, _, _ := unstructured.NestedString(v.(map[string]any), "secret", "secretName"); s != secret {
			continue
		}
		for _, m := range mounts {
			mm := m.(map[string]any)
			if mm["name"] == name && mm["mountPath"] == "/tmp/k8s-webhook-server/serving-certs" {
				mounted = true
			}
		}
	}
	if !mounted {
		t.Errorf("the Certificate's Secret %s is not mounted at the webhook server's certificate directory", secret)
	}
	converting := 0
	for _, crd := range byKind["CustomResourceDefinition"] {
		if s, _, _ := unstructured.NestedString(crd.Object, "spec", "conversion", "strategy"); s != "Webhook" {
			continue
		}
		converting++
		if got := crd.GetAnnotations()["cert-manager.io/inject-ca-from"]; got != cert.GetNamespace()+"/"+cert.GetName() {
			t.Errorf("CRD %s gets its caBundle from %q, want the Certificate %s/%s", crd.GetName(), got, cert.GetNamespace(), cert.GetName())
		}
	}
	if converting == 0 {
		t.Error("no CRD converts through the webhook")
	}
}
