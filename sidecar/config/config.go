// Package config holds the sidecar's configuration: defaults, a strict YAML
// file (unknown fields and wrong types are errors naming the field path),
// flags that override the file, and validation that reports every problem
// at once. It is read once at start.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Config is the whole sidecar configuration.
type Config struct {
	Server    Server    `yaml:"server"`
	Engine    Engine    `yaml:"engine"`
	Admission Admission `yaml:"admission"`
	Batch     Batch     `yaml:"batch"`
	GPU       GPU       `yaml:"gpu"`
	Log       Log       `yaml:"log"`
	Cache     Cache     `yaml:"cache"`
	Identity  Identity  `yaml:"identity"`
}

// Identity is how callers are verified and authorized.
type Identity struct {
	// Mode: "" (callers are not verified; the x-autoglm-tenant header set
	// by the mesh's filter is the tenant), "spiffe" (the HTTP and gRPC
	// APIs serve mTLS with X.509 SVIDs from the SPIFFE Workload API), or
	// "xfcc" (plain text behind the co-located Envoy, which terminates
	// mTLS: the caller is the URI of x-forwarded-client-cert, trusted
	// from loopback peers only).
	Mode string `yaml:"mode"`
	// WorkloadSocket is the Workload API address (unix:///path); empty:
	// $SPIFFE_ENDPOINT_SOCKET.
	WorkloadSocket string `yaml:"workload_socket"`
	// TrustDomain admits its members when Allow is empty.
	TrustDomain string `yaml:"trust_domain"`
	// Allow lists the SPIFFE IDs that may call this model.
	Allow []string `yaml:"allow"`
}

// Cache is the response-cache endpoint (/v1/cache/{key}) that the
// proxy-wasm filter's remote tier calls; off unless redis_url is set.
type Cache struct {
	// RedisURL is redis://[user:password@]host:port[/db].
	RedisURL      string        `yaml:"redis_url"`
	Prefix        string        `yaml:"prefix"`
	MaxEntryBytes int           `yaml:"max_entry_bytes"`
	MaxTTL        time.Duration `yaml:"max_ttl"`
	Timeout       time.Duration `yaml:"timeout"`
	// Allow lists the SPIFFE IDs that may use the endpoint (the proxies
	// running the filter) when identity.mode verifies callers; required
	// then: whoever can PUT entries answers other tenants' requests.
	Allow []string `yaml:"allow"`
	// InsecureAllowUnauthenticated serves the endpoint with no identity
	// mode: anyone who reaches the port can store answers for every
	// tenant. For local development only; without it, redis_url needs
	// identity.mode.
	InsecureAllowUnauthenticated bool `yaml:"insecure_allow_unauthenticated"`
}

// GPU configures NVML telemetry and GPU-aware admission.
type GPU struct {
	// Mode is auto (use NVML when a driver is present, else CPU with one
	// log line), off, or required (fail to start without a GPU).
	Mode string `yaml:"mode"`
	// PollInterval is how often device readings are refreshed.
	PollInterval time.Duration `yaml:"poll_interval"`
	// KVBytesPerToken, when set, sizes the KV budget from free device
	// memory at start: (free - memory_reserve_bytes) / kv_bytes_per_token.
	KVBytesPerToken uint64 `yaml:"kv_bytes_per_token"`
	// MemoryReserveBytes is device memory left out of the KV budget.
	MemoryReserveBytes uint64 `yaml:"memory_reserve_bytes"`
	// IgnoredXids are Xids that do not make a device unhealthy; empty means
	// the application-fault Xids 13, 31, 43, 45, 68, 109.
	IgnoredXids []uint64 `yaml:"ignored_xids"`
}

