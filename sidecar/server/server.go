package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"golang.org/x/net/netutil"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/gpu"
	"github.com/open-autoglm/autoglm/inference/grammar"
	"github.com/open-autoglm/autoglm/inference/remote"
	"github.com/open-autoglm/autoglm/internal/cli"
	"github.com/open-autoglm/autoglm/sidecar/admission"
	"github.com/open-autoglm/autoglm/sidecar/api"
	"github.com/open-autoglm/autoglm/sidecar/batch"
	"github.com/open-autoglm/autoglm/sidecar/config"
	"github.com/open-autoglm/autoglm/sidecar/dispatch"
	"github.com/open-autoglm/autoglm/sidecar/identity"
	"github.com/open-autoglm/autoglm/sidecar/telemetry"
)

// Options are the server's request limits.
type Options struct {
	MaxBodyBytes   int64
	DefaultTimeout time.Duration
	MaxTimeout     time.Duration
	RetryAfter     time.Duration
	DrainTimeout   time.Duration
	// Connection limits (config.Server's).
	HeaderTimeout, BodyTimeout, IdleTimeout, WriteTimeout time.Duration
	MaxConnections, MaxHeaderBytes                        int
	// IgnoreUnknown: server.unknown_fields is ignore.
	IgnoreUnknown bool
}

// Server serves one model: an in-process engine through the batch
// scheduler, or a remote engine through the dispatcher.
type Server struct {
	opts  Options
	be    backend
	sched *batch.Scheduler // the local backend's, nil when remote
	// pooling is how the local engine pools an embedding.
	pooling inference.Pooling
	info    inference.Info
	m       *telemetry.Metrics
	reg     *prometheus.Registry
	// handshakeErrors counts failed TLS handshakes on the HTTP port.
	handshakeErrors prometheus.Counter
	log             *slog.Logger
	created         int64
	health          *health.Server
	gpu             *gpu.Monitor
	gpuEvery        time.Duration
	ready           atomic.Bool
	draining        atomic.Bool
	ids             atomic.Uint64
	idPrefix        string
	cache           http.Handler
	policy          *identity.Policy
	grpcOpts        []grpc.ServerOption
	// Access log: on, the fraction of successes logged; the served
	// model's version (engine.model_version) for the log and spans.
	accessLog    bool
	accessSample float64
	modelVersion string
	// tracer makes the request spans; nil: tracing off (SetTracing).
	tracer trace.Tracer
	// upstreamModel is the remote engine's own name of the model, which
	// relayed answers carry (replaced by the client's).
	upstreamModel string
}

// SetTracing makes the server record a span per request with tp (nil:
// none, the default), and the local scheduler a span per engine step
// linked to the sampled requests in it. Call before Run.
func (s *Server) SetTracing(tp trace.TracerProvider) {
	s.tracer = nil
	if tp != nil {
		s.tracer = tp.Tracer("github.com/open-autoglm/autoglm/sidecar/server")
	}
	if s.sched != nil {
		s.sched.SetTracing(tp)
	}
}

// SetIdentity makes the server verify callers (their SPIFFE ID becomes the
// tenant) and refuse those the policy does not allow: 401/403 over HTTP,
// UNAUTHENTICATED/PERMISSION_DENIED over gRPC. Call before Run.
func (s *Server) SetIdentity(p *identity.Policy) { s.policy = p }

// SetGRPCOptions adds server options (transport credentials) to the gRPC
// server. Call before Run.
func (s *Server) SetGRPCOptions(opts ...grpc.ServerOption) { s.grpcOpts = append(s.grpcOpts, opts...) }

// CacheScope is the name under which the identity policy lists who may
// use the cache endpoint (identity.Policy.Allow[CacheScope]).
const CacheScope = "/v1/cache"

