package envoygen

import (
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	wasmfilter "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tls "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	wasmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/wasm/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/open-autoglm/autoglm/xds/ir"
)

// Names of the clusters the extras add.
const (
	WasmSourceCluster = "autoglm-wasm-source"
	SPIREAgentCluster = "spire-agent"
)

// wasmFilter is the autoglm filter for the HTTP listener's chain.
func wasmFilter(w *ir.Wasm) (*hcm.HttpFilter, error) {
	code := &core.AsyncDataSource{}
	if w.File != "" {
		code.Specifier = &core.AsyncDataSource_Local{Local: &core.DataSource{Specifier: &core.DataSource_Filename{Filename: w.File}}}
	} else {
		code.Specifier = &core.AsyncDataSource_Remote{Remote: &core.RemoteDataSource{
			HttpUri: &core.HttpUri{Uri: w.URL, HttpUpstreamType: &core.HttpUri_Cluster{Cluster: WasmSourceCluster}, Timeout: durationpb.New(30 * time.Second)},
			Sha256:  w.SHA256,
		}}
	}
	cfg, err := anypb.New(wrapperspb.String(w.Config))
	if err != nil {
		return nil, err
	}
	policy := wasmv3.FailurePolicy_FAIL_CLOSED
	if w.FailOpen {
		policy = wasmv3.FailurePolicy_FAIL_OPEN
	}
	// allow_on_headers_stop_iteration (Envoy 1.35+): the filter's pause at
	// the request headers stays a StopIteration, so the body still
	// reaches it while the router waits for the model header. Without it
	// Envoy stops all iteration, withholds the body, and the request
	// stalls (config.MinEnvoyBodyRouting; validate refuses older targets).
	f, err := anypb.New(&wasmfilter.Wasm{Config: &wasmv3.PluginConfig{
		Name: "autoglm", RootId: "autoglm", Configuration: cfg, FailurePolicy: policy,
		Vm:                          &wasmv3.PluginConfig_VmConfig{VmConfig: &wasmv3.VmConfig{VmId: "autoglm", Runtime: "envoy.wasm.runtime.v8", Code: code}},
		AllowOnHeadersStopIteration: wrapperspb.Bool(true),
	}})
	if err != nil {
		return nil, err
	}
	return &hcm.HttpFilter{Name: "envoy.filters.http.wasm", ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: f}}, nil
}

// wasmSource is the cluster Envoy fetches a remote module through.
func wasmSource(w *ir.Wasm) (*cluster.Cluster, error) {
	c := &cluster.Cluster{
		Name: WasmSourceCluster, ConnectTimeout: durationpb.New(5 * time.Second),
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STRICT_DNS},
		LoadAssignment:       &endpoint.ClusterLoadAssignment{ClusterName: WasmSourceCluster, Endpoints: localities([]ir.Endpoint{{Host: w.URLHost, Port: w.URLPort}})},
	}
	if w.URLTLS {
		ts, err := anypb.New(&tls.UpstreamTlsContext{Sni: w.URLHost})
		if err != nil {
			return nil, err
		}
		c.TransportSocket = &core.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: ts}}
	}
	return c, nil
}

// cacheCluster is the filter's remote cache tier (sidecars' /v1/cache),
// with the sidecars' mTLS when there is one; endpoints inline (STATIC) or
// resolved by Envoy (STRICT_DNS).
func cacheCluster(c *ir.Cluster, t *ir.TLS) (*cluster.Cluster, error) {
	out := &cluster.Cluster{
		Name: c.Name, ConnectTimeout: durationpb.New(time.Second),
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC},
		LoadAssignment:       &endpoint.ClusterLoadAssignment{ClusterName: c.Name, Endpoints: localities(c.Endpoints)},
	}
	if c.DNS != "" {
		out.ClusterDiscoveryType = &cluster.Cluster_Type{Type: cluster.Cluster_STRICT_DNS}
		out.LoadAssignment.Endpoints = localities([]ir.Endpoint{{Host: c.DNS, Port: c.DNSPort}})
	}
	if t != nil {
		ts, err := upstreamTLS(t)
		if err != nil {
			return nil, err
		}
		out.TransportSocket = ts
	}
	return out, nil
}

// spireAgent is the SDS server: the SPIRE agent on its unix socket.
func spireAgent(t *ir.TLS) *cluster.Cluster {
	return &cluster.Cluster{
		Name: SPIREAgentCluster, ConnectTimeout: durationpb.New(5 * time.Second),
		ClusterDiscoveryType:          &cluster.Cluster_Type{Type: cluster.Cluster_STATIC},
		TypedExtensionProtocolOptions: map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": http2Options},
		LoadAssignment: &endpoint.ClusterLoadAssignment{ClusterName: SPIREAgentCluster, Endpoints: []*endpoint.LocalityLbEndpoints{{
			LbEndpoints: []*endpoint.LbEndpoint{{HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{
				Address: &core.Address{Address: &core.Address_Pipe{Pipe: &core.Pipe{Path: t.SDSSocket}}}}}}}}}},
	}
}

// upstreamTLS is the transport socket of a sidecar cluster: Envoy's SVID
// and the trust domain's bundle by SDS, the sidecar's SPIFFE ID checked.
func upstreamTLS(t *ir.TLS) (*core.TransportSocket, error) {
	sds := &core.ConfigSource{ResourceApiVersion: core.ApiVersion_V3, ConfigSourceSpecifier: &core.ConfigSource_ApiConfigSource{
		ApiConfigSource: &core.ApiConfigSource{ApiType: core.ApiConfigSource_GRPC, TransportApiVersion: core.ApiVersion_V3,
			GrpcServices: []*core.GrpcService{{TargetSpecifier: &core.GrpcService_EnvoyGrpc_{EnvoyGrpc: &core.GrpcService_EnvoyGrpc{ClusterName: SPIREAgentCluster}}}}}}}
	var sans []*tls.SubjectAltNameMatcher
	ids := t.SidecarIDs
	for _, id := range ids {
		sans = append(sans, &tls.SubjectAltNameMatcher{SanType: tls.SubjectAltNameMatcher_URI,
			Matcher: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: id}}})
	}
	if len(ids) == 0 {
		sans = append(sans, &tls.SubjectAltNameMatcher{SanType: tls.SubjectAltNameMatcher_URI,
			Matcher: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: "spiffe://" + t.TrustDomain + "/"}}})
	}
	ctx, err := anypb.New(&tls.UpstreamTlsContext{CommonTlsContext: &tls.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tls.SdsSecretConfig{{Name: t.SVID, SdsConfig: sds}},
		ValidationContextType: &tls.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tls.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext:         &tls.CertificateValidationContext{MatchTypedSubjectAltNames: sans},
			ValidationContextSdsSecretConfig: &tls.SdsSecretConfig{Name: "spiffe://" + t.TrustDomain, SdsConfig: sds},
		}},
	}})
	if err != nil {
		return nil, err
	}
	return &core.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: ctx}}, nil
}
