package plugin

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/proxytest"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/open-autoglm/autoglm/filter/openai"
)

var closers = map[proxytest.HostEmulator]func(){}

// routeCacheClears counts the filter's clear_route_cache calls (Envoy's
// foreign function) on the current host.
var routeCacheClears int

func closeHost(h proxytest.HostEmulator) { closers[h]() }

// clock is a controlled Now.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

// newHost starts the plugin with cfg; in standalone mode unless cfg
// names a mode (the wasm tests run every mode against a host with
// Envoy's filter-manager rules, which proxytest does not have).
func newHost(t *testing.T, cfg string, peer string) (proxytest.HostEmulator, *clock) {
	t.Helper()
	if !strings.Contains(cfg, `"mode"`) {
		if strings.TrimSpace(cfg) == "{}" {
			cfg = `{"mode": "standalone"}`
		} else {
			cfg = `{"mode": "standalone", ` + strings.TrimPrefix(strings.TrimSpace(cfg), "{")
		}
	}
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	old := Now
	Now = c.now
	opt := proxytest.NewEmulatorOption().WithVMContext(&VM{}).WithPluginConfiguration([]byte(cfg))
	if peer != "" {
		opt = opt.WithProperty([]string{"connection", "uri_san_peer_certificate"}, []byte(peer))
	}
	host, reset := proxytest.NewHostEmulator(opt)
	routeCacheClears = 0
	// (proxytest needs a non-empty result; Envoy's returns none.)
	host.RegisterForeignFunction("clear_route_cache", func([]byte) []byte { routeCacheClears++; return []byte{0} })
	// One emulated host at a time: a test that needs a second one closes
	// the first with closeHost.
	var once sync.Once
	closers[host] = func() { once.Do(func() { reset(); Now = old }) }
	t.Cleanup(closers[host])
	if st := host.StartPlugin(); st != types.OnPluginStartStatusOK {
		t.Fatalf("plugin start: %v\n%v", st, host.GetCriticalLogs())
	}
	return host, c
}

func header(hs [][2]string, k string) (string, bool) {
	for _, h := range hs {
		if strings.EqualFold(h[0], k) {
			return h[1], true
		}
	}
	return "", false
}

type result struct {
	id       uint32
	headers  types.Action
	body     types.Action
	local    *proxytest.LocalHttpResponse
	upstream [][2]string
}

// send runs a request's headers and body through the filter.
func send(host proxytest.HostEmulator, path string, extra [][2]string, body string) result {
	id := host.InitializeHttpContext()
	hs := append([][2]string{{":method", "POST"}, {":path", path}, {":authority", "gw"}, {"content-type", "application/json"}}, extra...)
	r := result{id: id}
	r.headers = host.CallOnRequestHeaders(id, hs, body == "")
	if host.GetSentLocalResponse(id) == nil && body != "" {
		r.body = host.CallOnRequestBody(id, []byte(body), true)
	}
	r.local = host.GetSentLocalResponse(id)
	r.upstream = host.GetCurrentRequestHeaders(id)
	return r
}

// respond runs a response through the filter and completes the stream.
func respond(host proxytest.HostEmulator, id uint32, status int, ctype string, chunks ...string) [][2]string {
	host.CallOnResponseHeaders(id, [][2]string{{":status", fmt.Sprint(status)}, {"content-type", ctype}}, len(chunks) == 0)
	for i, c := range chunks {
		host.CallOnResponseBody(id, []byte(c), i == len(chunks)-1)
	}
	hs := host.GetCurrentResponseHeaders(id)
	host.CompleteHttpContext(id)
	return hs
}

const chat = `{"model":"qwen","messages":[{"role":"user","content":"Say hi"}],"max_tokens":16,"temperature":0}`

