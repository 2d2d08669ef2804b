package main

import (
	"testing"
	"time"
)

// A busy loop shows in the harness's CPU time within a few seconds, however loaded the machine.
func TestCPUTimesCountThisProcess(t *testing.T) {
	before := cpuTimes()["harness"]
	x := 0
	for deadline := time.Now().Add(10 * time.Second); cpuTimes()["harness"]-before < 0.05; {
		if time.Now().After(deadline) {
			t.Fatalf("harness CPU %.2f s after a 10 s busy loop (%d iterations): want at least 0.05 s", cpuTimes()["harness"]-before, x)
		}
		for range 100000 {
			x++
		}
	}
}
