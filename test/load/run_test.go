package load

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/inference/testengine"
	"github.com/open-autoglm/autoglm/sidecar/config"
	"github.com/open-autoglm/autoglm/sidecar/server"
)

// sidecar runs a real autoglm-sidecar on loopback for the test's length.
// A gRPC listener, when given, serves the gRPC API.
func sidecar(t *testing.T, mod func(*config.Config), ec testengine.Config, grpcListener ...net.Listener) string {
	t.Helper()
	cfg := config.Default()
	cfg.Admission.MaxQueue = 4096
	cfg.Batch.MaxBatchSize = 64
	if mod != nil {
		mod(&cfg)
	}
	ec.Model = cfg.Engine.Model
	srv := server.New(cfg, testengine.New(ec), 0, slog.New(slog.DiscardHandler))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ls := server.Listeners{HTTP: l}
	if len(grpcListener) > 0 {
		ls.GRPC = grpcListener[0]
	}
	go func() { done <- srv.Run(ctx, ls) }()
	t.Cleanup(func() { cancel(); <-done })
	for !srv.Ready() {
		time.Sleep(time.Millisecond)
	}
	return "http://" + l.Addr().String()
}

func workload(stream bool) Workload {
	return Workload{Chat: true, Stream: stream, Prompt: Dist{Kind: "fixed", A: 16}, Output: Dist{Kind: "fixed", A: 8}}
}

// TestOpenRateAccuracy: the open model sends exactly the schedule's
// arrivals, at the offered rate.
func TestOpenRateAccuracy(t *testing.T) {
	base := sidecar(t, nil, testengine.Config{})
	rep, err := Run(context.Background(), Config{Model: "open", Rate: Constant(200, 3*time.Second), Workload: workload(false), Seed: 1},
		NewHTTP(base, "autoglm-test"), base)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Requests != 600 || rep.OK != 600 || rep.Offered != 200 {
		t.Fatalf("requests %d ok %d offered %v; want 600, 600, 200: %v", rep.Requests, rep.OK, rep.Offered, rep.Errors)
	}
	if rep.Sent < 190 || rep.Sent > 201 {
		t.Fatalf("sent %.1f req/s, want 200 (within 5%%)", rep.Sent)
	}
	if rep.CompletionTokens != 600*8 || rep.PromptTokens == 0 {
		t.Fatalf("tokens in %d out %d", rep.PromptTokens, rep.CompletionTokens)
	}
}

// gater feeds a gated engine's steps except during a stall window.
type gater struct {
	gate     chan struct{}
	from, to atomic.Int64 // unix nanoseconds
}

