package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	xdsgrpc "google.golang.org/grpc/xds"

	autoglmv1 "github.com/open-autoglm/autoglm/sidecar/proto/autoglm/v1"
	"github.com/open-autoglm/autoglm/xds/config"
)

// backend is a real gRPC server of the sidecar's API that answers with its
// version's name.
type backend struct {
	autoglmv1.UnimplementedInferenceServer
	version string
}

func (b backend) Generate(_ *autoglmv1.GenerateRequest, s grpc.ServerStreamingServer[autoglmv1.GenerateResponse]) error {
	return s.Send(&autoglmv1.GenerateResponse{Text: b.version, FinishReason: "stop"})
}

func startBackend(t *testing.T, version string) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	autoglmv1.RegisterInferenceServer(gs, backend{version: version})
	go gs.Serve(l)
	t.Cleanup(gs.Stop)
	return l.Addr().(*net.TCPAddr).Port
}

func configYAML(p1, p2, w1, w2 int) []byte {
	return []byte(fmt.Sprintf(`apiVersion: autoglm.io/v1alpha1
listeners:
  grpc: [autoglm-inference]
models:
  - name: m
    timeout: 10s
    retries: {attempts: 1, on: [unavailable-is-not-a-condition]}
    versions:
      - {name: v1, weight: %d, endpoints: ["127.0.0.1:8080"], grpc_port: %d}
      - {name: v2, weight: %d, endpoints: ["127.0.0.1:8080"], grpc_port: %d}
`, w1, p1, w2, p2))
}

func parse(t *testing.T, b []byte) *config.Config {
	t.Helper()
	c, err := config.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// split sends n calls for model m (pinned to a version when pin is set)
// and counts the answers by version.
func split(t *testing.T, c autoglmv1.InferenceClient, n int, pin string) map[string]int {
	t.Helper()
	counts := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			md := metadata.Pairs("x-autoglm-model", "m")
			if pin != "" {
				md.Append("x-autoglm-version", pin)
			}
			ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.Background(), md), 5*time.Second)
			defer cancel()
			st, err := c.Generate(ctx, &autoglmv1.GenerateRequest{Model: "m", Prompt: "x", MaxTokens: 1})
			if err != nil {
				t.Error(err)
				return
			}
			r, err := st.Recv()
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			counts[r.Text]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	return counts
}

// TestProxylessGRPC drives grpc-go's own xDS client against the control
// plane: the 90/10 split, a version pin, a weight change, and a bad
// configuration that leaves the routes as they were.
func TestProxylessGRPC(t *testing.T) {
	p1, p2 := startBackend(t, "v1"), startBackend(t, "v2")
	s := New(slog.New(slog.DiscardHandler))
	if _, err := config.Parse(configYAML(p1, p2, 90, 10)); err == nil || !strings.Contains(err.Error(), "models[0].retries.on[0]: unknown condition") {
		t.Fatalf("an unknown retry condition: %v", err)
	}
	good := []byte(fmt.Sprintf(`apiVersion: autoglm.io/v1alpha1
listeners:
  grpc: [autoglm-inference]
models:
  - name: m
    timeout: 10s
    versions:
      - {name: v1, weight: 90, endpoints: ["127.0.0.1:8080"], grpc_port: %d}
      - {name: v2, weight: 10, endpoints: ["127.0.0.1:8080"], grpc_port: %d}
`, p1, p2))
	if err := s.Publish(parse(t, good)); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, l) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	rb, err := xdsgrpc.NewXDSResolverWithConfigForTesting([]byte(fmt.Sprintf(`{
  "xds_servers": [{"server_uri": "%s", "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
  "node": {"id": "test-client"}}`, l.Addr())))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///autoglm-inference", grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(rb))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := autoglmv1.NewInferenceClient(cc)

	counts := split(t, c, 2000, "")
	if v2 := float64(counts["v2"]) / 2000; v2 < 0.07 || v2 > 0.13 || counts["v1"]+counts["v2"] != 2000 {
		t.Fatalf("90/10 split: %v; control plane %+v", counts, s.Status())
	}
	if counts := split(t, c, 200, "v2"); counts["v2"] != 200 {
		t.Fatalf("pinned to v2: %v", counts)
	}

	// A configuration that does not validate changes nothing: the client
	// keeps the 90/10 routes.
	v := s.Status().Version
	bad := parse(t, good)
	bad.Models[0].Versions[0].Weight, bad.Models[0].Versions[1].Weight = 0, 0
	if err := s.Publish(bad); err == nil || !strings.Contains(err.Error(), "weights sum to 0") {
		t.Fatalf("weights summing to 0: %v", err)
	}
	if st := s.Status(); st.Version != v || st.LastError == "" {
		t.Fatalf("after a bad configuration: %+v", st)
	}
	time.Sleep(50 * time.Millisecond)
	if counts := split(t, c, 500, ""); counts["v1"] < 400 || counts["v2"] < 20 {
		t.Fatalf("after a bad configuration the split is %v, want still about 90/10", counts)
	}

	// Promote v2: the client sees the new weights.
	if err := s.Publish(parse(t, configYAML2(p1, p2, 0, 100))); err != nil {
		t.Fatal(err)
	}
	if s.Status().Version == v {
		t.Fatal("the version did not change")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if counts := split(t, c, 50, ""); counts["v2"] == 50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the weight change was not observed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func configYAML2(p1, p2, w1, w2 int) []byte {
	return []byte(fmt.Sprintf(`apiVersion: autoglm.io/v1alpha1
listeners:
  grpc: [autoglm-inference]
models:
  - name: m
    versions:
      - {name: v1, weight: %d, endpoints: ["127.0.0.1:8080"], grpc_port: %d}
      - {name: v2, weight: %d, endpoints: ["127.0.0.1:8080"], grpc_port: %d}
`, w1, p1, w2, p2))
}
