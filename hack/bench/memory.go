package main

import (
	"fmt"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/smi2istio/smi2istio/internal/testing/proc"
)

// memSample is one reading of the operator's memory: the kernel's view (/proc/<pid>/status) and
// the Go runtime's (its metrics endpoint), taken together so the resident set can be split up.
type memSample struct {
	RSS, Anon, File uint64 // VmRSS, RssAnon, RssFile
	HeapInuse       uint64 // spans holding objects (live or not yet swept garbage)
	HeapFree        uint64 // free heap spans the runtime has not returned to the OS (idle − released)
	Stack           uint64
	Goroutines      uint64
}

// runtimeOther is the anonymous memory outside the heap's spans and the stacks: the runtime's own
// structures (span and GC metadata, mcache, profiling buckets) and anything not mapped by Go.
func (s memSample) runtimeOther() uint64 {
	used := s.HeapInuse + s.HeapFree + s.Stack
	if s.Anon < used {
		return 0
	}
	return s.Anon - used
}

func (s memSample) String() string {
	return fmt.Sprintf("RSS %s = file-backed %s (the binary's pages) + anonymous %s (heap in use %s, heap free not returned %s, stacks %s, runtime and other %s)",
		mib(s.RSS), mib(s.File), mib(s.Anon), mib(s.HeapInuse), mib(s.HeapFree), mib(s.Stack), mib(s.runtimeOther()))
}

// memPeaks samples one operator process every second and keeps the highest heap, stack and
// goroutine count seen, and the whole sample at the highest RSS.
type memPeaks struct {
	mu                          sync.Mutex
	atRSS                       memSample
	heap, stack, goroutines, hw uint64
	stop, stopped               chan struct{}
	onPeak                      func() // called (from the sampler) at each new highest RSS
}

func sampleMemory(pid int, metricsAddr string, onPeak func()) *memPeaks {
	p := &memPeaks{stop: make(chan struct{}), stopped: make(chan struct{}), onPeak: onPeak}
	go func() {
		defer close(p.stopped)
		for {
			if s, ok := readMemory(pid, metricsAddr); ok && p.add(s) && p.onPeak != nil {
				p.onPeak()
			}
			select {
			case <-p.stop:
				return
			case <-time.After(time.Second):
			}
		}
	}()
	return p
}

// add records a sample; true if its RSS is the highest yet.
func (p *memPeaks) add(s memSample) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.heap = max(p.heap, s.HeapInuse)
	p.stack = max(p.stack, s.Stack)
	p.goroutines = max(p.goroutines, s.Goroutines)
	if s.RSS > p.atRSS.RSS {
		p.atRSS = s
		return true
	}
	return false
}

// finish stops sampling and records the process's high-water RSS (VmHWM), which also covers the
// moments between samples.
func (p *memPeaks) finish(pid int) {
	close(p.stop)
	<-p.stopped
	st, err := procStatus(pid)
	check(err)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hw = st["VmHWM"]
}

func (p *memPeaks) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Sprintf("peak RSS %s (VmHWM), peak heap in use %s, peak stacks %s, peak goroutines %d; at the highest sampled RSS: %s",
		mib(p.hw), mib(p.heap), mib(p.stack), p.goroutines, p.atRSS)
}

// runtimeGauges are the metrics a memory sample reads from the operator's endpoint, and the only
// ones it asks for (promhttp's name[] filter): the harness reads them every second, and encoding
// the whole exposition cost the operator 3.8 s of CPU while converging at L (tenth round's profile;
// the gathering before the filter, 2.7 s, stays).
var runtimeGauges = []string{"go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes", "go_goroutines",
	"go_memstats_heap_idle_bytes", "go_memstats_heap_released_bytes"}

// runtimeGaugesURL is the operator's metrics endpoint at addr, filtered to runtimeGauges.
func runtimeGaugesURL(addr string) string {
	return "http://" + addr + "/metrics?" + url.Values{"name[]": runtimeGauges}.Encode()
}

func readMemory(pid int, metricsAddr string) (memSample, bool) {
	st, err := procStatus(pid)
	if err != nil {
		return memSample{}, false
	}
	ms, err := proc.Metrics(runtimeGaugesURL(metricsAddr))
	if err != nil {
		return memSample{}, false
	}
	return sample(st, ms), true
}

// sample is a memory sample of /proc's fields st and the runtime's gauges ms.
func sample(st map[string]uint64, ms map[string][]proc.Sample) memSample {
	gauge := func(name string) uint64 {
		if !slices.Contains(runtimeGauges, name) {
			panic("hack/bench: " + name + " is not asked for: add it to runtimeGauges")
		}
		if v := ms[name]; len(v) > 0 {
			return uint64(v[0].Value)
		}
		return 0
	}
	s := memSample{
		RSS: st["VmRSS"], Anon: st["RssAnon"], File: st["RssFile"],
		HeapInuse:  gauge("go_memstats_heap_inuse_bytes"),
		Stack:      gauge("go_memstats_stack_inuse_bytes"),
		Goroutines: gauge("go_goroutines"),
	}
	if idle, released := gauge("go_memstats_heap_idle_bytes"), gauge("go_memstats_heap_released_bytes"); idle > released {
		s.HeapFree = idle - released
	}
	return s
}

// procStatus reads the kB fields of /proc/<pid>/status, in bytes.
func procStatus(pid int) (map[string]uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	return parseStatus(string(data)), nil
}

func parseStatus(text string) map[string]uint64 {
	out := map[string]uint64{}
	for _, line := range strings.Split(text, "\n") {
		key, rest, ok := strings.Cut(line, ":")
		f := strings.Fields(rest)
		if !ok || len(f) != 2 || f[1] != "kB" {
			continue
		}
		if kb, err := strconv.ParseUint(f[0], 10, 64); err == nil {
			out[key] = kb * 1024
		}
	}
	return out
}
