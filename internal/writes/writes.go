// Package writes counts the operator's write requests to the apiserver by resource, so a write that
// should not have happened (when idle, or on a resync) can be told apart from the others.
package writes

import (
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/rest"
)

// Requests is smi2istio_apiserver_writes_total{method,resource}: resource is group/resource, with
// "/subresource" when one is written (e.g. split.smi-spec.io/trafficsplits/status, /events).
var Requests = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "smi2istio_apiserver_writes_total",
	Help: "Write requests (POST, PUT, PATCH, DELETE) the operator sent to the apiserver, by resource.",
}, []string{"method", "resource"})

// Count makes every client built from cfg count its write requests in Requests.
func Count(cfg *rest.Config) {
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return counter{next: rt} })
}

type counter struct{ next http.RoundTripper }

func (c counter) RoundTrip(req *http.Request) (*http.Response, error) {
	switch req.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		Requests.WithLabelValues(req.Method, Resource(req.URL.Path)).Inc()
	}
	return c.next.RoundTrip(req)
}

// Resource names the resource of an apiserver path: "group/resource[/subresource]", the group empty
// for the core API ("/events"); paths that are not resource paths are returned as they are.
func Resource(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	var group string
	switch {
	case len(parts) >= 3 && parts[0] == "api":
		parts = parts[2:]
	case len(parts) >= 4 && parts[0] == "apis":
		group, parts = parts[1], parts[3:]
	default:
		return path
	}
	if len(parts) >= 2 && parts[0] == "namespaces" && len(parts) != 2 {
		parts = parts[2:]
	}
	switch len(parts) {
	case 0:
		return path
	case 1, 2:
		return group + "/" + parts[0]
	default:
		return group + "/" + parts[0] + "/" + parts[2]
	}
}
