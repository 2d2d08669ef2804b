//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/internal/smi/crds"
	"github.com/smi2istio/smi2istio/internal/testing/istiocheck"
)

// Istio's ambient mode on the local control plane: istiod with ambient enabled and the Gateway API
// CRDs; namespaces and pods enrolled the way istio-cni enrolls them; waypoints deployed the way
// istiod's waypoint template deploys them. No kubelet, CNI node agent or deployment controller
// runs here: the helpers below play their parts on the apiserver, and the peers that judge the
// data plane are the fake ztunnel (ztunnel_test.go) and the waypoint proxy (waypoint_test.go).

// Labels and annotations of ambient mode (istio.io/api label and annotation packages).
const (
	labelDataplaneMode      = "istio.io/dataplane-mode"
	labelUseWaypoint        = "istio.io/use-waypoint"
	labelUseWaypointNS      = "istio.io/use-waypoint-namespace"
	labelWaypointFor        = "istio.io/waypoint-for"
	annotationRedirection   = "ambient.istio.io/redirection" // set by istio-cni once it captured the pod
	annotationSidecarStatus = "sidecar.istio.io/status"      // set by the injector on a pod with a sidecar
	labelGatewayName        = "gateway.networking.k8s.io/gateway-name"
	labelGatewayClassName   = "gateway.networking.k8s.io/gateway-class-name"
	labelGatewayManaged     = "gateway.istio.io/managed"
	meshControllerLabel     = "istio.io-mesh-controller" // constants.ManagedGatewayMeshControllerLabel
	waypointClassName       = "istio-waypoint"           // constants.WaypointGatewayClassName
	hbonePort               = 15008
)

// ambientIstiodEnv is istiod's environment in an ambient mesh: PILOT_ENABLE_AMBIENT as the ambient
// profile sets it (manifests/helm-profiles/ambient.yaml), and no Gateway deployment controller: it
// renders waypoints from the injection templates, which this istiod does not have (addWaypoint
// creates what the waypoint template renders instead).
var ambientIstiodEnv = []string{"PILOT_ENABLE_AMBIENT=true", "PILOT_ENABLE_GATEWAY_API_DEPLOYMENT_CONTROLLER=false"}

// newAmbientCluster starts a mesh with istiod in ambient mode and the Gateway API CRDs; with
// operator, smi2istio runs too (newCluster's mesh otherwise).
func newAmbientCluster(t *testing.T, operator bool) *cluster {
	t.Helper()
	list, err := gatewayAPICRDs()
	must(t, err)
	return newClusterWith(t, clusterOptions{crds: list, istiodEnv: ambientIstiodEnv, noOperator: !operator})
}

// gatewayAPICRDs are the Gateway API CRDs of the version the pinned Istio uses (istiocheck).
func gatewayAPICRDs() ([]*apiextv1.CustomResourceDefinition, error) {
	f, err := istiocheck.GatewayAPICRDs()
	if err != nil {
		return nil, err
	}
	return crds.LoadFile(f)
}

// namespace creates a namespace (if missing) with the labels.
func (cl *cluster) namespace(name string, lbls map[string]string) {
	cl.t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}
	if err := cl.c.Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		cl.t.Fatal(err)
	}
}

// joinAmbient labels namespaces for ambient mode (istio.io/dataplane-mode=ambient, what
// `istioctl x` and the docs do) and enrolls their pods as istio-cni does.
func (cl *cluster) joinAmbient(names ...string) {
	cl.t.Helper()
	for _, n := range names {
		cl.relabel(&corev1.Namespace{}, "", n, map[string]string{labelDataplaneMode: "ambient"})
	}
}

