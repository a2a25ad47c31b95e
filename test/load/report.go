package load

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Percentiles of one latency, in milliseconds.
type Percentiles struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99_9"`
	Max   float64 `json:"max"`
}

// Point is one second of the run, for plots.
type Point struct {
	Second    int     `json:"second"`
	Sent      int     `json:"sent"`
	Completed int     `json:"completed"`
	Errors    int     `json:"errors"`
	Tokens    int     `json:"tokens"`
	TTFTP50   float64 `json:"ttft_p50_ms"`
	TTFTP99   float64 `json:"ttft_p99_ms"`
	E2EP50    float64 `json:"e2e_p50_ms"`
	E2EP99    float64 `json:"e2e_p99_ms"`
}

// SLO is what a request must meet to count towards goodput (0: no bound).
type SLO struct {
	TTFT time.Duration `json:"ttft,omitempty"`
	TPOT time.Duration `json:"tpot,omitempty"`
	E2E  time.Duration `json:"e2e,omitempty"`
}

// Report is a run's outcome, written as JSON.
type Report struct {
	Target   string    `json:"target"`
	Model    string    `json:"load_model"` // "open" or "closed"
	Started  time.Time `json:"started"`
	Seconds  float64   `json:"seconds"`
	Workload Workload  `json:"workload"`
	SLO      SLO       `json:"slo"`

	// Offered is the planned arrival rate (open model), Achieved the
	// completions per second, Sent the requests sent per second.
	Offered  float64 `json:"offered_rps,omitempty"`
	Sent     float64 `json:"sent_rps"`
	Achieved float64 `json:"achieved_rps"`
	Goodput  float64 `json:"goodput_rps"`

	Requests int            `json:"requests"`
	OK       int            `json:"ok"`
	Errors   map[string]int `json:"errors"`
	// Reasons counts the failures by what the service (or the transport)
	// said, at most maxReasons distinct ones (the rest under "other").
	Reasons map[string]int `json:"error_reasons,omitempty"`
	// Dropped are arrivals not sent because max in-flight was reached.
	Dropped int `json:"dropped_iterations"`

	PromptTokens     int64   `json:"prompt_tokens"`
	CompletionTokens int64   `json:"completion_tokens"`
	TokensPerSecond  float64 `json:"output_tokens_per_second"`

	// Latencies: ttft, itl (inter-token), tpot (per output token after
	// the first, per request), e2e, and lag (actual − intended send time).
	Latency  map[string]Percentiles `json:"latency_ms"`
	Timeline []Point                `json:"timeline"`
	// KeptUp is false when the generator fell behind its schedule;
	// Warnings say how.
	KeptUp   bool     `json:"kept_up"`
	Warnings []string `json:"warnings,omitempty"`
}

// Write writes r as indented JSON to path ("-": standard output).
func (r *Report) Write(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if path == "-" {
		_, err = os.Stdout.Write(b)
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// ReadReport reads a report written by Write.
func ReadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: not an autoglm-load report: %w", path, err)
	}
	return &r, nil
}

// Compare prints b's change against a, metric by metric.
func Compare(w io.Writer, a, b *Report) {
	row := func(name string, x, y float64, higherBetter bool) {
		d := ""
		if x != 0 {
			pct := (y - x) / x * 100
			verdict := ""
			switch {
			case pct > 1 && higherBetter, pct < -1 && !higherBetter:
				verdict = " better"
			case pct > 1, pct < -1:
				verdict = " worse"
			}
			d = fmt.Sprintf("%+.1f%%%s", pct, verdict)
		}
		fmt.Fprintf(w, "%-22s %14.3f %14.3f  %s\n", name, x, y, d)
	}
	fmt.Fprintf(w, "%-22s %14s %14s  %s\n", "metric", "a", "b", "change")
	row("achieved req/s", a.Achieved, b.Achieved, true)
	row("goodput req/s", a.Goodput, b.Goodput, true)
	row("output tokens/s", a.TokensPerSecond, b.TokensPerSecond, true)
	row("error rate", errRate(a), errRate(b), false)
	for _, m := range []string{"ttft", "itl", "tpot", "e2e"} {
		pa, pb := a.Latency[m], b.Latency[m]
		row(m+" p50 ms", pa.P50, pb.P50, false)
		row(m+" p99 ms", pa.P99, pb.P99, false)
	}
}

