// Package envoygen translates the intermediate model into Envoy resources:
// listeners (an HTTP listener for Envoy, api_listeners for proxyless gRPC
// clients), route configurations (a route per model on x-autoglm-model,
// version pins on x-autoglm-version, weighted clusters for the split),
// clusters (one per model version) and endpoints. It is pure: the same ir
// gives the same resources, in the same order.
package envoygen

import (
	"fmt"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	router "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	cswrr "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/client_side_weighted_round_robin/v3"
	previoushosts "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	httpopts "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/open-autoglm/autoglm/xds/ir"
)

// Header names of the routing contract (ARCHITECTURE.md).
const (
	HeaderModel   = "x-autoglm-model"
	HeaderVersion = "x-autoglm-version"
)

// Resources are the generated resources by type, each list in a fixed order.
type Resources struct {
	Listeners []types.Resource
	Routes    []types.Resource
	Clusters  []types.Resource
	Endpoints []types.Resource
}

// RouteName is the route configuration of a listener.
func RouteName(listenerName string) string { return listenerName + "-routes" }

// Generate translates c, which must hold ir's invariants (checked here,
// on every compile).
func Generate(c *ir.Config) (*Resources, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("ir: %w", err)
	}
	r := &Resources{}
	faults := hasFaults(c.Models)
	if c.HTTP != nil {
		l, err := httpListener(c.HTTP, c.Filter, faults)
		if err != nil {
			return nil, err
		}
		r.Listeners = append(r.Listeners, l)
		r.Routes = append(r.Routes, routes(RouteName(c.HTTP.Name), c.Models, false))
	}
	for _, name := range c.GRPC {
		l, err := apiListener(name, faults)
		if err != nil {
			return nil, err
		}
		r.Listeners = append(r.Listeners, l)
		r.Routes = append(r.Routes, routes(RouteName(name), c.Models, true))
	}
	for _, m := range c.Models {
		for _, v := range m.Versions {
			for _, cl := range []*ir.Cluster{&v.HTTP, v.GRPC} {
				if cl == nil || (cl == &v.HTTP && c.HTTP == nil) || (cl == v.GRPC && len(c.GRPC) == 0) {
					continue
				}
				out, err := clusterFor(m, cl, cl == v.GRPC)
				if err != nil {
					return nil, err
				}
				// Proxyless gRPC clients take certificates from their own
				// providers, not SDS: mTLS applies to Envoy's clusters.
				if c.TLS != nil && cl == &v.HTTP {
					if out.TransportSocket, err = upstreamTLS(c.TLS); err != nil {
						return nil, err
					}
				}
				r.Clusters = append(r.Clusters, out)
				if cl.DNS == "" {
					r.Endpoints = append(r.Endpoints, &endpoint.ClusterLoadAssignment{ClusterName: cl.Name, Endpoints: localities(cl.Endpoints)})
				}
			}
		}
	}
	if c.Filter != nil && c.Filter.URL != "" && c.HTTP != nil {
		ws, err := wasmSource(c.Filter)
		if err != nil {
			return nil, err
		}
		r.Clusters = append(r.Clusters, ws)
	}
	if c.Filter != nil && c.Filter.CacheCluster != nil && c.HTTP != nil {
		cc, err := cacheCluster(c.Filter.CacheCluster, c.TLS)
		if err != nil {
			return nil, err
		}
		r.Clusters = append(r.Clusters, cc)
	}
	if c.TLS != nil && c.HTTP != nil {
		r.Clusters = append(r.Clusters, spireAgent(c.TLS))
	}
	return r, nil
}

// Parts shared by many resources are built once; nothing modifies them.
var (
	adsSource = &core.ConfigSource{ResourceApiVersion: core.ApiVersion_V3,
		ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}}}
	// http2Options make Envoy speak HTTP/2 to the sidecars' gRPC port.
	http2Options = mustAny(&httpopts.HttpProtocolOptions{UpstreamProtocolOptions: &httpopts.HttpProtocolOptions_ExplicitHttpConfig_{
		ExplicitHttpConfig: &httpopts.HttpProtocolOptions_ExplicitHttpConfig{ProtocolConfig: &httpopts.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
			Http2ProtocolOptions: &core.Http2ProtocolOptions{}}}}})
	defaultLocality = &core.Locality{Zone: "default"}
	// previousHosts makes Envoy's retries pick another replica than the
	// ones that already failed the request.
	previousHosts = []*route.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.previous_hosts",
		ConfigType: &route.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: mustAny(&previoushosts.PreviousHostsPredicate{})}}}
)