// relabel sets (value non-empty) or removes (value "") labels on a namespace (namespace "") or a
// namespaced object of obj's type, then lets istio-cni react (cniSync of the namespace).
func (cl *cluster) relabel(obj client.Object, namespace, name string, set map[string]string) {
	cl.t.Helper()
	ctx := context.Background()
	must(cl.t, cl.c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, obj))
	patch := map[string]any{}
	for k, v := range set {
		if v == "" {
			patch[k] = nil
		} else {
			patch[k] = v
		}
	}
	data, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": patch}})
	must(cl.t, err)
	must(cl.t, cl.c.Patch(ctx, obj, client.RawPatch(types.MergePatchType, data)))
	ns := namespace
	if ns == "" {
		ns = name
	}
	if _, isNS := obj.(*corev1.Namespace); isNS || namespace != "" {
		cl.cniSync(ns)
	}
}

// cniSync plays istio-cni's node agent for the pods of the namespaces: a pod its enablement
// selectors match gets ambient.istio.io/redirection=enabled (set through the status subresource,
// as the agent does), a pod they no longer match loses it. The selectors are the chart's defaults
// (manifests/charts/istio-cni/values.yaml: the pod labelled ambient, or the namespace labelled
// ambient and the pod not labelled none); host-network pods and pods with a sidecar are never
// enrolled (cni/pkg/util/enablement_selector.go).
func (cl *cluster) cniSync(namespaces ...string) {
	cl.t.Helper()
	ctx := context.Background()
	for _, n := range namespaces {
		ns := &corev1.Namespace{}
		must(cl.t, cl.c.Get(ctx, client.ObjectKey{Name: n}, ns))
		var pods corev1.PodList
		must(cl.t, cl.c.List(ctx, &pods, client.InNamespace(n)))
		for i := range pods.Items {
			p := &pods.Items[i]
			want := ambientEnrolled(p, ns.Labels)
			if (p.Annotations[annotationRedirection] == "enabled") == want {
				continue
			}
			var v any
			if want {
				v = "enabled"
			}
			data, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{annotationRedirection: v}}})
			must(cl.t, err)
			must(cl.t, cl.c.Status().Patch(ctx, p, client.RawPatch(types.MergePatchType, data)))
		}
	}
}

// ambientEnrolled is istio-cni's decision with its default enablement selectors.
func ambientEnrolled(p *corev1.Pod, nsLabels map[string]string) bool {
	if p.Spec.HostNetwork {
		return false
	}
	if _, sidecar := p.Annotations[annotationSidecarStatus]; sidecar {
		return false
	}
	mode, labelled := p.Labels[labelDataplaneMode]
	if mode == "ambient" {
		return true
	}
	return (!labelled || mode != "none") && nsLabels[labelDataplaneMode] == "ambient"
}

// registerAmbient registers a replica of a workload (register) and lets istio-cni enroll it when
// its namespace or labels put it in ambient mode.
func (cl *cluster) registerAmbient(namespace, workload string) Proxy {
	cl.t.Helper()
	p := cl.register(namespace, workload)
	cl.cniSync(namespace)
	return p
}

// Waypoint is a waypoint Gateway and its one proxy (the Gateway's pod), as istiod sees them.
type Waypoint struct {
	Proxy
	Gateway string // the Gateway's name, the pod's gateway-name label
}

var (
	gvkGateway    = schema.GroupVersionKind{Group: "gateway.networking.k8s.io", Version: "v1", Kind: "Gateway"}
	gvkHTTPRoute  = schema.GroupVersionKind{Group: "gateway.networking.k8s.io", Version: "v1", Kind: "HTTPRoute"}
	gvkAuthzPol   = schema.GroupVersionKind{Group: "security.istio.io", Version: "v1", Kind: "AuthorizationPolicy"}
	gatewayOwners = func(gw *unstructured.Unstructured) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: gvkGateway.GroupVersion().String(), Kind: gvkGateway.Kind, Name: gw.GetName(), UID: gw.GetUID()}}
	}
)

