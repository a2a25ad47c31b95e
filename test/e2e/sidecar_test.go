package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

func build(t *testing.T) string {
	t.Helper()
	return buildCmd(t, "sidecar/cmd/autoglm-sidecar")
}

// buildCmd builds the command in the module's directory dir.
func buildCmd(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(dir))
	out, err := exec.Command("go", "build", "-o", bin, "github.com/open-autoglm/autoglm/"+dir).CombinedOutput()
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestSidecarBinary(t *testing.T) {
	bin := build(t)
	httpAddr, grpcAddr := freePort(t), freePort(t)
	cfg := filepath.Join(t.TempDir(), "sidecar.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`server:
  http_addr: %s
  grpc_addr: %s
  drain_timeout: 20s
engine:
  kind: test
  model: tiny
  test:
    step_cost: 5ms
`, httpAddr, grpcAddr)), 0o600)
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "-config", cfg)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer cmd.Process.Kill()

	base := "http://" + httpAddr
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(stderr.String(), "TEST ENGINE") {
		t.Errorf("the test engine must be labelled as such in the output:\n%s", stderr.String())
	}

	c := openai.NewClient(option.WithBaseURL(base+"/v1/"), option.WithAPIKey("x"), option.WithMaxRetries(0))
	stream := c.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
		Model: "tiny", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")}, MaxTokens: openai.Int(200),
	})
	if !stream.Next() {
		t.Fatalf("no first chunk: %v", stream.Err())
	}
	// SIGTERM while the stream is in flight: it must finish, then the
	// process exits 0.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	finish := ""
	for stream.Next() {
		if ch := stream.Current().Choices; len(ch) > 0 {
			text.WriteString(ch[0].Delta.Content)
			if ch[0].FinishReason != "" {
				finish = ch[0].FinishReason
			}
		}
	}
	if err := stream.Err(); err != nil || finish != "length" {
		t.Fatalf("stream during drain: finish %q err %v", finish, err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after drain: %v\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit after drain")
	}
	if !strings.Contains(stderr.String(), `"msg":"drained"`) {
		t.Errorf("no drain in the log:\n%s", stderr.String())
	}
}

func TestSidecarBadConfig(t *testing.T) {
	bin := build(t)
	cfg := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(cfg, []byte("batch:\n  max_batch_size: 0\n  max_batch_sise: 3\n"), 0o600)
	out, err := exec.Command(bin, "-config", cfg).CombinedOutput()
	if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("exit %v, want 2:\n%s", err, out)
	}
	if !strings.Contains(string(out), "batch.max_batch_sise (line 3): unknown field") {
		t.Fatalf("error does not name the field path:\n%s", out)
	}
}

// TestCLIConvention: the three binaries share one command line: `help`
// prints usage and exits 0 (it used to start a server), `version` and
// -version print the build, stray arguments and unknown commands exit 2.
func TestCLIConvention(t *testing.T) {
	for _, dir := range []string{"sidecar/cmd/autoglm-sidecar", "xds/cmd/autoglm-xds", "test/cmd/autoglm-load"} {
		bin := buildCmd(t, dir)
		name := filepath.Base(dir)
		for _, c := range []struct {
			args []string
			code int
			out  string
		}{
			{[]string{"help"}, 0, "usage:"},
			{[]string{"version"}, 0, name + " "},
			{[]string{"-version"}, 0, name + " "},
			{[]string{"version", "x"}, 2, "takes no arguments"},
			{[]string{"nonsense"}, 2, `unknown command "nonsense"`},
		} {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			out, err := exec.CommandContext(ctx, bin, c.args...).CombinedOutput()
			cancel()
			code := 0
			if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatalf("%s %q: %v", name, c.args, err)
			}
			if code != c.code || !strings.Contains(string(out), c.out) {
				t.Errorf("%s %q: exit %d, output %q; want exit %d and %q", name, c.args, code, out, c.code, c.out)
			}
		}
	}
	// A stray argument after the flags is refused, not ignored.
	bin := build(t)
	out, err := exec.Command(bin, "-http-addr", "127.0.0.1:0", "stray").CombinedOutput()
	if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), `unexpected arguments ["stray"]`) {
		t.Errorf("stray argument: %v %s", err, out)
	}
}
