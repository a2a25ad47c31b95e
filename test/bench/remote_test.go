package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/open-autoglm/autoglm/inference/testengine"
	"github.com/open-autoglm/autoglm/sidecar/config"
)

// BenchmarkRemoteOverhead compares serving through a sidecar whose engine
// is remote with calling the upstream directly: requests/s and p50/p99 time
// to first token of streaming chat requests (32 tokens) from closed-loop
// clients, measured side by side (direct, remote, direct, remote) in one
// run. The upstream is a sidecar on the test engine (batch 32, step cost
// step + 50 µs per sequence), standing in for vLLM: 2 ms steps are the
// harshest case for the extra hop, 20 ms is nearer a 7B model's decode step
// on one GPU. The remote sidecar reads its concurrency (32) from the
// upstream's metrics. Goal: both ratios ≥ 0.95.
func BenchmarkRemoteOverhead(b *testing.B) {
	for _, step := range []time.Duration{2 * time.Millisecond, 20 * time.Millisecond} {
		for _, clients := range []int{16, 64} {
			b.Run(fmt.Sprintf("step=%s/clients=%d", step, clients), func(b *testing.B) {
				cfg := config.Default()
				cfg.Batch.MaxBatchSize = 32
				cfg.Admission.MaxQueue = 1024
				up := startSidecar(b, cfg, testengine.Config{Slots: 64, StepCost: step, SeqCost: 50 * time.Microsecond})
				cfg.Engine.Remote.URL = up
				rs := startRemote(b, cfg, up)
				var direct, via []loadResult
				for range 2 {
					direct = append(direct, streamingLoop(b, up, clients, 3*time.Second))
					via = append(via, streamingLoop(b, rs, clients, 3*time.Second))
				}
				d, r := merge(direct), merge(via)
				b.ReportMetric(d.rps, "direct-req/s")
				b.ReportMetric(r.rps, "remote-req/s")
				b.ReportMetric(float64(d.ttft.ValueAtQuantile(50))/1e3, "direct-p50-ttft-ms")
				b.ReportMetric(float64(r.ttft.ValueAtQuantile(50))/1e3, "remote-p50-ttft-ms")
				b.ReportMetric(float64(d.ttft.ValueAtQuantile(99))/1e3, "direct-p99-ttft-ms")
				b.ReportMetric(float64(r.ttft.ValueAtQuantile(99))/1e3, "remote-p99-ttft-ms")
				b.ReportMetric(r.rps/d.rps, "rps-ratio")
				b.ReportMetric(float64(d.ttft.ValueAtQuantile(99))/float64(r.ttft.ValueAtQuantile(99)), "ttft-ratio")
			})
		}
	}
}

type loadResult struct {
	rps  float64
	ttft *hdrhistogram.Histogram // µs
}

func merge(rs []loadResult) loadResult {
	out := loadResult{ttft: hdrhistogram.New(1, 60_000_000, 3)}
	for _, r := range rs {
		out.rps += r.rps / float64(len(rs))
		out.ttft.Merge(r.ttft)
	}
	return out
}

// streamingLoop runs clients that each send streaming chat requests back to
// back for d. The first second is a warm-up (connections, the first burst)
// and is not recorded: the figures are the steady state.
func streamingLoop(b *testing.B, base string, clients int, d time.Duration) loadResult {
	hc := httpClient()
	body := []byte(`{"model":"autoglm-test","stream":true,"max_tokens":32,"messages":[{"role":"user","content":"` + strings.Repeat("benchmark ", 8) + `"}]}`)
	var done atomic.Int64
	var mu sync.Mutex
	ttft := hdrhistogram.New(1, 60_000_000, 3)
	start := time.Now()
	warm, stop := start.Add(time.Second), start.Add(time.Second+d)
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				t0 := time.Now()
				resp, err := hc.Post(base+"/v1/chat/completions", "application/json", bytes.NewReader(body))
				if err != nil {
					b.Error(err)
					return
				}
				if resp.StatusCode != http.StatusOK {
					b.Errorf("status %d", resp.StatusCode)
					resp.Body.Close()
					return
				}
				br := bufio.NewReader(resp.Body)
				first := true
				for {
					line, err := br.ReadSlice('\n')
					if err != nil {
						b.Errorf("stream: %v", err)
						break
					}
					if first && t0.After(warm) && bytes.HasPrefix(line, []byte("data: {")) && bytes.Contains(line, []byte(`"content":"`)) {
						mu.Lock()
						ttft.RecordValue(time.Since(t0).Microseconds())
						mu.Unlock()
						first = false
					}
					if bytes.HasPrefix(line, []byte("data: [DONE]")) {
						if t0.After(warm) {
							done.Add(1)
						}
						break
					}
				}
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	return loadResult{rps: float64(done.Load()) / time.Since(warm).Seconds(), ttft: ttft}
}
