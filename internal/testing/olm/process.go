package olm

import (
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/smi2istio/smi2istio/internal/testing/proc"
)

// Pod is where a Deployment's pod runs as a local process.
type Pod struct {
	// Bin is the image's entrypoint: the operator binary.
	Bin string
	// Dir stands in for the pod: its filesystem (root/), its kubeconfig and its log.
	Dir string
	// AdminKubeconfig is the harness's kubeconfig; the pod's impersonates its ServiceAccount.
	AdminKubeconfig string
}

// Root is the pod's filesystem root on the host: a path in the container is Root()+path.
func (p Pod) Root() string { return filepath.Join(p.Dir, "root") }

// HostPath is where the container's path lives on the host.
func (p Pod) HostPath(containerPath string) string { return filepath.Join(p.Root(), containerPath) }

// WebhookCertDir is the container path where OLM mounts a webhook's serving certificate.
const WebhookCertDir = "/tmp/k8s-webhook-server/serving-certs"

// Running is an operator Deployment run as a local process.
type Running struct {
	*proc.Process
	Namespace, ServiceAccount string
	// Listen maps each port the container listens on (from its args) to the local address used
	// instead.
	Listen map[int32]string
	// Addr maps each listen flag of the args (metrics-bind-address, webhook-port, ...) to the
	// local address used instead.
	Addr map[string]string
	// Env is the container's environment as the kubelet would resolve it.
	Env map[string]string
	Pod Pod
	// InstallWarnings are the warnings of the install (InstallBundle: OLM's Events, e.g. existing
	// objects that do not validate against a CRD's new schema, accepted because it converts
	// through a webhook).
	InstallWarnings []string
}

