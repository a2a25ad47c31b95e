package remote

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

type connKey struct{}

// closingUpstream behaves as llama.cpp's and uvicorn's servers do with
// kept-alive connections: after every `per` requests on a connection it
// drops the connection on the next request without answering, and it
// closes connections idle for longer than idle.
func closingUpstream(t *testing.T, per int64, idle time.Duration) (*httptest.Server, *atomic.Int64) {
	var dropped atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if n := r.Context().Value(connKey{}).(*atomic.Int64).Add(1); n > per {
			dropped.Add(1)
			c, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				c.Close()
			}
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"choices\":[{\"index\":0,\"text\":\"ok\",\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
	}))
	srv.Config.ConnContext = func(ctx context.Context, _ net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, new(atomic.Int64))
	}
	srv.Config.IdleTimeout = idle
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &dropped
}

// TestUpstreamClosesKeptAliveConnections: 0 failed requests against an
// upstream that closes connections after 3 requests and after 150 ms idle,
// with gaps around that idle time; every dropped request is sent again.
func TestUpstreamClosesKeptAliveConnections(t *testing.T) {
	srv, dropped := closingUpstream(t, 3, 150*time.Millisecond)
	c, err := New(Config{URL: srv.URL, Model: "up"})
	if err != nil {
		t.Fatal(err)
	}
	failed := 0
	for i := range 120 {
		if i%10 == 9 {
			time.Sleep(140*time.Millisecond + time.Duration(i%3)*10*time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := c.Generate(ctx, &Request{Prompt: "hi"})
		if err == nil {
			_, err = drain(s)
			if err == io.EOF {
				err = nil
			}
		}
		cancel()
		if err != nil {
			failed++
			t.Logf("request %d: %v", i, err)
		}
	}
	if failed != 0 {
		t.Fatalf("%d of 120 requests failed", failed)
	}
	if dropped.Load() == 0 || c.Retries() < dropped.Load() {
		t.Fatalf("the upstream dropped %d requests, the client retried %d", dropped.Load(), c.Retries())
	}
	t.Logf("dropped %d, retried %d", dropped.Load(), c.Retries())
}
