//go:build e2e

package e2e

// The real SMI writers (issue 20, deliverable 4): Argo Rollouts' controller and Flagger, built from
// the module proxy by hack/argo-rollouts.sh and hack/flagger.sh (pinned, cached outside the clone
// like istiod), run as processes against the harness's control plane, unchanged. The TrafficSplits
// they write at each step of a canary must become routes in istiod's output for a client sidecar
// with the tool's weights.
//
// No kubelet and no Deployment/ReplicaSet controller run here (localcp runs only the garbage
// collector and the namespace controller), and both tools wait for their ReplicaSets or Deployments
// to be available before they move traffic. playWorkloadControllers plays that part: it reports
// every Deployment and ReplicaSet of the namespace as fully rolled out and available, as the
// kube-controller-manager would once the kubelet reported the pods Ready. The routes do not depend
// on pods: the split's backends are Services, and the client is a sidecar registered by register.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/internal/testing/proc"
	"github.com/smi2istio/smi2istio/internal/testing/testenv"
)

// tool runs hack/<script> (which builds the tool once and caches it) and returns the binary's path.
func tool(t *testing.T, script string) string {
	t.Helper()
	start := time.Now()
	out, err := exec.Command(filepath.Join(testenv.RepoRoot(), "hack", script)).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("hack/%s: %v\n%s", script, err, stderr)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Logf("hack/%s built the tool in %s", script, d.Round(time.Second))
	}
	return strings.TrimSpace(string(out))
}

// playWorkloadControllers reports, until the test ends, every Deployment and ReplicaSet of the
// namespace as the Deployment and ReplicaSet controllers would once all pods are Ready: observed
// generation current, every replica updated, ready and available.
func (cl *cluster) playWorkloadControllers(namespace string) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	cl.t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			var rss appsv1.ReplicaSetList
			if err := cl.c.List(ctx, &rss, client.InNamespace(namespace)); err == nil {
				for i := range rss.Items {
					rs := &rss.Items[i]
					n := int32(1)
					if rs.Spec.Replicas != nil {
						n = *rs.Spec.Replicas
					}
					want := appsv1.ReplicaSetStatus{Replicas: n, FullyLabeledReplicas: n, ReadyReplicas: n, AvailableReplicas: n, ObservedGeneration: rs.Generation}
					if rs.Status.Replicas != want.Replicas || rs.Status.AvailableReplicas != n || rs.Status.ReadyReplicas != n || rs.Status.ObservedGeneration != rs.Generation {
						rs.Status = want
						_ = cl.c.Status().Update(ctx, rs) // a conflict is retried on the next pass
					}
				}
			}
			var ds appsv1.DeploymentList
			if err := cl.c.List(ctx, &ds, client.InNamespace(namespace)); err == nil {
				for i := range ds.Items {
					d := &ds.Items[i]
					n := int32(1)
					if d.Spec.Replicas != nil {
						n = *d.Spec.Replicas
					}
					if d.Status.ObservedGeneration == d.Generation && d.Status.Replicas == n && d.Status.AvailableReplicas == n && d.Status.UpdatedReplicas == n {
						continue
					}
					d.Status = appsv1.DeploymentStatus{
						ObservedGeneration: d.Generation, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n,
						Conditions: []appsv1.DeploymentCondition{
							{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue, Reason: "MinimumReplicasAvailable"},
							{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue, Reason: "NewReplicaSetAvailable"},
						},
					}
					_ = cl.c.Status().Update(ctx, d)
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
}

// startTool runs a tool's controller against the cluster's kubeconfig, until the test ends; its log
// is printed when the test fails.
func (cl *cluster) startTool(name, bin, ready string, args ...string) {
	cl.t.Helper()
	p := &proc.Process{Name: name, Path: bin, Log: filepath.Join(cl.dir, name+".log"), Args: args, Ready: ready}
	must(cl.t, p.Start())
	cl.t.Cleanup(func() {
		if cl.t.Failed() {
			cl.t.Logf("last lines of %s's log:\n%s", name, p.Tail(80))
		}
		p.Stop()
	})
}

// installCRDFiles applies CRD manifests and waits until every one is established.
func (cl *cluster) installCRDFiles(paths ...string) {
	cl.t.Helper()
	for _, p := range paths {
		for _, crd := range cl.applyFile(p) {
			name := crd.GetName()
			eventually(cl.t, "CRD "+name+" established", func() error {
				u := &unstructured.Unstructured{}
				u.SetAPIVersion("apiextensions.k8s.io/v1")
				u.SetKind("CustomResourceDefinition")
				if err := cl.c.Get(context.Background(), client.ObjectKey{Name: name}, u); err != nil {
					return err
				}
				conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
				for _, c := range conds {
					if m, _ := c.(map[string]any); m["type"] == "Established" && m["status"] == "True" {
						return nil
					}
				}
				return fmt.Errorf("not established: %v", conds)
			})
		}
	}
}

func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	must(t, err)
	return p
}

