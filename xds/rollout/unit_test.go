package rollout

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

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
	c := &Controller{plan: Plan{SLO: SLO{MaxErrorRate: 0.01, MaxTTFTRatio: 2, MaxTPOTRatio: 2, MinRequests: 10}}}
	stable := Window{Requests: 100, TTFTP99: 0.1, TPOTP99: 0.02}
	for _, tc := range []struct {
		canary Window
		want   string
	}{
		{Window{Requests: 100, Errors: 5, TTFTP99: 0.1, TPOTP99: 0.02}, "error rate 0.050"},
		{Window{Requests: 100, TTFTP99: 0.3, TPOTP99: 0.02}, "time to first token 300.0 ms > 2.0 × stable's 100.0 ms"},
		{Window{Requests: 100, TTFTP99: 0.1, TPOTP99: 0.05}, "time per output token"},
		{Window{Requests: 5, TTFTP99: 9, TPOTP99: 9}, ""}, // too few requests to judge latency
		{Window{Requests: 100, TTFTP99: 0.15, TPOTP99: 0.03}, ""},
	} {
		if got := c.breach(stable, tc.canary); (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%+v: %q, want %q", tc.canary, got, tc.want)
		}
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
