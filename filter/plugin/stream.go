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
	req      openai.Request

	// The token reservation, settled when the response's usage is known.
	reserved float64
	tokKey   string
	tokLimit bucket.Limit

	cacheState string // HIT, MISS or BYPASS; "" when the cache is off
	cacheKey   string
	record     bool
	status     string
	ctype      string
	buf        []byte // the response, while it may be stored
	tail       []byte // the response's last bytes, for its usage
}

func keyHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:8])
}

// OnHttpRequestHeaders sets the tenant and holds requests whose body is to
// be read, so that the model header is set before Envoy routes.
func (s *stream) OnHttpRequestHeaders(numHeaders int, endOfStream bool) types.Action {
	cfg := &s.p.cfg
	// One host call for all the headers: each call into and out of the VM
	// costs microseconds.
	hs, _ := proxywasm.GetHttpRequestHeaders()
	header := func(k string) (string, bool) {
		for _, h := range hs {
			if strings.EqualFold(h[0], k) {
				return h[1], true
			}
		}
		return "", false
	}
	// Only the filter says who the tenant is.
	if _, sent := header(HeaderTenant); sent {
		_ = proxywasm.RemoveHttpRequestHeader(HeaderTenant)
	}
	s.tenant = tenantOf(cfg.Tenant, header)
	if s.tenant == "" {
		if cfg.Tenant.Anonymous == "" {
			s.done = true
			sendError(401, "authentication_error", "unauthenticated", "The caller has no verified identity.", nil)
			return types.ActionPause
		}
		s.tenant = cfg.Tenant.Anonymous
	}
	_ = proxywasm.ReplaceHttpRequestHeader(HeaderTenant, s.tenant)
	if v, ok := header(HeaderPriority); ok {
		s.priority = priorityOf(v)
	}
	method, _ := header(":method")
	path, _ := header(":path")
	path, _, _ = strings.Cut(path, "?")
	if method != "POST" || !contains(cfg.Paths, path) {
		return types.ActionContinue
	}
	if endOfStream {
		return s.badBody(errors.New("the request has no body"))
	}
	s.handle = true
	return types.ActionPause
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
		return types.ActionContinue
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
			return types.ActionContinue
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
		return types.ActionContinue
	}
	s.req, err = openai.Parse(body)
	if err != nil {
		return s.badBody(err)
	}
	_ = proxywasm.ReplaceHttpRequestHeader(HeaderModel, s.req.Model)
	if cfg.Throttle.Enabled && !s.throttle() {
		return types.ActionPause
	}
	if cfg.Cache.Enabled && s.lookup() {
		return types.ActionPause
	}
	return types.ActionContinue
}

// casUpdate applies f to a shared-data value with compare-and-swap,
// retrying on conflicts up to the configured bound.
func (s *stream) casUpdate(key string, f func(old []byte) ([]byte, bool)) error {
	for range s.p.cfg.Throttle.MaxCASRetries {
		old, cas, err := proxywasm.GetSharedData(key)
		if err != nil && !errors.Is(err, types.ErrorStatusNotFound) {
			return err
		}
		next, write := f(old)
		if !write {
			return nil
		}
		err = proxywasm.SetSharedData(key, next, cas)
		if err == nil {
			return nil
		}
		if !errors.Is(err, types.ErrorStatusCasMismatch) {
			return err
		}
	}
	return errors.New("too many compare-and-swap conflicts")
}

// take takes cost from the shared bucket at key; refused reports the
// level and the wait when it did not.
func (s *stream) take(key string, l bucket.Limit, cost, floor float64) (taken bool, level float64, wait int64, err error) {
	now := Now()
	err = s.casUpdate(key, func(old []byte) ([]byte, bool) {
		st, ok, derr := bucket.Decode(old)
		if derr != nil {
			ok = false // a corrupt value is a new bucket
		}
		next, t, lv, retry := l.Take(st, ok, now, cost, floor)
		taken, level, wait = t, lv, int64(retry)
		return next.Encode(), t
	})
	return taken, level, wait, err
}

func (s *stream) adjust(key string, l bucket.Limit, delta float64) {
	now := Now()
	if err := s.casUpdate(key, func(old []byte) ([]byte, bool) {
		st, ok, _ := bucket.Decode(old)
		return l.Adjust(st, ok, now, delta).Encode(), true
	}); err != nil {
		s.p.m.stateErrors.Increment(1)
		proxywasm.LogWarnf("autoglm filter: settling tokens of %s: %v", s.tenant, err)
	}
}

// throttle takes a request and the token reservation from the tenant's
// buckets, or answers 429. Priority p may not use the last p ×
// priority_reserve of a bucket.
func (s *stream) throttle() bool {
	t := s.p.cfg.Throttle
	lim := t.For(s.tenant)
	reqBurst, tokBurst := lim.Burst()
	share := math.Min(float64(s.priority)*t.PriorityReserve, 0.9)
	th := keyHash(s.tenant)
	var reqKey string
	var reqLimit bucket.Limit
	if lim.RequestsPerSecond > 0 {
		reqKey, reqLimit = "autoglm:rl:req:"+th, bucket.Limit{Rate: lim.RequestsPerSecond, Burst: reqBurst}
		taken, level, wait, err := s.take(reqKey, reqLimit, 1, share*reqBurst)
		if err != nil {
			return s.stateFailure(err)
		}
		if !taken {
			s.refuse(reqBurst, level, wait, "requests")
			return false
		}
	}
	if lim.TokensPerMinute > 0 {
		want := s.req.MaxTokens
		if want == 0 {
			want = defaultReserve
		}
		// A request larger than the whole bucket may run when it is full;
		// its usage is charged afterwards.
		cost := math.Min(float64(s.req.PromptTokens+want), tokBurst)
		s.tokKey, s.tokLimit = "autoglm:rl:tok:"+th, bucket.Limit{Rate: lim.TokensPerMinute / 60, Burst: tokBurst}
		taken, level, wait, err := s.take(s.tokKey, s.tokLimit, cost, share*tokBurst)
		if err != nil {
			return s.stateFailure(err)
		}
		if !taken {
			if reqKey != "" {
				s.adjust(reqKey, reqLimit, 1) // the request was not made
			}
			s.refuse(tokBurst, level, wait, "tokens")
			return false
		}
		s.reserved = cost
	}
	return true
}

func (s *stream) stateFailure(err error) bool {
	s.p.m.stateErrors.Increment(1)
	proxywasm.LogWarnf("autoglm filter: throttle state for %s: %v", s.tenant, err)
	if s.p.cfg.Throttle.FailOpen {
		return true
	}
	s.done = true
	sendError(503, "server_error", "throttle_unavailable", "The rate limiter's state is unavailable. Retry later.",
		[][2]string{{"retry-after", "1"}})
	return false
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
	s.status, _ = proxywasm.GetHttpResponseHeader(":status")
	s.ctype, _ = proxywasm.GetHttpResponseHeader("content-type")
	s.record = s.cacheState == "MISS" && s.status == "200"
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
		if err == nil {
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
			s.adjust(s.tokKey, s.tokLimit, s.reserved-float64(u.TotalTokens))
		} else if s.status != "" && s.status != "200" {
			s.adjust(s.tokKey, s.tokLimit, s.reserved) // nothing was generated
		}
		s.reserved = 0
	}
	if s.record {
		s.store()
		s.record = false
	}
}