var rolloutGVK = schema.GroupVersionKind{Group: "argoproj.io", Version: "v1alpha1", Kind: "Rollout"}

// argoApp is the Rollout of the Argo Rollouts scenario: the canary steps of issue 20 and SMI
// traffic routing (root Service "web", a TrafficSplit "web-split"), in the documented shape.
const argoApp = `
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-stable, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-canary, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client, namespace: shop}
spec:
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec: {containers: [{name: client, image: curl}]}
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "web:v1", ports: [{containerPort: 8080}]}]}
  strategy:
    canary:
      canaryService: web-canary
      stableService: web-stable
      trafficRouting:
        smi: {rootService: web, trafficSplitName: web-split}
      steps:
      - setWeight: 20
      - pause: {}
      - setWeight: 50
      - pause: {}
`

// Argo Rollouts' controller, unchanged, writes the TrafficSplit (v1alpha1, its default) at every
// step of a canary; istiod's routes for a client follow: 20, pause, 50, full promotion to the new
// version; then a second update aborted at 20 returns all traffic to stable.
func TestArgoRolloutsCanary(t *testing.T) {
	bin := tool(t, "argo-rollouts.sh")
	start := time.Now()
	cl := newCluster(t)
	crdDir := filepath.Join(filepath.Dir(bin), "crds")
	files, err := filepath.Glob(filepath.Join(crdDir, "*.yaml"))
	must(t, err)
	if len(files) == 0 {
		t.Fatalf("no CRDs in %s", crdDir)
	}
	cl.installCRDFiles(files...)
	cl.applyYAML(argoApp)
	cl.joinMesh("shop")
	cl.playWorkloadControllers("shop")
	buyer := cl.register("shop", "client")
	health, metrics := freeAddr(t), freeAddr(t)
	cl.startTool("argo-rollouts", bin, "http://"+health+"/healthz",
		"--kubeconfig="+cl.cp.Kubeconfig, "--leader-elect=false",
		"--healthzPort="+port(t, health), "--metricsPort="+port(t, metrics), "--loglevel=info")

	// Subset mode (DESIGN §3): web-stable and web-canary select pods of the root Service web, so the
	// clusters are subsets of web named after the backends.
	host := "web.shop.svc.cluster.local"
	sub := func(svc string) string { return "outbound|80|" + svc + "|" + host }
	weights := func(canary int) string {
		if canary == 0 {
			return "default -> " + sub("web-stable") + "=100" // Istio drops a weight-0 destination
		}
		return fmt.Sprintf("default -> %s=%d %s=%d", sub("web-canary"), canary, sub("web-stable"), 100-canary)
	}

	// v1 is rolled out whole (no steps on the first version): Argo's split sends everything to stable.
	v1 := cl.rolloutStable(t, "shop", "web", "")
	cl.expectArgoSplit(0)
	cl.expectRoutes("v1 stable", buyer, host, 80, weights(0))

	// v2: setWeight 20, then the pause step holds it there.
	cl.setRolloutImage("shop", "web", "web:v2")
	cl.expectRolloutPaused("shop", "web", 1)
	cl.expectArgoSplit(20)
	cl.expectRoutes("v2 setWeight 20, paused", buyer, host, 80, weights(20))

	// kubectl argo rollouts promote: setWeight 50, then the next pause.
	cl.promoteRollout("shop", "web", `{"status":{"pauseConditions":null}}`)
	cl.expectRolloutPaused("shop", "web", 3)
	cl.expectArgoSplit(50)
	cl.expectRoutes("v2 setWeight 50, paused", buyer, host, 80, weights(50))

	// kubectl argo rollouts promote --full: v2 becomes stable and gets all traffic.
	cl.promoteRollout("shop", "web", `{"status":{"promoteFull":true}}`)
	v2 := cl.rolloutStable(t, "shop", "web", v1)
	cl.expectArgoSplit(0)
	cl.expectStableSelector("shop", "web-stable", v2)
	cl.expectRoutes("v2 promoted", buyer, host, 80, weights(0))

	// v3 reaches 20, then kubectl argo rollouts abort: all traffic back to stable (v2).
	cl.setRolloutImage("shop", "web", "web:v3")
	cl.expectRolloutPaused("shop", "web", 1)
	cl.expectArgoSplit(20)
	cl.expectRoutes("v3 setWeight 20, paused", buyer, host, 80, weights(20))
	cl.promoteRollout("shop", "web", `{"status":{"abort":true}}`)
	cl.expectArgoSplit(0)
	cl.expectStableSelector("shop", "web-stable", v2)
	cl.expectRoutes("v3 aborted", buyer, host, 80, weights(0))
	cl.expectReady("TrafficSplit", "shop", "web-split")
	t.Logf("Argo Rollouts scenario: %s (after the tool's build)", time.Since(start).Round(time.Second))
}

