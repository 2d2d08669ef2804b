package cache

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// listRecorder keeps the query of every list request of one resource.
type listRecorder struct {
	next     http.RoundTripper
	resource string
	mu       sync.Mutex
	queries  []string
}

func (l *listRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodGet && strings.HasSuffix(req.URL.Path, "/"+l.resource) && req.URL.Query().Get("watch") != "true" {
		l.mu.Lock()
		l.queries = append(l.queries, req.URL.RawQuery)
		l.mu.Unlock()
	}
	return l.next.RoundTrip(req)
}

// The cache's informers list a kind page by page, each page reduced before the next, instead of
// taking every object in one response from the watch cache: with 1,201 TCPRoutes, the first list
// comes in three pages, and the cache holds all of them without managed fields.
func TestInformersListPageByPage(t *testing.T) {
	env := controlPlane(t)
	ns := freshNamespace(t)
	const n = 1201
	for i := range n {
		tcpRoute := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "TCPRoute",
			"metadata": map[string]any{"name": fmt.Sprintf("r%04d", i), "namespace": ns},
			"spec":     map[string]any{"matches": map[string]any{"ports": []any{int64(8080)}}},
		}}
		if err := env.Client.Create(t.Context(), tcpRoute); err != nil {
			t.Fatal(err)
		}
	}

	rec := &listRecorder{resource: "tcproutes"}
	cfg := rest.CopyConfig(env.Config)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { rec.next = rt; return rec })
	opts := Options()
	opts.Scheme = env.Scheme
	opts.DefaultNamespaces = map[string]crcache.Config{ns: {}}
	c, err := crcache.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = c.Start(ctx) }()
	list := NewSMIList(TCPRoute{}.GVK())
	deadline := time.Now().Add(time.Minute)
	for {
		if err := c.List(ctx, list, client.InNamespace(ns)); err == nil && len(list.Objects()) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cache did not list all %d TCPRoutes within a minute", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, o := range list.Objects() {
		if len(o.GetManagedFields()) != 0 {
			t.Fatalf("TCPRoute %s cached with managed fields", o.GetName())
		}
	}

	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.queries) != 3 {
		t.Fatalf("the initial list took %d requests, want 3 pages of 500: %q", len(rec.queries), rec.queries)
	}
	for i, q := range rec.queries {
		if !strings.Contains(q, "limit=500") || strings.Contains(q, "resourceVersion=0") || (i > 0) != strings.Contains(q, "continue=") {
			t.Errorf("list request %d: %q, want limit=500, no resourceVersion=0, and continue on the later pages", i, q)
		}
	}
}
