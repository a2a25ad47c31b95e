package chaos

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/open-autoglm/autoglm/inference/testengine"
	"github.com/open-autoglm/autoglm/internal/xdstest"
	sidecarcfg "github.com/open-autoglm/autoglm/sidecar/config"
	autoglmv1 "github.com/open-autoglm/autoglm/sidecar/proto/autoglm/v1"
	sidecar "github.com/open-autoglm/autoglm/sidecar/server"
	"github.com/open-autoglm/autoglm/xds/config"
	xdsserver "github.com/open-autoglm/autoglm/xds/server"
)

// scaled stretches a drill's phase: 1× in make test, more in make chaos
// (AUTOGLM_CHAOS_SCALE).
func scaled(d time.Duration) time.Duration {
	if n, err := strconv.Atoi(os.Getenv("AUTOGLM_CHAOS_SCALE")); err == nil && n > 0 {
		return time.Duration(int64(d) * int64(n))
	}
	return d
}

// callDeadline is every call's deadline; a call that has no answer a
// second after it has hung.
const callDeadline = 3 * time.Second

// replica is a real sidecar (test engine, 5 ms a step) whose gRPC API is
// reached through a Proxy at a fixed address.
type replica struct {
	ip     string
	port   int
	proxy  *Proxy
	stop   context.CancelFunc
	done   chan error
	engine testengine.Config
}

func (r *replica) start(t *testing.T) {
	t.Helper()
	srv := sidecar.New(sidecarcfg.Default(), testengine.New(r.engine), 0, slog.New(slog.DiscardHandler))
	hl, _ := net.Listen("tcp", "127.0.0.1:0")
	gl, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, stop := context.WithCancel(context.Background())
	r.stop, r.done = stop, make(chan error, 1)
	go func() { r.done <- srv.Run(ctx, sidecar.Listeners{HTTP: hl, GRPC: gl}) }()
	for !srv.Ready() {
		time.Sleep(time.Millisecond)
	}
	p, err := NewProxy(net.JoinHostPort(r.ip, strconv.Itoa(r.port)), gl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r.proxy, r.port = p, p.Addr().Port
}

// kill drops the replica at once: its connections reset, nothing drained.
func (r *replica) kill() {
	r.proxy.Close()
	r.stop()
	<-r.done
}

// term is SIGTERM: the sidecar drains (in-flight calls finish, new ones
// are refused) and exits; then its address goes away.
func (r *replica) term() {
	r.stop()
	<-r.done
	r.proxy.Close()
}

// env is two replicas of one version behind autoglm-xds, and grpc-go
// clients of it with keepalive (10 s, grpc-go's shortest).
type env struct {
	t        *testing.T
	replicas []*replica
	cfg      *config.Config
	ads      string
	adsStop  context.CancelFunc
	adsDone  chan error
	client   autoglmv1.InferenceClient
}

func newEnv(t *testing.T) *env {
	e := &env{t: t}
	port := 0
	for _, ip := range []string{"127.0.0.1", "127.0.0.2"} {
		r := &replica{ip: ip, port: port, engine: testengine.Config{Model: "m", StepCost: 5 * time.Millisecond}}
		r.start(t)
		port = r.port
		e.replicas = append(e.replicas, r)
	}
	t.Cleanup(func() {
		for _, r := range e.replicas {
			r.proxy.Close()
			r.stop()
			<-r.done
		}
	})
	c, err := config.Parse([]byte(fmt.Sprintf(`apiVersion: autoglm.io/v1alpha1
listeners: {grpc: [inference]}
models:
  - name: m
    timeout: 30s
    retries: {attempts: 2, on: [reset, connect-failure, 5xx, "429"]}
    outlier_detection: {consecutive_5xx: 5, interval: 1s, base_ejection_time: 5s, max_ejection_percent: 50, request_volume: 2}
    versions:
      - {name: v1, weight: 100, endpoints: ["127.0.0.1:8080", "127.0.0.2:8080"], grpc_port: %d}
`, port)))
	if err != nil {
		t.Fatal(err)
	}
	e.cfg = c
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.ads = l.Addr().String()
	e.serveADS(l)
	t.Cleanup(e.stopADS)
	e.client = autoglmv1.NewInferenceClient(xdstest.Client(t, e.ads, "inference", "chaos",
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 2 * time.Second})))
	return e
}

func (e *env) serveADS(l net.Listener) {
	s := xdsserver.New(slog.New(slog.DiscardHandler))
	if err := s.Publish(e.cfg); err != nil {
		e.t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	e.adsStop, e.adsDone = stop, make(chan error, 1)
	go func() { e.adsDone <- s.Run(ctx, l) }()
}

func (e *env) stopADS() {
	if e.adsStop != nil {
		e.adsStop()
		<-e.adsDone
		e.adsStop = nil
	}
}

// tally is what the calls of a drill got.
type tally struct {
	mu                                        sync.Mutex
	sent, ok, retryable, deadline, lost, hung int
	worst                                     time.Duration
	errs                                      map[string]int
}

// load sends calls back to back from 8 clients until ctx ends.
func (e *env) load(ctx context.Context, tl *tally) *sync.WaitGroup {
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				e.call(tl)
			}
		}()
	}
	return &wg
}

