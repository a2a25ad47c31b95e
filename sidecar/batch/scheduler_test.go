package batch

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/testengine"
	"github.com/open-autoglm/autoglm/sidecar/admission"
)

var quiet = slog.New(slog.DiscardHandler)

func start(t *testing.T, cfg Config, eng inference.Engine) *Scheduler {
	t.Helper()
	if cfg.MaxBatchSize == 0 {
		cfg.MaxBatchSize = 8
	}
	if cfg.MaxBatchTokens == 0 {
		cfg.MaxBatchTokens = 512
	}
	if cfg.Queue.MaxQueue == 0 {
		cfg.Queue = admission.Config{Levels: 4, MaxQueue: 64}
	}
	s := New(cfg, eng, quiet)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return s
}

func readAll(t *testing.T, seq *Sequence) (string, Result, error) {
	t.Helper()
	var b strings.Builder
	for {
		txt, err := seq.Next()
		b.WriteString(txt)
		if err == io.EOF {
			return b.String(), seq.Result(), nil
		}
		if err != nil {
			return b.String(), Result{}, err
		}
	}
}

func generate(t *testing.T, s *Scheduler, prompt string, maxTokens int) (string, Result) {
	t.Helper()
	seq, err := s.Submit(context.Background(), Request{Prompt: s.Tokenizer().Encode(prompt), MaxTokens: maxTokens})
	if err != nil {
		t.Fatal(err)
	}
	text, r, err := readAll(t, seq)
	if err != nil {
		t.Fatal(err)
	}
	return text, r
}

func TestAloneEqualsBatched(t *testing.T) {
	alone := start(t, Config{}, testengine.New(testengine.Config{}))
	want := map[string]string{}
	prompts := []string{"hello", "a longer prompt with more tokens", "x", "the quick brown fox", "1", "2", "3", "4"}
	for _, p := range prompts {
		text, r := generate(t, alone, p, 24)
		if r.Finish != FinishLength || r.CompletionTokens != 24 || r.PromptTokens != len(p) || len(text) != 24 {
			t.Fatalf("%q: %q %+v", p, text, r)
		}
		want[p] = text
	}
	// Same prompts, all at once, with prefill chunked by a small token budget.
	eng := testengine.New(testengine.Config{StepCost: time.Millisecond})
	batched := start(t, Config{MaxBatchTokens: 12}, eng)
	var wg sync.WaitGroup
	for _, p := range prompts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if text, _ := generate(t, batched, p, 24); text != want[p] {
				t.Errorf("%q: batched %q, alone %q", p, text, want[p])
			}
		}()
	}
	wg.Wait()
	if eng.Steps >= len(prompts)*24 {
		t.Errorf("%d steps for %d sequences of 24 tokens: no batching happened", eng.Steps, len(prompts))
	}
}

func TestJoinBetweenSteps(t *testing.T) {
	eng := testengine.New(testengine.Config{StepCost: 2 * time.Millisecond})
	s := start(t, Config{}, eng)
	long, err := s.Submit(context.Background(), Request{Prompt: []int{'a'}, MaxTokens: 400})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := long.Next(); err != nil { // long is running now
		t.Fatal(err)
	}
	_, r := generate(t, s, "b", 3)
	if long.Result().Done.IsZero() == false {
		t.Fatal("the long sequence finished before the short one: the short one did not join the running batch")
	}
	if r.CompletionTokens != 3 {
		t.Fatalf("%+v", r)
	}
}

func TestStopStringsAndEOS(t *testing.T) {
	s := start(t, Config{}, testengine.New(testengine.Config{}))
	full, _ := generate(t, s, "stop test", 40)
	stop := full[10:13]
	cut := strings.Index(full, stop)
	seq, err := s.Submit(context.Background(), Request{Prompt: s.Tokenizer().Encode("stop test"), MaxTokens: 40, Stop: []string{"zzzzzz", stop}})
	if err != nil {
		t.Fatal(err)
	}
	text, r, err := readAll(t, seq)
	if err != nil || text != full[:cut] || r.Finish != FinishStop {
		t.Fatalf("got %q %+v %v, want %q finish stop", text, r, err, full[:cut])
	}
	eos := start(t, Config{}, testengine.New(testengine.Config{EOSAfter: 5}))
	text, r = generate(t, eos, "eos", 40)
	if len(text) != 5 || r.Finish != FinishStop || r.CompletionTokens != 5 {
		t.Fatalf("EOS after 5: %q %+v", text, r)
	}
}

