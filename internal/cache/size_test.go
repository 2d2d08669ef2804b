package cache

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
)

// generatedVirtualService is a VirtualService as the operator writes it, as the apiserver sends it.
func generatedVirtualService(i int) string {
	return fmt.Sprintf(`{"apiVersion":"networking.istio.io/v1beta1","kind":"VirtualService","metadata":{"name":"svc-%[1]d","namespace":"ns-%[2]d",
"uid":"6b1a5c1e-8a3e-4a51-9a59-%012[1]d","resourceVersion":"%[1]d","generation":1,"creationTimestamp":"2026-11-22T00:00:00Z",
"labels":{"app.kubernetes.io/managed-by":"smi2istio","smi2istio.io/source-kind":"TrafficSplit","smi2istio.io/source-name":"svc-%[1]d"},
"ownerReferences":[{"apiVersion":"split.smi-spec.io/v1alpha4","kind":"TrafficSplit","name":"svc-%[1]d","uid":"7b1a5c1e-8a3e-4a51-9a59-%012[1]d","controller":true,"blockOwnerDeletion":true}]},
"spec":{"hosts":["svc-%[1]d.ns-%[2]d.svc.cluster.local"],"http":[{"name":"svc","route":[
{"destination":{"host":"svc-%[1]d.ns-%[2]d.svc.cluster.local","subset":"v1"},"weight":50},
{"destination":{"host":"svc-%[1]d.ns-%[2]d.svc.cluster.local","subset":"v2"},"weight":50}]}]}}`, i, i%400)
}

// splitWithStatus is a TrafficSplit with the conditions the operator writes.
func splitWithStatus(i int) string {
	return fmt.Sprintf(`{"apiVersion":"split.smi-spec.io/v1alpha4","kind":"TrafficSplit","metadata":{"name":"svc-%[1]d","namespace":"ns-%[2]d",
"uid":"6b1a5c1e-8a3e-4a51-9a59-%012[1]d","resourceVersion":"%[1]d","generation":1,"creationTimestamp":"2026-11-22T00:00:00Z"},
"spec":{"service":"svc-%[1]d","backends":[{"service":"svc-%[1]d-v1","weight":50},{"service":"svc-%[1]d-v2","weight":50}]},
"status":{"observedGeneration":1,"conditions":[
{"type":"Accepted","status":"True","reason":"Accepted","message":"subset mode for svc-%[1]d.ns-%[2]d.svc.cluster.local","lastTransitionTime":"2026-11-22T00:00:00Z","observedGeneration":1},
{"type":"ResolvedRefs","status":"True","reason":"ResolvedRefs","message":"all references found","lastTransitionTime":"2026-11-22T00:00:00Z","observedGeneration":1},
{"type":"Ready","status":"True","reason":"Applied","message":"applied VirtualService svc-%[1]d and DestinationRule svc-%[1]d","lastTransitionTime":"2026-11-22T00:00:00Z","observedGeneration":1}]}}`, i, i%400)
}

// BenchmarkRetained reports the heap a cache keeps per object (retained-B/op) as unstructured and
// in the compact types: a generated VirtualService (unstructured with the spec reduced to its
// hosts, as the cache kept it before) and a TrafficSplit with its conditions. Strings are not
// interned in either. Run with -bench Retained -benchtime 10000x.
func BenchmarkRetained(b *testing.B) {
	s := kruntime.NewScheme()
	if err := AddToScheme(s); err != nil {
		b.Fatal(err)
	}
	dec := serializer.NewCodecFactory(s).UniversalDeserializer()
	compact := func(doc string) any {
		obj, _, err := dec.Decode([]byte(doc), nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		return obj
	}
	for _, c := range []struct {
		name   string
		doc    func(int) string
		decode func(doc string) any
	}{
		{"VirtualService/unstructured", generatedVirtualService, func(doc string) any {
			u := &unstructured.Unstructured{}
			if err := u.UnmarshalJSON([]byte(doc)); err != nil {
				b.Fatal(err)
			}
			spec := u.Object["spec"].(map[string]any)
			u.Object["spec"] = map[string]any{"hosts": spec["hosts"]}
			return u
		}},
		{"VirtualService/compact", generatedVirtualService, compact},
		{"TrafficSplit/unstructured", splitWithStatus, func(doc string) any {
			u := &unstructured.Unstructured{}
			if err := u.UnmarshalJSON([]byte(doc)); err != nil {
				b.Fatal(err)
			}
			return u
		}},
		{"TrafficSplit/compact", splitWithStatus, compact},
	} {
		b.Run(c.name, func(b *testing.B) {
			docs := make([]string, b.N)
			for i := range docs {
				docs[i] = strings.Clone(c.doc(i))
			}
			keep := make([]any, b.N)
			before := heapInUse()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				keep[i] = c.decode(docs[i])
			}
			b.StopTimer()
			b.ReportMetric(float64(heapInUse()-before)/float64(b.N), "retained-B/op")
			runtime.KeepAlive(keep)
			runtime.KeepAlive(docs)
		})
	}
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
