package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/internal/localcp"
	"github.com/smi2istio/smi2istio/internal/memlimit"
	"github.com/smi2istio/smi2istio/internal/proc"
)

type config struct {
	size             size
	root, dir, bin   string
	istioCRDs        string
	idle             time.Duration
	samples, workers int
	pprofDir         string
	profilePrefix    string // profiles are <prefix>-cpu.pb.gz etc.: the size, and the limit's index when there are several
	memLimit         string
}

type result struct {
	Size                       string
	MemLimit                   string // the -memlimit value the operator ran with
	SMI, Pods, Istio           int
	BaselineIstio, BaselineAll time.Duration
	Convergence                time.Duration
	CPUConverge                float64 // the operator's CPU seconds while converging
	WritesConverge             float64
	WritesIdle, WritesRestart  float64
	LatP50, LatP99             time.Duration
	PeakRSS, PeakHeap          uint64 // the first process: converging, idle, changes
	RestartRSS, RestartHeap    uint64 // the restarted process: listing everything, resync
}

var (
	smiKinds = []schema.GroupVersionKind{
		{Group: "split.smi-spec.io", Version: "v1alpha4", Kind: "TrafficSplit"},
		{Group: "access.smi-spec.io", Version: "v1alpha3", Kind: "TrafficTarget"},
		{Group: "specs.smi-spec.io", Version: "v1alpha4", Kind: "HTTPRouteGroup"},
		{Group: "specs.smi-spec.io", Version: "v1alpha4", Kind: "TCPRoute"},
	}
	istioKinds = []schema.GroupVersionKind{
		{Group: "networking.istio.io", Version: "v1beta1", Kind: "VirtualService"},
		{Group: "networking.istio.io", Version: "v1beta1", Kind: "DestinationRule"},
		{Group: "security.istio.io", Version: "v1beta1", Kind: "AuthorizationPolicy"},
		{Group: "security.istio.io", Version: "v1beta1", Kind: "PeerAuthentication"},
	}
)

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[bench] "+format+"\n", args...)
}

func check(err error) {
	if err != nil {
		fail(err)
	}
}

