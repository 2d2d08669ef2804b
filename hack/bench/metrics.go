package main

import (
	"strings"

	"github.com/smi2istio/smi2istio/internal/proc"
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
