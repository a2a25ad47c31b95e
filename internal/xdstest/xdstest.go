// Package xdstest runs autoglm-xds and grpc-go's own xDS client for tests:
// a server publishing a configuration on loopback, and client connections
// that resolve xds:///NAME through it (proxyless gRPC).
package xdstest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	xdsgrpc "google.golang.org/grpc/xds"

	"github.com/open-autoglm/autoglm/xds/config"
	"github.com/open-autoglm/autoglm/xds/server"
)

// Serve publishes c on a new autoglm-xds server that serves ADS on
// loopback until the test ends; it returns the server and its address.
func Serve(t testing.TB, c *config.Config) (*server.Server, string) {
	t.Helper()
	s := server.New(slog.New(slog.DiscardHandler))
	if err := s.Publish(c); err != nil {
		t.Fatal(err)
	}
	return s, Run(t, s)
}

// Run serves s's ADS on loopback until the test ends and returns the
// address.
func Run(t testing.TB, s *server.Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, l) }()
	t.Cleanup(func() { stop(); <-done })
	return l.Addr().String()
}

// Client is a connection to xds:///name resolved through the ADS server
// at ads (plain text), as node; it closes when the test ends.
func Client(t testing.TB, ads, name, node string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	rb, err := xdsgrpc.NewXDSResolverWithConfigForTesting([]byte(fmt.Sprintf(
		`{"xds_servers":[{"server_uri":"%s","channel_creds":[{"type":"insecure"}],"server_features":["xds_v3"]}],"node":{"id":"%s"}}`, ads, node)))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///"+name, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(rb)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}
