package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/testengine"
	"github.com/open-autoglm/autoglm/internal/sidecartest"
	"github.com/open-autoglm/autoglm/internal/xdstest"
	sidecarcfg "github.com/open-autoglm/autoglm/sidecar/config"
	"github.com/open-autoglm/autoglm/test/load"
	xdscfg "github.com/open-autoglm/autoglm/xds/config"
	"github.com/open-autoglm/autoglm/xds/rollout"
	xdsserver "github.com/open-autoglm/autoglm/xds/server"
)

// The versions' engine: 6 ms a step, 0.1 ms per prompt token fed.
var canaryBase = testengine.Config{Model: "autoglm-test", StepCost: 6 * time.Millisecond, TokenCost: 100 * time.Microsecond}

// regressed injects faults into the canary: extra time on every step that
// feeds a prompt (so the first token of each request comes later by
// about that much), and a share of requests that fail (500).
type regressed struct {
	*testengine.Engine
	prefill atomic.Int64 // ns
	fail    atomic.Uint64
}

func (e *regressed) Start(slot int, s inference.Sampling) error {
	if f := e.fail.Load(); f > 0 && rand.Uint64() < f {
		return fmt.Errorf("injected fault")
	}
	return e.Engine.Start(slot, s)
}

func (e *regressed) Step(ctx context.Context, batch []inference.Input) ([]inference.Output, error) {
	for _, in := range batch {
		if len(in.Tokens) > 1 {
			time.Sleep(time.Duration(e.prefill.Load()))
			break
		}
	}
	return e.Engine.Step(ctx, batch)
}

func (e *regressed) setFailure(p float64) { e.fail.Store(uint64(p * (1 << 64))) }

func grpcSidecar(b *testing.B, eng inference.Engine) (string, int) {
	cfg := sidecarcfg.Default()
	cfg.Admission.MaxQueue = 4096
	return sidecartest.Loopback(b, cfg, eng)
}

// rig is a stable and a canary version behind autoglm-xds, under steady
// open-model load from autoglm-load's library through a proxyless gRPC
// client (Poisson arrivals at rps).
type rig struct {
	s       *xdsserver.Server
	canary  *regressed
	sample  func(context.Context, string) (rollout.Sample, error)
	stopped chan struct{}
}

func startRig(b *testing.B, rps float64) *rig {
	b.Helper()
	canary := &regressed{Engine: testengine.New(canaryBase)}
	h1, g1 := grpcSidecar(b, testengine.New(canaryBase))
	h2, g2 := grpcSidecar(b, canary)
	cfg, err := xdscfg.Parse([]byte(fmt.Sprintf(`apiVersion: autoglm.io/v1alpha1
listeners: {grpc: [inference]}
models:
  - name: autoglm-test
    versions:
      - {name: v1, weight: 100, endpoints: ["%s"], grpc_port: %d}
      - {name: v2, weight: 0, endpoints: ["%s"], grpc_port: %d}
`, h1, g1, h2, g2)))
	if err != nil {
		b.Fatal(err)
	}
	s, ads := xdstest.Serve(b, cfg)
	cc := xdstest.Client(b, ads, "inference", "load")
	ctx, stop := context.WithCancel(context.Background())
	r := &rig{s: s, canary: canary, stopped: make(chan struct{})}
	go func() {
		defer close(r.stopped)
		t := load.NewGRPCConn(cc, "autoglm-test", metadata.Pairs("x-autoglm-model", "autoglm-test"))
		defer t.Close()
		load.Run(ctx, load.Config{Model: "open", Rate: load.Constant(rps, time.Hour), Poisson: true, Timeout: 10 * time.Second, Seed: 1,
			Workload: load.Workload{Prompt: load.Dist{Kind: "fixed", A: 8}, Output: load.Dist{Kind: "fixed", A: 8}}}, t, "canary")
	}()
	b.Cleanup(func() { stop(); <-r.stopped })
	hc := &http.Client{Timeout: 5 * time.Second}
	urls := map[string][]string{"v1": rollout.MetricsURLs([]string{h1}), "v2": rollout.MetricsURLs([]string{h2})}
	r.sample = func(ctx context.Context, v string) (rollout.Sample, error) { return rollout.Scrape(ctx, hc, urls[v]) }
	return r
}