// ServiceAccountUser is the username the apiserver gives a ServiceAccount's tokens.
func ServiceAccountUser(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

// listenFlags are the operator's flags that name a listen address (host:port) or a port.
var listenFlags = map[string]bool{"health-probe-bind-address": true, "metrics-bind-address": true, "pprof-bind-address": true}

// Process turns the Deployment's (only) container into a local process of its pod in namespace:
// its args with every listen address moved to a free loopback port (and --webhook-host=127.0.0.1
// with --webhook-port), its env resolved as the kubelet does (downward API included), TMPDIR at
// the pod's /tmp, and a kubeconfig that impersonates the pod's ServiceAccount. Ready is its
// readinessProbe.
func Process(name string, spec appsv1.DeploymentSpec, namespace string, pod Pod) (*Running, error) {
	podSpec := spec.Template.Spec
	if len(podSpec.Containers) != 1 {
		return nil, fmt.Errorf("deployment %s has %d containers, want 1", name, len(podSpec.Containers))
	}
	c := podSpec.Containers[0]
	sa := podSpec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	r := &Running{Namespace: namespace, ServiceAccount: sa, Listen: map[int32]string{}, Addr: map[string]string{}, Env: map[string]string{}, Pod: pod}
	if err := os.MkdirAll(pod.HostPath("/tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("create the pod's /tmp: %w", err)
	}
	kubeconfig := filepath.Join(pod.Dir, "kubeconfig")
	if err := impersonatingKubeconfig(pod.AdminKubeconfig, kubeconfig, ServiceAccountUser(namespace, sa)); err != nil {
		return nil, err
	}
	args := []string{}
	if len(c.Command) > 1 { // the entrypoint's own arguments
		args = append(args, c.Command[1:]...)
	}
	args = append(args, c.Args...)
	seenWebhookPort := false
	for i, a := range args {
		flagName, value, ok := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !ok || !strings.HasPrefix(a, "-") {
			continue
		}
		switch {
		case flagName == "webhook-port":
			port, err := strconv.ParseInt(value, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("deployment %s: %s: %w", name, a, err)
			}
			addr, err := r.listen(int32(port))
			if err != nil {
				return nil, err
			}
			_, local, _ := net.SplitHostPort(addr)
			args[i] = "--webhook-port=" + local
			r.Addr[flagName] = addr
			seenWebhookPort = true
		case flagName == "webhook-host":
			return nil, fmt.Errorf("deployment %s: %s: the harness binds the webhook to 127.0.0.1 itself", name, a)
		case listenFlags[flagName] && value != "" && value != "0":
			_, p, err := net.SplitHostPort(value)
			if err != nil {
				return nil, fmt.Errorf("deployment %s: %s: %w", name, a, err)
			}
			port, err := strconv.ParseInt(p, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("deployment %s: %s: %w", name, a, err)
			}
			addr, err := r.listen(int32(port))
			if err != nil {
				return nil, err
			}
			args[i] = "--" + flagName + "=" + addr
			r.Addr[flagName] = addr
		}
	}
	if !seenWebhookPort {
		// The default port (9443): still moved to a free one on loopback.
		addr, err := r.listen(9443)
		if err != nil {
			return nil, err
		}
		_, local, _ := net.SplitHostPort(addr)
		args = append(args, "--webhook-port="+local)
		r.Addr["webhook-port"] = addr
	}
	// A pod gets its cluster from its ServiceAccount token; the process from this kubeconfig.
	args = append(args, "--webhook-host=127.0.0.1", "--kubeconfig="+kubeconfig)

	for _, e := range c.Env {
		v, err := envValue(e, namespace, name, sa, c)
		if err != nil {
			return nil, fmt.Errorf("deployment %s: %w", name, err)
		}
		r.Env[e.Name] = v
	}
	if len(c.EnvFrom) > 0 {
		return nil, fmt.Errorf("deployment %s: envFrom is not supported by the harness", name)
	}
	// The host's environment is the process's too (proc.Process): blank what would change how the
	// operator finds its cluster or sizes its memory, then the container's own.
	env := []string{"KUBECONFIG=", "KUBERNETES_SERVICE_HOST=", "KUBERNETES_SERVICE_PORT=", "GOMEMLIMIT=", "GOGC=",
		"POD_NAMESPACE=", "SMI2ISTIO_MEMORY_LIMIT=", "TMPDIR=" + pod.HostPath("/tmp")}
	for _, e := range c.Env {
		env = append(env, e.Name+"="+r.Env[e.Name])
	}

	probe := c.ReadinessProbe
	if probe == nil || probe.HTTPGet == nil {
		return nil, fmt.Errorf("deployment %s: no HTTP readinessProbe", name)
	}
	probePort, err := containerPort(c, probe.HTTPGet.Port.String())
	if err != nil {
		return nil, fmt.Errorf("deployment %s: readinessProbe: %w", name, err)
	}
	probeAddr, ok := r.Listen[probePort]
	if !ok {
		return nil, fmt.Errorf("deployment %s: the readinessProbe's port %d is no port the container's args listen on", name, probePort)
	}
	r.Process = &proc.Process{Name: name, Path: pod.Bin, Log: filepath.Join(pod.Dir, name+".log"),
		Args: args, Env: env, Ready: "http://" + probeAddr + probe.HTTPGet.Path}
	return r, nil
}

// listen picks the local address standing in for a container port.
func (r *Running) listen(port int32) (string, error) {
	if _, dup := r.Listen[port]; dup {
		return "", fmt.Errorf("port %d is listened on twice", port)
	}
	addr, err := proc.FreeAddr()
	if err != nil {
		return "", err
	}
	r.Listen[port] = addr
	return addr, nil
}

// containerPort resolves a probe's port (number or name) on the container.
func containerPort(c corev1.Container, port string) (int32, error) {
	if n, err := strconv.ParseInt(port, 10, 32); err == nil {
		return int32(n), nil
	}
	for _, p := range c.Ports {
		if p.Name == port {
			return p.ContainerPort, nil
		}
	}
	return 0, fmt.Errorf("no container port named %q", port)
}

// envValue resolves one env var as the kubelet does (the downward API fields the harness knows).
func envValue(e corev1.EnvVar, namespace, podName, sa string, c corev1.Container) (string, error) {
	if e.ValueFrom == nil {
		return e.Value, nil
	}
	switch {
	case e.ValueFrom.FieldRef != nil:
		switch e.ValueFrom.FieldRef.FieldPath {
		case "metadata.namespace":
			return namespace, nil
		case "metadata.name":
			return podName + "-local", nil
		case "spec.serviceAccountName":
			return sa, nil
		case "status.podIP", "status.hostIP":
			return "127.0.0.1", nil
		}
		return "", fmt.Errorf("env %s: fieldRef %s is not supported by the harness", e.Name, e.ValueFrom.FieldRef.FieldPath)
	case e.ValueFrom.ResourceFieldRef != nil:
		ref := e.ValueFrom.ResourceFieldRef
		kind, res, _ := strings.Cut(ref.Resource, ".")
		list := c.Resources.Limits
		if kind == "requests" {
			list = c.Resources.Requests
		}
		q, ok := list[corev1.ResourceName(res)]
		if !ok {
			return "", fmt.Errorf("env %s: the container sets no %s (the kubelet would use the node's allocatable)", e.Name, ref.Resource)
		}
		divisor := ref.Divisor
		if divisor.IsZero() {
			divisor = resource.MustParse("1")
		}
		// The kubelet rounds up: ceil(quantity / divisor).
		v := math.Ceil(q.AsApproximateFloat64() / divisor.AsApproximateFloat64())
		return strconv.FormatInt(int64(v), 10), nil
	}
	return "", fmt.Errorf("env %s: only fieldRef and resourceFieldRef are supported by the harness", e.Name)
}

// impersonatingKubeconfig writes a copy of the admin kubeconfig whose every user impersonates user
// (`as:`), so the process holds exactly user's rights.
func impersonatingKubeconfig(admin, out, user string) error {
	cfg, err := clientcmd.LoadFromFile(admin)
	if err != nil {
		return fmt.Errorf("load %s: %w", admin, err)
	}
	if len(cfg.AuthInfos) == 0 {
		return fmt.Errorf("%s has no user", admin)
	}
	for _, a := range cfg.AuthInfos {
		a.Impersonate = user
		a.ImpersonateGroups = nil
		a.ImpersonateUserExtra = nil
	}
	if err := clientcmd.WriteToFile(*cfg, out); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	return nil
}
