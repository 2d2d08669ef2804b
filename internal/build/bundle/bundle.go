// Package bundle generates the OLM bundle (registry+v1) from config/: the CSV base in
// config/manifests filled with the manager Deployment, its RBAC, the CRDs and the conversion
// webhook definition. The output is deterministic (no timestamps) so `make bundle` is reproducible.
package bundle

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/blang/semver/v4"
	olmversion "github.com/operator-framework/api/pkg/lib/version"
	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/smi2istio/smi2istio/internal/build/install"
	"github.com/smi2istio/smi2istio/internal/manifests"
	"github.com/smi2istio/smi2istio/internal/smi/conversion"
	"github.com/smi2istio/smi2istio/internal/smi/crds"
)

// Package and channel of the bundle.
const (
	Package = "smi2istio"
	Channel = "candidate"
)

// Annotations of bundle/metadata/annotations.yaml (and the bundle image's labels).
var Annotations = [][2]string{
	{"operators.operatorframework.io.bundle.mediatype.v1", "registry+v1"},
	{"operators.operatorframework.io.bundle.manifests.v1", "manifests/"},
	{"operators.operatorframework.io.bundle.metadata.v1", "metadata/"},
	{"operators.operatorframework.io.bundle.package.v1", Package},
	{"operators.operatorframework.io.bundle.channels.v1", Channel},
	{"operators.operatorframework.io.bundle.channel.default.v1", Channel},
}

