// Command bench measures the operator at scale on a local control plane and prints a markdown
// table: convergence time against raw-write baselines measured in the same run, apiserver writes
// (converging, idle, after a restart), change latency under load, and memory.
//
//	go run ./hack/bench -sizes S,M,L -idle 5m   (make bench)
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/resource"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/smi2istio/smi2istio/internal/memlimit"
	"github.com/smi2istio/smi2istio/internal/testing/proc"
)

var sizes = map[string]size{
	"S": {Name: "S", Units: 25, Pods: 500},
	"M": {Name: "M", Units: 250, Pods: 5000},
	"L": {Name: "L", Units: 2500, Pods: 50000},
}

func main() {
	// The harness's clients log nothing (controller-runtime would otherwise warn, with a stack trace).
	ctrllog.SetLogger(logr.Discard())
	names := flag.String("sizes", "S,M,L", "comma-separated sizes: S (100 SMI objects, 500 pods), M (1,000, 5,000), L (10,000, 50,000)")
	idle := flag.Duration("idle", 5*time.Minute, "how long to count writes while nothing changes")
	samples := flag.Int("samples", 100, "weight changes timed for the change latency")
	workers := flag.Int("workers", 8, "concurrent writers of the harness (the same for the baseline and the SMI apply)")
	pprofDir := flag.String("pprof", "", "directory for profiles: the operator's and the kube-apiserver's CPU over the whole convergence (30 s windows), the operator's heap after it, the apiserver's CPU in baselines (c) and (c) applied (5 s windows), the restarted operator's heap at its highest RSS (enables the operator's --pprof-bind-address)")
	memlimits := flag.String("memlimit", manifestMemLimit, fmt.Sprintf("the operator's container memory limit, passed as the install manifest does (the operator sets its Go soft limit %d MiB below it, or at half of it if that is more; the manifest's is %s); \"off\" runs without one; a value ending in B (128MiB) is passed as GOMEMLIMIT instead. Comma-separated: each size runs once per value, one after the other", memlimit.Reserve>>20, manifestMemLimit))
	operatorArgs := flag.String("operator-args", "", "extra flags for the operator, space-separated (e.g. --max-concurrent-reconciles=8), to compare settings run after run")
	control := flag.Bool("control", false, "measure baseline (c) a second time right after the first, before the operator runs, and log how much the two differ: a control for (c) measured again after the operator (how much of their difference is the hour, and how much what the run left behind)")
	consistency := flag.Bool("consistency-checks", false, "run kube-apiserver with its watch-cache consistency checker (DetectCacheInconsistency, on by default since Kubernetes 1.34): every 5 to 7.5 minutes, per resource and served version, it lists every object from its cache and from etcd (the pods, and every SMI object of a non-stored version through the conversion webhook). Every cache starts when the CRDs are installed, so the checks come in waves, and whether a wave lands in a phase decides minutes of it at L (ninth round: the same baseline (c) took 180 s with 19 checks and 290 s with 75, on a machine whose speed also varied); off by default so that phases compare like with like. The harness logs the checks of each phase")
	compareRev := flag.String("compare", "", "a git revision: after the last phase, its operator (built from a worktree) and this one converge in turns from no SMI or Istio objects, -compare-rounds times each, the other first; the harness logs each turn and this build's wall time and CPU over the other's for each adjacent pair (the machine's drift within a run is larger than a round's cuts). \"c\" runs baseline (c) in turns with this build instead: the convergence's ratio to (c), pair by pair")
	compareRounds := flag.Int("compare-rounds", 2, "turns of each build with -compare")
	workdir := flag.String("workdir", "", "keep the control planes' and the operator's files (logs) here instead of a temporary directory")
	flag.Parse()
	if *pprofDir != "" {
		if err := os.MkdirAll(*pprofDir, 0o755); err != nil {
			fail(err)
		}
	}

	root := repoRoot()
	dir, cleanup := workDir(*workdir)
	defer cleanup()
	bin, err := proc.BuildOperator(root, dir)
	if err != nil {
		fail(err)
	}
	var compareBin string
	if *compareRev != "" && *compareRev != baselineTurns {
		if compareBin, err = buildRevision(root, dir, *compareRev); err != nil {
			fail(err)
		}
	}
	istioCRDs := istioCRDFile(root)
	limits := memLimits(*memlimits)
	var rows []result
	for _, n := range strings.Split(*names, ",") {
		s, ok := sizes[strings.TrimSpace(n)]
		if !ok {
			fail(fmt.Errorf("unknown size %q", n))
		}
		for i, l := range limits {
			sub := s.Name
			if len(limits) > 1 {
				sub = fmt.Sprintf("%s-%d", s.Name, i)
			}
			r := run(context.Background(), config{size: s, root: root, dir: filepath.Join(dir, sub), bin: bin, istioCRDs: istioCRDs,
				idle: *idle, samples: *samples, workers: *workers, pprofDir: *pprofDir, profilePrefix: sub, memLimit: l, operatorArgs: strings.Fields(*operatorArgs),
				consistencyChecks: *consistency, control: *control, compareBin: compareBin, compareRev: *compareRev, compareRounds: *compareRounds})
			rows = append(rows, r)
			fmt.Fprintf(os.Stderr, "[bench] %s done: %+v\n", sub, r)
		}
	}
	fmt.Printf("\nsmi2istio benchmark — %s, %d CPUs, %s, idle %s, %d latency samples, %d writers\n\n", time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), runtime.Version(), *idle, *samples, *workers)
	printTable(os.Stdout, rows)
}

// repoRoot is the repository holding this file (internal/testing/testenv would bring Istio's validation
// packages).
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// workDir is -workdir, or a temporary directory that cleanup removes.
func workDir(workdir string) (dir string, cleanup func()) {
	if workdir != "" {
		return workdir, func() {}
	}
	d, err := os.MkdirTemp("", "smi2istio-bench-")
	if err != nil {
		fail(err)
	}
	return d, func() { _ = os.RemoveAll(d) }
}

// istioCRDFile is Istio's CRDs of the pinned version, cached by the script `make run` uses too.
func istioCRDFile(root string) string {
	out, err := exec.Command(filepath.Join(root, "hack", "istio-crds.sh")).Output()
	if err != nil {
		fail(fmt.Errorf("hack/istio-crds.sh: %w", err))
	}
	return strings.TrimSpace(string(out))
}

// memLimits are -memlimit's comma-separated values, checked.
func memLimits(list string) []string {
	limits := strings.Split(list, ",")
	for i, l := range limits {
		limits[i] = strings.TrimSpace(l)
		if l := limits[i]; l != "off" {
			if _, err := resource.ParseQuantity(strings.TrimSuffix(l, "B")); err != nil {
				fail(fmt.Errorf("-memlimit %q: %w", l, err))
			}
		}
	}
	return limits
}

// cleanups run on a failure too (the control plane's and the operator's processes must not outlive us).
var cleanups []func()

func atExit(f func()) { cleanups = append(cleanups, f) }

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	os.Exit(1)
}

// manifestMemLimit is the install manifest's container memory limit for the operator
// (config/manager/manager.yaml, checked by TestMemLimitMatchesManifest).
const manifestMemLimit = "176Mi"