// rolloutStable waits until the Rollout's stable ReplicaSet hash is the current pod hash and
// differs from previous; it returns the hash.
func (cl *cluster) rolloutStable(t *testing.T, ns, name, previous string) string {
	t.Helper()
	var hash string
	eventually(t, "rollout "+ns+"/"+name+" fully promoted", func() error {
		ro := cl.getRollout(ns, name)
		stable, _, _ := unstructured.NestedString(ro.Object, "status", "stableRS")
		current, _, _ := unstructured.NestedString(ro.Object, "status", "currentPodHash")
		if stable == "" || stable != current || stable == previous {
			return fmt.Errorf("stableRS %q, currentPodHash %q (previous stable %q)", stable, current, previous)
		}
		hash = stable
		return nil
	})
	return hash
}

func (cl *cluster) getRollout(ns, name string) *unstructured.Unstructured {
	ro := &unstructured.Unstructured{}
	ro.SetGroupVersionKind(rolloutGVK)
	must(cl.t, cl.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, ro))
	return ro
}

// expectRolloutPaused waits until the Rollout is paused at a pause step of the canary (step index).
func (cl *cluster) expectRolloutPaused(ns, name string, step int64) {
	cl.t.Helper()
	eventually(cl.t, fmt.Sprintf("rollout %s/%s paused at step %d", ns, name, step), func() error {
		ro := cl.getRollout(ns, name)
		idx, _, _ := unstructured.NestedInt64(ro.Object, "status", "currentStepIndex")
		conds, _, _ := unstructured.NestedSlice(ro.Object, "status", "pauseConditions")
		if idx != step || len(conds) == 0 {
			return fmt.Errorf("currentStepIndex %d, pauseConditions %v", idx, conds)
		}
		return nil
	})
}

