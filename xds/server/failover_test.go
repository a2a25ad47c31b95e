package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	xdsgrpc "google.golang.org/grpc/xds"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/testengine"
	"github.com/open-autoglm/autoglm/internal/sidecartest"
	sidecarcfg "github.com/open-autoglm/autoglm/sidecar/config"
	autoglmv1 "github.com/open-autoglm/autoglm/sidecar/proto/autoglm/v1"
	"github.com/open-autoglm/autoglm/xds/config"
)

// killable is a listener whose Kill drops it and every connection it
// accepted at once, as a process killed with SIGKILL does (the peer sees
// resets), without the sidecar's graceful shutdown.
type killable struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
	dead  bool
}

func (k *killable) Accept() (net.Conn, error) {
	c, err := k.Listener.Accept()
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.dead {
		c.Close()
		return nil, net.ErrClosed
	}
	k.conns = append(k.conns, c)
	return c, nil
}

func (k *killable) Kill() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.dead = true
	k.Listener.Close()
	for _, c := range k.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // RST, as the kernel sends for a killed process
		}
		c.Close()
	}
}

// replica runs a real sidecar (test engine: 10 ms a step, 2 sequences at
// once, so calls queue) on ip, its gRPC API on grpcPort (0: any), with a
// gRPC listener that can be killed. It returns the HTTP endpoint and the
// gRPC port.
func replica(t *testing.T, ip string, grpcPort int) (string, int, *killable) {
	return replicaOf(t, ip, grpcPort, testengine.New(testengine.Config{Model: "m", StepCost: 10 * time.Millisecond, Slots: 2}))
}

func replicaOf(t *testing.T, ip string, grpcPort int, eng inference.Engine) (string, int, *killable) {
	t.Helper()
	return replicaWith(t, ip, grpcPort, eng, sidecarcfg.Default())
}

func replicaWith(t *testing.T, ip string, grpcPort int, eng inference.Engine, cfg sidecarcfg.Config) (string, int, *killable) {
	t.Helper()
	hl, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	gl, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(grpcPort)))
	if err != nil {
		t.Fatal(err) // a port free on 127.0.0.1 is all but always free on 127.0.0.2
	}
	k := &killable{Listener: gl}
	sidecartest.Start(t, cfg, eng, hl, k)
	return hl.Addr().String(), gl.Addr().(*net.TCPAddr).Port, k
}

// pairConfig is model m served by one version on the two replicas at
// endpoints a and b (gRPC on port), with policy: the model's YAML lines
// (indented by four spaces) between its name and its versions.
func pairConfig(t *testing.T, policy, a, b string, port int) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(fmt.Sprintf(`apiVersion: autoglm.io/v1alpha1
listeners: {grpc: [inference]}
models:
  - name: m
%s
    versions:
      - {name: v1, weight: 100, endpoints: ["%s", "%s"], grpc_port: %d}
`, policy, a, b, port)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// loop runs f back to back on n goroutines until ctx ends; wait for them
// with the WaitGroup.
func loop(ctx context.Context, n int, f func()) *sync.WaitGroup {
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				f()
			}
		}()
	}
	return &wg
}

// attempts counts the attempts of each call (a stats handler sees every
// attempt of a call begin, retries included).
type attempts struct{}

type attemptsKey struct{}

func (attempts) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (attempts) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if b, ok := s.(*stats.Begin); ok && b.IsClient() {
		if n, ok := ctx.Value(attemptsKey{}).(*atomic.Int64); ok {
			n.Add(1)
		}
	}
}
func (attempts) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (attempts) HandleConn(context.Context, stats.ConnStats)                       {}

// generate makes one call for model m (with the extra metadata pairs),
// reads its stream to the end within timeout, and returns the messages
// received and the error (nil when the stream ended normally).
func generate(ctx context.Context, c autoglmv1.InferenceClient, prompt string, maxTokens int32, timeout time.Duration, md ...string) (int, error) {
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, append([]string{"x-autoglm-model", "m"}, md...)...), timeout)
	defer cancel()
	st, err := c.Generate(ctx, &autoglmv1.GenerateRequest{Model: "m", Prompt: prompt, MaxTokens: maxTokens})
	got := 0
	for err == nil {
		if _, err = st.Recv(); err == nil {
			got++
		}
	}
	if err == io.EOF {
		err = nil
	}
	return got, err
}

