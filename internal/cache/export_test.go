package cache

// For the external tests (package cache_test), which may import what imports this package.
var (
	VirtualServiceDoc = virtualServiceDoc
	CachedObject      = cachedObject
)