func TestAppendPieceUTF8AndStop(t *testing.T) {
	seq := &Sequence{req: Request{Stop: []string{"END"}}}
	var out strings.Builder
	for _, b := range []byte("héllo wörld EN") {
		txt, stopped := seq.appendPiece([]byte{b})
		if stopped {
			t.Fatal("stopped early")
		}
		if !strings.HasPrefix("héllo wörld EN", out.String()+txt) {
			t.Fatalf("released %q then %q", out.String(), txt)
		}
		out.WriteString(txt)
	}
	if out.String() != "héllo wörld " {
		t.Fatalf("released %q: the possible start of a stop string must be held", out.String())
	}
	txt, stopped := seq.appendPiece([]byte("D!"))
	if !stopped || txt != "" {
		t.Fatalf("got %q %v", txt, stopped)
	}
}

// gate is an engine whose steps wait for the test to release them.
type gate struct {
	*testengine.Engine
	entered chan struct{}
	release chan struct{}
}

func (g *gate) Step(ctx context.Context, in []inference.Input) ([]inference.Output, error) {
	g.entered <- struct{}{}
	<-g.release
	return g.Engine.Step(ctx, in)
}

func TestQueuedCancelLeavesDuringLongStep(t *testing.T) {
	g := &gate{Engine: testengine.New(testengine.Config{Slots: 1}), entered: make(chan struct{}), release: make(chan struct{})}
	s := start(t, Config{MaxBatchSize: 1}, g)
	running, err := s.Submit(context.Background(), Request{Prompt: []int{'a'}, MaxTokens: 2})
	if err != nil {
		t.Fatal(err)
	}
	<-g.entered // the engine is inside a step and stays there
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	queued, err := s.Submit(ctx, Request{Prompt: []int{'b'}, MaxTokens: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := queued.Next(); !errors.Is(err, admission.ErrDeadline) {
		t.Fatalf("expired queued request: %v, want ErrDeadline", err)
	}
	if n := s.q.Len(); n != 0 {
		t.Fatalf("queue holds %d after expiry while the engine is still busy", n)
	}
	go func() {
		for range g.entered {
			g.release <- struct{}{}
		}
	}()
	g.release <- struct{}{}
	if _, r, err := readAll(t, running); err != nil || r.CompletionTokens != 2 {
		t.Fatalf("running request: %+v %v", r, err)
	}
}

func TestDisconnectFreesSlot(t *testing.T) {
	s := start(t, Config{MaxBatchSize: 1}, testengine.New(testengine.Config{Slots: 1, StepCost: time.Millisecond}))
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := s.Submit(ctx, Request{Prompt: []int{'a'}, MaxTokens: 100000 - 1}); err == nil {
		t.Fatal("max tokens beyond the context must fail")
	}
	hog, err := s.Submit(ctx, Request{Prompt: []int{'a'}, MaxTokens: 4000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hog.Next(); err != nil {
		t.Fatal(err)
	}
	next, err := s.Submit(context.Background(), Request{Prompt: []int{'b'}, MaxTokens: 3})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := hog.Next(); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled sequence: %v", err)
	}
	if _, r, err := readAll(t, next); err != nil || r.CompletionTokens != 3 {
		t.Fatalf("the slot was not freed for the next request: %+v %v", r, err)
	}
	if hog.Result().CompletionTokens >= 4000 {
		t.Fatal("cancelled generation ran to completion")
	}
}

func TestQueueFullAndStop(t *testing.T) {
	g := &gate{Engine: testengine.New(testengine.Config{Slots: 1}), entered: make(chan struct{}), release: make(chan struct{})}
	s := New(Config{MaxBatchSize: 1, MaxBatchTokens: 16, Queue: admission.Config{Levels: 1, MaxQueue: 1}}, g, quiet)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	first, _ := s.Submit(context.Background(), Request{Prompt: []int{'a'}, MaxTokens: 5})
	<-g.entered
	second, err := s.Submit(context.Background(), Request{Prompt: []int{'b'}, MaxTokens: 5})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Submit(context.Background(), Request{Prompt: []int{'c'}, MaxTokens: 5}); !errors.Is(err, admission.ErrQueueFull) {
		t.Fatalf("third request: %v, want ErrQueueFull", err)
	}
	cancel()
	g.release <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, seq := range []*Sequence{first, second} {
		if _, _, err := readAll(t, seq); !errors.Is(err, ErrStopped) {
			t.Fatalf("after stop: %v, want ErrStopped", err)
		}
	}
}

func TestWaitMatchesNext(t *testing.T) {
	s := start(t, Config{}, testengine.New(testengine.Config{}))
	want, _ := generate(t, s, "wait", 30)
	seq, err := s.Submit(context.Background(), Request{Prompt: s.Tokenizer().Encode("wait"), MaxTokens: 30})
	if err != nil {
		t.Fatal(err)
	}
	got, err := seq.Wait()
	if !errors.Is(err, io.EOF) || got != want || seq.Result().CompletionTokens != 30 {
		t.Fatalf("Wait: %q %v, Next: %q", got, err, want)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	seq, err = s.Submit(ctx, Request{Prompt: []int{'x'}, MaxTokens: 3})
	if err == nil {
		if _, err := seq.Wait(); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled: %v", err)
		}
	}
}

// sizes records the batch size of every step.
type sizes struct {
	*testengine.Engine
	mu    sync.Mutex
	steps []int
}

func (s *sizes) Step(ctx context.Context, in []inference.Input) ([]inference.Output, error) {
	s.mu.Lock()
	s.steps = append(s.steps, len(in))
	s.mu.Unlock()
	return s.Engine.Step(ctx, in)
}

func TestMaxQueueDelayFormsBatch(t *testing.T) {
	eng := &sizes{Engine: testengine.New(testengine.Config{})}
	s := start(t, Config{MaxBatchSize: 4, MaxQueueDelay: time.Hour}, eng)
	var seqs []*Sequence
	for i := range 4 {
		seq, err := s.Submit(context.Background(), Request{Prompt: []int{'a' + i}, MaxTokens: 2})
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	for _, seq := range seqs {
		if _, _, err := readAll(t, seq); err != nil {
			t.Fatal(err)
		}
	}
	eng.mu.Lock()
	defer eng.mu.Unlock()
	if eng.steps[0] != 4 {
		t.Fatalf("first step ran %d sequences; an idle engine must wait for a full batch (4) within max_queue_delay", eng.steps[0])
	}
}

func TestTokenBudgetChunksPrefill(t *testing.T) {
	eng := &sizes{Engine: testengine.New(testengine.Config{})}
	s := start(t, Config{MaxBatchSize: 4, MaxBatchTokens: 10}, eng)
	prompt := strings.Repeat("p", 35)
	text, r := generate(t, s, prompt, 3)
	alone := start(t, Config{}, testengine.New(testengine.Config{}))
	want, _ := generate(t, alone, prompt, 3)
	if text != want || r.PromptTokens != 35 {
		t.Fatalf("chunked %q, whole %q", text, want)
	}
	eng.mu.Lock()
	defer eng.mu.Unlock()
	if len(eng.steps) != 4+2 { // 4 prompt chunks (10+10+10+5, the last samples) + 2 decode steps
		t.Fatalf("steps %v", eng.steps)
	}
}

// counting counts the tokens an engine is fed.
type counting struct {
	*testengine.Engine
	fed int
}

func (c *counting) Step(ctx context.Context, in []inference.Input) ([]inference.Output, error) {
	for _, x := range in {
		c.fed += len(x.Tokens)
	}
	return c.Engine.Step(ctx, in)
}

func (c *counting) Fork(dst, src int) error { return c.Engine.Fork(dst, src) }

// The n choices of a prompt prefill it once: the leader all but the last
// token, the members fork its cache; each decodes as it would alone.
func TestGroupPrefillsOnce(t *testing.T) {
	prompt := []int(nil)
	for i := range 40 {
		prompt = append(prompt, 'a'+i%26)
	}
	alone := start(t, Config{}, testengine.New(testengine.Config{}))
	want, _, _ := readAll(t, mustSubmit(t, alone, Request{Prompt: prompt, MaxTokens: 5}))

	eng := &counting{Engine: testengine.New(testengine.Config{})}
	s := start(t, Config{}, eng)
	seqs, err := s.SubmitGroup(context.Background(), []Request{{Prompt: prompt, MaxTokens: 5}, {Prompt: prompt, MaxTokens: 5}, {Prompt: prompt, MaxTokens: 5}})
	if err != nil {
		t.Fatal(err)
	}
	for i, seq := range seqs {
		got, res, err := readAll(t, seq)
		if err != nil || got != want || res.PromptTokens != 40 || res.CompletionTokens != 5 {
			t.Fatalf("choice %d: %q %+v %v, alone %q", i, got, res, err, want)
		}
	}
	// 39 + 3 × (the last prompt token + 4 decoded), not 3 × (40 + 4).
	if eng.fed != 39+3*5 {
		t.Fatalf("fed %d tokens, want %d", eng.fed, 39+3*5)
	}
}

// A group that never runs ends together.
func TestGroupStoppedWhileQueued(t *testing.T) {
	s := New(Config{MaxBatchSize: 8, MaxBatchTokens: 64, Queue: admission.Config{Levels: 1, MaxQueue: 4}}, testengine.New(testengine.Config{}), quiet)
	seqs, err := s.SubmitGroup(context.Background(), []Request{{Prompt: []int{1, 2}, MaxTokens: 2}, {Prompt: []int{1, 2}, MaxTokens: 2}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.Run(ctx)
	for i, seq := range seqs {
		if _, _, err := readAll(t, seq); !errors.Is(err, ErrStopped) {
			t.Fatalf("choice %d: %v, want ErrStopped", i, err)
		}
	}
}

func mustSubmit(t *testing.T, s *Scheduler, r Request) *Sequence {
	t.Helper()
	seq, err := s.Submit(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}
