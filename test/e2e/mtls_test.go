package e2e

import (
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// mtlsClient is an HTTP client presenting cfg's certificate.
func mtlsClient(cfg *tls.Config, keepAlive bool) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: !keepAlive}}
}

// waitReadyMTLS waits until the sidecar at base answers /readyz 200 to c.
func waitReadyMTLS(t *testing.T, c *http.Client, base string, p *proc) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := c.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready over mTLS: %v\n%s", err, p.stderr.String())
		}
	}
}

// chatOver sends a small chat request to the sidecar at base.
func chatOver(c *http.Client, base string) (*http.Response, string, error) {
	resp, err := c.Post(base+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"autoglm-test","messages":[{"role":"user","content":"hi"}],"max_tokens":4}`))
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b), nil
}

// loadMTLS keeps n clients presenting cfg busy with chat requests to base
// (half of them on a new connection per request) while during runs, and
// returns the answered and failed counts and the serial numbers of the
// server certificates they saw.
func loadMTLS(t *testing.T, cfg *tls.Config, base string, n int, during func()) (ok, failed int64, serials map[string]bool) {
	t.Helper()
	var okN, failedN atomic.Int64
	var mu sync.Mutex
	serials = map[string]bool{}
	var stop atomic.Bool
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := mtlsClient(cfg, i%2 == 0)
			for !stop.Load() {
				resp, body, err := chatOver(c, base)
				if err != nil || resp.StatusCode != 200 {
					failedN.Add(1)
					t.Errorf("under load: %v %s", err, body)
					continue
				}
				okN.Add(1)
				mu.Lock()
				serials[resp.TLS.PeerCertificates[0].SerialNumber.String()] = true
				mu.Unlock()
			}
		}()
	}
	during()
	stop.Store(true)
	wg.Wait()
	return okN.Load(), failedN.Load(), serials
}
