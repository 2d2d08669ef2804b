//go:build e2e

package e2e

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Proxy is a workload's sidecar as istiod sees it.
type Proxy struct {
	Pod, Namespace, ServiceAccount, IP string
	Labels                             map[string]string
}

// register plays the kubelet and the EndpointSlice controller for one replica of a Deployment or StatefulSet (no
// kubelet runs here): a Pod from the template, Running and Ready with an IP set through the status
// subresource, and an EndpointSlice for every Service of the namespace that selects it.
func (cl *cluster) register(namespace, workload string) Proxy {
	cl.t.Helper()
	ctx := context.Background()
	var tmpl corev1.PodTemplateSpec
	d := &appsv1.Deployment{}
	if err := cl.c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: workload}, d); err == nil {
		tmpl = d.Spec.Template
	} else {
		s := &appsv1.StatefulSet{}
		must(cl.t, cl.c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: workload}, s))
		tmpl = s.Spec.Template
	}
	cl.nextIP++
	ip := fmt.Sprintf("10.244.0.%d", cl.nextIP)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: workload + "-e2e", Namespace: namespace, Labels: tmpl.Labels},
		Spec:       *tmpl.Spec.DeepCopy(),
	}
	pod.Spec.NodeName = cl.node()
	must(cl.t, cl.c.Create(ctx, pod))
	pod.Status = corev1.PodStatus{
		Phase:      corev1.PodRunning,
		PodIP:      ip,
		PodIPs:     []corev1.PodIP{{IP: ip}},
		HostIP:     "10.0.0.1",
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}, {Type: corev1.ContainersReady, Status: corev1.ConditionTrue}},
		StartTime:  ptr.To(metav1.Now()),
	}
	must(cl.t, cl.c.Status().Update(ctx, pod))

	var svcs corev1.ServiceList
	must(cl.t, cl.c.List(ctx, &svcs, client.InNamespace(namespace)))
	for _, svc := range svcs.Items {
		if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(pod.Labels)) {
			continue
		}
		// The harness stands in for Kubernetes' EndpointSlice controller (no such controller runs
		// here): its slices are the ones it would derive from the selector, labelled as it labels them
		// (smi2istio counts a slice someone else manages as endpoints of unknown workloads).
		slice := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: svc.Name + "-" + pod.Name, Namespace: namespace,
				Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: endpointSliceController}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{{
				Addresses:  []string{ip},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: namespace, Name: pod.Name, UID: pod.UID},
				NodeName:   ptr.To(pod.Spec.NodeName),
			}},
		}
		for _, p := range svc.Spec.Ports {
			slice.Ports = append(slice.Ports, discoveryv1.EndpointPort{
				Name: ptr.To(p.Name), Protocol: ptr.To(p.Protocol), Port: ptr.To(targetPort(p, pod)), AppProtocol: p.AppProtocol,
			})
		}
		must(cl.t, cl.c.Create(ctx, slice))
	}
	return Proxy{Pod: pod.Name, Namespace: namespace, ServiceAccount: serviceAccount(pod), IP: ip, Labels: pod.Labels}
}

// node registers the one Node the pods run on (as a kubelet would) and returns its name.
func (cl *cluster) node() string {
	cl.t.Helper()
	const name = "e2e-node"
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}}}
	if err := cl.c.Create(context.Background(), n); err != nil && !apierrors.IsAlreadyExists(err) {
		cl.t.Fatal(err)
	}
	return name
}

func serviceAccount(p *corev1.Pod) string {
	if p.Spec.ServiceAccountName != "" {
		return p.Spec.ServiceAccountName
	}
	return "default"
}

// targetPort resolves a Service port's target port on a pod (by number or container port name).
func targetPort(p corev1.ServicePort, pod *corev1.Pod) int32 {
	switch {
	case p.TargetPort.Type == intstr.String:
		for _, c := range pod.Spec.Containers {
			for _, cp := range c.Ports {
				if cp.Name == p.TargetPort.StrVal {
					return cp.ContainerPort
				}
			}
		}
		return p.Port
	case p.TargetPort.IntVal != 0:
		return p.TargetPort.IntVal
	default:
		return p.Port
	}
}

// endpointSliceController is the manager label of the EndpointSlices Kubernetes derives from a
// Service's selector.
const endpointSliceController = "endpointslice-controller.k8s.io"
