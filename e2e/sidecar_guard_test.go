//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
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

const typeEndpoint = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

// fetchEndpoints connects as the sidecar of p and returns the endpoints istiod gives one of its
// outbound clusters (EDS), each as "<address>" (a socket address "ip:port") or "<internal
// listener> <target>" (a tunnel: connect_originate and the HBONE target "ip:port"), sorted: where
// the sidecar really sends a request (to a pod, or to a waypoint).
func fetchEndpoints(ctx context.Context, addr string, p Proxy, cluster string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dial istiod: %w", err)
	}
	defer func() { _ = conn.Close() }()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, fmt.Errorf("open ADS stream: %w", err)
	}
	node, err := p.node()
	if err != nil {
		return nil, err
	}
	// as Envoy does: the clusters first, then the endpoints of the EDS clusters
	var out []string
	for _, step := range []struct {
		typeURL string
		names   []string
	}{{typeCluster, nil}, {typeEndpoint, []string{cluster}}} {
		if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: step.typeURL, ResourceNames: step.names}); err != nil {
			return nil, fmt.Errorf("request %s: %w", step.typeURL, err)
		}
		node = nil
		for {
			resp, err := stream.Recv()
			if err != nil {
				return nil, fmt.Errorf("receive %s: %w", step.typeURL, err)
			}
			if resp.TypeUrl != step.typeURL {
				continue
			}
			_ = stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: step.typeURL, ResourceNames: step.names, VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce})
			if step.typeURL == typeEndpoint {
				for _, r := range resp.Resources {
					cla := &endpointv3.ClusterLoadAssignment{}
					if err := r.UnmarshalTo(cla); err != nil {
						return nil, fmt.Errorf("decode endpoints: %w", err)
					}
					if cla.ClusterName != cluster {
						continue
					}
					for _, l := range cla.Endpoints {
						for _, e := range l.LbEndpoints {
							a := e.GetEndpoint().GetAddress()
							switch {
							case a.GetSocketAddress() != nil:
								out = append(out, fmt.Sprintf("%s:%d", a.GetSocketAddress().GetAddress(), a.GetSocketAddress().GetPortValue()))
							case a.GetEnvoyInternalAddress() != nil:
								out = append(out, a.GetEnvoyInternalAddress().GetServerListenerName()+" "+a.GetEnvoyInternalAddress().GetEndpointId())
							default:
								out = append(out, "unknown address "+a.String())
							}
						}
					}
				}
			}
			break
		}
	}
	sort.Strings(out)
	return out, nil
}

// expectEndpoints waits until the sidecar's outbound cluster has exactly the endpoints wanted
// (fetchEndpoints lines), on a settled config.
func (cl *cluster) expectEndpoints(step string, from Proxy, cluster string, want ...string) {
	cl.t.Helper()
	cl.expectLines(step, fmt.Sprintf("endpoints of %s at %s/%s", cluster, from.Namespace, from.Pod), want, func() (observation, error) {
		eps, err := fetchEndpoints(context.Background(), cl.istiodGRPC, from, cluster)
		return observation{lines: eps, config: strings.Join(eps, ",")}, err
	})
}
