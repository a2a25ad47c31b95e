package rollout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Counters are one sidecar's cumulative counters.
type Counters struct {
	// Requests are finished requests; Errors those answered 5xx, Shed
	// those answered 429 (load shed).
	Requests, Errors, Shed float64
	// TTFT and TPOT are cumulative histogram buckets: upper bound → count.
	TTFT, TPOT map[float64]float64
}

// Sample is one version's counters, by the /metrics URL of each sidecar
// that answered.
type Sample struct {
	Targets map[string]Counters
	// Ready is how many of the version's endpoints are ready and answered.
	Ready int
	// Source says where the sample came from (for /rollout).
	Source string
}

// Window is what happened between two samples.
type Window struct {
	Requests, Errors, Shed float64
	TTFTP99, TPOTP99       float64 // seconds; NaN without observations
	// TTFT and TPOT are the window's cumulative histograms.
	TTFT, TPOT map[float64]float64
}

// TTFTQuantile is the window's q-quantile of time to first token
// (seconds; NaN without observations).
func (w Window) TTFTQuantile(q float64) float64 { return quantile(q, w.TTFT, nil) }

// ErrorRate is errors per request (0 without requests).
func (w Window) ErrorRate() float64 { return ratio(w.Errors, w.Requests) }

// ShedRate is 429s per request (0 without requests).
func (w Window) ShedRate() float64 { return ratio(w.Shed, w.Requests) }

// Goodput is the share of requests whose first token came within ttft
// (errors and shed requests have none), read from the histogram by linear
// interpolation within the bucket that holds ttft.
func (w Window) Goodput(ttft float64) float64 {
	if w.Requests <= 0 {
		return 1
	}
	return min(cumulativeAt(ttft, w.TTFT)/w.Requests, 1)
}

func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}

// Since is the window from before to s: per sidecar, the increase of its
// counters, as PromQL's increase() takes it — a sidecar that is new, or
// whose counters went down (it restarted), counts from zero; one that is
// gone no longer counts.
func (s Sample) Since(before Sample) Window {
	w := Window{TTFT: map[float64]float64{}, TPOT: map[float64]float64{}}
	for url, now := range s.Targets {
		was, ok := before.Targets[url]
		if !ok || now.Requests < was.Requests {
			was = Counters{}
		}
		w.Requests += now.Requests - was.Requests
		w.Errors += max(now.Errors-was.Errors, 0)
		w.Shed += max(now.Shed-was.Shed, 0)
		addDiff(w.TTFT, now.TTFT, was.TTFT)
		addDiff(w.TPOT, now.TPOT, was.TPOT)
	}
	w.TTFTP99, w.TPOTP99 = quantile(0.99, w.TTFT, nil), quantile(0.99, w.TPOT, nil)
	return w
}

func addDiff(into, now, before map[float64]float64) {
	reset := false
	for b, c := range now {
		if c < before[b] {
			reset = true
		}
	}
	for b, c := range now {
		if !reset {
			c -= before[b]
		}
		into[b] += c
	}
}

// quantileBound is a distribution-free one-sided confidence bound of the
// q-quantile of the observations in the cumulative histogram h: the order
// statistic at rank n·q − z·√(n·q·(1−q)) (lower) or + (upper) — the count of
// observations below the true quantile is binomial(n, q), here in its
// normal approximation — read from h as quantile reads it. With few
// observations the upper bound is the largest one and the lower bound
// well below the point estimate, so a p99 of 100 requests decides little.
func quantileBound(h map[float64]float64, q, z float64, upper bool) float64 {
	n := 0.0
	for _, c := range h {
		n = max(n, c)
	}
	if n <= 0 {
		return math.NaN()
	}
	d := z * math.Sqrt(n*q*(1-q))
	if !upper {
		d = -d
	}
	return quantile(min(max((n*q+d)/n, 0), 1), h, nil)
}

// cumulativeAt is how many observations of the cumulative histogram h are
// at most x, interpolating linearly within x's bucket.
func cumulativeAt(x float64, h map[float64]float64) float64 {
	bounds := make([]float64, 0, len(h))
	for b := range h {
		bounds = append(bounds, b)
	}
	sort.Float64s(bounds)
	prevBound, prevCount := 0.0, 0.0
	for _, b := range bounds {
		if x <= b {
			if math.IsInf(b, 1) {
				return prevCount
			}
			return prevCount + (h[b]-prevCount)*(x-prevBound)/(b-prevBound)
		}
		prevBound, prevCount = b, h[b]
	}
	return prevCount
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

// Scrape reads the sidecars' metrics at the given /metrics URLs. A
// sidecar that does not answer is left out of the sample (and not Ready);
// the error says which, and is nil when every one answered.
func Scrape(ctx context.Context, c *http.Client, urls []string) (Sample, error) {
	s := Sample{Targets: map[string]Counters{}}
	var errs []error
	for _, u := range urls {
		cs, err := scrapeOne(ctx, c, u)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.Targets[u] = cs
		s.Ready++
	}
	return s, errors.Join(errs...)
}

func scrapeOne(ctx context.Context, c *http.Client, u string) (Counters, error) {
	cs := Counters{TTFT: map[float64]float64{}, TPOT: map[float64]float64{}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return cs, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return cs, fmt.Errorf("scrape %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return cs, fmt.Errorf("scrape %s: %s", u, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return cs, fmt.Errorf("scrape %s: %w", u, err)
	}
	if f := fams["autoglm_requests_total"]; f != nil {
		for _, m := range f.GetMetric() {
			v := m.GetCounter().GetValue()
			cs.Requests += v
			switch code, _ := strconv.Atoi(label(m, "code")); {
			case code == http.StatusTooManyRequests:
				cs.Shed += v
			case code >= 500:
				cs.Errors += v
			}
		}
	}
	addBuckets(cs.TTFT, fams["autoglm_time_to_first_token_seconds"])
	addBuckets(cs.TPOT, fams["autoglm_time_per_output_token_seconds"])
	return cs, nil
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
