package bench

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/remote"
	"github.com/open-autoglm/autoglm/inference/testengine"
	"github.com/open-autoglm/autoglm/sidecar/config"
	"github.com/open-autoglm/autoglm/sidecar/server"
)

// startSidecar runs an in-process sidecar on loopback and returns its base
// URL.
func startSidecar(b *testing.B, cfg config.Config, ec testengine.Config) string {
	b.Helper()
	ec.Model = cfg.Engine.Model
	return serve(b, server.New(cfg, testengine.New(ec), 0, slog.New(slog.DiscardHandler)))
}

// startRemote runs an in-process sidecar whose engine is the
// OpenAI-compatible server at upstream, configured by cfg.Engine.Remote.
func startRemote(b *testing.B, cfg config.Config, upstream string) string {
	b.Helper()
	c, err := remote.New(remote.Config{URL: upstream, Model: cfg.Engine.Model})
	if err != nil {
		b.Fatal(err)
	}
	return serve(b, server.NewRemote(cfg, c, inference.Info{Model: cfg.Engine.Model}, slog.New(slog.DiscardHandler)))
}

func serve(b *testing.B, srv *server.Server) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, server.Listeners{HTTP: l}) }()
	b.Cleanup(func() {
		cancel()
		<-done
	})
	for !srv.Ready() {
		time.Sleep(time.Millisecond)
	}
	return "http://" + l.Addr().String()
}

func httpClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConns: 4096, MaxIdleConnsPerHost: 4096, MaxConnsPerHost: 0}}
}

func testConfigZeroCost() testengine.Config { return testengine.Config{} }
