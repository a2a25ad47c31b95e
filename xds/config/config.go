// Package config is the first stage of the control plane's config path:
// the autoglm-xds YAML (models, versions, weights, endpoints, policies),
// decoded strictly and validated with field paths. compile turns it into ir.
package config

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/open-autoglm/autoglm/internal/strictyaml"
)

// APIVersion is the only version this package reads.
const APIVersion = "autoglm.io/v1alpha1"

// Config is a whole autoglm-xds configuration.
type Config struct {
	APIVersion string    `yaml:"apiVersion"`
	Listeners  Listeners `yaml:"listeners"`
	// Filter puts the autoglm wasm filter in the HTTP listener's chain.
	Filter *Filter `yaml:"filter"`
	// UpstreamTLS makes Envoy reach the sidecars over mTLS with SPIFFE
	// SVIDs fetched by SDS from the SPIRE agent.
	UpstreamTLS *UpstreamTLS `yaml:"upstream_tls"`
	Defaults    Policy       `yaml:"defaults"`
	Models      []Model      `yaml:"models"`
}

// Filter is the wasm module and its plugin configuration.
type Filter struct {
	Wasm WasmModule `yaml:"wasm"`
	// Config is the plugin's configuration, passed to it as JSON.
	Config map[string]any `yaml:"config"`
	// FailOpen lets requests through when the VM has failed.
	FailOpen bool `yaml:"fail_open"`
	// CacheCluster is the filter's remote cache tier: sidecars serving
	// /v1/cache (backed by Redis), called over upstream_tls's mTLS when
	// that is set. The plugin's cache.remote.cluster must name it.
	CacheCluster *CacheCluster `yaml:"cache_cluster"`
	// EnvoyVersion is the oldest Envoy (major.minor, e.g. "1.36") that
	// will run this configuration; empty: a current one. The routes match
	// the model header that the filter sets from the body (its
	// standalone mode), which needs PluginConfig's
	// allow_on_headers_stop_iteration: an Envoy before
	// MinEnvoyBodyRouting ignores the field and stalls every request.
	EnvoyVersion string `yaml:"envoy_version"`
}

// MinEnvoyBodyRouting is the first Envoy release with the wasm
// PluginConfig field allow_on_headers_stop_iteration.
const MinEnvoyBodyRouting = "1.35"

// CacheCluster is where the filter's cache calls go: static IP endpoints
// or one DNS name.
type CacheCluster struct {
	Name      string   `yaml:"name"`
	Endpoints []string `yaml:"endpoints"`
	DNS       string   `yaml:"dns"`
}

// WasmModule is a local file, or a remote URL with its SHA-256.
type WasmModule struct {
	File   string `yaml:"file"`
	URL    string `yaml:"url"`
	SHA256 string `yaml:"sha256"`
}

// UpstreamTLS is mTLS to the sidecars with SVIDs from the SPIRE agent.
type UpstreamTLS struct {
	// SDSSocket is the SPIRE agent's socket (it serves Envoy's SDS).
	SDSSocket string `yaml:"sds_socket"`
	// SVID is Envoy's own SPIFFE ID (the SDS secret name).
	SVID        string `yaml:"svid"`
	TrustDomain string `yaml:"trust_domain"`
	// SidecarIDs are the SPIFFE IDs accepted from the sidecars; empty
	// means any identity of the trust domain.
	SidecarIDs []string `yaml:"sidecar_ids"`
}

// Listeners are the resources clients attach to.
type Listeners struct {
	// HTTP is an Envoy listener for OpenAI-compatible HTTP traffic; nil
	// means none.
	HTTP *HTTPListener `yaml:"http"`
	// GRPC names api_listeners for proxyless gRPC clients (xds:///NAME).
	GRPC []string `yaml:"grpc"`
}

// HTTPListener is where Envoy accepts HTTP.
type HTTPListener struct {
	Name    string `yaml:"name"`
	Address string `yaml:"address"`
	Port    int    `yaml:"port"`
}