func TestModelAndTenantHeaders(t *testing.T) {
	host, _ := newHost(t, `{}`, "spiffe://mesh.local/ns/apps/sa/web")
	r := send(host, "/v1/chat/completions?x=1", [][2]string{{HeaderTenant, "spoofed"}, {HeaderModel, "spoofed"}}, chat)
	if r.headers != types.ActionPause || r.body != types.ActionContinue || r.local != nil {
		t.Fatalf("actions %v %v, local %+v", r.headers, r.body, r.local)
	}
	if v, _ := header(r.upstream, HeaderModel); v != "qwen" || routeCacheClears != 1 {
		t.Fatalf("model header %q, route cache cleared %d times", v, routeCacheClears)
	}
	if v, _ := header(r.upstream, HeaderTenant); v != "spiffe://mesh.local/ns/apps/sa/web" {
		t.Fatalf("tenant header %q: a client-sent tenant must never pass", v)
	}
	// Other paths: tenant set, body not read.
	r = send(host, "/v1/models", [][2]string{{HeaderTenant, "spoofed"}}, "")
	if r.headers != types.ActionContinue {
		t.Fatalf("GET-like path held: %v", r.headers)
	}
	if v, _ := header(r.upstream, HeaderTenant); v != "spiffe://mesh.local/ns/apps/sa/web" {
		t.Fatalf("tenant header on another path %q", v)
	}
	// A request passed on unread (bad body, pass_bad_bodies) carries the
	// tenant too.
	closeHost(host)
	host, _ = newHost(t, `{"pass_bad_bodies": true}`, "spiffe://mesh.local/ns/apps/sa/web")
	r = send(host, "/v1/chat/completions", [][2]string{{HeaderTenant, "spoofed"}}, "not json")
	if v, _ := header(r.upstream, HeaderTenant); r.body != types.ActionContinue || v != "spiffe://mesh.local/ns/apps/sa/web" {
		t.Fatalf("bad body passed: %v, tenant %q", r.body, v)
	}
}

func TestTenantSources(t *testing.T) {
	xfcc := `By=spiffe://mesh.local/ns/gw/sa/envoy;Hash=abc;URI=spiffe://mesh.local/ns/a/sa/first,` +
		`By=spiffe://mesh.local/ns/gw/sa/envoy;Hash=def;Subject="CN=x,O=y";URI=spiffe://mesh.local/ns/b/sa/caller`
	host, _ := newHost(t, `{"tenant": {"sources": ["xfcc", "api_key"], "api_key_header": "x-api-key", "anonymous": ""}}`, "")
	r := send(host, "/v1/chat/completions", [][2]string{{"x-forwarded-client-cert", xfcc}}, chat)
	if v, _ := header(r.upstream, HeaderTenant); v != "spiffe://mesh.local/ns/b/sa/caller" {
		t.Fatalf("xfcc tenant %q", v)
	}
	r = send(host, "/v1/chat/completions", [][2]string{{"x-api-key", "sk-secret"}}, chat)
	if v, _ := header(r.upstream, HeaderTenant); !strings.HasPrefix(v, "apikey:") || strings.Contains(v, "secret") {
		t.Fatalf("api key tenant %q (the key itself must not travel)", v)
	}
	r = send(host, "/v1/chat/completions", nil, chat)
	if r.local == nil || r.local.StatusCode != 401 {
		t.Fatalf("no identity and no anonymous tenant: %+v", r.local)
	}
	// A client's element with an unbalanced quote would swallow the one
	// the proxy appends (Envoy's APPEND_FORWARD): refused, never read as
	// the victim, nor passed to a weaker source.
	forged := `URI=spiffe://mesh.local/ns/v/sa/victim;X=",` + `By=spiffe://mesh.local/ns/gw/sa/envoy;Hash=def;URI=spiffe://mesh.local/ns/b/sa/caller`
	r = send(host, "/v1/chat/completions", [][2]string{{"x-forwarded-client-cert", forged}, {"x-api-key", "sk-secret"}}, chat)
	if r.local == nil || r.local.StatusCode != 401 {
		t.Fatalf("quote injection: %+v, upstream %v", r.local, r.upstream)
	}
}

func errorBody(t *testing.T, r *proxytest.LocalHttpResponse) (typ, code string) {
	t.Helper()
	var e struct {
		Error struct {
			Type, Code, Message string
		}
	}
	if err := json.Unmarshal(r.Data, &e); err != nil || e.Error.Message == "" {
		t.Fatalf("error body %s: %v", r.Data, err)
	}
	return e.Error.Type, e.Error.Code
}

