package cache

import (
	"bytes"
	"encoding/json"
	"slices"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// SMI is the cached form of an SMI object of kind K: its metadata, its spec as the JSON the cluster
// sent (normalize decodes it when a reconcile reads it) and its status. It encodes back into the
// object it was decoded from (the spec verbatim).
type SMI[K Kind] struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              json.RawMessage `json:"spec,omitempty"`
	Status            Status          `json:"status,omitzero"`
}

// Status is the status every SMI kind has here: the conditions the operator writes (DESIGN §7).
type Status struct {
	ObservedGeneration int64              `json:"observedGeneration,omitempty"`
	Conditions         []metav1.Condition `json:"conditions,omitempty"`
}

// UnmarshalJSON decodes the status, or drops one it cannot read. Where a kind has no status
// subresource (another installer's CRD, --smi-crds=foreign) and keeps unknown fields, anyone who
// writes an object writes its status too: one of the wrong shape (observedGeneration a string)
// must not fail the decoding of the object, which would fail every list of the kind and freeze
// the cache's view of it (a deleted TrafficTarget kept allowed). The operator never trusts such a
// status (its conditions for those kinds are in its own memory, reported by Events).
func (s *Status) UnmarshalJSON(b []byte) error {
	type plain Status
	var out plain
	if err := json.Unmarshal(b, &out); err != nil {
		*s = Status{}
		return nil //nolint:nilerr // unreadable: as if there were none
	}
	*s = Status(out)
	return nil
}

// SMIObject is a cached SMI object of any kind.
type SMIObject interface {
	Compact
	GetStatus() *Status
	// StatusOnlyChange reports whether the object became next by a change of its status alone
	// (resourceVersion and managedFields aside): spec and the rest of metadata are equal.
	StatusOnlyChange(next SMIObject) bool
}

// SMIObjectList is a list of cached SMI objects of one kind.
type SMIObjectList interface {
	client.ObjectList
	Objects() []SMIObject
}

// GetStatus is the object's status (not a copy).
func (o *SMI[K]) GetStatus() *Status { return &o.Status }

// StatusOnlyChange implements SMIObject.
func (o *SMI[K]) StatusOnlyChange(next SMIObject) bool {
	n, ok := next.(*SMI[K])
	if !ok || o.TypeMeta != n.TypeMeta || !bytes.Equal(o.Spec, n.Spec) {
		return false
	}
	om, nm := o.ObjectMeta, n.ObjectMeta
	om.ResourceVersion, nm.ResourceVersion = "", ""
	om.ManagedFields, nm.ManagedFields = nil, nil
	return equality.Semantic.DeepEqual(om, nm)
}

// DefaultGVK is the kind K.
func (o *SMI[K]) DefaultGVK() schema.GroupVersionKind {
	var k K
	return k.GVK()
}

// DeepCopyInto copies o into out.
func (o *SMI[K]) DeepCopyInto(out *SMI[K]) {
	*out = SMI[K]{TypeMeta: o.TypeMeta, Spec: slices.Clone(o.Spec),
		Status: Status{ObservedGeneration: o.Status.ObservedGeneration}}
	o.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	if o.Status.Conditions != nil {
		out.Status.Conditions = make([]metav1.Condition, len(o.Status.Conditions))
		for i := range o.Status.Conditions {
			o.Status.Conditions[i].DeepCopyInto(&out.Status.Conditions[i])
		}
	}
}

// DeepCopy copies o.
func (o *SMI[K]) DeepCopy() *SMI[K] {
	if o == nil {
		return nil
	}
	out := new(SMI[K])
	o.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (o *SMI[K]) DeepCopyObject() runtime.Object { return o.DeepCopy() }

// SMIList is a list of cached SMI objects of kind K.
type SMIList[K Kind] struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []SMI[K] `json:"items"`
}

// Objects are the list's items.
func (l *SMIList[K]) Objects() []SMIObject {
	out := make([]SMIObject, len(l.Items))
	for i := range l.Items {
		out[i] = &l.Items[i]
	}
	return out
}

// DeepCopyInto copies l into out.
func (l *SMIList[K]) DeepCopyInto(out *SMIList[K]) {
	*out = SMIList[K]{TypeMeta: l.TypeMeta}
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	if l.Items != nil {
		out.Items = make([]SMI[K], len(l.Items))
		for i := range l.Items {
			l.Items[i].DeepCopyInto(&out.Items[i])
		}
	}
}

// DeepCopyObject implements runtime.Object.
func (l *SMIList[K]) DeepCopyObject() runtime.Object {
	out := new(SMIList[K])
	l.DeepCopyInto(out)
	return out
}