// Retry back-off, for Envoy and for proxyless gRPC (gRFC A44 honours it).
const (
	retryBaseInterval = 100 * time.Millisecond
	retryMaxInterval  = time.Second
)

// grpcRetryOn maps the configured conditions to the gRPC status names that
// proxyless gRPC clients honour (gRFC A44: only status names; Envoy's HTTP
// conditions are ignored): connection failures, resets and 5xx all reach a
// gRPC client as UNAVAILABLE, a sidecar shedding load answers
// RESOURCE_EXHAUSTED (its 429). CANCELLED is never retried.
func grpcRetryOn(r *ir.Retry) string {
	on := ""
	for _, c := range r.On {
		switch c {
		case "reset", "connect-failure", "refused-stream", "5xx", "gateway-error":
			on = "unavailable"
		}
	}
	if r.On429 {
		if on != "" {
			on += ","
		}
		on += "resource-exhausted"
	}
	return on
}

// wrrPolicy is client-side weighted round robin, weighted by the
// sidecars' ORCA reports (Envoy: the endpoint-load-metrics header; gRPC:
// the endpoint-load-metrics-bin trailer).
func wrrPolicy(lb ir.LB) *cluster.LoadBalancingPolicy {
	c := &cswrr.ClientSideWeightedRoundRobin{}
	if lb.BlackoutPeriod > 0 {
		c.BlackoutPeriod = durationpb.New(lb.BlackoutPeriod)
	}
	if lb.WeightUpdatePeriod > 0 {
		c.WeightUpdatePeriod = durationpb.New(lb.WeightUpdatePeriod)
	}
	return &cluster.LoadBalancingPolicy{Policies: []*cluster.LoadBalancingPolicy_Policy{{
		TypedExtensionConfig: &core.TypedExtensionConfig{Name: "envoy.load_balancing_policies.client_side_weighted_round_robin",
			TypedConfig: mustAny(c)}}}}
}

// faultFilterName is Envoy's fault injection filter, which grpc-go's xDS
// client implements too (gRFC A33).
const faultFilterName = "envoy.filters.http.fault"

// faultFilter injects nothing by itself; routes and weighted clusters of
// versions with faults carry their HTTPFault as per-filter config.
var faultFilter = &hcm.HttpFilter{Name: faultFilterName, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(&faultv3.HTTPFault{})}}

func hasFaults(models []ir.Model) bool {
	for _, m := range models {
		for _, v := range m.Versions {
			if v.Fault != nil {
				return true
			}
		}
	}
	return false
}

// faultConfig is a version's fault as per-filter config (nil: none); gRPC
// routes abort with the gRPC status, HTTP routes with the HTTP one.
func faultConfig(f *ir.Fault, grpc bool) map[string]*anypb.Any {
	if f == nil {
		return nil
	}
	pct := func(p float64) *typev3.FractionalPercent {
		return &typev3.FractionalPercent{Numerator: uint32(p * 10000), Denominator: typev3.FractionalPercent_MILLION}
	}
	h := &faultv3.HTTPFault{}
	if f.DelayPercent > 0 {
		h.Delay = &faultcommon.FaultDelay{FaultDelaySecifier: &faultcommon.FaultDelay_FixedDelay{FixedDelay: durationpb.New(f.Delay)}, Percentage: pct(f.DelayPercent)}
	}
	if f.AbortPercent > 0 {
		a := &faultv3.FaultAbort{Percentage: pct(f.AbortPercent)}
		if grpc {
			a.ErrorType = &faultv3.FaultAbort_GrpcStatus{GrpcStatus: f.GRPCStatus}
		} else {
			a.ErrorType = &faultv3.FaultAbort_HttpStatus{HttpStatus: f.HTTPStatus}
		}
		h.Abort = a
	}
	return map[string]*anypb.Any{faultFilterName: mustAny(h)}
}