func TestBadBodies(t *testing.T) {
	host, _ := newHost(t, `{"max_body_bytes": 2048}`, "")
	for _, tc := range []struct {
		body   string
		status uint32
		code   string
	}{
		{"not json", 400, "invalid_body"},
		{`{"messages":[]}`, 400, "invalid_body"},
		{`{"model":"m","max_tokens":"many"}`, 400, "invalid_body"},
		{`{"model":"m","prompt":"` + strings.Repeat("x", 3000) + `"}`, 413, "request_too_large"},
	} {
		r := send(host, "/v1/completions", nil, tc.body)
		if r.local == nil || r.local.StatusCode != tc.status {
			t.Fatalf("%.30s: %+v", tc.body, r.local)
		}
		if typ, code := errorBody(t, r.local); typ != "invalid_request_error" || code != tc.code {
			t.Fatalf("%.30s: %s %s", tc.body, typ, code)
		}
	}
	// A POST with no body at all.
	if r := send(host, "/v1/completions", nil, ""); r.local == nil || r.local.StatusCode != 400 {
		t.Fatalf("empty body: %+v", r.local)
	}
	// Configured to pass them through.
	closeHost(host)
	host2, _ := newHost(t, `{"pass_bad_bodies": true, "pass_large_bodies": true, "max_body_bytes": 2048}`, "")
	for _, body := range []string{"not json", `{"model":"m","prompt":"` + strings.Repeat("x", 3000) + `"}`} {
		if r := send(host2, "/v1/completions", nil, body); r.local != nil || r.body != types.ActionContinue {
			t.Fatalf("pass-through: %+v %v", r.local, r.body)
		}
	}
}

func TestBadConfigFailsStart(t *testing.T) {
	opt := proxytest.NewEmulatorOption().WithVMContext(&VM{}).WithPluginConfiguration([]byte(`{"cache": {"ttl": "never"}}`))
	host, reset := proxytest.NewHostEmulator(opt)
	routeCacheClears = 0
	// (proxytest needs a non-empty result; Envoy's returns none.)
	host.RegisterForeignFunction("clear_route_cache", func([]byte) []byte { routeCacheClears++; return []byte{0} })
	defer reset()
	if st := host.StartPlugin(); st != types.OnPluginStartStatusFailed {
		t.Fatalf("start with a bad configuration: %v", st)
	}
	if logs := strings.Join(host.GetCriticalLogs(), "\n"); !strings.Contains(logs, "cache.ttl") {
		t.Fatalf("the log must name the field: %s", logs)
	}
}

func TestRequestRateLimit(t *testing.T) {
	host, clk := newHost(t, `{"throttle": {"enabled": true, "requests_per_second": 2, "request_burst": 3}}`, "spiffe://m/a")
	for i := range 3 {
		if r := send(host, "/v1/chat/completions", nil, chat); r.local != nil {
			t.Fatalf("request %d refused within the burst: %+v", i, r.local)
		}
	}
	r := send(host, "/v1/chat/completions", nil, chat)
	if r.local == nil || r.local.StatusCode != 429 {
		t.Fatalf("4th request: %+v", r.local)
	}
	hs := r.local.Headers
	if v, _ := header(hs, "retry-after"); v != "1" {
		t.Fatalf("retry-after %q", v)
	}
	if v, _ := header(hs, "x-ratelimit-limit"); v != "3" {
		t.Fatalf("limit %q", v)
	}
	if v, _ := header(hs, "x-ratelimit-remaining"); v != "0" {
		t.Fatalf("remaining %q", v)
	}
	if typ, code := errorBody(t, r.local); typ != "rate_limit_error" || code != "rate_limit_exceeded" {
		t.Fatalf("%s %s", typ, code)
	}
	clk.advance(500 * time.Millisecond) // one request back
	if r := send(host, "/v1/chat/completions", nil, chat); r.local != nil {
		t.Fatalf("after refill: %+v", r.local)
	}
	// Another tenant has its own bucket.
	closeHost(host)
	host2, _ := newHost(t, `{"throttle": {"enabled": true, "requests_per_second": 1}}`, "spiffe://m/b")
	if r := send(host2, "/v1/chat/completions", nil, chat); r.local != nil {
		t.Fatalf("other tenant: %+v", r.local)
	}
}

