package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/open-autoglm/autoglm/inference/testengine"
	"github.com/open-autoglm/autoglm/internal/xdstest"
	"github.com/open-autoglm/autoglm/test/chaos"
	"github.com/open-autoglm/autoglm/test/load"
	xdscfg "github.com/open-autoglm/autoglm/xds/config"
)

// pair is one version of two replicas (test engine) behind loopback
// proxies at the same port on 127.0.0.1 and 127.0.0.2, served by
// autoglm-xds with the given model policy, and a gRPC target through
// grpc-go's xDS client.
func pair(b *testing.B, policy string, engines ...testengine.Config) (load.Target, []*chaos.Proxy) {
	var proxies []*chaos.Proxy
	port := 0
	for i, ip := range []string{"127.0.0.1", "127.0.0.2"} {
		_, gp := grpcSidecar(b, testengine.New(engines[i]))
		p, err := chaos.NewProxy(fmt.Sprintf("%s:%d", ip, port), fmt.Sprintf("127.0.0.1:%d", gp))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(p.Close)
		port = p.Addr().Port
		proxies = append(proxies, p)
	}
	cfg, err := xdscfg.Parse([]byte(fmt.Sprintf(`apiVersion: autoglm.io/v1alpha1
listeners: {grpc: [inference]}
models:
  - name: autoglm-test
%s
    versions:
      - {name: v1, weight: 100, endpoints: ["127.0.0.1:8080", "127.0.0.2:8080"], grpc_port: %d}
`, policy, port)))
	if err != nil {
		b.Fatal(err)
	}
	_, ads := xdstest.Serve(b, cfg)
	return load.NewGRPCConn(xdstest.Client(b, ads, "inference", "bench"), "autoglm-test", metadata.Pairs("x-autoglm-model", "autoglm-test")), proxies
}

var failoverWorkload = load.Workload{Prompt: load.Dist{Kind: "fixed", A: 8}, Output: load.Dist{Kind: "fixed", A: 16}}

// BenchmarkFailover: a replica killed at a steady 80 % load. Two replicas
// (test engine, 5 ms a step, 8 sequences at once) behind autoglm-xds with
// retries on reset/connect-failure/5xx/429 and outlier detection; the
// saturation rate is measured first (32 closed-loop clients, 5 s), then
// 80 % of it is offered open-loop (Poisson) for 10 s, and one replica's
// connections are dropped 5 s in — leaving the other at 160 %. Reported:
// failed calls by kind (none may be other than UNAVAILABLE or
// RESOURCE_EXHAUSTED), and p99 end-to-end latency of the first 5 s and of
// the 5 s after the kill.
func BenchmarkFailover(b *testing.B) {
	eng := testengine.Config{Model: "autoglm-test", StepCost: 5 * time.Millisecond, Slots: 8}
	t, proxies := pair(b, `    retries: {attempts: 2, on: [reset, connect-failure, 5xx, "429"]}
    outlier_detection: {consecutive_5xx: 5, interval: 1s, base_ejection_time: 10s, max_ejection_percent: 50, request_volume: 5}`, eng, eng)
	ctx := context.Background()
	sat, err := load.Run(ctx, load.Config{Model: "closed", VUs: load.Constant(32, 5*time.Second), Workload: failoverWorkload, Timeout: 30 * time.Second}, t, "saturation")
	if err != nil {
		b.Fatal(err)
	}
	rate := 0.8 * sat.Achieved
	open := func(d time.Duration) *load.Report {
		rep, err := load.Run(ctx, load.Config{Model: "open", Rate: load.Constant(rate, d), Poisson: true, Seed: 1, Workload: failoverWorkload, Timeout: 30 * time.Second}, t, "failover")
		if err != nil {
			b.Fatal(err)
		}
		return rep
	}
	before := open(5 * time.Second)
	done := make(chan *load.Report)
	go func() { done <- open(5 * time.Second) }()
	time.Sleep(50 * time.Millisecond)
	proxies[1].Close()
	after := <-done
	b.Logf("saturation %.0f req/s; offered %.0f req/s; before: %d requests, errors %v; after the kill: %d requests, errors %v",
		sat.Achieved, rate, before.Requests, before.Errors, after.Requests, after.Errors)
	failed := 0
	for _, n := range after.Errors {
		failed += n
	}
	b.ReportMetric(sat.Achieved, "saturation-req/s")
	b.ReportMetric(float64(after.Requests), "requests-after-kill")
	b.ReportMetric(float64(failed), "failed-after-kill")
	b.ReportMetric(before.Latency["e2e"].P99, "p99-before-ms")
	b.ReportMetric(after.Latency["e2e"].P99, "p99-after-kill-ms")
}

// BenchmarkWRRvsRoundRobin: one replica with 3× the other's step cost;
// 16 closed-loop clients for 10 s under round robin, then under weighted
// round robin fed by the sidecars' ORCA trailers. Reported side by side:
// throughput and p99 time to first token.
func BenchmarkWRRvsRoundRobin(b *testing.B) {
	fast := testengine.Config{Model: "autoglm-test", StepCost: 10 * time.Millisecond}
	slow := testengine.Config{Model: "autoglm-test", StepCost: 30 * time.Millisecond}
	for _, tc := range []struct{ name, policy string }{
		{"round_robin", "    load_balancing: {policy: round_robin}"},
		{"weighted_round_robin", "    load_balancing: {policy: weighted_round_robin, blackout_period: 1s, weight_update_period: 500ms}"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			t, _ := pair(b, tc.policy, fast, slow)
			load.Run(context.Background(), load.Config{Model: "closed", VUs: load.Constant(16, 3*time.Second), Workload: failoverWorkload}, t, "warm-up")
			rep, err := load.Run(context.Background(), load.Config{Model: "closed", VUs: load.Constant(16, 10*time.Second), Workload: failoverWorkload}, t, tc.name)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(rep.Achieved, "req/s")
			b.ReportMetric(rep.Latency["ttft"].P99, "ttft-p99-ms")
			b.ReportMetric(rep.Latency["e2e"].P99, "e2e-p99-ms")
		})
	}
}
