//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/smi2istio/smi2istio/internal/testing/proc"
	"github.com/smi2istio/smi2istio/internal/testing/testenv"
)

// istiodMetrics whose value must stay 0 for our objects: rejected pushes (our sidecars NACK what
// does not decode), VirtualServices with duplicate domains, DestinationRules with duplicate subsets.
var istiodBadMetrics = []string{"pilot_total_xds_rejects", "pilot_vservice_dup_domain", "pilot_destrule_subsets", "pilot_duplicate_envoy_clusters"}

// expectIstiodClean asserts that istiod took every generated object and complained about none:
// its rejection/conflict metrics are zero, its config dump holds every object smi2istio manages,
// and its log has no warning or error naming one.
func (cl *cluster) expectIstiodClean() {
	cl.t.Helper()
	metrics, err := proc.Metrics("http://" + cl.istiodMon + "/metrics")
	must(cl.t, err)
	for _, m := range istiodBadMetrics {
		for _, s := range metrics[m] {
			if s.Value != 0 {
				cl.t.Errorf("istiod reports %s{%s} %v", m, s.Labels, s.Value)
			}
		}
	}

	configz, err := httpGet("http://" + cl.istiodHTTP + "/debug/configz")
	must(cl.t, err)
	var configs []struct {
		Kind       string `json:"kind"`
		Metadata   struct{ Name, Namespace string }
		ObjectMeta struct{ Name, Namespace string } `json:"ObjectMeta"`
	}
	if err := json.Unmarshal([]byte(configz), &configs); err != nil {
		cl.t.Fatalf("decode istiod's /debug/configz: %v", err)
	}
	seen := map[string]bool{}
	for _, c := range configs {
		name, ns := c.Metadata.Name, c.Metadata.Namespace
		if name == "" {
			name, ns = c.ObjectMeta.Name, c.ObjectMeta.Namespace
		}
		seen[c.Kind+" "+ns+"/"+name] = true
	}
	var names, owned []string
	for _, gvk := range istioKinds {
		for _, o := range cl.managed(gvk) {
			names = append(names, o)
			owned = append(owned, gvk.Kind+" "+o)
			if !seen[gvk.Kind+" "+o] {
				cl.t.Errorf("istiod does not hold %s %s (its config dump has %d objects)", gvk.Kind, o, len(seen))
			}
		}
	}
	if len(names) == 0 {
		cl.t.Error("smi2istio manages no Istio object")
	}

	f, err := os.Open(cl.istiod.Log)
	must(cl.t, err)
	defer func() { _ = f.Close() }()
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		line := s.Text()
		if !strings.Contains(line, "\terror\t") && !strings.Contains(line, "\twarn\t") {
			continue
		}
		for _, n := range names {
			ns, name, _ := strings.Cut(n, "/")
			if strings.Contains(line, n) || strings.Contains(line, name+"."+ns) {
				cl.t.Errorf("istiod complains about %s: %s", n, line)
				break
			}
		}
	}
	cl.expectAnalyzeClean(owned)
	if cl.t.Failed() {
		cl.t.Log(cl.state())
	}
}

// istioctl of the pinned Istio version (hack/istioctl.sh), built or found once per test binary.
var istioctlBin = sync.OnceValues(func() (string, error) {
	cmd := exec.Command(filepath.Join(testenv.RepoRoot(), "hack", "istioctl.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/istioctl.sh: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
})

// analyzerMessage is one message of `istioctl analyze -o json`.
type analyzerMessage struct {
	Code    string `json:"code"`
	Level   string `json:"level"`
	Origin  string `json:"origin"`
	Message string `json:"message"`
}

func (m analyzerMessage) String() string {
	return fmt.Sprintf("%s [%s] (%s) %s", m.Level, m.Code, m.Origin, m.Message)
}

// expectAnalyzeClean runs Istio's analyzers as users run them (`istioctl analyze --all-namespaces`
// against the cluster) and fails on any warning or error about an object smi2istio wrote (the
// message's origin, or a message naming it); every message is logged. managed lists the objects as
// "Kind namespace/name".
func (cl *cluster) expectAnalyzeClean(managed []string) {
	cl.t.Helper()
	bin, err := istioctlBin()
	must(cl.t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "analyze", "--kubeconfig="+cl.cp.Kubeconfig, "--istioNamespace=istio-system",
		"--all-namespaces", "--output=json", "--output-threshold=Info", "--color=false", "--timeout=90s")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	// istioctl analyze exits non-zero when it finds warnings or errors: judge its messages, and
	// fail on an exit without parsable output.
	var msgs []analyzerMessage
	if jerr := json.Unmarshal(out, &msgs); jerr != nil {
		cl.t.Fatalf("istioctl analyze: %v (decode: %v)\nstdout:\n%s\nstderr:\n%s", err, jerr, out, stderr.String())
	}
	ours := map[string]bool{}
	for _, n := range managed {
		ours[n] = true
	}
	for _, m := range msgs {
		cl.t.Logf("istioctl analyze: %s", m)
		if m.Level != "Warning" && m.Level != "Error" {
			continue
		}
		about := ""
		if ours[m.Origin] {
			about = m.Origin
		}
		for n := range ours {
			_, nsName, _ := strings.Cut(n, " ")
			if about == "" && namesObject(m.Message, nsName) {
				about = n
			}
		}
		if about != "" {
			cl.t.Errorf("istioctl analyze reports about %s, which smi2istio wrote: %s", about, m)
		}
	}
}

// namesObject reports whether a message names "namespace/name" as a whole (not as the start of
// "namespace/name-other").
func namesObject(msg, nsName string) bool {
	return regexp.MustCompile(`(^|[^a-z0-9.-])` + regexp.QuoteMeta(nsName) + `($|[^a-z0-9.-]|\.($|[^a-z0-9-]))`).MatchString(msg)
}

func httpGet(url string) (string, error) {
	resp, err := http.Get(url) //nolint:noctx // a local debug endpoint
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(data), nil
}
