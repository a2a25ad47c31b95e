package wasmtest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkFilter: the cost of one request through the compiled filter in
// wazero (request headers and body, response headers and body, stream
// end), median and p99 over 3000 requests, against a filter that does
// nothing, built the same way, in the same host:
//   - pass: the filter with cache and throttle off (body read, model and
//     tenant headers set);
//   - throttle: request and token buckets on (never refusing); the
//     throttle decision is its cost over pass;
//   - miss: cache on, every request new (lookup, record, store);
//   - hit: cache on, the same request answered from the local tier
//     (request side only: the filter answers it).
func BenchmarkFilter(b *testing.B) {
	const n = 3000
	body := []byte(`{"model":"qwen","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Summarise the plot of Hamlet in two sentences."}],"max_tokens":64,"temperature":0}`)
	reply := []byte(`{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"A prince avenges his father, and nearly everyone dies."},"finish_reason":"stop"}],"usage":{"prompt_tokens":30,"completion_tokens":12,"total_tokens":42}}`)
	reqHeaders := [][2]string{{":method", "POST"}, {":path", "/v1/chat/completions"}, {":authority", "gw"}, {"content-type", "application/json"}, {"x-request-id", "abc"}}
	respHeaders := [][2]string{{":status", "200"}, {"content-type", "application/json"}}
	run := func(b *testing.B, bin []byte, plugin string, vary, answered bool) []time.Duration {
		h, err := New(context.Background(), bin, Config{Plugin: []byte(plugin), Properties: map[string]string{peer: "spiffe://mesh.local/ns/a/sa/app"}})
		if err != nil {
			b.Fatal(err)
		}
		defer h.Close()
		w := h.Workers[0]
		d := make([]time.Duration, 0, n)
		for i := range n + 200 { // the first 200 warm up
			req := body
			if vary {
				req = fmt.Appendf(nil, `{"model":"qwen","messages":[{"role":"user","content":"question %d"}],"max_tokens":64,"temperature":0}`, i)
			}
			t0 := time.Now()
			s := w.NewStream()
			s.SendRequestHeaders(reqHeaders, false)
			s.SendRequestBody(req, true)
			if answered && s.Local == nil && i > 0 {
				b.Fatal("expected a cache hit")
			}
			if s.Local == nil {
				s.SendResponseHeaders(respHeaders, false)
				s.SendResponseBody(reply, true)
			}
			s.Done()
			if i >= 200 {
				d = append(d, time.Since(t0))
			}
		}
		slices.Sort(d)
		return d
	}
	filter, err := Module()
	if err != nil {
		b.Fatal(err)
	}
	emptyBin, err := EmptyModule()
	if err != nil {
		b.Fatal(err)
	}
	q := func(d []time.Duration, p float64) float64 {
		return float64(d[int(p*float64(len(d)-1))].Nanoseconds()) / 1e3
	}
	for range b.N {
		base := run(b, emptyBin, `{}`, false, false)
		pass := run(b, filter, `{}`, false, false)
		thr := run(b, filter, `{"throttle": {"enabled": true, "requests_per_second": 1e9, "tokens_per_minute": 1e12}}`, false, false)
		miss := run(b, filter, `{"cache": {"enabled": true, "max_bytes": 67108864}}`, true, false)
		hit := run(b, filter, `{"cache": {"enabled": true}}`, false, true)
		for _, c := range []struct {
			name string
			d    []time.Duration
		}{{"empty", base}, {"pass", pass}, {"throttle", thr}, {"miss", miss}, {"hit", hit}} {
			b.ReportMetric(q(c.d, 0.5), c.name+"-p50-µs")
			b.ReportMetric(q(c.d, 0.99), c.name+"-p99-µs")
		}
		b.ReportMetric(q(thr, 0.5)-q(pass, 0.5), "throttle-decision-p50-µs")
		b.ReportMetric(q(thr, 0.99)-q(pass, 0.99), "throttle-decision-p99-µs")
	}
}
