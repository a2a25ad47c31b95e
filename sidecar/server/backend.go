package server

import (
	"context"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/grammar"
	"github.com/open-autoglm/autoglm/inference/remote"
	"github.com/open-autoglm/autoglm/sidecar/batch"
	"github.com/open-autoglm/autoglm/sidecar/dispatch"
	"github.com/open-autoglm/autoglm/sidecar/stream"
	"github.com/open-autoglm/autoglm/sidecar/telemetry"
)

// backend runs generations: the local scheduler over an in-process engine,
// or the dispatcher to a remote one.
type backend interface {
	// start validates g (errors as *api.Error) and queues it.
	start(ctx context.Context, g *generation, priority int, tenant string) (reader, error)
	load() (l telemetry.Load, queued int)
	depths() []int
	setMetrics(*telemetry.Metrics)
	// close stops admission; run ends what is left when its ctx ends.
	close()
	run(ctx context.Context) error
}

// reader is a generation's text as it comes, then its end.
type reader interface {
	Next() (string, error)
	Wait() (string, error)
	NextLogprobs() (string, []stream.Logprob, error)
	WaitLogprobs() (string, []stream.Logprob, error)
	Result() stream.Result
}

// local is continuous batching over an in-process engine.
type local struct {
	sched    *batch.Scheduler
	info     inference.Info
	maxBatch int
	// vocab is the engine's vocabulary for constrained decoding (nil:
	// the engine cannot constrain its output).
	vocab func() *grammar.Vocab
}

func (l *local) start(ctx context.Context, g *generation, priority int, tenant string) (reader, error) {
	r, aerr := l.request(g)
	if aerr != nil {
		return nil, aerr
	}
	r.Priority, r.Tenant = priority, tenant
	seq, err := l.sched.Submit(ctx, r)
	if err != nil {
		return nil, err
	}
	return seq, nil
}

// startGroup queues the n choices of one generation as a group: the
// prompt prefilled once, its KV cache shared (batch.SubmitGroup).
func (l *local) startGroup(ctx context.Context, gs []*generation, priority int, tenant string) ([]reader, error) {
	rs := make([]batch.Request, len(gs))
	for i, g := range gs {
		r, aerr := l.request(g)
		if aerr != nil {
			return nil, aerr
		}
		r.Priority, r.Tenant = priority, tenant
		rs[i] = r
	}
	seqs, err := l.sched.SubmitGroup(ctx, rs)
	if err != nil {
		return nil, err
	}
	out := make([]reader, len(seqs))
	for i, s := range seqs {
		out[i] = s
	}
	return out, nil
}

func (l *local) load() (telemetry.Load, int) {
	running, queued, kv := l.sched.Load()
	return telemetry.Load{Running: running, Capacity: l.maxBatch, KVUsed: kv, KVTotal: l.info.KVTokens}, queued
}

func (l *local) depths() []int                   { return l.sched.Depths() }
func (l *local) setMetrics(m *telemetry.Metrics) { l.sched.SetMetrics(m) }
func (l *local) close()                          { l.sched.Close() }
func (l *local) run(ctx context.Context) error   { return l.sched.Run(ctx) }

// remoteEngine sends generations to an OpenAI-compatible server. It does
// not tokenize: the upstream checks the prompt against its context and its
// verdict comes back as the client's 400.
type remoteEngine struct {
	d *dispatch.Dispatcher
}

func (r remoteEngine) start(ctx context.Context, g *generation, priority int, tenant string) (reader, error) {
	req := dispatch.Request{Request: remote.Request{
		Chat: g.chat, Prompt: g.prompt, Tokens: g.tokens, MaxTokens: g.maxTokens, Stop: g.stop, Sampling: g.sampling,
		Extra: g.extra, Raw: g.raw,
	}, Priority: priority, Tenant: tenant}
	if req.MaxTokens == nil && g.defaultMT > 0 {
		mt := g.defaultMT
		req.MaxTokens = &mt
	}
	j, err := r.d.Submit(ctx, req)
	if err != nil {
		return nil, err
	}
	return j, nil
}

func (r remoteEngine) load() (telemetry.Load, int) {
	running, limit, queued := r.d.Load()
	return telemetry.Load{Running: running, Capacity: limit}, queued
}

func (r remoteEngine) depths() []int                   { return r.d.Depths() }
func (r remoteEngine) setMetrics(m *telemetry.Metrics) { r.d.SetMetrics(m) }
func (r remoteEngine) close()                          { r.d.Close() }
func (r remoteEngine) run(ctx context.Context) error   { return r.d.Run(ctx) }
