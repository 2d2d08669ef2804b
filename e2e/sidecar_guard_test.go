//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// SidecarGuard is a long-lived sidecar of one pod: one ADS stream (CDS and LDS, as Envoy
// subscribes) on which every config istiod pushes is judged for requests that must never get
// through. It models a pod whose sidecar keeps running while its namespace changes data plane
// (a pod keeps its sidecar until it restarts): whatever istiod sends it is enforced.
type SidecarGuard struct {
	cancel     context.CancelFunc
	done       chan struct{}
	mu         sync.Mutex
	configs    int
	violations []string
	err        error
}

// guardSidecar judges the requests (to dest.IP when r.To is empty) on every config from the first
// one holding both clusters and listeners: a request that gets through on any connection shape
// (Sweep) is a violation, and so is a config the evaluator cannot judge (Inbound names RDS routes
// it did not fetch, or uses what it does not model).
func (cl *cluster) guardSidecar(dest Proxy, reqs ...Request) *SidecarGuard {
	cl.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	g := &SidecarGuard{cancel: cancel, done: make(chan struct{})}
	node, err := dest.node()
	must(cl.t, err)
	conn, err := grpc.NewClient(cl.istiodGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(cl.t, err)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		_ = conn.Close()
		cancel()
		cl.t.Fatal(err)
	}
	fail := func(err error) {
		if ctx.Err() == nil {
			g.mu.Lock()
			g.err = err
			g.mu.Unlock()
		}
	}
	go func() {
		defer close(g.done)
		defer func() { _ = conn.Close() }()
		for _, t := range []string{typeCluster, typeListener} {
			if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: t}); err != nil {
				fail(err)
				return
			}
			node = nil
		}
		var clusters map[string]*clusterv3.Cluster
		var listeners map[string]*listenerv3.Listener
		for {
			resp, err := stream.Recv()
			if err != nil {
				fail(err)
				return
			}
			var bad error
			switch resp.TypeUrl {
			case typeCluster:
				cs := map[string]*clusterv3.Cluster{}
				for _, r := range resp.Resources {
					c := &clusterv3.Cluster{}
					if bad = r.UnmarshalTo(c); bad != nil {
						break
					}
					cs[c.Name] = c
				}
				if bad == nil {
					clusters = cs
				}
			case typeListener:
				ls := map[string]*listenerv3.Listener{}
				for _, r := range resp.Resources {
					l := &listenerv3.Listener{}
					if bad = r.UnmarshalTo(l); bad == nil {
						bad = checkFilters(l)
					}
					if bad != nil {
						break
					}
					ls[l.Name] = l
				}
				if bad == nil {
					listeners = ls
				}
			}
			ack := &discoveryv3.DiscoveryRequest{TypeUrl: resp.TypeUrl, VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce}
			if bad != nil {
				ack.VersionInfo, ack.ErrorDetail = "", statusProto(bad.Error())
			}
			if err := stream.Send(ack); err != nil {
				fail(err)
				return
			}
			if bad != nil {
				fail(bad)
				return
			}
			if clusters == nil || listeners == nil {
				continue
			}
			g.judge(&ProxyConfig{Listeners: listeners, Clusters: clusters, Routes: map[string]*routev3.RouteConfiguration{}}, dest, reqs)
		}
	}()
	cl.t.Cleanup(func() { _ = g.Stop() })
	return g
}

func (g *SidecarGuard) judge(cfg *ProxyConfig, dest Proxy, reqs []Request) {
	var bad []string
	in, err := cfg.Inbound()
	if err != nil {
		bad = append(bad, fmt.Sprintf("config %s: %v", cfg.Fingerprint(), err))
	}
	for _, r := range reqs {
		if in == nil {
			break
		}
		if r.To == "" {
			r.To = dest.IP
		}
		out, err := in.Sweep(r)
		if err != nil {
			bad = append(bad, fmt.Sprintf("config %s: %v", cfg.Fingerprint(), err))
			continue
		}
		for _, o := range out {
			if o.Allowed {
				bad = append(bad, fmt.Sprintf("config %s: ALLOW %s (%s)", cfg.Fingerprint(), r, o))
				break
			}
		}
	}
	g.mu.Lock()
	g.configs++
	g.violations = append(g.violations, bad...)
	g.mu.Unlock()
}

// Configs counts the configs judged.
func (g *SidecarGuard) Configs() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.configs
}

// Stop ends the guard and returns its violations (a failed stream included).
func (g *SidecarGuard) Stop() []string {
	g.cancel()
	<-g.done
	g.mu.Lock()
	defer g.mu.Unlock()
	out := append([]string(nil), g.violations...)
	if g.err != nil {
		out = append(out, "the sidecar stream failed: "+g.err.Error())
	}
	return out
}
