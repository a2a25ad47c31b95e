// Package plugin is the filter's logic over the proxy-wasm API: the VM,
// plugin (configuration, metrics) and HTTP contexts. It runs in Envoy (the
// compiled module) and natively under the SDK's proxytest host.
package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/open-autoglm/autoglm/filter/bucket"
	"github.com/open-autoglm/autoglm/filter/config"
	"github.com/open-autoglm/autoglm/xfcc"
)

// Header names (ARCHITECTURE.md's header contract).
const (
	HeaderModel    = "x-autoglm-model"
	HeaderTenant   = "x-autoglm-tenant"
	HeaderPriority = "x-autoglm-priority"
	HeaderCache    = "x-autoglm-cache"
	HeaderVersion  = "x-autoglm-version"
	// HeaderCacheControl opts a request in ("cache") or out ("bypass").
	HeaderCacheControl = "x-autoglm-cache-control"
)

// Now is the clock (tests replace it).
var Now = time.Now

// VM is the VM context.
type VM struct {
	types.DefaultVMContext
}

// NewPluginContext implements types.VMContext.
func (*VM) NewPluginContext(contextID uint32) types.PluginContext { return &Plugin{} }

// Plugin is one plugin configuration on one worker.
type Plugin struct {
	types.DefaultPluginContext
	cfg     config.Config
	m       metrics
	scratch [2 * bucket.Size]byte
	lockVal [9]byte // the creation lock's value while this VM holds it
	memo    keyMemo
	touched map[string]int64 // cache keys this VM moved up its index, and when
	waiters []*stream        // requests waiting for an identical one's answer
	tenants map[string]*tenantState
	// Streams ended, for the next requests: an allocation less each
	// (bounded by the requests a worker has at once).
	free []*stream
	// The tenant decided last, and its state.
	lastTenant string
	last       *tenantState
}

type metrics struct {
	throttled, cacheHit, cacheMiss, cacheBypass, badRequest, stateErrors, conflicts, coalesced proxywasm.MetricCounter
}

// OnPluginStart parses the configuration; a bad one fails the start, and
// Envoy applies the plugin's fail strategy.
func (p *Plugin) OnPluginStart(size int) types.OnPluginStartStatus {
	var data []byte
	if size > 0 {
		var err error
		if data, err = proxywasm.GetPluginConfiguration(); err != nil {
			proxywasm.LogCriticalf("autoglm filter: reading the plugin configuration: %v", err)
			return types.OnPluginStartStatusFailed
		}
	}
	cfg, err := config.Parse(data)
	if err != nil {
		proxywasm.LogCriticalf("autoglm filter: invalid plugin configuration: %v", err)
		return types.OnPluginStartStatusFailed
	}
	p.cfg = cfg
	if cfg.Throttle.Enabled {
		ensureCreateLock()
	}
	p.memo = newKeyMemo()
	p.touched = map[string]int64{}
	p.tenants = map[string]*tenantState{}
	p.m = metrics{
		throttled:   proxywasm.DefineCounterMetric("autoglm_filter_throttled_total"),
		cacheHit:    proxywasm.DefineCounterMetric("autoglm_filter_cache_hits_total"),
		cacheMiss:   proxywasm.DefineCounterMetric("autoglm_filter_cache_misses_total"),
		cacheBypass: proxywasm.DefineCounterMetric("autoglm_filter_cache_bypass_total"),
		badRequest:  proxywasm.DefineCounterMetric("autoglm_filter_bad_requests_total"),
		stateErrors: proxywasm.DefineCounterMetric("autoglm_filter_shared_state_errors_total"),
		conflicts:   proxywasm.DefineCounterMetric("autoglm_filter_throttle_conflicts_total"),
		coalesced:   proxywasm.DefineCounterMetric("autoglm_filter_cache_coalesced_total"),
	}
	if cfg.Cache.Enabled && cfg.Cache.Coalesce {
		if err := proxywasm.SetTickPeriodMilliSeconds(coalesceTick); err != nil {
			proxywasm.LogWarnf("autoglm filter: no tick, so no request coalescing: %v", err)
			p.cfg.Cache.Coalesce = false
		}
	}
	proxywasm.LogInfof("autoglm filter started: cache %v, throttle %v", cfg.Cache.Enabled, cfg.Throttle.Enabled)
	return types.OnPluginStartStatusOK
}

// NewHttpContext implements types.PluginContext.
func (p *Plugin) NewHttpContext(contextID uint32) types.HttpContext {
	if n := len(p.free); n > 0 {
		s := p.free[n-1]
		p.free = p.free[:n-1]
		*s = stream{p: p, id: contextID}
		return s
	}
	return &stream{p: p, id: contextID}
}

// sendError answers with an OpenAI-shaped error body.
func sendError(status uint32, typ, code, msg string, extra [][2]string) {
	body, _ := json.Marshal(map[string]any{"error": map[string]any{"message": msg, "type": typ, "code": code, "param": nil}})
	headers := append([][2]string{{"content-type", "application/json"}}, extra...)
	if err := proxywasm.SendHttpResponse(status, headers, body, -1); err != nil {
		proxywasm.LogErrorf("autoglm filter: sending a %d: %v", status, err)
	}
}

// tenantOf is the caller's identity from the configured sources, or "";
// header looks up a request header. A malformed x-forwarded-client-cert
// is an error.
func tenantOf(c config.Tenant, header func(string) (string, bool)) (string, error) {
	for _, s := range c.Sources {
		switch s {
		case "peer_certificate":
			if v, err := proxywasm.GetProperty([]string{"connection", "uri_san_peer_certificate"}); err == nil && len(v) > 0 {
				// A view, not a copy: the host wrote the value into
				// memory it asked the VM for, which nothing else holds.
				return unsafe.String(unsafe.SliceData(v), len(v)), nil
			}
		case "xfcc":
			if v, ok := header("x-forwarded-client-cert"); ok {
				uri, err := xfcc.URI(v)
				if err == nil {
					return uri, nil
				}
				if !errors.Is(err, xfcc.ErrNoURI) {
					return "", err // never a guess, nor a fall back to a weaker identity
				}
			}
		case "api_key":
			if v, ok := header(c.APIKeyHeader); ok && v != "" {
				return "apikey:" + keyHash(v), nil
			}
		}
	}
	return "", nil
}

func priorityOf(v string) int {
	p, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || p < 0 {
		return 0
	}
	return min(p, 15)
}

func retryAfterSeconds(d time.Duration) string {
	s := int((d + time.Second - 1) / time.Second)
	return fmt.Sprint(max(s, 1))
}
