package controllers

import (
	"k8s.io/apimachinery/pkg/runtime"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"

	"github.com/smi2istio/smi2istio/internal/cache"
)

// CacheOptions is the manager cache the reconcilers are built for (internal/cache: options,
// transforms, paged lists and the compact types the reconcilers read).
func CacheOptions() crcache.Options { return cache.Options() }

// AddToScheme registers the Go types the reconcilers read from the cache with: the compact types
// of the SMI and Istio kinds (objects are written as unstructured, never in these types).
func AddToScheme(s *runtime.Scheme) error { return cache.AddToScheme(s) }
