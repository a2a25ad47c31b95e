// Package dispatch runs generations on a remote engine: the counterpart of
// package batch when the model runs in another process (vLLM, SGLang,
// llama.cpp's server). Requests wait in the sidecar's admission queue —
// priority levels, tenant round-robin, deadlines, shedding — and at most
// Concurrency of them run upstream at once: the upstream's best batch size,
// so that its own continuous batching stays full while everything beyond it
// waits here, where it can be prioritised, shed and timed out, instead of
// in the upstream's FIFO.
package dispatch

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-autoglm/autoglm/inference/remote"
	"github.com/open-autoglm/autoglm/sidecar/admission"
	"github.com/open-autoglm/autoglm/sidecar/stream"
	"github.com/open-autoglm/autoglm/sidecar/telemetry"
)

// maxConcurrency bounds a discovered concurrency, whatever the upstream says.
const maxConcurrency = 4096

// Config holds the concurrency and the admission queue's size.
type Config struct {
	// Concurrency is the upstream's best batch size; 0 means read it from
	// Gauge on the upstream's /metrics at start.
	Concurrency int
	Gauge       remote.Gauge
	Queue       admission.Config
}

// Request is one generation to dispatch.
type Request struct {
	remote.Request
	Priority int
	Tenant   string
}

// Job is one request's generation; read it as a stream.Stream. Its errors
// are those of batch.Sequence, plus the upstream's: *remote.Error and
// errors wrapping remote.ErrUnavailable.
type Job struct {
	stream.Stream
	item admission.Item[*Job]
	req  Request
	d    *Dispatcher
}

// Dispatcher queues jobs and runs them upstream.
type Dispatcher struct {
	cfg Config
	c   *remote.Client
	q   *admission.Queue[*Job]
	m   *telemetry.Metrics
	log *slog.Logger

	limit   atomic.Int64
	running atomic.Int64
}

// New returns a dispatcher to c; Run starts it.
func New(cfg Config, c *remote.Client, log *slog.Logger) *Dispatcher {
	d := &Dispatcher{cfg: cfg, c: c, log: log}
	d.q = admission.New(cfg.Queue, func(it *admission.Item[*Job], err error) {
		d.m.Reject(admission.Reason(err))
		it.Value.Finish(stream.Result{}, err)
	})
	d.limit.Store(int64(cfg.Concurrency))
	return d
}

// SetMetrics attaches metrics; call before Run.
func (d *Dispatcher) SetMetrics(m *telemetry.Metrics) { d.m = m }

// Submit queues a request under ctx, which carries its cancellation and
// deadline. It fails at once with admission.ErrQueueFull,
// admission.ErrDeadline or admission.ErrClosed.
func (d *Dispatcher) Submit(ctx context.Context, r Request) (*Job, error) {
	j := &Job{req: r, d: d}
	j.Init(ctx, j.leave)
	j.item = admission.Item[*Job]{Priority: r.Priority, Tenant: r.Tenant, Ctx: ctx, Value: j}
	if err := d.q.TryEnqueue(&j.item); err != nil {
		d.m.Reject(admission.Reason(err))
		return nil, err
	}
	return j, nil
}

// leave takes a job whose caller has gone out of the queue, if it is still
// there.
func (j *Job) leave(err error) (error, bool) {
	err, queued := j.d.q.Leave(&j.item, err)
	if queued && errors.Is(err, admission.ErrDeadline) {
		j.d.m.Reject(admission.Reason(err))
	}
	return err, queued
}

// Close stops admission; queued and running jobs still finish.
func (d *Dispatcher) Close() { d.q.Close() }

// Depths is the queue depth per priority level.
func (d *Dispatcher) Depths() []int { return d.q.Depths() }

// Load reports the jobs running upstream, the concurrency limit (0 until
// known) and the jobs queued here.
func (d *Dispatcher) Load() (running, limit, queued int) {
	return int(d.running.Load()), int(d.limit.Load()), d.q.Len()
}

