package load

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestConnsReuseAndRecovery: keep-alive connections are reused after
// streamed and plain responses, a connection the server closed while idle
// is replaced without failing the request, and a cancelled request's
// connection is not reused.
func TestConnsReuseAndRecovery(t *testing.T) {
	var opened atomic.Int64
	stall := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		switch {
		case strings.Contains(string(b), `"stream":true`):
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n")
			w.(http.Flusher).Flush()
			io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\ndata: [DONE]\n\n")
		case strings.Contains(string(b), "stall"):
			<-stall
		default:
			io.WriteString(w, `{"choices":[{"message":{"content":"ok"}}],"usage":{"prompt_tokens":3,"completion_tokens":1}}`)
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			opened.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	defer close(stall)
	h := NewHTTP(srv.URL, "m")
	ctx := context.Background()
	for i := range 20 {
		res := h.Do(ctx, &Request{Prompt: "p", MaxTokens: 1, Stream: i%2 == 0})
		if res.Class != "" {
			t.Fatalf("request %d: %+v", i, res)
		}
	}
	if res := h.Do(ctx, &Request{Prompt: "p", Stream: true}); res.Text != "ab" || len(res.Gaps) != 1 {
		t.Fatalf("stream %+v", res)
	}
	if n := opened.Load(); n != 1 {
		t.Fatalf("%d connections for sequential requests, want 1", n)
	}
	srv.CloseClientConnections() // the server drops the idle connection
	time.Sleep(10 * time.Millisecond)
	if res := h.Do(ctx, &Request{Prompt: "p"}); res.Class != "" || opened.Load() != 2 {
		t.Fatalf("after the server closed the idle connection: %+v, %d connections", res, opened.Load())
	}
	short, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if res := h.Do(short, &Request{Prompt: "stall"}); res.Class != ClassTimeout {
		t.Fatalf("stalled request: class %q", res.Class)
	}
	if res := h.Do(ctx, &Request{Prompt: "p"}); res.Class != "" || opened.Load() != 3 {
		t.Fatalf("after a timeout: %+v, %d connections (the timed-out one must not be reused)", res, opened.Load())
	}
}

// TestConnsRefused: a refused connection is a transport error.
func TestConnsRefused(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	cs := newConns(addr)
	if _, err := cs.post(context.Background(), "/", nil, nil); err == nil || errors.Is(err, errStale) {
		t.Fatalf("got %v", err)
	}
}