// Build returns the bundle's files (paths relative to bundle/) for a version and manager image.
func Build(repoRoot, version, image string) (map[string][]byte, error) {
	rendered, err := install.Render(filepath.Join(repoRoot, "config", "default"))
	if err != nil {
		return nil, err
	}
	if rendered, err = install.WithImage(rendered, image); err != nil {
		return nil, err
	}
	objs, err := manifests.Decode(rendered)
	if err != nil {
		return nil, err
	}
	base, err := os.ReadFile(filepath.Join(repoRoot, "config", "manifests", "bases", Package+".clusterserviceversion.yaml"))
	if err != nil {
		return nil, fmt.Errorf("read the CSV base: %w", err)
	}
	csv := &operatorsv1alpha1.ClusterServiceVersion{}
	if err := yaml.UnmarshalStrict(base, csv); err != nil {
		return nil, fmt.Errorf("decode the CSV base: %w", err)
	}
	files := map[string][]byte{}
	// ClusterRoles bound to the operator by RoleBindings (in namespaces other than its own).
	boundInNamespaces := map[string]bool{}
	for _, o := range objs {
		if kind, _, _ := unstructured.NestedString(o.Object, "roleRef", "kind"); o.GetKind() == "RoleBinding" && kind == "ClusterRole" {
			name, _, _ := unstructured.NestedString(o.Object, "roleRef", "name")
			boundInNamespaces[name] = true
		}
	}
	var clusterRules []rbacv1.PolicyRule
	var conversionCRDs []string
	var crdObjs []*unstructured.Unstructured
	for _, o := range objs {
		switch o.GetKind() {
		case "CustomResourceDefinition":
			crdObjs = append(crdObjs, o)
			data, err := yaml.Marshal(o.Object)
			if err != nil {
				return nil, err
			}
			group, _, _ := unstructured.NestedString(o.Object, "spec", "group")
			plural, _, _ := unstructured.NestedString(o.Object, "spec", "names", "plural")
			files["manifests/"+group+"_"+plural+".yaml"] = data
			if strategy, _, _ := unstructured.NestedString(o.Object, "spec", "conversion", "strategy"); strategy == "Webhook" {
				conversionCRDs = append(conversionCRDs, o.GetName())
			}
		case "Deployment":
			dep := &appsv1.Deployment{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, dep); err != nil {
				return nil, err
			}
			csv.Spec.InstallStrategy.StrategySpec.DeploymentSpecs = []operatorsv1alpha1.StrategyDeploymentSpec{{
				Name: dep.Name, Label: dep.Labels, Spec: dep.Spec,
			}}
			csv.Annotations["containerImage"] = image
		case "ClusterRole":
			if !strings.HasSuffix(o.GetName(), "manager-role") && !boundInNamespaces[o.GetName()] {
				// Another ClusterRole (metrics-reader, for Prometheus): not the operator's, a bundle
				// object OLM creates as is.
				if err := addManifest(files, o, "rbac.authorization.k8s.io_v1_clusterrole"); err != nil {
					return nil, err
				}
				continue
			}
			role := &rbacv1.ClusterRole{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, role); err != nil {
				return nil, err
			}
			// Under OLM the webhook certificate and the CRDs' caBundle are OLM's: the operator needs
			// no right to patch CRDs (the caBundle rule); it keeps reading the SMI CRDs and updating
			// their status (storage migration: controllers/storagemigration.go). A ClusterRole config/ binds in some namespaces only
			// (mesh-config-reader, in Istio's) is granted cluster-wide: a CSV cannot name another
			// namespace than the operator's (docs/decisions.md, "ConfigMaps").
			for _, rule := range role.Rules {
				if len(rule.APIGroups) == 1 && rule.APIGroups[0] == "apiextensions.k8s.io" && slices.Contains(rule.Verbs, "patch") {
					continue
				}
				clusterRules = append(clusterRules, rule)
			}
		case "Role":
			role := &rbacv1.Role{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, role); err != nil {
				return nil, err
			}
			csv.Spec.InstallStrategy.StrategySpec.Permissions = []operatorsv1alpha1.StrategyDeploymentPermissions{{
				ServiceAccountName: "smi2istio-controller-manager", Rules: role.Rules,
			}}
		case "Service":
			// The metrics Service; the webhook Service is OLM's to create (webhookdefinitions).
			if strings.HasSuffix(o.GetName(), "metrics-service") {
				if err := addManifest(files, o, "v1_service"); err != nil {
					return nil, err
				}
			}
		}
		// Namespace, ServiceAccount and bindings are OLM's to create.
	}
	csv.Spec.InstallStrategy.StrategySpec.ClusterPermissions = []operatorsv1alpha1.StrategyDeploymentPermissions{{
		ServiceAccountName: "smi2istio-controller-manager", Rules: clusterRules,
	}}
	sort.Strings(conversionCRDs)
	// OLM provides the conversion webhook's certificate and points the CRDs at its own Service.
	csv.Spec.WebhookDefinitions = []operatorsv1alpha1.WebhookDescription{{
		GenerateName:            "csmi2istio.smi2istio.io",
		Type:                    operatorsv1alpha1.ConversionWebhook,
		DeploymentName:          "smi2istio-controller-manager",
		ContainerPort:           443,
		TargetPort:              ptr.To(intstr.FromInt32(9443)),
		SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
		AdmissionReviewVersions: []string{"v1"},
		WebhookPath:             ptr.To(crds.ConversionPath),
		ConversionCRDs:          conversionCRDs,
	}}
	if csv.Spec.CustomResourceDefinitions.Owned, err = ownedPerVersion(csv.Spec.CustomResourceDefinitions.Owned, crdObjs); err != nil {
		return nil, err
	}
	examples, err := almExamples(repoRoot, csv.Spec.CustomResourceDefinitions.Owned)
	if err != nil {
		return nil, err
	}
	csv.Annotations["alm-examples"] = examples
	csv.Name = Package + ".v" + version
	csv.Namespace = ""
	v, err := semver.Parse(version)
	if err != nil {
		return nil, fmt.Errorf("version %q: %w", version, err)
	}
	csv.Spec.Version = olmversion.OperatorVersion{Version: v}
	data, err := yaml.Marshal(csv)
	if err != nil {
		return nil, err
	}
	var clean map[string]any // drop the empty status and timestamps a typed marshal adds
	if err := yaml.Unmarshal(data, &clean); err != nil {
		return nil, err
	}
	delete(clean, "status")
	delete(clean["metadata"].(map[string]any), "creationTimestamp")
	if data, err = yaml.Marshal(clean); err != nil {
		return nil, err
	}
	files["manifests/"+Package+".clusterserviceversion.yaml"] = data
	ann := map[string]map[string]string{"annotations": {}}
	for _, a := range Annotations {
		ann["annotations"][a[0]] = a[1]
	}
	if files["metadata/annotations.yaml"], err = yaml.Marshal(ann); err != nil {
		return nil, err
	}
	return files, nil
}