func newGater(t *testing.T) *gater {
	g := &gater{gate: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if now := time.Now().UnixNano(); now >= g.from.Load() && now < g.to.Load() {
				time.Sleep(time.Millisecond)
				continue
			}
			select {
			case g.gate <- struct{}{}:
			case <-time.After(time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return g
}

// stall holds the engine from now+from to now+to.
func (g *gater) stall(from, to time.Duration) {
	now := time.Now()
	g.from.Store(now.Add(from).UnixNano())
	g.to.Store(now.Add(to).UnixNano())
}

// TestLatencyFromIntendedTime: when the service stalls for 500 ms, the open
// model keeps sending on schedule and every request caught by the stall
// counts the wait from its intended send time. A closed-model client (one
// user) sees a single slow request: the coordinated omission the open
// model avoids.
func TestLatencyFromIntendedTime(t *testing.T) {
	g := newGater(t)
	base := sidecar(t, nil, testengine.Config{Gate: g.gate})
	tgt := NewHTTP(base, "autoglm-test")

	start := time.Now()
	g.stall(time.Second, 1500*time.Millisecond)
	open, err := Run(context.Background(), Config{Model: "open", Rate: Constant(100, 2500*time.Millisecond), Workload: workload(true)}, tgt, base)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("run took %s", d)
	}
	e2e := open.Latency["e2e"]
	if open.OK != 250 || e2e.Max < 400 || e2e.P90 < 150 {
		t.Fatalf("open model: %d ok, e2e %+v; want 250 ok, max ≥ 400 ms and p90 ≥ 150 ms", open.OK, e2e)
	}
	if s := open.Timeline[1].Sent; s < 90 {
		t.Fatalf("sent %d requests in the stalled second, want ~100: the open model must not wait for replies", s)
	}

	g.stall(time.Second, 1500*time.Millisecond)
	closed, err := Run(context.Background(), Config{Model: "closed", VUs: Constant(1, 2500*time.Millisecond), Workload: workload(true)}, tgt, base)
	if err != nil {
		t.Fatal(err)
	}
	if c := closed.Latency["e2e"]; c.Max < 400 || c.P90 >= e2e.P90 {
		t.Fatalf("closed model e2e %+v: one request should wait the stall and p90 stay below the open model's %.1f ms", c, e2e.P90)
	}
}

// recording is a Target that keeps every request and its reply.
type recording struct {
	Target
	mu      sync.Mutex
	replies map[string]string
	reqs    []Request
}

func key(msgs []Message) string { b, _ := json.Marshal(msgs); return string(b) }

func (r *recording) Do(ctx context.Context, req *Request) Result {
	res := r.Target.Do(ctx, req)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, *req)
	if res.Class == "" {
		r.replies[key(req.Chat)] = res.Text
	}
	return res
}

// TestSessions: each turn of a session carries the conversation so far,
// with the replies the service gave.
func TestSessions(t *testing.T) {
	base := sidecar(t, nil, testengine.Config{})
	rec := &recording{Target: NewHTTP(base, "autoglm-test"), replies: map[string]string{}}
	w := workload(true)
	w.Turns, w.PrefixGroups, w.PrefixWords = 3, 2, 5
	rep, err := Run(context.Background(), Config{Model: "closed", VUs: Constant(4, time.Second), Workload: w}, rec, base)
	if err != nil || rep.OK == 0 || rep.OK != rep.Requests {
		t.Fatalf("%v %+v", err, rep.Errors)
	}
	byTurn := map[int]int{}
	for _, r := range rec.reqs {
		if r.Chat[0].Role != "system" || len(strings.Fields(r.Chat[0].Content)) != 5 {
			t.Fatalf("no shared prefix: %+v", r.Chat[0])
		}
		conv := r.Chat[1:]
		users := (len(conv) + 1) / 2
		byTurn[users]++
		for i, m := range conv {
			if want := []string{"user", "assistant"}[i%2]; m.Role != want {
				t.Fatalf("message %d is %s, want %s: %+v", i, m.Role, want, conv)
			}
		}
		if users > 1 {
			prefix := r.Chat[:len(r.Chat)-2]
			reply, ok := rec.replies[key(prefix)]
			if !ok || reply != r.Chat[len(r.Chat)-2].Content || reply == "" {
				t.Fatalf("turn %d does not carry the reply the service gave to turn %d", users, users-1)
			}
		}
	}
	if byTurn[1] == 0 || byTurn[2] == 0 || byTurn[3] == 0 || len(byTurn) != 3 {
		t.Fatalf("requests by turn %v, want turns 1..3", byTurn)
	}
}

// TestReportContents: the JSON report round-trips (inter-token gaps are
// between chunks, and a reader that falls behind gets tokens in one chunk,
// so there are at most 7 per request) and the HTML page and
// its PNG charts are written.
func TestReportContents(t *testing.T) {
	base := sidecar(t, nil, testengine.Config{StepCost: time.Millisecond})
	rep, err := Run(context.Background(), Config{Model: "open", Rate: Constant(50, 2*time.Second), Workload: workload(true),
		SLO: SLO{TTFT: time.Nanosecond}}, NewHTTP(base, "autoglm-test"), base)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "r.json")
	if err := rep.Write(path); err != nil {
		t.Fatal(err)
	}
	back, err := ReadReport(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.Requests != 100 || back.OK != 100 || back.Goodput != 0 || len(back.Timeline) < 2 || back.Latency["ttft"].Count != 100 ||
		back.Latency["itl"].Count < 600 || back.Latency["itl"].Count > 700 || back.Latency["tpot"].P50 <= 0 || back.Workload.Output.A != 8 ||
		// a busy machine may delay sends: kept_up must say whether it did
		back.KeptUp != (back.Dropped == 0 && back.Latency["lag"].P99 <= 10) {
		t.Fatalf("report %+v", back)
	}
	tl := 0
	for _, p := range back.Timeline {
		tl += p.Completed
	}
	if tl != 100 {
		t.Fatalf("timeline counts %d completions", tl)
	}
	html := filepath.Join(dir, "r.html")
	if err := WriteHTML(html, back); err != nil {
		t.Fatal(err)
	}
	page, _ := os.ReadFile(html)
	if bytes.Count(page, []byte("data:image/png;base64,")) != 3 || !bytes.Contains(page, []byte("goodput")) {
		t.Fatal("HTML page without its three charts")
	}
	for _, c := range []string{"latency", "throughput", "percentiles"} {
		b, err := os.ReadFile(filepath.Join(dir, "r-"+c+".png"))
		if err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
			t.Fatalf("chart %s: %v", c, err)
		}
	}
	var out strings.Builder
	back2 := *back
	back2.Achieved *= 2
	Compare(&out, back, &back2)
	if !strings.Contains(out.String(), "achieved req/s") || !strings.Contains(out.String(), "+100.0% better") {
		t.Fatalf("compare:\n%s", out.String())
	}
}

