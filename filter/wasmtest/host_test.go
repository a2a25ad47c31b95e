package wasmtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

const peer = "connection/uri_san_peer_certificate"

// mode is a deployment of the filter: its plugin mode and the host flag
// that deployment sets.
type mode struct {
	name      string
	allowStop bool // PluginConfig.allow_on_headers_stop_iteration
}

// modes are the two supported deployments: Istio's WasmPlugin (Envoy's
// defaults, which it cannot change) and autoglm-xds's standalone Envoy.
var modes = []mode{{"istio", false}, {"standalone", true}}

// eachMode runs a scenario in both deployments.
func eachMode(t *testing.T, f func(t *testing.T, m mode)) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) { f(t, m) })
	}
}

// withMode puts the mode into a plugin configuration (a JSON object).
func withMode(plugin, mode string) string {
	rest := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(plugin), "{"))
	if rest == "}" {
		return `{"mode": "` + mode + `"}`
	}
	return `{"mode": "` + mode + `", ` + rest
}

func (m mode) start(t *testing.T, workers int, plugin string) *Host {
	t.Helper()
	return startWith(t, Config{Workers: workers, Plugin: []byte(withMode(plugin, m.name)), AllowOnHeadersStopIteration: m.allowStop,
		Properties: map[string]string{peer: "spiffe://mesh.local/ns/a/sa/app"}})
}

