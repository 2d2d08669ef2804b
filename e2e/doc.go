// Package e2e holds the end-to-end suite (build tag e2e): the operator binary and a real istiod run
// against a local control plane, the OSM bookstore walk-throughs are replayed with OSM's manifests,
// and the suite asserts on the Envoy configuration istiod generates for each workload.
package e2e
