// Package config is the filter's plugin configuration: JSON (Istio's
// WasmPlugin pluginConfig, or Envoy's plugin configuration value), decoded
// strictly, validated at plugin start; every error names its field path.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// The modes the filter runs in: what the host lets it do with a request's
// headers while it reads the body.
const (
	// ModeIstio continues at the request headers (setting the tenant) and
	// holds only the body: it works in every Envoy, Istio's WasmPlugin
	// included, which cannot set allow_on_headers_stop_iteration. The
	// model header is not set — routing is by host (one Service per
	// model) — and throttle and cache answer from the body callback.
	ModeIstio = "istio"
	// ModeStandalone holds the request headers until the body is read,
	// then sets x-autoglm-model for body-based routing (autoglm-xds's
	// routes). It needs Envoy's PluginConfig
	// allow_on_headers_stop_iteration: true (Envoy 1.35 and later):
	// without it Envoy turns the pause into StopAllIterationAndWatermark
	// and withholds the body, and every request stalls.
	ModeStandalone = "standalone"
)

// Config is the plugin configuration.
type Config struct {
	// Mode is ModeIstio (default) or ModeStandalone.
	Mode string
	// Paths are the request paths whose JSON bodies the filter reads
	// (default: /v1/chat/completions and /v1/completions).
	Paths []string
	// MaxBodyBytes is the largest body buffered (default 1 MiB); larger
	// bodies are answered 413, or passed through unread with PassLargeBodies.
	MaxBodyBytes    int
	PassLargeBodies bool
	// PassBadBodies passes bodies that are not OpenAI JSON (not JSON, no
	// model) to the upstream instead of answering 400.
	PassBadBodies bool
	Tenant        Tenant
	Cache         Cache
	Throttle      Throttle
}

// Tenant says where the caller's identity comes from.
type Tenant struct {
	// Sources, tried in order: "peer_certificate" (the URI SAN of the
	// verified client certificate on this connection), "xfcc" (the URI of
	// the last element of x-forwarded-client-cert, which only a trusted
	// proxy in front may set), "api_key" (the APIKeyHeader's value).
	Sources      []string
	APIKeyHeader string
	// Anonymous is the tenant of callers with no identity ("" rejects
	// them with 401).
	Anonymous string
}

// Cache configures the response cache.
type Cache struct {
	Enabled bool
	TTL     time.Duration
	// MaxBytes bounds the local tier (shared by the workers), MaxEntryBytes
	// one response.
	MaxBytes, MaxEntryBytes int
	// Shared makes entries common to all tenants (default: per tenant).
	Shared bool
	// Remote is the cache cluster (the sidecar's cache endpoint); empty
	// Cluster: local tier only.
	Remote Remote
	// Coalesce makes concurrent identical misses wait for the first one's
	// answer (at most CoalesceWait) instead of each reaching the upstream.
	Coalesce     bool
	CoalesceWait time.Duration
}

// Remote is an HTTP cache service reached with DispatchHttpCall.
type Remote struct {
	Cluster   string
	Authority string
	Timeout   time.Duration
}

// Throttle configures the per-tenant limits.
type Throttle struct {
	Enabled bool
	Limit
	// Tenants override the limits per tenant.
	Tenants map[string]Limit
	// PriorityReserve is the share of each bucket that priority p may not
	// use: p × PriorityReserve (so lower priorities hit the limit first).
	PriorityReserve float64
	// FailOpen admits requests when the shared state cannot be updated
	// (not when it is merely contended: MaxCASRetries conflicts in a row
	// refuse the request 429, counted in
	// autoglm_filter_throttle_conflicts_total).
	FailOpen bool
	// MaxCASRetries bounds the compare-and-swap attempts per bucket.
	MaxCASRetries int
	// Global is a limit common to every proxy, kept by Envoy's rate limit
	// service; empty Cluster: none.
	Global Global
}

// Global is Envoy's rate limit service (github.com/envoyproxy/ratelimit),
// reached with DispatchHttpCall at its HTTP endpoint (Path, default
// /json): each request the local buckets admit is one hit on the
// descriptor (tenant) — (tenant, model) with PerModel — of Domain. An
// answer that is neither OK nor OVER_LIMIT, or none within Timeout, is
// handled as fail_open says.
type Global struct {
	Cluster, Authority string
	Domain             string
	Path               string
	Timeout            time.Duration
	PerModel           bool
}

// Limit is a tenant's buckets; a zero rate is no limit.
type Limit struct {
	RequestsPerSecond float64
	RequestBurst      float64
	TokensPerMinute   float64
	TokenBurst        float64
}

