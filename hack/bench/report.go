package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// printTable writes the results as a markdown table, with the ratios the targets are about.
func printTable(out io.Writer, rows []result) {
	fmt.Fprintln(out, "| size | memory limit | SMI objects | pods | Istio objects | baseline: Istio objects only | baseline: SMI + Istio objects | convergence | ratio to Istio-only / SMI+Istio | operator CPU converging | operator writes per SMI object | writes idle | writes after restart | change latency p50 / p99 | peak RSS / after restart | peak Go heap / after restart |")
	fmt.Fprintln(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Fprintf(out, "| %s | %s | %d | %d | %d | %s | %s | %s | %.2f× / %.2f× | %.1f s | %.2f | %.0f | %.0f | %s / %s | %s / %s | %s / %s |\n",
			r.Size, r.MemLimit, r.SMI, r.Pods, r.Istio, dur(r.BaselineIstio), dur(r.BaselineAll), dur(r.Convergence),
			r.Convergence.Seconds()/r.BaselineIstio.Seconds(), r.Convergence.Seconds()/r.BaselineAll.Seconds(), r.CPUConverge,
			r.WritesConverge/float64(r.SMI), r.WritesIdle, r.WritesRestart, dur(r.LatP50), dur(r.LatP99), mib(r.PeakRSS), mib(r.RestartRSS), mib(r.PeakHeap), mib(r.RestartHeap))
	}
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
