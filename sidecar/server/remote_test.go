package server

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/remote"
	"github.com/open-autoglm/autoglm/inference/testengine"
	"github.com/open-autoglm/autoglm/sidecar/config"
	autoglmv1 "github.com/open-autoglm/autoglm/sidecar/proto/autoglm/v1"
)

// The remote engine is tested against a second sidecar on loopback as the
// upstream: a real OpenAI-compatible server whose engine the test controls.

// upstream starts a sidecar on the test engine; gate, when not nil, holds
// its steps (it must let the two warm-ups through: the upstream's and the
// remote sidecar's).
func upstream(t *testing.T, gate chan struct{}, mod func(*config.Config, *testengine.Config)) *sidecar {
	t.Helper()
	cfg := testConfig()
	ec := testengine.Config{Model: cfg.Engine.Model, ContextLength: 512, Gate: gate}
	if mod != nil {
		mod(&cfg, &ec)
	}
	return startWith(t, cfg, testengine.New(ec))
}

// remoteSidecar starts a sidecar whose engine is up; concurrency 0 reads it
// from up's metrics.
func remoteSidecar(t *testing.T, up *sidecar, concurrency int, mod func(*config.Config)) *sidecar {
	t.Helper()
	cfg := testConfig()
	cfg.Engine.Remote.Concurrency = concurrency
	if mod != nil {
		mod(&cfg)
	}
	c, err := remote.New(remote.Config{URL: up.url, Model: "autoglm-test"})
	if err != nil {
		t.Fatal(err)
	}
	return startServer(t, NewRemote(cfg, c, inference.Info{Model: "autoglm-test", ContextLength: 512}, slog.New(slog.DiscardHandler)))
}

// warmGate lets the two warm-up steps through and holds the rest until the
// test closes it.
func warmGate() chan struct{} {
	g := make(chan struct{}, 2)
	g <- struct{}{}
	g <- struct{}{}
	return g
}

// releaser returns a function that opens gate once; the test's end opens
// it too (before the sidecars stop, so that none is left inside a step).
func releaser(t *testing.T, gate chan struct{}) func() {
	var once sync.Once
	release := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release)
	return release
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestRemoteThroughOpenAIClient(t *testing.T) {
	up := upstream(t, nil, func(c *config.Config, _ *testengine.Config) { c.Batch.MaxBatchSize = 7 })
	rs := remoteSidecar(t, up, 0, nil)
	if l, _ := rs.be.load(); l.Capacity != 7 {
		t.Fatalf("concurrency read from the upstream's metrics = %d, want its batch size 7", l.Capacity)
	}
	ctx := context.Background()
	upc, rsc := client(up), client(rs)
	params := openai.ChatCompletionNewParams{Model: "autoglm-test", Messages: []openai.ChatCompletionMessageParamUnion{
		openai.SystemMessage("be brief"), openai.UserMessage("hello there")}, MaxTokens: openai.Int(12), Temperature: openai.Float(0)}
	direct, err := upc.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	via, err := rsc.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if via.Choices[0].Message.Content != direct.Choices[0].Message.Content || via.Usage.PromptTokens != direct.Usage.PromptTokens ||
		via.Usage.CompletionTokens != 12 || via.Choices[0].FinishReason != "length" {
		t.Fatalf("through the remote engine %+v %+v, directly %+v %+v", via.Choices[0], via.Usage, direct.Choices[0], direct.Usage)
	}
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	st := rsc.Chat.Completions.NewStreaming(ctx, params)
	var text strings.Builder
	var usage openai.CompletionUsage
	chunks := 0
	for st.Next() {
		ck := st.Current()
		if len(ck.Choices) > 0 {
			text.WriteString(ck.Choices[0].Delta.Content)
			chunks++
		}
		if ck.Usage.TotalTokens > 0 {
			usage = ck.Usage
		}
	}
	if err := st.Err(); err != nil || text.String() != direct.Choices[0].Message.Content || usage.PromptTokens != direct.Usage.PromptTokens || chunks < 2 {
		t.Fatalf("streamed %q in %d chunks, usage %+v (%v); want %q", text.String(), chunks, usage, err, direct.Choices[0].Message.Content)
	}
	// /v1/completions with the OpenAI default of 16 tokens.
	cp, err := rsc.Completions.New(ctx, completionParams("once"))
	if err != nil || cp.Usage.CompletionTokens != 16 {
		t.Fatalf("completion %+v %v", cp, err)
	}
}

