package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/testengine"
	"github.com/open-autoglm/autoglm/sidecar/batch"
	"github.com/open-autoglm/autoglm/sidecar/config"
)

// sidecar is a running Server on loopback.
type sidecar struct {
	*Server
	url      string
	grpcAddr string
	stop     func() error
}

func testConfig() config.Config {
	c := config.Default()
	c.Engine.Test.StepCost = 0
	c.Engine.Test.SeqCost = 0
	c.Admission.RetryAfter = 2 * time.Second
	c.Server.DrainTimeout = 5 * time.Second
	return c
}

func startWith(t testing.TB, cfg config.Config, eng inference.Engine, setup ...func(*Server)) *sidecar {
	t.Helper()
	return startServer(t, New(cfg, eng, 0, slog.New(slog.DiscardHandler)), setup...)
}

// startServer runs srv on loopback until the test ends and waits until it
// is ready.
func startServer(t testing.TB, srv *Server, setup ...func(*Server)) *sidecar {
	t.Helper()
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range setup {
		f(srv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, Listeners{HTTP: hl, GRPC: gl}) }()
	sc := &sidecar{Server: srv, url: "http://" + hl.Addr().String(), grpcAddr: gl.Addr().String()}
	stopped := false
	sc.stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not return after cancel")
			return nil
		}
	}
	t.Cleanup(func() {
		if err := sc.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	for !srv.Ready() {
		select {
		case err := <-done:
			t.Fatalf("Run returned before ready: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	return sc
}

func startB(b *testing.B) *sidecar {
	cfg := testConfig()
	cfg.Batch.MaxBatchSize = 64
	return startWith(b, cfg, testengine.New(testengine.Config{Model: cfg.Engine.Model, ContextLength: 512}))
}

func start(t *testing.T) *sidecar {
	t.Helper()
	cfg := testConfig()
	return startWith(t, cfg, testengine.New(testengine.Config{Model: cfg.Engine.Model, ContextLength: 512}))
}

func TestHealthAndReadiness(t *testing.T) {
	sc := start(t)
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get(sc.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
	}
}

func batchRequest() batch.Request { return batch.Request{Prompt: []int{'x'}, MaxTokens: 1} }

// runHTTP runs srv on l alone (no gRPC listener) until it is ready, and
// returns its URL and the stop that cancels it and waits for Run (its
// error, or a failure after 10 s).
func runHTTP(t *testing.T, srv *Server, l net.Listener) (url string, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, Listeners{HTTP: l}) }()
	for !srv.Ready() {
		time.Sleep(time.Millisecond)
	}
	return "http://" + l.Addr().String(), func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("Run did not return 10 s after its context ended")
		}
	}
}
