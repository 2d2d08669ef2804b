package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"unique"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/translate"
)

// CacheOptions is the manager cache the reconcilers are built for: no managedFields anywhere,
// Services trimmed to what translation reads, generated Istio objects kept as metadata plus a hash
// of their spec, and of ConfigMaps only Istio's mesh config. Pods and pod templates are not in it:
// the access reconciler has its own compact index of them (internal/workloads).
func CacheOptions() cache.Options {
	// Istio's kinds are told apart in the default transform, not by ByObject entries: those need
	// Istio's CRDs to be served when the manager is made, and the operator may start before Istio.
	return cache.Options{
		DefaultTransform: func(obj any) (any, error) {
			if u, ok := obj.(*unstructured.Unstructured); ok && istioGroups[u.GroupVersionKind().Group] {
				return GeneratedTransform(obj)
			}
			return StripTransform(obj)
		},
		ByObject: map[client.Object]cache.ByObject{
			// Only Istio's mesh config is read: never cache other ConfigMaps.
			&corev1.ConfigMap{}: {Field: fields.OneTermEqualSelector("metadata.name", "istio")},
			&corev1.Service{}:   {Transform: ServiceTransform},
		},
	}
}

// istioGroups are the API groups of the Istio kinds the operator generates.
var istioGroups = map[string]bool{VirtualServiceGVK.Group: true, AuthorizationPolicyGVK.Group: true}

// lastApplied is where client-side `kubectl apply` (how the OSM guides apply SMI manifests) keeps a
// full copy of the object.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// StripTransform drops what no reconciler reads from every cached object: managed fields and
// kubectl's last-applied copy (which doubles an object's size in memory). Of an unstructured object
// (SMI and Istio objects) it also interns the strings: every decoded object has its own copy of each
// key ("metadata", "apiVersion", "type", ...) and of the values objects share (kinds, labels,
// condition types and reasons).
func StripTransform(obj any) (any, error) {
	if u, ok := obj.(*unstructured.Unstructured); ok {
		intern(u.Object)
	}
	obj, err := cache.TransformStripManagedFields()(obj)
	if err != nil {
		return obj, err
	}
	if m, ok := obj.(metav1.Object); ok {
		if a := m.GetAnnotations(); a[lastApplied] != "" {
			kept := make(map[string]string, len(a)-1)
			for k, v := range a {
				if k != lastApplied {
					kept[k] = v
				}
			}
			m.SetAnnotations(kept)
		}
	}
	return obj, nil
}

// internMax is the longest string value interned: longer ones are seldom shared.
const internMax = 64

// intern replaces, in place, the keys and short string values of decoded JSON by canonical copies.
func intern(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, val := range v {
			// Assigning to an existing key stores the new (canonical) key string too.
			v[unique.Make(k).Value()] = intern(val)
		}
	case []any:
		for i := range v {
			v[i] = intern(v[i])
		}
	case string:
		if len(v) <= internMax {
			return unique.Make(v).Value()
		}
	}
	return v
}

// ServiceTransform keeps of a Service what translation reads: its identity, ports and selector.
func ServiceTransform(obj any) (any, error) {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return obj, nil
	}
	return &corev1.Service{
		TypeMeta: svc.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: svc.Name, Namespace: svc.Namespace, UID: svc.UID, ResourceVersion: svc.ResourceVersion,
			Generation: svc.Generation, Labels: svc.Labels, DeletionTimestamp: svc.DeletionTimestamp},
		Spec: corev1.ServiceSpec{Ports: svc.Spec.Ports, Selector: svc.Spec.Selector},
	}, nil
}

// SpecHashAnnotation exists in the cache only: on a generated object (ManagedByLabel) the
// GeneratedTransform replaces the spec by its hash here, keeping just the hosts the field indexes
// and fan-ins read. upToDate compares the desired spec's hash with it.
const SpecHashAnnotation = "smi2istio.io/cached-spec-hash"

// GeneratedTransform keeps of an Istio object this operator generated its metadata, the hosts of
// its spec (VirtualService hosts, DestinationRule host) and a hash of the whole spec as it is in the
// cluster, so that a hand edit still shows. Objects of others are kept whole (after StripTransform).
func GeneratedTransform(obj any) (any, error) {
	obj, err := StripTransform(obj)
	if err != nil {
		return obj, err
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok || u.GetLabels()[translate.ManagedByLabel] != translate.ManagedByValue {
		return obj, nil
	}
	spec, _ := u.Object["spec"].(map[string]any)
	hash, err := specHash(spec)
	if err != nil {
		return u, nil // kept whole: compared in full
	}
	kept := map[string]any{}
	for _, k := range []string{"hosts", "host"} {
		if v, ok := spec[k]; ok {
			kept[k] = v
		}
	}
	annotations := u.GetAnnotations()
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[SpecHashAnnotation] = hash
	u.SetAnnotations(annotations)
	u.Object["spec"] = kept
	delete(u.Object, "status")
	return u, nil
}

// specHash is the SHA-256 of a spec's JSON (map keys sorted by encoding/json, so equal content
// hashes equally whatever the numeric types of the decoded maps).
func specHash(spec any) (string, error) {
	raw, err := json.Marshal(spec)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:16]), nil
}
