package server

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/inference/testengine"
)

// TestDrainPastTimeoutAnswers: what still runs at the drain timeout ends
// with an answer — a running stream with an error event and [DONE], a
// queued request with 503 and Retry-After — not a cut connection.
func TestDrainPastTimeoutAnswers(t *testing.T) {
	cfg := testConfig()
	cfg.Server.DrainTimeout = 200 * time.Millisecond
	cfg.Batch.MaxBatchSize = 1
	srv := New(cfg, testengine.New(testengine.Config{Model: cfg.Engine.Model, ContextLength: 100000, Slots: 1, StepCost: time.Millisecond}), 0, slog.New(slog.DiscardHandler))
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base, stop := runHTTP(t, srv, hl)
	url := base + "/v1/chat/completions"
	type answer struct {
		status     int
		retryAfter string
		body       string
		err        error
	}
	send := func(body string) chan answer {
		c := make(chan answer, 1)
		go func() {
			resp, err := http.Post(url, "application/json", strings.NewReader(body))
			if err != nil {
				c <- answer{err: err}
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			c <- answer{resp.StatusCode, resp.Header.Get("Retry-After"), string(b), err}
		}()
		return c
	}
	streamed := send(`{"model":"autoglm-test","stream":true,"max_tokens":90000,"messages":[{"role":"user","content":"hi"}]}`)
	for r, _, _ := srv.sched.Load(); r == 0; r, _, _ = srv.sched.Load() {
		time.Sleep(time.Millisecond)
	}
	queued := send(`{"model":"autoglm-test","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`)
	for _, q, _ := srv.sched.Load(); q == 0; _, q, _ = srv.sched.Load() {
		time.Sleep(time.Millisecond)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	s := <-streamed
	if s.err != nil || s.status != 200 || !strings.Contains(s.body, `"error"`) || !strings.HasSuffix(s.body, "data: [DONE]\n\n") {
		t.Fatalf("the running stream: %d %v, ends %q", s.status, s.err, s.body[max(0, len(s.body)-200):])
	}
	q := <-queued
	if q.err != nil || q.status != 503 || q.retryAfter == "" || !strings.Contains(q.body, "shutting down") {
		t.Fatalf("the queued request: %+v", q)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Run: %v", err)
	}
}
