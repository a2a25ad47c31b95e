package bench

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	xdsgrpc "google.golang.org/grpc/xds"

	autoglmv1 "github.com/open-autoglm/autoglm/sidecar/proto/autoglm/v1"
	"github.com/open-autoglm/autoglm/xds/compile"
	"github.com/open-autoglm/autoglm/xds/config"
	"github.com/open-autoglm/autoglm/xds/envoygen"
	"github.com/open-autoglm/autoglm/xds/server"
	"github.com/open-autoglm/autoglm/xds/snapshot"
)

// BenchmarkSnapshotBuild: config → ir → Envoy resources → validated
// snapshot for 1 000 models × 10 endpoints (2 versions of 5). Goal ≤ 100 ms.
func BenchmarkSnapshotBuild(b *testing.B) {
	c := &config.Config{APIVersion: config.APIVersion, Listeners: config.Listeners{
		HTTP: &config.HTTPListener{Name: "h", Address: "0.0.0.0", Port: 10000}, GRPC: []string{"g"}}}
	for m := range 1000 {
		model := config.Model{Name: fmt.Sprintf("model-%04d", m)}
		for v := range 2 {
			ver := config.Version{Name: fmt.Sprintf("v%d", v+1), Weight: 50, GRPCPort: 9090}
			for e := range 5 {
				ver.Endpoints = append(ver.Endpoints, fmt.Sprintf("10.%d.%d.%d:8080", m/250, m%250, v*5+e))
			}
			model.Versions = append(model.Versions, ver)
		}
		c.Models = append(c.Models, model)
	}
	if err := c.Validate(); err != nil {
		b.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for range b.N {
		res, err := envoygen.Generate(compile.Compile(c, nil))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := snapshot.Build(res); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(b.N)/(1<<20), "MiB-allocated/op")
}

type versionBackend struct {
	autoglmv1.UnimplementedInferenceServer
	version string
}

func (v versionBackend) Generate(_ *autoglmv1.GenerateRequest, s grpc.ServerStreamingServer[autoglmv1.GenerateResponse]) error {
	return s.Send(&autoglmv1.GenerateResponse{Text: v.version})
}

func grpcBackend(b *testing.B, version string) int {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	gs := grpc.NewServer()
	autoglmv1.RegisterInferenceServer(gs, versionBackend{version: version})
	go gs.Serve(l)
	b.Cleanup(gs.Stop)
	return l.Addr().(*net.TCPAddr).Port
}

// BenchmarkXDSPropagation: time from Publish of a new split (all traffic
// to the other version) until each proxyless gRPC client (grpc-go's xDS
// client, its own ADS stream each) gets its first answer from the new
// version; p50/p99 over 100 changes, with 1 and 100 clients, each polling
// about every millisecond. Goal: p99 ≤ 10 ms.
func BenchmarkXDSPropagation(b *testing.B) {
	p1, p2 := grpcBackend(b, "v1"), grpcBackend(b, "v2")
	cfg := func(w1 int) *config.Config {
		c, err := config.Parse([]byte(fmt.Sprintf("apiVersion: autoglm.io/v1alpha1\nlisteners: {grpc: [inference]}\nmodels:\n  - name: m\n    versions:\n      - {name: v1, weight: %d, endpoints: [\"127.0.0.1:1\"], grpc_port: %d}\n      - {name: v2, weight: %d, endpoints: [\"127.0.0.1:1\"], grpc_port: %d}\n", w1, p1, 100-w1, p2)))
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			s := server.New(slog.New(slog.DiscardHandler))
			// push records when the last client's stream was sent the
			// route configuration of the version published.
			var pmu sync.Mutex
			pushed := map[string]time.Time{}
			pushes := map[string]int{}
			allPushed := make(chan string, 1)
			s.Pushed = func(_, typeURL, version string) {
				if typeURL == "type.googleapis.com/envoy.config.route.v3.RouteConfiguration" {
					pmu.Lock()
					pushed[version] = time.Now()
					if pushes[version]++; pushes[version] == n {
						select {
						case allPushed <- version:
						default:
						}
					}
					pmu.Unlock()
				}
			}
			push := hdrhistogram.New(1, 60_000_000, 3)
			if err := s.Publish(cfg(100)); err != nil {
				b.Fatal(err)
			}
			l, _ := net.Listen("tcp", "127.0.0.1:0")
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			go s.Run(ctx, l)
			clients := make([]autoglmv1.InferenceClient, n)
			for i := range clients {
				rb, err := xdsgrpc.NewXDSResolverWithConfigForTesting([]byte(fmt.Sprintf(
					`{"xds_servers":[{"server_uri":"%s","channel_creds":[{"type":"insecure"}],"server_features":["xds_v3"]}],"node":{"id":"client-%d"}}`, l.Addr(), i)))
				if err != nil {
					b.Fatal(err)
				}
				cc, err := grpc.NewClient("xds:///inference", grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(rb))
				if err != nil {
					b.Fatal(err)
				}
				defer cc.Close()
				clients[i] = autoglmv1.NewInferenceClient(cc)
			}
			call := func(c autoglmv1.InferenceClient) string {
				ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "x-autoglm-model", "m"), 5*time.Second)
				defer cancel()
				st, err := c.Generate(ctx, &autoglmv1.GenerateRequest{Model: "m"})
				if err != nil {
					return ""
				}
				r, err := st.Recv()
				if err != nil {
					return ""
				}
				return r.Text
			}
			for _, c := range clients { // all connected and on v1
				for call(c) != "v1" {
					time.Sleep(time.Millisecond)
				}
			}
			h := hdrhistogram.New(1, 60_000_000, 3)
			want := "v1"
			for change := range 100 {
				w1 := 0
				if want = "v2"; change%2 == 1 {
					w1, want = 100, "v1"
				}
				var mu sync.Mutex
				var wg sync.WaitGroup
				start := time.Now()
				if err := s.Publish(cfg(w1)); err != nil {
					b.Fatal(err)
				}
				for _, c := range clients {
					wg.Add(1)
					go func() {
						defer wg.Done()
						// Poll about every millisecond: a tight loop of 100
						// clients would take the CPU the update needs.
						for call(c) != want {
							time.Sleep(500 * time.Microsecond)
						}
						d := time.Since(start)
						mu.Lock()
						h.RecordValue(d.Microseconds())
						mu.Unlock()
					}()
				}
				wg.Wait()
				pmu.Lock()
				push.RecordValue(pushed[s.Status().Version].Sub(start).Microseconds())
				pmu.Unlock()
			}
			// The control plane alone: the clients idle, the time from
			// Publish until every stream has been sent the new routes.
			idle := hdrhistogram.New(1, 60_000_000, 3)
			for change := range 100 {
				pmu.Lock()
				clear(pushes) // count this change's pushes only
				pmu.Unlock()
				start := time.Now()
				if err := s.Publish(cfg(100 * (change % 2))); err != nil {
					b.Fatal(err)
				}
				v := s.Status().Version
				for got := ""; got != v; {
					select {
					case got = <-allPushed:
					case <-time.After(10 * time.Second):
						b.Fatal("not every client was sent the change")
					}
				}
				idle.RecordValue(time.Since(start).Microseconds())
			}
			b.ReportMetric(float64(idle.ValueAtQuantile(50))/1e3, "idle-all-pushed-p50-ms")
			b.ReportMetric(float64(idle.ValueAtQuantile(99))/1e3, "idle-all-pushed-p99-ms")
			b.ReportMetric(float64(h.ValueAtQuantile(50))/1e3, "p50-ms")
			b.ReportMetric(float64(h.ValueAtQuantile(99))/1e3, "p99-ms")
			b.ReportMetric(float64(h.Max())/1e3, "max-ms")
			b.ReportMetric(float64(push.ValueAtQuantile(50))/1e3, "last-push-p50-ms")
			b.ReportMetric(float64(push.ValueAtQuantile(99))/1e3, "last-push-p99-ms")
		})
	}
}