// cacheGuard lets only the callers the policy allows for CacheScope reach
// the cache endpoint when callers are verified: anyone who could PUT
// there could answer other tenants' requests.
func (s *Server) cacheGuard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.policy.Enabled() {
			if _, err := s.policy.HTTP(r, CacheScope); err != nil {
				s.writeError(w, api.NewError(identityStatus(err), "permission_error", "forbidden", err.Error()))
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// AttachCache serves the filter's cache endpoint (/v1/cache/) on the HTTP
// API; with SetIdentity, only the IDs the policy allows for CacheScope
// may use it. Call before Run.
func (s *Server) AttachCache(h http.Handler) { s.cache = h }

// Registry is where the server's metrics are; other parts of the sidecar
// register theirs here too.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// New builds a server and its scheduler over eng from cfg; Run starts them.
//
// kvTokens caps the engine's KV budget (0: the engine's own).
func New(cfg config.Config, eng inference.Engine, kvTokens int, log *slog.Logger) *Server {
	sched := batch.New(batch.Config{
		MaxBatchSize:   cfg.Batch.MaxBatchSize,
		MaxBatchTokens: cfg.Batch.MaxBatchTokens,
		MaxQueueDelay:  cfg.Batch.MaxQueueDelay,
		KVTokens:       kvTokens,
		Queue:          queueConfig(cfg),
	}, eng, log)
	l := &local{sched: sched, info: sched.Info(), maxBatch: cfg.Batch.MaxBatchSize}
	if v, ok := eng.(interface{ Vocab() *grammar.Vocab }); ok {
		l.vocab = v.Vocab
	}
	s := newServer(cfg, l, sched.Info(), log)
	s.sched = sched
	s.pooling = poolingOf(cfg.Engine.Native.Pooling)
	return s
}

// NewRemote builds a server that runs generations on the OpenAI-compatible
// server c calls, with the concurrency cfg.Engine.Remote says. info names
// the served model.
func NewRemote(cfg config.Config, c *remote.Client, info inference.Info, log *slog.Logger) *Server {
	r := cfg.Engine.Remote
	d := dispatch.New(dispatch.Config{
		Concurrency: r.Concurrency, Gauge: remote.Gauge{Metric: r.ConcurrencyMetric, Label: r.ConcurrencyLabel},
		Queue: queueConfig(cfg),
	}, c, log)
	s := newServer(cfg, remoteEngine{d: d}, info, log)
	s.upstreamModel = c.Model()
	s.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "autoglm_remote_retries_total",
		Help: "Requests sent to the upstream again because a kept-alive connection failed before any response came back.",
	}, func() float64 { return float64(c.Retries()) }))
	return s
}

func queueConfig(cfg config.Config) admission.Config {
	return admission.Config{Levels: cfg.Admission.PriorityLevels, MaxQueue: cfg.Admission.MaxQueue}
}

func newServer(cfg config.Config, be backend, info inference.Info, log *slog.Logger) *Server {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(cli.Collector())
	m := telemetry.New(reg, info.Model, be.depths, func() telemetry.Load {
		l, _ := be.load()
		return l
	})
	be.setMetrics(m)
	hsErrors := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "autoglm_tls_handshake_errors_total",
		Help: "TLS handshakes on the HTTP port that failed (expired or untrusted certificates on either side, no client certificate).",
	})
	reg.MustRegister(hsErrors)
	now := time.Now()
	s := &Server{
		opts: Options{
			MaxBodyBytes: cfg.Server.MaxBodyBytes, DefaultTimeout: cfg.Admission.DefaultTimeout,
			MaxTimeout: cfg.Admission.MaxTimeout, RetryAfter: cfg.Admission.RetryAfter, DrainTimeout: cfg.Server.DrainTimeout,
			HeaderTimeout: cfg.Server.HeaderTimeout, BodyTimeout: cfg.Server.BodyTimeout, IdleTimeout: cfg.Server.IdleTimeout,
			WriteTimeout: cfg.Server.WriteTimeout, MaxConnections: cfg.Server.MaxConnections, MaxHeaderBytes: cfg.Server.MaxHeaderBytes,
			IgnoreUnknown: cfg.Server.UnknownFields == "ignore",
		},
		be: be, info: info, health: newHealth(), m: m, reg: reg, log: log, handshakeErrors: hsErrors,
		created: now.Unix(), idPrefix: strconv.FormatInt(now.UnixNano()%(1<<40), 36),
		accessLog: cfg.Log.Access, accessSample: cfg.Log.AccessSample, modelVersion: cfg.Engine.ModelVersion,
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "autoglm_ready", Help: "1 while the sidecar is ready (/readyz answers 200), 0 while warming up, draining or with a failed GPU.",
	}, func() float64 {
		if s.Ready() {
			return 1
		}
		return 0
	}))
	return s
}

// Ready reports whether the model is loaded and warmed up, the server is
// not draining and no GPU has failed.
func (s *Server) Ready() bool { return s.notReady() == "" }

// notReady says why the server is not ready, or "" when it is.
func (s *Server) notReady() string {
	switch {
	case !s.ready.Load():
		return "warming up"
	case s.draining.Load():
		return "draining"
	case s.gpu != nil:
		if err := s.gpu.Healthy(); err != nil {
			return "gpu failure: " + err.Error()
		}
	}
	return ""
}

