package server

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/inference/testengine"
)

// The connection limits of the HTTP server, each observed by a client that
// misbehaves over a raw TCP connection.

func limitedSidecar(t *testing.T, set func(*Server)) (*sidecar, string) {
	t.Helper()
	cfg := testConfig()
	cfg.Server.IdleTimeout = 300 * time.Millisecond
	cfg.Server.BodyTimeout = 300 * time.Millisecond
	cfg.Server.HeaderTimeout = 300 * time.Millisecond
	cfg.Server.WriteTimeout = 300 * time.Millisecond
	cfg.Server.MaxHeaderBytes = 8 << 10
	eng := testengine.New(testengine.Config{Model: cfg.Engine.Model, ContextLength: 1 << 20})
	srv := New(cfg, eng, 0, slog.New(slog.DiscardHandler))
	if set != nil {
		set(srv)
	}
	sc := startServer(t, srv)
	return sc, strings.TrimPrefix(sc.url, "http://")
}

// closedWithin reports whether the server closes conn within d (reading
// and dropping whatever it sends).
func closedWithin(conn net.Conn, d time.Duration) bool {
	conn.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, conn)
	return err == nil // EOF: closed by the server; a timeout is an error
}

func TestIdleKeepAliveClosed(t *testing.T) {
	_, addr := limitedSidecar(t, nil)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	}
	resp.Body.Close()
	if !closedWithin(conn, 3*time.Second) {
		t.Fatal("an idle keep-alive connection stayed open past idle_timeout")
	}
}

func TestSlowHeadersAndBodyClosed(t *testing.T) {
	_, addr := limitedSidecar(t, nil)
	for _, send := range []string{
		"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n",                                                   // headers never end
		"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"model\":\"autoglm-te", // body never ends
	} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprint(conn, send)
		if !closedWithin(conn, 3*time.Second) {
			t.Fatalf("%q: the connection stayed open", send)
		}
		conn.Close()
	}
}

func TestHeaderBytesCapped(t *testing.T) {
	sc, _ := limitedSidecar(t, nil)
	req, _ := http.NewRequest("GET", sc.url+"/healthz", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 16<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("16 KiB of headers over a cap of 8 KiB: %d", resp.StatusCode)
	}
}

func TestConnectionsCapped(t *testing.T) {
	_, addr := limitedSidecar(t, func(s *Server) { s.opts.MaxConnections = 2; s.opts.HeaderTimeout = 5 * time.Second })
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	third, err := net.Dial("tcp", addr) // the kernel accepts; the server does not yet
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	fmt.Fprintf(third, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	third.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := third.Read(make([]byte, 1)); err == nil {
		t.Fatal("a third connection was served with max_connections 2")
	}
	held[0].Close()
	third.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(third), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after one closed: %v %v", resp, err)
	}
}

// TestStalledStreamReaderCut: a client that stops reading an SSE stream
// has it cut once a write makes no progress for write_timeout (the
// connection closes, no [DONE]); a stream that is read is not cut however
// long it runs.
func TestStalledStreamReaderCut(t *testing.T) {
	stalledStream(t, nil)
}

// smallBuffers gives accepted connections small send buffers, so that a
// client that stops reading stalls the server's writes within a few
// events rather than megabytes.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(4 << 10)
	}
	return c, err
}

func stalledStream(t *testing.T, set func(*Server)) {
	cfg := testConfig()
	cfg.Server.WriteTimeout = 300 * time.Millisecond
	srv := New(cfg, testengine.New(testengine.Config{Model: cfg.Engine.Model, ContextLength: 1 << 20}), 0, slog.New(slog.DiscardHandler))
	if set != nil {
		set(srv)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url, stop := runHTTP(t, srv, smallBuffers{hl})
	defer stop()
	sc := &sidecar{Server: srv, url: url}
	addr := hl.Addr().String()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	body := `{"model":"autoglm-test","stream":true,"max_tokens":200000,"messages":[{"role":"user","content":"hi"}]}`
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	time.Sleep(1500 * time.Millisecond) // read nothing: the server's writes stall
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("the stalled stream's connection did not close: %v", err)
	}
	if strings.Contains(string(got), "data: [DONE]") || !strings.Contains(string(got), "200 OK") {
		t.Fatalf("the stalled stream was not cut (%d bytes, [DONE] %v)", len(got), strings.Contains(string(got), "data: [DONE]"))
	}
	// A stream that is read runs past write_timeout.
	resp, err := http.Post(sc.url+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"autoglm-test","stream":true,"max_tokens":3000,"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || !strings.HasSuffix(string(b), "data: [DONE]\n\n") {
		t.Fatalf("a read stream was cut: %v, %d bytes", err, len(b))
	}
}
