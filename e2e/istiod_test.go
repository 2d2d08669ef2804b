//go:build e2e

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/smi2istio/smi2istio/internal/proc"
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
	var names []string
	for _, gvk := range istioKinds {
		for _, o := range cl.managed(gvk) {
			names = append(names, o)
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
	if cl.t.Failed() {
		cl.t.Log(cl.state())
	}
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
