package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var reconcileOutcomes = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "smi2istio_reconcile_outcomes_total",
	Help: "Reconciles of SMI objects by kind and outcome (applied, unchanged, invalid, conflict, unresolved, notinmesh, permissive, error).",
}, []string{"kind", "outcome"})

var fidelityRungs = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "smi2istio_fidelity_rung_values",
	Help: "Regex values of a destination's TrafficTargets by the fidelity rung that enforces them (ExactRung, EnvoyRung, Rejected); no series for a rung without values.",
}, []string{"namespace", "destination", "rung"})

var objectsByCondition = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "smi2istio_objects",
	Help: "SMI objects by kind and state of their Ready condition (Ready, NotReady, NotInMesh); refreshed with the configuration's status.",
}, []string{"kind", "state"})

func init() {
	metrics.Registry.MustRegister(reconcileOutcomes, fidelityRungs, objectsByCondition)
}
