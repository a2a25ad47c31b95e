package wasmtest

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestWasmCacheStoresOnlyWholeAnswers: a 200 is stored only when it is a
// whole, successful answer that the upstream lets a shared cache keep.
func TestWasmCacheStoresOnlyWholeAnswers(t *testing.T) {
	done := `data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\ndata: [DONE]\n\n"
	part := `data: {"choices":[{"index":0,"delta":{"content":"h"},"finish_reason":null}]}` + "\n\n"
	for _, tc := range []struct {
		name   string
		ctype  string
		extra  [][2]string
		chunks []string
		stored bool
	}{
		{"whole stream", "text/event-stream", nil, []string{part, done}, true},
		{"stream cut short", "text/event-stream", nil, []string{part, part}, false},
		{"error event", "text/event-stream", nil, []string{part, `data: {"error":{"message":"deadline exceeded"}}` + "\n\n", "data: [DONE]\n\n"}, false},
		{"no-store", "application/json", [][2]string{{"cache-control", "no-store"}}, []string{usage(9)}, false},
		{"private", "application/json", [][2]string{{"cache-control", "max-age=60, private"}}, []string{usage(9)}, false},
		{"set-cookie", "application/json", [][2]string{{"set-cookie", "session=abc"}}, []string{usage(9)}, false},
		{"error body", "application/json", nil, []string{`{"error":{"message":"x"}}`}, false},
		{"whole json", "application/json", [][2]string{{"cache-control", "max-age=60"}}, []string{usage(9)}, true},
	} {
		eachMode(t, func(t *testing.T, m mode) {
			h := m.start(t, 2, `{"cache": {"enabled": true}}`)
			body := fmt.Sprintf(`{"model":"qwen","messages":[{"role":"user","content":%q}],"temperature":0}`, tc.name)
			s := request(h.Workers[0], "/v1/chat/completions", body)
			if !passed(s) {
				t.Fatalf("%s: first request %+v", tc.name, s.Local)
			}
			s.SendResponseHeaders(append([][2]string{{":status", "200"}, {"content-type", tc.ctype}}, tc.extra...), false)
			for i, c := range tc.chunks {
				s.SendResponseBody([]byte(c), i == len(tc.chunks)-1)
			}
			s.Done()
			s = request(h.Workers[1], "/v1/chat/completions", body)
			if hit := s.Local != nil && s.Local.Status == 200; hit != tc.stored {
				t.Fatalf("%s: served from the cache %v, want %v", tc.name, hit, tc.stored)
			}
			if tc.stored && string(s.Local.Body) != strings.Join(tc.chunks, "") {
				t.Fatalf("%s: replayed %q", tc.name, s.Local.Body)
			}
		})
	}
}

// TestWasmCacheKeyVariants: the same body on another API path, or pinned
// to another version, is another answer.
func TestWasmCacheKeyVariants(t *testing.T) {
	eachMode(t, func(t *testing.T, m mode) {
		h := m.start(t, 1, `{"cache": {"enabled": true}, "paths": ["/v1/chat/completions", "/v1/completions"]}`)
		w := h.Workers[0]
		body := `{"model":"qwen","prompt":"hi","messages":[{"role":"user","content":"hi"}],"temperature":0}`
		store := func(path string, extra ...[2]string) {
			s := request(w, path, body, extra...)
			if !passed(s) {
				t.Fatalf("%s %v: not a miss: %+v", path, extra, s.Local)
			}
			respond(s, 200, "application/json", usage(9))
		}
		hit := func(path string, extra ...[2]string) bool {
			s := request(w, path, body, extra...)
			defer s.Done()
			return s.Local != nil && s.Local.Status == 200
		}
		store("/v1/chat/completions")
		if hit("/v1/completions") {
			t.Fatal("a chat answer served a completions request")
		}
		if hit("/v1/chat/completions", [2]string{"x-autoglm-version", "v2"}) {
			t.Fatal("an unpinned answer served a request pinned to v2")
		}
		store("/v1/chat/completions", [2]string{"x-autoglm-version", "v2"})
		if !hit("/v1/chat/completions", [2]string{"x-autoglm-version", "v2"}) || hit("/v1/chat/completions", [2]string{"x-autoglm-version", "v1"}) {
			t.Fatal("pinned answers are not kept per version")
		}
		if !hit("/v1/chat/completions") {
			t.Fatal("the unpinned answer is gone")
		}
	})
}

// TestWasmCacheHotEntrySurvives: eviction is least recently used — an
// entry hit now and then survives a stream of cold stores many times the
// cache's size.
func TestWasmCacheHotEntrySurvives(t *testing.T) {
	eachMode(t, func(t *testing.T, m mode) {
		// About 1.1 KB an entry; 16 index shards of 4800 bytes: 4 entries
		// a shard, 64 in all.
		h := m.start(t, 2, `{"cache": {"enabled": true, "ttl": "1h", "max_bytes": 76800, "max_entry_bytes": 1500}}`)
		answer := `{"choices":[{"index":0,"message":{"content":"` + strings.Repeat("x", 1000) + `"},"finish_reason":"stop"}]}`
		body := func(name string) string {
			return fmt.Sprintf(`{"model":"qwen","messages":[{"role":"user","content":%q}],"temperature":0}`, name)
		}
		store := func(w *Worker, name string) {
			s := request(w, "/v1/chat/completions", body(name))
			if !passed(s) {
				t.Fatalf("%s: not a miss: %+v", name, s.Local)
			}
			respond(s, 200, "application/json", answer)
		}
		hit := func(w *Worker, name string) bool {
			s := request(w, "/v1/chat/completions", body(name))
			defer s.Done()
			return s.Local != nil && s.Local.Status == 200
		}
		store(h.Workers[0], "hot")
		cold := 0
		for round := range 60 {
			for range 8 {
				store(h.Workers[cold%2], fmt.Sprintf("cold-%d", cold))
				cold++
			}
			h.Advance(150 * time.Millisecond)
			if !hit(h.Workers[round%2], "hot") {
				t.Fatalf("the hot entry was evicted after %d cold stores (round %d)", cold, round)
			}
		}
		// The cache stayed within its size: the oldest cold entries went.
		if hit(h.Workers[0], "cold-0") {
			t.Fatal("the first cold entry is still there after 480 stores into 64 places")
		}
	})
}

// TestWasmCacheCoalescing: identical cacheable misses in flight at once,
// on any worker, reach the upstream once; the others are answered from the
// cache when the first's answer is stored, or go upstream when it will
// not be (an error, a client gone) or after cache.coalesce_wait.
func TestWasmCacheCoalescing(t *testing.T) {
	eachMode(t, func(t *testing.T, m mode) {
		h := m.start(t, 2, `{"cache": {"enabled": true, "coalesce_wait": "5s"}}`)
		body := func(n int) string {
			return fmt.Sprintf(`{"model":"qwen","messages":[{"role":"user","content":"same %d"}],"temperature":0}`, n)
		}
		held := func(s *Stream) bool { return s.Local == nil && !s.Upstream.End }

		// Stored: the followers are answered from the cache.
		lead := request(h.Workers[0], "/v1/chat/completions", body(1))
		f1 := request(h.Workers[1], "/v1/chat/completions", body(1))
		f2 := request(h.Workers[0], "/v1/chat/completions", body(1))
		if !passed(lead) || !held(f1) || !held(f2) {
			t.Fatalf("lead %+v, followers held %v %v", lead.Local, held(f1), held(f2))
		}
		h.Tick()
		if !held(f1) || !held(f2) {
			t.Fatal("followers released before the answer")
		}
		respond(lead, 200, "application/json", usage(9))
		h.Tick()
		for _, f := range []*Stream{f1, f2} {
			if f.Local == nil || f.Local.Status != 200 || string(f.Local.Body) != usage(9) || f.Upstream.End {
				t.Fatalf("follower: %+v, upstream %v", f.Local, f.Upstream.End)
			}
		}
		n := h.Workers[0].Metric("autoglm_filter_cache_coalesced_total") + h.Workers[1].Metric("autoglm_filter_cache_coalesced_total")
		if n != 2 {
			t.Fatalf("coalesced counter %d", n)
		}

		// Not stored (a 500): the follower goes upstream.
		lead = request(h.Workers[0], "/v1/chat/completions", body(2))
		f1 = request(h.Workers[1], "/v1/chat/completions", body(2))
		respond(lead, 500, "application/json", `{"error":{"message":"boom"}}`)
		h.Tick()
		if !passed(f1) || f1.Resumed != 1 {
			t.Fatalf("after the leader's 500: %+v, upstream %v", f1.Local, f1.Upstream.End)
		}

		// The leader never answers: the follower goes after coalesce_wait.
		request(h.Workers[0], "/v1/chat/completions", body(3))
		f1 = request(h.Workers[1], "/v1/chat/completions", body(3))
		h.Advance(time.Second)
		h.Tick()
		if !held(f1) {
			t.Fatal("released before coalesce_wait")
		}
		h.Advance(5 * time.Second)
		h.Tick()
		if !passed(f1) {
			t.Fatalf("still held after coalesce_wait: %+v", f1.Local)
		}
	})
}