func (r *rig) weights(w int) error {
	return r.s.SetWeights("autoglm-test", map[string]int{"v1": 100 - w, "v2": w})
}

// canarySLO are the limits the figures use (those of docs/autoglm-xds.md).
func canarySLO(ttftRatio float64) rollout.SLO {
	return rollout.SLO{MaxErrorRate: 0.01, MaxTTFTRatio: ttftRatio, MaxTPOTRatio: 1.2, MinRequests: 100}
}

const canaryInterval = time.Second

// BenchmarkCanaryDetection: time to detect a regressed canary. Two
// versions of the test engine under 40 requests/s (Poisson) from
// autoglm-load's library through autoglm-xds; the canary at 50 % is
// regressed from the start — its prefill steps slowed by 30 % or 100 % of
// the stable version's median TTFT (measured first, A/A), or 2 % of its
// requests failing — and the controller checks every second. Reported:
// seconds and checks from the step's start to the rollback (or to the
// step passing, when the regression is within the limit), the measured
// p99 TTFT ratio at the last check.
func BenchmarkCanaryDetection(b *testing.B) {
	r := startRig(b, 40)
	if err := r.weights(50); err != nil {
		b.Fatal(err)
	}
	// Calibrate: the stable version's median TTFT at 50 %.
	ctx := context.Background()
	s0, _ := r.sample(ctx, "v1")
	time.Sleep(10 * time.Second)
	s1, _ := r.sample(ctx, "v1")
	median := s1.Since(s0).TTFTQuantile(0.5)
	b.Logf("stable median TTFT %.1f ms", median*1e3)
	for _, tc := range []struct {
		name      string
		prefill   float64 // × the median TTFT
		fail      float64
		ttftRatio float64
	}{
		{"ttft+30%/limit=1.5", 0.3, 0, 1.5},
		{"ttft+30%/limit=1.2", 0.3, 0, 1.2},
		{"ttft+100%/limit=1.5", 1.0, 0, 1.5},
		{"errors=2%/limit=1%", 0, 0.02, 1.5},
	} {
		b.Run(tc.name, func(b *testing.B) {
			r.canary.prefill.Store(int64(tc.prefill * median * 1e9))
			r.canary.setFailure(tc.fail)
			defer r.canary.prefill.Store(0)
			defer r.canary.setFailure(0)
			c, err := rollout.New(rollout.Plan{Model: "autoglm-test", Stable: "v1", Canary: "v2", Interval: canaryInterval,
				Steps: []rollout.Step{{Weight: 50, Hold: 60 * time.Second}}, SLO: canarySLO(tc.ttftRatio)}, r.weights, r.sample)
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			if err := c.Run(ctx); err != nil {
				b.Fatal(err)
			}
			took := time.Since(start)
			st := c.Status()
			b.Logf("%s after %.1f s: %s", st.State, took.Seconds(), st.Reason)
			if w := st.Window; w != nil && w.Stable.TTFTP99 != nil && w.Canary.TTFTP99 != nil {
				b.ReportMetric(*w.Canary.TTFTP99 / *w.Stable.TTFTP99, "ttft-p99-ratio")
			}
			rolledBack := 0.0
			if st.State == rollout.RolledBack {
				rolledBack = 1
				b.ReportMetric(took.Seconds(), "s-to-rollback")
				b.ReportMetric(took.Seconds()/canaryInterval.Seconds(), "checks")
			}
			b.ReportMetric(rolledBack, "rolled-back")
			r.weights(50)
		})
	}
}

