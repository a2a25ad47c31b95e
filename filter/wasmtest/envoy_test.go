package wasmtest

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
)

// TestWasmEnvoyDefaults: under Envoy's defaults — what Istio's WasmPlugin
// gives, with no way to set allow_on_headers_stop_iteration — and a
// plugin configuration that names no mode, every behaviour works: the
// request reaches the router whole, a bad body is answered 400, the
// limits answer 429, and a stored response answers on another worker.
// (A filter that pauses at the headers stalls every request here: the
// filter manager withholds the body it waits for.)
func TestWasmEnvoyDefaults(t *testing.T) {
	h := startWith(t, Config{Workers: 2, Properties: map[string]string{peer: "spiffe://mesh.local/ns/a/sa/app"},
		Plugin: []byte(`{"throttle": {"enabled": true, "requests_per_second": 0.001, "request_burst": 4}, "cache": {"enabled": true}}`)})
	s := request(h.Workers[0], "/v1/chat/completions", chat, [2]string{"x-autoglm-tenant", "forged"})
	if s.Stalled() {
		t.Fatal("the request stalled under Envoy's defaults")
	}
	if !passed(s) || string(s.Upstream.Body) != chat || Header(s.Upstream.Headers, "x-autoglm-tenant") != "spiffe://mesh.local/ns/a/sa/app" {
		t.Fatalf("upstream %+v, local %+v", s.Upstream, s.Local)
	}
	respond(s, 200, "application/json", usage(9))

	if s := request(h.Workers[1], "/v1/chat/completions", chat); s.Local == nil || s.Local.Status != 200 || Header(s.Local.Headers, "x-autoglm-cache") != "HIT" {
		t.Fatalf("cache hit on another worker: %+v", s.Local)
	}
	if s := request(h.Workers[1], "/v1/chat/completions", `{"model": 7}`); s.Local == nil || s.Local.Status != 400 {
		t.Fatalf("bad body: %+v (stalled %v)", s.Local, s.Stalled())
	}
	other := `{"model":"qwen","messages":[{"role":"user","content":"Say hi"}],"max_tokens":16}`
	// The first request and the cache hit each took one of the 4.
	for i := range 2 {
		if s := request(h.Workers[1-i], "/v1/chat/completions", other); !passed(s) {
			t.Fatalf("request %d of the burst: %+v (stalled %v)", i+3, s.Local, s.Stalled())
		}
	}
	s = request(h.Workers[0], "/v1/chat/completions", other)
	if s.Local == nil || s.Local.Status != 429 || Header(s.Local.Headers, "retry-after") == "" {
		t.Fatalf("past the burst: %+v (stalled %v)", s.Local, s.Stalled())
	}
	if s.Upstream.Headers != nil && s.Upstream.End {
		t.Fatal("a refused request reached the router whole")
	}
}

// TestWasmStandaloneNeedsTheFlag: standalone mode holds the headers, so it
// needs allow_on_headers_stop_iteration; without it the request stalls
// (which is why autoglm-xds always sets the flag and its validate refuses
// an Envoy too old to have it).
func TestWasmStandaloneNeedsTheFlag(t *testing.T) {
	for _, flag := range []bool{false, true} {
		h := startWith(t, Config{Plugin: []byte(`{"mode": "standalone"}`), AllowOnHeadersStopIteration: flag,
			Properties: map[string]string{peer: "spiffe://mesh.local/ns/a/sa/app"}})
		s := request(h.Workers[0], "/v1/chat/completions", chat)
		if s.Stalled() != !flag {
			t.Fatalf("flag %v: stalled %v", flag, s.Stalled())
		}
	}
}

// TestWasmParallelFreshTenant: workers running truly in parallel (a
// goroutine each, yielding between every shared-data read and write) all
// start on a tenant that has no state yet. Admission stays within the
// burst in every run: no lease is taken in the write that creates the
// state, and no creation overwrites a take. Far from the limit nothing is
// lost either: what leases strand is at most a sixteenth of the bucket a
// worker.
func TestWasmParallelFreshTenant(t *testing.T) {
	const workers, burst, each, runs = 4, 64, 40, 60
	for _, m := range modes {
		h := m.start(t, workers, fmt.Sprintf(`{"throttle": {"enabled": true, "requests_per_second": 0.0001, "request_burst": %d}}`, burst))
		h.Interleave = runtime.Gosched
		var seen int64
		for run := range runs {
			h.SetProperty(peer, fmt.Sprintf("spiffe://mesh.local/ns/a/sa/fresh-%d", run))
			var mu sync.Mutex
			admitted := 0
			var wg sync.WaitGroup
			for _, w := range h.Workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					n := 0
					for range each {
						s := request(w, "/v1/chat/completions", chat)
						if passed(s) {
							n++
						}
						s.Done()
					}
					mu.Lock()
					admitted += n
					mu.Unlock()
				}()
			}
			wg.Wait()
			// Requests refused for contention (max_cas_retries conflicts
			// in a row) did not get to take: they count toward the floor.
			contended := int64(0)
			for _, w := range h.Workers {
				contended += w.Metric("autoglm_filter_throttle_conflicts_total")
			}
			if admitted > burst || admitted+int(contended-seen) < burst-workers*burst/16 {
				t.Fatalf("%s, run %d: %d admitted (%d refused for contention) from a fresh tenant's burst of %d by %d parallel workers",
					m.name, run, admitted, contended-seen, burst, workers)
			}
			seen = contended
		}
		for _, w := range h.Workers {
			if n := w.Metric("autoglm_filter_shared_state_errors_total"); n != 0 {
				t.Fatalf("%s: %d shared state errors", m.name, n)
			}
		}
	}
}
