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
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/smi2istio/smi2istio/internal/localcp"
	"github.com/smi2istio/smi2istio/internal/memlimit"
	"github.com/smi2istio/smi2istio/internal/testing/proc"
)

type config struct {
	size             size
	root, dir, bin   string
	istioCRDs        string
	idle             time.Duration
	samples, workers int
	pprofDir         string
	profilePrefix    string // profiles are <prefix>-cpu-NN.pb.gz etc.: the size, and the limit's index when there are several
	memLimit         string
	operatorArgs     []string // -operator-args
	// consistencyChecks keeps kube-apiserver's periodic watch-cache consistency checker (-consistency-checks).
	consistencyChecks bool
	// control measures (c) twice before the operator (-control).
	control bool
	// compareBin is the operator of the revision compareRev (-compare), run compareRounds times in
	// turns with this one at the end.
	compareBin, compareRev string
	compareRounds          int
}

type result struct {
	Size                       string
	MemLimit                   string // the -memlimit value the operator ran with
	SMI, Pods, Istio           int
	BaselineIstio, BaselineAll time.Duration
	BaselineStatus             time.Duration // (c): the SMI and Istio objects and a status write per SMI object
	BaselineApply              time.Duration // (c) applied: as (c), the Istio objects server-side applied
	CPUBaselineStatus          float64       // the CPU seconds of every process in (c)
	BaselineStatusAfter        time.Duration // (c) measured again once the operator has run and is stopped
	CPUBaselineStatusAfter     float64
	CPUBaselineApply           float64       // and in (c) applied
	CPUConvergeAll             float64       // and while converging
	FloorWrites                float64       // (c)'s writes per SMI object beside the SMI objects': Istio objects and status
	EventsAlone                time.Duration // one Event per SMI object, created alone
	Convergence                time.Duration
	CPUConverge                float64 // the operator's CPU seconds while converging
	WritesConverge             float64
	ConvergeByClass            map[string]float64 // WritesConverge by writeClass
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

// bench is one size's run: its configuration, the control plane's client, the synthetic mesh, and
// the result its steps fill in.
type bench struct {
	cfg        config
	s          size
	us         []unit
	rc         *rest.Config
	scheme     *kruntime.Scheme
	c          client.Client
	kubeconfig string
	webhook    string // the address the operator serves its conversion webhook at
	certDir    string // the webhook's certificate, provided as under OLM
	res        result
	// istio is what the operator writes for the mesh (istioFor), made once and only read: every
	// writer works on copies (forAll).
	istio []*unstructured.Unstructured

	writesAtConverge map[string]float64 // the operator's writes by resource when convergence started
}

// operator is the operator's process and the addresses it serves.
type operator struct {
	*proc.Process
	metrics string
	pprof   string // empty without -pprof
}

// run measures one size on a fresh control plane: baselines first, then the operator converging,
// idle, changing weights, and restarted; then baseline (c) again, the operator stopped.
func run(ctx context.Context, cfg config) result {
	s := cfg.size
	b := &bench{cfg: cfg, s: s, us: units(s),
		res: result{Size: s.Name, MemLimit: cfg.memLimit, SMI: s.smiObjects(), Pods: s.Pods, Istio: s.istioObjects()}}
	check(os.MkdirAll(cfg.dir, 0o700))
	cp := b.startControlPlane()
	defer func() { _ = cp.Stop() }()
	b.installCluster(ctx)
	b.createWorkloads(ctx)
	b.measureBaselines(ctx)

	op := b.startOperator()
	defer op.Stop()
	w := newWatcher(ctx, b.rc, b.scheme)
	defer w.stop()
	waitFor("the baselines of every namespace", 2*time.Minute, func() bool { return w.baselines() == s.namespaces() })
	mem := b.converge(ctx, op, w)
	b.idle(ctx, op)
	b.changeWeights(ctx, op, w, mem)
	b.restart(op)
	b.baselineAgain(ctx, op, w)
	if cfg.compareRev != "" {
		b.compare(ctx, cfg.compareBin, cfg.compareRev, cfg.compareRounds)
	}
	return b.res
}

// startControlPlane starts a local control plane (stopped on a failure too: its processes must not
// outlive us) and the harness's client of it.
func (b *bench) startControlPlane() *localcp.ControlPlane {
	var opts []localcp.Option
	if !b.cfg.consistencyChecks {
		opts = append(opts, localcp.WithAPIServerArg("feature-gates", "DetectCacheInconsistency=false"))
	}
	cp, err := localcp.Start(filepath.Join(b.cfg.dir, "kubeconfig"), opts...)
	check(err)
	atExit(func() { _ = cp.Stop() })
	b.kubeconfig = cp.Kubeconfig
	b.rc = rest.CopyConfig(cp.Config)
	b.rc.QPS, b.rc.Burst = 5000, 10000
	b.scheme = kruntime.NewScheme()
	check(clientgoscheme.AddToScheme(b.scheme))
	check(apiextv1.AddToScheme(b.scheme))
	b.c, err = client.New(b.rc, client.Options{Scheme: b.scheme})
	check(err)
	return cp
}

// installCluster installs what a cluster admin installs before the operator (the webhook's
// certificate, the CRDs, Istio's mesh configuration), a node and the benchmark's namespaces.
func (b *bench) installCluster(ctx context.Context) {
	var err error
	b.webhook, err = proc.FreeAddr()
	check(err)
	// The webhook certificate is provided, as under OLM: a self-signed one would be new at every
	// start and the restart below would have to write the CRDs' caBundle.
	b.certDir = filepath.Join(b.cfg.dir, "certs")
	check(os.MkdirAll(b.certDir, 0o700))
	ca, err := proc.ProvidedCert(b.certDir)
	check(err)
	check(proc.InstallCRDs(ctx, b.c, b.cfg.root, b.webhook, ca, b.cfg.istioCRDs))
	check(proc.InstallMeshConfig(ctx, b.c))
	check(b.c.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bench-node"}}))
	for i := range b.s.namespaces() {
		check(b.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName(i), Labels: map[string]string{"istio-injection": "enabled"}}}))
	}
}