// addWaypoint deploys a waypoint for namespace as `istioctl waypoint apply` does: a Gateway of
// class istio-waypoint with the HBONE listener on 15008 (for Service traffic, the default), then
// what istiod's waypoint template renders for it (manifests/charts/istio-control/istio-discovery/
// files/waypoint.yaml: the Deployment and the Service "<name>" with the status port and the
// listener's port, owned by the Gateway) and the pod of that Deployment. It waits until istiod
// programmed the Gateway and reports its address (what makes it a waypoint: ambient/waypoints.go
// ignores a Gateway without status addresses).
func (cl *cluster) addWaypoint(namespace, name string) Waypoint {
	cl.t.Helper()
	ctx := context.Background()
	gw := &unstructured.Unstructured{}
	gw.SetGroupVersionKind(gvkGateway)
	gw.SetNamespace(namespace)
	gw.SetName(name)
	gw.SetLabels(map[string]string{labelWaypointFor: "service"})
	gw.Object["spec"] = map[string]any{
		"gatewayClassName": waypointClassName,
		"listeners":        []any{map[string]any{"name": "mesh", "port": int64(hbonePort), "protocol": "HBONE"}},
	}
	cl.apply(gw)
	must(cl.t, cl.c.Get(ctx, client.ObjectKeyFromObject(gw), gw))

	tmplLabels := map[string]string{
		"sidecar.istio.io/inject":             "false",
		labelDataplaneMode:                    "none",
		"service.istio.io/canonical-name":     name,
		"service.istio.io/canonical-revision": "latest",
		labelWaypointFor:                      "service",
		labelGatewayName:                      name,
		labelGatewayClassName:                 waypointClassName,
		labelGatewayManaged:                   meshControllerLabel,
	}
	// every object the deployment controller applies is labelled managed by the mesh controller
	objLabels := map[string]string{labelWaypointFor: "service", labelGatewayName: name, labelGatewayClassName: waypointClassName, labelGatewayManaged: meshControllerLabel}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, OwnerReferences: gatewayOwners(gw), Labels: objLabels},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{labelGatewayName: name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: tmplLabels, Annotations: map[string]string{"istio.io/rev": "default"}},
				Spec: corev1.PodSpec{ServiceAccountName: name, Containers: []corev1.Container{{
					Name: "istio-proxy", Image: "istio/proxyv2", Args: []string{"proxy", "waypoint"},
					Ports: []corev1.ContainerPort{
						{Name: "metrics", ContainerPort: 15020, Protocol: corev1.ProtocolTCP},
						{Name: "status-port", ContainerPort: 15021, Protocol: corev1.ProtocolTCP},
						{Name: "http-envoy-prom", ContainerPort: 15090, Protocol: corev1.ProtocolTCP},
					},
				}}},
			},
		},
	}
	must(cl.t, cl.c.Create(ctx, dep))
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: objLabels, OwnerReferences: gatewayOwners(gw),
			Annotations: map[string]string{"networking.istio.io/traffic-distribution": "PreferClose"}},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: map[string]string{labelGatewayName: name},
			Ports: []corev1.ServicePort{
				{Name: "status-port", Port: 15021, Protocol: corev1.ProtocolTCP, AppProtocol: ptr.To("tcp")},
				{Name: "mesh", Port: hbonePort, Protocol: corev1.ProtocolTCP, AppProtocol: ptr.To("hbone")},
			},
		},
	}
	must(cl.t, cl.c.Create(ctx, svc))
	wp := Waypoint{Proxy: cl.register(namespace, name), Gateway: name}
	cl.expectGatewayProgrammed(namespace, name)
	return wp
}

