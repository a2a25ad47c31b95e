package rollout

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func TestQuantile(t *testing.T) {
	inf := math.Inf(1)
	before := map[float64]float64{0.1: 10, 0.2: 10, 0.5: 10, inf: 10}
	now := map[float64]float64{0.1: 10, 0.2: 60, 0.5: 110, inf: 110} // 100 new: 50 in (0.1,0.2], 50 in (0.2,0.5]
	if q := quantile(0.5, now, before); math.Abs(q-0.2) > 1e-9 {
		t.Fatalf("p50 %v, want 0.2", q)
	}
	if q := quantile(0.99, now, before); math.Abs(q-(0.2+0.3*49/50)) > 1e-9 {
		t.Fatalf("p99 %v", q)
	}
	if q := quantile(0.99, before, before); !math.IsNaN(q) {
		t.Fatalf("no observations: %v", q)
	}
}

func TestBreach(t *testing.T) {
	shed, good := 0.05, 0.9
	c := &Controller{plan: Plan{SLO: SLO{MaxErrorRate: 0.01, MaxShedRate: &shed, MinGoodput: &good, GoodputTTFT: 200 * time.Millisecond,
		MaxTTFTRatio: 1.5, MaxTPOTRatio: 1.2, MinRequests: 100}}}
	fast := map[float64]float64{0.1: 1000, math.Inf(1): 1000}
	stable := Window{Requests: 1000, TTFTP99: 0.1, TPOTP99: 0.02, TTFT: fast}
	for _, tc := range []struct {
		canary Window
		want   string
	}{
		{Window{Requests: 1000, Errors: 50, TTFTP99: 0.1, TPOTP99: 0.02, TTFT: fast}, "error rate 0.0500"},
		// 2 of 100 is 2 %, but the lower bound (0.55 %) is within 1 %.
		{Window{Requests: 100, Errors: 2, TTFTP99: 0.1, TPOTP99: 0.02, TTFT: fast}, ""},
		{Window{Requests: 1000, Shed: 100, TTFTP99: 0.1, TPOTP99: 0.02, TTFT: fast}, "shed rate (429) 0.1000"},
		{Window{Requests: 1000, TTFTP99: 0.1, TPOTP99: 0.02, TTFT: map[float64]float64{0.1: 500, 0.3: 1000, math.Inf(1): 1000}}, "goodput 0.7500"},
		{Window{Requests: 1000, TTFTP99: 0.16, TPOTP99: 0.02, TTFT: fast}, "time to first token 160.0 ms > 1.50 × stable's 100.0 ms"},
		{Window{Requests: 1000, TTFTP99: 0.14, TPOTP99: 0.025, TTFT: fast}, "time per output token 25.0 ms > 1.20"},
		{Window{Requests: 50, TTFTP99: 9, TPOTP99: 9, TTFT: fast}, ""}, // too few requests to judge latency
		{Window{Requests: 1000, TTFTP99: 0.14, TPOTP99: 0.023, TTFT: fast}, ""},
	} {
		if got := c.breach(stable, tc.canary); (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%+v: %q, want %q", tc.canary, got, tc.want)
		}
	}
}

// TestWilson against the published example: Newcombe (1998), "Two-sided
// confidence intervals for the single proportion", Table I: 81 of 263 at
// 95 % gives 0.2553–0.3662; 0 of 10 gives 0–0.2775.
func TestWilson(t *testing.T) {
	z := SLO{Confidence: 0.975}.z() // two-sided 95 %
	for _, tc := range []struct{ k, n, lo, hi float64 }{{81, 263, 0.2553, 0.3662}, {0, 10, 0, 0.2775}, {15, 148, 0.0624, 0.1605}} {
		lo, hi := wilson(tc.k, tc.n, z)
		if math.Abs(lo-tc.lo) > 5e-5 || math.Abs(hi-tc.hi) > 5e-5 {
			t.Errorf("%v of %v: %.4f–%.4f, want %.4f–%.4f", tc.k, tc.n, lo, hi, tc.lo, tc.hi)
		}
	}
}

// TestSinceRestartsAndNewPods: counters are per sidecar; one that restarted
// (counters went down) or is new counts from zero, one that left drops out.
func TestSinceRestartsAndNewPods(t *testing.T) {
	h := func(n float64) map[float64]float64 { return map[float64]float64{0.1: n, math.Inf(1): n} }
	before := Sample{Targets: map[string]Counters{
		"a": {Requests: 100, Errors: 1, TTFT: h(100)},
		"b": {Requests: 500, Errors: 9, TTFT: h(500)},
		"c": {Requests: 70, TTFT: h(70)},
	}}
	now := Sample{Targets: map[string]Counters{
		"a": {Requests: 150, Errors: 2, TTFT: h(150)}, // +50
		"b": {Requests: 20, Errors: 1, TTFT: h(20)},   // restarted: 20
		"d": {Requests: 30, Shed: 3, TTFT: h(27)},     // new: 30
	}}
	w := now.Since(before)
	if w.Requests != 100 || w.Errors != 2 || w.Shed != 3 || w.TTFT[math.Inf(1)] != 97 {
		t.Fatalf("window %+v", w)
	}
}

func TestPlanValidate(t *testing.T) {
	p := Plan{Model: "m", Stable: "a", Canary: "a", Steps: []Step{{Weight: 50}, {Weight: 10}, {Weight: 101}}, SLO: SLO{MaxErrorRate: 2}}
	err := p.Validate()
	for _, want := range []string{"stable and canary differ", "steps[1].weight", "steps[2].weight", "slo.max_error_rate", "interval"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v does not say %q", err, want)
		}
	}
}

// TestScrapedQuantiles: p99s read from real client_golang exposition (the
// sidecars' histogram buckets, text format with its +Inf bucket) tell a
// version 25× slower from its stable one.
func TestScrapedQuantiles(t *testing.T) {
	serve := func(seconds float64) string {
		reg := prometheus.NewRegistry()
		h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "autoglm_time_to_first_token_seconds",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}})
		reg.MustRegister(h)
		for range 200 {
			h.Observe(seconds)
		}
		srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		t.Cleanup(srv.Close)
		return srv.URL + "/metrics"
	}
	p99 := func(url string) float64 {
		s, err := Scrape(context.Background(), http.DefaultClient, []string{url})
		if err != nil {
			t.Fatal(err)
		}
		return s.Since(Sample{}).TTFTP99
	}
	stable, canary := p99(serve(0.04)), p99(serve(1.0))
	if stable < 0.025 || stable > 0.05 || canary < 0.5 || canary > 1 {
		t.Fatalf("p99 stable %v s (observed 0.04), canary %v s (observed 1.0)", stable, canary)
	}
	if canary/stable < 10 {
		t.Fatalf("a canary 25× slower reads only %.1f× slower", canary/stable)
	}
}
