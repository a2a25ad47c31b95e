package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/testengine"
	"github.com/open-autoglm/autoglm/sidecar/admission"
	"github.com/open-autoglm/autoglm/sidecar/batch"
)

// BenchmarkScheduler shows the batching gain: tokens/s and p99 time to
// first token at 1, 4, 16 and 64 concurrent streams, with continuous
// batching (up to 64 per step) and without it (1 per step), on a test
// engine whose step costs 2 ms plus 100 µs per sequence.
func BenchmarkScheduler(b *testing.B) {
	for _, streams := range []int{1, 4, 16, 64} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) {
			on := runStreams(b, streams, 64, 2*time.Second)
			off := runStreams(b, streams, 1, 2*time.Second)
			b.ReportMetric(on.tokensPerSec, "tok/s")
			b.ReportMetric(float64(on.ttft.ValueAtQuantile(99))/1e3, "p99-ttft-ms")
			b.ReportMetric(off.tokensPerSec, "unbatched-tok/s")
			b.ReportMetric(float64(off.ttft.ValueAtQuantile(99))/1e3, "unbatched-p99-ttft-ms")
			b.ReportMetric(on.tokensPerSec/off.tokensPerSec, "gain")
			b.ReportMetric(on.msPerStep, "ms/step")
		})
	}
}

type streamResult struct {
	tokensPerSec float64
	msPerStep    float64                 // measured: time.Sleep overshoots on some VMs
	ttft         *hdrhistogram.Histogram // µs
}

func runStreams(b *testing.B, streams, maxBatch int, d time.Duration) streamResult {
	eng := testengine.New(testengine.Config{Slots: 64, StepCost: 2 * time.Millisecond, SeqCost: 100 * time.Microsecond})
	prompt := make([]int, 32)
	for i := range prompt {
		prompt[i] = 'a' + i%26
	}
	r, el := driveStreams(b, eng, batch.Config{MaxBatchSize: maxBatch, MaxBatchTokens: 4096}, streams, prompt, 32, d)
	r.msPerStep = el.Seconds() * 1e3 / float64(eng.Steps)
	return r
}

// driveStreams runs streams closed-loop clients, each sending the prompt
// for maxTokens again and again for d, through a batch scheduler over eng.
func driveStreams(b *testing.B, eng inference.Engine, cfg batch.Config, streams int, prompt []int, maxTokens int, d time.Duration) (streamResult, time.Duration) {
	cfg.Queue = admission.Config{Levels: 1, MaxQueue: 1024}
	s := batch.New(cfg, eng, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()

	var tokens atomic.Int64
	var mu sync.Mutex
	ttft := hdrhistogram.New(1, 60_000_000, 3)
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for i := 0; i < streams; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				t0 := time.Now()
				seq, err := s.Submit(context.Background(), batch.Request{Prompt: prompt, MaxTokens: maxTokens})
				if err != nil {
					b.Error(err)
					return
				}
				first := true
				for {
					_, err := seq.Next()
					if first && err == nil {
						mu.Lock()
						ttft.RecordValue(time.Since(t0).Microseconds())
						mu.Unlock()
						first = false
					}
					if errors.Is(err, io.EOF) {
						tokens.Add(int64(seq.Result().CompletionTokens))
						break
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			}
		}()
	}
	start := time.Now()
	wg.Wait()
	el := time.Since(start)
	cancel()
	<-done
	return streamResult{tokensPerSec: float64(tokens.Load()) / el.Seconds(), ttft: ttft}, el
}