// Policy holds the per-model settings; a model's own override the
// defaults field by field.
type Policy struct {
	// Timeout bounds a request (0: Envoy's default of 15 s does not suit
	// generation, so compile sets 300s).
	Timeout *time.Duration `yaml:"timeout"`
	Retries *Retries       `yaml:"retries"`
	Outlier *Outlier       `yaml:"outlier_detection"`
	Health  *HealthCheck   `yaml:"health_check"`
	Limits  *Limits        `yaml:"circuit_breakers"`
	// LB is least_request, round_robin, weighted_round_robin (client-side,
	// fed by the sidecars' ORCA reports) or ring_hash.
	LB *LB `yaml:"load_balancing"`
}

// Retries says when a request is tried again.
type Retries struct {
	Attempts int `yaml:"attempts"`
	// On lists conditions: reset, connect-failure, 5xx, retriable-4xx,
	// refused-stream, gateway-error, and 429 (off unless listed: a 429
	// from a sidecar means it is full, and retrying adds load).
	On            []string      `yaml:"on"`
	PerTryTimeout time.Duration `yaml:"per_try_timeout"`
	// BudgetPercent caps retries at this share of active requests.
	BudgetPercent float64 `yaml:"budget_percent"`
}

// Outlier ejects endpoints that keep failing.
type Outlier struct {
	// FailurePercentage ejects a replica whose failed share of requests in
	// an interval reaches it (default 50), once it served RequestVolume
	// requests in the interval (default 10): the rule that works for
	// versions of 2–3 replicas, and that proxyless gRPC clients honour.
	FailurePercentage  int           `yaml:"failure_percentage"`
	RequestVolume      int           `yaml:"request_volume"`
	Consecutive5xx     int           `yaml:"consecutive_5xx"`
	Interval           time.Duration `yaml:"interval"`
	BaseEjectionTime   time.Duration `yaml:"base_ejection_time"`
	MaxEjectionPercent int           `yaml:"max_ejection_percent"`
}

// HealthCheck is Envoy's active HTTP health check.
type HealthCheck struct {
	Path               string        `yaml:"path"`
	Interval           time.Duration `yaml:"interval"`
	Timeout            time.Duration `yaml:"timeout"`
	UnhealthyThreshold int           `yaml:"unhealthy_threshold"`
	HealthyThreshold   int           `yaml:"healthy_threshold"`
}

// Limits are the cluster's circuit breakers.
type Limits struct {
	MaxConnections     int `yaml:"max_connections"`
	MaxPendingRequests int `yaml:"max_pending_requests"`
	MaxRequests        int `yaml:"max_requests"`
	MaxRetries         int `yaml:"max_retries"`
}

// LB chooses the load-balancing policy.
type LB struct {
	Policy string `yaml:"policy"`
	// HashHeader is ring_hash's key (e.g. a prompt-prefix key for cache
	// affinity).
	HashHeader string `yaml:"hash_header"`
	// BlackoutPeriod is how long weighted_round_robin ignores a new
	// endpoint's reported weight (default 10 s); WeightUpdatePeriod how
	// often it recomputes the weights (default 1 s).
	BlackoutPeriod     time.Duration `yaml:"blackout_period"`
	WeightUpdatePeriod time.Duration `yaml:"weight_update_period"`
	// SlowStartWindow ramps a new endpoint's share of traffic up over this
	// time (Envoy's slow_start_config, least_request and round_robin; a
	// cold sidecar's first requests are slow). Proxyless gRPC ignores it.
	SlowStartWindow time.Duration `yaml:"slow_start_window"`
}

// Model is one served model name and its versions.
type Model struct {
	Name     string    `yaml:"name"`
	Versions []Version `yaml:"versions"`
	Policy   `yaml:",inline"`
}