// Default is the configuration where the JSON is silent.
func Default() Config {
	return Config{
		Mode:         ModeIstio,
		Paths:        []string{"/v1/chat/completions", "/v1/completions"},
		MaxBodyBytes: 1 << 20,
		Tenant:       Tenant{Sources: []string{"peer_certificate", "xfcc"}, Anonymous: "anonymous"},
		Cache: Cache{TTL: 5 * time.Minute, MaxBytes: 16 << 20, MaxEntryBytes: 256 << 10, Remote: Remote{Timeout: 50 * time.Millisecond},
			Coalesce: true, CoalesceWait: 30 * time.Second},
		Throttle: Throttle{PriorityReserve: 0.1, FailOpen: true, MaxCASRetries: 8,
			Global: Global{Domain: "autoglm", Path: "/json", Timeout: 100 * time.Millisecond}},
	}
}

// Parse decodes and validates a configuration over the defaults. An
// empty document is the defaults.
func Parse(data []byte) (Config, error) {
	c := Default()
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return c, nil
	}
	d := &decoder{}
	d.object("", data, map[string]func(string, json.RawMessage){
		"mode":              func(p string, r json.RawMessage) { d.string(p, r, &c.Mode) },
		"paths":             func(p string, r json.RawMessage) { d.strings(p, r, &c.Paths) },
		"max_body_bytes":    func(p string, r json.RawMessage) { d.int(p, r, &c.MaxBodyBytes) },
		"pass_large_bodies": func(p string, r json.RawMessage) { d.bool(p, r, &c.PassLargeBodies) },
		"pass_bad_bodies":   func(p string, r json.RawMessage) { d.bool(p, r, &c.PassBadBodies) },
		"tenant": func(p string, r json.RawMessage) {
			d.object(p, r, map[string]func(string, json.RawMessage){
				"sources":        func(p string, r json.RawMessage) { d.strings(p, r, &c.Tenant.Sources) },
				"api_key_header": func(p string, r json.RawMessage) { d.string(p, r, &c.Tenant.APIKeyHeader) },
				"anonymous":      func(p string, r json.RawMessage) { d.string(p, r, &c.Tenant.Anonymous) },
			})
		},
		"cache": func(p string, r json.RawMessage) {
			d.object(p, r, map[string]func(string, json.RawMessage){
				"enabled":         func(p string, r json.RawMessage) { d.bool(p, r, &c.Cache.Enabled) },
				"ttl":             func(p string, r json.RawMessage) { d.duration(p, r, &c.Cache.TTL) },
				"max_bytes":       func(p string, r json.RawMessage) { d.int(p, r, &c.Cache.MaxBytes) },
				"max_entry_bytes": func(p string, r json.RawMessage) { d.int(p, r, &c.Cache.MaxEntryBytes) },
				"shared":          func(p string, r json.RawMessage) { d.bool(p, r, &c.Cache.Shared) },
				"coalesce":        func(p string, r json.RawMessage) { d.bool(p, r, &c.Cache.Coalesce) },
				"coalesce_wait":   func(p string, r json.RawMessage) { d.duration(p, r, &c.Cache.CoalesceWait) },
				"remote": func(p string, r json.RawMessage) {
					d.object(p, r, map[string]func(string, json.RawMessage){
						"cluster":   func(p string, r json.RawMessage) { d.string(p, r, &c.Cache.Remote.Cluster) },
						"authority": func(p string, r json.RawMessage) { d.string(p, r, &c.Cache.Remote.Authority) },
						"timeout":   func(p string, r json.RawMessage) { d.duration(p, r, &c.Cache.Remote.Timeout) },
					})
				},
			})
		},
		"throttle": func(p string, r json.RawMessage) {
			t := &c.Throttle
			fields := limitFields(d, &t.Limit)
			fields["enabled"] = func(p string, r json.RawMessage) { d.bool(p, r, &t.Enabled) }
			fields["priority_reserve"] = func(p string, r json.RawMessage) { d.float(p, r, &t.PriorityReserve) }
			fields["fail_open"] = func(p string, r json.RawMessage) { d.bool(p, r, &t.FailOpen) }
			fields["max_cas_retries"] = func(p string, r json.RawMessage) { d.int(p, r, &t.MaxCASRetries) }
			fields["global"] = func(p string, r json.RawMessage) {
				g := &t.Global
				d.object(p, r, map[string]func(string, json.RawMessage){
					"cluster":   func(p string, r json.RawMessage) { d.string(p, r, &g.Cluster) },
					"authority": func(p string, r json.RawMessage) { d.string(p, r, &g.Authority) },
					"domain":    func(p string, r json.RawMessage) { d.string(p, r, &g.Domain) },
					"path":      func(p string, r json.RawMessage) { d.string(p, r, &g.Path) },
					"timeout":   func(p string, r json.RawMessage) { d.duration(p, r, &g.Timeout) },
					"per_model": func(p string, r json.RawMessage) { d.bool(p, r, &g.PerModel) },
				})
			}
			var tenants json.RawMessage
			fields["tenants"] = func(p string, r json.RawMessage) { tenants = r }
			d.object(p, r, fields)
			if tenants == nil {
				return
			}
			// After the defaults: unset fields of a tenant inherit them.
			var m map[string]json.RawMessage
			if err := json.Unmarshal(tenants, &m); err != nil || m == nil {
				d.fail(p+".tenants", "must be an object of tenant → limits")
				return
			}
			t.Tenants = map[string]Limit{}
			for name, raw := range m {
				l := t.Limit
				d.object(p+".tenants."+quote(name), raw, limitFields(d, &l))
				t.Tenants[name] = l
			}
		},
	})
	if len(d.errs) == 0 {
		c.validate(d)
	}
	if len(d.errs) > 0 {
		sort.Strings(d.errs)
		return c, errors.New(strings.Join(d.errs, "; "))
	}
	return c, nil
}

