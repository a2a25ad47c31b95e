package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func xdsConfig(w1, w2 int) string {
	return fmt.Sprintf(`apiVersion: autoglm.io/v1alpha1
listeners:
  http: {name: autoglm-http, address: 127.0.0.1, port: 10000}
models:
  - name: tiny
    versions:
      - {name: v1, weight: %d, endpoints: ["127.0.0.1:8081"]}
      - {name: v2, weight: %d, endpoints: ["127.0.0.1:8082"]}
`, w1, w2)
}

func xdsStatus(t *testing.T, base string) (version, lastError string) {
	resp, err := http.Get(base + "/status")
	if err != nil {
		return "", ""
	}
	defer resp.Body.Close()
	var st struct {
		Version   string `json:"version"`
		LastError string `json:"last_error"`
	}
	json.NewDecoder(resp.Body).Decode(&st)
	return st.Version, st.LastError
}

// TestXDSBinary: autoglm-xds validates, renders, serves a watched file
// (a change is published, a broken edit is not), and prints a bootstrap.
func TestXDSBinary(t *testing.T) {
	bin := buildCmd(t, "xds/cmd/autoglm-xds")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "models.yaml")
	os.WriteFile(cfg, []byte(xdsConfig(90, 10)), 0o644)

	out, err := exec.Command(bin, "validate", "-config", cfg).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ok: 1 models") {
		t.Fatalf("validate: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "render", "-config", cfg).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "name: tiny-v2") || !strings.Contains(string(out), "weight: 90") {
		t.Fatalf("render: %v\n%s", err, out)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(strings.Replace(xdsConfig(90, 10), "weight: 10", "weight: 500", 1)), 0o644)
	out, err = exec.Command(bin, "validate", "-config", bad).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "models[0].versions[1].weight: must be 0..100, got 500") {
		t.Fatalf("validate bad: %v\n%s", err, out)
	}
	plan := filepath.Join(dir, "plan.yaml")
	os.WriteFile(plan, []byte("model: tiny\nstable: v1\ncanary: v1\nsteps: [{weight: 10, hold: 1m}]\ninterval: 5s\nslo: {max_eror_rate: 0.01}\n"), 0o644)
	out, err = exec.Command(bin, "serve", "-config", cfg, "-rollout", plan).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "slo.max_eror_rate (line 6): unknown field") {
		t.Fatalf("bad plan: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "bootstrap", "-node", "e1", "-ads", "127.0.0.1:18000").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "id: e1") {
		t.Fatalf("bootstrap: %v\n%s", err, out)
	}

	ads, status := freePort(t), freePort(t)
	cmd := exec.Command(bin, "serve", "-config", cfg, "-ads", ads, "-status", status, "-debounce", "50ms")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	base := "http://" + status
	var first string
	for deadline := time.Now().Add(20 * time.Second); first == ""; time.Sleep(20 * time.Millisecond) {
		if first, _ = xdsStatus(t, base); time.Now().After(deadline) {
			t.Fatalf("nothing published:\n%s", stderr.String())
		}
	}
	if readyz(base) != 200 {
		t.Fatal("not ready with a published version")
	}
	if resp, err := http.Get(base + "/metrics"); err != nil {
		t.Fatal(err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), `autoglm_xds_snapshot_info{version="`+first+`"} 1`) {
			t.Fatalf("metrics:\n%s", b)
		}
	}
	os.WriteFile(cfg, []byte(xdsConfig(50, 50)), 0o644)
	var second string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if second, _ = xdsStatus(t, base); second != first {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the change was not published")
		}
	}
	os.WriteFile(cfg, []byte("apiVersion: nope\n"), 0o644)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		v, e := xdsStatus(t, base)
		if e != "" {
			if v != second || !strings.Contains(e, "apiVersion") {
				t.Fatalf("after a broken edit: version %s error %q", v, e)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the broken edit was not reported")
		}
	}
	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, stderr.String())
	}
}
