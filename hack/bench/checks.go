package main

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/smi2istio/smi2istio/internal/testing/proc"
)

// checksMetric counts kube-apiserver's watch-cache consistency checks by group, resource and status.
const checksMetric = "apiserver_storage_consistency_checks_total"

// consistencyChecks reads how many watch-cache consistency checks the apiserver ran so far, by the
// sample's labels (group, resource, status); nil when its metrics cannot be read.
func consistencyChecks(ctx context.Context, rc *rest.Config) map[string]float64 {
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil
	}
	data, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		logf("apiserver metrics: %v", err)
		return nil
	}
	return checksIn(data)
}

// checksIn is the consistency-check samples of a Prometheus text page, by labels.
func checksIn(page []byte) map[string]float64 {
	ms, err := proc.ParseMetrics(bytes.NewReader(page))
	if err != nil {
		return nil
	}
	out := map[string]float64{}
	for _, s := range ms[checksMetric] {
		out[s.Labels] = s.Value
	}
	return out
}

// checksSince says which consistency checks ran between two readings: how many, how many of them
// listed SMI resources (a list of a served version that is not the stored one goes through the
// conversion webhook, object by object), and the resources checked.
func checksSince(before, now map[string]float64) string {
	if now == nil {
		return "consistency checks unknown"
	}
	var total, smi, failed float64
	byResource := map[string]float64{}
	for labels, v := range now {
		n := v - before[labels]
		if n <= 0 {
			continue
		}
		group, resource, status := labelValue(labels, "group"), labelValue(labels, "resource"), labelValue(labels, "status")
		total += n
		if strings.HasSuffix(group, ".smi-spec.io") {
			smi += n
		}
		if status != "success" {
			failed += n
		}
		name := resource
		if group != "" {
			name += "." + group
		}
		byResource[name] += n
	}
	resources := make([]string, 0, len(byResource))
	for name, n := range byResource {
		resources = append(resources, fmt.Sprintf("%s %.0f", name, n))
	}
	sort.Strings(resources)
	if total == 0 {
		return "no consistency check"
	}
	return fmt.Sprintf("%.0f consistency checks (%.0f of SMI resources, %.0f not passed): %s", total, smi, failed, strings.Join(resources, ", "))
}
