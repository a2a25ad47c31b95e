package plugin

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/open-autoglm/autoglm/filter/bucket"
	"github.com/open-autoglm/autoglm/filter/config"
	"github.com/open-autoglm/autoglm/filter/openai"
)

// defaultReserve is the completion tokens reserved for a request that
// sets no max_tokens (settled against its usage afterwards).
const defaultReserve = 256

// usageTail is how much of a response's end is kept to read its usage.
const usageTail = 16 << 10

// stream is one HTTP request on one worker.
type stream struct {
	types.DefaultHttpContext
	p  *Plugin
	id uint32

	tenant   string
	priority int
	handle   bool // a request body the filter reads
	done     bool // answered locally, or passed through unread
	sent     bool // the tenant (and model) headers are set
	req      openai.Request
	// cacheControl is the request's x-autoglm-cache-control, version its
	// x-autoglm-version, path its path.
	cacheControl, version, path string

	// The token reservation, settled when the response's usage is known.
	reserved           float64
	stateKey           string
	lease              *lease
	took               float64 // the request taken (1, or 0 with no request limit)
	reqLimit, tokLimit bucket.Limit

	// trace holds the request's trace-context headers, sent on with the
	// filter's callouts (the remote cache, the rate limit service), so that
	// they join the caller's trace.
	trace [][2]string

	cacheState string // HIT, MISS or BYPASS; "" when the cache is off
	cacheKey   string
	record     bool
	status     string
	ctype      string
	awaiting   bool   // a remote cache lookup is out, or the request waits for another's answer
	leading    bool   // this request's answer is awaited by identical ones (coalescing)
	ended      bool   // the stream is done
	waitUntil  int64  // unix ns: a waiting request goes upstream then
	buf        []byte // the response, while it may be stored
	tail       []byte // the response's last bytes, for its usage
}

func keyHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:8])
}

