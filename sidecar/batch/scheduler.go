package batch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/sidecar/admission"
	"github.com/open-autoglm/autoglm/sidecar/stream"
	"github.com/open-autoglm/autoglm/sidecar/telemetry"
)

// ErrStopped is returned to sequences still queued or running when the
// scheduler stops.
var ErrStopped = stream.ErrStopped

// ErrTooLong reports a request whose prompt plus max tokens cannot fit the
// model's context or the engine's KV budget.
var ErrTooLong = errors.New("batch: request exceeds the context length")

// Config holds the batching limits and the admission queue's size.
type Config struct {
	// MaxBatchSize is the most sequences in one step.
	MaxBatchSize int
	// MaxBatchTokens is the most tokens fed in one step; long prompts are
	// prefilled in chunks under it.
	MaxBatchTokens int
	// MaxQueueDelay is how long an idle engine waits for a batch to fill
	// before its first step (0: start at once).
	MaxQueueDelay time.Duration
	// KVTokens caps the engine's KV budget (0: the engine's own), e.g. as
	// sized from free GPU memory.
	KVTokens int
	Queue    admission.Config
}

// Scheduler runs continuous batching over one engine.
type Scheduler struct {
	cfg  Config
	eng  inference.Engine
	info inference.Info
	tok  inference.Tokenizer
	q    *admission.Queue[*Sequence]
	m    *telemetry.Metrics
	log  *slog.Logger
	// tracer, when set, makes a span per engine step that runs a sampled
	// request, linked to those requests' spans (SetTracing).
	tracer trace.Tracer
	links  []trace.Link

	// Owned by Run's goroutine.
	running []*Sequence
	free    []int
	slotSeq []*Sequence
	held    *Sequence
	kvUsed  int
	inputs  []inference.Input

	nRunning atomic.Int64
	nKV      atomic.Int64
}

// New returns a scheduler for eng; Run starts it.
func New(cfg Config, eng inference.Engine, log *slog.Logger) *Scheduler {
	info := eng.Info()
	if cfg.KVTokens > 0 && cfg.KVTokens < info.KVTokens {
		info.KVTokens = cfg.KVTokens
	}
	s := &Scheduler{cfg: cfg, eng: eng, info: info, tok: eng.Tokenizer(), log: log, slotSeq: make([]*Sequence, info.Slots)}
	s.q = admission.New(cfg.Queue, func(it *admission.Item[*Sequence], err error) {
		s.m.Reject(admission.Reason(err))
		it.Value.abort(err)
	})
	for i := info.Slots - 1; i >= 0; i-- {
		s.free = append(s.free, i)
	}
	return s
}

// SetMetrics attaches metrics; call before Run.
func (s *Scheduler) SetMetrics(m *telemetry.Metrics) { s.m = m }

// SetTracing makes the scheduler trace its engine steps with tp (nil:
// not, the default). A step is shared by many requests, so it is not a
// child of any: it is a span of its own, made only when a request in it
// is sampled, with a link to each sampled request's span. Call before Run.
func (s *Scheduler) SetTracing(tp trace.TracerProvider) {
	s.tracer = nil
	if tp != nil {
		s.tracer = tp.Tracer("github.com/open-autoglm/autoglm/sidecar/batch")
	}
}

// Info describes the engine's model.
func (s *Scheduler) Info() inference.Info { return s.info }

// Tokenizer is the engine's tokenizer.
func (s *Scheduler) Tokenizer() inference.Tokenizer { return s.tok }

// Submit queues a request under ctx, which carries its cancellation and
// deadline. It fails at once with admission.ErrQueueFull,
// admission.ErrDeadline, admission.ErrClosed or ErrTooLong.
func (s *Scheduler) Submit(ctx context.Context, r Request) (*Sequence, error) {
	reserve := len(r.Prompt) + r.MaxTokens
	if reserve > s.info.ContextLength || reserve > s.info.KVTokens {
		return nil, fmt.Errorf("%w: %d prompt + %d max tokens > %d", ErrTooLong, len(r.Prompt), r.MaxTokens, min(s.info.ContextLength, s.info.KVTokens))
	}
	seq := &Sequence{req: r, sched: s, reserve: reserve}
	seq.Init(ctx, seq.leave)
	seq.stats.Arrived = time.Now()
	seq.item = admission.Item[*Sequence]{Priority: r.Priority, Tenant: r.Tenant, Ctx: ctx, Value: seq}
	if err := s.q.TryEnqueue(&seq.item); err != nil {
		s.m.Reject(admission.Reason(err))
		return nil, err
	}
	return seq, nil
}

