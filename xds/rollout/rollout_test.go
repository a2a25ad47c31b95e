package rollout_test

import (
	"context"
	"errors"
	"fmt"
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
	autoglmv1 "github.com/open-autoglm/autoglm/sidecar/proto/autoglm/v1"
	"github.com/open-autoglm/autoglm/xds/config"
	"github.com/open-autoglm/autoglm/xds/rollout"
)

// failing is an engine that breaks after its warm-up step.
type failing struct {
	*testengine.Engine
	steps atomic.Int64
}

func (f *failing) Step(ctx context.Context, in []inference.Input) ([]inference.Output, error) {
	if f.steps.Add(1) > 1 {
		return nil, errors.New("injected fault")
	}
	return f.Engine.Step(ctx, in)
}

// startSidecar runs a real sidecar; it returns its HTTP and gRPC addresses.
func startSidecar(t *testing.T, eng inference.Engine) (string, int) {
	cfg := sidecarcfg.Default()
	cfg.Admission.MaxQueue = 1024
	return sidecartest.Loopback(t, cfg, eng)
}

// The versions' engines: the stable one spends 6 ms per step and 0.1 ms
// per token fed (a 40-byte prompt: a 10 ms prefill, ~6.3 ms a decode
// step). One canary is slow to the first token (0.5 ms per token fed: a
// 26 ms prefill), one slow per output token (14 ms a step, nothing per
// token fed: the same prefill, ~2.2× a decode step; with prefills
// interleaved, ~1.5× the stable version's p99 TPOT). The steps are long
// enough that CPU contention (two cores in CI, the clients and both
// sidecars in this process) does not hide them.
var (
	stableEngine   = testengine.Config{Model: "autoglm-test", StepCost: 6 * time.Millisecond, TokenCost: 100 * time.Microsecond}
	slowFirstToken = testengine.Config{Model: "autoglm-test", StepCost: 6 * time.Millisecond, TokenCost: 500 * time.Microsecond}
	slowPerToken   = testengine.Config{Model: "autoglm-test", StepCost: 14 * time.Millisecond}
	// realistic limits: p99 TTFT within 1.5× and TPOT within 1.2× of
	// the stable version's, under 1 % errors.
	realistic = rollout.SLO{MaxErrorRate: 0.01, MaxTTFTRatio: 1.5, MaxTPOTRatio: 1.2, MinRequests: 100}
)