func TestPriorityHitsLimitFirst(t *testing.T) {
	// Burst 10, reserve 0.2 per level: priority 2 may not use the last 4.
	host, _ := newHost(t, `{"throttle": {"enabled": true, "requests_per_second": 1, "request_burst": 10, "priority_reserve": 0.2}}`, "spiffe://m/a")
	low := [][2]string{{HeaderPriority, "2"}}
	n := 0
	for send(host, "/v1/chat/completions", low, chat).local == nil {
		n++
	}
	if n != 6 {
		t.Fatalf("priority 2 got %d requests of a burst of 10, want 6", n)
	}
	if r := send(host, "/v1/chat/completions", [][2]string{{HeaderPriority, "0"}}, chat); r.local != nil {
		t.Fatalf("priority 0 refused while the reserve is left: %+v", r.local)
	}
}

func usageJSON(total int) string {
	return fmt.Sprintf(`{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":%d,"total_tokens":%d}}`, total-5, total)
}

func TestTokenReservationSettled(t *testing.T) {
	// 1000 tokens per minute, burst 1000. A request reserves its prompt
	// estimate + max_tokens (16) and is settled against its usage.
	host, _ := newHost(t, `{"throttle": {"enabled": true, "tokens_per_minute": 1000}}`, "spiffe://m/a")
	body := `{"model":"qwen","messages":[{"role":"user","content":"Say hi"}],"max_tokens":600}`
	r := send(host, "/v1/chat/completions", nil, body)
	if r.local != nil {
		t.Fatal(r.local)
	}
	// While it runs, a second one of 600 does not fit (1000 − 606 left).
	if r2 := send(host, "/v1/chat/completions", nil, body); r2.local == nil || r2.local.StatusCode != 429 {
		t.Fatalf("second reservation: %+v", r2.local)
	}
	// The first used 20 tokens: 586 come back, the second now fits.
	respond(host, r.id, 200, "application/json", usageJSON(20))
	if r3 := send(host, "/v1/chat/completions", nil, body); r3.local != nil {
		t.Fatalf("after settlement: %+v", r3.local)
	}
}

func TestStreamUsageSettled(t *testing.T) {
	host, _ := newHost(t, `{"throttle": {"enabled": true, "tokens_per_minute": 1000}}`, "spiffe://m/a")
	body := `{"model":"qwen","stream":true,"messages":[{"role":"user","content":"Say hi"}],"max_tokens":100}`
	r := send(host, "/v1/chat/completions", nil, body)
	// The stream used far more than it reserved (a server ignoring
	// max_tokens): the excess is charged, leaving the bucket in debt.
	respond(host, r.id, 200, "text/event-stream",
		"data: {\"choices\":[{\"delta\":{\"content\":\"h\"}}]}\n\n",
		"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1495,\"total_tokens\":1500}}\n\ndata: [DONE]\n\n")
	r2 := send(host, "/v1/chat/completions", nil, body)
	if r2.local == nil || r2.local.StatusCode != 429 {
		t.Fatalf("after an overspend: %+v", r2.local)
	}
	if v, _ := header(r2.local.Headers, "x-ratelimit-remaining"); v != "0" {
		t.Fatalf("remaining %q", v)
	}
}

func TestCacheHitMissBypass(t *testing.T) {
	host, clk := newHost(t, `{"cache": {"enabled": true, "ttl": "10s"}}`, "spiffe://m/a")
	r := send(host, "/v1/chat/completions", nil, chat)
	if r.local != nil {
		t.Fatal(r.local)
	}
	hs := respond(host, r.id, 200, "application/json", usageJSON(7))
	if v, _ := header(hs, HeaderCache); v != "MISS" {
		t.Fatalf("first: %q", v)
	}
	// Same request, other spacing and field order: a hit, served locally.
	r = send(host, "/v1/chat/completions", nil, `{"temperature":0, "max_tokens":16, "messages":[{"content":"Say hi","role":"user"}], "model":"qwen"}`)
	if r.local == nil || r.local.StatusCode != 200 || string(r.local.Data) != usageJSON(7) {
		t.Fatalf("second: %+v", r.local)
	}
	if v, _ := header(r.local.Headers, HeaderCache); v != "HIT" {
		t.Fatalf("hit header %q", v)
	}
	// Sampling with temperature: not cached unless asked.
	sampled := strings.Replace(chat, `"temperature":0`, `"temperature":0.8`, 1)
	r = send(host, "/v1/chat/completions", nil, sampled)
	if hs := respond(host, r.id, 200, "application/json", usageJSON(7)); !hasValue(hs, HeaderCache, "BYPASS") {
		t.Fatalf("sampled: %v", hs)
	}
	// The bypass header skips a stored entry.
	r = send(host, "/v1/chat/completions", [][2]string{{HeaderCacheControl, "bypass"}}, chat)
	if r.local != nil {
		t.Fatal("bypass answered from the cache")
	}
	respond(host, r.id, 200, "application/json", usageJSON(7))
	// Another tenant does not see this tenant's entry.
	peer := []string{"connection", "uri_san_peer_certificate"}
	host.SetProperty(peer, []byte("spiffe://m/b"))
	r = send(host, "/v1/chat/completions", nil, chat)
	if r.local != nil {
		t.Fatal("another tenant was answered from this tenant's entry")
	}
	respond(host, r.id, 200, "application/json", usageJSON(7))
	host.SetProperty(peer, []byte("spiffe://m/a"))
	if r := send(host, "/v1/chat/completions", nil, chat); r.local == nil {
		t.Fatal("the entry is gone")
	}
	// Expiry.
	clk.advance(11 * time.Second)
	if r := send(host, "/v1/chat/completions", nil, chat); r.local != nil {
		t.Fatal("an expired entry was served")
	}
}

