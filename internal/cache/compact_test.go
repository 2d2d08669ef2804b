package cache

import (
	"encoding/json"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

const virtualService = `{"apiVersion":"networking.istio.io/v1beta1","kind":"VirtualService",
 "metadata":{"name":"bookstore","namespace":"bookstore","uid":"u1","labels":{"app.kubernetes.io/managed-by":"smi2istio"},
  "ownerReferences":[{"apiVersion":"split.smi-spec.io/v1alpha4","kind":"TrafficSplit","name":"bookstore-split","uid":"u0","controller":true}]},
 "spec":{"hosts":["bookstore.bookstore.svc.cluster.local"],"http":[{"route":[
  {"destination":{"host":"bookstore","subset":"v1"},"weight":WEIGHT}]}]}}`

func scheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	if err := AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

// decode reads JSON the way the cache's informers do: through the scheme's codecs.
func decode(t *testing.T, s *runtime.Scheme, doc string) runtime.Object {
	t.Helper()
	obj, _, err := serializer.NewCodecFactory(s).UniversalDeserializer().Decode([]byte(doc), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return obj
}

// The hash of a cached spec is the hash of the same spec as the operator renders it (an
// unstructured object with int64 numbers); a changed value changes it; the hosts are kept.
func TestGeneratedKeepsHostsAndHash(t *testing.T) {
	s := scheme(t)
	obj, ok := decode(t, s, strings.Replace(virtualService, "WEIGHT", "50", 1)).(*Generated[VirtualService])
	if !ok {
		t.Fatalf("decoded a %T, want a *Generated[VirtualService]", obj)
	}
	if got := obj.Hosts(); len(got) != 1 || got[0] != "bookstore.bookstore.svc.cluster.local" {
		t.Errorf("hosts %v", got)
	}
	if obj.GetName() != "bookstore" || obj.GetLabels()["app.kubernetes.io/managed-by"] != "smi2istio" || len(obj.GetOwnerReferences()) != 1 {
		t.Errorf("metadata not kept: %+v", obj.ObjectMeta)
	}

	want := &unstructured.Unstructured{}
	if err := want.UnmarshalJSON([]byte(strings.Replace(virtualService, "WEIGHT", "50", 1))); err != nil {
		t.Fatal(err)
	}
	// What the controllers compare against: an int64 weight, as runtime's converter renders it.
	want.Object["spec"].(map[string]any)["http"].([]any)[0].(map[string]any)["route"].([]any)[0].(map[string]any)["weight"] = int64(50)
	h, err := SpecHash(want.Object["spec"])
	if err != nil {
		t.Fatal(err)
	}
	if obj.SpecHash() != h {
		t.Errorf("cached hash %s, the rendered spec's %s", obj.SpecHash(), h)
	}
	edited := decode(t, s, strings.Replace(virtualService, "WEIGHT", "60", 1)).(*Generated[VirtualService])
	if edited.SpecHash() == h {
		t.Error("a changed weight hashes like the original")
	}
}

func TestDestinationRuleHost(t *testing.T) {
	obj := decode(t, scheme(t), `{"apiVersion":"networking.istio.io/v1beta1","kind":"DestinationRule","metadata":{"name":"d","namespace":"n"},
		"spec":{"host":"bookstore.bookstore.svc.cluster.local","subsets":[{"name":"v1","labels":{"version":"v1"}}]}}`).(Object)
	if got := obj.Hosts(); len(got) != 1 || got[0] != "bookstore.bookstore.svc.cluster.local" {
		t.Errorf("hosts %v", got)
	}
}

// A Gateway API route's hosts are its Service parents (core group, with or without a namespace);
// a Gateway parent is not one.
func TestRouteServiceParents(t *testing.T) {
	obj := decode(t, scheme(t), `{"apiVersion":"gateway.networking.k8s.io/v1","kind":"HTTPRoute","metadata":{"name":"r","namespace":"n"},
		"spec":{"parentRefs":[{"group":"","kind":"Service","name":"bookstore","port":14001},{"kind":"Service","name":"db","namespace":"other"},
		{"group":"core","kind":"Service","name":"core"},{"name":"ingress"},{"group":"gateway.networking.k8s.io","kind":"Gateway","name":"gw"},
		{"group":"example.com","kind":"Service","name":"custom"}]}}`).(Object)
	if got := strings.Join(obj.Hosts(), ","); got != "bookstore,db.other,core" {
		t.Errorf("hosts %q, want bookstore,db.other,core", got)
	}
	tcp := decode(t, scheme(t), `{"apiVersion":"gateway.networking.k8s.io/v1alpha2","kind":"TCPRoute","metadata":{"name":"r","namespace":"n"},
		"spec":{"parentRefs":[{"group":"","kind":"Service","name":"mysql"}]}}`).(Object)
	if got := strings.Join(tcp.Hosts(), ","); got != "mysql" {
		t.Errorf("TCPRoute hosts %q", got)
	}
	gw := decode(t, scheme(t), `{"apiVersion":"gateway.networking.k8s.io/v1","kind":"Gateway","metadata":{"name":"waypoint","namespace":"n"},
		"spec":{"gatewayClassName":"istio-waypoint","listeners":[{"name":"mesh","port":15008,"protocol":"HBONE"}]}}`).(Object)
	if gw.Class() != "istio-waypoint" {
		t.Errorf("Gateway class %q", gw.Class())
	}
	if c := gw.(*Generated[Gateway]).DeepCopy(); c.Class() != "istio-waypoint" || strings.Join(c.Hosts(), ",") != "" {
		t.Errorf("a deep copy of the Gateway has class %q", c.Class())
	}
}

// Lists decode item by item into the compact type; a deep copy shares nothing mutable.
func TestListAndDeepCopy(t *testing.T) {
	doc := `{"apiVersion":"security.istio.io/v1beta1","kind":"PeerAuthenticationList","metadata":{"resourceVersion":"7"},"items":[
		{"metadata":{"name":"a","namespace":"n","labels":{"k":"v"}},"spec":{"mtls":{"mode":"STRICT"}}},
		{"metadata":{"name":"b","namespace":"n"},"spec":{"mtls":{"mode":"PERMISSIVE"}}}]}`
	l, ok := decode(t, scheme(t), doc).(*GeneratedList[PeerAuthentication])
	if !ok {
		t.Fatal("not a GeneratedList[PeerAuthentication]")
	}
	objs := l.Objects()
	if len(objs) != 2 || objs[0].GetName() != "a" || objs[0].SpecHash() == objs[1].SpecHash() {
		t.Fatalf("items %v", objs)
	}
	c := l.DeepCopyObject().(*GeneratedList[PeerAuthentication])
	c.Items[0].Labels["k"] = "changed"
	if l.Items[0].Labels["k"] != "v" || c.Items[0].SpecHash() != l.Items[0].SpecHash() || c.GetResourceVersion() != "7" {
		t.Error("the deep copy shares labels or lost the hash or list metadata")
	}
}

// Each compact type maps to exactly one kind, so the client can name it without a TypeMeta.
func TestSchemeKinds(t *testing.T) {
	s := scheme(t)
	for gvk := range kindsInUse() {
		obj, list := kind(gvk)
		got, err := apiutil.GVKForObject(obj(), s)
		if err != nil || got != gvk || obj().DefaultGVK() != gvk {
			t.Errorf("GVKForObject(New(%s)) = %s, %v; DefaultGVK %s", gvk, got, err, obj().DefaultGVK())
		}
		got, err = apiutil.GVKForObject(list(), s)
		if err != nil || got.Kind != gvk.Kind+"List" {
			t.Errorf("GVKForObject(NewList(%s)) = %s, %v", gvk, got, err)
		}
	}
}

// A cached object is never sent back: encoding its spec fails instead of writing an empty one.
func TestSpecDoesNotEncode(t *testing.T) {
	if _, err := json.Marshal(New(VirtualService{}.GVK())); err == nil {
		t.Error("a cached object encoded")
	}
}

// A rendered object of a kind or version without a cached type is an error, not a panic.
func TestNewForUnknownKind(t *testing.T) {
	if _, err := NewFor(VirtualService{}.GVK().GroupVersion().WithKind("Gateway")); err == nil {
		t.Error("no error for a Gateway")
	}
	v1 := VirtualService{}.GVK()
	v1.Version = "v1"
	if _, err := NewFor(v1); err == nil {
		t.Error("no error for networking.istio.io/v1")
	}
	if _, err := NewFor(TrafficSplit{}.GVK()); err == nil {
		t.Error("no error for an SMI kind")
	}
	if o, err := NewFor(EnvoyFilter{}.GVK()); err != nil || o.DefaultGVK() != (EnvoyFilter{}).GVK() {
		t.Errorf("NewFor(EnvoyFilter) = %v, %v", o, err)
	}
}

// The SMI versions are chosen once: after the kinds are in use, only the versions in use are
// accepted again.
func TestSMIVersionsFrozenOnceUsed(t *testing.T) {
	_ = NewSMI(TrafficSplit{}.GVK())
	if err := SetSMIVersions(SMIVersions{}); err != nil {
		t.Errorf("the defaults again: %v", err)
	}
	if err := SetSMIVersions(SMIVersions{TrafficSplit: "v1alpha2"}); err == nil || (TrafficSplit{}).GVK().Version != "v1alpha4" {
		t.Errorf("versions changed after use: %v, %s", err, TrafficSplit{}.GVK())
	}
}
