package server

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/open-autoglm/autoglm/inference/testengine"
	sidecarcfg "github.com/open-autoglm/autoglm/sidecar/config"
	autoglmv1 "github.com/open-autoglm/autoglm/sidecar/proto/autoglm/v1"
	"github.com/open-autoglm/autoglm/xds/config"
)

// slowShare runs a version of two real sidecars — one with 3× the other's
// step cost — under the given load-balancing policy, 8 closed-loop streams
// through grpc-go's xDS client, and returns the slow replica's share of
// the requests after a warm-up.
func slowShare(t *testing.T, policy string) float64 {
	fast := &flaky{Engine: testengine.New(testengine.Config{Model: "m", StepCost: 10 * time.Millisecond})}
	slow := &flaky{Engine: testengine.New(testengine.Config{Model: "m", StepCost: 30 * time.Millisecond})}
	ha, port, _ := replicaOf(t, "127.0.0.1", 0, fast)
	hb, _, _ := replicaOf(t, "127.0.0.2", port, slow)
	lb := "{policy: " + policy + "}"
	if policy == "weighted_round_robin" {
		lb = "{policy: weighted_round_robin, blackout_period: 500ms, weight_update_period: 200ms}"
	}
	c, err := config.Parse([]byte(fmt.Sprintf(`apiVersion: autoglm.io/v1alpha1
listeners: {grpc: [inference]}
models:
  - name: m
    load_balancing: %s
    versions:
      - {name: v1, weight: 100, endpoints: ["%s", "%s"], grpc_port: %d}
`, lb, ha, hb, port)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	client := proxyless(t, ctx, c)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				cctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "x-autoglm-model", "m"), 5*time.Second)
				if st, err := client.Generate(cctx, &autoglmv1.GenerateRequest{Model: "m", Prompt: "hello", MaxTokens: 8}); err == nil {
					for {
						if _, err := st.Recv(); err != nil {
							break
						}
					}
				}
				cancel()
			}
		}()
	}
	time.Sleep(2 * time.Second) // the weights settle (WRR: blackout 500 ms)
	f0, s0 := fast.starts.Load(), slow.starts.Load()
	time.Sleep(4 * time.Second)
	df, ds := fast.starts.Load()-f0, slow.starts.Load()-s0
	stop()
	wg.Wait()
	share := float64(ds) / float64(df+ds)
	t.Logf("%s: the slow replica served %d of %d requests (%.0f%%)", policy, ds, df+ds, share*100)
	return share
}

// TestWeightedRoundRobinFollowsLoad: with weighted round robin fed by the
// sidecars' ORCA reports (the endpoint-load-metrics-bin trailer grpc-go
// reads), a replica 3× slower gets markedly less traffic than under plain
// round robin — at least 10 points of share (measured: 50 % → 32 %, and
// 35 % under the race detector) — as its utilisation is higher for the
// same qps.
func TestWeightedRoundRobinFollowsLoad(t *testing.T) {
	rr := slowShare(t, "round_robin")
	wrr := slowShare(t, "weighted_round_robin")
	if wrr > rr-0.10 {
		t.Fatalf("the slow replica's share moved from %.0f%% (round robin) to %.0f%% (WRR): want at least 10 points less", rr*100, wrr*100)
	}
}

// TestShedCallsRetriedOnPeer: one replica sheds nearly everything (a
// queue of one behind one slot: RESOURCE_EXHAUSTED, the gRPC form of 429),
// its peer has room. With retries on 429 — which autoglm-xds gives gRPC
// clients as resource-exhausted — every call succeeds.
func TestShedCallsRetriedOnPeer(t *testing.T) {
	full := sidecarcfg.Default()
	full.Admission.MaxQueue = 1
	busy := &flaky{Engine: testengine.New(testengine.Config{Model: "m", StepCost: 20 * time.Millisecond, Slots: 1})}
	idle := &flaky{Engine: testengine.New(testengine.Config{Model: "m", StepCost: 2 * time.Millisecond})}
	ha, port, _ := replicaWith(t, "127.0.0.1", 0, busy, full)
	hb, _, _ := replicaOf(t, "127.0.0.2", port, idle)
	c, err := config.Parse([]byte(fmt.Sprintf(`apiVersion: autoglm.io/v1alpha1
listeners: {grpc: [inference]}
models:
  - name: m
    retries: {attempts: 3, on: ["429", reset, connect-failure]}
    load_balancing: {policy: weighted_round_robin, blackout_period: 200ms, weight_update_period: 100ms}
    versions:
      - {name: v1, weight: 100, endpoints: ["%s", "%s"], grpc_port: %d}
`, ha, hb, port)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	client := proxyless(t, ctx, c)
	var failed, ok, shed atomic.Int64
	var warm atomic.Bool
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !warm.Load() { // until the clients have the replicas' load reports
				cctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "x-autoglm-model", "m"), 10*time.Second)
				if st, err := client.Generate(cctx, &autoglmv1.GenerateRequest{Model: "m", Prompt: "hello", MaxTokens: 4}); err == nil {
					for err == nil {
						_, err = st.Recv()
					}
				}
				cancel()
			}
			for range 25 {
				cctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "x-autoglm-model", "m"), 10*time.Second)
				st, err := client.Generate(cctx, &autoglmv1.GenerateRequest{Model: "m", Prompt: "hello", MaxTokens: 4})
				for err == nil {
					_, err = st.Recv()
				}
				cancel()
				if err == io.EOF {
					ok.Add(1)
					continue
				}
				failed.Add(1)
				if status.Code(err) == codes.ResourceExhausted {
					shed.Add(1)
				}
				t.Logf("call failed: %v", err)
			}
		}()
	}
	time.Sleep(time.Second)
	b0, i0 := busy.starts.Load(), idle.starts.Load()
	warm.Store(true)
	wg.Wait()
	busy.starts.Add(-b0)
	idle.starts.Add(-i0)
	t.Logf("%d calls succeeded, %d failed (%d shed); the busy replica was given %d, the idle one %d", ok.Load(), failed.Load(), shed.Load(), busy.starts.Load(), idle.starts.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d of 200 calls failed", failed.Load())
	}
}
