package main

import "testing"

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
