// Package sidecartest runs real in-process sidecars for tests.
package sidecartest

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/sidecar/config"
	"github.com/open-autoglm/autoglm/sidecar/server"
)

// Start serves a sidecar with cfg and eng on the listeners (grpc may be
// nil) until the test ends, and returns once it is ready.
func Start(t testing.TB, cfg config.Config, eng inference.Engine, http, grpc net.Listener) *server.Server {
	t.Helper()
	srv := server.New(cfg, eng, 0, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, server.Listeners{HTTP: http, GRPC: grpc}) }()
	t.Cleanup(func() { cancel(); <-done })
	for deadline := time.Now().Add(30 * time.Second); !srv.Ready(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the sidecar did not get ready")
		}
	}
	return srv
}

// Loopback is Start on two fresh loopback ports; it returns the HTTP
// address and the gRPC port.
func Loopback(t testing.TB, cfg config.Config, eng inference.Engine) (string, int) {
	t.Helper()
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	Start(t, cfg, eng, hl, gl)
	return hl.Addr().String(), gl.Addr().(*net.TCPAddr).Port
}
