package wasmtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
)

// BenchmarkFilter: the cost of requests through the compiled filter in
// wazero, median and p99 over 3000 requests per configuration, each on its
// own host, the configurations taking turns by blocks of 100 requests
// (this machine is shared and noisy: each figure is compared with others
// taken in the same seconds; request by request, five VMs evict each
// other's memory from the CPU's caches):
//   - empty: a filter that does nothing, built the same way;
//   - pass: the filter with cache and throttle off (body read, model and
//     tenant headers set);
//   - throttle: request and token buckets on, never refusing;
//   - hit: cache on, the same request answered from the local tier;
//   - hit-rewritten: the same, but each request's bytes differ (a new
//     "user", which the cache key leaves out): the key is derived from the
//     canonical form each time instead of remembered;
//   - miss: cache on, every request new (lookup, record, store).
//
// A request's request side is context creation, request headers and
// request body (and, when the filter answers it, the stream's end); its
// response side is response headers, response body and the stream's end.
// The throttle decision is the throttle's request body callback (where
// it decides) over pass's; its settlement (reading the usage, returning
// unused tokens) the same for the response body callback.
func BenchmarkFilter(b *testing.B) {
	const n, warm, block = 3000, 300, 100
	body := []byte(`{"model":"qwen","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Summarise the plot of Hamlet in two sentences."}],"max_tokens":64,"temperature":0}`)
	reply := []byte(`{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"A prince avenges his father, and nearly everyone dies."},"finish_reason":"stop"}],"usage":{"prompt_tokens":30,"completion_tokens":12,"total_tokens":42}}`)
	reqHeaders := [][2]string{{":method", "POST"}, {":path", "/v1/chat/completions"}, {":authority", "gw"}, {"content-type", "application/json"},
		{"x-request-id", "abc"}, {"user-agent", "OpenAI/Python 1.50.0"}, {"accept", "application/json"}, {"authorization", "Bearer sk-x"}}
	respHeaders := [][2]string{{":status", "200"}, {"content-type", "application/json"}}
	filter, err := Module()
	if err != nil {
		b.Fatal(err)
	}
	emptyBin, err := EmptyModule()
	if err != nil {
		b.Fatal(err)
	}
	type conf struct {
		name          string
		bin           []byte
		plugin        string
		vary, answers bool
		user          bool // a different "user" each time: a hit by the canonical form
		w             *Worker
		req, resp     []time.Duration
		// The request and response body callbacks alone.
		reqBody, respBody []time.Duration
	}
	confs := []*conf{
		{name: "empty", bin: emptyBin, plugin: `{}`},
		// Standalone mode (autoglm-xds's): the most work per request —
		// the model header set and the route cache cleared.
		{name: "pass", bin: filter, plugin: `{"mode": "standalone"}`},
		{name: "throttle", bin: filter, plugin: `{"mode": "standalone", "throttle": {"enabled": true, "requests_per_second": 1e9, "tokens_per_minute": 1e12}}`},
		{name: "hit", bin: filter, plugin: `{"mode": "standalone", "cache": {"enabled": true}}`, answers: true},
		{name: "hit-rewritten", bin: filter, plugin: `{"mode": "standalone", "cache": {"enabled": true}}`, answers: true, user: true},
		{name: "miss", bin: filter, plugin: `{"mode": "standalone", "cache": {"enabled": true, "max_bytes": 67108864}}`, vary: true},
	}
	for _, c := range confs {
		h, err := New(context.Background(), c.bin, Config{Plugin: []byte(c.plugin), AllowOnHeadersStopIteration: true,
			Properties: map[string]string{peer: "spiffe://mesh.local/ns/a/sa/app"}})
		if err != nil {
			b.Fatal(err)
		}
		defer h.Close()
		c.w = h.Workers[0]
	}
	one := func(c *conf, i int) (req, resp, reqBody, respBody time.Duration) {
		r := body
		switch {
		case c.vary:
			r = fmt.Appendf(nil, `{"model":"qwen","messages":[{"role":"user","content":"question %d"}],"max_tokens":64,"temperature":0}`, i)
		case c.user:
			r = fmt.Appendf(nil, `{"user":"u%d",%s`, i, body[1:])
		}
		t0 := time.Now()
		s := c.w.NewStream()
		s.SendRequestHeaders(reqHeaders, false)
		tb := time.Now()
		s.SendRequestBody(r, true)
		reqBody = time.Since(tb)
		if s.Local != nil {
			s.Done()
			return time.Since(t0), 0, reqBody, 0
		}
		if c.answers && i > 0 {
			b.Fatalf("%s: expected a cache hit", c.name)
		}
		t1 := time.Now()
		s.SendResponseHeaders(respHeaders, false)
		tb = time.Now()
		s.SendResponseBody(reply, true)
		respBody = time.Since(tb)
		s.Done()
		return t1.Sub(t0), time.Since(t1), reqBody, respBody
	}
	q := func(d []time.Duration, p float64) float64 {
		d = slices.Sorted(slices.Values(d))
		return float64(d[int(p*float64(len(d)-1))].Nanoseconds()) / 1e3
	}
	for range b.N {
		for from := 0; from < n+warm; from += block {
			for _, c := range confs {
				for i := from; i < from+block; i++ {
					req, resp, reqBody, respBody := one(c, i)
					if i >= warm {
						c.req, c.resp = append(c.req, req), append(c.resp, resp)
						c.reqBody, c.respBody = append(c.reqBody, reqBody), append(c.respBody, respBody)
					}
				}
			}
		}
		total := func(c *conf) []time.Duration {
			t := make([]time.Duration, len(c.req))
			for i := range t {
				t[i] = c.req[i] + c.resp[i]
			}
			return t
		}
		for _, c := range confs {
			b.ReportMetric(q(total(c), 0.5), c.name+"-p50-µs")
			b.ReportMetric(q(total(c), 0.99), c.name+"-p99-µs")
		}
		pass, thr := confs[1], confs[2] // see the order above
		for _, p := range []float64{0.5, 0.99} {
			b.ReportMetric(q(thr.reqBody, p)-q(pass.reqBody, p), fmt.Sprintf("throttle-decision-p%g-µs", p*100))
			b.ReportMetric(q(thr.respBody, p)-q(pass.respBody, p), fmt.Sprintf("throttle-settlement-p%g-µs", p*100))
		}
	}
}

