// Package memlimit sets the Go runtime's soft memory limit from the container's memory limit,
// leaving room for the memory the container is charged for that the Go runtime does not count.
package memlimit

import (
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
)

// Env is the variable the Deployment fills with its container's memory limit, in bytes (downward
// API: resourceFieldRef limits.memory).
const Env = "SMI2ISTIO_MEMORY_LIMIT"

// Reserve is what the soft limit leaves of the container's limit: the Go runtime's limit covers
// the memory it maps (heap, stacks, its own structures), but the container is also charged for the
// pages of the binary the process has touched — 36 to 39 MiB here (docs/benchmarks.md) — and its
// soft limit may be overshot briefly. A soft limit equal to the container's limit lets the process
// outgrow the container: at 10,000 SMI objects it reached 272 MiB with a 256 MiB limit.
const Reserve = 64 << 20

// SoftLimit is the Go soft memory limit for a container memory limit: the limit less Reserve, and
// never less than half the limit (small limits keep room for the heap).
func SoftLimit(containerLimit int64) int64 {
	return max(containerLimit-Reserve, containerLimit/2)
}

// Apply sets the soft limit from Env, unless GOMEMLIMIT is set (the runtime has applied it: an
// explicit choice wins) or Env is empty. It returns the limit set, 0 if none.
func Apply(getenv func(string) string) (int64, error) {
	if getenv("GOMEMLIMIT") != "" {
		return 0, nil
	}
	v := getenv(Env)
	if v == "" {
		return 0, nil
	}
	limit, err := strconv.ParseInt(v, 10, 64)
	if err != nil || limit <= 0 {
		return 0, fmt.Errorf("%s=%q: want the container's memory limit in bytes", Env, v)
	}
	soft := SoftLimit(limit)
	debug.SetMemoryLimit(soft)
	return soft, nil
}

// FromEnv is Apply on the process's environment.
func FromEnv() (int64, error) { return Apply(os.Getenv) }
