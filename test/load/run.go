package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Config is one run.
type Config struct {
	// Model is "open" (arrivals at Rate, requests/s) or "closed" (VUs
	// virtual users, each sending back to back after Think).
	Model   string
	Rate    Ramp
	Poisson bool
	// MaxInFlight bounds the open model's concurrent requests; arrivals
	// beyond it are dropped and counted (0: 10 000).
	MaxInFlight int
	VUs         Ramp
	Think       time.Duration
	// Cap limits the sending rate of either model (requests/s, 0: none).
	Cap      float64
	Workload Workload
	// Timeout bounds each request (0: none).
	Timeout time.Duration
	SLO     SLO
	Seed    uint64
	// Progress, when set, gets a status line every second.
	Progress io.Writer
}

// Validate reports every problem with its flag or field name.
func (c *Config) Validate() error {
	var errs []error
	switch c.Model {
	case "open":
		errs = append(errs, c.Rate.Validate("rate"))
		if c.Workload.Turns > 1 {
			errs = append(errs, errors.New("turns: multi-turn sessions need the closed model (-vus): a session's next turn waits for its reply"))
		}
	case "closed":
		errs = append(errs, c.VUs.Validate("vus"))
	default:
		errs = append(errs, fmt.Errorf("model: must be open or closed, got %q", c.Model))
	}
	if c.MaxInFlight < 0 {
		errs = append(errs, fmt.Errorf("max-in-flight: must not be negative, got %d", c.MaxInFlight))
	}
	if c.Think < 0 || c.Timeout < 0 || c.Cap < 0 {
		errs = append(errs, errors.New("think, timeout and cap must not be negative"))
	}
	if c.Workload.Dataset == nil && (c.Workload.Prompt.Kind == "" || c.Workload.Output.Kind == "") {
		errs = append(errs, errors.New("prompt and output: length distributions are required without a dataset"))
	}
	if c.Workload.Output.Kind == "" {
		errs = append(errs, errors.New("output: a max_tokens distribution is required"))
	}
	if c.Workload.PrefixGroups < 0 || c.Workload.PrefixWords < 0 || (c.Workload.PrefixGroups > 0 && c.Workload.PrefixWords == 0) {
		errs = append(errs, errors.New("prefix-groups and prefix-words: a number of groups needs a prefix length ≥ 1"))
	}
	return errors.Join(errs...)
}

// Run drives t as cfg says until the schedule ends or ctx does, waits for
// the requests in flight, and reports.
func Run(ctx context.Context, cfg Config, t Target, name string) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	start := time.Now()
	rec := newRecorder(start, cfg.SLO)
	rep := &Report{Target: name, Model: cfg.Model, Started: start, Workload: cfg.Workload, SLO: cfg.SLO}
	var lim *rate.Limiter
	if cfg.Cap > 0 {
		lim = rate.NewLimiter(rate.Limit(cfg.Cap), 1)
	}
	var inflight atomic.Int64
	total := cfg.VUs.Duration()
	if cfg.Model == "open" {
		total = cfg.Rate.Duration()
	}
	stopProgress := progress(cfg.Progress, start, total, rec, &inflight)
	switch cfg.Model {
	case "open":
		runOpen(ctx, cfg, t, rec, lim, start, &inflight)
		rep.Offered = float64(countArrivals(cfg)) / cfg.Rate.Duration().Seconds()
	default:
		runClosed(ctx, cfg, t, rec, lim, start, &inflight)
	}
	stopProgress()
	rec.report(rep, time.Since(start))
	return rep, nil
}

func countArrivals(cfg Config) int {
	a := NewArrivals(cfg.Rate, cfg.Poisson, cfg.Seed)
	n := 0
	for _, ok := a.Next(); ok; _, ok = a.Next() {
		n++
	}
	return n
}

// send runs one request, intended to leave at intended.
func send(ctx context.Context, cfg *Config, t Target, rec *recorder, req *Request, intended time.Time) Result {
	now := time.Now()
	rec.sent(now, now.Sub(intended))
	if cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
	}
	res := t.Do(ctx, req)
	rec.done(intended, &res)
	return res
}

// runOpen sends at the arrival schedule's offsets, whatever happened to the
// earlier requests.
func runOpen(ctx context.Context, cfg Config, t Target, rec *recorder, lim *rate.Limiter, start time.Time, inflight *atomic.Int64) {
	maxIn := int64(cfg.MaxInFlight)
	if maxIn == 0 {
		maxIn = 10_000
	}
	arr := NewArrivals(cfg.Rate, cfg.Poisson, cfg.Seed)
	// Requests are built ahead on this goroutine from one seeded session,
	// so the workload does not depend on timing.
	s := &session{rng: rand.New(rand.NewPCG(cfg.Seed, 1))}
	pool := &workers{jobs: make(chan job), max: maxIn, inflight: inflight,
		do: func(j job) { send(ctx, &cfg, t, rec, j.req, j.intended) }}
	defer pool.stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		off, ok := arr.Next()
		if !ok {
			return
		}
		req := cfg.Workload.next(s)
		intended := start.Add(off)
		if d := time.Until(intended); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return
		}
		if lim != nil && lim.Wait(ctx) != nil {
			return
		}
		if !pool.submit(job{req: req, intended: intended}) {
			rec.drop()
		}
	}
}