// AttachGPU makes the server export the monitor's readings as metrics and
// ORCA named metrics, run it, and turn not-ready while a device has failed.
// Call before Run.
func (s *Server) AttachGPU(m *gpu.Monitor, every time.Duration) {
	s.gpu, s.gpuEvery = m, every
	s.reg.MustRegister(telemetry.GPUCollector{Read: m.Read})
	m.OnChange(func(err error) {
		if err != nil {
			s.log.Error("gpu failure: not ready", "err", err)
		}
		s.setServing(s.Ready())
	})
}

// operations adds health, readiness and metrics to mux.
func (s *Server) operations(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if why := s.notReady(); why != "" {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	// OpenMetrics when the scraper asks for it (exemplars: the trace of an
	// observation on the GenAI latency histograms).
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg, EnableOpenMetrics: true}))
}

// OperationsHandler serves /metrics, /healthz and /readyz alone (the
// metrics port).
func (s *Server) OperationsHandler() http.Handler {
	mux := http.NewServeMux()
	s.operations(mux)
	return mux
}

// Handler is the HTTP API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", s.chat)
	mux.HandleFunc("POST /v1/completions", s.completion)
	mux.HandleFunc("GET /v1/models", s.models)
	mux.HandleFunc("GET /v1/models/{id...}", s.model)
	mux.HandleFunc("POST /v1/embeddings", s.embeddings)
	s.operations(mux)
	if s.cache != nil {
		mux.Handle("/v1/cache/", s.cacheGuard(s.cache))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/embeddings":
			s.writeError(w, api.NewError(http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed",
				fmt.Sprintf("%s is not allowed on %s", r.Method, r.URL.Path)))
			return
		}
		s.writeError(w, api.NewError(http.StatusNotFound, "invalid_request_error", "not_found", "Unknown path "+r.URL.Path))
	})
	return mux
}

// handshakeCounter is the HTTP server's error log: it counts failed TLS
// handshakes (an expired or untrusted certificate on either side, a
// client without one) and logs every line as a warning.
type handshakeCounter struct {
	log *slog.Logger
	n   prometheus.Counter
}

func (h handshakeCounter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	if strings.Contains(line, "TLS handshake error") {
		h.n.Inc()
	}
	h.log.Warn(line)
	return len(p), nil
}

// Listeners are where Run serves; GRPC and Metrics may be nil. With TLS,
// HTTP connections are TLS (Run wraps HTTP after its connection cap, so
// that the handlers still see the TLS connection state); Metrics is plain
// HTTP, serving OperationsHandler.
type Listeners struct {
	HTTP, GRPC, Metrics net.Listener
	TLS                 *tls.Config
}