// SubmitGroup queues the n choices of one prompt (rs share the prompt;
// each has its own sampling). With an engine that forks, they are
// admitted together, the prompt is prefilled once and its KV cache shared;
// otherwise, or when the group cannot fit the engine at once, each is
// submitted alone. On an error none is left queued once ctx ends.
func (s *Scheduler) SubmitGroup(ctx context.Context, rs []Request) ([]*Sequence, error) {
	_, fork := s.eng.(inference.Forker)
	total := 0
	for _, r := range rs {
		total += len(r.Prompt) + r.MaxTokens
		if len(r.Prompt) != len(rs[0].Prompt) || len(r.Prompt) == 0 {
			fork = false
		}
	}
	if len(rs) == 1 || !fork || len(rs) > len(s.slotSeq) || len(rs) > s.cfg.MaxBatchSize || total > s.info.KVTokens {
		seqs := make([]*Sequence, 0, len(rs))
		for _, r := range rs {
			seq, err := s.Submit(ctx, r)
			if err != nil {
				return nil, err
			}
			seqs = append(seqs, seq)
		}
		return seqs, nil
	}
	seqs := make([]*Sequence, len(rs))
	for i, r := range rs {
		reserve := len(r.Prompt) + r.MaxTokens
		if reserve > s.info.ContextLength {
			return nil, fmt.Errorf("%w: %d prompt + %d max tokens > %d", ErrTooLong, len(r.Prompt), r.MaxTokens, s.info.ContextLength)
		}
		seq := &Sequence{req: r, sched: s, reserve: reserve}
		seqs[i] = seq
		if i == 0 {
			seq.Init(ctx, seq.leave)
		} else {
			seq.leader = seqs[0]
			seq.Init(ctx, nil) // never queued: the leader is
			seq.item = admission.Item[*Sequence]{Priority: r.Priority, Tenant: r.Tenant, Ctx: ctx, Value: seq}
		}
		seq.stats.Arrived = time.Now()
	}
	leader := seqs[0]
	leader.members = seqs[1:]
	leader.item = admission.Item[*Sequence]{Priority: rs[0].Priority, Tenant: rs[0].Tenant, Ctx: ctx, Value: leader}
	if err := s.q.TryEnqueue(&leader.item); err != nil {
		s.m.Reject(admission.Reason(err))
		return nil, err
	}
	return seqs, nil
}

// Close stops admission; queued and running sequences still finish.
func (s *Scheduler) Close() { s.q.Close() }

// Depths is the queue depth per priority level.
func (s *Scheduler) Depths() []int { return s.q.Depths() }

// Load reports the running sequences, queued requests and reserved KV tokens.
func (s *Scheduler) Load() (running, queued, kvUsed int) {
	return int(s.nRunning.Load()), s.q.Len(), int(s.nKV.Load())
}

// Run schedules until ctx ends, then fails what is left with ErrStopped.
func (s *Scheduler) Run(ctx context.Context) error {
	defer s.stopAll()
	for {
		s.reap()
		if len(s.running) == 0 {
			if s.held == nil && s.q.Len() == 0 {
				select {
				case <-ctx.Done():
					return nil
				case <-s.q.Ready():
				}
				continue
			}
			// Idle with work queued: wait for a fuller first batch before
			// admitting any of it.
			s.waitForBatch(ctx)
		}
		s.admit()
		if len(s.running) == 0 {
			if ctx.Err() != nil {
				return nil
			}
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		s.step(ctx)
	}
}

// waitForBatch lets an idle engine wait up to MaxQueueDelay for a fuller
// first batch.
func (s *Scheduler) waitForBatch(ctx context.Context) {
	if s.cfg.MaxQueueDelay <= 0 {
		return
	}
	t := time.NewTimer(s.cfg.MaxQueueDelay)
	defer t.Stop()
	for s.q.Len() < s.cfg.MaxBatchSize {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			return
		case <-s.q.Ready():
		}
	}
}

// reap drops running sequences whose caller has gone or whose deadline
// passed, freeing their slots before the next step.
func (s *Scheduler) reap() {
	if s.held != nil && s.held.item.Ctx.Err() != nil {
		s.held.abort(s.held.item.Ctx.Err())
		s.held = nil
	}
	for _, seq := range s.running {
		if err := seq.item.Ctx.Err(); err != nil {
			s.retire(seq, "", err) // a leader takes its waiting members with it
		}
	}
	s.compact()
}

