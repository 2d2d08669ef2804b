package main

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/smi2istio/smi2istio/internal/testing/proc"
)

func TestParseStatus(t *testing.T) {
	st := parseStatus("Name:\tsmi2istio\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nRssAnon:\t   81920 kB\nRssFile:\t   20480 kB\nThreads:\t12\n")
	for key, want := range map[string]uint64{"VmHWM": 200 << 20, "VmRSS": 100 << 20, "RssAnon": 80 << 20, "RssFile": 20 << 20} {
		if st[key] != want {
			t.Errorf("%s = %d, want %d", key, st[key], want)
		}
	}
	if _, ok := st["Threads"]; ok {
		t.Error("a field without kB was parsed as a size")
	}
}

func TestRuntimeOtherIsWhatTheHeapAndStacksLeave(t *testing.T) {
	s := memSample{Anon: 100 << 20, HeapInuse: 60 << 20, HeapFree: 25 << 20, Stack: 3 << 20}
	if got := s.runtimeOther(); got != 12<<20 {
		t.Errorf("runtimeOther = %d MiB, want 12", got>>20)
	}
	// Sampled apart, the runtime's figures can exceed the kernel's: never an underflow.
	s.Anon = 50 << 20
	if got := s.runtimeOther(); got != 0 {
		t.Errorf("runtimeOther = %d, want 0", got)
	}
}

// A memory sample asks a promhttp endpoint (controller-runtime serves the operator's with
// promhttp.HandlerFor) for the runtime's gauges only, and gets every one it reads.
func TestRuntimeGaugesFiltered(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	other := prometheus.NewCounter(prometheus.CounterOpts{Name: "bench_other_total"})
	reg.MustRegister(other)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	ms, err := proc.Metrics(runtimeGaugesURL(strings.TrimPrefix(srv.URL, "http://")))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range runtimeGauges {
		if len(ms[name]) == 0 {
			t.Errorf("%s not served", name)
		}
	}
	if len(ms) != len(runtimeGauges) {
		t.Errorf("served %d metrics, want only the %d asked for", len(ms), len(runtimeGauges))
	}
	if s := sample(map[string]uint64{"VmRSS": 1}, ms); s.HeapInuse == 0 || s.Goroutines == 0 {
		t.Errorf("sample %+v: the runtime's gauges are missing", s)
	}
}