func limitFields(d *decoder, l *Limit) map[string]func(string, json.RawMessage) {
	return map[string]func(string, json.RawMessage){
		"requests_per_second": func(p string, r json.RawMessage) { d.float(p, r, &l.RequestsPerSecond) },
		"request_burst":       func(p string, r json.RawMessage) { d.float(p, r, &l.RequestBurst) },
		"tokens_per_minute":   func(p string, r json.RawMessage) { d.float(p, r, &l.TokensPerMinute) },
		"token_burst":         func(p string, r json.RawMessage) { d.float(p, r, &l.TokenBurst) },
	}
}

func quote(k string) string {
	if strings.ContainsAny(k, `."[] `) || k == "" {
		return `["` + k + `"]`
	}
	return k
}

func (c *Config) validate(d *decoder) {
	if c.Mode != ModeIstio && c.Mode != ModeStandalone {
		d.fail("mode", "must be %s or %s, got %q", ModeIstio, ModeStandalone, c.Mode)
	}
	if len(c.Paths) == 0 {
		d.fail("paths", "must name at least one path")
	}
	for i, p := range c.Paths {
		if !strings.HasPrefix(p, "/") {
			d.fail(fmt.Sprintf("paths[%d]", i), "must start with /, got %q", p)
		}
	}
	if c.MaxBodyBytes < 1024 || c.MaxBodyBytes > 64<<20 {
		d.fail("max_body_bytes", "must be 1024..67108864, got %d", c.MaxBodyBytes)
	}
	if len(c.Tenant.Sources) == 0 {
		d.fail("tenant.sources", "must name at least one source")
	}
	for i, s := range c.Tenant.Sources {
		switch s {
		case "peer_certificate", "xfcc":
		case "api_key":
			if c.Tenant.APIKeyHeader == "" {
				d.fail("tenant.api_key_header", "is required when tenant.sources has api_key")
			}
		default:
			d.fail(fmt.Sprintf("tenant.sources[%d]", i), "must be peer_certificate, xfcc or api_key, got %q", s)
		}
	}
	if c.Cache.Enabled {
		if c.Cache.TTL < time.Second {
			d.fail("cache.ttl", "must be at least 1s, got %s", c.Cache.TTL)
		}
		if c.Cache.MaxEntryBytes < 1 || c.Cache.MaxBytes < c.Cache.MaxEntryBytes {
			d.fail("cache.max_bytes", "must be at least cache.max_entry_bytes (%d), got %d", c.Cache.MaxEntryBytes, c.Cache.MaxBytes)
		}
		if c.Cache.Coalesce && (c.Cache.CoalesceWait < time.Millisecond || c.Cache.CoalesceWait > 10*time.Minute) {
			d.fail("cache.coalesce_wait", "must be 1ms..10m, got %s", c.Cache.CoalesceWait)
		}
		if c.Cache.Remote.Cluster != "" && (c.Cache.Remote.Timeout < time.Millisecond || c.Cache.Remote.Timeout > time.Minute) {
			d.fail("cache.remote.timeout", "must be 1ms..1m, got %s", c.Cache.Remote.Timeout)
		}
	}
	t := c.Throttle
	if t.PriorityReserve < 0 || t.PriorityReserve >= 0.5 {
		d.fail("throttle.priority_reserve", "must be in [0, 0.5), got %v", t.PriorityReserve)
	}
	if t.MaxCASRetries < 1 || t.MaxCASRetries > 100 {
		d.fail("throttle.max_cas_retries", "must be 1..100, got %d", t.MaxCASRetries)
	}
	if g := t.Global; g.Cluster != "" {
		if g.Timeout < time.Millisecond || g.Timeout > time.Minute {
			d.fail("throttle.global.timeout", "must be 1ms..1m, got %s", g.Timeout)
		}
		if g.Domain == "" {
			d.fail("throttle.global.domain", "must not be empty")
		}
		if !strings.HasPrefix(g.Path, "/") {
			d.fail("throttle.global.path", "must start with /, got %q", g.Path)
		}
	}
	check := func(p string, l Limit) {
		for _, f := range []struct {
			name string
			v    float64
		}{{"requests_per_second", l.RequestsPerSecond}, {"request_burst", l.RequestBurst}, {"tokens_per_minute", l.TokensPerMinute}, {"token_burst", l.TokenBurst}} {
			if f.v < 0 {
				d.fail(p+f.name, "must not be negative, got %v", f.v)
			}
		}
		if l.RequestsPerSecond > 0 && l.RequestBurst > 0 && l.RequestBurst < 1 {
			d.fail(p+"request_burst", "must be at least 1 (one request), got %v", l.RequestBurst)
		}
	}
	check("throttle.", t.Limit)
	names := make([]string, 0, len(t.Tenants))
	for n := range t.Tenants {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		check("throttle.tenants."+quote(n)+".", t.Tenants[n])
	}
}

