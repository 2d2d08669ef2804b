package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// clockTicks is the kernel's USER_HZ, the unit of /proc/<pid>/stat's CPU times (100 on Linux).
const clockTicks = 100

// cpuTimes are the CPU seconds used so far by the harness itself ("harness") and by each of its
// child processes, by command name (kube-apiserver, etcd, kube-controller-manager, smi2istio):
// the difference of two readings says where a phase's CPU went.
func cpuTimes() map[string]float64 {
	out := map[string]float64{}
	self := os.Getpid()
	if t, _, ok := procCPU(strconv.Itoa(self)); ok {
		out["harness"] = t
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid := filepath.Base(d)
		t, ppid, ok := procCPU(pid)
		if !ok || ppid != self {
			continue
		}
		comm, err := os.ReadFile(filepath.Join(d, "comm"))
		if err != nil {
			continue
		}
		out[strings.TrimSpace(string(comm))] += t
	}
	return out
}

// procCPU reads a process's user+system CPU seconds and its parent.
func procCPU(pid string) (seconds float64, ppid int, ok bool) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / clockTicks, ppid, true
}

// cpuSince is the CPU seconds every process used since before, in all, and formatted by process
// with the phase's wall time: one reading for both.
func cpuSince(before map[string]float64, wall float64) (text string, total float64) {
	now := cpuTimes()
	var names []string
	for n := range now {
		names = append(names, n)
		total += now[n] - before[n]
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %.1f s", n, now[n]-before[n]))
	}
	return fmt.Sprintf("CPU %.1f s in %.1f s wall (%.2f cores): %s", total, wall, total/wall, strings.Join(parts, ", ")), total
}
