package dispatch

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/inference/remote"
	"github.com/open-autoglm/autoglm/sidecar/admission"
	"github.com/open-autoglm/autoglm/sidecar/stream"
)

// stalling is an upstream whose streams send one chunk and then stall until
// the caller goes; its /metrics fails until ready is set.
type stalling struct {
	ready     atomic.Bool
	open      atomic.Int64 // streams in progress
	cancelled atomic.Int64
}

func (s *stalling) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/metrics" {
		if !s.ready.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "autoglm_max_running_sequences 2\n")
		return
	}
	s.open.Add(1)
	defer s.open.Add(-1)
	w.Header().Set("Content-Type", "text/event-stream")
	io.WriteString(w, "data: {\"choices\":[{\"text\":\"a\"}]}\n\n")
	w.(http.Flusher).Flush()
	<-r.Context().Done()
	s.cancelled.Add(1)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestDiscoveryThenStop: jobs queue while the concurrency is unknown, run
// at most that many once it is read, and when Run ends the running ones
// are cancelled upstream and every job fails with ErrStopped.
func TestDiscoveryThenStop(t *testing.T) {
	up := &stalling{}
	srv := httptest.NewServer(up)
	defer srv.Close()
	c, err := remote.New(remote.Config{URL: srv.URL, Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	d := New(Config{Gauge: remote.Gauge{Metric: "autoglm_max_running_sequences"}, Queue: admission.Config{Levels: 2, MaxQueue: 8}}, c, slog.New(slog.DiscardHandler))
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()

	var jobs []*Job
	for range 3 {
		j, err := d.Submit(context.Background(), Request{Request: remote.Request{Prompt: "p"}})
		if err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, j)
	}
	time.Sleep(150 * time.Millisecond) // at least one failed discovery
	if running, limit, queued := d.Load(); running != 0 || limit != 0 || queued != 3 {
		t.Fatalf("before discovery: running %d, limit %d, queued %d", running, limit, queued)
	}
	up.ready.Store(true)
	waitFor(t, "two streams upstream", func() bool { return up.open.Load() == 2 })
	if text, err := jobs[0].Next(); text != "a" || err != nil {
		t.Fatalf("%q %v", text, err)
	}
	if running, limit, queued := d.Load(); running != 2 || limit != 2 || queued != 1 {
		t.Fatalf("running %d, limit %d, queued %d", running, limit, queued)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i, j := range jobs {
		if _, err := j.Wait(); !errors.Is(err, stream.ErrStopped) {
			t.Errorf("job %d: %v", i, err)
		}
	}
	waitFor(t, "upstream streams cancelled", func() bool { return up.cancelled.Load() == 2 && up.open.Load() == 0 })
	if _, err := d.Submit(context.Background(), Request{}); !errors.Is(err, admission.ErrClosed) {
		t.Fatalf("submit after stop: %v", err)
	}
}

// TestCallerLeaves: a queued job whose deadline passes leaves the queue
// with ErrDeadline; a running one whose caller goes is cancelled upstream.
func TestCallerLeaves(t *testing.T) {
	up := &stalling{}
	up.ready.Store(true)
	srv := httptest.NewServer(up)
	defer srv.Close()
	c, _ := remote.New(remote.Config{URL: srv.URL, Model: "m"})
	d := New(Config{Concurrency: 1, Queue: admission.Config{Levels: 1, MaxQueue: 8}}, c, slog.New(slog.DiscardHandler))
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go d.Run(ctx)

	callCtx, leave := context.WithCancel(context.Background())
	running, _ := d.Submit(callCtx, Request{Request: remote.Request{Prompt: "p"}})
	if text, err := running.Next(); text != "a" || err != nil {
		t.Fatalf("%q %v", text, err)
	}
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	queued, err := d.Submit(short, Request{Request: remote.Request{Prompt: "q"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := queued.Wait(); !errors.Is(err, admission.ErrDeadline) {
		t.Fatalf("queued job: %v", err)
	}
	if _, _, q := d.Load(); q != 0 {
		t.Fatalf("queue holds %d", q)
	}
	leave()
	if _, err := running.Next(); !errors.Is(err, context.Canceled) {
		t.Fatalf("running job: %v", err)
	}
	waitFor(t, "the upstream stream cancelled", func() bool { return up.cancelled.Load() == 1 })
	waitFor(t, "the slot freed", func() bool { r, _, _ := d.Load(); return r == 0 })
}
