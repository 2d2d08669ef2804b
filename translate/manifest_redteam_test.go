package translate_test

import (
	"math"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	netapi "istio.io/api/networking/v1alpha3"
	secapi "istio.io/api/security/v1beta1"
	typeapi "istio.io/api/type/v1beta1"
	netv1a3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	secv1 "istio.io/client-go/pkg/apis/security/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/google/go-cmp/cmp"

	"github.com/smi2istio/smi2istio/translate"
)

var _ = cmp.Diff

func zzOld(obj runtime.Object) (m map[string]any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = errPanic{r}
		}
	}()
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	delete(content, "status")
	if md, ok := content["metadata"].(map[string]any); ok {
		delete(md, "creationTimestamp")
	}
	return content, nil
}

type errPanic struct{ v any }

func (e errPanic) Error() string { return "panic" }

func zzNew(obj runtime.Object) (m map[string]any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = errPanic{r}
		}
	}()
	u, err := translate.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	return u.Object, nil
}

func meta() metav1.ObjectMeta { return metav1.ObjectMeta{Name: "x", Namespace: "ns"} }

func TestZZRedTeamRender(t *testing.T) {
	tm := func(k, g string) metav1.TypeMeta { return metav1.TypeMeta{Kind: k, APIVersion: g} }
	ap := func(s *secapi.AuthorizationPolicy) runtime.Object {
		o := &secv1.AuthorizationPolicy{TypeMeta: tm("AuthorizationPolicy", "security.istio.io/v1"), ObjectMeta: meta()}
		proto.Merge(&o.Spec, s)
		return o
	}
	pa := func(s *secapi.PeerAuthentication) runtime.Object {
		o := &secv1.PeerAuthentication{TypeMeta: tm("PeerAuthentication", "security.istio.io/v1"), ObjectMeta: meta()}
		proto.Merge(&o.Spec, s)
		return o
	}
	ef := func(v *structpb.Struct) runtime.Object {
		o := &netv1a3.EnvoyFilter{TypeMeta: tm("EnvoyFilter", "networking.istio.io/v1alpha3"), ObjectMeta: meta()}
		o.Spec.ConfigPatches = []*netapi.EnvoyFilter_EnvoyConfigObjectPatch{{ApplyTo: netapi.EnvoyFilter_HTTP_FILTER,
			Patch: &netapi.EnvoyFilter_Patch{Operation: netapi.EnvoyFilter_Patch_INSERT_FIRST, Value: v}}}
		return o
	}
	vs := func(s *netapi.VirtualService) runtime.Object {
		o := &netv1a3.VirtualService{TypeMeta: tm("VirtualService", "networking.istio.io/v1alpha3"), ObjectMeta: meta()}
		proto.Merge(&o.Spec, s)
		return o
	}
	dr := func(s *netapi.DestinationRule) runtime.Object {
		o := &netv1a3.DestinationRule{TypeMeta: tm("DestinationRule", "networking.istio.io/v1alpha3"), ObjectMeta: meta()}
		proto.Merge(&o.Spec, s)
		return o
	}
	st := func(m map[string]*structpb.Value) *structpb.Struct { return &structpb.Struct{Fields: m} }
	unk := &secapi.AuthorizationPolicy{Action: secapi.AuthorizationPolicy_DENY}
	unk.ProtoReflect().SetUnknown([]byte{0xf8, 0x3e, 0x01}) // field 999 varint 1
	cases := map[string]runtime.Object{
		"invalid utf8 principal":  ap(&secapi.AuthorizationPolicy{Rules: []*secapi.Rule{{From: []*secapi.Rule_From{{Source: &secapi.Source{Principals: []string{"cluster.local/ns/a/sa/b\xff"}}}}}}}),
		"invalid utf8 notValues":  ap(&secapi.AuthorizationPolicy{Action: secapi.AuthorizationPolicy_DENY, Rules: []*secapi.Rule{{When: []*secapi.Condition{{Key: "request.headers[x]", NotValues: []string{"\xc0"}}}}}}),
		"invalid utf8 selector":   ap(&secapi.AuthorizationPolicy{Selector: &typeapi.WorkloadSelector{MatchLabels: map[string]string{"app": "a\xff"}}}),
		"unknown action":          ap(&secapi.AuthorizationPolicy{Action: secapi.AuthorizationPolicy_Action(99)}),
		"deny empty rule":         ap(&secapi.AuthorizationPolicy{Action: secapi.AuthorizationPolicy_DENY, Rules: []*secapi.Rule{{}}}),
		"nil rule":                ap(&secapi.AuthorizationPolicy{Action: secapi.AuthorizationPolicy_DENY, Rules: []*secapi.Rule{nil}}),
		"nil from":                ap(&secapi.AuthorizationPolicy{Rules: []*secapi.Rule{{From: []*secapi.Rule_From{nil}}}}),
		"empty selector":          ap(&secapi.AuthorizationPolicy{Selector: &typeapi.WorkloadSelector{MatchLabels: map[string]string{}}}),
		"empty label value":       ap(&secapi.AuthorizationPolicy{Selector: &typeapi.WorkloadSelector{MatchLabels: map[string]string{"a": ""}}}),
		"targetRefs":              ap(&secapi.AuthorizationPolicy{TargetRefs: []*typeapi.PolicyTargetReference{{Kind: "Service", Name: "s"}, {}}}),
		"unknown fields":          ap(unk),
		"ports int":               ap(&secapi.AuthorizationPolicy{Rules: []*secapi.Rule{{To: []*secapi.Rule_To{{Operation: &secapi.Operation{Ports: []string{"80"}, Methods: []string{""}}}}}}}),
		"pa unknown mode":         pa(&secapi.PeerAuthentication{Mtls: &secapi.PeerAuthentication_MutualTLS{Mode: 99}}),
		"pa unset mode":           pa(&secapi.PeerAuthentication{Mtls: &secapi.PeerAuthentication_MutualTLS{}}),
		"pa portlevel nil":        pa(&secapi.PeerAuthentication{PortLevelMtls: map[uint32]*secapi.PeerAuthentication_MutualTLS{8080: nil, 0: {Mode: secapi.PeerAuthentication_MutualTLS_STRICT}, math.MaxUint32: {}}}),
		"ef nan":                  ef(st(map[string]*structpb.Value{"n": structpb.NewNumberValue(math.NaN())})),
		"ef inf":                  ef(st(map[string]*structpb.Value{"n": structpb.NewNumberValue(math.Inf(1))})),
		"ef nil kind":             ef(st(map[string]*structpb.Value{"n": {}})),
		"ef nil value":            ef(st(map[string]*structpb.Value{"n": nil})),
		"ef numbers":              ef(st(map[string]*structpb.Value{"a": structpb.NewNumberValue(1e21), "b": structpb.NewNumberValue(1.5), "c": structpb.NewNumberValue(1 << 53), "d": structpb.NewNumberValue(math.Copysign(0, -1)), "e": structpb.NewNumberValue(1e-7), "f": structpb.NewNumberValue(1e20)})),
		"ef null/empty":           ef(st(map[string]*structpb.Value{"a": structpb.NewNullValue(), "b": structpb.NewStructValue(st(nil)), "c": structpb.NewListValue(&structpb.ListValue{}), "d": structpb.NewStringValue("")})),
		"ef nil struct":           ef(nil),
		"ef utf8 key":             ef(st(map[string]*structpb.Value{"a\xff": structpb.NewBoolValue(false)})),
		"ef utf8 val":             ef(st(map[string]*structpb.Value{"a": structpb.NewStringValue("\xff")})),
		"ef html":                 ef(st(map[string]*structpb.Value{"<a>&": structpb.NewStringValue("<script>&\u2028")})),
		"ef nil list elem":        ef(st(map[string]*structpb.Value{"a": structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{nil}})})),
		"vs weights":              vs(&netapi.VirtualService{Hosts: []string{"h"}, Http: []*netapi.HTTPRoute{{Route: []*netapi.HTTPRouteDestination{{Destination: &netapi.Destination{Host: "h", Subset: "s", Port: &netapi.PortSelector{Number: 0}}, Weight: 0}, {Destination: &netapi.Destination{Host: "h", Port: &netapi.PortSelector{Number: math.MaxUint32}}, Weight: math.MaxInt32}}}}}),
		"vs timeout":              vs(&netapi.VirtualService{Http: []*netapi.HTTPRoute{{Timeout: durationpb.New(1500 * time.Millisecond)}, {Timeout: &durationpb.Duration{Seconds: 1, Nanos: -1}}, {Timeout: &durationpb.Duration{Seconds: 1 << 40}}}}),
		"vs retries wrapper":      vs(&netapi.VirtualService{Http: []*netapi.HTTPRoute{{Retries: &netapi.HTTPRetry{Attempts: 0, RetryRemoteLocalities: wrapperspb.Bool(false)}}}}),
		"vs mirror percent":       vs(&netapi.VirtualService{Http: []*netapi.HTTPRoute{{MirrorPercentage: &netapi.Percent{Value: math.NaN()}}}}),
		"vs mirror percent float": vs(&netapi.VirtualService{Http: []*netapi.HTTPRoute{{MirrorPercentage: &netapi.Percent{Value: 0.1}}}}),
		"dr subsets":              dr(&netapi.DestinationRule{Host: "h", Subsets: []*netapi.Subset{{Name: "a", Labels: map[string]string{}}, nil, {Name: "b", Labels: map[string]string{"x": ""}}}}),
		"dr int64":                dr(&netapi.DestinationRule{Host: "h", TrafficPolicy: &netapi.TrafficPolicy{ConnectionPool: &netapi.ConnectionPoolSettings{Http: &netapi.ConnectionPoolSettings_HTTPSettings{MaxRequestsPerConnection: 7}}, OutlierDetection: &netapi.OutlierDetection{MaxEjectionPercent: 100}}}),
	}
	// Known divergences: jsonpb silently rewrites invalid UTF-8 to U+FFFD and renders Struct
	// NaN/±Inf as the strings "NaN"/"Infinity"; protojson refuses both. The new path errors
	// (nothing is applied: fail closed), never renders something different.
	newErrs := map[string]bool{"invalid utf8 principal": true, "invalid utf8 notValues": true, "invalid utf8 selector": true,
		"ef utf8 key": true, "ef utf8 val": true, "ef nan": true, "ef inf": true}
	for name, obj := range cases {
		old, oerr := zzOld(obj)
		nw, nerr := zzNew(obj)
		if _, isPanic := nerr.(errPanic); isPanic {
			t.Errorf("%s: new path panicked: %v", name, nerr)
			continue
		}
		if newErrs[name] {
			if oerr != nil || nerr == nil {
				t.Errorf("%s: expected old ok/new error, got old=%v new=%v", name, oerr, nerr)
			}
			continue
		}
		switch {
		case oerr != nil || nerr != nil:
			if (oerr == nil) != (nerr == nil) {
				t.Errorf("%s: error mismatch: old=%v new=%v\nold=%v\nnew=%v", name, oerr, nerr, old, nw)
			} else {
				t.Logf("%s: both error: old=%v new=%v", name, oerr, nerr)
			}
		case !equality.Semantic.DeepEqual(old, nw):
			t.Errorf("%s: differ:\n%s", name, cmp.Diff(old, nw))
		}
	}
}