// Version is one deployment of a model: a weight in the split and where
// its sidecars are.
type Version struct {
	Name   string `yaml:"name"`
	Weight int    `yaml:"weight"`
	// Endpoints are host:port of the sidecars' HTTP API; DNS is a name
	// (host:port) resolved by Envoy instead. Exactly one is set.
	Endpoints []string `yaml:"endpoints"`
	DNS       string   `yaml:"dns"`
	// Service discovers the endpoints from a Kubernetes Service's
	// EndpointSlices (ready addresses only) when autoglm-xds runs with
	// Kubernetes access.
	Service *ServiceRef `yaml:"service"`
	// GRPCPort is the sidecars' gRPC port, for proxyless gRPC clients
	// (0: this version gets no gRPC cluster).
	GRPCPort int `yaml:"grpc_port"`
	// Faults are injected into this version's share of requests (Envoy's
	// fault filter; proxyless gRPC clients honour the same filter), for
	// drills: a delay, an abort, or both.
	Faults *Faults `yaml:"faults"`
}

// Faults delay or abort a share of requests.
type Faults struct {
	Delay *FaultDelay `yaml:"delay"`
	Abort *FaultAbort `yaml:"abort"`
}

// FaultDelay holds Percent % of requests for Fixed.
type FaultDelay struct {
	Fixed   time.Duration `yaml:"fixed"`
	Percent float64       `yaml:"percent"`
}

// FaultAbort answers Percent % of requests with HTTPStatus (HTTP) or
// GRPCStatus (gRPC; default: 429 → RESOURCE_EXHAUSTED, 500 → INTERNAL, 502,
// 503 and 504 → UNAVAILABLE, others UNKNOWN).
type FaultAbort struct {
	HTTPStatus int     `yaml:"http_status"`
	GRPCStatus *int    `yaml:"grpc_status"`
	Percent    float64 `yaml:"percent"`
}

// ServiceRef names a Kubernetes Service and the port of the sidecars'
// HTTP API on its endpoints.
type ServiceRef struct {
	Namespace string `yaml:"namespace"`
	Name      string `yaml:"name"`
	Port      int    `yaml:"port"`
}

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data)
}

// Parse decodes and validates a configuration.
func Parse(data []byte) (*Config, error) {
	var c Config
	if err := strictyaml.Decode(data, &c); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$`)
	modelRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$`)
	unsafeRE = regexp.MustCompile(`[^a-zA-Z0-9._-]`)
	sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)
	tdRE     = regexp.MustCompile(`^[a-z0-9._-]+$`)
)