// removeWaypoint deletes a waypoint's Gateway and everything addWaypoint made for it (the
// garbage collector would take the Deployment and Service; the pod and its EndpointSlices are
// this harness's, so they go explicitly).
func (cl *cluster) removeWaypoint(wp Waypoint) {
	cl.t.Helper()
	ctx := context.Background()
	gw := &unstructured.Unstructured{}
	gw.SetGroupVersionKind(gvkGateway)
	gw.SetNamespace(wp.Namespace)
	gw.SetName(wp.Gateway)
	objs := []client.Object{gw,
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: wp.Namespace, Name: wp.Gateway}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: wp.Namespace, Name: wp.Gateway}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: wp.Namespace, Name: wp.Pod}},
	}
	for _, o := range objs {
		// no kubelet confirms a graceful deletion here: the pod goes at once
		if err := cl.c.Delete(ctx, o, client.GracePeriodSeconds(0)); err != nil && !apierrors.IsNotFound(err) {
			cl.t.Fatal(err)
		}
	}
	must(cl.t, cl.c.DeleteAllOf(ctx, &discoveryv1.EndpointSlice{}, client.InNamespace(wp.Namespace),
		client.MatchingLabels{discoveryv1.LabelServiceName: wp.Gateway, discoveryv1.LabelManagedBy: endpointSliceController}))
}

// useWaypoint sends a namespace's (service "") or a Service's traffic through the waypoint:
// istio.io/use-waypoint (and istio.io/use-waypoint-namespace when the waypoint is elsewhere).
// An empty wp.Gateway removes the labels; "none" opts a Service out of its namespace's waypoint.
func (cl *cluster) useWaypoint(namespace, service string, wp Waypoint) {
	cl.t.Helper()
	set := map[string]string{labelUseWaypoint: wp.Gateway, labelUseWaypointNS: ""}
	if wp.Gateway != "" && wp.Gateway != "none" && wp.Namespace != namespace {
		set[labelUseWaypointNS] = wp.Namespace
	}
	if service == "" {
		cl.relabel(&corev1.Namespace{}, "", namespace, set)
		return
	}
	cl.relabel(&corev1.Service{}, namespace, service, set)
}

// expectGatewayProgrammed waits until istiod accepted and programmed the Gateway and reported an
// address for it.
func (cl *cluster) expectGatewayProgrammed(namespace, name string) {
	cl.t.Helper()
	eventually(cl.t, fmt.Sprintf("istiod programs Gateway %s/%s", namespace, name), func() error {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(gvkGateway)
		if err := cl.c.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, u); err != nil {
			return err
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, want := range []string{"Accepted", "Programmed"} {
			if c := findCondition(conds, want); c == nil || c["status"] != "True" || fmt.Sprint(c["observedGeneration"]) != fmt.Sprint(u.GetGeneration()) {
				return fmt.Errorf("condition %s: %v (all: %v)", want, c, conds)
			}
		}
		if addrs, _, _ := unstructured.NestedSlice(u.Object, "status", "addresses"); len(addrs) == 0 {
			return fmt.Errorf("no status addresses")
		}
		return nil
	})
}

func findCondition(conds []any, typ string) map[string]any {
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == typ {
			return m
		}
	}
	return nil
}

// RouteParent is istiod's status for one parent of a Gateway API route.
type RouteParent struct {
	ParentRef      string // "Kind namespace/name[:port]"
	ControllerName string
	Conditions     map[string]string // type -> "status/reason: message"
	Accepted       bool              // Accepted=True for the route's generation
	ResolvedRefs   bool              // ResolvedRefs=True for the route's generation
}

// routeParents reads a route's status.parents (kind HTTPRoute or TCPRoute).
func (cl *cluster) routeParents(kind, namespace, name string) ([]RouteParent, *unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvkHTTPRoute.GroupVersion().WithKind(kind))
	if err := cl.c.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, u); err != nil {
		return nil, nil, err
	}
	parents, _, _ := unstructured.NestedSlice(u.Object, "status", "parents")
	var out []RouteParent
	for _, p := range parents {
		m, _ := p.(map[string]any)
		ref, _ := m["parentRef"].(map[string]any)
		rp := RouteParent{ParentRef: parentRefString(ref, namespace), Conditions: map[string]string{}}
		rp.ControllerName, _ = m["controllerName"].(string)
		conds, _ := m["conditions"].([]any)
		for _, c := range conds {
			cm, _ := c.(map[string]any)
			typ, _ := cm["type"].(string)
			rp.Conditions[typ] = fmt.Sprintf("%v/%v: %v", cm["status"], cm["reason"], cm["message"])
			current := cm["status"] == "True" && fmt.Sprint(cm["observedGeneration"]) == fmt.Sprint(u.GetGeneration())
			switch typ {
			case "Accepted":
				rp.Accepted = current
			case "ResolvedRefs":
				rp.ResolvedRefs = current
			}
		}
		out = append(out, rp)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ParentRef < out[j].ParentRef })
	return out, u, nil
}

