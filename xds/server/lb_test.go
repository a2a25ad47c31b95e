package server

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/open-autoglm/autoglm/inference/testengine"
	sidecarcfg "github.com/open-autoglm/autoglm/sidecar/config"
	"github.com/open-autoglm/autoglm/xds/config"
)

// slowShare runs a version of two real sidecars — one with 3× the other's
// step cost — under the given load-balancing policy, 8 closed-loop streams
// through grpc-go's xDS client, and returns the slow replica's share of
// the requests after a warm-up.
func slowShare(t *testing.T, policy string) float64 {
	fast := &flaky{Engine: testengine.New(testengine.Config{Model: "m", StepCost: 30 * time.Millisecond})}
	slow := &flaky{Engine: testengine.New(testengine.Config{Model: "m", StepCost: 90 * time.Millisecond})}
	ha, port, _ := replicaOf(t, "127.0.0.1", 0, fast)
	hb, _, _ := replicaOf(t, "127.0.0.2", port, slow)
	lb := "{policy: " + policy + "}"
	if policy == "weighted_round_robin" {
		lb = "{policy: weighted_round_robin, blackout_period: 500ms, weight_update_period: 200ms}"
	}
	c := pairConfig(t, "    load_balancing: "+lb, ha, hb, port)
	ctx, stop := context.WithCancel(context.Background())
	client := proxyless(t, ctx, c)
	wg := loop(ctx, 16, func() { generate(ctx, client, "hello", 8, 5*time.Second) })
	time.Sleep(4 * time.Second) // the weights settle (WRR: blackout 500 ms; qps over 10 s)
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
// round robin — at least 10 points of share (measured: 50 % → 32–34 %,
// also under the race detector beside other test packages) — as its
// utilisation is higher for the same qps.
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
	c := pairConfig(t, `    retries: {attempts: 3, on: ["429", reset, connect-failure]}
    load_balancing: {policy: weighted_round_robin, blackout_period: 200ms, weight_update_period: 100ms}`, ha, hb, port)
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
				generate(ctx, client, "hello", 4, 10*time.Second)
			}
			for range 25 {
				_, err := generate(ctx, client, "hello", 4, 10*time.Second)
				if err == nil {
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

// TestRingHashAffinity: with ring_hash on a header (e.g. a prompt-prefix
// key, for KV-cache reuse), grpc-go's xDS client sends every request with
// the same key to the same replica; removing one of three replicas moves
// the keys that were on it and at most a quarter of the others (the ring
// gives the remaining replicas more points).
func TestRingHashAffinity(t *testing.T) {
	engines := []*flaky{}
	var hosts []string
	port := 0
	for _, ip := range []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"} {
		e := &flaky{Engine: testengine.New(testengine.Config{Model: "m"})}
		h, p, _ := replicaOf(t, ip, port, e)
		port = p
		engines = append(engines, e)
		hosts = append(hosts, `"`+h+`"`)
	}
	cfg := func(n int) *config.Config {
		c, err := config.Parse([]byte(fmt.Sprintf(`apiVersion: autoglm.io/v1alpha1
listeners: {grpc: [inference]}
models:
  - name: m
    load_balancing: {policy: ring_hash, hash_header: x-autoglm-prefix-key}
    versions:
      - {name: v1, weight: 100, endpoints: [%s], grpc_port: %d}
`, strings.Join(hosts[:n], ", "), port)))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	s := New(slog.New(slog.DiscardHandler))
	if err := s.Publish(cfg(3)); err != nil {
		t.Fatal(err)
	}
	client := proxylessOn(t, ctx, s)
	// which replica served a call with this key
	served := func(key string) int {
		before := make([]int64, len(engines))
		for i, e := range engines {
			before[i] = e.starts.Load()
		}
		if _, err := generate(ctx, client, "hi", 1, 5*time.Second, "x-autoglm-prefix-key", key); err != nil {
			t.Fatalf("key %s: %v", key, err)
		}
		for i, e := range engines {
			if e.starts.Load() != before[i] {
				return i
			}
		}
		t.Fatalf("key %s: no replica served it", key)
		return -1
	}
	const keys = 120
	home := map[string]int{}
	spread := make([]int, len(engines))
	for k := range keys {
		key := fmt.Sprintf("prefix-%d", k)
		home[key] = served(key)
		spread[home[key]]++
		for range 2 {
			if r := served(key); r != home[key] {
				t.Fatalf("key %s went to replica %d, then %d", key, home[key], r)
			}
		}
	}
	for i, n := range spread {
		if n < keys/10 {
			t.Fatalf("replica %d has %d of %d keys: %v", i, n, keys, spread)
		}
	}
	if err := s.Publish(cfg(2)); err != nil { // replica 2 leaves
		t.Fatal(err)
	}
	var onRemoved string // a key that was on the removed replica
	for key, was := range home {
		if was == 2 {
			onRemoved = key
			break
		}
	}
	for deadline := time.Now().Add(10 * time.Second); served(onRemoved) == 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the removed replica still gets traffic")
		}
	}
	moved, stayedMoved, stayed := 0, 0, 0
	for key, was := range home {
		now := served(key)
		switch {
		case was == 2:
			moved++
			if now == 2 {
				t.Fatalf("key %s still went to the removed replica", key)
			}
		case now != was:
			stayedMoved++
		default:
			stayed++
		}
	}
	// The ring gives each remaining replica more points, so some keys
	// between the remaining two change hands too (measured 7–14 %;
	// consistent hashing bounds that — hashing modulo the replica count
	// would move two thirds — it does not make it zero).
	if stayedMoved*4 > stayed+stayedMoved {
		t.Fatalf("%d of the %d keys on the remaining replicas moved", stayedMoved, stayed+stayedMoved)
	}
	t.Logf("keys per replica %v; all %d on the removed replica moved, %d of %d on the others", spread, moved, stayedMoved, stayed+stayedMoved)
}