func hasValue(hs [][2]string, k, v string) bool {
	got, ok := header(hs, k)
	return ok && got == v
}

func TestCacheStoresOnly200AndReplaysSSE(t *testing.T) {
	host, _ := newHost(t, `{"cache": {"enabled": true}}`, "spiffe://m/a")
	r := send(host, "/v1/chat/completions", nil, chat)
	respond(host, r.id, 500, "application/json", `{"error":{"message":"boom"}}`)
	if r := send(host, "/v1/chat/completions", nil, chat); r.local != nil {
		t.Fatal("a 500 was stored")
	}
	stream := strings.Replace(chat, `"max_tokens"`, `"stream":true,"max_tokens"`, 1)
	sse := []string{"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"h\"}}]}\n\n", "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"i\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n"}
	r = send(host, "/v1/chat/completions", nil, stream)
	respond(host, r.id, 200, "text/event-stream", sse...)
	r = send(host, "/v1/chat/completions", nil, stream)
	if r.local == nil || string(r.local.Data) != sse[0]+sse[1] {
		t.Fatalf("stream replay: %+v", r.local)
	}
	if v, _ := header(r.local.Headers, "content-type"); v != "text/event-stream" {
		t.Fatalf("content-type %q", v)
	}
}

func TestCacheSizeBound(t *testing.T) {
	// Entries of ~1 KB; the bound, 16 × 1500 bytes, is kept per index
	// shard (1500 each): one entry per shard survives, the latest.
	host, _ := newHost(t, `{"cache": {"enabled": true, "max_bytes": 24000, "max_entry_bytes": 1500}}`, "spiffe://m/a")
	big := `{"choices":[{"index":0,"text":"` + strings.Repeat("x", 1000) + `","finish_reason":"stop"}]}`
	prompt := func(i int) string { return fmt.Sprintf(`{"model":"m","prompt":"p%d","temperature":0}`, i) }
	const n = 60
	for i := range n {
		r := send(host, "/v1/completions", nil, prompt(i))
		respond(host, r.id, 200, "application/json", big)
	}
	hits := 0
	for i := range n {
		if r := send(host, "/v1/completions", nil, prompt(i)); r.local != nil {
			hits++
		}
	}
	if hits == 0 || hits > 16 {
		t.Fatalf("%d of %d entries kept; the bound allows at most 16", hits, n)
	}
	if r := send(host, "/v1/completions", nil, prompt(n-1)); r.local == nil {
		t.Fatal("the newest entry was evicted")
	}
	// Larger than max_entry_bytes: not stored.
	r := send(host, "/v1/completions", nil, `{"model":"m","prompt":"huge","temperature":0}`)
	respond(host, r.id, 200, "application/json", strings.Repeat("y", 2500))
	if r := send(host, "/v1/completions", nil, `{"model":"m","prompt":"huge","temperature":0}`); r.local != nil {
		t.Fatal("an entry over max_entry_bytes was stored")
	}
}

// TestKeyMemo: the memo answers what Key computes, stays within its byte
// bound, and gives tenants distinct scope tags.
func TestKeyMemo(t *testing.T) {
	m := newKeyMemo()
	parse := func(body string) *openai.Request {
		r, err := openai.Parse([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		return &r
	}
	a := parse(chat)
	k := m.cacheKey(a, "t1")
	if k != cachePrefix+parse(chat).Key()+":"+m.scope("t1") || m.cacheKey(parse(chat), "t1") != k {
		t.Fatalf("memo key %s", k)
	}
	if m.cacheKey(a, "t2") == k || m.cacheKey(a, "") == k || m.scope("") != "shared" {
		t.Fatal("scopes share a key")
	}
	// Same request in other bytes: not remembered, same key.
	if m.cacheKey(parse(`{"temperature":0,"max_tokens":16,"messages":[{"content":"Say hi","role":"user"}],"model":"qwen"}`), "t1") != k {
		t.Fatal("reordered request: another key")
	}
	for i := range 20000 {
		body := fmt.Sprintf(`{"model":"qwen","prompt":"%d %s"}`, i, strings.Repeat("x", 100))
		if m.cacheKey(parse(body), "t1") != cachePrefix+parse(body).Key()+":"+m.scope("t1") {
			t.Fatalf("%d: memo and Key differ", i)
		}
		if m.bytes > memoBytes {
			t.Fatalf("memo holds %d bytes, bound %d", m.bytes, memoBytes)
		}
	}
	total := 0
	for b := range m.keys {
		total += len(b)
	}
	if total != m.bytes || len(m.keys) < memoBytes/200 {
		t.Fatalf("memo accounts %d bytes, holds %d in %d entries", m.bytes, total, len(m.keys))
	}
}

// TestStreamReuse: an ended stream serves the next request, reset —
// unless a remote lookup it made may still answer into it.
func TestStreamReuse(t *testing.T) {
	p := &Plugin{}
	a := p.NewHttpContext(1).(*stream)
	a.tenant, a.cacheKey, a.reserved = "t", "k", 5
	a.OnHttpStreamDone()
	b := p.NewHttpContext(2).(*stream)
	if b != a || b.id != 2 || b.tenant != "" || b.cacheKey != "" || b.reserved != 0 || b.p != p {
		t.Fatalf("not reused, or not reset: %+v", b)
	}
	b.awaiting = true
	b.OnHttpStreamDone()
	if c := p.NewHttpContext(3).(*stream); c == b {
		t.Fatal("a stream with a callout out was reused")
	}
}

// TestGlobalLimit: with a rate limit service configured, a request the
// local buckets admit is held for its answer: OK goes on (resumed, with
// the tenant and model headers), OVER_LIMIT is a 429 with the service's
// reset as Retry-After; no answer fails open or closed as configured.
func TestGlobalLimit(t *testing.T) {
	const cfg = `{"throttle": {"enabled": true, "requests_per_second": 100, "tokens_per_minute": 60000, "fail_open": %v,
		"global": {"cluster": "ratelimit", "authority": "rl", "per_model": true}}}`
	host, _ := newHost(t, fmt.Sprintf(cfg, true), "spiffe://m/a")
	callout := func(id uint32) proxytest.HttpCalloutAttribute {
		t.Helper()
		cs := host.GetCalloutAttributesFromContext(id)
		if len(cs) != 1 {
			t.Fatalf("%d callouts", len(cs))
		}
		return cs[0]
	}
	r := send(host, "/v1/chat/completions", nil, chat)
	c := callout(r.id)
	if r.body != types.ActionPause || c.Upstream != "ratelimit" {
		t.Fatalf("not held for the service: %v %+v", r.body, c)
	}
	var req struct {
		Domain      string `json:"domain"`
		Descriptors []struct {
			Entries []struct{ Key, Value string } `json:"entries"`
		} `json:"descriptors"`
		HitsAddend int `json:"hitsAddend"`
	}
	if err := json.Unmarshal(c.Body, &req); err != nil || req.Domain != "autoglm" || req.HitsAddend != 1 ||
		req.Descriptors[0].Entries[0].Value != "spiffe://m/a" || req.Descriptors[0].Entries[1].Value != "qwen" {
		t.Fatalf("request %s: %v", c.Body, err)
	}
	if p, _ := header(c.Headers, ":path"); p != "/json" {
		t.Fatalf("path %q", p)
	}
	host.CallOnHttpCallResponse(c.CalloutID, [][2]string{{":status", "200"}}, nil, []byte(`{"overallCode":"OK"}`))
	if a := host.GetCurrentHttpStreamAction(r.id); a != types.ActionContinue {
		t.Fatalf("OK: not resumed (%v)", a)
	}
	if v, _ := header(host.GetCurrentRequestHeaders(r.id), HeaderTenant); v != "spiffe://m/a" {
		t.Fatalf("resumed without the tenant header: %q", v)
	}

	// OVER_LIMIT.
	r = send(host, "/v1/chat/completions", nil, chat)
	host.CallOnHttpCallResponse(callout(r.id).CalloutID, [][2]string{{":status", "429"}}, nil,
		[]byte(`{"overallCode":"OVER_LIMIT","statuses":[{"code":"OVER_LIMIT","currentLimit":{"requestsPerUnit":2,"unit":"MINUTE"},"durationUntilReset":"41.2s"}]}`))
	local := host.GetSentLocalResponse(r.id)
	if local == nil || local.StatusCode != 429 {
		t.Fatalf("over the global limit: %+v", local)
	}
	if v, _ := header(local.Headers, "retry-after"); v != "42" {
		t.Fatalf("retry-after %q", v)
	}
	if v, _ := header(local.Headers, "x-ratelimit-limit"); v != "2" {
		t.Fatalf("x-ratelimit-limit %q", v)
	}
	if typ, _ := errorBody(t, local); typ != "rate_limit_error" {
		t.Fatalf("error type %q", typ)
	}

	// No answer (Envoy calls back without headers): fail-open goes on.
	r = send(host, "/v1/chat/completions", nil, chat)
	host.CallOnHttpCallResponse(callout(r.id).CalloutID, nil, nil, nil)
	if a := host.GetCurrentHttpStreamAction(r.id); a != types.ActionContinue || host.GetSentLocalResponse(r.id) != nil {
		t.Fatalf("fail-open: %v", a)
	}
	closeHost(host)

	// Fail-closed: 503.
	host, _ = newHost(t, fmt.Sprintf(cfg, false), "spiffe://m/a")
	r = send(host, "/v1/chat/completions", nil, chat)
	host.CallOnHttpCallResponse(callout(r.id).CalloutID, [][2]string{{":status", "503"}}, nil, nil)
	if local := host.GetSentLocalResponse(r.id); local == nil || local.StatusCode != 503 {
		t.Fatalf("fail-closed: %+v", local)
	}
}

// TestGlobalLimitThenRemoteCache: after the rate limit service's OK the
// request goes to the cache, whose remote tier holds it again: it resumes
// once, after the cache's answer.
func TestGlobalLimitThenRemoteCache(t *testing.T) {
	host, _ := newHost(t, `{"throttle": {"enabled": true, "requests_per_second": 100, "global": {"cluster": "ratelimit"}},
		"cache": {"enabled": true, "remote": {"cluster": "cache", "authority": "cache"}}}`, "spiffe://m/a")
	r := send(host, "/v1/chat/completions", nil, chat)
	cs := host.GetCalloutAttributesFromContext(r.id)
	if len(cs) != 1 || cs[0].Upstream != "ratelimit" {
		t.Fatalf("callouts %+v", cs)
	}
	host.CallOnHttpCallResponse(cs[0].CalloutID, [][2]string{{":status", "200"}}, nil, []byte(`{"overallCode":"OK"}`))
	cs = host.GetCalloutAttributesFromContext(r.id)
	if len(cs) != 2 || cs[1].Upstream != "cache" || host.GetCurrentHttpStreamAction(r.id) != types.ActionPause {
		t.Fatalf("after the OK: callouts %+v, action %v", cs, host.GetCurrentHttpStreamAction(r.id))
	}
	host.CallOnHttpCallResponse(cs[1].CalloutID, [][2]string{{":status", "404"}}, nil, nil)
	if a := host.GetCurrentHttpStreamAction(r.id); a != types.ActionContinue {
		t.Fatalf("after the cache's miss: %v", a)
	}
	if v, _ := header(host.GetCurrentRequestHeaders(r.id), HeaderModel); v != "qwen" {
		t.Fatalf("model header %q", v)
	}
}
