package conversion

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"k8s.io/apimachinery/pkg/api/resource"
)

// object is an SMI object's content decoded from JSON with json.Number for numbers.
type object = map[string]any

// step rewrites content between one version and the kind's hub shape. It receives a deep copy it
// may mutate.
type step func(object) (object, error)

// kind describes the versions of one SMI kind and how each maps to and from the hub: a superset
// content shape from which every version can be derived.
type kind struct {
	versions []string
	toHub    map[string]step // missing entry: the version already has the hub shape
	fromHub  map[string]step
}

func identity(o object) (object, error) { return o, nil }

func (k kind) serves(version string) bool {
	for _, v := range k.versions {
		if v == version {
			return true
		}
	}
	return false
}

// convert maps content from one version to another through the hub.
func (k kind) convert(content object, from, to string) (object, error) {
	c := deepCopy(content)
	if from == to {
		return c, nil
	}
	up, down := k.toHub[from], k.fromHub[to]
	if up == nil {
		up = identity
	}
	if down == nil {
		down = identity
	}
	hub, err := up(c)
	if err != nil {
		return nil, err
	}
	return down(hub)
}

// kinds maps group/Kind to its conversion. Hub shapes:
//   - TrafficSplit: v1alpha4 (v1alpha3 is identical; v1alpha1 weights become milli-units).
//   - TrafficTarget: v1alpha2, the only version that has both the spec wrapper and destination.port.
//   - HTTPRouteGroup: v1alpha4 (headers kept in whichever shape they were written).
//   - TCPRoute: v1alpha4.
var kinds = map[string]kind{
	"split.smi-spec.io/TrafficSplit": {
		versions: []string{"v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"},
		toHub:    map[string]step{"v1alpha1": splitQuantityToMilli},
		fromHub: map[string]step{
			"v1alpha1": chain(dropSplitMatches, splitMilliToQuantity),
			"v1alpha2": dropSplitMatches,
		},
	},
	"access.smi-spec.io/TrafficTarget": {
		versions: []string{"v1alpha1", "v1alpha2", "v1alpha3"},
		toHub:    map[string]step{"v1alpha1": wrapTarget},
		fromHub: map[string]step{
			"v1alpha1": unwrapTarget,
			"v1alpha3": dropDestinationPort,
		},
	},
	"specs.smi-spec.io/HTTPRouteGroup": {
		versions: []string{"v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"},
		toHub:    map[string]step{"v1alpha1": wrapMatches, "v1alpha2": wrapMatches},
		fromHub: map[string]step{
			"v1alpha1": chain(unwrapMatches, dropHeaders),
			"v1alpha2": unwrapMatches,
		},
	},
	"specs.smi-spec.io/TCPRoute": {
		versions: []string{"v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"},
		toHub:    map[string]step{},
		fromHub: map[string]step{
			"v1alpha1": dropSpec,
			"v1alpha2": dropSpec,
			"v1alpha3": emptySpec,
		},
	},
	"specs.smi-spec.io/UDPRoute": {versions: []string{"v1alpha4"}},
}

func chain(steps ...step) step {
	return func(o object) (object, error) {
		var err error
		for _, s := range steps {
			if o, err = s(o); err != nil {
				return nil, err
			}
		}
		return o, nil
	}
}

func asMap(v any) object {
	m, _ := v.(map[string]any)
	return m
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

// ---- TrafficSplit ----

func dropSplitMatches(o object) (object, error) {
	if spec := asMap(o["spec"]); spec != nil {
		delete(spec, "matches")
	}
	return o, nil
}

// maxMilli bounds v1alpha1 weights so that MilliValue fits an int64.
var maxMilli = resource.NewMilliQuantity(math.MaxInt64, resource.DecimalSI)

func splitQuantityToMilli(o object) (object, error) {
	for i, b := range asList(asMap(o["spec"])["backends"]) {
		backend := asMap(b)
		if backend == nil {
			continue
		}
		w, ok := backend["weight"]
		if !ok {
			continue
		}
		var text string
		switch v := w.(type) {
		case json.Number:
			text = v.String()
		case string:
			text = v
		default:
			return nil, fmt.Errorf("spec.backends[%d].weight: want a quantity, got %T", i, w)
		}
		q, err := resource.ParseQuantity(text)
		if err != nil {
			return nil, fmt.Errorf("spec.backends[%d].weight: %q is not a quantity: %w", i, text, err)
		}
		if q.Sign() < 0 {
			return nil, fmt.Errorf("spec.backends[%d].weight: %q is negative", i, text)
		}
		if q.Cmp(*maxMilli) > 0 {
			return nil, fmt.Errorf("spec.backends[%d].weight: %q is too large", i, text)
		}
		backend["weight"] = json.Number(strconv.FormatInt(q.MilliValue(), 10))
	}
	return o, nil
}

func splitMilliToQuantity(o object) (object, error) {
	for i, b := range asList(asMap(o["spec"])["backends"]) {
		backend := asMap(b)
		if backend == nil {
			continue
		}
		n, ok := backend["weight"].(json.Number)
		if !ok {
			continue
		}
		milli, err := n.Int64()
		if err != nil {
			return nil, fmt.Errorf("spec.backends[%d].weight: %q is not an integer: %w", i, n, err)
		}
		// A Quantity always marshals as a string; a weight written as a YAML number is kept
		// through the conversion annotation.
		backend["weight"] = resource.NewMilliQuantity(milli, resource.DecimalSI).String()
	}
	return o, nil
}

// ---- TrafficTarget ----

// wrapTarget moves v1alpha1's top-level destination/sources/specs under spec (specs -> rules).
func wrapTarget(o object) (object, error) {
	spec := object{}
	for _, f := range []string{"destination", "sources"} {
		if v, ok := o[f]; ok {
			spec[f] = v
			delete(o, f)
		}
	}
	if v, ok := o["specs"]; ok {
		spec["rules"] = v
		delete(o, "specs")
	}
	o["spec"] = spec
	return o, nil
}

func unwrapTarget(o object) (object, error) {
	spec := asMap(o["spec"])
	delete(o, "spec")
	for _, f := range []string{"destination", "sources"} {
		if v, ok := spec[f]; ok {
			o[f] = v
		}
	}
	if v, ok := spec["rules"]; ok {
		o["specs"] = v
	}
	return o, nil
}

func dropDestinationPort(o object) (object, error) {
	if d := asMap(asMap(o["spec"])["destination"]); d != nil {
		delete(d, "port")
	}
	return o, nil
}

// ---- HTTPRouteGroup ----

func wrapMatches(o object) (object, error) {
	if v, ok := o["matches"]; ok {
		o["spec"] = object{"matches": v}
		delete(o, "matches")
	}
	return o, nil
}

func unwrapMatches(o object) (object, error) {
	if v, ok := asMap(o["spec"])["matches"]; ok {
		o["matches"] = v
	}
	delete(o, "spec")
	return o, nil
}

func dropHeaders(o object) (object, error) {
	for _, m := range asList(o["matches"]) {
		delete(asMap(m), "headers")
	}
	return o, nil
}

// ---- TCPRoute ----

func dropSpec(o object) (object, error) {
	delete(o, "spec")
	return o, nil
}

func emptySpec(o object) (object, error) {
	if _, ok := o["spec"]; ok {
		o["spec"] = object{}
	}
	return o, nil
}
