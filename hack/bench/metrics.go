package main

import (
	"sort"
	"strings"

	"github.com/smi2istio/smi2istio/internal/testing/proc"
)

// writes is the operator's apiserver write requests so far (client-go's request counter).
func writes(metricsAddr string) float64 {
	var n float64
	for _, m := range []string{"POST", "PUT", "PATCH", "DELETE"} {
		n += metricSum(metricsAddr, "rest_client_requests_total", `method="`+m+`"`)
	}
	return n
}

// writesByResource is the operator's smi2istio_apiserver_writes_total by method and resource.
func writesByResource(metricsAddr string) map[string]float64 {
	ms, err := proc.Metrics("http://" + metricsAddr + "/metrics")
	check(err)
	out := map[string]float64{}
	for _, s := range ms["smi2istio_apiserver_writes_total"] {
		out[s.Labels] += s.Value
	}
	return out
}

func metricSum(metricsAddr, name, labelPart string) float64 {
	ms, err := proc.Metrics("http://" + metricsAddr + "/metrics")
	check(err)
	var n float64
	for _, s := range ms[name] {
		if strings.Contains(s.Labels, labelPart) {
			n += s.Value
		}
	}
	return n
}

// Classes of the operator's writes (writeClass).
const (
	writesIstio  = "Istio"
	writesStatus = "SMI status"
	writesEvents = "Events"
	writesOther  = "other"
)

// writeClass sorts a series of smi2istio_apiserver_writes_total, by its label text
// (method="PATCH",resource="split.smi-spec.io/trafficsplits/status"), into the Istio objects, the
// SMI objects' status, Events and the rest (the configuration's status, finalizers).
func writeClass(labels string) string {
	res := labelValue(labels, "resource")
	group, rest, _ := strings.Cut(res, "/")
	switch {
	case strings.HasSuffix(group, ".istio.io"):
		return writesIstio
	case strings.HasSuffix(group, ".smi-spec.io") && strings.HasSuffix(rest, "/status"):
		return writesStatus
	case res == "events.k8s.io/events" || res == "/events":
		return writesEvents
	default:
		return writesOther
	}
}

// labelValue is the value of label name in a sample's label text, "" if it has none.
func labelValue(labels, name string) string {
	for _, kv := range strings.Split(labels, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// writesByClass is the writes between two readings of writesByResource, by writeClass.
func writesByClass(before, after map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for r, n := range after {
		if d := n - before[r]; d > 0 {
			out[writeClass(r)] += d
		}
	}
	return out
}

// logWrites logs the writes between two readings of writesByResource, by resource.
func logWrites(when string, before, after map[string]float64) {
	for r, n := range after {
		if d := n - before[r]; d > 0 {
			logf("%s, %.0f writes of %s", when, d, r)
		}
	}
}

// pipelineMetrics are the operator's metrics that say where a phase's wall time went: reconciles
// and the time spent in them per controller, the time requests waited in each work queue, and the
// apiserver requests by method with their client-side latency.
var pipelineMetrics = []struct{ name, by string }{
	{"controller_runtime_reconcile_total", "controller"},
	{"controller_runtime_reconcile_time_seconds_sum", "controller"},
	{"workqueue_adds_total", "name"},
	{"workqueue_queue_duration_seconds_sum", "name"},
	{"rest_client_requests_total", "method"},
	{"rest_client_request_duration_seconds_sum", "verb"},
	{"rest_client_request_duration_seconds_count", "verb"},
}

// pipelineSnapshot reads pipelineMetrics, keyed "metric{label}".
func pipelineSnapshot(metricsAddr string) map[string]float64 {
	ms, err := proc.Metrics("http://" + metricsAddr + "/metrics")
	check(err)
	out := map[string]float64{}
	for _, m := range pipelineMetrics {
		for _, s := range ms[m.name] {
			out[m.name+"{"+labelValue(s.Labels, m.by)+"}"] += s.Value
		}
	}
	return out
}

// logPipeline logs the differences of two pipelineSnapshots.
func logPipeline(when string, before, after map[string]float64) {
	keys := make([]string, 0, len(after))
	for k := range after {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if d := after[k] - before[k]; d > 0 {
			logf("%s: %s %.2f", when, k, d)
		}
	}
}