// Validate reports every problem, each with its field path.
func (c *Config) Validate() error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	if c.APIVersion != APIVersion {
		bad("apiVersion", "must be %s, got %q", APIVersion, c.APIVersion)
	}
	if h := c.Listeners.HTTP; h != nil {
		if h.Name == "" {
			bad("listeners.http.name", "is required")
		}
		if net.ParseIP(h.Address) == nil {
			bad("listeners.http.address", "must be an IP address, got %q", h.Address)
		}
		if h.Port < 1 || h.Port > 65535 {
			bad("listeners.http.port", "must be 1..65535, got %d", h.Port)
		}
	}
	seen := map[string]bool{}
	for i, g := range c.Listeners.GRPC {
		if !nameRE.MatchString(g) || seen[g] {
			bad(fmt.Sprintf("listeners.grpc[%d]", i), "must be a unique lower-case name, got %q", g)
		}
		seen[g] = true
	}
	if c.Listeners.HTTP == nil && len(c.Listeners.GRPC) == 0 {
		bad("listeners", "at least one of http or grpc is required")
	}
	if f := c.Filter; f != nil {
		if c.Listeners.HTTP == nil {
			bad("filter", "needs listeners.http: proxyless gRPC clients run no wasm filter")
		}
		w := f.Wasm
		switch {
		case (w.File == "") == (w.URL == ""):
			bad("filter.wasm", "exactly one of file and url is required")
		case w.File != "" && !strings.HasPrefix(w.File, "/"):
			bad("filter.wasm.file", "must be an absolute path, got %q", w.File)
		case w.URL != "":
			if u, err := url.Parse(w.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Hostname() == "" {
				bad("filter.wasm.url", "must be an http(s) URL, got %q", w.URL)
			}
			if !sha256RE.MatchString(w.SHA256) {
				bad("filter.wasm.sha256", "must be 64 lower-case hex digits with a url, got %q", w.SHA256)
			}
		}
		if _, err := json.Marshal(f.Config); err != nil {
			bad("filter.config", "cannot be expressed as JSON: %v", err)
		}
		if m, ok := f.Config["mode"]; ok && m != "standalone" {
			bad("filter.config.mode", "must be standalone (or unset) with autoglm-xds: its routes match the model header, which only standalone mode sets before routing; got %v", m)
		}
		if v := f.EnvoyVersion; v != "" {
			if older, err := versionBefore(v, MinEnvoyBodyRouting); err != nil {
				bad("filter.envoy_version", "must be a release such as 1.36, got %q", v)
			} else if older {
				bad("filter.envoy_version", "body-based model routing needs allow_on_headers_stop_iteration, in Envoy %s and later (an older Envoy ignores it and stalls every request); got %s", MinEnvoyBodyRouting, v)
			}
		}
		if cc := f.CacheCluster; cc != nil {
			if !nameRE.MatchString(cc.Name) {
				bad("filter.cache_cluster.name", "must be a lower-case name, got %q", cc.Name)
			}
			if (len(cc.Endpoints) == 0) == (cc.DNS == "") {
				bad("filter.cache_cluster", "exactly one of endpoints and dns is required")
			}
			for i, e := range cc.Endpoints {
				if err := checkHostPort(e, true); err != nil {
					bad(fmt.Sprintf("filter.cache_cluster.endpoints[%d]", i), "%v", err)
				}
			}
			if cc.DNS != "" {
				if err := checkHostPort(cc.DNS, false); err != nil {
					bad("filter.cache_cluster.dns", "%v", err)
				}
			}
			remote, _ := f.Config["cache"].(map[string]any)
			if remote, _ = remote["remote"].(map[string]any); remote != nil && remote["cluster"] != cc.Name {
				bad("filter.config.cache.remote.cluster", "must be %q, the filter.cache_cluster it calls, got %v", cc.Name, remote["cluster"])
			}
		}
	}
	if t := c.UpstreamTLS; t != nil {
		if !strings.HasPrefix(t.SDSSocket, "/") {
			bad("upstream_tls.sds_socket", "must be an absolute path, got %q", t.SDSSocket)
		}
		if !tdRE.MatchString(t.TrustDomain) {
			bad("upstream_tls.trust_domain", "must be a trust domain name (lower-case), got %q", t.TrustDomain)
		}
		if !strings.HasPrefix(t.SVID, "spiffe://"+t.TrustDomain+"/") {
			bad("upstream_tls.svid", "must be a SPIFFE ID in trust domain %s, got %q", t.TrustDomain, t.SVID)
		}
		for i, id := range t.SidecarIDs {
			if !strings.HasPrefix(id, "spiffe://"+t.TrustDomain+"/") {
				bad(fmt.Sprintf("upstream_tls.sidecar_ids[%d]", i), "must be a SPIFFE ID in trust domain %s, got %q", t.TrustDomain, id)
			}
		}
	}
	c.Defaults.validate("defaults", bad)
	if len(c.Models) == 0 {
		bad("models", "at least one model is required")
	}
	models := map[string]int{}
	// Generated cluster names and what they belong to: two must never
	// meet (a-b/c and a/b-c, team/a and team_a, a version v1-grpc beside
	// v1's gRPC cluster), or one version's traffic reaches another's.
	clusters := map[string]string{}
	for _, r := range ReservedClusters {
		clusters[r] = "a cluster autoglm-xds adds"
	}
	if f := c.Filter; f != nil && f.CacheCluster != nil {
		clusters[f.CacheCluster.Name] = "filter.cache_cluster"
	}
	claim := func(name, path string) {
		if other, taken := clusters[name]; taken {
			bad(path, "its generated cluster name %q is also %s's: rename the model or version", name, other)
			return
		}
		clusters[name] = path
	}
	for i, m := range c.Models {
		p := fmt.Sprintf("models[%d]", i)
		if m.Name == "" {
			bad(p+".name", "is required")
		} else if j, dup := models[m.Name]; dup {
			bad(p+".name", "duplicate model %q (also models[%d])", m.Name, j)
		} else if !modelRE.MatchString(m.Name) {
			bad(p+".name", "must be 1-128 characters of A-Z a-z 0-9 . _ : / @ + - starting with a letter or digit, got %q", m.Name)
		}
		models[m.Name] = i
		m.Policy.validate(p, bad)
		if len(m.Versions) == 0 {
			bad(p+".versions", "at least one version is required")
		}
		total := 0
		versions := map[string]bool{}
		for j, v := range m.Versions {
			vp := fmt.Sprintf("%s.versions[%d]", p, j)
			if !nameRE.MatchString(v.Name) {
				bad(vp+".name", "must be a lower-case name (a-z, 0-9, . _ -), got %q", v.Name)
			} else if versions[v.Name] {
				bad(vp+".name", "duplicate version %q", v.Name)
			}
			versions[v.Name] = true
			if v.Weight < 0 || v.Weight > 100 {
				bad(vp+".weight", "must be 0..100, got %d", v.Weight)
			}
			total += v.Weight
			if f := v.Faults; f != nil {
				if f.Delay == nil && f.Abort == nil {
					bad(vp+".faults", "a delay, an abort or both")
				}
				if d := f.Delay; d != nil {
					if d.Fixed <= 0 {
						bad(vp+".faults.delay.fixed", "must be positive")
					}
					if !(d.Percent > 0 && d.Percent <= 100) {
						bad(vp+".faults.delay.percent", "must be in (0, 100], got %v", d.Percent)
					}
				}
				if a := f.Abort; a != nil {
					if a.HTTPStatus < 200 || a.HTTPStatus > 599 {
						bad(vp+".faults.abort.http_status", "must be an HTTP status 200..599, got %d", a.HTTPStatus)
					}
					if g := a.GRPCStatus; g != nil && (*g < 1 || *g > 16) {
						bad(vp+".faults.abort.grpc_status", "must be a gRPC status code 1..16, got %d", *g)
					}
					if !(a.Percent > 0 && a.Percent <= 100) {
						bad(vp+".faults.abort.percent", "must be in (0, 100], got %v", a.Percent)
					}
				}
			}
			sources := 0
			for _, set := range []bool{len(v.Endpoints) > 0, v.DNS != "", v.Service != nil} {
				if set {
					sources++
				}
			}
			switch {
			case sources > 1:
				bad(vp, "endpoints, dns and service exclude each other")
			case sources == 0:
				bad(vp+".endpoints", "endpoints, dns or service is required")
			}
			if sv := v.Service; sv != nil {
				if !nameRE.MatchString(sv.Namespace) || !nameRE.MatchString(sv.Name) {
					bad(vp+".service", "namespace and name must be Kubernetes names, got %q/%q", sv.Namespace, sv.Name)
				}
				if sv.Port < 1 || sv.Port > 65535 {
					bad(vp+".service.port", "must be 1..65535, got %d", sv.Port)
				}
			}
			for k, e := range v.Endpoints {
				if err := checkHostPort(e, true); err != nil {
					bad(fmt.Sprintf("%s.endpoints[%d]", vp, k), "%v", err)
				}
			}
			if v.DNS != "" {
				if err := checkHostPort(v.DNS, false); err != nil {
					bad(vp+".dns", "%v", err)
				}
			}
			if v.GRPCPort < 0 || v.GRPCPort > 65535 {
				bad(vp+".grpc_port", "must be 0..65535, got %d", v.GRPCPort)
			}
			if m.Name != "" && v.Name != "" {
				claim(ClusterName(m.Name, v.Name), vp)
				if v.GRPCPort > 0 {
					claim(ClusterName(m.Name, v.Name)+"-grpc", vp+".grpc_port")
				}
			}
		}
		if len(m.Versions) > 0 && total == 0 {
			bad(p+".versions", "the weights sum to 0: no version would get traffic")
		}
	}
	return errors.Join(errs...)
}