// OnHttpRequestHeaders reads the tenant and holds requests whose body is
// to be read, so that the model header is set before Envoy routes.
// traceHeaders are the trace-context headers Envoy and Istio propagate:
// W3C trace context, B3 (multi and single header) and Envoy's request id.
// The filter passes them on untouched and copies them into its callouts.
var traceHeaders = []string{"traceparent", "tracestate", "x-request-id", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags"}

// callout is a callout's headers: hs and the request's trace context.
func (s *stream) callout(hs ...[2]string) [][2]string { return append(hs, s.trace...) }

func (s *stream) OnHttpRequestHeaders(numHeaders int, endOfStream bool) types.Action {
	cfg := &s.p.cfg
	// Headers one at a time, only those needed: a header not present costs
	// one host call, a present one a second (the host asks the VM for
	// memory), where reading them all would copy every header.
	header := func(k string) (string, bool) {
		v, err := proxywasm.GetHttpRequestHeader(k)
		return v, err == nil
	}
	var err error
	if s.tenant, err = tenantOf(cfg.Tenant, header); err != nil {
		s.done = true
		sendError(401, "authentication_error", "invalid_client_certificate_header", "The x-forwarded-client-cert header is malformed.", nil)
		return types.ActionPause
	}
	if s.tenant == "" {
		if cfg.Tenant.Anonymous == "" {
			s.done = true
			sendError(401, "authentication_error", "unauthenticated", "The caller has no verified identity.", nil)
			return types.ActionPause
		}
		s.tenant = cfg.Tenant.Anonymous
	}
	if v, ok := header(HeaderPriority); ok {
		s.priority = priorityOf(v)
	}
	path, _ := header(":path")
	path, _, _ = strings.Cut(path, "?")
	if !contains(cfg.Paths, path) {
		return s.forward()
	}
	if method, _ := header(":method"); method != "POST" {
		return s.forward()
	}
	if endOfStream {
		return s.badBody(errors.New("the request has no body"))
	}
	s.handle = true
	if (cfg.Cache.Enabled && cfg.Cache.Remote.Cluster != "") || cfg.Throttle.Global.Cluster != "" {
		// Read now, as the cache's headers below: gone later in istio mode.
		for _, k := range traceHeaders {
			if v, ok := header(k); ok {
				s.trace = append(s.trace, [2]string{k, v})
			}
		}
	}
	if cfg.Cache.Enabled {
		// Read now: in istio mode the request headers are gone by the
		// time the body is (Envoy's wasm context drops its header map
		// once the headers continue). The path and the pinned version
		// select a different answer: both are in the cache key.
		s.cacheControl, _ = header(HeaderCacheControl)
		s.version, _ = header(HeaderVersion)
		s.path = path
	}
	if cfg.Mode == config.ModeIstio {
		// Without allow_on_headers_stop_iteration (Istio's WasmPlugin has
		// no field for it) a pause here becomes
		// StopAllIterationAndWatermark and Envoy withholds the body from
		// this filter until it continues: the headers go on now, with the
		// tenant, and OnHttpRequestBody holds the body (the router waits
		// for it) until the request is admitted or answered. The model
		// header is the filter's to set, and it cannot be set now: a
		// client's is dropped, not passed on as if the filter had read it.
		_ = proxywasm.RemoveHttpRequestHeader(HeaderModel)
		return s.forward()
	}
	// Standalone (the flag set by autoglm-xds): a plain StopIteration, so
	// the body still reaches this filter while the router waits for the
	// model header.
	return types.ActionPause
}

// forward sets the headers the upstream is to see — the tenant (only the
// filter says who it is), and the model once read — as the request goes
// on: one the filter answers itself (a cache hit, a refusal) never pays
// for them.
func (s *stream) forward() types.Action {
	if s.sent {
		return types.ActionContinue // istio mode: set at the headers
	}
	s.sent = true
	setRequestHeader(HeaderTenant, s.tenant)
	if s.req.Model != "" {
		setRequestHeader(HeaderModel, s.req.Model)
		// The route is chosen again with the model header. Envoy clears
		// its route cache when a wasm filter changes request headers; its
		// clear_route_cache foreign function says so explicitly (a host
		// without it answers NotFound, which changes nothing).
		_, _ = proxywasm.CallForeignFunction("clear_route_cache", nil)
	}
	return types.ActionContinue
}

// setRequestHeader sets a header, whatever the client sent: Envoy's
// replace sets only the first of several values unless its
// http_set_copy_replace_all_headers runtime feature is on, so every value
// is removed first.
func setRequestHeader(k, v string) {
	_ = proxywasm.RemoveHttpRequestHeader(k)
	_ = proxywasm.ReplaceHttpRequestHeader(k, v)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (s *stream) badBody(err error) types.Action {
	s.p.m.badRequest.Increment(1)
	if s.p.cfg.PassBadBodies {
		s.done = true
		return s.forward()
	}
	s.done = true
	sendError(400, "invalid_request_error", "invalid_body", err.Error(), nil)
	return types.ActionPause
}

// OnHttpRequestBody buffers the body, then reads it: model header,
// throttle, cache lookup.
func (s *stream) OnHttpRequestBody(bodySize int, endOfStream bool) types.Action {
	if !s.handle || s.done {
		return types.ActionContinue
	}
	cfg := &s.p.cfg
	if bodySize > cfg.MaxBodyBytes {
		s.done = true
		if cfg.PassLargeBodies {
			return s.forward()
		}
		sendError(413, "invalid_request_error", "request_too_large",
			fmt.Sprintf("The request body is larger than %d bytes.", cfg.MaxBodyBytes), nil)
		return types.ActionPause
	}
	if !endOfStream {
		return types.ActionPause
	}
	body, err := proxywasm.GetHttpRequestBody(0, bodySize)
	if err != nil {
		proxywasm.LogErrorf("autoglm filter: reading the request body: %v", err)
		s.done = true
		return s.forward()
	}
	s.req, err = openai.Parse(body)
	if err != nil {
		return s.badBody(err)
	}
	if cfg.Throttle.Enabled {
		if !s.throttle() {
			return types.ActionPause
		}
		if cfg.Throttle.Global.Cluster != "" && s.global() {
			return types.ActionPause
		}
	}
	return s.admitted()
}

// admitted goes on with a request the limits admit: the cache, then
// upstream.
func (s *stream) admitted() types.Action {
	if s.p.cfg.Cache.Enabled && s.lookup() {
		return types.ActionPause
	}
	return s.forward()
}

// OnHttpStreamDone is the stream's last callback (proxy_on_log): it is
// reused unless a callout it waits for may still answer.
func (s *stream) OnHttpStreamDone() {
	s.lead() // a leader that never stored lets its followers go
	s.ended = true
	if !s.awaiting {
		s.p.free = append(s.p.free, s)
	}
}

// The throttle state of a tenant is one shared-data value holding both
// buckets (requests, then tokens; 16 bytes each), so that a decision is
// one read and one compare-and-swap write, and takes from both buckets or
// from neither. The key is the tenant itself: hashing it would cost more
// than the decision.
const throttlePrefix = "autoglm:rl:"

func decodeBuckets(b []byte) (st [2]bucket.State, ok [2]bool) {
	if len(b) != 2*bucket.Size {
		return st, ok // absent or corrupt: new buckets
	}
	for i := range st {
		var err error
		if st[i], ok[i], err = bucket.Decode(b[i*bucket.Size : (i+1)*bucket.Size]); err != nil {
			ok[i] = false
		}
	}
	return st, ok
}

// encodeBuckets writes the value to the plugin's scratch buffer (a VM
// runs one callback at a time; the host copies the value before the call
// returns).
func (s *stream) encodeBuckets(st [2]bucket.State) []byte {
	b := s.p.scratch[:]
	st[0].Put(b)
	st[1].Put(b[bucket.Size:])
	return b
}

// settle adds delta tokens back to the tenant's token bucket (negative:
// charges more): to this worker's lease when it can take them, else to
// the shared bucket.
func (s *stream) settle(delta float64) {
	if l := s.lease; l != nil {
		if h := l.held[1] + delta; h >= 0 && h <= s.tokLimit.Burst/leaseShare {
			l.held[1] = h
			return
		}
	}
	now := Now()
	if s.stateKey == "" { // decided from the lease
		s.stateKey = throttlePrefix + s.tenant
	}
	if err := s.casUpdate(s.stateKey, true, func(old []byte) ([]byte, bool) {
		st, ok := decodeBuckets(old)
		st[1] = s.tokLimit.Adjust(st[1], ok[1], now, delta)
		if !ok[0] {
			st[0] = bucket.State{Tokens: s.reqLimit.Burst, At: now.UnixNano()}
		}
		return s.encodeBuckets(st), true
	}); err != nil {
		s.p.m.stateErrors.Increment(1)
		proxywasm.LogWarnf("autoglm filter: settling tokens of %s: %v", s.tenant, err)
	}
}

// A lease is what a worker took from a tenant's shared buckets ahead of
// need, for requests of one priority: while it lasts, the worker decides
// alone, without touching the shared state (a read, a compare-and-swap
// write, a call back for memory and the clock: the most of the decision's
// cost). Leases are taken only from the upper half of a bucket, at most
// 1/leaseShare of it at a time, so a tenant near its limit is decided on
// the shared state: the most a worker can be refused while another holds
// leased tokens is 1/leaseShare of the bucket, and no token is made or
// lost — a lease's remainder goes back to the shared bucket when the
// worker next takes from it, which it does at the latest leaseTTL after
// taking the lease. (A new plugin configuration starts without leases.)
type lease struct {
	held    [2]float64 // requests, tokens
	expires int64      // unix nanoseconds
}

// tenantState is what a worker keeps of a tenant: its limits, resolved
// once, and its leases by priority.
type tenantState struct {
	limits [2]bucket.Limit // requests, tokens (per second)
	leases [16]lease
}

const (
	leaseShare = 16
	// leaseTTL bounds how long a lease is used: the bucket it came from
	// refills meanwhile, and a lease used long after would let a tenant
	// exceed its burst by up to the lease. Past it, the remainder goes
	// back to the bucket (capped at the burst) on the next decision.
	leaseTTL   = int64(time.Second)
	maxTenants = 4096 // per VM; past it, the states (and leases) are dropped
)

func (p *Plugin) tenantState(tenant string) *tenantState {
	if tenant == p.lastTenant && p.last != nil { // a worker serves few tenants: often the same again
		return p.last
	}
	if ts := p.tenants[tenant]; ts != nil {
		p.lastTenant, p.last = tenant, ts
		return ts
	}
	if len(p.tenants) >= maxTenants {
		clear(p.tenants)
		p.last = nil
	}
	lim := p.cfg.Throttle.For(tenant)
	reqBurst, tokBurst := lim.Burst()
	ts := &tenantState{limits: [2]bucket.Limit{{Rate: lim.RequestsPerSecond, Burst: reqBurst}, {Rate: lim.TokensPerMinute / 60, Burst: tokBurst}}}
	p.tenants[tenant] = ts
	p.lastTenant, p.last = tenant, ts
	return ts
}

// throttle takes a request and the token reservation from the tenant's
// buckets, or answers 429. Priority p may not use the last p ×
// priority_reserve of a bucket.
func (s *stream) throttle() bool {
	ts := s.p.tenantState(s.tenant)
	s.reqLimit, s.tokLimit = ts.limits[0], ts.limits[1]
	want := s.req.MaxTokens
	if want == 0 {
		want = defaultReserve
	}
	var need [2]float64
	if s.reqLimit.Rate > 0 {
		need[0] = 1
	}
	if s.tokLimit.Rate > 0 {
		// A request larger than the whole bucket may run when it is
		// full; its usage is charged afterwards.
		need[1] = math.Min(float64(s.req.PromptTokens+want), s.tokLimit.Burst)
	}
	l := &ts.leases[s.priority]
	now := Now()
	ns := now.UnixNano()
	if l.held[0] >= need[0] && l.held[1] >= need[1] && ns < l.expires {
		l.held[0] -= need[0]
		l.held[1] -= need[1]
		s.lease, s.took, s.reserved = l, need[0], need[1]
		return true
	}
	share := math.Min(float64(s.priority)*s.p.cfg.Throttle.PriorityReserve, 0.9)
	s.stateKey = throttlePrefix + s.tenant
	var refused int
	var level float64
	var extra [2]float64
	err := s.casUpdate(s.stateKey, true, func(old []byte) ([]byte, bool) {
		st, ok := decodeBuckets(old)
		refused = -1
		for i, lm := range ts.limits {
			if need[i] == 0 {
				continue
			}
			level = math.Min(lm.Burst, lm.Level(st[i], ok[i], now)+l.held[i]) // the lease's remainder back
			floor := share * lm.Burst
			if level-need[i] < floor {
				refused = i
				return nil, false
			}
			extra[i] = math.Max(0, math.Min(lm.Burst/leaseShare, level-need[i]-math.Max(floor, lm.Burst/2)))
			st[i] = bucket.State{Tokens: level - need[i] - extra[i], At: ns}
		}
		return s.encodeBuckets(st), true
	})
	if err != nil {
		return s.stateFailure(err)
	}
	if refused >= 0 {
		lm := ts.limits[refused]
		wait := int64(time.Hour)
		if lm.Rate > 0 {
			wait = int64((need[refused] + share*lm.Burst - level) / lm.Rate * 1e9)
		}
		s.refuse(lm.Burst, level, wait, [2]string{"requests", "tokens"}[refused])
		return false
	}
	l.held, l.expires = extra, ns+leaseTTL
	s.lease, s.took, s.reserved = l, need[0], need[1]
	return true
}

func (s *stream) stateFailure(err error) bool {
	if errors.Is(err, errConflicts) {
		s.p.m.conflicts.Increment(1)
		s.refuse(s.reqLimit.Burst, 0, int64(time.Second), "requests (contended)")
		return false
	}
	s.p.m.stateErrors.Increment(1)
	proxywasm.LogWarnf("autoglm filter: throttle state for %s: %v", s.tenant, err)
	if s.p.cfg.Throttle.FailOpen {
		return true
	}
	s.unavailable()
	return false
}

// unavailable answers 503: the limits cannot be checked (fail_open false).
func (s *stream) unavailable() {
	s.done = true
	sendError(503, "server_error", "throttle_unavailable", "The rate limiter's state is unavailable. Retry later.",
		[][2]string{{"retry-after", "1"}})
}

func (s *stream) refuse(limit, level float64, wait int64, what string) {
	s.done = true
	s.p.m.throttled.Increment(1)
	after := retryAfterSeconds(time.Duration(wait))
	sendError(429, "rate_limit_error", "rate_limit_exceeded",
		fmt.Sprintf("Rate limit reached for %s of tenant %s. Retry after %s s.", what, s.tenant, after),
		[][2]string{{"retry-after", after}, {"x-ratelimit-limit", fmt.Sprint(int64(limit))},
			{"x-ratelimit-remaining", fmt.Sprint(int64(math.Max(level, 0)))}, {"x-ratelimit-reset", after}})
}

// OnHttpResponseHeaders marks the cache state and decides whether the
// response may be stored.
func (s *stream) OnHttpResponseHeaders(numHeaders int, endOfStream bool) types.Action {
	if s.cacheState != "" && s.cacheState != "HIT" {
		_ = proxywasm.ReplaceHttpResponseHeader(HeaderCache, s.cacheState)
	}
	// Each header read is a host call and a call back for the memory:
	// only when the response may be stored or settles a reservation.
	if s.cacheState == "MISS" || s.reserved > 0 {
		s.status, _ = proxywasm.GetHttpResponseHeader(":status")
	}
	if s.record = s.cacheState == "MISS" && s.status == "200"; s.record {
		s.ctype, _ = proxywasm.GetHttpResponseHeader("content-type")
		// What the upstream says must not be kept, or is one caller's.
		if cc, _ := proxywasm.GetHttpResponseHeader("cache-control"); noStore(cc) {
			s.record = false
		} else if _, err := proxywasm.GetHttpResponseHeader("set-cookie"); err == nil {
			s.record = false
		}
	}
	if endOfStream {
		s.finish()
	}
	return types.ActionContinue
}

// OnHttpResponseBody watches the response go by: recorded for the cache
// while it fits, its tail kept for the usage.
func (s *stream) OnHttpResponseBody(bodySize int, endOfStream bool) types.Action {
	if (s.record || s.reserved > 0) && bodySize > 0 {
		chunk, err := proxywasm.GetHttpResponseBody(0, bodySize)
		if err == nil && endOfStream && !s.record && len(s.tail) == 0 {
			s.tail = chunk // the whole response in one piece: read where it is
		} else if err == nil {
			if s.record {
				if len(s.buf)+len(chunk) > s.p.cfg.Cache.MaxEntryBytes {
					s.record, s.buf = false, nil
				} else {
					s.buf = append(s.buf, chunk...)
				}
			}
			s.tail = append(s.tail, chunk...)
			if len(s.tail) > usageTail {
				s.tail = append(s.tail[:0], s.tail[len(s.tail)-usageTail:]...)
			}
		}
	}
	if endOfStream {
		s.finish()
	}
	return types.ActionContinue
}

// finish settles the token reservation and stores the response.
func (s *stream) finish() {
	if s.reserved > 0 {
		var u openai.Usage
		var ok bool
		if s.req.Stream {
			u, ok = openai.StreamUsage(s.tail)
		} else {
			u, ok = openai.UsageOf(s.tail)
		}
		if ok {
			s.settle(s.reserved - float64(u.TotalTokens))
		} else if s.status != "" && s.status != "200" {
			s.settle(s.reserved) // nothing was generated
		}
		s.reserved = 0
	}
	if s.record {
		// Only a whole, successful answer: not a stream cut short or
		// one that reported an error in its events.
		if openai.Complete(s.buf, strings.HasPrefix(s.ctype, "text/event-stream")) {
			s.store()
		}
		s.record = false
	}
	s.lead()
}

// noStore reads a Cache-Control response header (RFC 9111): no-store and
// private forbid a shared cache to keep the response.
func noStore(cc string) bool {
	for _, d := range strings.Split(cc, ",") {
		d, _, _ = strings.Cut(strings.TrimSpace(d), "=")
		if strings.EqualFold(d, "no-store") || strings.EqualFold(d, "private") {
			return true
		}
	}
	return false
}