type job struct {
	req      *Request
	intended time.Time
}

// workers runs the open model's requests on goroutines that outlive one
// request: a new goroutine per request would grow (and copy) its stack
// every time, which costs more CPU than the request at 10k requests/s.
type workers struct {
	jobs     chan job
	max      int64
	inflight *atomic.Int64
	n        atomic.Int64
	wg       sync.WaitGroup
	do       func(job)
}

// submit hands j to an idle worker, or to a new one while fewer than max
// requests are in flight; false means it was dropped.
func (w *workers) submit(j job) bool {
	if w.inflight.Load() >= w.max {
		return false
	}
	w.inflight.Add(1)
	select {
	case w.jobs <- j:
		return true
	default:
	}
	w.n.Add(1)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			w.do(j)
			w.inflight.Add(-1)
			var ok bool
			if j, ok = <-w.jobs; !ok {
				return
			}
		}
	}()
	return true
}

// stop lets the workers finish their requests and waits for them.
func (w *workers) stop() {
	close(w.jobs)
	w.wg.Wait()
}

// runClosed keeps the ramp's number of virtual users sending, each after
// its previous reply and the think time.
func runClosed(ctx context.Context, cfg Config, t Target, rec *recorder, lim *rate.Limiter, start time.Time, inflight *atomic.Int64) {
	end := start.Add(cfg.VUs.Duration())
	var target atomic.Int64
	var wg sync.WaitGroup
	defer wg.Wait()
	running := 0
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		now := time.Now()
		if now.After(end) || ctx.Err() != nil {
			target.Store(0)
			return
		}
		n := int(cfg.VUs.At(now.Sub(start)) + 0.5)
		target.Store(int64(n))
		for ; running < n; running++ {
			id := running
			wg.Add(1)
			go func() {
				defer wg.Done()
				vu(ctx, &cfg, t, rec, lim, id, &target, end, inflight)
			}()
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

// vu is one virtual user: it runs while its id is below the target and
// the run lasts, and keeps its session across iterations; a VU above the
// target waits to be needed again.
func vu(ctx context.Context, cfg *Config, t Target, rec *recorder, lim *rate.Limiter, id int, target *atomic.Int64, end time.Time, inflight *atomic.Int64) {
	s := &session{rng: rand.New(rand.NewPCG(cfg.Seed, uint64(id)+2))}
	var backoff time.Duration // after transport errors: the target is down or refusing
	for ctx.Err() == nil && time.Now().Before(end) {
		if int64(id) >= target.Load() {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		req := cfg.Workload.next(s)
		// The cap is the generator's own pacing: a closed-model request
		// is intended to leave when the cap lets it.
		if lim != nil && (lim.Wait(ctx) != nil || time.Now().After(end)) {
			return
		}
		intended := time.Now()
		inflight.Add(1)
		res := send(ctx, cfg, t, rec, req, intended)
		inflight.Add(-1)
		if res.Class == "" {
			s.reply(res.Text)
		} else {
			s.turn = 0 // a failed turn ends the session
		}
		// A refused connection fails at once: without a pause each VU would
		// spin at tens of thousands of attempts a second against a target
		// that is down. Doubling from 10 ms to 1 s; a success resets it.
		if res.Class == ClassTransport {
			backoff = min(max(2*backoff, 10*time.Millisecond), time.Second)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
		} else {
			backoff = 0
		}
		if cfg.Think > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(cfg.Think):
			}
		}
	}
}

// progress redraws a status line with a bar of the schedule's progress
// every second until the returned func is called.
func progress(w io.Writer, start time.Time, total time.Duration, rec *recorder, inflight *atomic.Int64) func() {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				fmt.Fprintln(w)
				return
			case <-tick.C:
				rec.mu.Lock()
				n, ok, dropped := rec.n, rec.ok, rec.dropped
				p99 := float64(rec.hist["ttft"].ValueAtQuantile(99)) / 1e3
				rec.mu.Unlock()
				el := time.Since(start)
				const width = 20
				fill := min(width, int(float64(width)*el.Seconds()/total.Seconds()))
				fmt.Fprintf(w, "\r[%s%s] %4.0f/%.0fs  done %7d  errors %5d  dropped %5d  in flight %5d  %7.1f req/s  ttft p99 %7.1f ms ",
					strings.Repeat("=", fill), strings.Repeat(" ", width-fill), el.Seconds(), total.Seconds(),
					n, n-ok, dropped, inflight.Load(), float64(n)/el.Seconds(), p99)
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}
