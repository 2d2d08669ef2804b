package controllers

import (
	"context"
	"fmt"
	"sort"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/api/v1alpha1"
	"github.com/smi2istio/smi2istio/internal/membership"
)

// AccessModeSourceAnnotation, on an SMI2IstioConfig the operator created, says where its
// spec.accessMode came from ("<mode>: <source>"); the status reports it while the mode is unchanged.
const AccessModeSourceAnnotation = "smi2istio.io/access-mode-source"

// maxForeignNames bounds the names listed per kind on the status.
const maxForeignNames = 50

// +kubebuilder:rbac:groups=config.openservicemesh.io,resources=meshconfigs,verbs=get;list
// +kubebuilder:rbac:groups=policy.openservicemesh.io,resources=egresses;ingressbackends;retries;upstreamtrafficsettings,verbs=list

// ReadOSMAccessMode reads Open Service Mesh's MeshConfigs (membership.OSMAccessMode); found is false
// when the kind is not served or none exists (no OSM). Fail closed: MeshConfigs that cannot be
// listed give Enforcing, and source says why.
func ReadOSMAccessMode(ctx context.Context, c client.Reader, mapper meta.RESTMapper) (mode v1alpha1.AccessMode, source string, found bool) {
	mapping, err := mapper.RESTMapping(membership.OSMMeshConfigGK)
	if meta.IsNoMatchError(err) {
		return "", "", false
	}
	if err != nil {
		return v1alpha1.Enforcing, fmt.Sprintf("Open Service Mesh's MeshConfig kind could not be looked up (%v): Enforcing, failing closed", err), true
	}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(mapping.GroupVersionKind.GroupVersion().WithKind(mapping.GroupVersionKind.Kind + "List"))
	if err := c.List(ctx, list); err != nil {
		return v1alpha1.Enforcing, fmt.Sprintf("Open Service Mesh's MeshConfigs could not be listed (%v): Enforcing, failing closed", err), true
	}
	mode, source = membership.OSMAccessMode(list.Items)
	return mode, source, mode != ""
}

// defaultConfig is the SMI2IstioConfig the operator creates when there is none: the defaults,
// with the access mode of Open Service Mesh's MeshConfig when one exists (and where it came from).
func defaultConfig(ctx context.Context, c client.Reader, mapper meta.RESTMapper) *v1alpha1.SMI2IstioConfig {
	cfg := &v1alpha1.SMI2IstioConfig{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.ConfigName}}
	if mode, source, found := ReadOSMAccessMode(ctx, c, mapper); found {
		cfg.Spec.AccessMode = mode
		cfg.Annotations = map[string]string{AccessModeSourceAnnotation: string(mode) + ": " + source}
	}
	return cfg
}

// accessModeSource is the status's accessModeSource: the annotation written with a created config
// while the mode is the one it recorded, else the config's spec.
func accessModeSource(cfg *v1alpha1.SMI2IstioConfig, mode v1alpha1.AccessMode) string {
	if a, ok := cfg.Annotations[AccessModeSourceAnnotation]; ok {
		if recorded, source, ok := strings.Cut(a, ": "); ok && v1alpha1.AccessMode(recorded) == mode {
			return "taken from " + source + " when the operator created this configuration"
		}
	}
	return "spec.accessMode of SMI2IstioConfig " + cfg.Name
}

// countForeign counts and names the objects of OSM's policy kinds that are served (metadata only,
// read from the apiserver: nothing is cached). Kinds not served are left out.
func countForeign(ctx context.Context, c client.Reader, mapper meta.RESTMapper) ([]v1alpha1.ForeignObjects, error) {
	var out []v1alpha1.ForeignObjects
	for _, gk := range membership.OSMPolicyGKs {
		mapping, err := mapper.RESTMapping(gk)
		if meta.IsNoMatchError(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("look up %s: %w", gk, err)
		}
		list := &metav1.PartialObjectMetadataList{}
		list.SetGroupVersionKind(mapping.GroupVersionKind.GroupVersion().WithKind(gk.Kind + "List"))
		if err := c.List(ctx, list); err != nil {
			if apierrors.IsNotFound(err) { // the CRD deleted since the mapper cached it
				continue
			}
			return nil, fmt.Errorf("list %s: %w", gk, err)
		}
		if len(list.Items) == 0 {
			continue
		}
		f := v1alpha1.ForeignObjects{Kind: gk.String(), Count: int32(len(list.Items))}
		for i := range list.Items {
			f.Names = append(f.Names, list.Items[i].Namespace+"/"+list.Items[i].Name)
		}
		sort.Strings(f.Names)
		if len(f.Names) > maxForeignNames {
			f.Names = f.Names[:maxForeignNames]
		}
		out = append(out, f)
	}
	return out, nil
}
