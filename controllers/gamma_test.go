package controllers_test

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/controllers"
	"github.com/smi2istio/smi2istio/internal/membership"
)

func httpRouteObj() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(controllers.HTTPRouteGVK)
	return u
}

// ambientNamespace creates a namespace in the mesh labelled only for Istio's ambient data plane.
func ambientNamespace(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("amb%d", nsCounter.Add(1))
	err := env.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name,
		Labels: map[string]string{membership.DataplaneModeLabel: membership.DataplaneAmbient}}})
	if err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	return name
}

// relabel replaces a namespace's labels.
func relabel(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	ns := &corev1.Namespace{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Name: name}, ns); err != nil {
		t.Fatal(err)
	}
	ns.Labels = labels
	if err := env.Client.Update(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
}

// backendWeights reads "<service>:<port>=<weight>" of every backendRef of an HTTPRoute's first rule.
func backendWeights(u *unstructured.Unstructured) []string {
	rules, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules")
	if len(rules) == 0 {
		return nil
	}
	refs, _, _ := unstructured.NestedSlice(rules[0].(map[string]any), "backendRefs")
	var out []string
	for _, r := range refs {
		m := r.(map[string]any)
		name, _, _ := unstructured.NestedString(m, "name")
		port, _, _ := unstructured.NestedInt64(m, "port")
		weight, _, _ := unstructured.NestedInt64(m, "weight")
		out = append(out, fmt.Sprintf("%s:%d=%d", name, port, weight))
	}
	sort.Strings(out)
	return out
}

func waitHTTPRoute(t *testing.T, ns, name string, want []string) *unstructured.Unstructured {
	t.Helper()
	var got *unstructured.Unstructured
	eventually(t, "HTTPRoute "+ns+"/"+name+" routes "+strings.Join(want, ", "), func() error {
		u, err := get(httpRouteObj(), ns, name)
		if err != nil {
			return err
		}
		if w := backendWeights(u); !reflect.DeepEqual(w, want) {
			return fmt.Errorf("backends %v", w)
		}
		got = u
		return nil
	})
	return got
}

// A TrafficSplit in an ambient namespace becomes an HTTPRoute attached to its root Service (no
// VirtualService, no DestinationRule); relabelling the namespace for sidecars moves it to a
// VirtualService and prunes the route, and back. Unchanged, nothing is written.
func TestAmbientSplitIsAnHTTPRoute(t *testing.T) {
	ns := ambientNamespace(t)
	applyYAML(t, ns, subsetServices)
	applyYAML(t, ns, splitYAML("canary", 90, 10))
	route := waitHTTPRoute(t, ns, "web", []string{"web-v1:80=90", "web-v2:80=10"})
	parents, _, _ := unstructured.NestedSlice(route.Object, "spec", "parentRefs")
	if len(parents) != 1 || parents[0].(map[string]any)["kind"] != "Service" || parents[0].(map[string]any)["name"] != "web" {
		t.Errorf("parentRefs %v, want the root Service web", parents)
	}
	if owners := route.GetOwnerReferences(); len(owners) != 1 || owners[0].Kind != "TrafficSplit" || owners[0].Name != "canary" {
		t.Errorf("owners %v", owners)
	}
	waitCondition(t, ns, "canary", "Ready", "True", controllers.ReasonApplied)
	if _, _, msg, _, _ := condition(ns, "canary", "Accepted"); !strings.Contains(msg, "ambient data plane") {
		t.Errorf("Accepted says %q, want it to name the ambient data plane", msg)
	}
	if _, err := get(vsObj(), ns, "web"); !apierrors.IsNotFound(err) {
		t.Errorf("an ambient namespace gets no VirtualService: %v", err)
	}
	assertNoWrites(t, ns, "canary")

	relabel(t, ns, map[string]string{"istio-injection": "enabled"})
	eventually(t, "a VirtualService for web once the namespace is for sidecars", func() error {
		_, err := get(vsObj(), ns, "web")
		return err
	})
	waitGone(t, httpRouteObj(), ns, "web")
	eventually(t, "Accepted names the sidecar data plane after relabelling", func() error {
		if _, _, msg, _, _ := condition(ns, "canary", "Accepted"); !strings.Contains(msg, "sidecar data plane") {
			return fmt.Errorf("Accepted says %q", msg)
		}
		return nil
	})

	relabel(t, ns, map[string]string{membership.DataplaneModeLabel: membership.DataplaneAmbient})
	waitHTTPRoute(t, ns, "web", []string{"web-v1:80=90", "web-v2:80=10"})
	waitGone(t, vsObj(), ns, "web")
	waitGone(t, drObj(), ns, "web")
}

// A user's HTTPRoute attached to the root Service blocks the split, in either route API; the
// user's route is never touched and ours comes once it is gone.
func TestUserHTTPRouteConflict(t *testing.T) {
	for _, ambient := range []bool{true, false} {
		t.Run(fmt.Sprintf("ambient=%v", ambient), func(t *testing.T) {
			ns := freshNamespace(t)
			if ambient {
				ns = ambientNamespace(t)
			}
			applyYAML(t, ns, subsetServices+`
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: hand-written}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules: [{backendRefs: [{name: web-v1, port: 80}]}]
`)
			user, err := get(httpRouteObj(), ns, "hand-written")
			if err != nil {
				t.Fatal(err)
			}
			applyYAML(t, ns, splitYAML("canary", 50, 50))
			waitCondition(t, ns, "canary", "Ready", "False", controllers.ReasonConflict)
			if _, err := get(httpRouteObj(), ns, "web"); !apierrors.IsNotFound(err) {
				t.Errorf("no HTTPRoute may be written while a user's routes the Service: %v", err)
			}
			if _, err := get(vsObj(), ns, "web"); !apierrors.IsNotFound(err) {
				t.Errorf("no VirtualService may be written while a user's HTTPRoute routes the Service: %v", err)
			}
			after, err := get(httpRouteObj(), ns, "hand-written")
			if err != nil || after.GetResourceVersion() != user.GetResourceVersion() {
				t.Errorf("the user's HTTPRoute was modified (rv %s -> %s, err %v)", user.GetResourceVersion(), after.GetResourceVersion(), err)
			}
			if err := env.Client.Delete(context.Background(), after); err != nil {
				t.Fatal(err)
			}
			waitCondition(t, ns, "canary", "Ready", "True", controllers.ReasonApplied)
		})
	}
}