// ownedPerVersion lists every served version of every owned CRD (OLM lists owned APIs per version,
// and users write old ones: OSM's split v1alpha2, access v1alpha3), with the base's display name and
// description of its kind.
func ownedPerVersion(base []operatorsv1alpha1.CRDDescription, crdObjs []*unstructured.Unstructured) ([]operatorsv1alpha1.CRDDescription, error) {
	byName := map[string]*unstructured.Unstructured{}
	for _, c := range crdObjs {
		byName[c.GetName()] = c
	}
	var out []operatorsv1alpha1.CRDDescription
	for _, d := range base {
		crd := byName[d.Name]
		if crd == nil {
			return nil, fmt.Errorf("the CSV base owns %s, which config/ does not define", d.Name)
		}
		versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
		for _, v := range versions {
			vm, _ := v.(map[string]any)
			if served, _ := vm["served"].(bool); !served {
				continue
			}
			e := d
			e.Version, _ = vm["name"].(string)
			out = append(out, e)
		}
	}
	return out, nil
}

// udpRouteExample is the UDPRoute example (OSM's demos have none).
var udpRouteExample = map[string]any{
	"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "UDPRoute",
	"metadata": map[string]any{"name": "dns", "namespace": "bookstore"},
	"spec":     map[string]any{"matches": []any{map[string]any{"name": "dns", "ports": []any{int64(53)}}}},
}

// addManifest adds an object OLM creates from the bundle as it is, in the operator's namespace.
func addManifest(files map[string][]byte, o *unstructured.Unstructured, suffix string) error {
	o = o.DeepCopy()
	unstructured.RemoveNestedField(o.Object, "metadata", "namespace")
	data, err := yaml.Marshal(o.Object)
	if err != nil {
		return err
	}
	files["manifests/"+o.GetName()+"_"+suffix+".yaml"] = data
	return nil
}

// almExamples shows an object of every owned API in every owned version: the configuration sample
// and OSM's demo objects, converted to each version as the conversion webhook would.
func almExamples(repoRoot string, owned []operatorsv1alpha1.CRDDescription) (string, error) {
	byKind := map[string]map[string]any{}
	sample, err := manifests.ReadFile(filepath.Join(repoRoot, "config", "samples", "smi2istio_v1alpha1_smi2istioconfig.yaml"))
	if err != nil {
		return "", err
	}
	for _, s := range sample {
		byKind[s.GetKind()] = s.Object
	}
	fixtures := filepath.Join(repoRoot, "testdata", "fixtures", "osm-v1.2-bookstore")
	for _, f := range []string{"split/traffic-split-50-50.yaml", "access/traffic-access-v1.yaml"} {
		docs, err := manifests.ReadFile(filepath.Join(fixtures, f))
		if err != nil {
			return "", err
		}
		for _, d := range docs {
			if byKind[d.GetKind()] == nil {
				byKind[d.GetKind()] = d.Object
			}
		}
	}
	byKind["UDPRoute"] = udpRouteExample
	var out []map[string]any
	for _, o := range owned {
		ex := byKind[o.Kind]
		if ex == nil {
			return "", fmt.Errorf("no example of %s", o.Kind)
		}
		group := strings.SplitN(o.Name, ".", 2)[1]
		want := group + "/" + o.Version
		if ex["apiVersion"] != want {
			raw, err := json.Marshal(ex)
			if err != nil {
				return "", err
			}
			converted, err := conversion.Convert(raw, want)
			if err != nil {
				return "", fmt.Errorf("convert the %s example to %s: %w", o.Kind, want, err)
			}
			var m map[string]any
			if err := json.Unmarshal(converted, &m); err != nil {
				return "", err
			}
			ex = m
		}
		out = append(out, ex)
	}
	data, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return "", err
	}
	return string(data), nil
}

// Dockerfile is bundle.Dockerfile: the bundle image, labelled like annotations.yaml.
func Dockerfile() []byte {
	s := "FROM scratch\n\n"
	for _, a := range Annotations {
		s += fmt.Sprintf("LABEL %s=%s\n", a[0], a[1])
	}
	s += "\nCOPY bundle/manifests /manifests/\nCOPY bundle/metadata /metadata/\n"
	return []byte(s)
}