// BenchmarkCanaryFalseRollback: how often an A/A canary (the same engine
// on both sides) is rolled back. 120 one-second windows of both versions
// are recorded under the rig's load at 50 %; then 400 rollouts of one
// 30-check step are simulated by drawing the windows at random (the
// stable and canary windows of one second stay together) and running the
// real controller over the sums. Reported per setting: the share of runs
// rolled back.
func BenchmarkCanaryFalseRollback(b *testing.B) {
	r := startRig(b, 40)
	if err := r.weights(50); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	time.Sleep(3 * time.Second)
	type pair struct{ s, c rollout.Sample }
	var rec []pair
	for range 121 {
		s, err1 := r.sample(ctx, "v1")
		c, err2 := r.sample(ctx, "v2")
		if err1 != nil || err2 != nil {
			b.Fatal(err1, err2)
		}
		rec = append(rec, pair{s, c})
		time.Sleep(time.Second)
	}
	for _, tc := range []struct {
		name string
		slo  rollout.SLO
	}{
		{"confirmations=1/min_requests=100", withSLO(func(s *rollout.SLO) { s.Confirmations = 1 })},
		{"confirmations=2/min_requests=100", withSLO(func(s *rollout.SLO) { s.Confirmations = 2 })},
		{"confirmations=3/min_requests=100", withSLO(func(s *rollout.SLO) { s.Confirmations = 3 })},
		{"confirmations=2/min_requests=50", withSLO(func(s *rollout.SLO) { s.Confirmations, s.MinRequests = 2, 50 })},
		{"confirmations=2/min_requests=200", withSLO(func(s *rollout.SLO) { s.Confirmations, s.MinRequests = 2, 200 })},
	} {
		b.Run(tc.name, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 2))
			const runs = 400
			rolled := 0
			reasons := map[string]int{}
			for range runs {
				// a random sequence of recorded windows, summed
				seq := []pair{{}}
				for range 40 {
					i := 1 + rng.IntN(len(rec)-1)
					prev := seq[len(seq)-1]
					seq = append(seq, pair{add(prev.s, rec[i].s, rec[i-1].s), add(prev.c, rec[i].c, rec[i-1].c)})
				}
				var n [2]int
				c, err := rollout.New(rollout.Plan{Model: "m", Stable: "v1", Canary: "v2", Interval: time.Millisecond,
					Steps: []rollout.Step{{Weight: 50, Hold: 30 * time.Millisecond}}, SLO: tc.slo}, func(int) error { return nil },
					func(_ context.Context, v string) (rollout.Sample, error) {
						i := 0
						if v == "v2" {
							i = 1
						}
						k := min(n[i], len(seq)-1)
						n[i]++
						if i == 0 {
							return seq[k].s, nil
						}
						return seq[k].c, nil
					})
				if err != nil {
					b.Fatal(err)
				}
				c.Run(ctx)
				if st := c.Status(); st.State == rollout.RolledBack {
					rolled++
					reasons[strings.SplitN(st.Reason, " ", 5)[3]]++
				}
			}
			b.Logf("%d of %d rolled back %v", rolled, runs, reasons)
			b.ReportMetric(float64(rolled)/runs, "false-rollback-rate")
		})
	}
}

func withSLO(f func(*rollout.SLO)) rollout.SLO {
	s := canarySLO(1.5)
	f(&s)
	return s
}

// add is acc plus the increase from before to now (one recorded window).
func add(acc, now, before rollout.Sample) rollout.Sample {
	out := rollout.Sample{Ready: 1, Targets: map[string]rollout.Counters{}}
	for u, n := range now.Targets {
		a, p := acc.Targets[u], before.Targets[u]
		c := rollout.Counters{Requests: a.Requests + n.Requests - p.Requests, Errors: a.Errors + n.Errors - p.Errors, Shed: a.Shed + n.Shed - p.Shed,
			TTFT: map[float64]float64{}, TPOT: map[float64]float64{}}
		for k, v := range n.TTFT {
			c.TTFT[k] = a.TTFT[k] + v - p.TTFT[k]
		}
		for k, v := range n.TPOT {
			c.TPOT[k] = a.TPOT[k] + v - p.TPOT[k]
		}
		out.Targets[u] = c
	}
	return out
}
