// Package olm installs the operator the way OLM's install strategy does, from a registry+v1 bundle
// directory alone (OLM itself cannot be built here), or from a plain install manifest
// (dist/install.yaml) the way `kubectl apply` does, and runs the Deployment it describes as a local
// process under its ServiceAccount's identity: the process's kubeconfig impersonates
// system:serviceaccount:<namespace>:<name>, so it holds exactly the rights the install granted.
//
// What OLM does, and what stands in for what it does on a cluster (see InstallBundle):
//   - the CRDs of bundle/manifests are created, or existing ones (an upgrade, or CRDs no CSV owns)
//     checked and replaced, first, as the InstallPlan does (installCRDs); then the CSV's requirements;
//   - the CSV's clusterPermissions become a ClusterRole and ClusterRoleBinding, its permissions a
//     Role and RoleBinding in the operator's namespace, for each ServiceAccount (created);
//   - the other bundle manifests (Services, ClusterRoles) are created as they are;
//   - for the CSV's webhookdefinitions: a Service <deployment>-service, a CA and a serving
//     certificate for it in the Secret <service>-cert (tls.crt, tls.key), mounted at
//     /tmp/k8s-webhook-server/serving-certs, a Role letting the ServiceAccount read that Secret,
//     and for a ConversionWebhook each conversionCRD's spec.conversion set to strategy Webhook,
//     the CA as caBundle and the definition's admissionReviewVersions;
//   - the Deployment runs as a local process (Process).
//
// Differences, all forced by running a process instead of a pod, none granting the operator more:
// the conversion webhook's clientConfig is a URL to the process on 127.0.0.1 instead of the Service
// (the apiserver cannot route to a Service here), so the serving certificate also names 127.0.0.1;
// the container's listen addresses become free loopback ports; the pod's filesystem is a directory
// (the /tmp emptyDir and the certificate mount under it); the in-cluster config is a kubeconfig
// impersonating the ServiceAccount. OLM grants more than the CSV asks for: system:auth-delegator
// and extension-apiserver-authentication-reader for a deployment with webhooks, and in
// AllNamespaces mode copies of `permissions` cluster-wide; none of that is granted here, so an
// operator that works here works with less than OLM gives it.
package olm

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/smi2istio/smi2istio/internal/manifests"
)

// Bundle is a registry+v1 bundle: its CSV, its CRDs and the other manifests OLM creates as they are.
type Bundle struct {
	CSV     *operatorsv1alpha1.ClusterServiceVersion
	CRDs    []*apiextv1.CustomResourceDefinition
	Objects []*unstructured.Unstructured
}

// ReadBundle reads a bundle directory (manifests/ and metadata/annotations.yaml), as OLM unpacks
// a bundle image.
func ReadBundle(dir string) (*Bundle, error) {
	ann, err := os.ReadFile(filepath.Join(dir, "metadata", "annotations.yaml"))
	if err != nil {
		return nil, fmt.Errorf("read the bundle's annotations: %w", err)
	}
	var meta struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := yaml.Unmarshal(ann, &meta); err != nil {
		return nil, fmt.Errorf("decode the bundle's annotations: %w", err)
	}
	if mt := meta.Annotations["operators.operatorframework.io.bundle.mediatype.v1"]; mt != "registry+v1" {
		return nil, fmt.Errorf("bundle media type %q, want registry+v1", mt)
	}
	sub := strings.TrimSuffix(meta.Annotations["operators.operatorframework.io.bundle.manifests.v1"], "/")
	if sub == "" {
		return nil, fmt.Errorf("the bundle's annotations name no manifests directory")
	}
	files, err := filepath.Glob(filepath.Join(dir, sub, "*.yaml"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	b := &Bundle{}
	for _, f := range files {
		objs, err := manifests.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for _, o := range objs {
			switch o.GetKind() {
			case "ClusterServiceVersion":
				if b.CSV != nil {
					return nil, fmt.Errorf("%s: a second CSV in the bundle", f)
				}
				b.CSV = &operatorsv1alpha1.ClusterServiceVersion{}
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, b.CSV); err != nil {
					return nil, fmt.Errorf("decode the CSV in %s: %w", f, err)
				}
			case "CustomResourceDefinition":
				crd := &apiextv1.CustomResourceDefinition{}
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, crd); err != nil {
					return nil, fmt.Errorf("decode the CRD in %s: %w", f, err)
				}
				b.CRDs = append(b.CRDs, crd)
			default:
				b.Objects = append(b.Objects, o)
			}
		}
	}
	if b.CSV == nil {
		return nil, fmt.Errorf("no ClusterServiceVersion in %s", filepath.Join(dir, sub))
	}
	return b, nil
}

// DeepCopy copies the bundle (to make the next version of it).
func (b *Bundle) DeepCopy() *Bundle {
	out := &Bundle{CSV: b.CSV.DeepCopy()}
	for _, c := range b.CRDs {
		out.CRDs = append(out.CRDs, c.DeepCopy())
	}
	for _, o := range b.Objects {
		out.Objects = append(out.Objects, o.DeepCopy())
	}
	return out
}

// CRD is the bundle's CRD of that name (nil if none).
func (b *Bundle) CRD(name string) *apiextv1.CustomResourceDefinition {
	for _, c := range b.CRDs {
		if c.Name == name {
			return c
		}
	}
	return nil
}
