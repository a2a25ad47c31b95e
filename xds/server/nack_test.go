package server

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// serveADS runs a server with a published configuration for the test and
// returns it with an ADS client and the test's context.
func serveADS(t *testing.T, nackBackoff time.Duration) (*Server, discovery.AggregatedDiscoveryServiceClient, context.Context) {
	t.Helper()
	s := New(slog.New(slog.DiscardHandler))
	if nackBackoff > 0 {
		s.NackBackoff = nackBackoff
	}
	if err := s.Publish(parse(t, configYAML2(9001, 9002, 50, 50))); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	go s.Run(ctx, l)
	cc, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return s, discovery.NewAggregatedDiscoveryServiceClient(cc), ctx
}

// TestNackNoStorm: a node that rejects every answer is not sent the same
// snapshot in a loop; the NACK is recorded for the status endpoint.
func TestNackNoStorm(t *testing.T) {
	s, ads, ctx := serveADS(t, 100*time.Millisecond)
	stream, err := ads.StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &core.Node{Id: "picky"}
	if err := stream.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	responses := make(chan *discovery.DiscoveryResponse, 100)
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				close(responses)
				return
			}
			responses <- r
		}
	}()
	n := 0
	end := time.After(2 * time.Second)
loop:
	for {
		select {
		case r, ok := <-responses:
			if !ok {
				break loop
			}
			n++
			stream.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType, ResponseNonce: r.Nonce,
				ErrorDetail: &status.Status{Code: 3, Message: "not today"}})
		case <-end:
			break loop
		}
	}
	// Back-off 100, 200, 400, 800 ms…: at most 5 answers in 2 s, where a
	// loop would send hundreds.
	if n < 1 || n > 6 {
		t.Fatalf("%d answers in 2 s to a node that NACKs everything", n)
	}
	st := s.Status()
	if len(st.Nacks) != 1 || st.Nacks[0].Node != "picky" || st.Nacks[0].Message != "not today" || st.Nacks[0].Count < 1 {
		t.Fatalf("status %+v", st)
	}
}

// TestDelta: the incremental (delta) protocol serves the same resources.
func TestDelta(t *testing.T) {
	_, ads, ctx := serveADS(t, 0)
	stream, err := ads.DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discovery.DeltaDiscoveryRequest{Node: &core.Node{Id: "delta"}, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, r := range resp.Resources {
		names[r.Name] = true
	}
	if !names["m-v1-grpc"] || !names["m-v2-grpc"] || len(names) != 2 {
		t.Fatalf("delta clusters %v", names)
	}
}