// admit moves queued sequences into free slots while the batch and the KV
// budget have room.
func (s *Scheduler) admit() {
	for len(s.running) < s.cfg.MaxBatchSize && len(s.free) > 0 {
		seq := s.held
		s.held = nil
		if seq == nil {
			it := s.q.TryDequeue()
			if it == nil {
				break
			}
			seq = it.Value
		}
		need := 1 + len(seq.members)
		if s.kvUsed+seq.groupReserve() > s.info.KVTokens || len(s.free) < need || len(s.running)+need > s.cfg.MaxBatchSize {
			s.held = seq
			break
		}
		if err := s.startGroup(seq); err != nil {
			seq.abort(fmt.Errorf("start sequence: %w", err))
		}
	}
	s.nRunning.Store(int64(len(s.running)))
	s.nKV.Store(int64(s.kvUsed))
}

// startGroup gives a sequence and its members a slot each.
func (s *Scheduler) startGroup(seq *Sequence) error {
	group := append([]*Sequence{seq}, seq.members...)
	for i, q := range group {
		slot := s.free[len(s.free)-1]
		if err := s.eng.Start(slot, q.req.Sampling); err != nil {
			for _, started := range group[:i] {
				s.retire(started, "", err)
			}
			s.compact()
			return err
		}
		s.free = s.free[:len(s.free)-1]
		q.slot = slot
		s.slotSeq[slot] = q
		s.kvUsed += q.reserve
		s.running = append(s.running, q)
		q.stats.Admitted = time.Now()
		s.m.ObserveAdmitted(q.stats.Admitted.Sub(seq.item.Enqueued()), len(q.req.Prompt))
	}
	return nil
}

// fork hands the prompt's KV cache of every leader that has prefilled
// all of it but the last token to its members.
func (s *Scheduler) fork() {
	retired := false
	for _, seq := range s.running {
		if len(seq.members) == 0 || seq.forked || seq.fed < seq.target() {
			continue
		}
		seq.forked = true
		for _, m := range seq.members {
			if s.slotSeq[m.slot] != m {
				continue // ended already
			}
			if err := s.eng.(inference.Forker).Fork(m.slot, seq.slot); err != nil {
				s.retire(m, "", fmt.Errorf("fork sequence: %w", err))
				retired = true
				continue
			}
			m.fed, m.forked = seq.fed, true
		}
	}
	if retired {
		s.compact()
	}
}

// stepSpan starts the span of a step when a running request is sampled;
// nil otherwise.
func (s *Scheduler) stepSpan(ctx context.Context, seqs, tokens int) trace.Span {
	s.links = s.links[:0]
	for _, seq := range s.running {
		if sc := trace.SpanContextFromContext(seq.item.Ctx); sc.IsSampled() {
			s.links = append(s.links, trace.Link{SpanContext: sc})
		}
	}
	if len(s.links) == 0 {
		return nil
	}
	_, span := s.tracer.Start(ctx, "engine step", trace.WithNewRoot(), trace.WithLinks(s.links...),
		trace.WithAttributes(attribute.Int("autoglm.batch.sequences", seqs), attribute.Int("autoglm.batch.tokens", tokens)))
	return span
}

// step runs one engine step: one token for each decoding sequence, then
// prompt chunks in admission order under the token budget.
func (s *Scheduler) step(ctx context.Context) {
	s.fork()
	budget := s.cfg.MaxBatchTokens
	in := s.inputs[:0]
	for _, seq := range s.running {
		seq.feeding = 0
		if seq.fed == len(seq.req.Prompt) {
			in = append(in, inference.Input{Slot: seq.slot, Tokens: seq.last[:], Sample: true})
			budget--
		}
	}
	for _, seq := range s.running {
		if seq.waiting() {
			continue
		}
		target := seq.target()
		if rest := target - seq.fed; rest > 0 && budget > 0 {
			n := min(rest, budget)
			in = append(in, inference.Input{Slot: seq.slot, Tokens: seq.req.Prompt[seq.fed : seq.fed+n],
				Sample: n == rest && target == len(seq.req.Prompt)})
			seq.feeding = n
			budget -= n
		}
	}
	s.inputs = in
	s.m.ObserveBatch(len(in), s.cfg.MaxBatchTokens-budget)
	if s.tracer != nil {
		if span := s.stepSpan(ctx, len(in), s.cfg.MaxBatchTokens-budget); span != nil {
			defer span.End()
		}
	}
	outs, err := s.eng.Step(ctx, in)
	if err != nil {
		if ctx.Err() != nil {
			return // stopping: stopAll fails the batch with ErrStopped
		}
		s.log.Error("engine step failed", "err", err, "batch", len(in))
		for _, x := range in {
			s.retire(s.slotSeq[x.Slot], "", fmt.Errorf("engine step: %w", err))
		}
		s.compact()
		return
	}
	for _, seq := range s.running {
		seq.fed += seq.feeding
	}
	now := time.Now()
	for _, o := range outs {
		if seq := s.slotSeq[o.Slot]; seq != nil {
			s.emit(seq, o, now)
		}
	}
	s.compact()
}

