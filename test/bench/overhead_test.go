package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/sidecar/config"
)

const overheadBody = `{"model":"autoglm-test","max_tokens":8,"temperature":0,"messages":[{"role":"user","content":"hello"}]}`

// BenchmarkSidecarOverhead compares non-streaming requests/s through the
// sidecar (zero-cost engine) with a bare net/http handler that returns the
// same JSON, in alternating rounds of one run, from the same client.
func BenchmarkSidecarOverhead(b *testing.B) {
	cfg := config.Default()
	cfg.Batch.MaxBatchSize = 64
	sidecar := startSidecar(b, cfg, testConfigZeroCost())
	// The bare handler answers with the sidecar's own response bytes.
	resp, err := http.Post(sidecar+"/v1/chat/completions", "application/json", bytes.NewReader([]byte(overheadBody)))
	if err != nil {
		b.Fatal(err)
	}
	canned, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !json.Valid(canned) || resp.StatusCode != 200 {
		b.Fatalf("sidecar answered %d %s", resp.StatusCode, canned)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	bare := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write(canned)
	})}
	go bare.Serve(l)
	defer bare.Close()
	bareURL := "http://" + l.Addr().String()

	const rounds, round, conc = 3, 2 * time.Second, 32
	var sideN, bareN int64
	for i := 0; i < rounds; i++ {
		bareN += closedLoop(bareURL+"/v1/chat/completions", conc, round)
		sideN += closedLoop(sidecar+"/v1/chat/completions", conc, round)
	}
	secs := (time.Duration(rounds) * round).Seconds()
	b.ReportMetric(float64(bareN)/secs, "bare-req/s")
	b.ReportMetric(float64(sideN)/secs, "sidecar-req/s")
	b.ReportMetric(float64(sideN)/float64(bareN), "ratio")
}

// closedLoop sends overheadBody from conc clients for d and counts 200s.
func closedLoop(url string, conc int, d time.Duration) int64 {
	c := httpClient()
	var n atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < conc; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader([]byte(overheadBody)))
				req.Header.Set("Content-Type", "application/json")
				resp, err := c.Do(req)
				if err != nil {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					n.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	c.CloseIdleConnections()
	return n.Load()
}
