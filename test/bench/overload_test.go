package bench

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/open-autoglm/autoglm/inference/testengine"
	"github.com/open-autoglm/autoglm/sidecar/config"
)

const overloadBody = `{"model":"autoglm-test","max_tokens":16,"messages":[{"role":"user","content":"hello"}]}`

// BenchmarkOverload measures the saturation rate of a sidecar (closed loop,
// 64 clients), then offers twice that rate open-loop for OVERLOAD_SECONDS
// (default 30) with a 1 s deadline per request. Expected: only 200s and
// 429s, no 5xx, flat memory, admitted requests within their deadline.
func BenchmarkOverload(b *testing.B) {
	cfg := config.Default()
	cfg.Batch.MaxBatchSize = 16
	cfg.Admission.MaxQueue = 64
	url := startSidecar(b, cfg, testengine.Config{StepCost: 2 * time.Millisecond, SeqCost: 100 * time.Microsecond}) + "/v1/chat/completions"
	dur := 30 * time.Second
	if v, err := time.ParseDuration(os.Getenv("OVERLOAD_SECONDS") + "s"); err == nil && v > 0 {
		dur = v
	}

	c := httpClient()
	send := func(hdr string) (int, error) {
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader([]byte(overloadBody)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Envoy-Expected-Rq-Timeout-Ms", hdr)
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	// Saturation: 64 closed-loop clients for 3 s.
	var ok atomic.Int64
	satEnd := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(satEnd) {
				if code, _ := send("60000"); code == 200 {
					ok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	sat := float64(ok.Load()) / 3
	rate := 2 * sat

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heapStart := ms.HeapInuse
	var heapMax atomic.Uint64
	stopSample := make(chan struct{})
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopSample:
				return
			case <-t.C:
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				if m.HeapInuse > heapMax.Load() {
					heapMax.Store(m.HeapInuse)
				}
			}
		}
	}()

	var n200, n429, n5xx, nOther, late atomic.Int64
	lat := hdrhistogram.New(1, 60_000_000, 3)
	var mu sync.Mutex
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	total := int(dur / interval)
	var lag time.Duration
	for i := 0; i < total; i++ {
		intended := start.Add(time.Duration(i) * interval)
		if d := time.Until(intended); d > 0 {
			time.Sleep(d)
		} else if -d > lag {
			lag = -d
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, err := send("1000")
			elapsed := time.Since(intended) // from the intended send time
			switch {
			case err != nil:
				nOther.Add(1)
			case code == 200:
				n200.Add(1)
				mu.Lock()
				lat.RecordValue(elapsed.Microseconds())
				mu.Unlock()
				if elapsed > time.Second {
					late.Add(1)
				}
			case code == 429:
				n429.Add(1)
			case code >= 500:
				n5xx.Add(1)
			default:
				nOther.Add(1)
			}
		}()
	}
	wg.Wait()
	close(stopSample)
	secs := time.Since(start).Seconds()
	b.ReportMetric(sat, "saturation-req/s")
	b.ReportMetric(float64(total)/secs, "offered-req/s")
	b.ReportMetric(float64(n200.Load())/secs, "ok-req/s")
	b.ReportMetric(float64(n429.Load()), "429s")
	b.ReportMetric(float64(n5xx.Load()), "5xx")
	b.ReportMetric(float64(nOther.Load()), "other-errors")
	b.ReportMetric(float64(late.Load()), "ok-past-deadline")
	b.ReportMetric(float64(lat.ValueAtQuantile(99))/1e3, "ok-p99-ms")
	b.ReportMetric(float64(heapStart)/(1<<20), "heap-start-MiB")
	b.ReportMetric(float64(heapMax.Load())/(1<<20), "heap-max-MiB")
	b.ReportMetric(lag.Seconds()*1e3, "max-schedule-lag-ms")
	if n5xx.Load() > 0 || nOther.Load() > 0 || late.Load() > 0 {
		b.Errorf("overload: %d 5xx, %d other errors, %d admitted past deadline", n5xx.Load(), nOther.Load(), late.Load())
	}
}
