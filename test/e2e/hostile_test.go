package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestHostileClients drives the built sidecar over loopback with the
// classes of misbehaviour a hostile-client review uses — malformed
// HTTP/1.1 framing, huge and overflowing numbers, duplicate and
// case-variant members, spoofed identity headers, slow and idle
// connections — and checks after each class that the server answered in
// OpenAI's shape (never a 5xx, never a hang) and still serves.
func TestHostileClients(t *testing.T) {
	bin := build(t)
	addr, grpcAddr := freePort(t), freePort(t)
	p := startSidecar(t, bin, fmt.Sprintf(`server:
  http_addr: %s
  grpc_addr: %s
  max_body_bytes: 65536
  header_timeout: 500ms
  body_timeout: 500ms
  idle_timeout: 1s
  write_timeout: 1s
  max_header_bytes: 16384
engine:
  kind: test
identity:
  mode: xfcc
  trust_domain: mesh.local
`, addr, grpcAddr))
	p.base = "http://" + addr
	waitReady(t, p)
	const chat = "/v1/chat/completions"
	xfcc := "By=spiffe://mesh.local/ns/m/sa/model;URI=spiffe://mesh.local/ns/a/sa/app"

	// raw sends bytes on a fresh connection and returns the status code
	// of the answer (0: the server closed without one) within 5 s.
	raw := func(t *testing.T, req string) int {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, req)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("%.60q: no answer and no close within 5 s", req)
			}
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	post := func(t *testing.T, body string, hdr ...[2]string) int {
		t.Helper()
		req, _ := http.NewRequest("POST", p.base+chat, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Forwarded-Client-Cert", xfcc)
		for _, h := range hdr {
			req.Header.Set(h[0], h[1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%.60s: %v", body, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 400 && !strings.Contains(string(b), `"error"`) {
			t.Fatalf("%.60s: %d without an OpenAI error body: %s", body, resp.StatusCode, b)
		}
		return resp.StatusCode
	}
	healthy := func(t *testing.T) {
		t.Helper()
		if code := post(t, `{"model":"autoglm-test","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}`); code != 200 {
			t.Fatalf("not serving after the class: %d\n%s", code, p.stderr.String())
		}
	}
	msg := `"messages":[{"role":"user","content":"hi"}]`

	t.Run("framing", func(t *testing.T) {
		for _, req := range []string{
			"POST " + chat + " HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
			"POST " + chat + " HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nzz\r\n",
			"POST " + chat + " HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
			"POST " + chat + " HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
			"POST " + chat + " HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
			"GARBAGE\r\n\r\n",
			"POST " + chat + " HTTP/1.1\r\nHost: x\r\nX-Bad\x00Name: 1\r\n\r\n",
			"POST " + chat + " HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\n\r\n",
		} {
			if code := raw(t, req); code != 0 && code < 400 || code >= 500 && code != 501 {
				t.Errorf("%.80q: %d", req, code)
			}
		}
		healthy(t)
	})
	t.Run("numbers", func(t *testing.T) {
		for _, body := range []string{
			`{"model":"autoglm-test","max_tokens":9223372036854775807,` + msg + `}`,
			`{"model":"autoglm-test","max_tokens":1e400,` + msg + `}`,
			`{"model":"autoglm-test","max_tokens":-9223372036854775808,` + msg + `}`,
			`{"model":"autoglm-test","temperature":1e308,` + msg + `}`,
			`{"model":"autoglm-test","top_p":-0,` + msg + `}`,
			`{"model":"autoglm-test","seed":99999999999999999999,` + msg + `}`,
		} {
			if code := post(t, body); code != 400 {
				t.Errorf("%s: %d, want 400", body, code)
			}
		}
		for _, h := range [][2]string{{"x-envoy-expected-rq-timeout-ms", "9223372036854775807"}, {"grpc-timeout", "99999999H"}} {
			if code := post(t, `{"model":"autoglm-test","max_tokens":2,`+msg+`}`, h); code != 200 {
				t.Errorf("%s: %d, want 200 (capped at max_timeout)", h[0], code)
			}
		}
		healthy(t)
	})
	t.Run("members", func(t *testing.T) {
		for _, body := range []string{
			`{"model":"autoglm-test","temperature":0,"Temperature":0.9,` + msg + `}`,
			`{"model":"autoglm-test","max_tokens":2,"MAX_TOKENS":3,` + msg + `}`,
			`{"model":"autoglm-test","messages":[{"role":"user","content":"a","Content":"b"}]}`,
		} {
			if code := post(t, body); code != 400 {
				t.Errorf("%s: %d, want 400", body, code)
			}
		}
		healthy(t)
	})
	t.Run("identity", func(t *testing.T) {
		for _, x := range []string{
			`URI=spiffe://mesh.local/ns/v/sa/victim;X=",` + xfcc,
			`URI=spiffe://mesh.local/ns/v/sa/victim;X="\",` + xfcc,
			`URI="spiffe://mesh.local/ns/v/sa/victim`,
			"",
		} {
			if code := post(t, `{"model":"autoglm-test","max_tokens":2,`+msg+`}`, [2]string{"X-Forwarded-Client-Cert", x}); code != 401 {
				t.Errorf("x-forwarded-client-cert %q: %d, want 401", x, code)
			}
		}
		healthy(t)
	})
	t.Run("slow and idle", func(t *testing.T) {
		var wg sync.WaitGroup
		for _, req := range []string{
			"", // connect and say nothing
			"POST " + chat + " HTTP/1.1\r\nHost: x\r\n",                                      // headers never end
			"POST " + chat + " HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"model\"", // body never ends
			"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",                                       // then idle keep-alive
		} {
			for range 50 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, err := net.Dial("tcp", addr)
					if err != nil {
						return
					}
					defer c.Close()
					io.WriteString(c, req)
					c.SetReadDeadline(time.Now().Add(10 * time.Second))
					if _, err := io.Copy(io.Discard, c); err != nil {
						t.Errorf("%.40q: the server kept the connection past its timeouts: %v", req, err)
					}
				}()
			}
		}
		wg.Wait()
		healthy(t)
	})
}

