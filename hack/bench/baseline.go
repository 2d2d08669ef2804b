package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/smi2istio/smi2istio/internal/smi/conversion"
	"github.com/smi2istio/smi2istio/internal/smi/crds"
)

var eventKind = schema.GroupVersionKind{Group: "events.k8s.io", Version: "v1", Kind: "Event"}

// operatorFieldManager is the operator's field manager (controllers.FieldManager: a test checks).
const operatorFieldManager = "smi2istio"

// measureBaselines times a plain client, with the same writers and no operator running: (a) creating
// the Istio objects; (b) creating the SMI and the Istio objects; (c) as (b), each SMI object then
// given the status the operator writes (its floor: see statusBaseline); (c) applied, as (c) with the
// Istio objects server-side applied. Each set is deleted again.
// Then it times one Event per SMI object alone, what the operator's Events cost.
func (b *bench) measureBaselines(ctx context.Context) {
	smi, istio := b.objects()
	all := append(append([]schema.GroupVersionKind{}, istioKinds...), smiKinds...)
	b.res.BaselineIstio = b.timedCreate(ctx, istio, istioKinds)
	b.res.BaselineAll = b.timedCreate(ctx, interleave(smi, istio), all)
	logf("%s: baselines: %d Istio objects in %s; %d SMI + %d Istio objects in %s", b.s.Name, len(istio), b.res.BaselineIstio.Round(time.Millisecond), len(smi), len(istio), b.res.BaselineAll.Round(time.Millisecond))
	b.res.BaselineStatus, b.res.CPUBaselineStatus = b.statusBaseline(ctx, "baseline (c)", "baseline-c", smi, istio, all, false)
	if b.cfg.control {
		wall, cpu := b.statusBaseline(ctx, "baseline (c) control", "baseline-c-control", smi, istio, all, false)
		logf("%s: baseline (c) control, right after the first: %.2f× its wall time, %.2f× its CPU", b.s.Name,
			wall.Seconds()/b.res.BaselineStatus.Seconds(), cpu/b.res.CPUBaselineStatus)
	}
	b.res.BaselineApply, b.res.CPUBaselineApply = b.statusBaseline(ctx, "baseline (c) applied", "baseline-c-applied", smi, istio, all, true)
	b.eventsAlone(ctx, smi)
}

// baselineAgain measures baseline (c) a second time, after the operator has run: the operator and
// the harness's watch are stopped (neither ran in the first; the watch's cache is let go) and the
// SMI and Istio objects of the benchmark's namespaces are deleted first (with the webhook served,
// so the deletions convert as they would). This machine's speed drifts within one run by more than
// the target's margin: in the eleventh round of docs/benchmarks.md (c) took 200 s before the
// operator and 232 s after it. The ratio is reported against each and against their mean (-control
// measures (c) twice before the operator: at M the repeat differed by 6-35 %, and (c) after was not
// systematically the slower).
func (b *bench) baselineAgain(ctx context.Context, op *operator, w *watcher) {
	op.Stop()
	w.stop()
	smi, istio := b.objects()
	all := append(append([]schema.GroupVersionKind{}, istioKinds...), smiKinds...)
	b.clear(ctx)
	b.res.BaselineStatusAfter, b.res.CPUBaselineStatusAfter = b.statusBaseline(ctx, "baseline (c) again", "baseline-c-again", smi, istio, all, false)
	logf("%s: convergence against (c), wall / CPU, the mean of before and after (before; after): %s", b.s.Name, ratiosToC(b.res))
}

// baselineC is (c)'s wall time the ratios are taken against: the mean of its two measurements, or
// the one before the operator ran when there is no second.
func (r result) baselineC() time.Duration {
	return meanOrFirst(r.BaselineStatus, r.BaselineStatusAfter)
}

// cpuBaselineC is baselineC in CPU seconds.
func (r result) cpuBaselineC() float64 {
	return meanOrFirst(r.CPUBaselineStatus, r.CPUBaselineStatusAfter)
}

func meanOrFirst[T time.Duration | float64](first, second T) T {
	if second == 0 {
		return first
	}
	return (first + second) / 2
}