// Server configures the listeners and the request limits.
type Server struct {
	// HTTPAddr serves the OpenAI-compatible API, health, readiness and metrics.
	HTTPAddr string `yaml:"http_addr"`
	// GRPCAddr serves the gRPC API; empty disables it.
	GRPCAddr string `yaml:"grpc_addr"`
	// MetricsAddr, when set, also serves /metrics, /healthz and /readyz
	// on a port of their own, plain HTTP even with mTLS on the APIs: the
	// port a Prometheus outside the mesh scrapes (Istio's STRICT mTLS
	// excludes it by a port-level exception).
	MetricsAddr string `yaml:"metrics_addr"`
	// MaxBodyBytes bounds request bodies; larger ones get 413.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// DrainTimeout bounds the wait for in-flight requests on SIGTERM.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// Connection limits: a request's headers must arrive within
	// HeaderTimeout and its body within BodyTimeout; a keep-alive
	// connection idle for IdleTimeout is closed; a response write (an SSE
	// event included) that makes no progress for WriteTimeout ends the
	// response (a long stream that is read is never cut); at most
	// MaxConnections are open (more wait to be accepted); request headers
	// are at most MaxHeaderBytes (431 past it).
	HeaderTimeout  time.Duration `yaml:"header_timeout"`
	BodyTimeout    time.Duration `yaml:"body_timeout"`
	IdleTimeout    time.Duration `yaml:"idle_timeout"`
	WriteTimeout   time.Duration `yaml:"write_timeout"`
	MaxConnections int           `yaml:"max_connections"`
	MaxHeaderBytes int           `yaml:"max_header_bytes"`
	// UnknownFields is what a request member the API does not define gets:
	// "ignore" (the default, as vLLM: the request is served, with a
	// Warning header naming them; a remote engine is sent them) or
	// "reject" (400 naming the first).
	UnknownFields string `yaml:"unknown_fields"`
}

// Engine chooses and shapes the inference engine.
type Engine struct {
	// Kind is the engine: "native" (the default) the embedded CPU engine
	// over a GGUF model, "remote" an OpenAI-compatible server (vLLM,
	// SGLang, llama.cpp), "test" the deterministic test engine.
	Kind string `yaml:"kind"`
	// Model is the name served in the API's "model" field; empty: the
	// GGUF's general.name (native), engine.remote.model (remote),
	// autoglm-test (test).
	Model string `yaml:"model"`
	// ModelVersion is the version of the model this replica serves (the
	// version label its pods carry, v1, v2…): in access logs and spans.
	ModelVersion string       `yaml:"model_version"`
	Test         TestEngine   `yaml:"test"`
	Native       NativeEngine `yaml:"native"`
	Remote       RemoteEngine `yaml:"remote"`
}

// NativeEngine is the embedded CPU engine; see inference/native.
type NativeEngine struct {
	// ModelPath is a GGUF file; empty means the built-in tiny model
	// (random weights, generated into the user's cache on first use).
	ModelPath string `yaml:"model_path"`
	// Slots is how many sequences hold a KV cache at once.
	Slots int `yaml:"slots"`
	// ContextLength caps the model's context (0: the model's own).
	ContextLength int `yaml:"context_length"`
	// KVTokens is the KV-cache budget in positions shared by all slots
	// (0: every slot's whole context).
	KVTokens int `yaml:"kv_tokens"`
	// Pooling is how /v1/embeddings pools a prompt's final hidden states:
	// "mean" (the default) over every position, or "last" (the last
	// position's, for decoder models trained to embed that way).
	Pooling string `yaml:"pooling"`
}

// RemoteEngine points at an OpenAI-compatible server; see inference/remote.
type RemoteEngine struct {
	// URL is the server's base URL, e.g. http://127.0.0.1:8000.
	URL string `yaml:"url"`
	// Model is the upstream's model name; empty means engine.model.
	Model string `yaml:"model"`
	// APIKeyEnv names an environment variable holding a bearer token.
	APIKeyEnv string `yaml:"api_key_env"`
	// Concurrency is the most generations running upstream at once: the
	// engine's best batch size (vLLM: --max-num-seqs). 0 reads it from
	// concurrency_metric on the upstream's /metrics.
	Concurrency int `yaml:"concurrency"`
	// ConcurrencyMetric is the gauge read when concurrency is 0, and
	// ConcurrencyLabel, when set, the label of it that holds the number.
	ConcurrencyMetric string `yaml:"concurrency_metric"`
	ConcurrencyLabel  string `yaml:"concurrency_label"`
	// ContextLength is reported in /v1/models (0: not reported); the
	// upstream enforces its own.
	ContextLength int `yaml:"context_length"`
	// ServerID, when set, makes calls to the (https) upstream mTLS with
	// the sidecar's SVID from the Workload API (identity.workload_socket
	// or $SPIFFE_ENDPOINT_SOCKET), and requires the upstream to present
	// this SPIFFE ID.
	ServerID string `yaml:"server_id"`
}

