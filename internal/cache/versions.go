package cache

import (
	"fmt"
	"sync"
	"sync/atomic"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// SMIVersions are the API versions the SMI kinds are watched (cached, written) in; "" keeps a
// kind's default, the version smi2istio's own CRDs store.
type SMIVersions struct {
	TrafficSplit, HTTPRouteGroup, TCPRoute, UDPRoute, TrafficTarget string
}

// defaultSMI are the SMI kinds in the versions smi2istio's CRDs store, in the order of smiGVK.
var defaultSMI = [5]schema.GroupVersionKind{
	{Group: "split.smi-spec.io", Version: "v1alpha4", Kind: "TrafficSplit"},
	{Group: "specs.smi-spec.io", Version: "v1alpha4", Kind: "HTTPRouteGroup"},
	{Group: "specs.smi-spec.io", Version: "v1alpha4", Kind: "TCPRoute"},
	{Group: "specs.smi-spec.io", Version: "v1alpha4", Kind: "UDPRoute"},
	{Group: "access.smi-spec.io", Version: "v1alpha3", Kind: "TrafficTarget"},
}

// The SMI versions are process-wide: one Go type per kind, and a scheme maps each type to exactly
// one GroupVersionKind. They are chosen once, at start-up, before anything reads the kinds table
// (AddToScheme, New, NewSMI...): from then on they are frozen.
var (
	smiGVKs  atomic.Pointer[[5]schema.GroupVersionKind]
	inUse    map[schema.GroupVersionKind]kindTypes
	freezeMu sync.Mutex
	frozen   bool
)

func smiGVK(i int) schema.GroupVersionKind {
	if p := smiGVKs.Load(); p != nil {
		return p[i]
	}
	return defaultSMI[i]
}

// SMIGVKs are the SMI kinds in the versions in use.
func SMIGVKs() []schema.GroupVersionKind {
	return []schema.GroupVersionKind{smiGVK(0), smiGVK(1), smiGVK(2), smiGVK(3), smiGVK(4)}
}

// SetSMIVersions chooses the versions the SMI kinds are watched in, for the whole process. It must
// be called before the kinds are first used (AddToScheme, New, NewSMI, NewList...) and before
// anything derives values from the kinds' GVK (controllers.UseSMIKinds does it for controllers);
// afterwards it fails unless the versions are those already in use. Tests of the existing packages
// keep the defaults.
func SetSMIVersions(v SMIVersions) error {
	freezeMu.Lock()
	defer freezeMu.Unlock()
	want := defaultSMI
	for i, version := range []string{v.TrafficSplit, v.HTTPRouteGroup, v.TCPRoute, v.UDPRoute, v.TrafficTarget} {
		if version != "" {
			want[i].Version = version
		}
	}
	if frozen {
		if cur := smiGVKs.Load(); (cur == nil && want == defaultSMI) || (cur != nil && *cur == want) {
			return nil
		}
		return fmt.Errorf("the SMI kinds' versions are already in use (%v): set them before the kinds are used", SMIGVKs())
	}
	smiGVKs.Store(&want)
	return nil
}

// kindsInUse is the kinds table with the SMI kinds in the versions chosen; its first use freezes
// them.
func kindsInUse() map[schema.GroupVersionKind]kindTypes {
	freezeMu.Lock()
	defer freezeMu.Unlock()
	if !frozen {
		frozen = true
		inUse = make(map[schema.GroupVersionKind]kindTypes, len(kinds)+5)
		for gvk, k := range kinds {
			inUse[gvk] = k
		}
		inUse[TrafficSplit{}.GVK()] = kindTypes{func() Compact { return &SMI[TrafficSplit]{} }, func() client.ObjectList { return &SMIList[TrafficSplit]{} }}
		inUse[HTTPRouteGroup{}.GVK()] = kindTypes{func() Compact { return &SMI[HTTPRouteGroup]{} }, func() client.ObjectList { return &SMIList[HTTPRouteGroup]{} }}
		inUse[TCPRoute{}.GVK()] = kindTypes{func() Compact { return &SMI[TCPRoute]{} }, func() client.ObjectList { return &SMIList[TCPRoute]{} }}
		inUse[UDPRoute{}.GVK()] = kindTypes{func() Compact { return &SMI[UDPRoute]{} }, func() client.ObjectList { return &SMIList[UDPRoute]{} }}
		inUse[TrafficTarget{}.GVK()] = kindTypes{func() Compact { return &SMI[TrafficTarget]{} }, func() client.ObjectList { return &SMIList[TrafficTarget]{} }}
	}
	return inUse
}