func (s *Scheduler) emit(seq *Sequence, o inference.Output, now time.Time) {
	r := &seq.stats
	if r.FirstToken.IsZero() {
		r.FirstToken = now
		s.m.ObserveFirstToken(now.Sub(r.Arrived))
	}
	if o.EOS {
		seq.deliver(seq.flush())
		r.Embedding = o.Embedding
		s.retire(seq, FinishStop, nil)
		return
	}
	r.CompletionTokens++
	seq.last[0] = o.Token
	piece := s.tok.Piece(o.Token)
	if seq.req.Sampling.Logprobs {
		seq.lps = append(seq.lps, s.logprob(o, piece))
	}
	text, stopped := seq.appendPiece(piece)
	seq.deliver(text)
	switch {
	case stopped:
		s.retire(seq, FinishStop, nil)
	case r.CompletionTokens >= seq.req.MaxTokens || len(seq.req.Prompt)+r.CompletionTokens >= s.info.ContextLength:
		seq.deliver(seq.flush())
		finish := FinishLength
		if c := seq.req.Sampling.Constraint; c != nil && c.Complete() {
			finish = FinishStop // the document ended with the last token the budget allowed
		}
		s.retire(seq, finish, nil)
	}
}

// logprob is an output's log probabilities with the tokens' bytes.
func (s *Scheduler) logprob(o inference.Output, piece []byte) stream.Logprob {
	lp := stream.Logprob{Token: piece, Logprob: o.Logprob}
	if len(o.Top) > 0 {
		lp.Top = make([]stream.TopLogprob, len(o.Top))
		for i, t := range o.Top {
			lp.Top[i] = stream.TopLogprob{Token: s.tok.Piece(t.Token), Logprob: t.Logprob}
		}
	}
	return lp
}

// retire ends a sequence and frees its slot; compact removes it from the
// running list.
func (s *Scheduler) retire(seq *Sequence, finish string, err error) {
	if s.slotSeq[seq.slot] != seq {
		return
	}
	if !seq.forked {
		for _, m := range seq.members { // they wait for a prefill that will not come
			s.retire(m, finish, err)
		}
	}
	s.eng.Release(seq.slot)
	s.slotSeq[seq.slot] = nil
	s.free = append(s.free, seq.slot)
	s.kvUsed -= seq.reserve
	// Load reflects the end before the reader sees it.
	s.nRunning.Add(-1)
	s.nKV.Store(int64(s.kvUsed))
	r := seq.stats
	r.Finish, r.PromptTokens, r.Done = finish, len(seq.req.Prompt), time.Now()
	var afterFirst time.Duration
	if !r.FirstToken.IsZero() {
		afterFirst = r.Done.Sub(r.FirstToken)
	}
	s.m.ObserveFinished(telemetry.Outcome(err), r.Done.Sub(r.Arrived), afterFirst, r.CompletionTokens)
	seq.Finish(r, err)
}

func (s *Scheduler) compact() {
	n := 0
	for _, seq := range s.running {
		if s.slotSeq[seq.slot] == seq {
			s.running[n] = seq
			n++
		}
	}
	clear(s.running[n:])
	s.running = s.running[:n]
	s.nRunning.Store(int64(n))
	s.nKV.Store(int64(s.kvUsed))
}

func (s *Scheduler) stopAll() {
	s.q.Close()
	for _, seq := range s.running {
		s.retire(seq, "", ErrStopped)
	}
	s.running = s.running[:0]
	if s.held != nil {
		s.held.abort(ErrStopped)
		s.held = nil
	}
	for it := s.q.TryDequeue(); it != nil; it = s.q.TryDequeue() {
		it.Value.abort(ErrStopped)
	}
	s.nRunning.Store(0)
	s.nKV.Store(0)
}
