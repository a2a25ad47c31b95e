package rollout

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Sample is one version's cumulative counters, summed over its sidecars.
type Sample struct {
	Requests, Errors float64
	// TTFT and TPOT are cumulative histogram buckets: upper bound → count.
	TTFT, TPOT map[float64]float64
}

// Window is what happened between two samples.
type Window struct {
	Requests, Errors float64
	TTFTP99, TPOTP99 float64 // seconds; NaN without observations
}

// ErrorRate is errors per request (0 without requests).
func (w Window) ErrorRate() float64 {
	if w.Requests == 0 {
		return 0
	}
	return w.Errors / w.Requests
}

// Since is the window from before to s.
func (s Sample) Since(before Sample) Window {
	return Window{
		Requests: s.Requests - before.Requests, Errors: s.Errors - before.Errors,
		TTFTP99: quantile(0.99, s.TTFT, before.TTFT), TPOTP99: quantile(0.99, s.TPOT, before.TPOT),
	}
}

// quantile interpolates within the bucket that holds q, like PromQL's
// histogram_quantile, over the difference of two cumulative histograms.
func quantile(q float64, now, before map[float64]float64) float64 {
	bounds := make([]float64, 0, len(now))
	for b := range now {
		bounds = append(bounds, b)
	}
	sort.Float64s(bounds)
	if len(bounds) == 0 {
		return math.NaN()
	}
	total := now[bounds[len(bounds)-1]] - before[bounds[len(bounds)-1]]
	if total <= 0 {
		return math.NaN()
	}
	rank := q * total
	prevBound, prevCount := 0.0, 0.0
	for _, b := range bounds {
		c := now[b] - before[b]
		if c >= rank {
			if math.IsInf(b, 1) {
				return prevBound // beyond the last finite bucket
			}
			if c == prevCount {
				return b
			}
			return prevBound + (b-prevBound)*(rank-prevCount)/(c-prevCount)
		}
		prevBound, prevCount = b, c
	}
	return bounds[len(bounds)-1]
}

// Scrape reads and sums the sidecars' metrics at the given /metrics URLs.
// A failed request (a 5xx or a 429) counts as an error.
func Scrape(ctx context.Context, c *http.Client, urls []string) (Sample, error) {
	s := Sample{TTFT: map[float64]float64{}, TPOT: map[float64]float64{}}
	for _, u := range urls {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return s, err
		}
		resp, err := c.Do(req)
		if err != nil {
			return s, fmt.Errorf("scrape %s: %w", u, err)
		}
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(io.LimitReader(resp.Body, 32<<20))
		resp.Body.Close()
		if err != nil {
			return s, fmt.Errorf("scrape %s: %w", u, err)
		}
		if f := fams["autoglm_requests_total"]; f != nil {
			for _, m := range f.GetMetric() {
				v := m.GetCounter().GetValue()
				s.Requests += v
				if code, _ := strconv.Atoi(label(m, "code")); code >= 500 || code == 429 {
					s.Errors += v
				}
			}
		}
		addBuckets(s.TTFT, fams["autoglm_time_to_first_token_seconds"])
		addBuckets(s.TPOT, fams["autoglm_time_per_output_token_seconds"])
	}
	return s, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func addBuckets(into map[float64]float64, f *dto.MetricFamily) {
	if f == nil {
		return
	}
	for _, m := range f.GetMetric() {
		h := m.GetHistogram()
		inf := false
		for _, b := range h.GetBucket() {
			into[b.GetUpperBound()] += float64(b.GetCumulativeCount())
			inf = inf || math.IsInf(b.GetUpperBound(), 1)
		}
		// The text format lists the le="+Inf" bucket; adding the sample
		// count as well counted every observation twice, and put every
		// p99 past the last finite bucket (a canary 25× slower compared
		// equal). Only a format without that bucket needs the count.
		if !inf {
			into[math.Inf(1)] += float64(h.GetSampleCount())
		}
	}
}

// MetricsURLs are the /metrics URLs of a version's static endpoints.
func MetricsURLs(endpoints []string) []string {
	out := make([]string, len(endpoints))
	for i, e := range endpoints {
		out[i] = "http://" + strings.TrimPrefix(e, "http://") + "/metrics"
	}
	return out
}
