package main

import (
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
