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
	"github.com/spiffe/go-spiffe/v2/spiffegrpc/grpccredentials"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/open-autoglm/autoglm/internal/spiffetest"
)

// TestADSOverMTLS: with SVIDs from a Workload API, the ADS server answers
// the Envoy node whose SPIFFE ID it allows and refuses another one of the
// same trust domain.
func TestADSOverMTLS(t *testing.T) {
	ca := spiffetest.NewCA(t, "example.org")
	api := spiffetest.StartWorkloadAPI(t, ca, ca.Issue(t, "spiffe://example.org/ns/autoglm/sa/autoglm-xds", time.Hour))
	ctx, stop := context.WithTimeout(context.Background(), 30*time.Second)
	defer stop()
	source, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(api.Addr)))
	if err != nil {
		t.Fatal(err)
	}
	defer source.Close()
	envoy := spiffeid.RequireFromString("spiffe://example.org/ns/gateway/sa/envoy")
	s := New(slog.New(slog.DiscardHandler))
	s.GRPCOptions = append(s.GRPCOptions, grpc.Creds(grpccredentials.MTLSServerCredentials(source, source, tlsconfig.AuthorizeID(envoy))))
	if err := s.Publish(parse(t, configYAML2(9001, 9002, 50, 50))); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Run(ctx, l)
	fetch := func(svid spiffetest.SVID) (*discovery.DiscoveryResponse, error) {
		cc, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientTLS(svid))))
		if err != nil {
			return nil, err
		}
		defer cc.Close()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		stream, err := discovery.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(cctx)
		if err != nil {
			return nil, err
		}
		if err := stream.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: "gw"}, TypeUrl: resource.ClusterType}); err != nil {
			return nil, err
		}
		return stream.Recv()
	}
	r, err := fetch(ca.Issue(t, envoy.String(), time.Hour))
	if err != nil || len(r.Resources) == 0 {
		t.Fatalf("allowed node: %v %v", r, err)
	}
	if _, err := fetch(ca.Issue(t, "spiffe://example.org/ns/apps/sa/web", time.Hour)); err == nil {
		t.Fatal("a node with another SPIFFE ID got the configuration")
	}
	other := spiffetest.NewCA(t, "elsewhere.org")
	if _, err := fetch(other.Issue(t, envoy.String(), time.Hour)); err == nil {
		t.Fatal("a certificate from another CA got the configuration")
	}
}
