// Package controllers reconciles SMI objects into the Istio objects translate computes. Every
// reconciler is one straight pipeline: fetch → translate → sync (internal/syncset: ownership,
// validation, ordered all-or-nothing apply, prune) → status (pure functions of the results).
package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/smi2istio/smi2istio/internal/syncset"
	"github.com/smi2istio/smi2istio/translate"
)

// FieldManager is the one server-side apply field manager of generated objects.
const FieldManager = "smi2istio"

// newSyncer is the sync step every reconciler writes through: server-side apply with the one field
// manager, every object validated as Istio would before anything is written.
// Reader (the manager's APIReader) is read before a guard is let go.
func newSyncer(c client.Client, reader client.Reader) *syncset.Syncer {
	return &syncset.Syncer{Client: c, Reader: reader, FieldManager: FieldManager, Validate: validateOutput, Writes: ownWrites}
}

// validateOutput checks a generated object before it is applied (translate.ValidateOutput: the
// rules Istio's validation applies to the fields we emit, and Envoy's own checks of the RBAC filter).
// Gateway API routes are checked by translate.ValidateGatewayOutput (the CRDs' rules for the
// fields we emit).
func validateOutput(u *unstructured.Unstructured) error {
	if u.GroupVersionKind().Group == HTTPRouteGVK.Group {
		return translate.ValidateGatewayOutput(u)
	}
	return translate.ValidateOutput(u)
}

// ownerRef makes owner the controller of generated objects (garbage collected with it).
func ownerRef(owner client.Object, apiVersion, kind string) metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion: apiVersion, Kind: kind, Name: owner.GetName(), UID: owner.GetUID(),
		Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
	}
}

// render turns translated objects into the desired objects of a set, each owned by owners.
func render(objs []runtime.Object, owners ...metav1.OwnerReference) ([]*unstructured.Unstructured, error) {
	out := make([]*unstructured.Unstructured, 0, len(objs))
	for _, o := range objs {
		u, err := translate.ToUnstructured(o)
		if err != nil {
			return nil, err
		}
		u.SetOwnerReferences(owners)
		out = append(out, u)
	}
	return out, nil
}

// forEachNamespace maps every namespace to requests (for resyncs).
func forEachNamespace(ctx context.Context, c client.Client, f func(ns string) []reconcile.Request) []reconcile.Request {
	var nss corev1.NamespaceList
	if err := c.List(ctx, &nss); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "list namespaces for resync")
		return nil
	}
	var out []reconcile.Request
	for _, ns := range nss.Items {
		out = append(out, f(ns.Name)...)
	}
	return out
}
