// Package bootstrap writes the Envoy bootstrap that points a proxy at
// autoglm-xds: its node identity, an admin endpoint and dynamic resources
// over ADS.
package bootstrap

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpopts "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"gopkg.in/yaml.v3"
)

// Options say which node this is and where the control plane is.
type Options struct {
	Node, Cluster string
	ADS           string // host:port
	AdminPort     int    // 0: no admin interface
}

const xdsCluster = "autoglm-xds"

// Build returns the bootstrap, validated.
func Build(o Options) (*bootstrapv3.Bootstrap, error) {
	host, p, err := net.SplitHostPort(o.ADS)
	port, perr := strconv.Atoi(p)
	if err != nil || perr != nil || host == "" || port < 1 || port > 65535 {
		return nil, fmt.Errorf("ads: must be host:port, got %q", o.ADS)
	}
	if o.Node == "" || o.Cluster == "" {
		return nil, fmt.Errorf("node and cluster are required")
	}
	h2, err := anypb.New(&httpopts.HttpProtocolOptions{UpstreamProtocolOptions: &httpopts.HttpProtocolOptions_ExplicitHttpConfig_{
		ExplicitHttpConfig: &httpopts.HttpProtocolOptions_ExplicitHttpConfig{ProtocolConfig: &httpopts.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
			Http2ProtocolOptions: &core.Http2ProtocolOptions{}}}}})
	if err != nil {
		return nil, err
	}
	kind := cluster.Cluster_STATIC
	if net.ParseIP(host) == nil {
		kind = cluster.Cluster_STRICT_DNS
	}
	ads := &core.ConfigSource{ResourceApiVersion: core.ApiVersion_V3, ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}}}
	b := &bootstrapv3.Bootstrap{
		Node: &core.Node{Id: o.Node, Cluster: o.Cluster},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &core.ApiConfigSource{
				ApiType: core.ApiConfigSource_GRPC, TransportApiVersion: core.ApiVersion_V3, SetNodeOnFirstMessageOnly: true,
				GrpcServices: []*core.GrpcService{{TargetSpecifier: &core.GrpcService_EnvoyGrpc_{EnvoyGrpc: &core.GrpcService_EnvoyGrpc{ClusterName: xdsCluster}}}},
			},
			LdsConfig: ads, CdsConfig: ads,
		},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{Clusters: []*cluster.Cluster{{
			Name: xdsCluster, ConnectTimeout: durationpb.New(5 * time.Second),
			ClusterDiscoveryType:          &cluster.Cluster_Type{Type: kind},
			TypedExtensionProtocolOptions: map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": h2},
			LoadAssignment: &endpoint.ClusterLoadAssignment{ClusterName: xdsCluster, Endpoints: []*endpoint.LocalityLbEndpoints{{
				LbEndpoints: []*endpoint.LbEndpoint{{HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{
					Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
						Address: host, PortSpecifier: &core.SocketAddress_PortValue{PortValue: uint32(port)}}}}}}}}}}},
		}}},
	}
	if o.AdminPort > 0 {
		b.Admin = &bootstrapv3.Admin{Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &core.SocketAddress_PortValue{PortValue: uint32(o.AdminPort)}}}}}
	}
	if err := b.ValidateAll(); err != nil {
		return nil, err
	}
	return b, nil
}

// YAML renders the bootstrap for envoy -c.
func YAML(o Options) ([]byte, error) {
	b, err := Build(o)
	if err != nil {
		return nil, err
	}
	j, err := protojson.Marshal(b)
	if err != nil {
		return nil, err
	}
	var v any
	if err := json.Unmarshal(j, &v); err != nil {
		return nil, err
	}
	return yaml.Marshal(v)
}