// slowStart ramps a new endpoint's weight up linearly over w (Envoy's
// slow_start_config, aggression 1).
func slowStart(w time.Duration) *cluster.Cluster_SlowStartConfig {
	return &cluster.Cluster_SlowStartConfig{SlowStartWindow: durationpb.New(w)}
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err) // a fixed message of a linked-in type: cannot fail
	}
	return a
}

func ads() *core.ConfigSource { return adsSource }

func manager(statPrefix, routeName string, before ...*hcm.HttpFilter) (*anypb.Any, error) {
	rt, err := anypb.New(&router.Router{})
	if err != nil {
		return nil, err
	}
	filters := append(before, &hcm.HttpFilter{Name: "envoy.filters.http.router", ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: rt}})
	return anypb.New(&hcm.HttpConnectionManager{
		StatPrefix: statPrefix,
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{
			ConfigSource: ads(), RouteConfigName: routeName,
		}},
		HttpFilters: filters,
		// Generation streams for minutes: no idle cut while tokens flow.
		StreamIdleTimeout: durationpb.New(10 * time.Minute),
	})
}

func httpListener(h *ir.Listener, w *ir.Wasm, faults bool) (*listener.Listener, error) {
	var before []*hcm.HttpFilter
	if w != nil {
		f, err := wasmFilter(w)
		if err != nil {
			return nil, err
		}
		before = append(before, f)
	}
	if faults {
		before = append(before, faultFilter)
	}
	m, err := manager(h.Name, RouteName(h.Name), before...)
	if err != nil {
		return nil, err
	}
	return &listener.Listener{
		Name: h.Name,
		Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
			Address: h.Address, PortSpecifier: &core.SocketAddress_PortValue{PortValue: h.Port}}}},
		FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &listener.Filter_TypedConfig{TypedConfig: m}}}}},
	}, nil
}

// apiListener is what a proxyless gRPC client resolves for xds:///name.
func apiListener(name string, faults bool) (*listener.Listener, error) {
	var before []*hcm.HttpFilter
	if faults {
		before = append(before, faultFilter)
	}
	m, err := manager(name, RouteName(name), before...)
	if err != nil {
		return nil, err
	}
	return &listener.Listener{Name: name, ApiListener: &listener.ApiListener{ApiListener: m}}, nil
}

func exact(name, value string) *route.HeaderMatcher {
	return &route.HeaderMatcher{Name: name, HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{
		StringMatch: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: value}}}}
}

// routes: per model, first one route per version for requests pinned by
// x-autoglm-version, then the weighted split.
func routes(name string, models []ir.Model, grpc bool) *route.RouteConfiguration {
	vh := &route.VirtualHost{Name: name, Domains: []string{"*"}}
	for _, m := range models {
		clusterOf := func(v ir.Version) string {
			if grpc {
				if v.GRPC == nil {
					return ""
				}
				return v.GRPC.Name
			}
			return v.HTTP.Name
		}
		var weighted []*route.WeightedCluster_ClusterWeight
		for _, v := range m.Versions {
			cl := clusterOf(v)
			if cl == "" {
				continue
			}
			vh.Routes = append(vh.Routes, &route.Route{
				Name:                 m.Name + "/" + v.Name,
				Match:                &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}, Headers: []*route.HeaderMatcher{exact(HeaderModel, m.Name), exact(HeaderVersion, v.Name)}},
				Action:               &route.Route_Route{Route: action(m, &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: cl}}, grpc)},
				TypedPerFilterConfig: faultConfig(v.Fault, grpc),
			})
			if v.Weight > 0 {
				weighted = append(weighted, &route.WeightedCluster_ClusterWeight{Name: cl, Weight: wrapperspb.UInt32(v.Weight),
					TypedPerFilterConfig: faultConfig(v.Fault, grpc)})
			}
		}
		if len(weighted) == 0 {
			continue
		}
		vh.Routes = append(vh.Routes, &route.Route{
			Name:  m.Name,
			Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}, Headers: []*route.HeaderMatcher{exact(HeaderModel, m.Name)}},
			Action: &route.Route_Route{Route: action(m, &route.RouteAction{ClusterSpecifier: &route.RouteAction_WeightedClusters{
				WeightedClusters: &route.WeightedCluster{Clusters: weighted}}}, grpc)},
		})
	}
	if !grpc {
		// Requests without a known model get OpenAI's 404 from Envoy.
		vh.Routes = append(vh.Routes, &route.Route{
			Name:  "unknown-model",
			Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
			Action: &route.Route_DirectResponse{DirectResponse: &route.DirectResponseAction{Status: 404, Body: &core.DataSource{
				Specifier: &core.DataSource_InlineString{InlineString: `{"error":{"message":"No route for this model: set the model in the request (the autoglm filter copies it to x-autoglm-model).","type":"invalid_request_error","param":"model","code":"model_not_found"}}`}}}},
			ResponseHeadersToAdd: []*core.HeaderValueOption{{Header: &core.HeaderValue{Key: "content-type", Value: "application/json"},
				AppendAction: core.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}},
		})
	}
	return &route.RouteConfiguration{Name: name, VirtualHosts: []*route.VirtualHost{vh}}
}