// statusBaseline is baseline (c), the least any operator reporting status writes: the SMI objects,
// the Istio objects and one status write per SMI object, patched as the operator patches it (a
// merge patch of the status subresource in the stored version, its conditions with the observed
// generation), right after the object's create. The conversion webhook is served meanwhile (by
// the harness, with the operator's handler and certificate, at the operator's address), so that
// every SMI write costs the apiserver its conversions into each served version's watch cache, as
// it does while the operator runs; (a) and (b) run with the webhook down.
//
// With apply, the Istio objects are server-side applied as the operator's sync step applies them
// (one field manager, forced, strict field validation) instead of created: baseline (c) as an
// operator built on server-side apply must write it ("(c) applied"). It returns the phase's wall
// time and the CPU seconds of every process. name is the phase's in the log, and prefix its
// profiles' (<prefix>-apiserver-cpu-NN.pb.gz; none without one).
func (b *bench) statusBaseline(ctx context.Context, name, prefix string, smi, istio []*unstructured.Unstructured, kinds []schema.GroupVersionKind, apply bool) (time.Duration, float64) {
	profile := prefix + "-apiserver-cpu"
	stop := serveConversion(ctx, b.webhook, b.certDir)
	defer stop()
	convertedBefore := conversions()
	var floor atomic.Int64 // the writes beyond the SMI objects' creates
	now := time.Now()
	t0 := now
	cpu0, checks0 := cpuTimes(), consistencyChecks(ctx, b.rc)
	stopProfile, profiled := func() {}, (<-chan struct{})(nil)
	if b.cfg.pprofDir != "" && prefix != "" {
		// The apiserver's CPU in (c), to set against convergence's: 5 s windows (the last one runs
		// past the end by at most that).
		pctx, cancel := context.WithCancel(ctx)
		profiled, stopProfile = profileAPIServer(pctx, b.rc, b.profile(profile), 5), cancel
	}
	check(forAll(b.cfg.workers, interleave(smi, istio), func(o *unstructured.Unstructured) error {
		if err := b.write(ctx, o, apply && !isSMI(o)); err != nil {
			return err
		}
		if isSMI(o) {
			patch, err := operatorStatus(o, now)
			if err != nil {
				return err
			}
			if err := b.c.Status().Patch(ctx, patch, client.Merge); err != nil {
				return err
			}
		}
		floor.Add(1) // an Istio object's create, or an SMI object's status
		return nil
	}))
	wall := time.Since(t0)
	used, cpu := cpuSince(cpu0, wall.Seconds())
	stopProfile()
	if profiled != nil {
		<-profiled
	}
	logf("%s: %s: %s", b.s.Name, name, used)
	logf("%s: %s: %s", b.s.Name, name, checksSince(checks0, consistencyChecks(ctx, b.rc)))
	converted := conversions() - convertedBefore
	b.res.FloorWrites = float64(floor.Load()) / float64(len(smi))
	check(deleteAll(ctx, b.c, b.s, kinds))
	logf("%s: %s: %d SMI + %d Istio objects and %d status writes in %s, %.0f objects through the conversion webhook (served by the harness)",
		b.s.Name, name, len(smi), len(istio), len(smi), wall.Round(time.Millisecond), converted)
	return wall, cpu
}

// write creates o, or server-side applies it as the operator's sync step does
// (internal/syncset: its field manager, forced, strict field validation).
func (b *bench) write(ctx context.Context, o *unstructured.Unstructured, apply bool) error {
	if !apply {
		return b.c.Create(ctx, o)
	}
	//nolint:staticcheck // as internal/syncset applies: SSA of an unstructured object with one field manager.
	return b.c.Patch(ctx, o, client.Apply, client.FieldOwner(operatorFieldManager), client.ForceOwnership,
		client.FieldValidation(metav1.FieldValidationStrict))
}

// eventsAlone times the harness's writers creating the Event the operator emits for each SMI object
// becoming Ready, and deletes them again.
func (b *bench) eventsAlone(ctx context.Context, smi []*unstructured.Unstructured) {
	now := time.Now()
	events := make([]*unstructured.Unstructured, 0, len(smi))
	for i, o := range smi {
		ev, err := operatorEvent(o, i, now)
		check(err)
		events = append(events, ev)
	}
	b.res.EventsAlone = b.timedCreate(ctx, events, []schema.GroupVersionKind{eventKind})
	logf("%s: %d Events alone (one per SMI object) in %s", b.s.Name, len(events), b.res.EventsAlone.Round(time.Millisecond))
}

// timedCreate is how long the harness's writers take to create objs; then it deletes every object
// of the kinds.
func (b *bench) timedCreate(ctx context.Context, objs []*unstructured.Unstructured, kinds []schema.GroupVersionKind) time.Duration {
	t0 := time.Now()
	check(createAll(ctx, b.c, b.cfg.workers, objs))
	d := time.Since(t0)
	check(deleteAll(ctx, b.c, b.s, kinds))
	return d
}

func isSMI(o *unstructured.Unstructured) bool {
	return strings.HasSuffix(o.GroupVersionKind().Group, ".smi-spec.io")
}

// serveConversion serves the SMI CRDs' conversion webhook as the operator does (its handler, at
// addr, with the certificate in certDir) until stop, which waits for the server to end.
func serveConversion(ctx context.Context, addr, certDir string) (stop func()) {
	host, port, err := net.SplitHostPort(addr)
	check(err)
	p, err := strconv.Atoi(port)
	check(err)
	srv := webhook.NewServer(webhook.Options{Host: host, Port: p, CertDir: certDir,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.MinVersion = tls.VersionTLS12 }}})
	srv.Register(crds.ConversionPath, conversion.Handler(logr.Discard()))
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	waitFor("the harness's conversion webhook", time.Minute, func() bool {
		select {
		case err := <-done:
			fail(fmt.Errorf("the harness's conversion webhook ended: %w", err))
		default:
		}
		return srv.StartedChecker()(nil) == nil
	})
	return func() {
		cancel()
		check(<-done)
	}
}

// conversions is how many objects the harness's conversion webhook converted so far.
func conversions() float64 {
	reg := prometheus.NewRegistry()
	check(reg.Register(conversion.Conversions))
	mfs, err := reg.Gather()
	check(err)
	var n float64
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			n += m.GetCounter().GetValue()
		}
	}
	return n
}
