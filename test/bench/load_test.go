package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/test/load"
)

// serverEnv makes the test binary a trivial OpenAI-shaped HTTP server in
// its own process, so that the generator's CPU time is measured alone.
const serverEnv = "AUTOGLM_BENCH_TRIVIAL_SERVER"

func TestMain(m *testing.M) {
	if os.Getenv(serverEnv) != "" {
		trivialServer()
		return
	}
	if path := os.Getenv(rssEnv); path != "" {
		nativeRSSChild(path)
		return
	}
	code := m.Run()
	if modelDir != "" {
		os.RemoveAll(modelDir)
	}
	os.Exit(code)
}

var trivialBody = []byte(`{"id":"x","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":8,"completion_tokens":1,"total_tokens":9}}`)

func trivialServer() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("error", err)
		return
	}
	fmt.Println(l.Addr().String())
	http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write(trivialBody)
	}))
}

func startTrivialServer(b *testing.B) string {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), serverEnv+"=1")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.HasPrefix(addr, "error") {
		b.Fatalf("trivial server: %v %s", err, addr)
	}
	return "http://" + strings.TrimSpace(addr)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkLoadGenerator: autoglm-load's open model against a trivial
// server in another process at 1k, 5k and 10k requests/s for 5 s each:
// achieved vs offered rate (goal: within 1 %), the send lag, and the
// generator's CPU seconds per 10k requests.
func BenchmarkLoadGenerator(b *testing.B) {
	base := startTrivialServer(b)
	for _, rps := range []float64{1000, 5000, 10000} {
		b.Run(fmt.Sprintf("rate=%.0f", rps), func(b *testing.B) {
			t := load.NewHTTP(base, "m")
			cfg := load.Config{Model: "open", Rate: load.Constant(rps, 5*time.Second),
				Workload: load.Workload{Chat: true, Prompt: load.Dist{Kind: "fixed", A: 8}, Output: load.Dist{Kind: "fixed", A: 1}}}
			cpu0 := cpuTime()
			rep, err := load.Run(context.Background(), cfg, t, base)
			cpu := cpuTime() - cpu0
			if err != nil {
				b.Fatal(err)
			}
			if rep.OK != rep.Requests {
				b.Errorf("errors %v", rep.Errors)
			}
			b.ReportMetric(rep.Offered, "offered-req/s")
			b.ReportMetric(rep.Sent, "sent-req/s")
			b.ReportMetric(rep.Achieved, "achieved-req/s")
			b.ReportMetric(rep.Achieved/rep.Offered, "ratio")
			b.ReportMetric(rep.Latency["lag"].P99, "lag-p99-ms")
			b.ReportMetric(rep.Latency["e2e"].P99, "e2e-p99-ms")
			b.ReportMetric(cpu.Seconds()/float64(rep.Requests)*10000, "cpu-s/10k-req")
		})
	}
}
