// Package telemetry holds the sidecar's Prometheus metrics and its ORCA load
// report: the reporting side of the request path. A nil *Metrics is valid
// and records nothing, so components run without a registry in tests.
package telemetry

import (
	"context"
	"errors"
	"math"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Rejection reasons, the values of the "reason" label.
const (
	ReasonQueueFull = "queue_full"
	ReasonDeadline  = "deadline"
	ReasonDraining  = "draining"
	ReasonInvalid   = "invalid_request"
	ReasonTooLarge  = "body_too_large"
)

// Metrics records what the sidecar does.
type Metrics struct {
	batchSize   prometheus.Histogram
	batchTokens prometheus.Histogram
	ttft        prometheus.Histogram
	tpot        prometheus.Histogram
	e2e         *prometheus.HistogramVec
	queueWait   prometheus.Histogram
	tokensIn    prometheus.Counter
	tokensOut   prometheus.Counter
	rejections  *prometheus.CounterVec
	requests    *prometheus.CounterVec
	grpcCodes   *prometheus.CounterVec
	genai       genAI
	// qps and eps are requests served, and answered 5xx or 429, per
	// second, for ORCA.
	qps, eps Rate
}

var latencyBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}

// The TTFT and TPOT histograms are what canary rollouts compare (p99 of the
// canary over the stable version's, limits such as 1.5× and 1.2×): their
// buckets grow by a constant factor (1.2 and 1.15) so that a quantile read
// from them is never off by more than that within one bucket — the
// 2.5× steps of latencyBuckets could not tell 1.2× apart at all.
var (
	ttftBuckets = rounded(prometheus.ExponentialBucketsRange(0.002, 120, 61))
	tpotBuckets = rounded(prometheus.ExponentialBucketsRange(0.0005, 2, 60))
)

// rounded keeps three significant digits of each bound, so that the le
// labels read 0.00241, not 0.0024025135726842928.
func rounded(b []float64) []float64 {
	for i, v := range b {
		e := math.Pow(10, math.Floor(math.Log10(v))-2)
		b[i] = math.Round(v/e) * e
		if s, err := strconv.ParseFloat(strconv.FormatFloat(b[i], 'g', 3, 64), 64); err == nil {
			b[i] = s
		}
	}
	return b
}

// New registers the metrics of the served model with reg, each with a
// model label. depths reports the queue depth per priority level and load
// the running sequences, their limit and KV use, both read at scrape time.
func New(reg prometheus.Registerer, model string, depths func() []int, load func() Load) *Metrics {
	perModel := prometheus.WrapRegistererWith(prometheus.Labels{"model": model}, reg)
	m := &Metrics{
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "autoglm_batch_size", Help: "Sequences in each engine step.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}),
		batchTokens: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "autoglm_batch_tokens", Help: "Tokens fed to the engine in each step.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9),
		}),
		ttft: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "autoglm_time_to_first_token_seconds", Help: "Time from arrival to the first generated token.",
			Buckets: ttftBuckets,
		}),
		tpot: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "autoglm_time_per_output_token_seconds", Help: "Mean time per output token after the first, per request.",
			Buckets: tpotBuckets,
		}),
		e2e: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "autoglm_request_duration_seconds", Help: "End-to-end latency of generation requests.",
			Buckets: latencyBuckets,
		}, []string{"outcome"}),
		queueWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "autoglm_queue_wait_seconds", Help: "Time admitted requests waited in the queue.",
			Buckets: latencyBuckets,
		}),
		tokensIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "autoglm_prompt_tokens_total", Help: "Prompt tokens of admitted requests.",
		}),
		tokensOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "autoglm_generation_tokens_total", Help: "Generated tokens.",
		}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "autoglm_rejections_total", Help: "Requests refused, by reason.",
		}, []string{"reason"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "autoglm_requests_total", Help: "Finished requests by API and status code.",
		}, []string{"api", "code"}),
		grpcCodes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "autoglm_grpc_requests_total", Help: "Finished gRPC calls by method and gRPC status code name (autoglm_requests_total{api=\"grpc\"} counts them by the HTTP status of the same answer).",
		}, []string{"grpc_method", "grpc_code"}),
		genai: newGenAI(),
	}
	for _, r := range []string{ReasonQueueFull, ReasonDeadline, ReasonDraining, ReasonInvalid, ReasonTooLarge} {
		m.rejections.WithLabelValues(r)
	}
	perModel.MustRegister(m.batchSize, m.batchTokens, m.ttft, m.tpot, m.e2e, m.queueWait, m.tokensIn, m.tokensOut, m.rejections, m.requests,
		m.grpcCodes, &loadCollector{depths: depths, load: load})
	reg.MustRegister(m.genai.collectors()...)
	reg.MustRegister(&gieCollector{model: model, started: float64(time.Now().Unix()), depths: depths, load: load})
	return m
}