// Run dispatches until ctx ends. It first reads the concurrency from the
// upstream when it is not configured, retrying while the upstream is not
// up; jobs queue meanwhile. When ctx ends, running jobs are cancelled
// upstream and they and the queued ones fail with stream.ErrStopped.
func (d *Dispatcher) Run(ctx context.Context) error {
	defer d.stopQueued()
	n := d.cfg.Concurrency
	if n <= 0 {
		if n = d.discover(ctx); n == 0 {
			return nil
		}
		d.limit.Store(int64(n))
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, n)
	for {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		it := d.next(ctx)
		if it == nil {
			return nil
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d.run(ctx, it)
		}()
	}
}

// next waits for the next queued job; nil when ctx ends.
func (d *Dispatcher) next(ctx context.Context) *admission.Item[*Job] {
	for {
		if it := d.q.TryDequeue(); it != nil {
			return it
		}
		select {
		case <-d.q.Ready():
		case <-ctx.Done():
			return nil
		}
	}
}

// discover reads the concurrency gauge until it gets a value of at least 1;
// 0 when ctx ends first.
func (d *Dispatcher) discover(ctx context.Context) int {
	wait := 100 * time.Millisecond
	for tries := 0; ; tries++ {
		v, err := d.c.ReadGauge(ctx, d.cfg.Gauge)
		if err == nil && v >= 1 {
			n := int(min(v, maxConcurrency))
			d.log.Info("remote concurrency from the upstream's metrics", "gauge", d.cfg.Gauge.String(), "concurrency", n)
			return n
		}
		if err == nil {
			err = errors.New("value below 1")
		}
		if tries == 0 || tries%20 == 0 {
			d.log.Warn("cannot read the remote concurrency yet; requests queue until it is known", "gauge", d.cfg.Gauge.String(), "err", err)
		}
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
}

// run generates one job upstream, forwarding its text as it comes.
func (d *Dispatcher) run(ctx context.Context, it *admission.Item[*Job]) {
	j := it.Value
	d.running.Add(1) // end takes it back
	wait := time.Since(it.Enqueued())
	r := stream.Result{Arrived: it.Enqueued(), Admitted: time.Now()}
	call, cancel := context.WithCancel(it.Ctx)
	defer cancel()
	defer context.AfterFunc(ctx, cancel)()

	s, err := d.c.Generate(call, &j.req.Request)
	if err != nil {
		d.end(ctx, j, r, wait, err)
		return
	}
	defer s.Close()
	for {
		text, err := s.Next()
		if text != "" {
			if r.FirstToken.IsZero() {
				r.FirstToken = time.Now()
				d.m.ObserveFirstToken(r.FirstToken.Sub(r.Arrived))
			}
			j.Deliver(text)
		}
		if errors.Is(err, io.EOF) {
			u := s.Usage()
			r.Finish, r.PromptTokens, r.CompletionTokens = s.Finish(), u.PromptTokens, u.CompletionTokens
			if r.Finish == "" {
				r.Finish = stream.FinishStop
			}
			d.end(ctx, j, r, wait, nil)
			return
		}
		if err != nil {
			d.end(ctx, j, r, wait, err)
			return
		}
	}
}

// end finishes a job and records it. An error caused by the dispatcher
// stopping becomes stream.ErrStopped, one caused by the caller's context
// that context's error.
func (d *Dispatcher) end(ctx context.Context, j *Job, r stream.Result, wait time.Duration, err error) {
	if err != nil {
		switch {
		case j.item.Ctx.Err() != nil:
			err = j.item.Ctx.Err()
		case ctx.Err() != nil:
			err = stream.ErrStopped
		}
	}
	r.Done = time.Now()
	var afterFirst time.Duration
	if !r.FirstToken.IsZero() {
		afterFirst = r.Done.Sub(r.FirstToken)
	}
	d.m.ObserveAdmitted(wait, r.PromptTokens)
	d.m.ObserveFinished(telemetry.Outcome(err), r.Done.Sub(r.Arrived), afterFirst, r.CompletionTokens)
	d.running.Add(-1) // Load reflects the end before the reader sees it
	j.Finish(r, err)
}

func (d *Dispatcher) stopQueued() {
	d.q.Close()
	for it := d.q.TryDequeue(); it != nil; it = d.q.TryDequeue() {
		it.Value.Finish(stream.Result{}, stream.ErrStopped)
	}
}
