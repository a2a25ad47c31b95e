// Command autoglm-load is a load generator for LLM services: open-model
// (arrival rate, constant or Poisson, ramping) and closed-model (virtual
// users, think time, ramping) load on the OpenAI-compatible API, with
// latency counted from intended send times, and a JSON (+ HTML) report.
//
//	autoglm-load run -url http://127.0.0.1:8080 -rate 50 -duration 30s -stream -out a.json
//	autoglm-load run -url http://127.0.0.1:8080 -vus 32 -think 1s -turns 4 -chat -stream
//	autoglm-load compare a.json b.json
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc/metadata"
	_ "google.golang.org/grpc/xds" // xds:/// targets

	"github.com/open-autoglm/autoglm/internal/cli"
	"github.com/open-autoglm/autoglm/test/load"
)

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	if ok, code := cli.Command("autoglm-load", os.Args[1:], os.Stdout); ok {
		os.Exit(code)
	}
	switch os.Args[1] {
	case "run":
		os.Exit(run(os.Args[2:]))
	case "compare":
		os.Exit(compare(os.Args[2:]))
	case "-h", "-help", "--help", "help":
		usage(os.Stdout)
	default:
		fmt.Fprintf(os.Stderr, "autoglm-load: unknown command %q\n", os.Args[1])
		usage(os.Stderr)
		os.Exit(2)
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  autoglm-load run [flags]          drive a service and write a report (autoglm-load run -h for flags)
  autoglm-load compare A.json B.json  print B's change against A
  autoglm-load version               print the build
Exit codes: 0 done, 1 failed (or past a -max-* limit), 2 bad usage.
`)
}

// stages parses "30s:100,1m:100,10s:0" into ramp stages.
func stages(s string) ([]load.Stage, error) {
	var out []load.Stage
	for i, part := range strings.Split(s, ",") {
		ds, ts, ok := strings.Cut(strings.TrimSpace(part), ":")
		d, errD := time.ParseDuration(ds)
		t, errT := strconv.ParseFloat(ts, 64)
		if !ok || errD != nil || errT != nil {
			return nil, fmt.Errorf("stage %d %q: want DURATION:TARGET, e.g. 30s:100", i, part)
		}
		out = append(out, load.Stage{Duration: d, Target: t})
	}
	return out, nil
}

type headers http.Header

func (h headers) String() string { return "" }
func (h headers) Set(v string) error {
	k, val, ok := strings.Cut(v, ":")
	if !ok || strings.TrimSpace(k) == "" {
		return errors.New(`want "Name: value"`)
	}
	http.Header(h).Add(strings.TrimSpace(k), strings.TrimSpace(val))
	return nil
}

const bootstrapEnv = "GRPC_XDS_BOOTSTRAP_CONFIG"

func run(args []string) int {
	fs := flag.NewFlagSet("autoglm-load run", flag.ContinueOnError)
	url := fs.String("url", "http://127.0.0.1:8080", "base URL of the OpenAI-compatible service")
	grpcAddr := fs.String("grpc", "", "the sidecar's gRPC API, to target it instead of -url (always streamed): host:port, or xds:///NAME through a control plane")
	xdsServer := fs.String("xds-server", "", "with -grpc xds:///NAME: host:port of autoglm-xds (otherwise GRPC_XDS_BOOTSTRAP or GRPC_XDS_BOOTSTRAP_CONFIG)")
	model := fs.String("model", "autoglm-tiny", `the "model" of every request (default: the one make run and the manifests serve)`)
	rateF := fs.Float64("rate", 0, "open model: arrivals per second (with -duration)")
	rateStart := fs.Float64("rate-start", 0, "open model with -rate-stages: the rate at the start")
	rateStages := fs.String("rate-stages", "", "open model: ramping stages DURATION:RATE,… (k6's ramping-arrival-rate)")
	poisson := fs.Bool("poisson", false, "open model: Poisson arrivals instead of constant spacing")
	maxInFlight := fs.Int("max-in-flight", 10000, "open model: arrivals beyond this many requests in flight are dropped and reported")
	vus := fs.Int("vus", 0, "closed model: virtual users (with -duration)")
	vuStages := fs.String("vu-stages", "", "closed model: ramping stages DURATION:VUS,…")
	think := fs.Duration("think", 0, "closed model: pause after each reply")
	duration := fs.Duration("duration", 30*time.Second, "length of a constant -rate or -vus run")
	capF := fs.Float64("cap", 0, "cap on requests sent per second, either model (0: none)")
	var th load.Thresholds
	fs.Float64Var(&th.MaxErrorRate, "max-error-rate", 0, "threshold: exit 1 when more than this share of requests fail (0: not checked; a run where every request fails always exits 1)")
	fs.Float64Var(&th.MaxTTFTP99, "max-ttft-p99", 0, "threshold: exit 1 when the time to first token's p99 exceeds this many ms (0: not checked)")
	fs.Float64Var(&th.MaxE2EP99, "max-e2e-p99", 0, "threshold: exit 1 when the end-to-end latency's p99 exceeds this many ms (0: not checked)")
	timeout := fs.Duration("timeout", 5*time.Minute, "per-request timeout")
	prompt := fs.String("prompt", "128", "synthetic prompt length in words: N, uniform:MIN-MAX or normal:MEAN,STDDEV")
	output := fs.String("output", "64", "max_tokens: N, uniform:MIN-MAX or normal:MEAN,STDDEV")
	chat := fs.Bool("chat", true, "chat completions (false: text completions)")
	stream := fs.Bool("stream", true, "streamed responses (time to first token and inter-token latency need it)")
	dataset := fs.String("dataset", "", `JSONL of {"prompt": …} or {"messages": […]} instead of synthetic prompts`)
	turns := fs.Int("turns", 1, "closed model: turns per session, each carrying the conversation so far")
	prefixGroups := fs.Int("prefix-groups", 0, "requests share one of this many system prompts")
	prefixWords := fs.Int("prefix-words", 0, "length of the shared system prompts in words")
	sloTTFT := fs.Duration("slo-ttft", 0, "goodput SLO: time to first token")
	sloTPOT := fs.Duration("slo-tpot", 0, "goodput SLO: time per output token")
	sloE2E := fs.Duration("slo-e2e", 0, "goodput SLO: end-to-end latency")
	seed := fs.Uint64("seed", 1, "seed of the workload and Poisson arrivals")
	out := fs.String("out", "report.json", `JSON report ("-": standard output)`)
	html := fs.String("html", "", "also write an HTML report with charts to this file")
	quiet := fs.Bool("quiet", false, "no progress line")
	hdr := headers{}
	fs.Var(hdr, "header", `extra request header "Name: value" (repeatable), e.g. x-autoglm-priority: 2`)
	if code, ok := cli.Parse(fs, args); !ok {
		return code
	}
	cfg := load.Config{MaxInFlight: *maxInFlight, Think: *think, Cap: *capF, Timeout: *timeout, Poisson: *poisson, Seed: *seed,
		SLO: load.SLO{TTFT: *sloTTFT, TPOT: *sloTPOT, E2E: *sloE2E}}
	var errs []error
	switch {
	case (*rateF > 0 || *rateStages != "") && (*vus > 0 || *vuStages != ""):
		errs = append(errs, errors.New("-rate/-rate-stages (open model) and -vus/-vu-stages (closed model) exclude each other"))
	case *rateStages != "":
		st, err := stages(*rateStages)
		errs = append(errs, err)
		cfg.Model, cfg.Rate = "open", load.Ramp{Start: *rateStart, Stages: st}
	case *rateF > 0:
		cfg.Model, cfg.Rate = "open", load.Constant(*rateF, *duration)
	case *vuStages != "":
		st, err := stages(*vuStages)
		errs = append(errs, err)
		cfg.Model, cfg.VUs = "closed", load.Ramp{Stages: st}
	case *vus > 0:
		cfg.Model, cfg.VUs = "closed", load.Constant(float64(*vus), *duration)
	default:
		errs = append(errs, errors.New("say the load: -rate or -rate-stages (open model), or -vus or -vu-stages (closed model)"))
	}
	w := load.Workload{Chat: *chat, Stream: *stream, Turns: *turns, PrefixGroups: *prefixGroups, PrefixWords: *prefixWords}
	var err error
	if w.Prompt, err = load.ParseDist(*prompt); err != nil {
		errs = append(errs, fmt.Errorf("-prompt: %w", err))
	}
	if w.Output, err = load.ParseDist(*output); err != nil {
		errs = append(errs, fmt.Errorf("-output: %w", err))
	}
	if *dataset != "" {
		f, err := os.Open(*dataset)
		if err == nil {
			w.Dataset, err = load.ReadDataset(f)
			f.Close()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("-dataset %s: %w", *dataset, err))
		}
	}
	cfg.Workload = w
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintln(os.Stderr, "autoglm-load:", err)
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "autoglm-load:", err)
		return 2
	}
	if !*quiet {
		cfg.Progress = os.Stderr
	}
	var t load.Target
	name := *url
	if *grpcAddr != "" {
		if strings.HasPrefix(*grpcAddr, "xds:///") && *xdsServer != "" && os.Getenv(bootstrapEnv) == "" {
			// grpc-go reads its xDS bootstrap from the environment when the
			// process starts: run again with it set.
			cmd := exec.Command(os.Args[0], os.Args[1:]...)
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
			cmd.Env = append(os.Environ(), bootstrapEnv+"="+fmt.Sprintf(
				`{"xds_servers":[{"server_uri":%q,"channel_creds":[{"type":"insecure"}],"server_features":["xds_v3"]}],"node":{"id":"autoglm-load-%d"}}`,
				*xdsServer, os.Getpid()))
			if err := cmd.Run(); err != nil {
				if ee, ok := err.(*exec.ExitError); ok {
					return ee.ExitCode()
				}
				fmt.Fprintln(os.Stderr, "autoglm-load:", err)
				return 1
			}
			return 0
		}
		md := metadata.MD{}
		for k, vs := range hdr {
			md.Append(strings.ToLower(k), vs...)
		}
		if strings.HasPrefix(*grpcAddr, "xds:///") && len(md.Get("x-autoglm-model")) == 0 {
			md.Append("x-autoglm-model", *model) // the control plane routes on it
		}
		g, err := load.NewGRPC(*grpcAddr, *model, md)
		if err != nil {
			fmt.Fprintln(os.Stderr, "autoglm-load: -grpc:", err)
			return 2
		}
		defer g.Close()
		t, name = g, "grpc://"+*grpcAddr
	} else {
		h := load.NewHTTP(*url, *model)
		h.Header = http.Header(hdr)
		t = h
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := load.Run(ctx, cfg, t, name)
	if err != nil {
		fmt.Fprintln(os.Stderr, "autoglm-load:", err)
		return 1
	}
	if err := rep.Write(*out); err != nil {
		fmt.Fprintln(os.Stderr, "autoglm-load:", err)
		return 1
	}
	if *html != "" {
		if err := load.WriteHTML(*html, rep); err != nil {
			fmt.Fprintln(os.Stderr, "autoglm-load:", err)
			return 1
		}
	}
	summary(rep)
	if crossed := rep.Check(th); len(crossed) > 0 {
		for _, c := range crossed {
			fmt.Fprintln(os.Stderr, "autoglm-load: threshold crossed:", c)
		}
		return 1
	}
	return 0
}

func summary(r *load.Report) {
	fmt.Fprintf(os.Stderr, "%d requests in %.1fs: %d ok, errors %v, dropped %d; %.1f req/s (sent %.1f), goodput %.1f req/s, %.0f output tokens/s\n",
		r.Requests, r.Seconds, r.OK, r.Errors, r.Dropped, r.Achieved, r.Sent, r.Goodput, r.TokensPerSecond)
	for _, m := range []string{"ttft", "itl", "tpot", "e2e"} {
		p := r.Latency[m]
		fmt.Fprintf(os.Stderr, "  %-5s p50 %8.1f  p90 %8.1f  p99 %8.1f  p99.9 %8.1f ms\n", m, p.P50, p.P90, p.P99, p.P999)
	}
	reasons := make([]string, 0, len(r.Reasons))
	for k := range r.Reasons {
		reasons = append(reasons, k)
	}
	sort.Slice(reasons, func(i, j int) bool { return r.Reasons[reasons[i]] > r.Reasons[reasons[j]] })
	for _, k := range reasons {
		fmt.Fprintf(os.Stderr, "  failed %d× %s\n", r.Reasons[k], k)
	}
	for _, w := range r.Warnings {
		fmt.Fprintln(os.Stderr, "warning:", w)
	}
}

func compare(args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: autoglm-load compare A.json B.json")
		return 2
	}
	a, err := load.ReadReport(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "autoglm-load:", err)
		return 1
	}
	b, err := load.ReadReport(args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "autoglm-load:", err)
		return 1
	}
	load.Compare(os.Stdout, a, b)
	return 0
}
