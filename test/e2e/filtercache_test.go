package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/filter/wasmtest"
	"github.com/open-autoglm/autoglm/internal/redistest"
)

// TestFilterRemoteCache: the compiled filter in two separate proxies (two
// wazero hosts: no shared data between them) and one autoglm-sidecar whose
// /v1/cache endpoint keeps entries in a real Redis. A response stored by
// the first proxy answers the same request on the second through the
// remote tier; with Redis lost under the sidecar, or the cache cluster
// down, requests go on (fail-open), and the errors are counted.
func TestFilterRemoteCache(t *testing.T) {
	bin, err := wasmtest.Module()
	if err != nil {
		t.Fatal(err)
	}
	redis := redistest.StartServer(t)
	redisAddr := redis.Addr
	sidecar := build(t)
	httpAddr, grpcAddr := freePort(t), freePort(t)
	sc := startSidecar(t, sidecar, fmt.Sprintf("server:\n  http_addr: %s\n  grpc_addr: %s\nengine:\n  kind: test\ncache:\n  redis_url: redis://%s/0\n  insecure_allow_unauthenticated: true\n", httpAddr, grpcAddr, redisAddr))
	sc.base = "http://" + httpAddr
	waitReady(t, sc)

	plugin := `{"cache": {"enabled": true, "ttl": "60s", "remote": {"cluster": "autoglm-cache", "authority": "cache", "timeout": "2s"}}}`
	proxy := func(clusters map[string]string) *wasmtest.Host {
		h, err := wasmtest.New(context.Background(), bin, wasmtest.Config{Plugin: []byte(plugin), Clusters: clusters,
			Properties: map[string]string{"connection/uri_san_peer_certificate": "spiffe://mesh.local/ns/a/sa/app"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		return h
	}
	clusters := map[string]string{"autoglm-cache": sc.base}
	a, b := proxy(clusters), proxy(clusters)
	body := `{"model":"m","messages":[{"role":"user","content":"cache me"}],"temperature":0}`
	const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	reply := `{"choices":[{"index":0,"message":{"content":"cached"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`
	send := func(h *wasmtest.Host) *wasmtest.Stream {
		s := h.Workers[0].NewStream()
		s.SendRequestHeaders([][2]string{{":method", "POST"}, {":path", "/v1/chat/completions"}, {":authority", "gw"},
			{"traceparent", traceparent}, {"x-b3-traceid", "a3ce929d0e0e4736"}, {"x-request-id", "req-1"}}, false)
		if a := s.SendRequestBody([]byte(body), true); a != wasmtest.Pause {
			t.Fatalf("the request was not held for the remote lookup: action %d", a)
		}
		h.Dispatch() // the GET to the sidecar
		return s
	}

	// Proxy A: a miss in both tiers; the request resumes; the response is
	// stored (PUT to the sidecar).
	s := send(a)
	if s.Local != nil || s.Resumed != 1 || !s.Upstream.End || string(s.Upstream.Body) != body {
		t.Fatalf("first request: local %+v, resumed %d, upstream %+v", s.Local, s.Resumed, s.Upstream)
	}
	// The trace context goes on with the request, and with the lookup.
	lookup := a.Workers[0].Callouts[0]
	for _, h := range [][2]string{{"traceparent", traceparent}, {"x-b3-traceid", "a3ce929d0e0e4736"}, {"x-request-id", "req-1"}} {
		if got := wasmtest.Header(s.Upstream.Headers, h[0]); got != h[1] {
			t.Errorf("the request reached the router with %s %q, want %q", h[0], got, h[1])
		}
		if got := wasmtest.Header(lookup.Headers, h[0]); got != h[1] {
			t.Errorf("the cache lookup carries %s %q, want %q (headers %v)", h[0], got, h[1], lookup.Headers)
		}
	}
	s.SendResponseHeaders([][2]string{{":status", "200"}, {"content-type", "application/json"}}, false)
	s.SendResponseBody([]byte(reply), true)
	s.Done()
	if wasmtest.Header(s.ResponseHeaders, "x-autoglm-cache") != "MISS" {
		t.Fatalf("first response: %v", s.ResponseHeaders)
	}
	a.Dispatch() // the PUT
	// Proxy B never saw it: the remote tier answers.
	s = send(b)
	if s.Local == nil || s.Local.Status != 200 || string(s.Local.Body) != reply || wasmtest.Header(s.Local.Headers, "x-autoglm-cache") != "HIT" {
		t.Fatalf("second proxy: %+v", s.Local)
	}
	// The sidecar counted it.
	metrics := get(t, sc.base+"/metrics")
	for _, want := range []string{`autoglm_cache_requests_total{op="get",result="hit"} 1`, `autoglm_cache_requests_total{op="put",result="stored"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Fatalf("metrics lack %s", want)
		}
	}
	// Redis lost under the cache tier: the sidecar answers the lookup
	// 503, the filter takes it as a miss and the request goes on
	// (fail-open); the sidecar counts the errors; nothing waits past the
	// filter's remote timeout.
	redis.Stop()
	body = `{"model":"m","messages":[{"role":"user","content":"while redis is down"}],"temperature":0}`
	start := time.Now()
	s = send(b)
	if s.Local != nil || s.Resumed != 1 || time.Since(start) > 3*time.Second {
		t.Fatalf("redis down: local %+v, resumed %d after %v", s.Local, s.Resumed, time.Since(start))
	}
	if m := get(t, sc.base+"/metrics"); !strings.Contains(m, `autoglm_cache_requests_total{op="get",result="error"} 1`) {
		t.Fatalf("the lookup error is not counted:\n%s", m)
	}
	// Redis back (empty): the tier works again.
	redis.Restart()
	body = `{"model":"m","messages":[{"role":"user","content":"redis is back"}],"temperature":0}`
	s = send(b)
	if s.Local != nil || s.Resumed != 1 {
		t.Fatalf("redis back: local %+v, resumed %d", s.Local, s.Resumed)
	}
	if m := get(t, sc.base+"/metrics"); !strings.Contains(m, `autoglm_cache_requests_total{op="get",result="miss"}`) {
		t.Fatalf("no lookup reached redis again:\n%s", m)
	}
	// Cache cluster down: a miss, and the request goes on.
	c := proxy(map[string]string{"autoglm-cache": "http://" + freePort(t)})
	s = send(c)
	if s.Local != nil || s.Resumed != 1 {
		t.Fatalf("cluster down: local %+v, resumed %d", s.Local, s.Resumed)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
