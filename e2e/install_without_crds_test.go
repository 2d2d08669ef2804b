//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/internal/build/install"
	"github.com/smi2istio/smi2istio/internal/smi/crds"
	"github.com/smi2istio/smi2istio/internal/testing/olm"
	"github.com/smi2istio/smi2istio/internal/testing/testenv"
)

// dist/install-without-crds.yaml (config/without-crds), on a cluster that keeps Open Service Mesh
// 1.2's SMI CRDs and objects: the operator, under its ServiceAccount's identity, runs with
// --smi-crds=foreign, translates the objects in OSM's versions, reports through Events, and writes
// no CRD, no status and no user object.
func TestInstallerWithoutCRDsKeepsOSMCRDs(t *testing.T) {
	e := newInstallEnv(t)
	ctx := context.Background()
	var osmCRDs []string
	for _, f := range []string{"smi_traffic_split.yaml", "smi_traffic_access.yaml", "smi_http_route_group.yaml", "smi_tcp_route.yaml"} {
		list, err := crds.LoadFile(filepath.Join(testenv.RepoRoot(), "controllers", "testdata", "osm-v1.2-smi-crds", f))
		must(t, err)
		for _, crd := range list {
			must(t, e.c.Create(ctx, crd, client.FieldOwner("osm-bootstrap")))
			osmCRDs = append(osmCRDs, crd.Name)
		}
	}
	e.eventually("OSM's CRDs established", func() error {
		for _, name := range osmCRDs {
			crd := &apiextv1.CustomResourceDefinition{}
			if err := e.c.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
				return err
			}
			if !slices.ContainsFunc(crd.Status.Conditions, func(c apiextv1.CustomResourceDefinitionCondition) bool {
				return c.Type == apiextv1.Established && c.Status == apiextv1.ConditionTrue
			}) {
				return fmt.Errorf("%s not established", name)
			}
		}
		return nil
	})
	e.applyDemo() // in OSM's versions, before smi2istio is installed
	rvs := func() map[string]string {
		out := map[string]string{}
		for _, o := range e.demoSMI() {
			cur := &unstructured.Unstructured{}
			cur.SetGroupVersionKind(o.GroupVersionKind())
			must(t, e.c.Get(ctx, client.ObjectKeyFromObject(o), cur))
			if _, has := cur.Object["status"]; has {
				t.Errorf("%s %s/%s has a status", o.GetKind(), o.GetNamespace(), o.GetName())
			}
			out[o.GetKind()+" "+o.GetNamespace()+"/"+o.GetName()] = cur.GetResourceVersion()
		}
		for _, name := range append(osmCRDs, "udproutes.specs.smi-spec.io") {
			crd := &apiextv1.CustomResourceDefinition{}
			err := e.c.Get(ctx, client.ObjectKey{Name: name}, crd)
			if apierrors.IsNotFound(err) {
				out[name] = "absent"
				continue
			}
			must(t, err)
			out[name] = crd.ResourceVersion
		}
		return out
	}
	before := rvs()

	objs, err := install.Objects(filepath.Join(testenv.RepoRoot(), "config", "without-crds")) // hack/build-installer's rendering
	must(t, err)
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" && strings.HasSuffix(o.GetName(), ".smi-spec.io") {
			t.Fatalf("the manifest installs SMI CRD %s", o.GetName())
		}
		if o.GetKind() == "Deployment" {
			containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
			var args []string
			if len(containers) > 0 {
				args, _, _ = unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
			}
			if !slices.Contains(args, "--smi-crds=foreign") {
				t.Fatalf("the manager's args %v lack --smi-crds=foreign", args)
			}
		}
	}
	op, err := olm.InstallManifest(ctx, e.c, objs, e.pod("without-crds"))
	must(t, err)
	e.start(op)

	split := e.demoSMI()[0]
	e.eventually("the v1alpha2 split translated, reported by an Event", func() error {
		if err := noForbidden(op); err != nil {
			return err
		}
		if err := e.outputMentions("TrafficSplit", split, `"weight":50`); err != nil {
			return err
		}
		events, err := e.cs.EventsV1().Events("bookstore").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, ev := range events.Items {
			if ev.Regarding.Kind == "TrafficSplit" && ev.Regarding.Name == split.GetName() && ev.Type == corev1.EventTypeNormal && ev.Reason == "Applied" {
				return nil
			}
		}
		return fmt.Errorf("no Normal Applied Event on the TrafficSplit (%d Events in bookstore)", len(events.Items))
	})
	e.eventually("status.smiCRDs on the config", func() error {
		cfg := &unstructured.Unstructured{}
		cfg.SetGroupVersionKind(schema.GroupVersionKind{Group: "smi2istio.io", Version: "v1alpha1", Kind: "SMI2IstioConfig"})
		if err := e.c.Get(ctx, client.ObjectKey{Name: "default"}, cfg); err != nil {
			return err
		}
		list, _, _ := unstructured.NestedSlice(cfg.Object, "status", "smiCRDs")
		got := map[string]string{}
		for _, x := range list {
			m, _ := x.(map[string]any)
			got[fmt.Sprint(m["kind"])] = fmt.Sprintf("%v %v %v", m["owner"], m["version"], m["status"])
		}
		want := map[string]string{"TrafficSplit": "foreign v1alpha2 events", "TrafficTarget": "foreign v1alpha3 events",
			"HTTPRouteGroup": "foreign v1alpha4 events", "TCPRoute": "foreign v1alpha4 events", "UDPRoute": "absent <nil> <nil>"}
		for k, v := range want {
			if got[k] != v {
				return fmt.Errorf("status.smiCRDs %v, want %v", got, want)
			}
		}
		return nil
	})
	for _, tt := range e.demoSMI() {
		if tt.GetKind() != "TrafficTarget" {
			continue
		}
		e.eventually("outputs of TrafficTarget "+tt.GetName(), func() error {
			return e.outputMentions("TrafficTarget", tt, tt.GetNamespace())
		})
	}
	if err := noForbidden(op); err != nil {
		t.Error(err)
	}
	// Self-signed mode: the caBundle is set on smi2istio's CRDs only, here none.
	expectLogged(t, op, `"certMode":"self-signed"`)
	after := rvs()
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s rewritten: resourceVersion %s, then %s", k, v, after[k])
		}
	}
}
