package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/smi2istio/smi2istio/internal/testing/proc"
)

// -compare: the operator of another revision converges on the same control plane, in turns with
// this one. This machine's speed drifts within one run by more than the cuts a round makes (the
// thirteenth round of docs/benchmarks.md: (c) moved 19-23 % inside a run), so two builds measured
// in separate runs, or even one after the other, compare the hours as much as the code. Here each
// convergence of one build has one of the other's beside it, minutes apart, on the same objects.
//
// -compare c takes baseline (c) for the other build: (c) and this build's convergence in turns, so
// that issue 17's ratio is taken between phases minutes apart, pair by pair, rather than between a
// convergence and two (c)s half an hour before and after it.

// baselineTurns is the -compare value that runs baseline (c) in turns with this build.
const baselineTurns = "c"

// buildRevision builds the operator at a git revision of the repository at root (a detached
// worktree under dir, removed again) and returns the binary.
func buildRevision(root, dir, rev string) (string, error) {
	wt := filepath.Join(dir, "compare-src")
	add := exec.Command("git", "-C", root, "worktree", "add", "--force", "--detach", wt, rev)
	add.Stdout, add.Stderr = os.Stderr, os.Stderr
	if err := add.Run(); err != nil {
		return "", fmt.Errorf("check out %s: %w", rev, err)
	}
	defer func() { _ = exec.Command("git", "-C", root, "worktree", "remove", "--force", wt).Run() }()
	out := filepath.Join(dir, "compare-bin")
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", err
	}
	return proc.BuildOperator(wt, out)
}

// turn is one convergence of one build in a -compare run.
type turn struct {
	build        string // "this" or the revision
	wall         time.Duration
	cpu, opCPU   float64 // every process's CPU seconds; the operator's
	writes, gets float64 // the operator's apiserver writes, and its GETs
	reconciles   float64
}

func (t turn) String() string {
	return fmt.Sprintf("%s: convergence %s, CPU %.1f s (operator %.1f s), %.0f operator writes and %.0f GETs, %.0f reconciles",
		t.build, t.wall.Round(time.Millisecond), t.cpu, t.opCPU, t.writes, t.gets, t.reconciles)
}

// compare runs rounds of (the other build, this build) after the run's last phase: each turn starts
// from no SMI or Istio objects in the benchmark's namespaces (deleted with the operator stopped, as
// baselineAgain does), starts the build's operator, waits for the namespace baselines, and times
// the SMI objects' apply until the watch sees convergence, as converge does (no profiles, memory
// or latency). It logs each turn and the ratios of adjacent turns.
func (b *bench) compare(ctx context.Context, other, rev string, rounds int) []turn {
	var turns []turn
	for i := range rounds {
		if rev == baselineTurns {
			turns = append(turns, b.baselineTurn(ctx, i))
		} else {
			turns = append(turns, b.turn(ctx, other, rev, i))
		}
		turns = append(turns, b.turn(ctx, b.cfg.bin, "this", i))
	}
	against := "the other build's"
	if rev == baselineTurns {
		against = "baseline (c)'s"
	}
	logf("%s: -compare %s, wall and CPU of this build over %s, turn by adjacent turn: %s", b.s.Name, rev, against, compareRatios(turns))
	return turns
}

// compareRatios is, for each pair of adjacent turns (one of each build), this build's wall time
// and CPU over the other's, and their means.
func compareRatios(turns []turn) string {
	var parts []string
	var sumWall, sumCPU float64
	for i := 1; i < len(turns); i++ {
		this, other := turns[i], turns[i-1]
		if this.build != "this" {
			this, other = other, this
		}
		w, c := this.wall.Seconds()/other.wall.Seconds(), this.cpu/other.cpu
		sumWall, sumCPU = sumWall+w, sumCPU+c
		parts = append(parts, fmt.Sprintf("%.3f× / %.3f×", w, c))
	}
	if len(parts) == 0 {
		return "none"
	}
	n := float64(len(parts))
	return fmt.Sprintf("%s; mean %.3f× / %.3f×", strings.Join(parts, ", "), sumWall/n, sumCPU/n)
}

// baselineTurn is one baseline (c) in a -compare c run, from no SMI or Istio objects in the
// benchmark's namespaces (the previous turn's deleted, with no operator running), as baselineAgain
// measures it (no profiles).
func (b *bench) baselineTurn(ctx context.Context, round int) turn {
	smi, istio := b.objects()
	b.clear(ctx)
	all := append(append([]schema.GroupVersionKind{}, istioKinds...), smiKinds...)
	wall, cpu := b.statusBaseline(ctx, fmt.Sprintf("-compare turn %d, baseline (c)", round), "", smi, istio, all, false)
	return turn{build: "baseline (c)", wall: wall, cpu: cpu}
}

// clear deletes the SMI and Istio objects of the benchmark's namespaces, with the conversion
// webhook served (the deletions convert as they would).
func (b *bench) clear(ctx context.Context) {
	all := append(append([]schema.GroupVersionKind{}, istioKinds...), smiKinds...)
	stop := serveConversion(ctx, b.webhook, b.certDir)
	check(deleteAll(ctx, b.c, b.s, all))
	stop()
}

func (b *bench) turn(ctx context.Context, bin, build string, round int) turn {
	smi, _ := b.objects()
	b.clear(ctx)
	name := "this"
	if build != "this" {
		name = "other"
	}
	op := b.startOperatorBin(bin, fmt.Sprintf("smi2istio-compare-%s-%d.log", name, round))
	defer op.Stop()
	w := newWatcher(ctx, b.rc, b.scheme)
	defer w.stop()
	waitFor("the baselines of every namespace", 2*time.Minute, func() bool { return w.baselines() == b.s.namespaces() })
	t := turn{build: build}
	writes0, opCPU0 := writes(op.metrics), metricSum(op.metrics, "process_cpu_seconds_total", "")
	reconciles0 := metricSum(op.metrics, "controller_runtime_reconcile_total", "")
	gets0 := metricSum(op.metrics, "rest_client_requests_total", `method="GET"`)
	t0 := time.Now()
	cpu0 := cpuTimes()
	check(createAll(ctx, b.c, b.cfg.workers, smi))
	waitFor("convergence", time.Hour, func() bool { return w.converged(b.s) })
	t.wall = time.Since(t0)
	text, total := cpuSince(cpu0, t.wall.Seconds())
	t.cpu = total
	t.opCPU = metricSum(op.metrics, "process_cpu_seconds_total", "") - opCPU0
	t.writes = writes(op.metrics) - writes0
	t.reconciles = metricSum(op.metrics, "controller_runtime_reconcile_total", "") - reconciles0
	t.gets = metricSum(op.metrics, "rest_client_requests_total", `method="GET"`) - gets0
	logf("%s: -compare turn, %s; %s", b.s.Name, t, text)
	return t
}