// TestEngine shapes the test engine; see inference/testengine.
type TestEngine struct {
	Slots         int           `yaml:"slots"`
	ContextLength int           `yaml:"context_length"`
	StepCost      time.Duration `yaml:"step_cost"`
	SeqCost       time.Duration `yaml:"seq_cost"`
	TokenCost     time.Duration `yaml:"token_cost"`
	EOSAfter      int           `yaml:"eos_after"`
}

// Admission configures the request queue.
type Admission struct {
	// PriorityLevels is the number of x-autoglm-priority levels (0 highest).
	PriorityLevels int `yaml:"priority_levels"`
	// MaxQueue bounds the waiting requests; beyond it requests get 429.
	MaxQueue int `yaml:"max_queue"`
	// DefaultTimeout is the deadline of requests that bring none.
	DefaultTimeout time.Duration `yaml:"default_timeout"`
	// MaxTimeout caps any deadline a request asks for.
	MaxTimeout time.Duration `yaml:"max_timeout"`
	// RetryAfter is the Retry-After hint sent with 429 responses.
	RetryAfter time.Duration `yaml:"retry_after"`
}

// Batch configures continuous batching.
type Batch struct {
	MaxBatchSize   int           `yaml:"max_batch_size"`
	MaxBatchTokens int           `yaml:"max_batch_tokens"`
	MaxQueueDelay  time.Duration `yaml:"max_queue_delay"`
}

// Log configures structured logging.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is json or text.
	Format string `yaml:"format"`
	// Access turns on one access-log line per request at info (default
	// on); AccessSample is the fraction of requests logged (default 1;
	// failed requests are always logged).
	Access       bool    `yaml:"access"`
	AccessSample float64 `yaml:"access_sample"`
}

// Default returns the configuration used where the file and flags are silent.
func Default() Config {
	return Config{
		Server: Server{HTTPAddr: ":8080", GRPCAddr: ":9090", MaxBodyBytes: 4 << 20, DrainTimeout: 30 * time.Second,
			HeaderTimeout: 10 * time.Second, BodyTimeout: 30 * time.Second, IdleTimeout: 90 * time.Second, WriteTimeout: 30 * time.Second,
			MaxConnections: 4096, MaxHeaderBytes: 64 << 10, UnknownFields: "ignore"},
		Engine: Engine{Kind: "native", Test: TestEngine{
			Slots: 64, ContextLength: 4096, StepCost: 2 * time.Millisecond, SeqCost: 50 * time.Microsecond,
		}, Native: NativeEngine{Slots: 16, ContextLength: 2048}, Remote: RemoteEngine{ConcurrencyMetric: "autoglm_max_running_sequences"}},
		Admission: Admission{PriorityLevels: 4, MaxQueue: 256, DefaultTimeout: 5 * time.Minute, MaxTimeout: 30 * time.Minute, RetryAfter: time.Second},
		Batch:     Batch{MaxBatchSize: 32, MaxBatchTokens: 2048},
		GPU:       GPU{Mode: "auto", PollInterval: 2 * time.Second},
		Log:       Log{Level: "info", Format: "json", Access: true, AccessSample: 1},
		Cache:     Cache{Prefix: "autoglm:", MaxEntryBytes: 1 << 20, MaxTTL: time.Hour, Timeout: 100 * time.Millisecond},
	}
}

