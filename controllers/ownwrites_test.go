package controllers

import (
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/smi2istio/smi2istio/internal/cache"
)

// A route group's status write does not reach the reconcilers that read route groups; its spec,
// metadata, creation and deletion do, and so does anything that is not a cached SMI object.
func TestIgnoreStatusWrites(t *testing.T) {
	group := func(spec string, conds ...metav1.Condition) *cache.SMI[cache.HTTPRouteGroup] {
		o := &cache.SMI[cache.HTTPRouteGroup]{Spec: json.RawMessage(spec)}
		o.Namespace, o.Name, o.ResourceVersion = "shop", "routes", "1"
		o.Status.Conditions = conds
		return o
	}
	ready := metav1.Condition{Type: "Ready", Status: metav1.ConditionTrue}
	before := group(`{"matches":[]}`)
	statusOnly := group(`{"matches":[]}`, ready)
	statusOnly.ResourceVersion = "2"
	specChanged := group(`{"matches":[{"name":"a"}]}`, ready)
	specChanged.ResourceVersion = "3"
	if ignoreStatusWrites.Update(event.UpdateEvent{ObjectOld: before, ObjectNew: statusOnly}) {
		t.Error("a status write passed")
	}
	if !ignoreStatusWrites.Update(event.UpdateEvent{ObjectOld: before, ObjectNew: specChanged}) {
		t.Error("a spec change was dropped")
	}
	if !ignoreStatusWrites.Create(event.CreateEvent{Object: before}) || !ignoreStatusWrites.Delete(event.DeleteEvent{Object: statusOnly}) {
		t.Error("a create or delete was dropped")
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "api", ResourceVersion: "1"}}
	if !ignoreStatusWrites.Update(event.UpdateEvent{ObjectOld: sa, ObjectNew: sa.DeepCopy()}) {
		t.Error("an update of an object that is not a cached SMI object was dropped")
	}
}