// TestErrorClasses: 429s, timeouts, transport failures and dropped
// arrivals are counted apart.
func TestErrorClasses(t *testing.T) {
	base := sidecar(t, func(c *config.Config) { c.Batch.MaxBatchSize, c.Admission.MaxQueue = 1, 1 }, testengine.Config{StepCost: 10 * time.Millisecond})
	tgt := NewHTTP(base, "autoglm-test")
	rep, err := Run(context.Background(), Config{Model: "open", Rate: Constant(100, time.Second), Workload: workload(false)}, tgt, base)
	if err != nil || rep.Errors[ClassRateLimited] == 0 || rep.OK == 0 {
		t.Fatalf("%v: ok %d errors %v", err, rep.OK, rep.Errors)
	}
	rep, _ = Run(context.Background(), Config{Model: "open", Rate: Constant(20, 500*time.Millisecond), Timeout: 5 * time.Millisecond, Workload: workload(false)}, tgt, base)
	if rep.Errors[ClassTimeout] == 0 {
		t.Fatalf("timeouts not counted: %v", rep.Errors)
	}
	rep, _ = Run(context.Background(), Config{Model: "open", Rate: Constant(100, 500*time.Millisecond), MaxInFlight: 1, Workload: workload(false)}, tgt, base)
	if rep.Dropped == 0 || rep.KeptUp || len(rep.Warnings) == 0 {
		t.Fatalf("dropped %d kept up %v warnings %v", rep.Dropped, rep.KeptUp, rep.Warnings)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := "http://" + l.Addr().String()
	l.Close()
	rep, _ = Run(context.Background(), Config{Model: "open", Rate: Constant(20, 200*time.Millisecond), Workload: workload(false)}, NewHTTP(closed, "m"), closed)
	if rep.Errors[ClassTransport] != rep.Requests || rep.Requests == 0 {
		t.Fatalf("transport errors %v of %d", rep.Errors, rep.Requests)
	}
	if crossed := rep.Check(Thresholds{}); len(crossed) == 0 {
		t.Fatal("a run where every request failed passed its check")
	}
	// Closed model against a target that is down: the VUs back off
	// (doubling from 10 ms to 1 s) instead of spinning.
	rep, _ = Run(context.Background(), Config{Model: "closed", VUs: Constant(4, time.Second), Workload: workload(false)}, NewHTTP(closed, "m"), closed)
	if rep.Requests == 0 || rep.Requests > 4*8 {
		t.Fatalf("%d attempts by 4 VUs in 1 s against a closed port: want at most 8 each (10+20+…+640 ms)", rep.Requests)
	}
}

// TestThresholds: a run exits non-zero past the limits a user sets.
func TestThresholds(t *testing.T) {
	r := &Report{Requests: 100, OK: 97, Errors: map[string]int{"5xx": 3},
		Latency: map[string]Percentiles{"ttft": {P99: 250}, "e2e": {P99: 900}}}
	if c := r.Check(Thresholds{MaxErrorRate: 0.05, MaxTTFTP99: 300, MaxE2EP99: 1000}); len(c) != 0 {
		t.Fatalf("within limits: %v", c)
	}
	if c := r.Check(Thresholds{MaxErrorRate: 0.01, MaxTTFTP99: 200, MaxE2EP99: 800}); len(c) != 3 {
		t.Fatalf("past three limits: %v", c)
	}
}

func TestConfigErrors(t *testing.T) {
	c := Config{Model: "open", Rate: Ramp{}, Workload: Workload{Turns: 3}}
	err := c.Validate()
	for _, want := range []string{"rate.stages", "turns: multi-turn sessions need the closed model", "prompt and output"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v does not say %q", err, want)
		}
	}
	if err := (&Config{Model: "both"}).Validate(); err == nil || !strings.Contains(err.Error(), "model: must be open or closed") {
		t.Errorf("%v", err)
	}
}