// checkHostPort checks host:port; with ip the host must be an IP address
// (static endpoints are not resolved).
func checkHostPort(s string, ip bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("must be host:port, got %q", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port must be 1..65535, got %q", port)
	}
	if ip && net.ParseIP(host) == nil {
		return fmt.Errorf("must be an IP address and port (use dns for names), got %q", s)
	}
	if !ip && host == "" {
		return fmt.Errorf("host is required, got %q", s)
	}
	return nil
}

func (p *Policy) validate(path string, bad func(string, string, ...any)) {
	if p.Timeout != nil && *p.Timeout < 0 {
		bad(path+".timeout", "must not be negative, got %s", *p.Timeout)
	}
	if r := p.Retries; r != nil {
		if r.Attempts < 0 || r.Attempts > 10 {
			bad(path+".retries.attempts", "must be 0..10, got %d", r.Attempts)
		}
		for i, on := range r.On {
			if !retryOn[on] {
				bad(fmt.Sprintf("%s.retries.on[%d]", path, i), "unknown condition %q (reset, connect-failure, 5xx, gateway-error, retriable-4xx, refused-stream, 429)", on)
			}
		}
		if r.PerTryTimeout < 0 {
			bad(path+".retries.per_try_timeout", "must not be negative")
		}
		if r.BudgetPercent < 0 || r.BudgetPercent > 100 {
			bad(path+".retries.budget_percent", "must be 0..100, got %v", r.BudgetPercent)
		}
	}
	if o := p.Outlier; o != nil {
		if o.Consecutive5xx < 1 {
			bad(path+".outlier_detection.consecutive_5xx", "must be at least 1, got %d", o.Consecutive5xx)
		}
		if o.Interval <= 0 || o.BaseEjectionTime <= 0 {
			bad(path+".outlier_detection", "interval and base_ejection_time must be positive")
		}
		if o.MaxEjectionPercent < 0 || o.MaxEjectionPercent > 100 {
			bad(path+".outlier_detection.max_ejection_percent", "must be 0..100, got %d", o.MaxEjectionPercent)
		}
		if o.FailurePercentage < 0 || o.FailurePercentage > 100 {
			bad(path+".outlier_detection.failure_percentage", "must be 0..100 (0: the default, 50), got %d", o.FailurePercentage)
		}
		if o.RequestVolume < 0 {
			bad(path+".outlier_detection.request_volume", "must not be negative, got %d", o.RequestVolume)
		}
	}
	if h := p.Health; h != nil {
		if h.Path == "" || h.Path[0] != '/' {
			bad(path+".health_check.path", "must start with /, got %q", h.Path)
		}
		if h.Interval <= 0 || h.Timeout <= 0 {
			bad(path+".health_check", "interval and timeout must be positive")
		}
		if h.UnhealthyThreshold < 1 || h.HealthyThreshold < 1 {
			bad(path+".health_check", "thresholds must be at least 1")
		}
	}
	if l := p.Limits; l != nil && (l.MaxConnections < 0 || l.MaxPendingRequests < 0 || l.MaxRequests < 0 || l.MaxRetries < 0) {
		bad(path+".circuit_breakers", "limits must not be negative")
	}
	if lb := p.LB; lb != nil {
		switch lb.Policy {
		case "least_request", "round_robin", "weighted_round_robin":
			if lb.HashHeader != "" {
				bad(path+".load_balancing.hash_header", "only applies to ring_hash")
			}
		case "ring_hash":
			if lb.HashHeader == "" {
				bad(path+".load_balancing.hash_header", "is required for ring_hash")
			}
		default:
			bad(path+".load_balancing.policy", "must be least_request, round_robin, weighted_round_robin or ring_hash, got %q", lb.Policy)
		}
		if (lb.BlackoutPeriod != 0 || lb.WeightUpdatePeriod != 0) && lb.Policy != "weighted_round_robin" {
			bad(path+".load_balancing", "blackout_period and weight_update_period only apply to weighted_round_robin")
		}
		if lb.SlowStartWindow != 0 && lb.Policy != "least_request" && lb.Policy != "round_robin" {
			bad(path+".load_balancing.slow_start_window", "only applies to least_request and round_robin")
		}
		if lb.SlowStartWindow < 0 {
			bad(path+".load_balancing.slow_start_window", "must not be negative")
		}
		if lb.BlackoutPeriod < 0 || lb.WeightUpdatePeriod < 0 || (lb.WeightUpdatePeriod > 0 && lb.WeightUpdatePeriod < 100*time.Millisecond) {
			bad(path+".load_balancing", "blackout_period must not be negative, weight_update_period at least 100ms")
		}
	}
}