// sender posts chat requests concurrently and records the order in which
// they complete.
type sender struct {
	t     *testing.T
	url   string
	mu    sync.Mutex
	order []string
	wg    sync.WaitGroup
}

func (s *sender) send(name, priority string) { s.sendBody(name, priority, chatBody) }

func (s *sender) sendBody(name, priority, body string) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		resp, _ := post(s.t, s.url+"/v1/chat/completions", body, map[string]string{HeaderPriority: priority})
		if resp.StatusCode != 200 {
			s.t.Errorf("%s: %d", name, resp.StatusCode)
		}
		s.mu.Lock()
		s.order = append(s.order, name)
		s.mu.Unlock()
	}()
}

// TestRemoteConcurrencyLimit: at most the concurrency runs upstream; the
// rest waits in the sidecar's queue.
func TestRemoteConcurrencyLimit(t *testing.T) {
	gate := warmGate()
	up := upstream(t, gate, nil)
	rs := remoteSidecar(t, up, 2, nil)
	release := releaser(t, gate)
	s := &sender{t: t, url: rs.url}
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		s.send(n, "0")
	}
	// The gated upstream admits one and queues the other behind its step.
	waitFor(t, "two sent upstream, three queued", func() bool {
		r, q, _ := up.sched.Load()
		_, rq := rs.be.load()
		return r+q == 2 && rq == 3
	})
	if l, _ := rs.be.load(); l.Running != 2 || l.Capacity != 2 {
		t.Fatalf("remote load %+v, want 2 running of 2", l)
	}
	time.Sleep(20 * time.Millisecond)
	if r, q, _ := up.sched.Load(); r+q != 2 {
		t.Fatalf("upstream holds %d; want 2: the sidecar holds the rest", r+q)
	}
	release()
	s.wg.Wait()
	if len(s.order) != 5 {
		t.Fatalf("completed %v", s.order)
	}
}

// TestRemotePriority: queued requests leave the sidecar's queue by
// priority, whatever their arrival order. (The low one is long, so that it
// cannot finish before the short high one even if it ran first.)
func TestRemotePriority(t *testing.T) {
	gate := warmGate()
	up := upstream(t, gate, func(_ *config.Config, e *testengine.Config) { e.StepCost = time.Millisecond })
	rs := remoteSidecar(t, up, 1, nil)
	release := releaser(t, gate)
	s := &sender{t: t, url: rs.url}
	s.send("first", "0")
	waitFor(t, "one running", func() bool { l, _ := rs.be.load(); return l.Running == 1 })
	s.sendBody("low", "3", `{"model":"autoglm-test","max_tokens":200,"messages":[{"role":"user","content":"hi"}]}`)
	waitFor(t, "one queued", func() bool { _, q := rs.be.load(); return q == 1 })
	s.send("high", "0")
	waitFor(t, "two queued", func() bool { _, q := rs.be.load(); return q == 2 })
	release()
	s.wg.Wait()
	if strings.Join(s.order, ",") != "first,high,low" {
		t.Fatalf("completion order %v, want first,high,low", s.order)
	}
}