func (cl *cluster) setRolloutImage(ns, name, image string) {
	cl.t.Helper()
	ro := cl.getRollout(ns, name)
	patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"containers":[{"name":"web","image":%q,"ports":[{"containerPort":8080}]}]}}}}`, image)
	must(cl.t, cl.c.Patch(context.Background(), ro, client.RawPatch("application/merge-patch+json", []byte(patch))))
}

// promoteRollout sends the status patch the kubectl-argo-rollouts plugin sends (promote,
// promote --full, abort) to the Rollout's status subresource.
func (cl *cluster) promoteRollout(ns, name, statusPatch string) {
	cl.t.Helper()
	ro := cl.getRollout(ns, name)
	must(cl.t, cl.c.Status().Patch(context.Background(), ro, client.RawPatch("application/merge-patch+json", []byte(statusPatch))))
}

// expectArgoSplit waits until Argo's TrafficSplit shop/web-split (read as v1alpha1, the version
// Argo writes by default; its weights are quantities such as "20") gives the canary backend weight
// canary and the stable one the rest, in Argo's order (canary, stable).
func (cl *cluster) expectArgoSplit(canary int64) {
	cl.t.Helper()
	want := fmt.Sprintf("web-canary=%d web-stable=%d", canary, 100-canary)
	eventually(cl.t, "TrafficSplit shop/web-split: "+want, func() error {
		got, err := cl.splitBackends("shop", "web-split", "v1alpha1")
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("backends %s", got)
		}
		return nil
	})
}

// splitBackends renders a TrafficSplit's backends read in the version its writer uses.
func (cl *cluster) splitBackends(ns, name, version string) (string, error) {
	ts := &unstructured.Unstructured{}
	ts.SetGroupVersionKind(schema.GroupVersionKind{Group: "split.smi-spec.io", Version: version, Kind: "TrafficSplit"})
	if err := cl.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, ts); err != nil {
		return "", err
	}
	backends, _, _ := unstructured.NestedSlice(ts.Object, "spec", "backends")
	var parts []string
	for _, b := range backends {
		m, _ := b.(map[string]any)
		parts = append(parts, fmt.Sprintf("%v=%v", m["service"], m["weight"]))
	}
	return strings.Join(parts, " "), nil
}

// expectStableSelector waits until Argo pointed the stable Service at the ReplicaSet of hash.
func (cl *cluster) expectStableSelector(ns, svc, hash string) {
	cl.t.Helper()
	eventually(cl.t, "Service "+ns+"/"+svc+" selects "+hash, func() error {
		s := &corev1.Service{}
		if err := cl.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: svc}, s); err != nil {
			return err
		}
		if got := s.Spec.Selector["rollouts-pod-template-hash"]; got != hash {
			return fmt.Errorf("selector %v", s.Spec.Selector)
		}
		return nil
	})
}

// gate is the webhook Flagger asks before each traffic increase and before promotion
// (confirm-traffic-increase, confirm-promotion): a path answers 200 as many times as it was opened,
// then 403, so that the test sees every step Flagger takes.
type gate struct {
	mu     sync.Mutex
	budget map[string]int
	srv    *httptest.Server
}

func newGate(t *testing.T) *gate {
	g := &gate{budget: map[string]int{}}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.budget[r.URL.Path] > 0 {
			g.budget[r.URL.Path]--
			return
		}
		w.WriteHeader(http.StatusForbidden)
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *gate) open(path string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.budget[path]++
}

// flaggerApp is a Deployment and its Canary (provider smi:<version>), with the two gates.
func flaggerApp(ns, provider, gateURL string) string {
	return fmt.Sprintf(`
apiVersion: v1
kind: Namespace
metadata: {name: %[1]s}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client, namespace: %[1]s}
spec:
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec: {containers: [{name: client, image: curl}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: podinfo, namespace: %[1]s}
spec:
  replicas: 1
  selector: {matchLabels: {app: podinfo}}
  template:
    metadata: {labels: {app: podinfo}}
    spec: {containers: [{name: podinfo, image: "podinfo:v1", ports: [{containerPort: 9898}]}]}
---
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: podinfo, namespace: %[1]s}
spec:
  provider: %[2]s
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  progressDeadlineSeconds: 600
  service: {port: 80, targetPort: 9898}
  analysis:
    interval: 10s
    threshold: 5
    stepWeight: 20
    maxWeight: 40
    webhooks:
    - {name: increase, type: confirm-traffic-increase, url: "%[3]s/%[1]s/increase"}
    - {name: promote, type: confirm-promotion, url: "%[3]s/%[1]s/promote"}