// TestFaultInjection: faults configured on a version reach proxyless gRPC
// clients through Envoy's fault filter, which grpc-go implements: 30 % of
// calls aborted UNAVAILABLE (the gRPC form of the configured 503) and
// every call held 100 ms; without the faults, neither.
func TestFaultInjection(t *testing.T) {
	eng := &flaky{Engine: testengine.New(testengine.Config{Model: "m"})}
	h, port, _ := replicaOf(t, "127.0.0.1", 0, eng)
	cfg := func(faults string) *config.Config {
		c, err := config.Parse([]byte(fmt.Sprintf(`apiVersion: autoglm.io/v1alpha1
listeners: {grpc: [inference]}
models:
  - name: m
    versions:
      - {name: v1, weight: 100, endpoints: ["%s"], grpc_port: %d%s}
`, h, port, faults)))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	s := New(slog.New(slog.DiscardHandler))
	if err := s.Publish(cfg(", faults: {delay: {fixed: 100ms, percent: 100}, abort: {http_status: 503, percent: 30}}")); err != nil {
		t.Fatal(err)
	}
	client := proxylessOn(t, ctx, s)
	run := func(n int) (aborted, other int, fastest time.Duration) {
		var mu sync.Mutex
		fastest = time.Hour
		var wg sync.WaitGroup
		for range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range n / 10 {
					start := time.Now()
					_, err := generate(ctx, client, "hi", 1, 5*time.Second)
					took := time.Since(start)
					mu.Lock()
					switch {
					case err == nil:
						fastest = min(fastest, took)
					case status.Code(err) == codes.Unavailable:
						aborted++
					default:
						other++
						t.Logf("unexpected: %v", err)
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		return aborted, other, fastest
	}
	aborted, other, fastest := run(300)
	t.Logf("with faults: %d of 300 aborted, fastest success %v", aborted, fastest)
	// 30 % of 300 is 90, σ ≈ 7.9: ±3σ.
	if aborted < 66 || aborted > 114 || other != 0 || fastest < 100*time.Millisecond {
		t.Fatalf("with faults: %d of 300 aborted (want 90 ± 24), %d other errors, fastest %v (want ≥ 100ms)", aborted, other, fastest)
	}
	if err := s.Publish(cfg("")); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		aborted, other, fastest = run(50)
		if aborted == 0 && other == 0 && fastest < 100*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("without faults: %d aborted, %d other errors, fastest %v", aborted, other, fastest)
		}
	}
}