// TestRemoteQueuedDeadline: a request that cannot start upstream within
// its deadline gets 429 and leaves the queue.
func TestRemoteQueuedDeadline(t *testing.T) {
	gate := warmGate()
	up := upstream(t, gate, nil)
	rs := remoteSidecar(t, up, 1, nil)
	release := releaser(t, gate)
	done := make(chan int)
	go func() {
		resp, _ := post(t, rs.url+"/v1/chat/completions", chatBody, nil)
		done <- resp.StatusCode
	}()
	waitFor(t, "one running upstream", func() bool { r, _, _ := up.sched.Load(); return r == 1 })
	start := time.Now()
	resp, e := post(t, rs.url+"/v1/chat/completions", `{"model":"autoglm-test","max_tokens":4,"timeout_ms":150,"messages":[{"role":"user","content":"hi"}]}`, nil)
	if resp.StatusCode != 429 || e.Error.Code == nil || *e.Error.Code != "deadline" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("got %d %+v", resp.StatusCode, e.Error)
	}
	if waited := time.Since(start); waited > 2*time.Second {
		t.Fatalf("rejected after %s", waited)
	}
	if _, q := rs.be.load(); q != 0 {
		t.Fatalf("queue holds %d after the deadline", q)
	}
	release()
	if code := <-done; code != 200 {
		t.Fatalf("first request: %d", code)
	}
}

