//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

const (
	typeListener = "type.googleapis.com/envoy.config.listener.v3.Listener"
	typeRoute    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	typeCluster  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"

	// the Istio version the sidecar claims (the pinned istio.io/istio module is 1.31)
	proxyIstioVersion = "1.31.0"
)

// ProxyConfig is what istiod sent one sidecar, as go-control-plane objects.
type ProxyConfig struct {
	Listeners map[string]*listenerv3.Listener
	Routes    map[string]*routev3.RouteConfiguration
	Clusters  map[string]*clusterv3.Cluster
}

// node is the identity a sidecar presents to istiod (what istio-agent sends).
func (p Proxy) node() (*corev3.Node, error) {
	lbls := map[string]any{}
	for k, v := range p.Labels {
		lbls[k] = v
	}
	md, err := structpb.NewStruct(map[string]any{
		"NAMESPACE":         p.Namespace,
		"SERVICE_ACCOUNT":   p.ServiceAccount,
		"LABELS":            lbls,
		"CLUSTER_ID":        "Kubernetes",
		"ISTIO_VERSION":     proxyIstioVersion,
		"INSTANCE_IPS":      p.IP,
		"NAME":              p.Pod,
		"WORKLOAD_NAME":     strings.TrimSuffix(p.Pod, "-e2e"),
		"INTERCEPTION_MODE": "REDIRECT",
		"MESH_ID":           "cluster.local",
	})
	if err != nil {
		return nil, err
	}
	return &corev3.Node{
		Id:       fmt.Sprintf("sidecar~%s~%s.%s~%s.svc.cluster.local", p.IP, p.Pod, p.Namespace, p.Namespace),
		Cluster:  strings.TrimSuffix(p.Pod, "-e2e") + "." + p.Namespace,
		Metadata: md,
	}, nil
}

// fetch connects to istiod over ADS as the sidecar of p and returns its clusters, listeners and
// the routes the listeners name. A resource that does not decode is NACKed (istiod counts it in
// pilot_total_xds_rejects) and returned as an error.
func fetch(ctx context.Context, addr string, p Proxy) (*ProxyConfig, error) {
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
	cfg := &ProxyConfig{Listeners: map[string]*listenerv3.Listener{}, Routes: map[string]*routev3.RouteConfiguration{}, Clusters: map[string]*clusterv3.Cluster{}}

	get := func(typeURL string, names []string, decode func(*anypb.Any) error) error {
		if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typeURL, ResourceNames: names}); err != nil {
			return fmt.Errorf("request %s: %w", typeURL, err)
		}
		node = nil // only the first request of a stream carries the node
		for {
			resp, err := stream.Recv()
			if err != nil {
				return fmt.Errorf("receive %s: %w", typeURL, err)
			}
			if resp.TypeUrl != typeURL {
				continue
			}
			var bad error
			for _, r := range resp.Resources {
				if err := decode(r); err != nil {
					bad = err
					break
				}
			}
			ack := &discoveryv3.DiscoveryRequest{TypeUrl: typeURL, ResourceNames: names, VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce}
			if bad != nil {
				ack.VersionInfo = ""
				ack.ErrorDetail = statusProto(bad.Error())
			}
			_ = stream.Send(ack)
			return bad
		}
	}
	if err := get(typeCluster, nil, func(a *anypb.Any) error {
		c := &clusterv3.Cluster{}
		if err := a.UnmarshalTo(c); err != nil {
			return fmt.Errorf("decode cluster: %w", err)
		}
		cfg.Clusters[c.Name] = c
		return nil
	}); err != nil {
		return nil, err
	}
	if err := get(typeListener, nil, func(a *anypb.Any) error {
		l := &listenerv3.Listener{}
		if err := a.UnmarshalTo(l); err != nil {
			return fmt.Errorf("decode listener: %w", err)
		}
		if err := checkFilters(l); err != nil {
			return fmt.Errorf("listener %s: %w", l.Name, err)
		}
		cfg.Listeners[l.Name] = l
		return nil
	}); err != nil {
		return nil, err
	}
	var names []string
	for _, l := range cfg.Listeners {
		for _, fc := range l.FilterChains {
			if h := hcmOf(fc); h != nil && h.GetRds() != nil {
				names = append(names, h.GetRds().RouteConfigName)
			}
		}
	}
	names = uniq(names)
	if len(names) == 0 {
		return cfg, nil
	}
	if err := get(typeRoute, names, func(a *anypb.Any) error {
		r := &routev3.RouteConfiguration{}
		if err := a.UnmarshalTo(r); err != nil {
			return fmt.Errorf("decode route configuration: %w", err)
		}
		cfg.Routes[r.Name] = r
		return nil
	}); err != nil {
		return nil, err
	}
	return cfg, nil
}

// checkFilters decodes the RBAC and HTTP connection manager filters of a listener (what Envoy
// would reject if malformed).
func checkFilters(l *listenerv3.Listener) error {
	for _, fc := range l.FilterChains {
		for _, f := range fc.Filters {
			if _, err := decodeTyped(f.GetTypedConfig()); err != nil {
				return fmt.Errorf("filter %s: %w", f.Name, err)
			}
		}
		if h := hcmOf(fc); h != nil {
			for _, f := range h.HttpFilters {
				if _, err := decodeTyped(f.GetTypedConfig()); err != nil {
					return fmt.Errorf("http filter %s: %w", f.Name, err)
				}
			}
		}
	}
	return nil
}

// decodeTyped decodes the typed configs the suite reads; others are left alone (nil, nil).
func decodeTyped(a *anypb.Any) (proto.Message, error) {
	var m proto.Message
	switch a.GetTypeUrl() {
	case "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager":
		m = &hcmv3.HttpConnectionManager{}
	case "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC":
		m = &rbachttpv3.RBAC{}
	case "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC":
		m = &rbacnetv3.RBAC{}
	default:
		return nil, nil
	}
	if err := a.UnmarshalTo(m); err != nil {
		return nil, err
	}
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func hcmOf(fc *listenerv3.FilterChain) *hcmv3.HttpConnectionManager {
	for _, f := range fc.Filters {
		if m, _ := decodeTyped(f.GetTypedConfig()); m != nil {
			if h, ok := m.(*hcmv3.HttpConnectionManager); ok {
				return h
			}
		}
	}
	return nil
}

func uniq(s []string) []string {
	sort.Strings(s)
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}