func run(ctx context.Context, cfg config) result {
	s := cfg.size
	res := result{Size: s.Name, MemLimit: cfg.memLimit, SMI: s.smiObjects(), Pods: s.Pods, Istio: s.istioObjects()}
	check(os.MkdirAll(cfg.dir, 0o700))
	cp, err := localcp.Start(filepath.Join(cfg.dir, "kubeconfig"))
	check(err)
	atExit(func() { _ = cp.Stop() })
	defer func() { _ = cp.Stop() }()
	rc := rest.CopyConfig(cp.Config)
	rc.QPS, rc.Burst = 5000, 10000
	scheme := kruntime.NewScheme()
	check(clientgoscheme.AddToScheme(scheme))
	check(apiextv1.AddToScheme(scheme))
	c, err := client.New(rc, client.Options{Scheme: scheme})
	check(err)

	webhook, err := proc.FreeAddr()
	check(err)
	// The webhook certificate is provided, as under OLM: a self-signed one would be new at every
	// start and the restart below would have to write the CRDs' caBundle.
	certDir := filepath.Join(cfg.dir, "certs")
	check(os.MkdirAll(certDir, 0o700))
	ca, err := proc.ProvidedCert(certDir)
	check(err)
	check(proc.InstallCRDs(ctx, c, cfg.root, webhook, ca, cfg.istioCRDs))
	check(proc.InstallMeshConfig(ctx, c))
	check(c.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bench-node"}}))
	for i := range s.namespaces() {
		check(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName(i), Labels: map[string]string{"istio-injection": "enabled"}}}))
	}

	us := units(s)
	t0 := time.Now()
	var workloads, pods []*unstructured.Unstructured
	for _, u := range us {
		workloads = append(workloads, u.workloads()...)
	}
	for i := range s.Pods {
		pods = append(pods, us[i%len(us)].pod(i/len(us)))
	}
	check(createAll(ctx, c, cfg.workers, workloads))
	check(forAll(cfg.workers, pods, func(p *unstructured.Unstructured) error {
		if err := c.Create(ctx, p); err != nil {
			return err
		}
		ip := fmt.Sprintf("10.%d.%d.%d", (len(p.GetName())+int(p.GetUID()[0]))%250, int(p.GetUID()[1])%250, int(p.GetUID()[2])%250)
		status := map[string]any{"phase": "Running", "podIP": ip, "podIPs": []any{map[string]any{"ip": ip}}, "hostIP": "10.0.0.1",
			"conditions": []any{map[string]any{"type": "Ready", "status": "True"}}}
		check(unstructured.SetNestedField(p.Object, status, "status"))
		return c.Status().Update(ctx, p)
	}))
	logf("%s: %d workload objects and %d pods (with status) in %s", s.Name, len(workloads), len(pods), time.Since(t0).Round(time.Second))

	// The baselines: a plain client, same writers, no operator running.
	var istio, smi []*unstructured.Unstructured
	for _, u := range us {
		istio = append(istio, u.istio()...)
		smi = append(smi, u.smi([2]int64{50, 50})...)
	}
	t0 = time.Now()
	check(createAll(ctx, c, cfg.workers, istio))
	res.BaselineIstio = time.Since(t0)
	check(deleteAll(ctx, c, s, istioKinds))
	t0 = time.Now()
	check(createAll(ctx, c, cfg.workers, interleave(smi, istio)))
	res.BaselineAll = time.Since(t0)
	check(deleteAll(ctx, c, s, append(istioKinds, smiKinds...)))
	logf("%s: baselines: %d Istio objects in %s; %d SMI + %d Istio objects in %s", s.Name, len(istio), res.BaselineIstio.Round(time.Millisecond), len(smi), len(istio), res.BaselineAll.Round(time.Millisecond))

	// The operator, and a watch on everything we measure.
	metricsAddr, err := proc.FreeAddr()
	check(err)
	probeAddr, err := proc.FreeAddr()
	check(err)
	op := proc.Operator(cfg.bin, filepath.Join(cfg.dir, "smi2istio.log"), cp.Kubeconfig, webhook, certDir, metricsAddr, probeAddr)
	op.Env = append(op.Env, memoryEnv(cfg.memLimit)...)
	pprofAddr := ""
	if cfg.pprofDir != "" {
		pprofAddr, err = proc.FreeAddr()
		check(err)
		op.Args = append(op.Args, "--pprof-bind-address="+pprofAddr)
	}
	atExit(op.Stop)
	check(op.Start())
	defer op.Stop()
	w := newWatcher(ctx, rc, scheme)
	defer w.stop()
	waitFor("the baselines of every namespace", 2*time.Minute, func() bool { return w.baselines() == s.namespaces() })

	before := writes(metricsAddr)
	cpuBefore := metricSum(metricsAddr, "process_cpu_seconds_total", "")
	mem := sampleMemory(op.PID(), metricsAddr, nil)
	cpuDone := make(chan struct{})
	go func() {
		defer close(cpuDone)
		if cfg.pprofDir != "" {
			saveProfile(pprofAddr, filepath.Join(cfg.pprofDir, cfg.profilePrefix+"-cpu.pb.gz"), "profile?seconds=20")
		}
	}()
	var apiserverDone <-chan struct{}
	stopProfiling := func() {}
	if cfg.pprofDir != "" {
		pctx, cancel := context.WithCancel(ctx)
		apiserverDone, stopProfiling = profileAPIServer(pctx, rc, filepath.Join(cfg.pprofDir, cfg.profilePrefix+"-apiserver-cpu")), cancel
	}
	t0 = time.Now()
	check(createAll(ctx, c, cfg.workers, smi))
	waitFor("convergence", time.Hour, func() bool { return w.converged(s) })
	res.Convergence = time.Since(t0)
	stopProfiling()
	res.WritesConverge = writes(metricsAddr) - before
	res.CPUConverge = metricSum(metricsAddr, "process_cpu_seconds_total", "") - cpuBefore
	logf("%s: converged in %s with %.0f operator writes and %.1f s of operator CPU", s.Name, res.Convergence.Round(time.Millisecond),
		res.WritesConverge, res.CPUConverge)
	if ms, err := proc.Metrics("http://" + metricsAddr + "/metrics"); err == nil {
		for _, c := range ms["smi2istio_conversions_total"] {
			logf("%s: %.0f objects through the conversion webhook %s", s.Name, c.Value, c.Labels)
		}
	}
	<-cpuDone
	if apiserverDone != nil {
		<-apiserverDone
	}
	if cfg.pprofDir != "" {
		saveProfile(pprofAddr, filepath.Join(cfg.pprofDir, cfg.profilePrefix+"-heap.pb.gz"), "heap")
	}

	// The configuration's status counts are refreshed every minute: idle starts once they are current.
	waitFor("the SMI2IstioConfig status counts", 3*time.Minute, func() bool { return countsCurrent(ctx, c, s) })
	before = writes(metricsAddr)
	beforeByResource := writesByResource(metricsAddr)
	time.Sleep(cfg.idle)
	res.WritesIdle = writes(metricsAddr) - before
	logf("%s: %.0f writes in %s idle", s.Name, res.WritesIdle, cfg.idle)
	for r, n := range writesByResource(metricsAddr) {
		if d := n - beforeByResource[r]; d > 0 {
			logf("%s: while idle, %.0f writes of %s", s.Name, d, r)
		}
	}

	lat := changeLatency(ctx, c, w, us, cfg.samples)
	res.LatP50, res.LatP99 = percentile(lat, 50), percentile(lat, 99)
	mem.finish(op.PID())
	res.PeakRSS, res.PeakHeap = mem.hw, mem.heap
	logf("%s: converging, idle and changing weights: %s", s.Name, mem)

	// A restart with nothing changed: the new process reconciles everything and must write nothing.
	op.Stop()
	check(op.Start())
	var atPeak func()
	if cfg.pprofDir != "" {
		// What the restarted process holds when its RSS peaks (the heap as of its last GC).
		atPeak = func() {
			fetchProfile(pprofAddr, filepath.Join(cfg.pprofDir, cfg.profilePrefix+"-restart-heap.pb.gz"), "heap")
		}
	}
	mem = sampleMemory(op.PID(), metricsAddr, atPeak)
	waitFor("every split and target reconciled after the restart", 30*time.Minute, func() bool {
		return metricSum(metricsAddr, "smi2istio_reconcile_outcomes_total", "") >= float64(2*s.Units)
	})
	time.Sleep(5 * time.Second)
	res.WritesRestart = writes(metricsAddr)
	mem.finish(op.PID())
	res.RestartRSS, res.RestartHeap = mem.hw, mem.heap
	logf("%s: restarted, until everything is reconciled: %s", s.Name, mem)
	logf("%s: %.0f writes after a restart", s.Name, res.WritesRestart)
	for r, n := range writesByResource(metricsAddr) {
		logf("%s: after the restart, %.0f writes of %s", s.Name, n, r)
	}
	return res
}

