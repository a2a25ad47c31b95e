// Command autoglm-sidecar serves a model next to it in the pod: the
// OpenAI-compatible HTTP API, the gRPC API, metrics and load reports.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/testengine"
	"github.com/open-autoglm/autoglm/sidecar/config"
	"github.com/open-autoglm/autoglm/sidecar/server"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	fs := flag.NewFlagSet("autoglm-sidecar", flag.ContinueOnError)
	path := fs.String("config", "", "YAML configuration file (see README.md)")
	apply := config.Flags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(*path, apply)
	if err != nil {
		fmt.Fprintln(os.Stderr, "autoglm-sidecar:", err)
		return 2
	}
	log := newLogger(cfg.Log)
	eng := newEngine(cfg.Engine)
	info := eng.Info()
	log.Info("engine loaded", "engine", cfg.Engine.Kind, "model", info.Model, "description", info.Description,
		"context_length", info.ContextLength, "slots", info.Slots)
	if cfg.Engine.Kind == "test" {
		log.Warn("serving the TEST ENGINE: deterministic pseudo-text, not a language model")
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
	log.Info("listening", "http", ls.HTTP.Addr().String(), "grpc", cfg.Server.GRPCAddr)
	if err := server.New(cfg, eng, log).Run(ctx, ls); err != nil {
		log.Error("stopped", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

func newEngine(c config.Engine) inference.Engine {
	t := c.Test
	return testengine.New(testengine.Config{
		Model: c.Model, Slots: t.Slots, ContextLength: t.ContextLength,
		StepCost: t.StepCost, SeqCost: t.SeqCost, TokenCost: t.TokenCost, EOSAfter: t.EOSAfter,
	})
}

func newLogger(c config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts))
}