// Run serves until ctx ends, then drains: readiness turns false, new
// requests get 503, in-flight ones finish within the drain timeout, and
// Run returns nil.
func (s *Server) Run(ctx context.Context, ls Listeners) error {
	// No ReadTimeout or WriteTimeout on the server: they are whole-request
	// deadlines, and a passed read deadline cancels the request's context
	// mid-stream. Bodies get a read deadline while they are read, and
	// each response write one of its own (readBody, the writers).
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: s.opts.HeaderTimeout, IdleTimeout: s.opts.IdleTimeout,
		MaxHeaderBytes: s.opts.MaxHeaderBytes, ErrorLog: log.New(handshakeCounter{log: s.log, n: s.handshakeErrors}, "", 0)}
	if s.opts.MaxConnections > 0 {
		ls.HTTP = netutil.LimitListener(ls.HTTP, s.opts.MaxConnections)
	}
	if ls.TLS != nil {
		ls.HTTP = tls.NewListener(ls.HTTP, ls.TLS)
	}
	var gs *grpc.Server
	if ls.GRPC != nil {
		gs = s.GRPCServer()
	}
	schedCtx, stopSched := context.WithCancel(context.Background())
	defer stopSched()
	g, gctx := errgroup.WithContext(ctx)
	schedDone := make(chan struct{})
	g.Go(func() error {
		defer close(schedDone)
		return s.be.run(schedCtx)
	})
	g.Go(func() error {
		if err := hs.Serve(ls.HTTP); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http server: %w", err)
		}
		return nil
	})
	var ms *http.Server
	if ls.Metrics != nil {
		ms = &http.Server{Handler: s.OperationsHandler(), ReadHeaderTimeout: s.opts.HeaderTimeout, IdleTimeout: s.opts.IdleTimeout}
		g.Go(func() error {
			if err := ms.Serve(ls.Metrics); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("metrics server: %w", err)
			}
			return nil
		})
	}
	if gs != nil {
		g.Go(func() error {
			if err := gs.Serve(ls.GRPC); err != nil {
				return fmt.Errorf("grpc server: %w", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		if err := s.warmup(gctx); err != nil {
			if gctx.Err() != nil {
				return nil //nolint:nilerr // stopped while warming up: not a failure
			}
			return fmt.Errorf("warm-up: %w", err)
		}
		s.ready.Store(true)
		s.setServing(s.Ready())
		s.log.Info("ready", "model", s.info.Model, "engine", s.info.Description, "http", ls.HTTP.Addr().String())
		return nil
	})
	if s.gpu != nil {
		g.Go(func() error { return s.gpu.Run(gctx, s.gpuEvery) })
	}
	g.Go(func() error {
		<-gctx.Done()
		s.drain(hs, gs, stopSched)
		stopSched()
		<-schedDone
		if ms != nil { // last: scrapes see the drain
			ms.Close()
		}
		return nil
	})
	return g.Wait()
}

// drainGrace is how long requests ended at the drain timeout get to write
// their answer before their connections close.
const drainGrace = 2 * time.Second

func (s *Server) drain(hs *http.Server, gs *grpc.Server, stopSched func()) {
	s.draining.Store(true)
	s.setServing(false)
	s.be.close()
	l, queued := s.be.load()
	s.log.Info("draining", "running", l.Running, "queued", queued, "timeout", s.opts.DrainTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.DrainTimeout)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if gs != nil {
			gs.GracefulStop()
		}
	}()
	if err := hs.Shutdown(ctx); err != nil {
		// Past drain_timeout: what still runs ends with an answer, not a
		// cut connection — the scheduler stops, so a running stream ends
		// with an error event and [DONE] and a queued request gets 503
		// with Retry-After — and only then are connections closed.
		l, queued := s.be.load()
		s.log.Warn("drain timeout: ending what still runs", "running", l.Running, "queued", queued)
		stopSched()
		grace, cancelGrace := context.WithTimeout(context.Background(), drainGrace)
		if err := hs.Shutdown(grace); err != nil {
			hs.Close()
		}
		cancelGrace()
	}
	select {
	case <-done:
	case <-ctx.Done():
		if gs != nil {
			gs.Stop() // ends what GracefulStop still waits for
		}
		<-done
	}
	s.log.Info("drained")
}

// warmup runs one short generation through the whole path, retrying
// while it fails (a remote engine may still be starting), until ctx ends.
func (s *Server) warmup(ctx context.Context) error {
	wait := 100 * time.Millisecond
	for tries := 0; ; tries++ {
		err := s.warmupOnce(ctx)
		if err == nil || ctx.Err() != nil {
			return err
		}
		if tries == 0 || tries%10 == 0 {
			s.log.Warn("warm-up failed; not ready, retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
}

func (s *Server) warmupOnce(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.MaxTimeout)
	defer cancel()
	one := 1
	rd, err := s.be.start(ctx, &generation{model: s.info.Model, prompt: "warm-up", maxTokens: &one}, 0, "")
	if err != nil {
		return err
	}
	for {
		if _, err := rd.Next(); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

func (s *Server) models(w http.ResponseWriter, _ *http.Request) {
	s.writeJSON(w, http.StatusOK, api.ModelList{Object: "list", Data: []api.Model{{
		ID: s.info.Model, Object: "model", Created: s.created, OwnedBy: "autoglm", MaxModelLen: s.info.ContextLength,
	}}})
}

// model answers OpenAI's "retrieve model": the served model, or 404.
func (s *Server) model(w http.ResponseWriter, r *http.Request) {
	if id := r.PathValue("id"); id != s.info.Model {
		s.writeError(w, api.ModelNotFound(id))
		return
	}
	s.writeJSON(w, http.StatusOK, api.Model{ID: s.info.Model, Object: "model", Created: s.created, OwnedBy: "autoglm", MaxModelLen: s.info.ContextLength})
}

// orca is the current ORCA load report.
func (s *Server) orca() string {
	l, queued := s.be.load()
	if s.gpu != nil {
		util, mem := s.gpu.Load()
		return telemetry.ORCA(l.Running, queued, l.Capacity, l.KVUsed, l.KVTotal,
			telemetry.Named{Name: "gpu_utilization", Value: util}, telemetry.Named{Name: "gpu_memory_utilization", Value: mem})
	}
	return telemetry.ORCA(l.Running, queued, l.Capacity, l.KVUsed, l.KVTotal)
}

func (s *Server) nextID(prefix string) string {
	return prefix + s.idPrefix + strconv.FormatUint(s.ids.Add(1), 36)
}
