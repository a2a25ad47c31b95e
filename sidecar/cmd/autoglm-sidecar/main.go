// Command autoglm-sidecar serves a model next to it in the pod: the
// OpenAI-compatible HTTP API, the gRPC API, metrics and load reports.
package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/redis/go-redis/v9"
	"github.com/spiffe/go-spiffe/v2/spiffegrpc/grpccredentials"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"go.opentelemetry.io/otel"
	"google.golang.org/grpc"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/gguf"
	"github.com/open-autoglm/autoglm/inference/gpu"
	"github.com/open-autoglm/autoglm/inference/llama"
	"github.com/open-autoglm/autoglm/inference/native"
	"github.com/open-autoglm/autoglm/inference/remote"
	"github.com/open-autoglm/autoglm/inference/testengine"
	"github.com/open-autoglm/autoglm/internal/cli"
	"github.com/open-autoglm/autoglm/internal/tracing"
	"github.com/open-autoglm/autoglm/sidecar/cache"
	"github.com/open-autoglm/autoglm/sidecar/config"
	"github.com/open-autoglm/autoglm/sidecar/identity"
	"github.com/open-autoglm/autoglm/sidecar/server"
)

func main() {
	args := os.Args[1:]
	if ok, code := cli.Command("autoglm-sidecar", args, os.Stdout); ok {
		os.Exit(code)
	}
	if len(args) > 0 {
		switch {
		case args[0] == "serve":
			args = args[1:]
		case args[0] == "gpus":
			if len(args) > 1 {
				fmt.Fprintf(os.Stderr, "autoglm-sidecar gpus: takes no arguments, got %q\n", args[1:])
				os.Exit(2)
			}
			os.Exit(gpus())
		case args[0] == "quantize":
			os.Exit(quantize(args[1:]))
		case cli.IsHelp(args[0]):
			usage(os.Stdout)
			os.Exit(0)
		case args[0] != "" && args[0][0] != '-':
			fmt.Fprintf(os.Stderr, "autoglm-sidecar: unknown command %q\n", args[0])
			usage(os.Stderr)
			os.Exit(2)
		}
	}
	os.Exit(run(args))
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  autoglm-sidecar [serve] [flags]        serve the model (flags: autoglm-sidecar serve -h)
  autoglm-sidecar quantize IN.gguf OUT.gguf [TYPE]  convert a GGUF model's float matrices to TYPE: Q8_0 (default), Q4_0 or Q4_K_M
  autoglm-sidecar gpus                   print what NVML reports, as JSON
  autoglm-sidecar version                print the build
Exit codes: 0 done, 1 failed, 2 bad usage or configuration.
`)
}

// gpus prints what NVML reports, as JSON: `autoglm-sidecar gpus`.
func gpus() int {
	m, err := gpu.Open(nvml.New(), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "autoglm-sidecar gpus:", err)
		return 1
	}
	defer m.Close()
	out, _ := json.MarshalIndent(struct {
		Devices []gpu.Reading `json:"devices"`
		Healthy string        `json:"health"`
	}{m.Read(), fmt.Sprint(m.Healthy())}, "", "  ")
	fmt.Println(string(out))
	return 0
}

// quantize converts a GGUF model's F32/F16/BF16 matrices to Q8_0, Q4_0 or
// the Q4_K_M mix: `autoglm-sidecar quantize IN.gguf OUT.gguf [TYPE]`.
func quantize(args []string) int {
	if len(args) != 2 && len(args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: autoglm-sidecar quantize IN.gguf OUT.gguf [Q8_0|Q4_0|Q4_K_M]")
		return 2
	}
	recipe := "Q8_0"
	if len(args) == 3 {
		recipe = args[2]
	}
	if !slices.Contains(llama.Recipes, recipe) {
		fmt.Fprintf(os.Stderr, "autoglm-sidecar quantize: unknown type %q (supported: %s)\n", recipe, strings.Join(llama.Recipes, ", "))
		return 2
	}
	in, err := gguf.Open(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "autoglm-sidecar quantize:", err)
		return 1
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(args[1]), ".quantize-*")
	var pw *progressWriter
	if err == nil {
		defer os.Remove(tmp.Name())
		fmt.Fprintf(os.Stderr, "quantizing %s to %s into %s\n", args[0], recipe, args[1])
		pw = &progressWriter{w: tmp, start: time.Now(), every: 256 << 20}
		w := bufio.NewWriterSize(pw, 1<<20)
		if err = llama.Quantize(in, w, recipe); err == nil {
			err = w.Flush()
		}
		// A model file as any other: readable by all (CreateTemp makes 0600).
		if err == nil {
			err = tmp.Chmod(0o644)
		}
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp.Name(), args[1])
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "autoglm-sidecar quantize:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "wrote %s: %.1f MiB in %.1fs\n", args[1], float64(pw.n)/(1<<20), time.Since(pw.start).Seconds())
	return 0
}

// progressWriter counts what goes through it and says so on stderr every
// `every` bytes.
type progressWriter struct {
	w       io.Writer
	n, next int64
	every   int64
	start   time.Time
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.n += int64(n)
	if p.n >= p.next+p.every {
		p.next = p.n
		fmt.Fprintf(os.Stderr, "  %.0f MiB written (%.0fs)\n", float64(p.n)/(1<<20), time.Since(p.start).Seconds())
	}
	return n, err
}

func run(args []string) int {
	fs := flag.NewFlagSet("autoglm-sidecar", flag.ContinueOnError)
	path := fs.String("config", "", "YAML configuration file (see docs/sidecar-config.md)")
	apply := config.Flags(fs)
	if code, ok := cli.Parse(fs, args); !ok {
		return code
	}
	cfg, err := config.Load(*path, apply)
	if err != nil {
		fmt.Fprintln(os.Stderr, "autoglm-sidecar:", err)
		return 2
	}
	log := newLogger(cfg.Log)
	shutdownTracing, tracingOn, err := tracing.Setup(context.Background(), "autoglm-sidecar", cli.Build().Version)
	if err != nil {
		fmt.Fprintln(os.Stderr, "autoglm-sidecar:", err)
		return 2
	}
	if tracingOn {
		log.Info("tracing: exporting spans over OTLP (OTEL_* environment)")
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := shutdownTracing(ctx); err != nil {
				log.Warn("tracing: flushing spans at exit", "err", err)
			}
		}()
	}
	// The SVID source, when the APIs serve mTLS or the remote engine is
	// called with it.
	var source *workloadapi.X509Source
	if cfg.Identity.Mode == "spiffe" || (cfg.Engine.Kind == "remote" && cfg.Engine.Remote.ServerID != "") {
		socket := cmp.Or(cfg.Identity.WorkloadSocket, os.Getenv("SPIFFE_ENDPOINT_SOCKET"))
		if socket == "" {
			fmt.Fprintln(os.Stderr, "autoglm-sidecar: identity.workload_socket: required for mTLS (or set SPIFFE_ENDPOINT_SOCKET)")
			return 2
		}
		log.Info("waiting for an X.509 SVID from the Workload API", "socket", socket)
		wctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		source, err = workloadapi.NewX509Source(wctx, workloadapi.WithClientOptions(workloadapi.WithAddr(socket)))
		cancel()
		if err != nil {
			log.Error("workload api", "socket", socket, "err", err)
			return 1
		}
		defer source.Close()
		if svid, err := source.GetX509SVID(); err == nil {
			log.Info("svid", "spiffe_id", svid.ID.String(), "expires", svid.Certificates[0].NotAfter)
		}
	}
	var eng inference.Engine
	var client *remote.Client
	if cfg.Engine.Kind == "remote" {
		if client, err = newRemote(cfg.Engine, source); err != nil {
			fmt.Fprintln(os.Stderr, "autoglm-sidecar: engine.remote.", err)
			return 2
		}
		log.Info("remote engine", "url", cfg.Engine.Remote.URL, "upstream_model", client.Model(), "model", cfg.Engine.Model,
			"concurrency", cfg.Engine.Remote.Concurrency)
	} else {
		if eng, err = newEngine(cfg.Engine); err != nil {
			fmt.Fprintln(os.Stderr, "autoglm-sidecar:", err)
			return 1
		}
		info := eng.Info()
		log.Info("engine loaded", "engine", cfg.Engine.Kind, "model", info.Model, "description", info.Description,
			"context_length", info.ContextLength, "slots", info.Slots)
		if cfg.Engine.Kind == "test" {
			log.Warn("serving the TEST ENGINE: deterministic pseudo-text, not a language model")
		}
	}

	mon, kvTokens, err := openGPU(cfg.GPU, log)
	if err != nil {
		log.Error("gpu", "err", err)
		return 1
	}
	if mon != nil {
		defer mon.Close()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var ls server.Listeners
	if ls.HTTP, err = net.Listen("tcp", cfg.Server.HTTPAddr); err != nil {
		log.Error("listen http", "err", err)
		return 1
	}
	if cfg.Server.GRPCAddr != "" {
		if ls.GRPC, err = net.Listen("tcp", cfg.Server.GRPCAddr); err != nil {
			log.Error("listen grpc", "err", err)
			return 1
		}
	}
	if cfg.Server.MetricsAddr != "" {
		if ls.Metrics, err = net.Listen("tcp", cfg.Server.MetricsAddr); err != nil {
			log.Error("listen metrics", "err", err)
			return 1
		}
	}
	log.Info("listening", "http", ls.HTTP.Addr().String(), "grpc", cfg.Server.GRPCAddr, "metrics", cfg.Server.MetricsAddr)
	var srv *server.Server
	if client != nil {
		r := cfg.Engine.Remote
		srv = server.NewRemote(cfg, client, inference.Info{Model: cmp.Or(cfg.Engine.Model, client.Model()), Description: "remote " + r.URL, ContextLength: r.ContextLength}, log)
	} else {
		srv = server.New(cfg, eng, kvTokens, log)
	}
	if tracingOn {
		srv.SetTracing(otel.GetTracerProvider())
		if client != nil {
			client.SetTracing(otel.GetTracerProvider())
		}
	}
	if mon != nil {
		srv.AttachGPU(mon, cfg.GPU.PollInterval)
	}
	if k := cfg.Cache; k.RedisURL != "" {
		opts, err := redis.ParseURL(k.RedisURL)
		if err != nil {
			fmt.Fprintln(os.Stderr, "autoglm-sidecar: cache.redis_url:", err)
			return 2
		}
		rc := redis.NewClient(opts)
		defer rc.Close()
		srv.AttachCache(cache.Handler(cache.Redis{C: rc, Prefix: k.Prefix},
			cache.Config{MaxEntryBytes: k.MaxEntryBytes, MaxTTL: k.MaxTTL, Timeout: k.Timeout}, srv.Registry()))
		log.Info("cache endpoint", "redis", opts.Addr, "prefix", k.Prefix)
		if k.InsecureAllowUnauthenticated {
			log.Warn("INSECURE: the cache endpoint accepts every caller (cache.insecure_allow_unauthenticated): anyone who reaches this port can store answers for every tenant; for local development only")
		}
	}
	if id := cfg.Identity; id.Mode != "" {
		policy := &identity.Policy{Mode: id.Mode, Denied: identity.NewDenied(srv.Registry())}
		if id.TrustDomain != "" {
			policy.TrustDomain = spiffeid.RequireTrustDomainFromString(id.TrustDomain)
		}
		policy.Allow = map[string][]spiffeid.ID{}
		for _, a := range id.Allow {
			policy.Allow["*"] = append(policy.Allow["*"], spiffeid.RequireFromString(a))
		}
		if len(policy.Allow["*"]) == 0 {
			delete(policy.Allow, "*") // the trust domain's members
		}
		// The cache endpoint has its own list (validated: required).
		policy.Allow[server.CacheScope] = []spiffeid.ID{}
		for _, a := range cfg.Cache.Allow {
			policy.Allow[server.CacheScope] = append(policy.Allow[server.CacheScope], spiffeid.RequireFromString(a))
		}
		if id.Mode == "spiffe" {
			// Every caller with an SVID of the bundle's trust domains
			// completes the handshake; the policy then answers 403 or
			// PERMISSION_DENIED (counted) to those it does not allow.
			ls.TLS = tlsconfig.MTLSServerConfig(source, source, tlsconfig.AuthorizeAny())
			srv.SetGRPCOptions(grpc.Creds(grpccredentials.MTLSServerCredentials(source, source, tlsconfig.AuthorizeAny())))
		}
		srv.SetIdentity(policy)
	}
	if err := srv.Run(ctx, ls); err != nil {
		log.Error("stopped", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

// openGPU opens NVML as cfg.Mode says. With no driver in auto mode it
// logs one line and returns no monitor: the sidecar runs on the CPU.
func openGPU(cfg config.GPU, log *slog.Logger) (*gpu.Monitor, int, error) {
	if cfg.Mode == "off" {
		return nil, 0, nil
	}
	m, err := gpu.Open(nvml.New(), cfg.IgnoredXids)
	if errors.Is(err, gpu.ErrNoDriver) && cfg.Mode == "auto" {
		log.Info("no NVIDIA GPU: GPU telemetry off, running on the CPU", "reason", err.Error())
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	for _, r := range m.Read() {
		log.Info("gpu", "index", r.Index, "name", r.Name, "uuid", r.UUID, "memory_total", r.MemoryTotal, "memory_free", r.MemoryFree)
	}
	kv := 0
	if cfg.KVBytesPerToken > 0 {
		if kv = gpu.KVTokens(m.FreeMemory(), cfg.MemoryReserveBytes, cfg.KVBytesPerToken); kv == 0 {
			m.Close()
			return nil, 0, fmt.Errorf("gpu.kv_bytes_per_token: %d bytes free, %d reserved: no room for a KV cache", m.FreeMemory(), cfg.MemoryReserveBytes)
		}
		log.Info("kv budget from free gpu memory", "tokens", kv, "free_bytes", m.FreeMemory(), "reserve_bytes", cfg.MemoryReserveBytes)
	}
	return m, kv, nil
}

func newRemote(c config.Engine, source *workloadapi.X509Source) (*remote.Client, error) {
	r := c.Remote
	model := r.Model
	if model == "" {
		model = c.Model
	}
	key := ""
	if r.APIKeyEnv != "" {
		key = os.Getenv(r.APIKeyEnv)
	}
	var tlsCfg *tls.Config
	if r.ServerID != "" {
		// mTLS with this sidecar's SVID; the upstream must be r.ServerID.
		tlsCfg = tlsconfig.MTLSClientConfig(source, source, tlsconfig.AuthorizeID(spiffeid.RequireFromString(r.ServerID)))
	}
	return remote.New(remote.Config{URL: r.URL, Model: model, APIKey: key, TLS: tlsCfg})
}

func newEngine(c config.Engine) (inference.Engine, error) {
	if c.Kind == "native" {
		n := c.Native
		path := n.ModelPath
		if path == "" {
			dir, err := os.UserCacheDir()
			if err != nil {
				dir = os.TempDir()
			}
			if path, err = native.Builtin(filepath.Join(dir, "autoglm")); err != nil {
				return nil, fmt.Errorf("built-in model: %w", err)
			}
		}
		return native.Open(path, native.Config{Model: c.Model, Slots: n.Slots, ContextLength: n.ContextLength, KVTokens: n.KVTokens})
	}
	t := c.Test
	return testengine.New(testengine.Config{
		Model: c.Model, Slots: t.Slots, ContextLength: t.ContextLength,
		StepCost: t.StepCost, SeqCost: t.SeqCost, TokenCost: t.TokenCost, EOSAfter: t.EOSAfter,
	}), nil
}

func newLogger(c config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(tracing.LogHandler(slog.NewTextHandler(os.Stderr, opts)))
	}
	return slog.New(tracing.LogHandler(slog.NewJSONHandler(os.Stderr, opts)))
}