var retryOn = map[string]bool{"reset": true, "connect-failure": true, "5xx": true, "gateway-error": true, "retriable-4xx": true, "refused-stream": true, "429": true}

// Resolve checks that every dns: endpoint's host resolves, with lookup
// (net.DefaultResolver's LookupHost in production), and reports the ones
// that do not with their field paths. It does I/O, so it is not part of
// Validate; autoglm-xds runs it before publishing.
func (c *Config) Resolve(ctx context.Context, lookup func(ctx context.Context, host string) ([]string, error)) error {
	var errs []error
	for i, m := range c.Models {
		for j, v := range m.Versions {
			if v.DNS == "" {
				continue
			}
			host, _, _ := net.SplitHostPort(v.DNS)
			if _, err := lookup(ctx, host); err != nil {
				errs = append(errs, fmt.Errorf("models[%d].versions[%d].dns: %s does not resolve: %w", i, j, host, err))
			}
		}
	}
	return errors.Join(errs...)
}

// versionBefore compares release numbers (major.minor[.patch], an
// optional leading v): whether v is older than min.
func versionBefore(v, min string) (bool, error) {
	parse := func(s string) ([2]int, error) {
		var out [2]int
		parts := strings.Split(strings.TrimPrefix(s, "v"), ".")
		if len(parts) < 2 || len(parts) > 3 {
			return out, fmt.Errorf("bad version %q", s)
		}
		for i, p := range parts {
			n, err := strconv.Atoi(p)
			if err != nil || n < 0 {
				return out, fmt.Errorf("bad version %q", s)
			}
			if i < 2 {
				out[i] = n
			}
		}
		return out, nil
	}
	a, err := parse(v)
	if err != nil {
		return false, err
	}
	b, err := parse(min)
	if err != nil {
		return false, err
	}
	return a[0] < b[0] || (a[0] == b[0] && a[1] < b[1]), nil
}

// ClusterName is the Envoy cluster of a model version: the model with
// characters outside [A-Za-z0-9._-] replaced by _, a dash, the version
// ("-grpc" appended for the gRPC port's). It is not injective by itself;
// Validate refuses a configuration in which two names meet.
func ClusterName(model, version string) string {
	return unsafeRE.ReplaceAllString(model, "_") + "-" + version
}

// ReservedClusters are the names of the clusters envoygen adds (its
// tests check that they are the same).
var ReservedClusters = []string{"autoglm-wasm-source", "spire-agent"}