func startWith(t *testing.T, cfg Config) *Host {
	t.Helper()
	bin, err := Module()
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(context.Background(), bin, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// passed says the request went to the upstream whole (not answered by
// the filter, not stalled).
func passed(s *Stream) bool { return s.Local == nil && s.Upstream.End }

const chat = `{"model":"qwen","messages":[{"role":"user","content":"Say hi"}],"max_tokens":16,"temperature":0}`

// request sends a POST through a worker's filter as Envoy's codec does:
// the headers, then the body (which the filter manager may withhold).
func request(w *Worker, path, body string, extra ...[2]string) *Stream {
	s := w.NewStream()
	hs := append([][2]string{{":method", "POST"}, {":path", path}, {":authority", "gw"}}, extra...)
	s.SendRequestHeaders(hs, body == "")
	if s.Local == nil && body != "" {
		s.SendRequestBody([]byte(body), true)
	}
	return s
}

func respond(s *Stream, status int, ctype string, chunks ...string) {
	s.SendResponseHeaders([][2]string{{":status", fmt.Sprint(status)}, {"content-type", ctype}}, len(chunks) == 0)
	for i, c := range chunks {
		s.SendResponseBody([]byte(c), i == len(chunks)-1)
	}
	s.Done()
}

func usage(total int) string {
	return fmt.Sprintf(`{"choices":[{"index":0,"message":{"content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":%d,"total_tokens":%d}}`, total-5, total)
}

// TestWasmHeaders: the request reaches the router with the verified
// tenant (never a client's), its body intact, and — in standalone mode,
// where routes match it — the model header set before the route is
// chosen again; in istio mode the headers go on at once (routing is by
// host) and the model header is not set.
func TestWasmHeaders(t *testing.T) {
	eachMode(t, func(t *testing.T, m mode) {
		h := m.start(t, 1, `{}`)
		s := request(h.Workers[0], "/v1/chat/completions", chat, [2]string{"x-autoglm-tenant", "forged"}, [2]string{"x-autoglm-model", "forged"})
		if s.Stalled() {
			t.Fatal("the request stalled: the router never got it")
		}
		if !passed(s) {
			t.Fatalf("local response %+v", s.Local)
		}
		if string(s.Upstream.Body) != chat {
			t.Fatalf("body upstream %q", s.Upstream.Body)
		}
		model := Header(s.Upstream.Headers, "x-autoglm-model")
		switch {
		case m.name == "standalone" && (model != "qwen" || s.RouteCacheCleared != 1):
			t.Fatalf("model header %q, route cache cleared %d times", model, s.RouteCacheCleared)
		case m.name == "istio" && model != "":
			// Not settable before the headers go on in istio mode, and
			// the filter's alone: a client's is dropped.
			t.Fatalf("model header %q", model)
		}
		var tenants []string
		for _, kv := range s.Upstream.Headers {
			if kv[0] == "x-autoglm-tenant" {
				tenants = append(tenants, kv[1])
			}
		}
		if len(tenants) != 1 || tenants[0] != "spiffe://mesh.local/ns/a/sa/app" {
			t.Fatalf("tenant headers %v", tenants)
		}
		respond(s, 200, "application/json", usage(9))
	})
}

// TestWasmXFCCInjection: compiled to wasm, the filter takes the element
// the proxy appended, and refuses a header whose client-supplied element
// would swallow it.
func TestWasmXFCCInjection(t *testing.T) {
	eachMode(t, func(t *testing.T, m mode) {
		h := startWith(t, Config{Plugin: []byte(withMode(`{"tenant": {"sources": ["xfcc"], "anonymous": "anonymous"}}`, m.name)),
			AllowOnHeadersStopIteration: m.allowStop})
		appended := `By=spiffe://mesh.local/ns/m/sa/model;Hash=def;Subject="CN=x,O=y";URI=spiffe://mesh.local/ns/b/sa/caller`
		for _, tc := range []struct{ client, tenant string }{
			{`URI=spiffe://mesh.local/ns/v/sa/victim`, "spiffe://mesh.local/ns/b/sa/caller"},
			{`URI=spiffe://mesh.local/ns/v/sa/victim;X="`, ""},
			{`URI=spiffe://mesh.local/ns/v/sa/victim;X="\"`, ""},
			{`URI=spiffe://mesh.local/ns/v/sa/victim;X=""`, "spiffe://mesh.local/ns/b/sa/caller"},
			{`Subject="a\"b";URI=spiffe://mesh.local/ns/v/sa/victim`, "spiffe://mesh.local/ns/b/sa/caller"},
		} {
			s := request(h.Workers[0], "/v1/chat/completions", chat, [2]string{"x-forwarded-client-cert", tc.client + "," + appended})
			switch {
			case tc.tenant == "" && (s.Local == nil || s.Local.Status != 401):
				t.Fatalf("%q: not refused: %+v, upstream %v", tc.client, s.Local, s.Upstream.Headers)
			case tc.tenant != "" && (!passed(s) || Header(s.Upstream.Headers, "x-autoglm-tenant") != tc.tenant):
				t.Fatalf("%q: %+v, tenant %q", tc.client, s.Local, Header(s.Upstream.Headers, "x-autoglm-tenant"))
			}
			s.Done()
		}
	})
}

// TestWasmBadInputNeverTraps: bodies the filter cannot read get a 4xx
// from the VM, which keeps serving (a Go panic would trap and kill it).
func TestWasmBadInputNeverTraps(t *testing.T) {
	eachMode(t, func(t *testing.T, m mode) {
		h := m.start(t, 1, `{"max_body_bytes": 4096}`)
		w := h.Workers[0]
		huge := strings.Repeat("v", 64<<10)
		for _, tc := range []struct {
			body   string
			extra  [][2]string
			status int
		}{
			{"\x00\xff not json", nil, 400},
			{`{"model": 12}`, nil, 400},
			{`{"model":"m","prompt":"` + strings.Repeat("x", 5000) + `"}`, nil, 413},
			{chat, [][2]string{{"x-huge", huge}, {"x-forwarded-client-cert", huge}}, 0},
			{`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":null}]}],"max_tokens":null}`, nil, 0},
		} {
			s := request(w, "/v1/completions", tc.body, tc.extra...)
			got := 0
			if !passed(s) { // KEEP
				got = s.Local.Status
				var e struct{ Error struct{ Message string } }
				if json.Unmarshal(s.Local.Body, &e) != nil || e.Error.Message == "" {
					t.Fatalf("error body %s", s.Local.Body)
				}
			}
			if got != tc.status {
				t.Fatalf("%.40q: status %d, want %d", tc.body, got, tc.status)
			}
			s.Done()
		}
		if s := request(w, "/v1/chat/completions", chat); !passed(s) {
			t.Fatal("the VM stopped serving after bad input")
		}
	})
}

// TestWasmThrottleSharedAcrossWorkers: two VMs draw on the same tenant
// buckets through shared data; the controlled clock refills them.
func TestWasmThrottleSharedAcrossWorkers(t *testing.T) {
	eachMode(t, func(t *testing.T, m mode) {
		h := m.start(t, 2, `{"throttle": {"enabled": true, "requests_per_second": 1, "request_burst": 4}}`)
		ok := 0
		for i := range 6 {
			s := request(h.Workers[i%2], "/v1/chat/completions", chat)
			if passed(s) {
				ok++
			} else if s.Local.Status != 429 || Header(s.Local.Headers, "retry-after") != "1" {
				t.Fatalf("refusal %d %v", s.Local.Status, s.Local.Headers)
			}
			s.Done()
		}
		if ok != 4 {
			t.Fatalf("%d of 6 admitted across two workers, want the shared burst of 4", ok)
		}
		h.Advance(2 * time.Second)
		for i := range 2 {
			if s := request(h.Workers[i], "/v1/chat/completions", chat); !passed(s) {
				t.Fatalf("after 2 s: %+v", s.Local)
			}
		}
		if n := h.Workers[0].Metric("autoglm_filter_throttled_total") + h.Workers[1].Metric("autoglm_filter_throttled_total"); n != 2 {
			t.Fatalf("throttled counter %d", n)
		}
	})
}

// TestWasmCASConflict: another worker writes the bucket between a
// worker's read and its write; the compare-and-swap fails, the worker
// retries on the new value, and no take is lost.
func TestWasmCASConflict(t *testing.T) {
	eachMode(t, func(t *testing.T, m mode) {
		h := m.start(t, 2, `{"throttle": {"enabled": true, "requests_per_second": 0.001, "request_burst": 3}}`)
		request(h.Workers[0], "/v1/chat/completions", chat).Done() // the bucket exists: 2 left
		fired := false
		h.OnSharedGet = func(w *Worker, key string) {
			if strings.HasPrefix(key, "autoglm:rl:") {
				fired = true
				if s := request(h.Workers[1], "/v1/chat/completions", chat); !passed(s) {
					t.Errorf("the interleaved request was refused: %+v", s.Local)
				}
			}
		}
		if s := request(h.Workers[0], "/v1/chat/completions", chat); !passed(s) {
			t.Fatalf("the conflicting request was refused: %+v", s.Local)
		}
		if !fired {
			t.Fatal("no conflicting write happened")
		}
		// 3 taken: the next is refused on either worker.
		for _, w := range h.Workers {
			if s := request(w, "/v1/chat/completions", chat); s.Local == nil || s.Local.Status != 429 {
				t.Fatal("a 4th request passed a burst of 3: a take was lost in the conflict")
			}
		}
	})
}

// TestWasmCacheAcrossWorkers: a response stored by one worker answers the
// same request on another, until it expires.
func TestWasmCacheAcrossWorkers(t *testing.T) {
	eachMode(t, func(t *testing.T, m mode) {
		h := m.start(t, 2, `{"cache": {"enabled": true, "ttl": "30s"}}`)
		s := request(h.Workers[0], "/v1/chat/completions", chat)
		if !passed(s) {
			t.Fatal("first request answered locally")
		}
		respond(s, 200, "application/json", usage(9))
		if Header(s.ResponseHeaders, "x-autoglm-cache") != "MISS" {
			t.Fatalf("first: %v", s.ResponseHeaders)
		}
		s = request(h.Workers[1], "/v1/chat/completions", chat)
		if s.Local == nil || s.Local.Status != 200 || string(s.Local.Body) != usage(9) || Header(s.Local.Headers, "x-autoglm-cache") != "HIT" {
			t.Fatalf("second worker: %+v", s.Local)
		}
		h.Advance(31 * time.Second)
		if s := request(h.Workers[1], "/v1/chat/completions", chat); !passed(s) {
			t.Fatal("expired entry served")
		}
		// Another identity does not share the entry.
		h.Advance(-31 * time.Second)
		h.SetProperty(peer, "spiffe://mesh.local/ns/b/sa/other")
		if s := request(h.Workers[0], "/v1/chat/completions", chat); !passed(s) {
			t.Fatal("another tenant got this tenant's entry")
		}
	})
}

// TestWasmBadConfig: the plugin refuses to start, naming the field.
func TestWasmBadConfig(t *testing.T) {
	bin, err := Module()
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(context.Background(), bin, Config{Plugin: []byte(`{"throttle": {"enabled": true, "max_cas_retries": 0}}`)})
	if err == nil || !strings.Contains(err.Error(), "throttle.max_cas_retries") {
		t.Fatalf("err %v", err)
	}
}

// TestWasmFailOpenClosed: with the shared state failing, fail_open admits
// and counts the failure; fail_open false answers 503 with Retry-After.
func TestWasmFailOpenClosed(t *testing.T) {
	eachMode(t, func(t *testing.T, m mode) {
		for _, open := range []bool{true, false} {
			h := m.start(t, 1, fmt.Sprintf(`{"throttle": {"enabled": true, "requests_per_second": 5, "fail_open": %v}}`, open))
			h.SharedDown = true
			s := request(h.Workers[0], "/v1/chat/completions", chat)
			if open && !passed(s) {
				t.Fatalf("fail-open refused: %+v", s.Local)
			}
			if !open && (s.Local == nil || s.Local.Status != 503 || Header(s.Local.Headers, "retry-after") == "") {
				t.Fatalf("fail-closed: %+v", s.Local)
			}
			if n := h.Workers[0].Metric("autoglm_filter_shared_state_errors_total"); n != 1 {
				t.Fatalf("state errors %d", n)
			}
		}
	})
}

// TestWasmLeases: far from its limit a tenant is decided from the
// worker's lease, without reading the shared state each time (token
// settlement included); near it, from the shared state; and across
// workers no token is made or lost.
func TestWasmLeases(t *testing.T) {
	eachMode(t, func(t *testing.T, m mode) {
		h := m.start(t, 1, `{"throttle": {"enabled": true, "requests_per_second": 1000, "request_burst": 1600, "tokens_per_minute": 6e6}}`)
		for range 200 {
			s := request(h.Workers[0], "/v1/chat/completions", chat)
			if !passed(s) {
				t.Fatalf("refused far from the limit: %+v", s.Local)
			}
			respond(s, 200, "application/json", usage(9))
		}
		// A lease is at most 1/16 of the bucket: 100 requests. Creating
		// the tenant's state reads the creation lock twice and the state
		// once more, and the plugin's start the lock: 4 reads, once.
		if h.SharedReads > 6+4 {
			t.Fatalf("%d shared-state reads for 200 requests far from the limit", h.SharedReads)
		}
		// A lease is used for a second at most.
		reads := h.SharedReads
		h.Advance(1100 * time.Millisecond)
		s := request(h.Workers[0], "/v1/chat/completions", chat)
		respond(s, 200, "application/json", usage(9))
		if !passed(s) || h.SharedReads == reads {
			t.Fatalf("an expired lease was used (local %+v)", s.Local)
		}

		// Two workers take turns until both are refused: exactly the burst.
		h = m.start(t, 2, `{"throttle": {"enabled": true, "requests_per_second": 0.0001, "request_burst": 64}}`)
		admitted := 0
		for i := 0; i < 400; i++ {
			s := request(h.Workers[i%2], "/v1/chat/completions", chat)
			if passed(s) {
				admitted++
			}
			s.Done()
		}
		reads = h.SharedReads
		if admitted != 64 {
			t.Fatalf("%d admitted across two workers, want the burst of 64", admitted)
		}
		if reads < 400-64 {
			t.Fatalf("%d shared reads: refusals near the limit must come from the shared state", reads)
		}
	})
}

// TestWasmGlobalRefusalGivesBack: a request the rate limit service
// refuses gives back what the local buckets took for it, so refusals
// elsewhere do not spend the tenant's local budget.
func TestWasmGlobalRefusalGivesBack(t *testing.T) {
	eachMode(t, func(t *testing.T, m mode) {
		over := true
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if over {
				w.WriteHeader(429)
				fmt.Fprint(w, `{"overallCode":"OVER_LIMIT","statuses":[{"code":"OVER_LIMIT","currentLimit":{"requestsPerUnit":1},"durationUntilReset":"3s"}]}`)
				return
			}
			fmt.Fprint(w, `{"overallCode":"OK"}`)
		}))
		defer srv.Close()
		bin, err := Module()
		if err != nil {
			t.Fatal(err)
		}
		h, err := New(context.Background(), bin, Config{Workers: 2, Clusters: map[string]string{"rl": srv.URL},
			Plugin:                      []byte(withMode(`{"throttle": {"enabled": true, "requests_per_second": 0.0001, "request_burst": 2, "global": {"cluster": "rl"}}}`, m.name)),
			Properties:                  map[string]string{peer: "spiffe://mesh.local/ns/a/sa/app"},
			AllowOnHeadersStopIteration: m.allowStop})
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		send := func(w *Worker) *Stream {
			s := request(w, "/v1/chat/completions", chat)
			h.Dispatch()
			return s
		}
		for i := range 6 {
			if s := send(h.Workers[i%2]); s.Local == nil || s.Local.Status != 429 || Header(s.Local.Headers, "retry-after") != "3" {
				t.Fatalf("refusal %d: %+v", i, s.Local)
			}
		}
		over = false
		admitted := 0
		for i := range 6 {
			if s := send(h.Workers[i%2]); passed(s) && s.Resumed == 1 {
				admitted++
			}
		}
		if admitted != 2 {
			t.Fatalf("%d admitted after the global refusals, want the local burst of 2", admitted)
		}
	})
}
