package cache

import (
	"unique"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
)

// lastApplied is where client-side `kubectl apply` (how the OSM guides apply SMI manifests) keeps a
// full copy of the object.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// StripTransform drops what no reconciler reads from every cached object: managed fields and
// kubectl's last-applied copy (which doubles an object's size in memory). It also interns strings:
// every decoded object has its own copy of each key ("metadata", "apiVersion", "type", ...) and of
// the values objects share (kinds, labels, condition types and reasons) — all of an unstructured
// object, the labels, owner references and condition types and reasons of a compact one (SMI and
// Istio objects).
func StripTransform(obj any) (any, error) {
	switch o := obj.(type) {
	case *unstructured.Unstructured:
		intern(o.Object)
	case Compact:
		// Decoding a typed object leaves its TypeMeta empty: normalize and writeStatus read the kind.
		o.GetObjectKind().SetGroupVersionKind(o.DefaultGVK())
		internMeta(o)
		if s, ok := o.(SMIObject); ok {
			conds := s.GetStatus().Conditions
			for i := range conds {
				conds[i].Type = unique.Make(conds[i].Type).Value()
				conds[i].Reason = unique.Make(conds[i].Reason).Value()
				conds[i].Status = metav1.ConditionStatus(unique.Make(string(conds[i].Status)).Value())
			}
		}
	}
	obj, err := crcache.TransformStripManagedFields()(obj)
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

// internMeta interns the labels and owner references of a typed object.
func internMeta(o metav1.Object) {
	if l := o.GetLabels(); l != nil {
		kept := make(map[string]string, len(l))
		for k, v := range l {
			kept[unique.Make(k).Value()] = unique.Make(v).Value()
		}
		o.SetLabels(kept)
	}
	refs := o.GetOwnerReferences()
	for i := range refs {
		refs[i].APIVersion = unique.Make(refs[i].APIVersion).Value()
		refs[i].Kind = unique.Make(refs[i].Kind).Value()
	}
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