func (e *env) call(tl *tally) {
	start := time.Now()
	cctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "x-autoglm-model", "m"), callDeadline)
	defer cancel()
	st, err := e.client.Generate(cctx, &autoglmv1.GenerateRequest{Model: "m", Prompt: "hello", MaxTokens: 8})
	for err == nil {
		_, err = st.Recv()
	}
	took := time.Since(start)
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.sent++
	tl.worst = max(tl.worst, took)
	if took > callDeadline+time.Second {
		tl.hung++
	}
	switch code := status.Code(err); {
	case err == nil || err.Error() == "EOF":
		tl.ok++
	case code == codes.Unavailable || code == codes.ResourceExhausted:
		tl.retryable++
	case code == codes.DeadlineExceeded:
		tl.deadline++
	default:
		tl.lost++
		if tl.errs == nil {
			tl.errs = map[string]int{}
		}
		tl.errs[err.Error()]++
	}
}

// drill runs load for before, then fault, then load for after, and checks
// that nothing was lost: every call got a success or a clear retryable
// error (UNAVAILABLE, RESOURCE_EXHAUSTED), deadline errors only where
// allowed, and none hung past its deadline.
func drill(t *testing.T, e *env, fault func(), after time.Duration, allowRetryable, allowDeadline bool) *tally {
	tl := &tally{}
	ctx, stop := context.WithCancel(context.Background())
	wg := e.load(ctx, tl)
	time.Sleep(scaled(time.Second))
	fault()
	time.Sleep(scaled(after))
	stop()
	wg.Wait()
	t.Logf("drill %s: sent %d, succeeded %d, retryable errors %d, deadline %d, lost %d, hung %d, slowest %v %v",
		t.Name(), tl.sent, tl.ok, tl.retryable, tl.deadline, tl.lost, tl.hung, tl.worst.Round(time.Millisecond), tl.errs)
	if tl.lost != 0 || tl.hung != 0 {
		t.Errorf("lost %d calls, %d hung: %v", tl.lost, tl.hung, tl.errs)
	}
	if !allowRetryable && tl.retryable != 0 {
		t.Errorf("%d calls failed (retryable) where none should", tl.retryable)
	}
	if !allowDeadline && tl.deadline != 0 {
		t.Errorf("%d calls ran out of time where none should", tl.deadline)
	}
	return tl
}

// afterwards checks that the version serves again: n calls, all good.
func afterwards(t *testing.T, e *env, n int) {
	tl := &tally{}
	for range n {
		e.call(tl)
	}
	if tl.ok != n {
		t.Errorf("after the drill %d of %d calls succeeded: %v", tl.ok, n, tl.errs)
	}
}

// TestKillAndRestart: a replica killed under load (connections reset) and
// restarted 1 s later at the same address. Calls streaming on it fail
// UNAVAILABLE; nothing else is lost; it serves again.
func TestKillAndRestart(t *testing.T) {
	e := newEnv(t)
	b := e.replicas[1]
	drill(t, e, func() {
		b.kill()
		time.Sleep(time.Second)
		b.start(t)
	}, 2*time.Second, true, false)
	afterwards(t, e, 20)
}

// TestSIGTERMDrain: a replica drains as in a rolling update: in-flight
// calls finish, new ones go to its peer. No call fails.
func TestSIGTERMDrain(t *testing.T) {
	e := newEnv(t)
	b := e.replicas[1]
	drill(t, e, func() { b.term() }, 2*time.Second, false, false)
	b.start(t) // the new pod
	afterwards(t, e, 20)
}

// TestControlPlaneRestart: autoglm-xds goes away for 2 s and comes back
// at the same address: clients keep their last configuration meanwhile,
// and reconnect. No call fails.
func TestControlPlaneRestart(t *testing.T) {
	e := newEnv(t)
	drill(t, e, func() {
		e.stopADS()
		time.Sleep(2 * time.Second)
		l, err := net.Listen("tcp", e.ads)
		if err != nil {
			t.Fatal(err)
		}
		e.serveADS(l)
	}, 2*time.Second, false, false)
	afterwards(t, e, 20)
}

// TestNetworkDelay: 100 ms added to every chunk to and from one replica.
// Calls get slower, none fails.
func TestNetworkDelay(t *testing.T) {
	e := newEnv(t)
	tl := drill(t, e, func() { e.replicas[1].proxy.Delay(100 * time.Millisecond) }, 2*time.Second, false, false)
	if tl.worst < 100*time.Millisecond {
		t.Errorf("the delay did not show: slowest call %v", tl.worst)
	}
	e.replicas[1].proxy.Delay(0)
	afterwards(t, e, 20)
}

// TestBlackhole: one replica stops answering without closing anything.
// Calls stuck on it end at their deadline (DEADLINE_EXCEEDED), none later;
// outlier detection counts those failures and ejects it, so calls made
// while it is still unreachable go to the peer; it serves again once the
// network heals.
func TestBlackhole(t *testing.T) {
	e := newEnv(t)
	b := e.replicas[1]
	drill(t, e, func() { b.proxy.Blackhole(true) }, 6*time.Second, true, true)
	afterwards(t, e, 20) // still black-holed: ejected
	b.proxy.Blackhole(false)
	afterwards(t, e, 20)
}
