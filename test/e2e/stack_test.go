package e2e

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// grpcServed is how many gRPC requests a sidecar answered with 200.
func grpcServed(t *testing.T, base string) int {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`autoglm_requests_total\{api="grpc",code="200",model="[^"]*"\} (\d+)`).FindSubmatch(b)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// TestLocalStack runs what `make run` runs (fixed ports 8080, 8082, 9090,
// 9092, 18000, 18001: they must be free) and drives it with autoglm-load
// through the control plane over proxyless gRPC: the 90/10 split shows in
// the sidecars' metrics. Ctrl-C stops every process.
func TestLocalStack(t *testing.T) {
	dir := t.TempDir()
	for _, pkg := range []string{"sidecar/cmd/autoglm-sidecar", "xds/cmd/autoglm-xds", "test/cmd/autoglm-load"} {
		b := buildCmd(t, pkg)
		if err := os.Rename(b, filepath.Join(dir, filepath.Base(b))); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("./test/tools/run-local.sh")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "BIN="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() { // Ctrl-C lets the script stop what it started; then force it
		if stopped {
			return
		}
		syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
		}
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	})
	ready := make(chan bool)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Ctrl-C stops everything") {
				ready <- true
			}
		}
		close(ready)
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatal("the stack did not start")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the stack did not start in 60 s")
	}
	report := filepath.Join(dir, "r.json")
	lo, err := exec.Command(filepath.Join(dir, "autoglm-load"), "run", "-grpc", "xds:///autoglm-inference", "-xds-server", "127.0.0.1:18000",
		"-model", "autoglm-tiny", "-vus", "8", "-duration", "6s", "-prompt", "4", "-output", "4", "-quiet", "-out", report).CombinedOutput()
	if err != nil {
		t.Fatalf("autoglm-load: %v\n%s", err, lo)
	}
	var rep struct{ Requests, OK int }
	raw, _ := os.ReadFile(report)
	json.Unmarshal(raw, &rep)
	v1, v2 := grpcServed(t, "http://127.0.0.1:8080"), grpcServed(t, "http://127.0.0.1:8082")
	if rep.OK < 60 || rep.OK != rep.Requests || v1+v2 < rep.OK {
		t.Fatalf("load %+v, served v1 %d v2 %d", rep, v1, v2)
	}
	if share := float64(v2) / float64(v1+v2); share < 0.02 || share > 0.25 {
		t.Fatalf("v2 served %.1f %% (v1 %d, v2 %d), want about 10 %%", share*100, v1, v2)
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-exited:
		stopped = true
	case <-time.After(30 * time.Second):
		t.Fatal("the stack did not stop on Ctrl-C")
	}
}