func (m *Metrics) ObserveBatch(seqs, tokens int) {
	if m != nil {
		m.batchSize.Observe(float64(seqs))
		m.batchTokens.Observe(float64(tokens))
	}
}

func (m *Metrics) ObserveAdmitted(wait time.Duration, promptTokens int) {
	if m != nil {
		m.queueWait.Observe(wait.Seconds())
		m.tokensIn.Add(float64(promptTokens))
	}
}

func (m *Metrics) ObserveFirstToken(d time.Duration) {
	if m != nil {
		m.ttft.Observe(d.Seconds())
	}
}

// ObserveFinished records a finished sequence: its latency, outcome and
// the mean time per output token after the first.
func (m *Metrics) ObserveFinished(outcome string, total, afterFirst time.Duration, tokens int) {
	if m == nil {
		return
	}
	m.e2e.WithLabelValues(outcome).Observe(total.Seconds())
	m.tokensOut.Add(float64(tokens))
	if tokens > 1 {
		m.tpot.Observe(afterFirst.Seconds() / float64(tokens-1))
	}
}

func (m *Metrics) Reject(reason string) {
	if m != nil {
		m.rejections.WithLabelValues(reason).Inc()
	}
}

// GRPC counts a finished gRPC call of method by its status code name.
func (m *Metrics) GRPC(method, code string) {
	if m != nil {
		m.grpcCodes.WithLabelValues(method, code).Inc()
	}
}

func (m *Metrics) Request(api string, code int) {
	if m != nil {
		m.requests.WithLabelValues(api, strconv.Itoa(code)).Inc()
		// For ORCA: a shed request (429) answers at once; as a served
		// query it would make a full replica look fast to weighted round
		// robin, so it counts as an error, as 5xx answers do.
		now := time.Now()
		if code >= 500 || code == 429 {
			m.eps.Add(now)
		} else {
			m.qps.Add(now)
		}
	}
}

// Rates are the requests served and those answered 5xx or 429, per second
// over the last 10 s (0, 0 for a nil *Metrics).
func (m *Metrics) Rates(now time.Time) (qps, eps float64) {
	if m == nil {
		return 0, 0
	}
	return m.qps.PerSecond(now), m.eps.PerSecond(now)
}

// Load is the engine's occupancy at one moment.
type Load struct {
	// Running sequences, and the most that run at once (the batch size
	// limit, or the remote engine's concurrency; 0 while unknown).
	Running, Capacity int
	// KVUsed tokens of the KVTotal budget (0 when the engine is remote).
	KVUsed, KVTotal int
}

// Outcome is the "outcome" label of a generation that ended with err.
func Outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline"
	}
	return "error"
}

// loadCollector reads gauges at scrape time, so the hot path updates none.
type loadCollector struct {
	depths func() []int
	load   func() Load
}

var (
	queueDepthDesc = prometheus.NewDesc("autoglm_queue_depth", "Requests waiting, by priority level.", []string{"priority"}, nil)
	runningDesc    = prometheus.NewDesc("autoglm_running_sequences", "Sequences in the running batch.", nil, nil)
	capacityDesc   = prometheus.NewDesc("autoglm_max_running_sequences", "Most sequences that run at once: the batch size limit, or the remote engine's concurrency.", nil, nil)
	kvDesc         = prometheus.NewDesc("autoglm_kv_utilization", "Fraction of the KV-cache token budget reserved.", nil, nil)
)

func (c *loadCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueDepthDesc
	ch <- runningDesc
	ch <- capacityDesc
	ch <- kvDesc
}

func (c *loadCollector) Collect(ch chan<- prometheus.Metric) {
	for p, n := range c.depths() {
		ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(n), strconv.Itoa(p))
	}
	l := c.load()
	ch <- prometheus.MustNewConstMetric(runningDesc, prometheus.GaugeValue, float64(l.Running))
	ch <- prometheus.MustNewConstMetric(capacityDesc, prometheus.GaugeValue, float64(l.Capacity))
	kv := 0.0
	if l.KVTotal > 0 {
		kv = float64(l.KVUsed) / float64(l.KVTotal)
	}
	ch <- prometheus.MustNewConstMetric(kvDesc, prometheus.GaugeValue, kv)
}