// TestGRPCTarget: the sidecar's gRPC API under the closed model, sessions
// included.
func TestGRPCTarget(t *testing.T) {
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sidecar(t, nil, testengine.Config{}, gl)
	g, err := NewGRPC(gl.Addr().String(), "autoglm-test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	w := workload(true)
	w.Turns = 2
	rep, err := Run(context.Background(), Config{Model: "closed", VUs: Constant(4, time.Second), Workload: w}, g, "grpc")
	if err != nil || rep.OK == 0 || rep.OK != rep.Requests || rep.CompletionTokens != int64(rep.OK)*8 || rep.Latency["ttft"].Count != int64(rep.OK) {
		t.Fatalf("%v: %+v", err, rep)
	}
	bad, _ := NewGRPC(gl.Addr().String(), "no-such-model", nil)
	defer bad.Close()
	if res := bad.Do(context.Background(), &Request{Prompt: "x", MaxTokens: 1}); res.Class != ClassClient {
		t.Fatalf("unknown model: class %q", res.Class)
	}
}

// TestCapGoodputProgressSeed: the cap bounds a closed model's rate, goodput
// counts the requests within the SLOs, the progress line is drawn, and a
// seed fixes the workload.
func TestCapGoodputProgressSeed(t *testing.T) {
	base := sidecar(t, nil, testengine.Config{})
	var progress bytes.Buffer
	rep, err := Run(context.Background(), Config{Model: "closed", VUs: Constant(8, 2*time.Second), Cap: 50, Workload: workload(false),
		SLO: SLO{E2E: time.Minute, TTFT: time.Minute}, Progress: &progress}, NewHTTP(base, "autoglm-test"), base)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Requests < 90 || rep.Requests > 102 {
		t.Fatalf("%d requests in 2 s under a cap of 50/s", rep.Requests)
	}
	if rep.Goodput != rep.Achieved || rep.OK != rep.Requests {
		t.Fatalf("goodput %v of %v with generous SLOs", rep.Goodput, rep.Achieved)
	}
	if !strings.Contains(progress.String(), "[==========") || !strings.Contains(progress.String(), "/2s") {
		t.Fatalf("progress line %q", progress.String())
	}

	w := workload(false)
	w.Prompt, w.Output = Dist{Kind: "uniform", A: 1, B: 100}, Dist{Kind: "normal", A: 50, B: 10}
	draw := func(seed uint64) string {
		s := &session{rng: rand.New(rand.NewPCG(seed, 1))}
		var b strings.Builder
		for range 5 {
			r := w.next(s)
			fmt.Fprintf(&b, "%d %s|", r.MaxTokens, key(r.Chat))
		}
		return b.String()
	}
	if draw(1) != draw(1) || draw(1) == draw(2) { //nolint:staticcheck // two draws with one seed must agree
		t.Fatal("the seed must fix the workload, and another seed change it")
	}
}
