package e2e

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/filter/wasmtest"
	"github.com/open-autoglm/autoglm/internal/redistest"
	"github.com/open-autoglm/autoglm/internal/toolcache"
)

// ratelimitBin is Envoy's rate limit service as make ratelimit caches it,
// at the version test/ratelimit pins.
func ratelimitBin(t *testing.T) string {
	t.Helper()
	mod, err := os.ReadFile("../ratelimit/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^require github.com/envoyproxy/ratelimit (\S+)$`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("test/ratelimit/go.mod does not pin github.com/envoyproxy/ratelimit")
	}
	return filepath.Join(toolcache.Require(t, "ratelimit", "ratelimit-"+string(m[1])+"/bin", "ratelimit"), "ratelimit")
}

// TestFilterGlobalRateLimit: two proxies (two wazero hosts running the
// compiled filter, no shared data between them) and Envoy's real rate limit
// service over Redis, allowing each tenant 5 requests an hour. Their
// local buckets would admit everything; together they admit exactly 5 of
// the tenant's 8 requests, answer the rest 429 with the service's reset,
// admit another tenant, and go on when the service is down (fail-open).
func TestFilterGlobalRateLimit(t *testing.T) {
	bin := ratelimitBin(t)
	wasm, err := wasmtest.Module()
	if err != nil {
		t.Fatal(err)
	}
	// A fixed window of an hour: not across its end.
	if left := time.Until(time.Now().Truncate(time.Hour).Add(time.Hour)); left < time.Minute {
		t.Logf("waiting %s for the next hour's window", left)
		time.Sleep(left + time.Second)
	}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "ratelimit", "config"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "ratelimit", "config", "autoglm.yaml"), []byte(
		"domain: autoglm\ndescriptors:\n  - key: tenant\n    rate_limit:\n      unit: hour\n      requests_per_unit: 5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	port := func() string {
		_, p, _ := net.SplitHostPort(freePort(t))
		return p
	}
	httpPort := port()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "USE_STATSD=false", "LOG_LEVEL=warn", "BACKEND_TYPE=redis", "REDIS_SOCKET_TYPE=tcp",
		"REDIS_URL="+redistest.Start(t), "RUNTIME_ROOT="+root, "RUNTIME_SUBDIRECTORY=ratelimit", "RUNTIME_WATCH_ROOT=false",
		"HOST=127.0.0.1", "PORT="+httpPort, "GRPC_HOST=127.0.0.1", "GRPC_PORT="+port(), "DEBUG_HOST=127.0.0.1", "DEBUG_PORT="+port())
	logs, _ := os.Create(filepath.Join(t.TempDir(), "ratelimit.log"))
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
	t.Cleanup(stop)
	base := "http://127.0.0.1:" + httpPort
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(base + "/healthcheck"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(logs.Name())
			t.Fatalf("the rate limit service did not become healthy:\n%s", out)
		}
	}

	plugin := `{"throttle": {"enabled": true, "requests_per_second": 1000, "tokens_per_minute": 1e9,
		"global": {"cluster": "ratelimit", "authority": "ratelimit", "timeout": "2s"}}}`
	proxy := func() *wasmtest.Host {
		h, err := wasmtest.New(context.Background(), wasm, wasmtest.Config{Plugin: []byte(plugin), Clusters: map[string]string{"ratelimit": base},
			Properties: map[string]string{"connection/uri_san_peer_certificate": "spiffe://mesh.local/ns/a/sa/app"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		return h
	}
	a, b := proxy(), proxy()
	send := func(h *wasmtest.Host) *wasmtest.Stream {
		t.Helper()
		s := h.Workers[0].NewStream()
		s.SendRequestHeaders([][2]string{{":method", "POST"}, {":path", "/v1/chat/completions"}, {":authority", "gw"}}, false)
		if act := s.SendRequestBody([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":8}`), true); act != wasmtest.Pause {
			t.Fatalf("not held for the rate limit service: action %d", act)
		}
		h.Dispatch()
		return s
	}
	admitted := 0
	for i := range 8 {
		s := send([]*wasmtest.Host{a, b}[i%2])
		switch {
		case s.Local == nil && s.Resumed == 1 && s.Upstream.End:
			admitted++
		case s.Local != nil && s.Local.Status == 429:
			ra, err := strconv.Atoi(wasmtest.Header(s.Local.Headers, "retry-after"))
			if err != nil || ra < 1 || ra > 3600 || wasmtest.Header(s.Local.Headers, "x-ratelimit-limit") != "5" {
				t.Fatalf("429 headers %v", s.Local.Headers)
			}
		default:
			out, _ := os.ReadFile(logs.Name())
			t.Fatalf("request %d: local %+v, resumed %d\n%s", i, s.Local, s.Resumed, out)
		}
	}
	if admitted != 5 {
		t.Fatalf("%d of 8 admitted across two proxies, want the global limit of 5", admitted)
	}
	a.SetProperty("connection/uri_san_peer_certificate", "spiffe://mesh.local/ns/b/sa/other")
	if s := send(a); s.Local != nil || s.Resumed != 1 {
		t.Fatalf("another tenant: local %+v", s.Local)
	}

	// The service down: fail-open admits, and counts the failure.
	stop()
	if s := send(b); s.Local != nil || s.Resumed != 1 {
		t.Fatalf("service down: local %+v, resumed %d", s.Local, s.Resumed)
	}
	if n := b.Workers[0].Metric("autoglm_filter_shared_state_errors_total"); n != 1 {
		t.Fatalf("state errors %d, want 1", n)
	}
}