// BenchmarkThrottleDecision times the throttle decision itself — the
// module's throttle function, from its call to its return — with wazero's
// function listener, which calls the host before and after the
// functions it is asked to watch. The listener's own cost is measured on
// a function that does nothing (the stream's OnHttpStreamDone, which the
// SDK calls once a request) and subtracted. Far from the limit: decided from the worker's
// lease; near it: from the shared state (read, compare-and-swap write).
func BenchmarkThrottleDecision(b *testing.B) {
	bin, err := Module()
	if err != nil {
		b.Fatal(err)
	}
	const fn, calib = ".github.com_open_autoglm_autoglm_filter_plugin.__stream_.throttle", ".github.com_open_autoglm_autoglm_filter_plugin.__stream_.OnHttpStreamDone"
	for _, c := range []struct{ name, plugin string }{
		{"lease", `{"throttle": {"enabled": true, "requests_per_second": 1e9, "tokens_per_minute": 1e12}}`},
		// A burst of 2 requests, refilled at once: every take leaves it at
		// half, where no lease is taken.
		{"shared", `{"throttle": {"enabled": true, "requests_per_second": 1e12, "request_burst": 2, "tokens_per_minute": 6e13, "token_burst": 1e9}}`},
	} {
		tm := &timer{watch: map[string]bool{fn: true, calib: true}, d: map[string][]time.Duration{}}
		h, err := New(context.Background(), bin, Config{Plugin: []byte(c.plugin), Listener: tm,
			Properties: map[string]string{peer: "spiffe://mesh.local/ns/a/sa/app"}})
		if err != nil {
			b.Fatal(err)
		}
		w := h.Workers[0]
		for i := range 3300 {
			if i == 300 {
				clear(tm.d)
			}
			h.Advance(time.Millisecond) // the buckets refill
			s := request(w, "/v1/chat/completions", `{"model":"qwen","messages":[{"role":"user","content":"hi"}],"max_tokens":64}`)
			if s.Local != nil {
				b.Fatalf("%s: refused: %d %s", c.name, s.Local.Status, s.Local.Body)
			}
			respond(s, 200, "application/json", usage(42))
		}
		h.Close()
		med := func(d []time.Duration) float64 {
			slices.Sort(d)
			return float64(d[len(d)/2].Nanoseconds()) / 1e3
		}
		b.ReportMetric(med(tm.d[fn])-med(tm.d[calib]), c.name+"-p50-µs")
		b.ReportMetric(med(tm.d[calib]), c.name+"-listener-µs")
		b.ReportMetric(float64(h.SharedReads)/3300, c.name+"-shared-reads/req")
	}
}

// timer is a function listener that times the functions it watches
// (no nesting among them).
type timer struct {
	watch map[string]bool
	d     map[string][]time.Duration
	t0    time.Time
}

func (t *timer) NewFunctionListener(def api.FunctionDefinition) experimental.FunctionListener {
	if !t.watch[def.DebugName()] {
		return nil
	}
	return t
}

func (t *timer) Before(context.Context, api.Module, api.FunctionDefinition, []uint64, experimental.StackIterator) {
	t.t0 = time.Now()
}

func (t *timer) After(_ context.Context, _ api.Module, def api.FunctionDefinition, _ []uint64) {
	t.d[def.DebugName()] = append(t.d[def.DebugName()], time.Since(t.t0))
}

func (t *timer) Abort(context.Context, api.Module, api.FunctionDefinition, error) {}

// BenchmarkFilterV8 runs the same requests through the same modules in
// V8, Envoy's default wasm runtime, as Node.js embeds it (wasmtest/v8/
// host.mjs, a minimal proxy-wasm host: one worker, no callouts): empty,
// pass, throttle and hit, p50 and p99. Without node on PATH it reports
// nothing.
func BenchmarkFilterV8(b *testing.B) {
	node, err := exec.LookPath("node")
	if err != nil {
		b.Skip("node is not installed: no V8 to measure in")
	}
	dir := b.TempDir()
	for name, get := range map[string]func() ([]byte, error){"filter.wasm": Module, "empty.wasm": EmptyModule} {
		bin, err := get()
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), bin, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	_, file, _, _ := runtime.Caller(0)
	for range b.N {
		cmd := exec.Command(node, "--no-warnings", filepath.Join(filepath.Dir(file), "v8", "host.mjs"), filepath.Join(dir, "filter.wasm"), filepath.Join(dir, "empty.wasm"))
		out, err := cmd.Output()
		if err != nil {
			var stderr []byte
			if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
				stderr = ee.Stderr
			}
			b.Fatalf("%s: %v\n%s", cmd, err, stderr)
		}
		var report map[string]any
		if err := json.Unmarshal(out, &report); err != nil {
			b.Fatalf("%s: %v", out, err)
		}
		for k, v := range report {
			if f, ok := v.(float64); ok {
				b.ReportMetric(f, k)
			}
		}
	}
}