// Validate reports every invalid field, joined, each with its path.
func (c *Config) Validate() error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	if c.Server.HTTPAddr == "" {
		bad("server.http_addr", "is required")
	}
	if c.Server.MaxBodyBytes < 1024 {
		bad("server.max_body_bytes", "must be at least 1024, got %d", c.Server.MaxBodyBytes)
	}
	if c.Server.UnknownFields != "ignore" && c.Server.UnknownFields != "reject" {
		bad("server.unknown_fields", "must be ignore or reject, got %q", c.Server.UnknownFields)
	}
	if c.Server.DrainTimeout < 0 {
		bad("server.drain_timeout", "must not be negative, got %s", c.Server.DrainTimeout)
	}
	switch c.Engine.Kind {
	case "test":
		t := c.Engine.Test
		if t.Slots < 1 {
			bad("engine.test.slots", "must be at least 1, got %d", t.Slots)
		}
		if t.ContextLength < 16 {
			bad("engine.test.context_length", "must be at least 16, got %d", t.ContextLength)
		}
		for _, d := range []struct {
			path string
			v    time.Duration
		}{{"engine.test.step_cost", t.StepCost}, {"engine.test.seq_cost", t.SeqCost}, {"engine.test.token_cost", t.TokenCost}} {
			if d.v < 0 {
				bad(d.path, "must not be negative, got %s", d.v)
			}
		}
		if t.EOSAfter < 0 {
			bad("engine.test.eos_after", "must not be negative, got %d", t.EOSAfter)
		}
	case "native":
		n := c.Engine.Native
		if n.Slots < 1 || n.Slots > 1024 {
			bad("engine.native.slots", "must be 1..1024, got %d", n.Slots)
		}
		if n.ContextLength < 0 {
			bad("engine.native.context_length", "must not be negative, got %d", n.ContextLength)
		}
		if n.KVTokens < 0 {
			bad("engine.native.kv_tokens", "must not be negative, got %d", n.KVTokens)
		}
		if n.Pooling != "" && n.Pooling != "mean" && n.Pooling != "last" {
			bad("engine.native.pooling", "must be mean or last, got %q", n.Pooling)
		}
		if n.ModelPath != "" {
			switch st, err := os.Stat(n.ModelPath); {
			case errors.Is(err, fs.ErrNotExist):
				bad("engine.native.model_path", "%s: no such file", n.ModelPath)
			case err != nil:
				bad("engine.native.model_path", "%v", err)
			case st.IsDir():
				bad("engine.native.model_path", "%s is a directory, not a GGUF file", n.ModelPath)
			}
		}
	case "remote":
		r := c.Engine.Remote
		if u, err := url.Parse(r.URL); r.URL == "" {
			bad("engine.remote.url", "is required when engine.kind is remote")
		} else if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("engine.remote.url", "must be an absolute http(s) URL, got %q", r.URL)
		}
		if r.Concurrency < 0 || r.Concurrency > 4096 {
			bad("engine.remote.concurrency", "must be 0 (read from the upstream) to 4096, got %d", r.Concurrency)
		}
		if r.Concurrency == 0 && r.ConcurrencyMetric == "" {
			bad("engine.remote.concurrency_metric", "is required when engine.remote.concurrency is 0")
		}
		if r.ContextLength < 0 {
			bad("engine.remote.context_length", "must not be negative, got %d", r.ContextLength)
		}
		if r.APIKeyEnv != "" && os.Getenv(r.APIKeyEnv) == "" {
			bad("engine.remote.api_key_env", "environment variable %s is empty or unset", r.APIKeyEnv)
		}
	default:
		bad("engine.kind", "must be \"test\", \"native\" or \"remote\", got %q", c.Engine.Kind)
	}
	if c.Engine.Kind == "remote" && c.Engine.Model == "" && c.Engine.Remote.Model == "" {
		bad("engine.model", "is required with engine.kind remote (or engine.remote.model)")
	}
	if r := c.Engine.Remote; c.Engine.Kind == "remote" && r.ServerID != "" {
		if _, err := spiffeid.FromString(r.ServerID); err != nil {
			bad("engine.remote.server_id", "%q is not a SPIFFE ID: %v", r.ServerID, err)
		}
		if !strings.HasPrefix(r.URL, "https://") {
			bad("engine.remote.url", "must be https:// when engine.remote.server_id is set, got %q", r.URL)
		}
	}
	switch id := c.Identity; id.Mode {
	case "":
	case "spiffe", "xfcc":
		if id.TrustDomain == "" && len(id.Allow) == 0 {
			bad("identity.allow", "or identity.trust_domain is required when identity.mode is %s", id.Mode)
		}
		if id.TrustDomain != "" {
			if _, err := spiffeid.TrustDomainFromString(id.TrustDomain); err != nil {
				bad("identity.trust_domain", "%v", err)
			}
		}
		for i, a := range id.Allow {
			if _, err := spiffeid.FromString(a); err != nil {
				bad(fmt.Sprintf("identity.allow[%d]", i), "%q is not a SPIFFE ID: %v", a, err)
			}
		}
	default:
		bad("identity.mode", `must be "", "spiffe" or "xfcc", got %q`, id.Mode)
	}
	if k := c.Cache; k.RedisURL != "" {
		if !strings.HasPrefix(k.RedisURL, "redis://") && !strings.HasPrefix(k.RedisURL, "rediss://") && !strings.HasPrefix(k.RedisURL, "unix://") {
			bad("cache.redis_url", "must be a redis://, rediss:// or unix:// URL, got %q", k.RedisURL)
		}
		if k.MaxEntryBytes < 1024 {
			bad("cache.max_entry_bytes", "must be at least 1024, got %d", k.MaxEntryBytes)
		}
		if k.MaxTTL < time.Second {
			bad("cache.max_ttl", "must be at least 1s, got %s", k.MaxTTL)
		}
		if k.Timeout <= 0 {
			bad("cache.timeout", "must be positive, got %s", k.Timeout)
		}
		switch {
		case c.Identity.Mode != "" && len(k.Allow) == 0:
			bad("cache.allow", "is required when identity.mode is set: the SPIFFE IDs of the proxies that run the filter")
		case c.Identity.Mode == "" && !k.InsecureAllowUnauthenticated:
			bad("cache.redis_url", "the cache endpoint needs identity.mode (spiffe or xfcc) to enforce cache.allow: without it anyone can store answers for other tenants (for local development only: cache.insecure_allow_unauthenticated: true)")
		case c.Identity.Mode == "" && len(k.Allow) > 0:
			bad("cache.allow", "needs identity.mode (spiffe or xfcc): without it no caller is verified and the list cannot be enforced")
		case c.Identity.Mode != "" && k.InsecureAllowUnauthenticated:
			bad("cache.insecure_allow_unauthenticated", "contradicts identity.mode %s: cache.allow is enforced", c.Identity.Mode)
		}
		for i, a := range k.Allow {
			if _, err := spiffeid.FromString(a); err != nil {
				bad(fmt.Sprintf("cache.allow[%d]", i), "%q is not a SPIFFE ID: %v", a, err)
			}
		}
	}
	sv := c.Server
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"header_timeout", sv.HeaderTimeout}, {"body_timeout", sv.BodyTimeout}, {"idle_timeout", sv.IdleTimeout}, {"write_timeout", sv.WriteTimeout}} {
		if d.v <= 0 {
			bad("server."+d.name, "must be positive, got %s", d.v)
		}
	}
	if sv.MaxConnections < 1 {
		bad("server.max_connections", "must be at least 1, got %d", sv.MaxConnections)
	}
	if sv.MaxHeaderBytes < 4096 || sv.MaxHeaderBytes > 1<<20 {
		bad("server.max_header_bytes", "must be 4096..1048576, got %d", sv.MaxHeaderBytes)
	}
	a := c.Admission
	if a.PriorityLevels < 1 || a.PriorityLevels > 16 {
		bad("admission.priority_levels", "must be 1..16, got %d", a.PriorityLevels)
	}
	if a.MaxQueue < 1 {
		bad("admission.max_queue", "must be at least 1, got %d", a.MaxQueue)
	}
	if a.DefaultTimeout <= 0 {
		bad("admission.default_timeout", "must be positive, got %s", a.DefaultTimeout)
	}
	if a.MaxTimeout < a.DefaultTimeout {
		bad("admission.max_timeout", "must be at least default_timeout (%s), got %s", a.DefaultTimeout, a.MaxTimeout)
	}
	if a.RetryAfter < time.Second {
		bad("admission.retry_after", "must be at least 1s, got %s", a.RetryAfter)
	}
	b := c.Batch
	if b.MaxBatchSize < 1 {
		bad("batch.max_batch_size", "must be at least 1, got %d", b.MaxBatchSize)
	}
	if b.MaxBatchTokens < b.MaxBatchSize {
		bad("batch.max_batch_tokens", "must be at least max_batch_size (%d), got %d", b.MaxBatchSize, b.MaxBatchTokens)
	}
	if b.MaxQueueDelay < 0 {
		bad("batch.max_queue_delay", "must not be negative, got %s", b.MaxQueueDelay)
	}
	switch c.GPU.Mode {
	case "auto", "off", "required":
	default:
		bad("gpu.mode", "must be auto, off or required, got %q", c.GPU.Mode)
	}
	if c.GPU.PollInterval < 100*time.Millisecond {
		bad("gpu.poll_interval", "must be at least 100ms, got %s", c.GPU.PollInterval)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	if !(c.Log.AccessSample >= 0 && c.Log.AccessSample <= 1) {
		bad("log.access_sample", "must be between 0 and 1, got %v", c.Log.AccessSample)
	}
	if c.Log.Format != "json" && c.Log.Format != "text" {
		bad("log.format", "must be json or text, got %q", c.Log.Format)
	}
	return errors.Join(errs...)
}