// outcome of one call.
type outcome struct {
	ok, retried, committedFailures, uncommittedFailures, after atomic.Int64
}

// TestReplicaKilledUnderLoad: one version of two replicas behind
// autoglm-xds, grpc-go's xDS client sending 8 streams back to back; one
// replica is killed. Calls that had not received a token when it died are
// retried on the other replica (gRPC's retry policy from the route: the
// configured reset/connect-failure/5xx become UNAVAILABLE); only calls
// already streaming tokens fail; new calls go to the live replica.
func TestReplicaKilledUnderLoad(t *testing.T) {
	ha, port, _ := replica(t, "127.0.0.1", 0)
	hb, _, kb := replica(t, "127.0.0.2", port)
	c := pairConfig(t, "    timeout: 30s\n    retries: {attempts: 2, on: [reset, connect-failure, 5xx]}", ha, hb, port)
	s := New(slog.New(slog.DiscardHandler))
	if err := s.Publish(c); err != nil {
		t.Fatal(err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go s.Run(ctx, l)
	rb, err := xdsgrpc.NewXDSResolverWithConfigForTesting([]byte(fmt.Sprintf(
		`{"xds_servers":[{"server_uri":"%s","channel_creds":[{"type":"insecure"}],"server_features":["xds_v3"]}],"node":{"id":"failover"}}`, l.Addr())))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///inference", grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(rb), grpc.WithStatsHandler(attempts{}))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := autoglmv1.NewInferenceClient(cc)

	var out outcome
	var killed atomic.Bool
	var killedAt time.Time
	call := func() {
		var tries atomic.Int64
		startedAfter := killed.Load() && time.Since(killedAt) > 500*time.Millisecond
		got, err := generate(context.WithValue(ctx, attemptsKey{}, &tries), client, "hello", 8, 10*time.Second)
		if err == nil {
			out.ok.Add(1)
			if startedAfter {
				out.after.Add(1)
			}
			if tries.Load() > 1 {
				out.retried.Add(1)
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
		if startedAfter {
			t.Errorf("a call started %v after the kill failed: %v", time.Since(killedAt), err)
		}
		if got > 0 {
			out.committedFailures.Add(1)
		} else {
			out.uncommittedFailures.Add(1)
			t.Logf("failed before any token: %v (%s)", err, status.Code(err))
		}
	}
	wg := loop(ctx, 8, call)
	time.Sleep(1500 * time.Millisecond)
	// Kill while a call waits in b's queue (no token yet), so that there
	// is a call the retry policy must move: which calls are where at a
	// given instant is up to the balancer and the scheduler.
	for deadline := time.Now().Add(5 * time.Second); queued(t, hb) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("no call waited in the queue of the replica to kill within 5s")
		}
	}
	killedAt = time.Now()
	killed.Store(true)
	kb.Kill()
	time.Sleep(2 * time.Second)
	stop()
	wg.Wait()
	t.Logf("ok %d (retried %d, started after the kill %d); failed while streaming %d, failed before a token %d",
		out.ok.Load(), out.retried.Load(), out.after.Load(), out.committedFailures.Load(), out.uncommittedFailures.Load())
	if out.uncommittedFailures.Load() != 0 {
		t.Errorf("%d calls that had not started generating failed instead of being retried", out.uncommittedFailures.Load())
	}
	if out.retried.Load() == 0 {
		t.Error("no call was retried")
	}
	if out.after.Load() < 20 {
		t.Errorf("only %d calls succeeded after the kill", out.after.Load())
	}
}

// queued returns the requests waiting in the queue of the sidecar whose
// HTTP endpoint is addr (autoglm_queue_depth, all priorities).
func queued(t *testing.T, addr string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	n := 0.0
	if f := mf["autoglm_queue_depth"]; f != nil {
		for _, m := range f.GetMetric() {
			n += m.GetGauge().GetValue()
		}
	}
	return n
}

// flaky fails every request while failing is set, and counts the
// requests it was given.
type flaky struct {
	*testengine.Engine
	failing atomic.Bool
	starts  atomic.Int64
}

func (f *flaky) Start(slot int, s inference.Sampling) error {
	f.starts.Add(1)
	if f.failing.Load() {
		return errors.New("injected fault")
	}
	return f.Engine.Start(slot, s)
}

// proxyless returns an InferenceClient through autoglm-xds serving c.
func proxyless(t *testing.T, ctx context.Context, c *config.Config) autoglmv1.InferenceClient {
	t.Helper()
	s := New(slog.New(slog.DiscardHandler))
	if err := s.Publish(c); err != nil {
		t.Fatal(err)
	}
	return proxylessOn(t, ctx, s)
}

// proxylessOn returns an InferenceClient through s (served until ctx ends).
func proxylessOn(t *testing.T, ctx context.Context, s *Server) autoglmv1.InferenceClient {
	t.Helper()
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Run(ctx, l)
	rb, err := xdsgrpc.NewXDSResolverWithConfigForTesting([]byte(fmt.Sprintf(
		`{"xds_servers":[{"server_uri":"%s","channel_creds":[{"type":"insecure"}],"server_features":["xds_v3"]}],"node":{"id":"client"}}`, l.Addr())))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///inference", grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(rb))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return autoglmv1.NewInferenceClient(cc)
}

// TestFailingReplicaEjected: grpc-go's outlier detection, configured by
// autoglm-xds, ejects a replica of a two-replica version that fails every
// request (failure-percentage ejection; the consecutive_5xx rule does not
// exist in gRPC), and lets it back once it is healthy again and its
// ejection time has passed.
func TestFailingReplicaEjected(t *testing.T) {
	a := &flaky{Engine: testengine.New(testengine.Config{Model: "m", StepCost: 2 * time.Millisecond})}
	b := &flaky{Engine: testengine.New(testengine.Config{Model: "m", StepCost: 2 * time.Millisecond})}
	ha, port, _ := replicaOf(t, "127.0.0.1", 0, a)
	hb, _, _ := replicaOf(t, "127.0.0.2", port, b)
	b.failing.Store(true) // after its warm-up
	c := pairConfig(t, "    outlier_detection: {consecutive_5xx: 5, interval: 500ms, base_ejection_time: 2s, max_ejection_percent: 50, request_volume: 5}", ha, hb, port)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	client := proxyless(t, ctx, c)
	var failures atomic.Int64
	var lastErr atomic.Value
	wg := loop(ctx, 4, func() {
		if _, err := generate(ctx, client, "hi", 2, 5*time.Second); err != nil {
			failures.Add(1)
			lastErr.Store(err.Error())
		}
	})
	defer func() { stop(); wg.Wait() }()
	share := func(d time.Duration) (float64, int64) {
		a0, b0 := a.starts.Load(), b.starts.Load()
		time.Sleep(d)
		da, db := a.starts.Load()-a0, b.starts.Load()-b0
		return float64(db) / float64(max(da+db, 1)), da + db
	}
	// A failing replica answers at once, so until it is ejected it gets
	// most calls; once ejected, none (beyond a stray in flight).
	until := func(what string, within time.Duration, cond func(float64, int64) bool) {
		t.Helper()
		for deadline := time.Now().Add(within); ; {
			sh, n := share(300 * time.Millisecond)
			if cond(sh, n) {
				t.Logf("%s: the replica got %.0f%% of %d requests", what, sh*100, n)
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not happen within %v: the replica got %.0f%% of %d requests (%d calls failed: %v)", what, within, sh*100, n, failures.Load(), lastErr.Load())
			}
		}
	}
	until("ejection", 3*time.Second, func(sh float64, n int64) bool { return sh < 0.05 && n >= 20 })
	b.failing.Store(false)
	// Its ejection time (2 s, doubled per repeated ejection) passes.
	until("return after healing", 10*time.Second, func(sh float64, n int64) bool { return sh > 0.25 })
	until("staying in", 3*time.Second, func(sh float64, n int64) bool { return sh > 0.25 })
}
