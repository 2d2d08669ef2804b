package controllers

import (
	"strings"
	"testing"

	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	networkingv1beta1 "istio.io/client-go/pkg/apis/networking/v1beta1"
	securityv1beta1 "istio.io/client-go/pkg/apis/security/v1beta1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/smi2istio/smi2istio/internal/syncset"
	"github.com/smi2istio/smi2istio/translate"
)

func cond(typ string, status metav1.ConditionStatus, reason, message string) metav1.Condition {
	return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: message}
}

func checkConditions(t *testing.T, name string, got conditionSet, want []metav1.Condition, outcome string) {
	t.Helper()
	if !equality.Semantic.DeepEqual(got.conditions(), want) {
		t.Errorf("%s: conditions\n got  %+v\n want %+v", name, got.conditions(), want)
	}
	if got.outcome != outcome {
		t.Errorf("%s: outcome %q, want %q", name, got.outcome, outcome)
	}
}

func TestSplitConditions(t *testing.T) {
	meta := func(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name, Namespace: "shop"} }
	res := virtualServiceResult(&translate.SplitResult{Mode: translate.SubsetMode, Host: "web.shop.svc.cluster.local",
		VirtualService:  &networkingv1beta1.VirtualService{TypeMeta: metav1.TypeMeta{Kind: "VirtualService"}, ObjectMeta: meta("web")},
		DestinationRule: &networkingv1beta1.DestinationRule{TypeMeta: metav1.TypeMeta{Kind: "DestinationRule"}, ObjectMeta: meta("web")}}, "sidecar")
	accepted := cond(ConditionAccepted, metav1.ConditionTrue, ReasonAccepted, "Subset mode for web.shop.svc.cluster.local (sidecar data plane)")
	resolved := cond(ConditionResolvedRefs, metav1.ConditionTrue, ReasonResolvedRefs, "all references found")
	conflict := syncset.Problem{Object: syncset.Ref{Kind: "VirtualService", Namespace: "other", Name: "theirs"}, Reason: syncset.ReasonConflict, Message: "VirtualService other/theirs already routes web"}
	for _, c := range []struct {
		name    string
		inMesh  bool
		out     splitTranslation
		synced  syncset.Result
		want    []metav1.Condition
		outcome string
	}{
		{"applied", true, splitTranslation{res: res}, syncset.Result{Applied: []syncset.Ref{{Kind: "VirtualService", Name: "web"}}},
			[]metav1.Condition{accepted, resolved, cond(ConditionReady, metav1.ConditionTrue, ReasonApplied, "applied DestinationRule web and VirtualService web")}, OutcomeApplied},
		{"unchanged", true, splitTranslation{res: res}, syncset.Result{},
			[]metav1.Condition{accepted, resolved, cond(ConditionReady, metav1.ConditionTrue, ReasonApplied, "applied DestinationRule web and VirtualService web")}, OutcomeUnchanged},
		{"not in mesh", false, splitTranslation{}, syncset.Result{Pruned: []syncset.Ref{{Kind: "VirtualService", Name: "web"}}},
			[]metav1.Condition{cond(ConditionAccepted, metav1.ConditionTrue, ReasonAccepted, ""), resolved, cond(ConditionReady, metav1.ConditionFalse, ReasonNotInMesh, "namespace shop is not in the mesh: nothing is applied")}, OutcomeNotInMesh},
		{"invalid", true, splitTranslation{err: &translate.InvalidError{Finding: translate.Finding{Field: "spec.backends[0].weight", Reason: "NegativeWeight", Message: "-1"}}}, syncset.Result{},
			[]metav1.Condition{cond(ConditionAccepted, metav1.ConditionFalse, "NegativeWeight", "spec.backends[0].weight: -1"), resolved,
				cond(ConditionReady, metav1.ConditionFalse, ReasonInvalid, "not applied: traffic goes to the root Service as if there were no TrafficSplit")}, OutcomeInvalid},
		{"older sibling", true, splitTranslation{err: &ConflictError{Message: "TrafficSplit a is older"}}, syncset.Result{},
			[]metav1.Condition{cond(ConditionAccepted, metav1.ConditionTrue, ReasonAccepted, ""), resolved, cond(ConditionReady, metav1.ConditionFalse, ReasonConflict, "TrafficSplit a is older")}, OutcomeConflict},
		{"foreign VirtualService", true, splitTranslation{res: res, blockers: []syncset.Problem{conflict}}, syncset.Result{Problems: []syncset.Problem{conflict}},
			[]metav1.Condition{accepted, resolved, cond(ConditionReady, metav1.ConditionFalse, ReasonConflict, "VirtualService other/theirs already routes web: what was applied before is left as it is")}, OutcomeConflict},
		{"invalid output", true, splitTranslation{res: res}, syncset.Result{Problems: []syncset.Problem{{Reason: syncset.ReasonInvalidOutput, Message: "VirtualService shop/web is not valid: x"}}},
			[]metav1.Condition{accepted, resolved, cond(ConditionReady, metav1.ConditionFalse, ReasonInvalidOutput, "VirtualService shop/web is not valid: x: what was applied before is left as it is")}, OutcomeInvalid},
		{"Gateway API not served", true, splitTranslation{unavailable: "namespace shop is routed with the Gateway API"}, syncset.Result{},
			[]metav1.Condition{cond(ConditionAccepted, metav1.ConditionTrue, ReasonAccepted, ""), resolved, cond(ConditionReady, metav1.ConditionFalse, ReasonGatewayAPIMissing, "namespace shop is routed with the Gateway API")}, OutcomeInvalid},
	} {
		checkConditions(t, c.name, splitConditions("shop", c.inMesh, c.out, c.synced), c.want, c.outcome)
	}
}

