package controllers_test

// Review (helper-43, of the BaselineWidened fix).

import (
	"testing"

	"github.com/smi2istio/smi2istio/controllers"
)

// An admission step that widens the baseline and also strips its labels (so that it no longer looks
// like smi2istio's): the object at the baseline's name is one smi2istio wrote and allows every
// request to every workload of the namespace. No TrafficTarget of the namespace may say Ready=True,
// whether or not the object still carries smi2istio's labels.
func TestReviewWidenedBaselineWithoutOurLabelsIsNotReady(t *testing.T) {
	ns := rrPlainNamespace(t)
	rrWiden(t, ns, `object.metadata.name in ["`+controllers.BaselineName+`", "probe"]`,
		`[JSONPatch{op: "add", path: "/spec", value: {"rules": [{}]}}, JSONPatch{op: "add", path: "/metadata/labels", value: {"team": "x"}}]`, `{}`)
	applyYAML(t, ns, ambientApp)
	meshNamespace(t, ns)
	rrWidened(t, ns, controllers.BaselineName)
	rrNeverReady(t, ns, "db", "the object at the baseline's name allows every request to every destination")
}
