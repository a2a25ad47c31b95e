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

// hist is a cumulative histogram (buckets growing by 1.2, as the
// sidecar's) of the observations given as value → count.
func hist(obs map[float64]float64) map[float64]float64 {
	h := map[float64]float64{math.Inf(1): 0}
	for b := 0.002; b < 200; b *= 1.2 {
		h[b] = 0
	}
	for b := range h {
		for v, n := range obs {
			if v <= b {
				h[b] += n
			}
		}
	}
	return h
}

func window(requests, errors, shed float64, ttft, tpot map[float64]float64) Window {
	w := Window{Requests: requests, Errors: errors, Shed: shed, TTFT: hist(ttft), TPOT: hist(tpot)}
	w.TTFTP99, w.TPOTP99 = quantile(0.99, w.TTFT, nil), quantile(0.99, w.TPOT, nil)
	return w
}

func TestBreach(t *testing.T) {
	shed, good := 0.05, 0.9
	c := &Controller{plan: Plan{SLO: SLO{MaxErrorRate: 0.01, MaxShedRate: &shed, MinGoodput: &good, GoodputTTFT: 500 * time.Millisecond,
		MaxTTFTRatio: 1.5, MaxTPOTRatio: 1.2, MinRequests: 100}}}
	at := func(v, n float64) map[float64]float64 { return map[float64]float64{v: n} }
	stable := window(1000, 0, 0, at(0.1, 1000), at(0.02, 1000))
	for _, tc := range []struct {
		name   string
		canary Window
		want   string
	}{
		{"errors", window(1000, 50, 0, at(0.1, 950), at(0.02, 950)), "error rate 0.0500"},
		// 2 of 100 is 2 %, but the lower bound (0.55 %) is within 1 %.
		{"few errors", window(100, 2, 0, at(0.1, 98), at(0.02, 98)), ""},
		{"shed", window(1000, 0, 100, at(0.1, 900), at(0.02, 900)), "shed rate (429) 0.1000"},
		{"goodput", window(1000, 0, 0, map[float64]float64{0.1: 500, 0.8: 500}, at(0.02, 1000)), "goodput 0.5000"},
		{"slow first token", window(1000, 0, 0, at(0.2, 1000), at(0.02, 1000)), "time to first token"},
		{"slow per token", window(1000, 0, 0, at(0.1, 1000), at(0.03, 1000)), "time per output token"},
		{"too few to judge latency", window(50, 0, 0, at(0.4, 50), at(0.4, 50)), ""},
		{"within the limits", window(1000, 0, 0, at(0.13, 1000), at(0.022, 1000)), ""},
		// One slow request among 100: the point p99 is far out, its lower
		// bound is not.
		{"one outlier", window(100, 0, 0, map[float64]float64{0.1: 99, 1: 1}, at(0.02, 100)), ""},
	} {
		if got := c.breach(stable, tc.canary); (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestQuantileBound: the order-statistic bounds bracket the point
// estimate and close in as observations grow.
func TestQuantileBound(t *testing.T) {
	z := SLO{}.z()
	width := func(n float64) float64 {
		h := hist(map[float64]float64{0.01: n * 0.5, 0.05: n * 0.45, 0.2: n * 0.04, 1: n * 0.01})
		lo, p, hi := quantileBound(h, 0.99, z, false), quantile(0.99, h, nil), quantileBound(h, 0.99, z, true)
		if !(lo <= p && p <= hi) {
			t.Fatalf("n=%v: %v ≤ %v ≤ %v does not hold", n, lo, p, hi)
		}
		return hi / lo
	}
	if w100, w10k := width(100), width(10000); w10k >= w100 {
		t.Fatalf("bounds do not narrow: %v at 100, %v at 10000", w100, w10k)
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