func action(m ir.Model, a *route.RouteAction, grpc bool) *route.RouteAction {
	a.Timeout = durationpb.New(m.Timeout)
	if r := m.Retry; r != nil {
		p := &route.RetryPolicy{NumRetries: wrapperspb.UInt32(r.Attempts),
			RetryBackOff: &route.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(retryBaseInterval), MaxInterval: durationpb.New(retryMaxInterval)}}
		if grpc {
			p.RetryOn = grpcRetryOn(r)
		} else {
			on := ""
			for i, c := range r.On {
				if i > 0 {
					on += ","
				}
				on += c
			}
			if r.On429 {
				if on != "" {
					on += ","
				}
				on += "retriable-status-codes"
				p.RetriableStatusCodes = []uint32{429}
			}
			p.RetryOn = on
			p.RetryHostPredicate = previousHosts
			p.HostSelectionRetryMaxAttempts = 3
		}
		if r.PerTryTimeout > 0 {
			p.PerTryTimeout = durationpb.New(r.PerTryTimeout)
		}
		if p.RetryOn != "" {
			a.RetryPolicy = p
		}
	}
	if m.LB.Policy == ir.RingHash {
		a.HashPolicy = []*route.RouteAction_HashPolicy{{PolicySpecifier: &route.RouteAction_HashPolicy_Header_{
			Header: &route.RouteAction_HashPolicy_Header{HeaderName: m.LB.HashHeader}}}}
	}
	return a
}