// createWorkloads creates the units' Kubernetes objects and the pods, each pod then given a
// Running, Ready status with an IP (there is no kubelet).
func (b *bench) createWorkloads(ctx context.Context) {
	t0 := time.Now()
	var workloads, pods []*unstructured.Unstructured
	for _, u := range b.us {
		workloads = append(workloads, u.workloads()...)
	}
	for i := range b.s.Pods {
		pods = append(pods, b.us[i%len(b.us)].pod(i/len(b.us)))
	}
	check(createAll(ctx, b.c, b.cfg.workers, workloads))
	check(forAll(b.cfg.workers, pods, func(p *unstructured.Unstructured) error {
		if err := b.c.Create(ctx, p); err != nil {
			return err
		}
		ip := fmt.Sprintf("10.%d.%d.%d", (len(p.GetName())+int(p.GetUID()[0]))%250, int(p.GetUID()[1])%250, int(p.GetUID()[2])%250)
		status := map[string]any{"phase": "Running", "podIP": ip, "podIPs": []any{map[string]any{"ip": ip}}, "hostIP": "10.0.0.1",
			"conditions": []any{map[string]any{"type": "Ready", "status": "True"}}}
		check(unstructured.SetNestedField(p.Object, status, "status"))
		return b.c.Status().Update(ctx, p)
	}))
	logf("%s: %d workload objects and %d pods (with status) in %s", b.s.Name, len(workloads), len(pods), time.Since(t0).Round(time.Second))
}

// objects are the SMI objects the harness applies (50/50 splits) and the Istio objects the operator
// writes for them (istioFor, made on the first call; the writers copy each object, forAll).
func (b *bench) objects() (smi, istio []*unstructured.Unstructured) {
	if b.istio == nil {
		var err error
		b.istio, err = istioFor(b.us)
		check(err)
	}
	for _, u := range b.us {
		smi = append(smi, u.smi([2]int64{50, 50})...)
	}
	return smi, b.istio
}

// startOperator starts the operator's binary as the install manifest runs it (its memory limit, a
// provided webhook certificate), with its pprof endpoint when profiles are asked for.
func (b *bench) startOperator() *operator { return b.startOperatorBin(b.cfg.bin, "smi2istio.log") }