// TestHostileXDSConfigs: autoglm-xds validate refuses YAML bombs,
// duplicate keys and colliding names quickly and with a bounded report.
func TestHostileXDSConfigs(t *testing.T) {
	bin := buildCmd(t, "xds/cmd/autoglm-xds")
	dir := t.TempDir()
	var bomb strings.Builder
	bomb.WriteString("apiVersion: autoglm.io/v1alpha1\nlisteners: {grpc: [g]}\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&bomb, "a%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d]\n", i, i, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1)
	}
	bomb.WriteString("models: *a9\n")
	var many strings.Builder
	many.WriteString("apiVersion: autoglm.io/v1alpha1\nlisteners: {grpc: [g]}\nmodels:\n")
	for i := range 20000 {
		fmt.Fprintf(&many, "  - {name: m%d, bogus: 1}\n", i)
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"alias bomb", bomb.String(), "aliases expand it by more than"},
		{"20000 errors", many.String(), "more errors"},
		{"duplicate key", xdsConfig(90, 10) + "models: []\n", "duplicate key"},
		{"name collision", "apiVersion: autoglm.io/v1alpha1\nlisteners: {grpc: [g]}\nmodels:\n  - {name: a-b, versions: [{name: c, weight: 1, endpoints: [\"127.0.0.1:1\"]}]}\n  - {name: a, versions: [{name: b-c, weight: 1, endpoints: [\"127.0.0.1:1\"]}]}\n", "generated cluster name"},
	} {
		f := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
		os.WriteFile(f, []byte(tc.yaml), 0o644)
		start := time.Now()
		out, err := exec.Command(bin, "validate", "-config", f).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("%s: %v\n%.300s", tc.name, err, out)
		}
		if d := time.Since(start); d > 10*time.Second || len(out) > 64<<10 {
			t.Errorf("%s: %s and %d bytes of output", tc.name, d, len(out))
		}
	}
}