func clusterFor(m ir.Model, c *ir.Cluster, grpc bool) (*cluster.Cluster, error) {
	out := &cluster.Cluster{Name: c.Name, ConnectTimeout: durationpb.New(5 * time.Second)}
	if c.DNS != "" {
		out.ClusterDiscoveryType = &cluster.Cluster_Type{Type: cluster.Cluster_STRICT_DNS}
		out.LoadAssignment = &endpoint.ClusterLoadAssignment{ClusterName: c.Name, Endpoints: localities([]ir.Endpoint{{Host: c.DNS, Port: c.DNSPort}})}
	} else {
		out.ClusterDiscoveryType = &cluster.Cluster_Type{Type: cluster.Cluster_EDS}
		out.EdsClusterConfig = &cluster.Cluster_EdsClusterConfig{EdsConfig: ads()}
	}
	switch m.LB.Policy {
	case ir.RingHash:
		out.LbPolicy = cluster.Cluster_RING_HASH
	case ir.RoundRobin:
		out.LbPolicy = cluster.Cluster_ROUND_ROBIN
		if w := m.LB.SlowStartWindow; w > 0 {
			out.LbConfig = &cluster.Cluster_RoundRobinLbConfig_{RoundRobinLbConfig: &cluster.Cluster_RoundRobinLbConfig{SlowStartConfig: slowStart(w)}}
		}
	case ir.WeightedRoundRobin:
		// Weights from the sidecars' ORCA reports (endpoint-load-metrics).
		out.LoadBalancingPolicy = wrrPolicy(m.LB)
	default:
		out.LbPolicy = cluster.Cluster_LEAST_REQUEST
		if w := m.LB.SlowStartWindow; w > 0 {
			out.LbConfig = &cluster.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &cluster.Cluster_LeastRequestLbConfig{SlowStartConfig: slowStart(w)}}
		}
	}
	if o := m.Outlier; o != nil {
		// Failure-percentage ejection works for versions of 2–3 replicas
		// and is what proxyless gRPC honours (gRFC A50 ignores
		// consecutive_5xx); success-rate ejection, which needs 5 hosts and
		// 100 requests each, is off.
		out.OutlierDetection = &cluster.OutlierDetection{
			Consecutive_5Xx: wrapperspb.UInt32(o.Consecutive5xx), Interval: durationpb.New(o.Interval),
			BaseEjectionTime: durationpb.New(o.BaseEjectionTime), MaxEjectionPercent: wrapperspb.UInt32(o.MaxEjectionPercent),
			FailurePercentageThreshold: wrapperspb.UInt32(o.FailurePercentage), EnforcingFailurePercentage: wrapperspb.UInt32(100),
			FailurePercentageMinimumHosts: wrapperspb.UInt32(2), FailurePercentageRequestVolume: wrapperspb.UInt32(o.RequestVolume),
			EnforcingSuccessRate: wrapperspb.UInt32(0),
		}
	}
	if h := m.Health; h != nil && !grpc {
		out.HealthChecks = []*core.HealthCheck{{
			Timeout: durationpb.New(h.Timeout), Interval: durationpb.New(h.Interval),
			UnhealthyThreshold: wrapperspb.UInt32(h.UnhealthyThreshold), HealthyThreshold: wrapperspb.UInt32(h.HealthyThreshold),
			HealthChecker: &core.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &core.HealthCheck_HttpHealthCheck{Path: h.Path}},
		}}
	}
	if l := m.Limits; l != nil || (m.Retry != nil && m.Retry.BudgetPercent > 0) {
		t := &cluster.CircuitBreakers_Thresholds{}
		if l != nil {
			t.MaxConnections, t.MaxPendingRequests = wrapperspb.UInt32(l.MaxConnections), wrapperspb.UInt32(l.MaxPendingRequests)
			t.MaxRequests, t.MaxRetries = wrapperspb.UInt32(l.MaxRequests), wrapperspb.UInt32(l.MaxRetries)
		}
		if m.Retry != nil && m.Retry.BudgetPercent > 0 {
			t.RetryBudget = &cluster.CircuitBreakers_Thresholds_RetryBudget{BudgetPercent: &typev3.Percent{Value: m.Retry.BudgetPercent}}
		}
		out.CircuitBreakers = &cluster.CircuitBreakers{Thresholds: []*cluster.CircuitBreakers_Thresholds{t}}
	}
	if grpc {
		out.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": http2Options}
	}
	return out, nil
}

// localities puts the endpoints in one locality; proxyless gRPC clients
// reject a locality without an identity or a weight.
func localities(eps []ir.Endpoint) []*endpoint.LocalityLbEndpoints {
	l := &endpoint.LocalityLbEndpoints{Locality: defaultLocality, LoadBalancingWeight: wrapperspb.UInt32(1),
		LbEndpoints: make([]*endpoint.LbEndpoint, 0, len(eps))}
	for _, e := range eps {
		l.LbEndpoints = append(l.LbEndpoints, &endpoint.LbEndpoint{HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{
			Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
				Address: e.Host, PortSpecifier: &core.SocketAddress_PortValue{PortValue: e.Port}}}}}}})
	}
	return []*endpoint.LocalityLbEndpoints{l}
}

// Validate runs every resource's generated validation (protoc-gen-validate
// rules from Envoy's API), naming the resource that fails.
func (r *Resources) Validate() error {
	for _, list := range [][]types.Resource{r.Listeners, r.Routes, r.Clusters, r.Endpoints} {
		for _, res := range list {
			if err := ValidateResource(res); err != nil {
				return err
			}
		}
	}
	return nil
}

// ValidateResource validates one resource, naming it in the error.
func ValidateResource(res types.Resource) error {
	v, ok := res.(interface{ ValidateAll() error })
	if !ok {
		return nil
	}
	if err := v.ValidateAll(); err != nil {
		return fmt.Errorf("%T %s: %w", res, name(res), err)
	}
	return nil
}

func name(m proto.Message) string {
	switch v := m.(type) {
	case *listener.Listener:
		return v.Name
	case *route.RouteConfiguration:
		return v.Name
	case *cluster.Cluster:
		return v.Name
	case *endpoint.ClusterLoadAssignment:
		return v.ClusterName
	}
	return ""
}
