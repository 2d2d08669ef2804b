package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// printTable writes the results as a markdown table, with the ratios the targets are about.
func printTable(out io.Writer, rows []result) {
	fmt.Fprintln(out, "| size | memory limit | SMI objects | pods | Istio objects | baseline: Istio objects only | baseline: SMI + Istio objects | baseline: SMI + Istio objects + status (c) before, after / (c) applied | convergence | ratio to Istio-only / SMI+Istio | ratio to (c) wall / CPU: the mean of before and after (before; after) | ratio to (c) applied wall / CPU | operator CPU converging | operator writes per SMI object | of them Istio / SMI status / Events / other (floor: Istio + status) | writes idle | writes after restart | change latency p50 / p99 | peak RSS / after restart | peak Go heap / after restart |")
	fmt.Fprintln(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Fprintf(out, "| %s | %s | %d | %d | %d | %s | %s | %s, %s / %s | %s | %.2f× / %.2f× | %s | %.2f× / %.2f× | %.1f s | %.2f | %s | %.0f | %.0f | %s / %s | %s / %s | %s / %s |\n",
			r.Size, r.MemLimit, r.SMI, r.Pods, r.Istio, dur(r.BaselineIstio), dur(r.BaselineAll), dur(r.BaselineStatus), durOrNone(r.BaselineStatusAfter), dur(r.BaselineApply), dur(r.Convergence),
			r.Convergence.Seconds()/r.BaselineIstio.Seconds(), r.Convergence.Seconds()/r.BaselineAll.Seconds(),
			ratiosToC(r),
			r.Convergence.Seconds()/r.BaselineApply.Seconds(), r.CPUConvergeAll/r.CPUBaselineApply,
			r.CPUConverge, r.WritesConverge/float64(r.SMI), writeShares(r), r.WritesIdle, r.WritesRestart,
			dur(r.LatP50), dur(r.LatP99), mib(r.PeakRSS), mib(r.RestartRSS), mib(r.PeakHeap), mib(r.RestartHeap))
	}
}

// ratiosToC is the convergence's ratio to baseline (c), wall / CPU: to the mean of its two
// measurements, and to each, when it was measured again after the operator; else to the one.
func ratiosToC(r result) string {
	mean := fmt.Sprintf("%.2f× / %.2f×", r.Convergence.Seconds()/r.baselineC().Seconds(), r.CPUConvergeAll/r.cpuBaselineC())
	if r.BaselineStatusAfter == 0 {
		return mean
	}
	return fmt.Sprintf("%s (%.2f× / %.2f×; %.2f× / %.2f×)", mean,
		r.Convergence.Seconds()/r.BaselineStatus.Seconds(), r.CPUConvergeAll/r.CPUBaselineStatus,
		r.Convergence.Seconds()/r.BaselineStatusAfter.Seconds(), r.CPUConvergeAll/r.CPUBaselineStatusAfter)
}

// durOrNone is dur, or – for a phase that did not run.
func durOrNone(d time.Duration) string {
	if d == 0 {
		return "–"
	}
	return dur(d)
}

// writeShares is the operator's writes per SMI object while converging by class, and the floor.
func writeShares(r result) string {
	per := func(class string) float64 { return r.ConvergeByClass[class] / float64(r.SMI) }
	return fmt.Sprintf("%.2f / %.2f / %.2f / %.2f (%.2f)", per(writesIstio), per(writesStatus), per(writesEvents), per(writesOther), r.FloorWrites)
}

func dur(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	default:
		return d.Round(100 * time.Microsecond).String()
	}
}

func mib(b uint64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// saveProfile stores one of the operator's pprof profiles (heap, or profile?seconds=N for CPU).
func saveProfile(addr, file, which string) {
	if fetchProfile(addr, file, which) {
		logf("saved %s", file)
	}
}

// fetchProfile is saveProfile without the log line; false if the profile could not be fetched.
func fetchProfile(addr, file, which string) bool {
	resp, err := http.Get("http://" + addr + "/debug/pprof/" + which) //nolint:noctx // local pprof endpoint
	if err != nil {
		logf("profile %s: %v", which, err)
		return false
	}
	defer func() { _ = resp.Body.Close() }()
	f, err := os.Create(file)
	check(err)
	defer func() { _ = f.Close() }()
	_, err = io.Copy(f, resp.Body)
	check(err)
	return true
}

// profileSeconds is the length of each CPU profile window (the apiserver's, the operator's) taken while the
// operator converges.
const profileSeconds = 30

// profileAPIServer saves the kube-apiserver's CPU profile in consecutive windows
// (<prefix>-00.pb.gz, -01, ...) until ctx ends, the window under way when it ends included: together
// they cover the whole convergence (go tool pprof merges them). The channel closes after the last.
func profileAPIServer(ctx context.Context, rc *rest.Config, prefix string, seconds int) <-chan struct{} {
	cfg := rest.CopyConfig(rc)
	cfg.Timeout = 2 * time.Duration(seconds) * time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	check(err)
	return profileWindows(ctx, prefix, func(file string) bool {
		// Not cancelled with ctx: a profile cut short is no profile.
		data, err := cs.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/profile").
			Param("seconds", strconv.Itoa(seconds)).DoRaw(context.Background())
		if err != nil {
			logf("apiserver profile: %v", err)
			return false
		}
		check(os.WriteFile(file, data, 0o600))
		return true
	})
}

// profileOperator is profileAPIServer for the operator's pprof endpoint at addr.
func profileOperator(ctx context.Context, addr, prefix string, seconds int) <-chan struct{} {
	return profileWindows(ctx, prefix, func(file string) bool {
		return fetchProfile(addr, file, "profile?seconds="+strconv.Itoa(seconds))
	})
}

// profileWindows has save write one CPU profile window to <prefix>-NN.pb.gz, again and again until
// ctx ends or a window cannot be saved.
func profileWindows(ctx context.Context, prefix string, save func(file string) bool) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ctx.Err() == nil; i++ {
			file := fmt.Sprintf("%s-%02d.pb.gz", prefix, i)
			if !save(file) {
				return
			}
			logf("saved %s", file)
		}
	}()
	return done
}
