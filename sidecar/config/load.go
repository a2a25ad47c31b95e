package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"

	"github.com/open-autoglm/autoglm/internal/strictyaml"
)

// Parse decodes YAML over c strictly: every unknown field and every value
// of the wrong type is reported with its path and line.
func Parse(data []byte, c *Config) error { return strictyaml.Decode(data, c) }

// Load reads the file at path (if any) over the defaults, applies the
// flags that were set, and validates the result.
func Load(path string, apply func(*Config)) (Config, error) {
	c := Default()
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("read config: %w", err)
		}
		if err := Parse(data, &c); err != nil {
			return c, fmt.Errorf("config %s:\n%w", path, err)
		}
	}
	if apply != nil {
		apply(&c)
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return c, nil
}

// Flags registers the flags that override the file on fs. The returned
// function applies, in command-line order, only the flags that were given.
func Flags(fs *flag.FlagSet) func(*Config) {
	var given []func(*Config)
	str := func(name, usage string, field func(*Config) *string) {
		fs.Func(name, usage, func(v string) error {
			given = append(given, func(c *Config) { *field(c) = v })
			return nil
		})
	}
	num := func(name, usage string, field func(*Config) *int) {
		fs.Func(name, usage, func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return errors.New("must be an integer")
			}
			given = append(given, func(c *Config) { *field(c) = n })
			return nil
		})
	}
	d := Default()
	str("http-addr", "HTTP listen address (server.http_addr, default "+d.Server.HTTPAddr+")", func(c *Config) *string { return &c.Server.HTTPAddr })
	str("grpc-addr", "gRPC listen address, empty to disable (server.grpc_addr, default "+d.Server.GRPCAddr+")", func(c *Config) *string { return &c.Server.GRPCAddr })
	str("metrics-addr", "plain-HTTP address of /metrics, /healthz and /readyz alone, for a scraper outside the mesh; empty: none (server.metrics_addr)", func(c *Config) *string { return &c.Server.MetricsAddr })
	str("engine", "inference engine (engine.kind, default "+d.Engine.Kind+")", func(c *Config) *string { return &c.Engine.Kind })
	str("model", "served model name (engine.model; default: the model's own name)", func(c *Config) *string { return &c.Engine.Model })
	str("model-version", "version of the model this replica serves, in access logs and spans (engine.model_version)", func(c *Config) *string { return &c.Engine.ModelVersion })
	str("native-model", "GGUF model for -engine native; empty: the built-in tiny model (engine.native.model_path)", func(c *Config) *string { return &c.Engine.Native.ModelPath })
	str("remote-url", "OpenAI-compatible server to run generations on, with -engine remote (engine.remote.url)", func(c *Config) *string { return &c.Engine.Remote.URL })
	num("remote-concurrency", "generations running upstream at once, 0 to read it from the upstream (engine.remote.concurrency)", func(c *Config) *int { return &c.Engine.Remote.Concurrency })
	num("max-batch-size", "sequences per step (batch.max_batch_size)", func(c *Config) *int { return &c.Batch.MaxBatchSize })
	num("max-queue", "waiting requests before 429 (admission.max_queue)", func(c *Config) *int { return &c.Admission.MaxQueue })
	str("log-level", "debug, info, warn or error (log.level)", func(c *Config) *string { return &c.Log.Level })
	str("cache-redis", "Redis URL behind the /v1/cache endpoint of the filter's remote tier; empty: off (cache.redis_url)", func(c *Config) *string { return &c.Cache.RedisURL })
	str("log-format", "json or text (log.format)", func(c *Config) *string { return &c.Log.Format })
	return func(c *Config) {
		for _, set := range given {
			set(c)
		}
	}
}
