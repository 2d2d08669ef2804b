package cache

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
)

// The manager's cache can be made on a cluster that serves no Istio kinds yet (the operator may
// start before Istio; `make run` installs Istio's CRDs moments before): its options name only kinds
// every cluster has.
func TestOptionsNeedOnlyCoreKinds(t *testing.T) {
	mapper := meta.NewDefaultRESTMapper(nil)
	for _, kind := range []string{"ConfigMap", "Service", "Pod", "Namespace"} {
		mapper.Add(corev1.SchemeGroupVersion.WithKind(kind), meta.RESTScopeNamespace)
	}
	opts := Options()
	opts.Scheme = clientgoscheme.Scheme
	opts.Mapper = mapper
	if _, err := crcache.New(&rest.Config{Host: "http://127.0.0.1:1"}, opts); err != nil {
		t.Fatalf("cache options need more than core kinds: %v", err)
	}
}