`, ns, provider, gateURL)
}

// Flagger, unchanged, with meshProvider smi (TrafficSplit v1alpha2 and v1alpha3, one canary each):
// its TrafficSplit over the apex, primary and canary Services becomes routes with Flagger's weights
// at each step (0, 20, 40), and the promotion ends with all traffic to the primary, which runs the
// new version. No metrics are analysed (no Prometheus): the gates pace the steps.
func TestFlaggerCanary(t *testing.T) {
	bin := tool(t, "flagger.sh")
	start := time.Now()
	cl := newCluster(t)
	cl.installCRDFiles(filepath.Join(filepath.Dir(bin), "crd.yaml"))
	g := newGate(t)
	versions := map[string]string{"flagger-a2": "smi:v1alpha2", "flagger-a3": "smi:v1alpha3"}
	clients := map[string]Proxy{}
	for ns, provider := range versions {
		cl.applyYAML(flaggerApp(ns, provider, g.srv.URL))
		cl.joinMesh(ns)
		cl.playWorkloadControllers(ns)
		clients[ns] = cl.register(ns, "client")
	}
	health := freeAddr(t)
	cl.startTool("flagger", bin, "http://"+health+"/healthz",
		"-kubeconfig="+cl.cp.Kubeconfig, "-mesh-provider=smi:v1alpha3", "-metrics-server=http://127.0.0.1:1",
		"-port="+port(t, health), "-log-level=info", "-enable-config-tracking=false")

	// Service mode (DESIGN §3): the canary Service selects pods the apex does not (app=podinfo vs
	// app=podinfo-primary), so the clusters are the backend Services'.
	routes := func(ns string, canary int) string {
		c := func(svc string) string { return "outbound|80||" + svc + "." + ns + ".svc.cluster.local" }
		if canary == 0 {
			return "default -> " + c("podinfo-primary") + "=100"
		}
		return fmt.Sprintf("default -> %s=%d %s=%d", c("podinfo-canary"), canary, c("podinfo-primary"), 100-canary)
	}
	step := func(what string, canary int) {
		for ns, provider := range versions {
			cl.expectFlaggerSplit(ns, strings.TrimPrefix(provider, "smi:"), canary)
			cl.expectRoutes(ns+" "+what, clients[ns], "podinfo."+ns+".svc.cluster.local", 80, routes(ns, canary))
		}
	}

	for ns := range versions {
		cl.expectCanaryPhase(ns, "Initialized")
	}
	step("initialized", 0)
	for ns := range versions {
		cl.bumpDeployment(ns, "podinfo:v2")
		cl.expectCanaryPhase(ns, "Progressing")
	}
	step("progressing, gate closed", 0)
	for _, w := range []int{20, 40} {
		for ns := range versions {
			g.open("/" + ns + "/increase")
		}
		step(fmt.Sprintf("weight %d", w), w)
	}
	// At maxWeight Flagger still asks for a traffic increase before it asks to promote.
	for ns := range versions {
		g.open("/" + ns + "/increase")
		g.open("/" + ns + "/promote")
	}
	for ns := range versions {
		cl.expectCanaryPhase(ns, "Succeeded")
		cl.expectPrimaryImage(ns, "podinfo:v2")
	}
	step("promoted", 0)
	t.Logf("Flagger scenario: %s (after the tool's build)", time.Since(start).Round(time.Second))
}

var canaryGVK = schema.GroupVersionKind{Group: "flagger.app", Version: "v1beta1", Kind: "Canary"}

func (cl *cluster) expectCanaryPhase(ns, phase string) {
	cl.t.Helper()
	eventually(cl.t, "canary "+ns+"/podinfo "+phase, func() error {
		c := &unstructured.Unstructured{}
		c.SetGroupVersionKind(canaryGVK)
		if err := cl.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "podinfo"}, c); err != nil {
			return err
		}
		got, _, _ := unstructured.NestedString(c.Object, "status", "phase")
		if got != phase {
			return fmt.Errorf("phase %q", got)
		}
		return nil
	})
}

func (cl *cluster) bumpDeployment(ns, image string) {
	cl.t.Helper()
	d := &appsv1.Deployment{}
	must(cl.t, cl.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "podinfo"}, d))
	patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"containers":[{"name":"podinfo","image":%q,"ports":[{"containerPort":9898}]}]}}}}`, image)
	must(cl.t, cl.c.Patch(context.Background(), d, client.RawPatch("application/strategic-merge-patch+json", []byte(patch))))
}

func (cl *cluster) expectPrimaryImage(ns, image string) {
	cl.t.Helper()
	eventually(cl.t, ns+"/podinfo-primary runs "+image, func() error {
		d := &appsv1.Deployment{}
		if err := cl.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "podinfo-primary"}, d); err != nil {
			return err
		}
		if got := d.Spec.Template.Spec.Containers[0].Image; got != image {
			return fmt.Errorf("image %s", got)
		}
		return nil
	})
}

// expectFlaggerSplit waits until Flagger's TrafficSplit (read in the version Flagger writes) has
// the canary weight.
func (cl *cluster) expectFlaggerSplit(ns, version string, canary int) {
	cl.t.Helper()
	want := fmt.Sprintf("podinfo-canary=%d podinfo-primary=%d", canary, 100-canary)
	eventually(cl.t, fmt.Sprintf("TrafficSplit %s/podinfo: %s", ns, want), func() error {
		got, err := cl.splitBackends(ns, "podinfo", version)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("backends %s", got)
		}
		return nil
	})
}