func errRate(r *Report) float64 {
	if r.Requests == 0 {
		return 0
	}
	return float64(r.Requests-r.OK) / float64(r.Requests)
}

// recorder folds results into histograms; safe for concurrent use.
// maxReasons bounds the distinct failure reasons a report keeps.
const maxReasons = 20

type recorder struct {
	mu      sync.Mutex
	start   time.Time
	slo     SLO
	hist    map[string]*hdrhistogram.Histogram // µs
	errors  map[string]int
	reasons map[string]int
	n, ok   int
	good    int
	dropped int
	in, out int64
	seconds []second
}

type second struct {
	sent, completed, errors, tokens int
	ttft, e2e                       *hdrhistogram.Histogram
}

var metricNames = []string{"ttft", "itl", "tpot", "e2e", "lag"}

func newHist() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, int64(time.Hour/time.Microsecond), 3)
}

func newRecorder(start time.Time, slo SLO) *recorder {
	r := &recorder{start: start, slo: slo, hist: map[string]*hdrhistogram.Histogram{}, errors: map[string]int{}, reasons: map[string]int{}}
	for _, m := range metricNames {
		r.hist[m] = newHist()
	}
	return r
}

func (r *recorder) sec(t time.Time) *second {
	i := max(0, int(t.Sub(r.start)/time.Second))
	for len(r.seconds) <= i {
		r.seconds = append(r.seconds, second{ttft: newHist(), e2e: newHist()})
	}
	return &r.seconds[i]
}

func us(d time.Duration) int64 { return max(1, d.Microseconds()) }

// sent records a request leaving lag after its intended time.
func (r *recorder) sent(at time.Time, lag time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hist["lag"].RecordValue(max(0, lag.Microseconds()))
	r.sec(at).sent++
}

func (r *recorder) drop() {
	r.mu.Lock()
	r.dropped++
	r.mu.Unlock()
}

// done records a result; latencies count from intended, the time the
// request should have left.
func (r *recorder) done(intended time.Time, res *Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	s := r.sec(res.Done)
	s.completed++
	if res.Class != "" {
		r.errors[res.Class]++
		s.errors++
		reason := res.Reason
		if reason == "" {
			reason = res.Class
		}
		if _, seen := r.reasons[reason]; !seen && len(r.reasons) >= maxReasons {
			reason = "other"
		}
		r.reasons[reason]++
		return
	}
	r.ok++
	e2e, ttft := res.Done.Sub(intended), res.FirstToken.Sub(intended)
	r.hist["e2e"].RecordValue(us(e2e))
	r.hist["ttft"].RecordValue(us(ttft))
	s.e2e.RecordValue(us(e2e))
	s.ttft.RecordValue(us(ttft))
	for _, g := range res.Gaps {
		r.hist["itl"].RecordValue(us(g))
	}
	var tpot time.Duration
	if res.CompletionTokens > 1 {
		tpot = res.Done.Sub(res.FirstToken) / time.Duration(res.CompletionTokens-1)
		r.hist["tpot"].RecordValue(us(tpot))
	}
	r.in += int64(res.PromptTokens)
	r.out += int64(res.CompletionTokens)
	s.tokens += res.CompletionTokens
	if (r.slo.TTFT == 0 || ttft <= r.slo.TTFT) && (r.slo.TPOT == 0 || tpot <= r.slo.TPOT) && (r.slo.E2E == 0 || e2e <= r.slo.E2E) {
		r.good++
	}
}