// startOperatorBin starts the operator binary bin as startOperator does, logging to logName.
func (b *bench) startOperatorBin(bin, logName string) *operator {
	metricsAddr, err := proc.FreeAddr()
	check(err)
	probeAddr, err := proc.FreeAddr()
	check(err)
	op := &operator{metrics: metricsAddr,
		Process: proc.Operator(bin, filepath.Join(b.cfg.dir, logName), b.kubeconfig, b.webhook, b.certDir, metricsAddr, probeAddr)}
	op.Env = append(op.Env, memoryEnv(b.cfg.memLimit)...)
	op.Args = append(op.Args, b.cfg.operatorArgs...)
	if b.cfg.pprofDir != "" {
		op.pprof, err = proc.FreeAddr()
		check(err)
		op.Args = append(op.Args, "--pprof-bind-address="+op.pprof)
	}
	atExit(op.Stop)
	check(op.Start())
	return op
}

// converge applies the SMI objects and times until the watch sees every one Ready and every Istio
// object present, counting the operator's writes and CPU meanwhile. The sampling of its memory
// started here goes on.
func (b *bench) converge(ctx context.Context, op *operator, w *watcher) *memPeaks {
	before := writes(op.metrics)
	b.writesAtConverge = writesByResource(op.metrics)
	cpuBefore := metricSum(op.metrics, "process_cpu_seconds_total", "")
	mem := sampleMemory(op.PID(), op.metrics, nil)
	prof := b.profileConvergence(ctx, op)
	smi, _ := b.objects()
	t0 := time.Now()
	cpu0, pipe0, checks0 := cpuTimes(), pipelineSnapshot(op.metrics), consistencyChecks(ctx, b.rc)
	check(createAll(ctx, b.c, b.cfg.workers, smi))
	applied := time.Since(t0)
	appliedCPU, _ := cpuSince(cpu0, applied.Seconds())
	logf("%s: SMI objects applied in %s: %s", b.s.Name, applied.Round(time.Millisecond), appliedCPU)
	waitFor("convergence", time.Hour, func() bool { return w.converged(b.s) })
	b.res.Convergence = time.Since(t0)
	convergedCPU, total := cpuSince(cpu0, b.res.Convergence.Seconds())
	b.res.CPUConvergeAll = total
	logf("%s: convergence: %s", b.s.Name, convergedCPU)
	logf("%s: convergence: %s", b.s.Name, checksSince(checks0, consistencyChecks(ctx, b.rc)))
	logPipeline(b.s.Name+": while converging", pipe0, pipelineSnapshot(op.metrics))
	prof.stop()
	b.res.WritesConverge = writes(op.metrics) - before
	byResource := writesByResource(op.metrics)
	b.res.CPUConverge = metricSum(op.metrics, "process_cpu_seconds_total", "") - cpuBefore
	logf("%s: converged in %s with %.0f operator writes and %.1f s of operator CPU", b.s.Name, b.res.Convergence.Round(time.Millisecond),
		b.res.WritesConverge, b.res.CPUConverge)
	b.res.ConvergeByClass = writesByClass(b.writesAtConverge, byResource)
	logWrites(b.s.Name+": while converging", b.writesAtConverge, byResource)
	_, istio := b.objects()
	if diff := w.differs(ctx, istio); len(diff) > 0 {
		fail(fmt.Errorf("the baselines do not write what the operator writes (%d differences), first: %s", len(diff), strings.Join(diff[:min(5, len(diff))], "; ")))
	}
	logf("%s: the operator's %d Istio objects are the baselines' (labels, annotations, spec)", b.s.Name, len(istio))
	if n := metricSum(op.metrics, "smi2istio_events_dropped_total", ""); n > 0 {
		logf("%s: %.0f Events dropped (the recorder's queue was full)", b.s.Name, n)
	}
	if ms, err := proc.Metrics("http://" + op.metrics + "/metrics"); err == nil {
		for _, c := range ms["smi2istio_conversions_total"] {
			logf("%s: %.0f objects through the conversion webhook %s", b.s.Name, c.Value, c.Labels)
		}
	}
	prof.finish()
	return mem
}

// convergenceProfiles are the -pprof profiles of convergence: the operator's and the apiserver's
// CPU over all of it (until stop), and the operator's heap after it.
type convergenceProfiles struct {
	b                      *bench
	op                     *operator
	cpuDone, apiserverDone <-chan struct{}
	stop                   func()
}