// memoryEnv is the operator's environment for a -memlimit value: a container limit (176Mi) as
// the Deployment passes it, a Go soft limit (128MiB) as GOMEMLIMIT, or nothing ("off").
func memoryEnv(limit string) []string {
	switch {
	case limit == "off":
		return nil
	case strings.HasSuffix(limit, "B"):
		return []string{"GOMEMLIMIT=" + limit}
	default:
		q := resource.MustParse(limit)
		return []string{memlimit.Env + "=" + strconv.FormatInt(q.Value(), 10)}
	}
}

func interleave(a, b []*unstructured.Unstructured) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for i := 0; i < len(a) || i < len(b); i++ {
		if i < len(a) {
			out = append(out, a[i])
		}
		if i < len(b) {
			out = append(out, b[i])
		}
	}
	return out
}

func forAll(workers int, objs []*unstructured.Unstructured, f func(*unstructured.Unstructured) error) error {
	var wg sync.WaitGroup
	var next atomic.Int64
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(objs) {
					return
				}
				if err := f(objs[i].DeepCopy()); err != nil {
					errs <- fmt.Errorf("%s %s/%s: %w", objs[i].GetKind(), objs[i].GetNamespace(), objs[i].GetName(), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func createAll(ctx context.Context, c client.Client, workers int, objs []*unstructured.Unstructured) error {
	return forAll(workers, objs, func(o *unstructured.Unstructured) error { return c.Create(ctx, o) })
}

// deleteAll removes every object of the kinds from the benchmark's namespaces and waits until gone.
func deleteAll(ctx context.Context, c client.Client, s size, kinds []schema.GroupVersionKind) error {
	for i := range s.namespaces() {
		for _, gvk := range kinds {
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(gvk)
			if err := c.DeleteAllOf(ctx, u, client.InNamespace(nsName(i))); err != nil {
				return fmt.Errorf("delete %s in %s: %w", gvk.Kind, nsName(i), err)
			}
		}
	}
	for _, gvk := range kinds {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		waitFor("deletion of the "+gvk.Kind+"s", 5*time.Minute, func() bool {
			return c.List(ctx, list, client.Limit(1)) == nil && len(list.Items) == 0
		})
	}
	return nil
}

func waitFor(what string, timeout time.Duration, cond func() bool) {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			fail(fmt.Errorf("%s: not within %s", what, timeout))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// writes is the operator's apiserver write requests so far (client-go's request counter).
func writes(metricsAddr string) float64 {
	var n float64
	for _, m := range []string{"POST", "PUT", "PATCH", "DELETE"} {
		n += metricSum(metricsAddr, "rest_client_requests_total", `method="`+m+`"`)
	}
	return n
}

// writesByResource is the operator's smi2istio_apiserver_writes_total by method and resource.
func writesByResource(metricsAddr string) map[string]float64 {
	ms, err := proc.Metrics("http://" + metricsAddr + "/metrics")
	check(err)
	out := map[string]float64{}
	for _, s := range ms["smi2istio_apiserver_writes_total"] {
		out[s.Labels] += s.Value
	}
	return out
}

func metricSum(metricsAddr, name, labelPart string) float64 {
	ms, err := proc.Metrics("http://" + metricsAddr + "/metrics")
	check(err)
	var n float64
	for _, s := range ms[name] {
		if strings.Contains(s.Labels, labelPart) {
			n += s.Value
		}
	}
	return n
}

// changeLatency changes the weights of one TrafficSplit at a time and times until the watch sees
// its VirtualService carry them.
func changeLatency(ctx context.Context, c client.Client, w *watcher, us []unit, samples int) []time.Duration {
	var out []time.Duration
	for i := range samples {
		u := us[(i*7919)%len(us)]
		weights := [2]int64{int64(10 + i%80), int64(90 - i%80)}
		want := fmt.Sprintf("%d/%d", weights[0], weights[1])
		patch := fmt.Sprintf(`{"spec":{"backends":[{"service":%q,"weight":%d},{"service":%q,"weight":%d}]}}`, u.name+"-v1", weights[0], u.name+"-v2", weights[1])
		split := u.split(weights)
		t0 := time.Now()
		check(c.Patch(ctx, split, client.RawPatch("application/merge-patch+json", []byte(patch))))
		waitFor("the VirtualService of "+u.ns+"/"+u.name, time.Minute, func() bool { return w.vsWeights(u.ns, u.name) == want })
		out = append(out, time.Since(t0))
	}
	return out
}

func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}

// watcher caches the SMI and generated Istio objects through watches (what the harness measures
// must not be polled from the apiserver it loads).
type watcher struct {
	c      cache.Cache
	cancel context.CancelFunc
}

func newWatcher(ctx context.Context, rc *rest.Config, scheme *kruntime.Scheme) *watcher {
	ca, err := cache.New(rc, cache.Options{Scheme: scheme, DefaultTransform: cache.TransformStripManagedFields()})
	check(err)
	ctx, cancel := context.WithCancel(ctx)
	for _, gvk := range append(append([]schema.GroupVersionKind{}, smiKinds...), istioKinds...) {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(gvk)
		_, err := ca.GetInformer(ctx, u)
		check(err)
	}
	go func() { _ = ca.Start(ctx) }()
	if !ca.WaitForCacheSync(ctx) {
		fail(fmt.Errorf("watch cache did not sync"))
	}
	return &watcher{c: ca, cancel: cancel}
}

func (w *watcher) stop() { w.cancel() }

func (w *watcher) list(gvk schema.GroupVersionKind, opts ...client.ListOption) []unstructured.Unstructured {
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
	check(w.c.List(context.Background(), list, opts...))
	return list.Items
}

func (w *watcher) baselines() int {
	n := 0
	for _, ap := range w.list(istioKinds[2], client.MatchingLabels{"app.kubernetes.io/managed-by": "smi2istio"}) {
		if ap.GetName() == "smi2istio-default-deny" {
			n++
		}
	}
	return n
}

// converged: every SMI object Ready for its generation, every expected Istio object present.
func (w *watcher) converged(s size) bool {
	for _, gvk := range smiKinds {
		items := w.list(gvk)
		if len(items) != s.Units {
			return false
		}
		for i := range items {
			if !ready(&items[i]) {
				return false
			}
		}
	}
	for _, gvk := range istioKinds {
		n := len(w.list(gvk, client.MatchingLabels{"app.kubernetes.io/managed-by": "smi2istio"}))
		want := s.Units
		switch gvk.Kind {
		case "AuthorizationPolicy":
			want = 2*s.Units + s.namespaces()
		case "PeerAuthentication":
			want = 2 * s.Units
		}
		if n != want {
			return false
		}
	}
	return true
}

func ready(u *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Ready" {
			og, _ := m["observedGeneration"].(int64)
			return m["status"] == "True" && og == u.GetGeneration()
		}
	}
	return false
}

func (w *watcher) vsWeights(ns, name string) string {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(istioKinds[0])
	if err := w.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, u); err != nil {
		return ""
	}
	http, _, _ := unstructured.NestedSlice(u.Object, "spec", "http")
	if len(http) == 0 {
		return ""
	}
	routes, _, _ := unstructured.NestedSlice(http[0].(map[string]any), "route")
	var ws []string
	for _, r := range routes {
		wt, _, _ := unstructured.NestedInt64(r.(map[string]any), "weight")
		ws = append(ws, strconv.FormatInt(wt, 10))
	}
	return strings.Join(ws, "/")
}

// countsCurrent: the SMI2IstioConfig status counts every TrafficSplit and TrafficTarget as Ready.
func countsCurrent(ctx context.Context, c client.Client, s size) bool {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("smi2istio.io/v1alpha1")
	u.SetKind("SMI2IstioConfig")
	if err := c.Get(ctx, client.ObjectKey{Name: "default"}, u); err != nil {
		return false
	}
	objs, _, _ := unstructured.NestedSlice(u.Object, "status", "objects")
	ready := 0
	for _, o := range objs {
		m, _ := o.(map[string]any)
		if n, ok := m["ready"].(int64); ok && n == int64(s.Units) {
			ready++
		}
	}
	return ready == 2
}