func percentiles(h *hdrhistogram.Histogram) Percentiles {
	ms := func(v int64) float64 { return float64(v) / 1e3 }
	return Percentiles{Count: h.TotalCount(), Mean: h.Mean() / 1e3, P50: ms(h.ValueAtQuantile(50)), P90: ms(h.ValueAtQuantile(90)),
		P99: ms(h.ValueAtQuantile(99)), P999: ms(h.ValueAtQuantile(99.9)), Max: ms(h.Max())}
}

// report fills rep's measured fields for a run of el.
func (r *recorder) report(rep *Report, el time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	secs := el.Seconds()
	rep.Seconds, rep.Requests, rep.OK, rep.Dropped = secs, r.n, r.ok, r.dropped
	rep.Errors = map[string]int{}
	for k, v := range r.errors {
		rep.Errors[k] = v
	}
	if len(r.reasons) > 0 {
		rep.Reasons = map[string]int{}
		for k, v := range r.reasons {
			rep.Reasons[k] = v
		}
	}
	sent := 0
	for _, s := range r.seconds {
		sent += s.sent
	}
	rep.Sent, rep.Achieved, rep.Goodput = float64(sent)/secs, float64(r.n)/secs, float64(r.good)/secs
	rep.PromptTokens, rep.CompletionTokens, rep.TokensPerSecond = r.in, r.out, float64(r.out)/secs
	rep.Latency = map[string]Percentiles{}
	for _, m := range metricNames {
		rep.Latency[m] = percentiles(r.hist[m])
	}
	rep.Timeline = make([]Point, len(r.seconds))
	for i, s := range r.seconds {
		rep.Timeline[i] = Point{Second: i, Sent: s.sent, Completed: s.completed, Errors: s.errors, Tokens: s.tokens,
			TTFTP50: float64(s.ttft.ValueAtQuantile(50)) / 1e3, TTFTP99: float64(s.ttft.ValueAtQuantile(99)) / 1e3,
			E2EP50: float64(s.e2e.ValueAtQuantile(50)) / 1e3, E2EP99: float64(s.e2e.ValueAtQuantile(99)) / 1e3}
	}
	rep.KeptUp = true
	if r.dropped > 0 {
		rep.KeptUp = false
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%d arrivals dropped: max in-flight reached (the service is slower than the offered rate, or -max-in-flight is too low)", r.dropped))
	}
	if lag := rep.Latency["lag"]; lag.P99 > 10 {
		rep.KeptUp = false
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("the generator fell behind its schedule: send lag p99 %.1f ms, max %.1f ms (latencies still count from the intended send times)", lag.P99, lag.Max))
	}
	sort.Strings(rep.Warnings)
}

// Thresholds are the limits a run must stay within (zero: not checked),
// as k6's thresholds are: crossing one makes autoglm-load exit non-zero.
type Thresholds struct {
	MaxErrorRate float64 // failed requests / requests
	MaxTTFTP99   float64 // ms
	MaxE2EP99    float64 // ms
}

// Check returns what the report crossed: every threshold, and — always —
// a run in which no request succeeded.
func (r *Report) Check(t Thresholds) []string {
	var out []string
	failed := r.Requests - r.OK
	if r.Requests > 0 && r.OK == 0 {
		out = append(out, fmt.Sprintf("every request failed (%d): %v", r.Requests, r.Errors))
	} else if r.Requests == 0 {
		out = append(out, "no request completed")
	}
	if t.MaxErrorRate > 0 && r.Requests > 0 && float64(failed)/float64(r.Requests) > t.MaxErrorRate {
		out = append(out, fmt.Sprintf("error rate %.4f > %.4f", float64(failed)/float64(r.Requests), t.MaxErrorRate))
	}
	if p := r.Latency["ttft"].P99; t.MaxTTFTP99 > 0 && p > t.MaxTTFTP99 {
		out = append(out, fmt.Sprintf("ttft p99 %.1f ms > %.1f ms", p, t.MaxTTFTP99))
	}
	if p := r.Latency["e2e"].P99; t.MaxE2EP99 > 0 && p > t.MaxE2EP99 {
		out = append(out, fmt.Sprintf("e2e p99 %.1f ms > %.1f ms", p, t.MaxE2EP99))
	}
	return out
}