func parentRefString(ref map[string]any, routeNamespace string) string {
	kind, _ := ref["kind"].(string)
	if kind == "" {
		kind = "Gateway"
	}
	ns, _ := ref["namespace"].(string)
	if ns == "" {
		ns = routeNamespace
	}
	s := fmt.Sprintf("%s %s/%v", kind, ns, ref["name"])
	if p, ok := ref["port"]; ok && p != nil {
		s += fmt.Sprintf(":%v", p)
	}
	return s
}

// expectRouteAccepted waits until istiod set Accepted=True and ResolvedRefs=True, for the route's
// generation, on the status of every parent in the route's spec.parentRefs, and returns them.
func (cl *cluster) expectRouteAccepted(kind, namespace, name string) []RouteParent { //nolint:unparam // TCPRoutes are judged the same way
	cl.t.Helper()
	var got []RouteParent
	eventually(cl.t, fmt.Sprintf("istiod accepts %s %s/%s on every parent", kind, namespace, name), func() error {
		parents, u, err := cl.routeParents(kind, namespace, name)
		if err != nil {
			return err
		}
		refs, _, _ := unstructured.NestedSlice(u.Object, "spec", "parentRefs")
		status := map[string]RouteParent{}
		for _, p := range parents {
			status[p.ParentRef] = p
		}
		for _, r := range refs {
			m, _ := r.(map[string]any)
			want := parentRefString(m, namespace)
			p, ok := status[want]
			if !ok || !p.Accepted || !p.ResolvedRefs {
				return fmt.Errorf("parent %s: %+v (status parents: %+v)", want, p, parents)
			}
		}
		got = parents
		return nil
	})
	return got
}

// policyConditions reads the conditions istiod writes on an AuthorizationPolicy in ambient mode
// (ZtunnelAccepted, WaypointAccepted: pilot/pkg/model/service.go), as type -> "status/reason:
// message", only those for the policy's generation.
func (cl *cluster) policyConditions(namespace, name string) (map[string]string, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvkAuthzPol)
	if err := cl.c.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, u); err != nil {
		return nil, err
	}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	out := map[string]string{}
	for _, c := range conds {
		cm, _ := c.(map[string]any)
		if fmt.Sprint(cm["observedGeneration"]) != fmt.Sprint(u.GetGeneration()) {
			continue
		}
		typ, _ := cm["type"].(string)
		out[typ] = fmt.Sprintf("%v/%v: %v", cm["status"], cm["reason"], cm["message"])
	}
	return out, nil
}

// expectPolicyCondition waits until istiod wrote a condition of the type on the policy whose
// "status/reason: message" contains every one of want.
func (cl *cluster) expectPolicyCondition(namespace, name, typ string, want ...string) {
	cl.t.Helper()
	eventually(cl.t, fmt.Sprintf("AuthorizationPolicy %s/%s has %s %q", namespace, name, typ, want), func() error {
		conds, err := cl.policyConditions(namespace, name)
		if err != nil {
			return err
		}
		for _, w := range want {
			if !strings.Contains(conds[typ], w) {
				return fmt.Errorf("%s is %q (all: %v)", typ, conds[typ], conds)
			}
		}
		return nil
	})
}

// serviceVIP is a Service's cluster IP (what a client's ztunnel sends to the waypoint).
func (cl *cluster) serviceVIP(namespace, name string) string {
	cl.t.Helper()
	svc := &corev1.Service{}
	must(cl.t, cl.c.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, svc))
	return svc.Spec.ClusterIP
}
