package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadBinary drives a sidecar binary with the autoglm-load binary over
// HTTP and gRPC, then compares the two reports.
func TestLoadBinary(t *testing.T) {
	sidecar, loadBin := build(t), buildCmd(t, "test/cmd/autoglm-load")
	httpAddr, grpcAddr := freePort(t), freePort(t)
	sc := startSidecar(t, sidecar, fmt.Sprintf("server:\n  http_addr: %s\n  grpc_addr: %s\nengine:\n  kind: test\n  model: autoglm-tiny\n  test:\n    step_cost: 1ms\n", httpAddr, grpcAddr))
	sc.base = "http://" + httpAddr
	waitReady(t, sc)
	dir := t.TempDir()
	a, b, html := filepath.Join(dir, "a.json"), filepath.Join(dir, "b.json"), filepath.Join(dir, "a.html")

	out, err := exec.Command(loadBin, "run", "-url", sc.base, "-rate", "40", "-duration", "2s", "-output", "8", "-prompt", "uniform:8-32",
		"-header", "x-autoglm-priority: 1", "-slo-ttft", "1s", "-out", a, "-html", html, "-quiet").CombinedOutput()
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	var rep struct {
		Requests int     `json:"requests"`
		OK       int     `json:"ok"`
		Goodput  float64 `json:"goodput_rps"`
		Offered  float64 `json:"offered_rps"`
	}
	raw, _ := os.ReadFile(a)
	if err := json.Unmarshal(raw, &rep); err != nil || rep.Requests != 80 || rep.OK != 80 || rep.Offered != 40 || rep.Goodput <= 0 {
		t.Fatalf("report %+v %v\n%s", rep, err, raw)
	}
	if !strings.Contains(string(out), "80 requests") || !strings.Contains(string(out), "ttft  p50") {
		t.Fatalf("summary:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "a-latency.png")); err != nil {
		t.Fatal(err)
	}

	out, err = exec.Command(loadBin, "run", "-grpc", grpcAddr, "-vus", "4", "-duration", "1s", "-output", "8", "-turns", "2", "-out", b, "-quiet").CombinedOutput()
	if err != nil {
		t.Fatalf("run -grpc: %v\n%s", err, out)
	}
	out, err = exec.Command(loadBin, "compare", a, b).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ttft p99 ms") {
		t.Fatalf("compare: %v\n%s", err, out)
	}

	for _, bad := range [][]string{
		{"run", "-rate", "10", "-vus", "2"},
		{"run", "-rate-stages", "10s"},
		{"run", "-vus", "2", "-output", "uniform:9-1"},
		{"run", "-rate", "5", "-turns", "3"},
		{"bench"},
	} {
		out, err := exec.Command(loadBin, bad...).CombinedOutput()
		if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 2 || len(out) == 0 {
			t.Errorf("%v: exit %v, want 2 with a message:\n%s", bad, err, out)
		}
	}
}

// TestLoadReportsWhy: requests that fail are reported with what the
// service said (status and error code), in the report and on stderr.
func TestLoadReportsWhy(t *testing.T) {
	sidecar, loadBin := build(t), buildCmd(t, "test/cmd/autoglm-load")
	httpAddr := freePort(t)
	sc := startSidecar(t, sidecar, fmt.Sprintf("server:\n  http_addr: %s\n  grpc_addr: \"\"\nengine:\n  kind: test\n  model: autoglm-tiny\n", httpAddr))
	sc.base = "http://" + httpAddr
	waitReady(t, sc)
	report := filepath.Join(t.TempDir(), "r.json")
	out, err := exec.Command(loadBin, "run", "-url", sc.base, "-model", "nope", "-vus", "1", "-duration", "300ms", "-out", report).CombinedOutput()
	if err == nil {
		t.Fatalf("every request failed, yet exit 0:\n%s", out)
	}
	var rep struct {
		Reasons map[string]int `json:"error_reasons"`
	}
	raw, _ := os.ReadFile(report)
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	n := 0
	for k, v := range rep.Reasons {
		if strings.HasPrefix(k, "404 model_not_found: ") {
			n += v
		}
	}
	if n == 0 || !strings.Contains(string(out), "× 404 model_not_found: ") {
		t.Errorf("reasons %v; output:\n%s", rep.Reasons, out)
	}
}