// TestRemoteCancellation: a client that goes away mid-stream frees the
// upstream's sequence too.
func TestRemoteCancellation(t *testing.T) {
	up := upstream(t, nil, func(_ *config.Config, e *testengine.Config) { e.StepCost = 5 * time.Millisecond })
	rs := remoteSidecar(t, up, 4, nil)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, rs.url+"/v1/completions",
		strings.NewReader(`{"model":"autoglm-test","prompt":"x","max_tokens":400,"stream":true}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	if r, _, _ := up.sched.Load(); r != 1 {
		t.Fatalf("upstream runs %d sequences mid-stream, want 1", r)
	}
	cancel()
	resp.Body.Close()
	waitFor(t, "the upstream to drop the sequence", func() bool { r, _, _ := up.sched.Load(); return r == 0 })
	waitFor(t, "the remote sidecar to drop it", func() bool { l, _ := rs.be.load(); return l.Running == 0 })
}

// TestRemoteSlowStream: text is forwarded as the upstream produces it, not
// at the end.
func TestRemoteSlowStream(t *testing.T) {
	up := upstream(t, nil, func(_ *config.Config, e *testengine.Config) { e.StepCost = 20 * time.Millisecond })
	rs := remoteSidecar(t, up, 4, nil)
	p := completionParams("slow")
	p.MaxTokens = openai.Int(20)
	c := client(rs)
	start := time.Now()
	st := c.Completions.NewStreaming(context.Background(), p)
	var first, last time.Duration
	n := 0
	for st.Next() {
		if ck := st.Current(); len(ck.Choices) > 0 && ck.Choices[0].Text != "" {
			if n == 0 {
				first = time.Since(start)
			}
			last = time.Since(start)
			n++
		}
	}
	if err := st.Err(); err != nil || n < 10 {
		t.Fatalf("%d chunks, %v", n, err)
	}
	if last-first < 200*time.Millisecond {
		t.Fatalf("first text after %s, last after %s: the stream was buffered", first, last)
	}
}

func TestRemoteUpstreamErrors(t *testing.T) {
	t.Run("upstream rejects the request", func(t *testing.T) {
		up := upstream(t, nil, nil)
		rs := remoteSidecar(t, up, 2, nil)
		c := client(rs)
		_, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{Model: "autoglm-test",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")}, MaxTokens: openai.Int(600)})
		var ae *openai.Error
		if !errors.As(err, &ae) || ae.StatusCode != 400 || ae.Code != "context_length_exceeded" || !strings.Contains(ae.Message, "maximum context length is 512") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("upstream at capacity", func(t *testing.T) {
		gate := warmGate()
		up := upstream(t, gate, func(c *config.Config, _ *testengine.Config) { c.Batch.MaxBatchSize, c.Admission.MaxQueue = 1, 1 })
		rs := remoteSidecar(t, up, 4, nil) // misconfigured: more than the upstream holds
		release := releaser(t, gate)
		s := &sender{t: t, url: rs.url}
		s.send("running", "0")
		waitFor(t, "one running upstream", func() bool { r, _, _ := up.sched.Load(); return r == 1 })
		s.send("queued", "0")
		waitFor(t, "one queued upstream", func() bool { _, q, _ := up.sched.Load(); return q == 1 })
		resp, e := post(t, rs.url+"/v1/chat/completions", chatBody, nil)
		if resp.StatusCode != 429 || *e.Error.Code != "upstream_at_capacity" || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("got %d %+v", resp.StatusCode, e.Error)
		}
		release()
		s.wg.Wait()
	})
	t.Run("upstream down", func(t *testing.T) {
		up := upstream(t, nil, nil)
		rs := remoteSidecar(t, up, 2, nil)
		if err := up.stop(); err != nil {
			t.Fatal(err)
		}
		resp, e := post(t, rs.url+"/v1/chat/completions", chatBody, nil)
		if resp.StatusCode != 502 || *e.Error.Code != "upstream_unavailable" {
			t.Fatalf("got %d %+v", resp.StatusCode, e.Error)
		}
	})
	t.Run("upstream dies mid-stream", func(t *testing.T) {
		up := upstream(t, nil, func(c *config.Config, e *testengine.Config) {
			e.StepCost = 5 * time.Millisecond
			c.Server.DrainTimeout = 50 * time.Millisecond
		})
		rs := remoteSidecar(t, up, 2, nil)
		req, _ := http.NewRequest(http.MethodPost, rs.url+"/v1/completions",
			strings.NewReader(`{"model":"autoglm-test","prompt":"x","max_tokens":400,"stream":true}`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		go up.stop()
		var events []string
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				break
			}
			if strings.HasPrefix(line, "data: ") {
				events = append(events, line)
			}
		}
		if len(events) < 2 || events[len(events)-1] != "data: [DONE]\n" ||
			!strings.Contains(events[len(events)-2], `"error"`) || strings.Contains(strings.Join(events, ""), `"finish_reason":"length"`) {
			t.Fatalf("stream ended with %q; want an error event and [DONE], no normal finish", events[max(0, len(events)-2):])
		}
	})
}

// TestRemoteGRPC: the gRPC API serves a remote engine too, with the
// upstream's text, usage and errors.
func TestRemoteGRPC(t *testing.T) {
	up := upstream(t, nil, nil)
	rs := remoteSidecar(t, up, 2, nil)
	req := &autoglmv1.GenerateRequest{Model: "autoglm-test", Prompt: "once upon a time", MaxTokens: 16}
	want, wantLast, _, err := collectGenerate(t, up, req)
	if err != nil {
		t.Fatal(err)
	}
	got, last, n, err := collectGenerate(t, rs, req)
	if err != nil || got != want || last.FinishReason != "length" || last.Usage.CompletionTokens != 16 ||
		last.Usage.PromptTokens != wantLast.Usage.PromptTokens || n < 2 {
		t.Fatalf("via the remote engine %q %+v in %d messages (%v); directly %q %+v", got, last, n, err, want, wantLast)
	}
	req.MaxTokens = 600 // beyond the upstream's context
	if _, _, _, err := collectGenerate(t, rs, req); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "maximum context length") {
		t.Fatalf("beyond the context: %v", err)
	}
}

func collectGenerate(t *testing.T, sc *sidecar, req *autoglmv1.GenerateRequest) (string, *autoglmv1.GenerateResponse, int, error) {
	stream, err := autoglmv1.NewInferenceClient(dial(t, sc)).Generate(context.Background(), req)
	if err != nil {
		return "", nil, 0, err
	}
	return collect(stream)
}