// Burst returns the bucket sizes, defaulting a burst to one second of
// requests and one minute of tokens.
func (l Limit) Burst() (requests, tokens float64) {
	requests, tokens = l.RequestBurst, l.TokenBurst
	if requests == 0 {
		requests = max(l.RequestsPerSecond, 1)
	}
	if tokens == 0 {
		tokens = l.TokensPerMinute
	}
	return requests, tokens
}

// For is the limit of a tenant.
func (t Throttle) For(tenant string) Limit {
	if l, ok := t.Tenants[tenant]; ok {
		return l
	}
	return t.Limit
}

type decoder struct{ errs []string }

func (d *decoder) fail(path, format string, args ...any) {
	d.errs = append(d.errs, path+": "+fmt.Sprintf(format, args...))
}

func (d *decoder) object(path string, raw json.RawMessage, fields map[string]func(string, json.RawMessage)) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		if path == "" {
			d.fail("(root)", "must be a JSON object: %v", jsonErr(err))
		} else {
			d.fail(path, "must be an object")
		}
		return
	}
	for k, v := range m {
		p := k
		if path != "" {
			p = path + "." + quote(k)
		}
		f, ok := fields[k]
		if !ok {
			d.fail(p, "unknown field")
			continue
		}
		f(p, v)
	}
}

func jsonErr(err error) string {
	if err == nil {
		return "null"
	}
	return err.Error()
}

func (d *decoder) into(path string, raw json.RawMessage, v any, want string) {
	if err := json.Unmarshal(raw, v); err != nil {
		d.fail(path, "must be %s, got %s", want, short(raw))
	}
}

func short(raw json.RawMessage) string {
	s := string(raw)
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return s
}

func (d *decoder) string(p string, r json.RawMessage, v *string) { d.into(p, r, v, "a string") }
func (d *decoder) bool(p string, r json.RawMessage, v *bool)     { d.into(p, r, v, "true or false") }
func (d *decoder) float(p string, r json.RawMessage, v *float64) { d.into(p, r, v, "a number") }
func (d *decoder) strings(p string, r json.RawMessage, v *[]string) {
	d.into(p, r, v, "a list of strings")
}

func (d *decoder) int(p string, r json.RawMessage, v *int) {
	var f float64
	if err := json.Unmarshal(r, &f); err != nil || f != float64(int(f)) {
		d.fail(p, "must be an integer, got %s", short(r))
		return
	}
	*v = int(f)
}

func (d *decoder) duration(p string, r json.RawMessage, v *time.Duration) {
	var s string
	if err := json.Unmarshal(r, &s); err != nil {
		d.fail(p, `must be a duration string such as "250ms" or "5m", got %s`, short(r))
		return
	}
	dur, err := time.ParseDuration(s)
	if err != nil {
		d.fail(p, `must be a duration such as "250ms" or "5m", got %q`, s)
		return
	}
	*v = dur
}
