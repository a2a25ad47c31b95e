package rollout

import (
	"math"
	"strings"
	"testing"
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
