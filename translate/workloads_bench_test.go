package translate

import (
	"fmt"
	"testing"
)

// BenchmarkResolveSelectors resolves the selectors of one ServiceAccount in a namespace shaped like
// hack/bench's: 25 ServiceAccounts, each with two Deployments (v1, v2) and 20 pods.
func BenchmarkResolveSelectors(b *testing.B) {
	var ws []Workload
	for u := range 25 {
		sa := fmt.Sprintf("svc-%d", u)
		for _, v := range []string{"v1", "v2"} {
			labels := map[string]string{"app": sa, "version": v}
			ws = append(ws, Workload{Name: "Deployment/" + sa + "-" + v, ServiceAccount: sa, Labels: labels})
			for p := range 10 {
				pod := map[string]string{"app": sa, "version": v, "pod-template-hash": "abc"}
				ws = append(ws, Workload{Name: fmt.Sprintf("Pod/%s-%s-%d", sa, v, p), ServiceAccount: sa, Labels: pod})
			}
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		sels, findings := ResolveSelectors("svc-7", ws)
		if len(sels) != 2 || len(findings) != 0 {
			b.Fatalf("%d selectors, findings %v", len(sels), findings)
		}
	}
}