func (b *bench) profileConvergence(ctx context.Context, op *operator) *convergenceProfiles {
	p := &convergenceProfiles{b: b, op: op, stop: func() {}}
	if b.cfg.pprofDir != "" {
		pctx, cancel := context.WithCancel(ctx)
		p.cpuDone = profileOperator(pctx, op.pprof, b.profile("cpu"), profileSeconds)
		p.apiserverDone, p.stop = profileAPIServer(pctx, b.rc, b.profile("apiserver-cpu"), profileSeconds), cancel
	}
	return p
}

// finish waits for the CPU profiles and saves the heap profile.
func (p *convergenceProfiles) finish() {
	if p.b.cfg.pprofDir == "" {
		return
	}
	<-p.cpuDone
	<-p.apiserverDone
	saveProfile(p.op.pprof, p.b.profile("heap.pb.gz"), "heap")
}

// profile is the file of one of the size's profiles (-pprof).
func (b *bench) profile(name string) string {
	return filepath.Join(b.cfg.pprofDir, b.cfg.profilePrefix+"-"+name)
}

// idle counts the operator's writes while nothing changes, from when the configuration's status
// counts (refreshed every minute) are current, and logs any by resource.
func (b *bench) idle(ctx context.Context, op *operator) {
	waitFor("the SMI2IstioConfig status counts", 3*time.Minute, func() bool { return countsCurrent(ctx, b.c, b.s) })
	before := writes(op.metrics)
	beforeByResource := writesByResource(op.metrics)
	// The recorder writes Events from a queue: some may come after convergence.
	events := writesByClass(b.writesAtConverge, beforeByResource)[writesEvents]
	logf("%s: %.0f Events from the first SMI object applied until idle (%.2f per SMI object)", b.s.Name, events, events/float64(b.res.SMI))
	evs, err := operatorEvents(ctx, b.c, b.s)
	check(err)
	for _, line := range summarizeEvents(evs, 3) {
		logf("%s: Events: %s", b.s.Name, line)
	}
	time.Sleep(b.cfg.idle)
	b.res.WritesIdle = writes(op.metrics) - before
	logf("%s: %.0f writes in %s idle", b.s.Name, b.res.WritesIdle, b.cfg.idle)
	logWrites(b.s.Name+": while idle", beforeByResource, writesByResource(op.metrics))
}

// changeWeights times weight changes one at a time, then ends the sampling of the first process's
// memory.
func (b *bench) changeWeights(ctx context.Context, op *operator, w *watcher, mem *memPeaks) {
	lat := changeLatency(ctx, b.c, w, b.us, b.cfg.samples)
	b.res.LatP50, b.res.LatP99 = percentile(lat, 50), percentile(lat, 99)
	mem.finish(op.PID())
	b.res.PeakRSS, b.res.PeakHeap = mem.hw, mem.heap
	logf("%s: converging, idle and changing weights: %s", b.s.Name, mem)
}

// restart starts a new operator process with nothing changed: it reconciles everything and must
// write nothing. Its memory is sampled until everything is reconciled.
func (b *bench) restart(op *operator) {
	op.Stop()
	check(op.Start())
	var atPeak func()
	if b.cfg.pprofDir != "" {
		// What the restarted process holds when its RSS peaks (the heap as of its last GC).
		atPeak = func() { fetchProfile(op.pprof, b.profile("restart-heap.pb.gz"), "heap") }
	}
	mem := sampleMemory(op.PID(), op.metrics, atPeak)
	waitFor("every split and target reconciled after the restart", 30*time.Minute, func() bool {
		return metricSum(op.metrics, "smi2istio_reconcile_outcomes_total", "") >= float64(2*b.s.Units)
	})
	time.Sleep(5 * time.Second)
	b.res.WritesRestart = writes(op.metrics)
	mem.finish(op.PID())
	b.res.RestartRSS, b.res.RestartHeap = mem.hw, mem.heap
	logf("%s: restarted, until everything is reconciled: %s", b.s.Name, mem)
	logf("%s: %.0f writes after a restart", b.s.Name, b.res.WritesRestart)
	for r, n := range writesByResource(op.metrics) {
		logf("%s: after the restart, %.0f writes of %s", b.s.Name, n, r)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[bench] "+format+"\n", args...)
}

func check(err error) {
	if err != nil {
		fail(err)
	}
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
