package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// proc is a running sidecar binary.
type proc struct {
	cmd    *exec.Cmd
	stderr *logBuffer
	base   string
}

// logBuffer collects a process's output while the test reads it.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startSidecar(t *testing.T, bin, yaml string) *proc {
	t.Helper()
	return startSidecarEnv(t, bin, yaml)
}

// startSidecarEnv starts a sidecar binary with the extra environment
// variables env (NAME=value).
func startSidecarEnv(t *testing.T, bin, yaml string, env ...string) *proc {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "sidecar.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: exec.Command(bin, "-config", cfg), stderr: &logBuffer{}}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait() })
	return p
}

func readyz(base string) int {
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func waitReady(t *testing.T, p *proc) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); readyz(p.base) != 200; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready:\n%s", p.base, p.stderr.String())
		}
	}
}

// TestRemoteEngineBinary runs two sidecar binaries: one serves the model
// (the test engine standing in for vLLM), the other runs it as its remote
// engine. The remote one starts first, as containers of a pod may: it
// stays not ready until the upstream answers, then serves an OpenAI
// client with the upstream's answers.
func TestRemoteEngineBinary(t *testing.T) {
	bin := build(t)
	upAddr, remoteAddr := freePort(t), freePort(t)
	rs := startSidecar(t, bin, fmt.Sprintf(`server:
  http_addr: %s
  grpc_addr: ""
engine:
  kind: remote
  model: tiny
  remote:
    url: http://%s
    model: upstream-tiny
`, remoteAddr, upAddr))
	rs.base = "http://" + remoteAddr
	for deadline := time.Now().Add(30 * time.Second); readyz(rs.base) != 503; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("remote sidecar: /readyz is not 503 while its upstream is down:\n%s", rs.stderr.String())
		}
	}
	time.Sleep(300 * time.Millisecond)
	if code := readyz(rs.base); code != 503 {
		t.Fatalf("ready (%d) without an upstream", code)
	}
	up := startSidecar(t, bin, fmt.Sprintf(`server:
  http_addr: %s
  grpc_addr: ""
engine:
  kind: test
  model: upstream-tiny
  test:
    step_cost: 2ms
batch:
  max_batch_size: 12
`, upAddr))
	up.base = "http://" + upAddr
	waitReady(t, up)
	waitReady(t, rs)
	if !strings.Contains(rs.stderr.String(), `"concurrency":12`) {
		t.Errorf("the concurrency was not read from the upstream's metrics:\n%s", rs.stderr.String())
	}

	ctx := context.Background()
	params := openai.ChatCompletionNewParams{Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")}, MaxTokens: openai.Int(24)}
	upc := openai.NewClient(option.WithBaseURL(up.base+"/v1/"), option.WithAPIKey("x"), option.WithMaxRetries(0))
	rsc := openai.NewClient(option.WithBaseURL(rs.base+"/v1/"), option.WithAPIKey("x"), option.WithMaxRetries(0))
	params.Model = "upstream-tiny"
	direct, err := upc.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	params.Model = "tiny"
	via, err := rsc.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if via.Model != "tiny" || via.Choices[0].Message.Content != direct.Choices[0].Message.Content || via.Usage.PromptTokens != direct.Usage.PromptTokens || via.Usage.CompletionTokens != direct.Usage.CompletionTokens {
		t.Fatalf("via the remote engine: %+v; directly: %+v", via, direct)
	}
	st := rsc.Chat.Completions.NewStreaming(ctx, params)
	var text strings.Builder
	for st.Next() {
		if ch := st.Current().Choices; len(ch) > 0 {
			text.WriteString(ch[0].Delta.Content)
		}
	}
	if err := st.Err(); err != nil || text.String() != direct.Choices[0].Message.Content {
		t.Fatalf("streamed %q (%v), want %q", text.String(), err, direct.Choices[0].Message.Content)
	}
}