func TestTargetConditions(t *testing.T) {
	ap := &securityv1beta1.AuthorizationPolicy{TypeMeta: metav1.TypeMeta{Kind: "AuthorizationPolicy"}, ObjectMeta: metav1.ObjectMeta{Name: "a-api", Namespace: "shop"}}
	pa := &securityv1beta1.PeerAuthentication{TypeMeta: metav1.TypeMeta{Kind: "PeerAuthentication"}, ObjectMeta: metav1.ObjectMeta{Name: "a-api", Namespace: "shop"}}
	ef := &networkingv1alpha3.EnvoyFilter{ObjectMeta: metav1.ObjectMeta{Name: "api-filter", Namespace: "shop"}}
	a := translate.TargetResult{Name: "a", AuthorizationPolicies: []*securityv1beta1.AuthorizationPolicy{ap}, PeerAuthentications: []*securityv1beta1.PeerAuthentication{pa},
		Rungs: []translate.Finding{{Field: "spec.matches[0].pathRegex", Reason: translate.RungEnvoy}}}
	b := translate.TargetResult{Name: "b", Err: &translate.InvalidError{Finding: translate.Finding{Field: "spec.sources[0].name", Reason: "InvalidName", Message: `"web*" is not a ServiceAccount name`}}}
	res := &translate.AccessResult{Targets: []translate.TargetResult{a, b}, EnvoyFilters: []*networkingv1alpha3.EnvoyFilter{ef}}
	enforcing := accessScope{inMesh: true, enforcingMode: true}
	accepted := cond(ConditionAccepted, metav1.ConditionTrue, ReasonAccepted, "regexes by rung: EnvoyRung: 1")
	resolved := cond(ConditionResolvedRefs, metav1.ConditionTrue, ReasonResolvedRefs, "all references found")
	filterConflict := syncset.Problem{Object: syncset.Ref{Kind: "EnvoyFilter", Namespace: "shop", Name: "api-filter"}, Reason: syncset.ReasonConflict, Message: "EnvoyFilter shop/api-filter exists and is not ours"}
	siblingInvalid := syncset.Problem{Object: syncset.Ref{Kind: "AuthorizationPolicy", Namespace: "shop", Name: "c-api"}, Reason: syncset.ReasonInvalidOutput, Message: "AuthorizationPolicy shop/c-api is not valid"}
	const all = ": the destination's outputs are applied together or not at all, so nothing is allowed to it"
	for _, c := range []struct {
		name    string
		tr      translate.TargetResult
		scope   accessScope
		synced  syncset.Result
		want    []metav1.Condition
		outcome string
	}{
		{"applied", a, enforcing, syncset.Result{}, []metav1.Condition{accepted, resolved, cond(ConditionReady, metav1.ConditionTrue, ReasonApplied, "applied a-api, a-api")}, OutcomeApplied},
		{"invalid", b, enforcing, syncset.Result{}, []metav1.Condition{
			cond(ConditionAccepted, metav1.ConditionFalse, "InvalidName", `spec.sources[0].name: "web*" is not a ServiceAccount name`), resolved,
			cond(ConditionReady, metav1.ConditionFalse, ReasonInvalid, "nothing is allowed by this TrafficTarget")}, OutcomeInvalid},
		{"filter conflict concerns every target", a, enforcing, syncset.Result{Problems: []syncset.Problem{filterConflict}}, []metav1.Condition{accepted, resolved,
			cond(ConditionReady, metav1.ConditionFalse, ReasonConflict, filterConflict.Message+all)}, OutcomeConflict},
		{"a sibling's invalid output blocks", a, enforcing, syncset.Result{Problems: []syncset.Problem{siblingInvalid}}, []metav1.Condition{accepted, resolved,
			cond(ConditionReady, metav1.ConditionFalse, ReasonInvalidOutput, siblingInvalid.Message+all)}, OutcomeInvalid},
		{"permissive", a, accessScope{inMesh: true}, syncset.Result{}, []metav1.Condition{accepted, resolved,
			cond(ConditionReady, metav1.ConditionFalse, ReasonNotEnforced, "the access mode is Permissive: every source is allowed and this TrafficTarget is not enforced")}, OutcomePermissive},
		{"root namespace", a, accessScope{inMesh: true, enforcingMode: true, rootNamespace: true}, syncset.Result{}, []metav1.Condition{accepted, resolved,
			cond(ConditionReady, metav1.ConditionFalse, ReasonRootNamespace, "the destination is in Istio's root namespace, where a workload selector applies to every namespace: nothing is applied, and this namespace has no deny-by-default baseline, so smi2istio does not restrict the destination (every source is allowed unless you restrict it yourself)")}, OutcomeInvalid},
		{"not in mesh", a, accessScope{enforcingMode: true}, syncset.Result{}, []metav1.Condition{accepted, resolved,
			cond(ConditionReady, metav1.ConditionFalse, ReasonNotInMesh, "the destination's namespace is not in the mesh: nothing is applied")}, OutcomeNotInMesh},
		{"left the mesh, sidecars still run", a, accessScope{inMesh: true, enforcingMode: true, leftWithSidecars: 3}, syncset.Result{}, []metav1.Condition{accepted, resolved,
			cond(ConditionReady, metav1.ConditionFalse, ReasonLeftMesh, "the namespace is not in the mesh, but 3 of its pods still run Istio's sidecar: a-api, a-api is kept for them until they are restarted; it is enforced only while istiod still reads this namespace (if discoverySelectors exclude it, those pods allow every source)")}, OutcomeNotInMesh},
		{"allowing something needs no baseline", a, accessScope{inMesh: true, enforcingMode: true, baselineMissing: true}, syncset.Result{}, []metav1.Condition{accepted, resolved,
			cond(ConditionReady, metav1.ConditionTrue, ReasonApplied, "applied a-api, a-api")}, OutcomeApplied},
		{"allowing nothing needs the baseline", b, accessScope{inMesh: true, enforcingMode: true, baselineMissing: true}, syncset.Result{}, []metav1.Condition{
			cond(ConditionAccepted, metav1.ConditionFalse, "InvalidName", `spec.sources[0].name: "web*" is not a ServiceAccount name`), resolved,
			cond(ConditionReady, metav1.ConditionFalse, ReasonBaselineMissing, "the namespace's deny-by-default AuthorizationPolicy smi2istio-default-deny is missing or not smi2istio's (see the SMI2IstioConfig and the namespace's mesh membership): until it is in place, a destination with no policy allowing anything is open to every source; Invalid: nothing is allowed by this TrafficTarget")}, OutcomeInvalid},
		{"blocked needs the baseline", a, accessScope{inMesh: true, enforcingMode: true, baselineMissing: true}, syncset.Result{Problems: []syncset.Problem{filterConflict}}, []metav1.Condition{accepted, resolved,
			cond(ConditionReady, metav1.ConditionFalse, ReasonBaselineMissing, "the namespace's deny-by-default AuthorizationPolicy smi2istio-default-deny is missing or not smi2istio's (see the SMI2IstioConfig and the namespace's mesh membership): until it is in place, a destination with no policy allowing anything is open to every source; Conflict: "+filterConflict.Message+all)}, OutcomeConflict},
		{"a widened baseline concerns a target that allows something", a, accessScope{inMesh: true, enforcingMode: true, baselineWidened: true}, syncset.Result{}, []metav1.Condition{accepted, resolved,
			cond(ConditionReady, metav1.ConditionFalse, ReasonBaselineWidened, "the namespace's deny-by-default AuthorizationPolicy smi2istio-default-deny does not hold the spec smi2istio writes (someone widened it and an admission step keeps it so, or it is not smi2istio's: see the operator's log): what it allows may be allowed to every workload of the namespace, whatever the TrafficTargets say; Applied: applied a-api, a-api")}, OutcomeApplied},
		{"a widened baseline concerns a target that allows nothing", b, accessScope{inMesh: true, enforcingMode: true, baselineWidened: true}, syncset.Result{}, []metav1.Condition{
			cond(ConditionAccepted, metav1.ConditionFalse, "InvalidName", `spec.sources[0].name: "web*" is not a ServiceAccount name`), resolved,
			cond(ConditionReady, metav1.ConditionFalse, ReasonBaselineWidened, "the namespace's deny-by-default AuthorizationPolicy smi2istio-default-deny does not hold the spec smi2istio writes (someone widened it and an admission step keeps it so, or it is not smi2istio's: see the operator's log): what it allows may be allowed to every workload of the namespace, whatever the TrafficTargets say; Invalid: nothing is allowed by this TrafficTarget")}, OutcomeInvalid},
		{"widened, not enforced: no baseline expected", a, accessScope{enforcingMode: true, baselineWidened: true}, syncset.Result{}, []metav1.Condition{accepted, resolved,
			cond(ConditionReady, metav1.ConditionFalse, ReasonNotInMesh, "the destination's namespace is not in the mesh: nothing is applied")}, OutcomeNotInMesh},
		{"not enforced: no baseline expected", a, accessScope{enforcingMode: true, baselineMissing: true}, syncset.Result{}, []metav1.Condition{accepted, resolved,
			cond(ConditionReady, metav1.ConditionFalse, ReasonNotInMesh, "the destination's namespace is not in the mesh: nothing is applied")}, OutcomeNotInMesh},
	} {
		checkConditions(t, c.name, targetConditions(c.tr, res, c.scope, c.synced), c.want, c.outcome)
	}
}

// A resync reconciles the destinations our outputs were written for, once each, whatever the
// TrafficTargets say now (one moved or made unreadable while the operator was down).
func TestOutputDestinations(t *testing.T) {
	obj := func(name, dest string) metav1.Object {
		o := &metav1.ObjectMeta{Name: name, Namespace: "ns"}
		if dest != "" {
			o.Labels = map[string]string{translate.DestinationLabel: dest}
		}
		return o
	}
	got := outputDestinations("ns", []metav1.Object{obj("a1", "api"), obj("a2", "api"), obj("pa", "db"), obj("baseline", "")})
	var names []string
	for _, r := range got {
		if r.Namespace != "ns" {
			t.Errorf("request %v in another namespace", r)
		}
		names = append(names, r.Name)
	}
	if strings.Join(names, ",") != "api,db" {
		t.Errorf("destinations %v, want api,db", names)
	}
}