// rollOut runs a plan against v1 (stable) and v2 (canary) sidecars that
// receive real traffic from a proxyless gRPC client through autoglm-xds,
// and reads the SLOs from the sidecars' real /metrics.
func rollOut(t *testing.T, canary inference.Engine, slo rollout.SLO) (rollout.Status, map[string]int) {
	h1, g1 := startSidecar(t, testengine.New(stableEngine))
	h2, g2 := startSidecar(t, canary)
	cfg, err := config.Parse([]byte(fmt.Sprintf(`apiVersion: autoglm.io/v1alpha1
listeners: {grpc: [inference]}
models:
  - name: autoglm-test
    versions:
      - {name: v1, weight: 100, endpoints: ["%s"], grpc_port: %d}
      - {name: v2, weight: 0, endpoints: ["%s"], grpc_port: %d}
`, h1, g1, h2, g2)))
	if err != nil {
		t.Fatal(err)
	}
	s, ads := xdstest.Serve(t, cfg)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	client := autoglmv1.NewInferenceClient(xdstest.Client(t, ads, "inference", "load"))
	call := func() error {
		cctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "x-autoglm-model", "autoglm-test"), 5*time.Second)
		defer cancel()
		st, err := client.Generate(cctx, &autoglmv1.GenerateRequest{Model: "autoglm-test", Prompt: prompt, MaxTokens: 8})
		if err != nil {
			return err
		}
		for {
			if _, err := st.Recv(); err != nil {
				return err
			}
		}
	}
	for range 6 { // steady load
		go func() {
			for ctx.Err() == nil {
				call()
			}
		}()
	}

	hc := &http.Client{Timeout: 5 * time.Second}
	urls := map[string][]string{"v1": rollout.MetricsURLs([]string{h1}), "v2": rollout.MetricsURLs([]string{h2})}
	c, err := rollout.New(rollout.Plan{
		Model: "autoglm-test", Stable: "v1", Canary: "v2", Interval: 200 * time.Millisecond,
		Steps: []rollout.Step{{Weight: 50, Hold: 3 * time.Second}, {Weight: 100, Hold: 500 * time.Millisecond}},
		SLO:   slo,
	}, func(w int) error {
		return s.SetWeights("autoglm-test", map[string]int{"v1": 100 - w, "v2": w})
	}, func(ctx context.Context, version string) (rollout.Sample, error) {
		return rollout.Scrape(ctx, hc, urls[version])
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.Run(rctx); err != nil {
		t.Fatal(err)
	}
	// Where the traffic goes now: ask the sidecars which served it.
	time.Sleep(300 * time.Millisecond) // let the client see the last weights
	b1, _ := rollout.Scrape(ctx, hc, urls["v1"])
	b2, _ := rollout.Scrape(ctx, hc, urls["v2"])
	time.Sleep(300 * time.Millisecond)
	a1, _ := rollout.Scrape(ctx, hc, urls["v1"])
	a2, _ := rollout.Scrape(ctx, hc, urls["v2"])
	return c.Status(), map[string]int{"v1": int(a1.Since(b1).Requests), "v2": int(a2.Since(b2).Requests)}
}

var prompt = strings.Repeat("0123456789", 4)

// TestHealthyCanaryPromoted: the same engine on both sides (an A/A run)
// passes the realistic limits.
func TestHealthyCanaryPromoted(t *testing.T) {
	st, traffic := rollOut(t, testengine.New(stableEngine), realistic)
	if st.State != rollout.Promoted || st.Weight != 100 || len(st.History) < 3 {
		t.Fatalf("status %+v", st)
	}
	if traffic["v2"] == 0 || traffic["v1"] != 0 {
		t.Fatalf("after promotion the traffic went %v", traffic)
	}
}

func TestFaultyCanaryRolledBack(t *testing.T) {
	st, traffic := rollOut(t, &failing{Engine: testengine.New(stableEngine)}, realistic)
	if st.State != rollout.RolledBack || st.Weight != 0 || !strings.Contains(st.Reason, "error rate") {
		t.Fatalf("status %+v", st)
	}
	if traffic["v1"] == 0 || traffic["v2"] != 0 {
		t.Fatalf("after the rollback the traffic went %v", traffic)
	}
}

// TestSlowFirstTokenRolledBack: a canary ~2× slower to the first token is
// rolled back on the 1.5× TTFT limit.
func TestSlowFirstTokenRolledBack(t *testing.T) {
	st, traffic := rollOut(t, testengine.New(slowFirstToken), realistic)
	if st.State != rollout.RolledBack || st.Weight != 0 || !strings.Contains(st.Reason, "time to first token") {
		t.Fatalf("status %+v", st)
	}
	if traffic["v2"] != 0 {
		t.Fatalf("after the rollback the traffic went %v", traffic)
	}
}

// TestSlowPerTokenRolledBack: a canary with the same prefill and ~1.6×
// slower decode steps is rolled back on the 1.2× TPOT limit.
func TestSlowPerTokenRolledBack(t *testing.T) {
	st, traffic := rollOut(t, testengine.New(slowPerToken), realistic)
	if st.State != rollout.RolledBack || st.Weight != 0 || !strings.Contains(st.Reason, "time per output token") {
		t.Fatalf("status %+v", st)
	}
	if traffic["v2"] != 0 {
		t.Fatalf("after the rollback the traffic went %v", traffic)
	}
}
