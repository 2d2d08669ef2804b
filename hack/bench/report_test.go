package main

import (
	"strings"
	"testing"
	"time"
)

// The ratio to (c) is taken against the mean of its two measurements when both ran, and shown
// against each; against the first alone when the second did not run.
func TestRatioToBaselineC(t *testing.T) {
	r := result{Size: "S", BaselineStatus: 100 * time.Second, BaselineStatusAfter: 140 * time.Second,
		CPUBaselineStatus: 200, CPUBaselineStatusAfter: 300, Convergence: 150 * time.Second, CPUConvergeAll: 500,
		BaselineIstio: time.Second, BaselineAll: time.Second, BaselineApply: time.Second, CPUBaselineApply: 1}
	var out strings.Builder
	printTable(&out, []result{r})
	row := strings.Split(strings.TrimSpace(out.String()), "\n")[2]
	if !strings.Contains(row, "| 1m40s, 2m20s / 1s |") || !strings.Contains(row, "| 1.25× / 2.00× (1.50× / 2.50×; 1.07× / 1.67×) |") {
		t.Errorf("with (c) measured before and after, want both shown, and the ratio to their mean (1.25× / 2.00×) and to each: %s", row)
	}
	r.BaselineStatusAfter, r.CPUBaselineStatusAfter = 0, 0
	out.Reset()
	printTable(&out, []result{r})
	row = strings.Split(strings.TrimSpace(out.String()), "\n")[2]
	if !strings.Contains(row, "| 1m40s, – / 1s |") || !strings.Contains(row, "| 1.50× / 2.50× |") {
		t.Errorf("with (c) measured once, want the ratio to it (1.50× / 2.50×): %s", row)
	}
}
