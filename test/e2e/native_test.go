package e2e

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/open-autoglm/autoglm/inference/llama/tiny"
	"github.com/open-autoglm/autoglm/inference/tokenizer"
)

// TestNativeEngineBinary: the sidecar on the native engine with its
// built-in tiny model (written to the user's cache on first start) answers
// an OpenAI client, streamed and not, with usage.
func TestNativeEngineBinary(t *testing.T) {
	bin := build(t)
	home := t.TempDir()
	addr := freePort(t)
	cfg := filepath.Join(t.TempDir(), "native.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("server: {http_addr: %s, grpc_addr: \"\"}\nengine: {kind: native, model: autoglm-tiny, native: {slots: 4, context_length: 256}}\n", addr)), 0o600)
	p := &proc{cmd: exec.Command(bin, "-config", cfg), stderr: &logBuffer{}, base: "http://" + addr}
	p.cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CACHE_HOME="+filepath.Join(home, ".cache"))
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait() })
	waitReady(t, p)
	if _, err := os.Stat(filepath.Join(home, ".cache", "autoglm", "autoglm-tiny-v2.gguf")); err != nil {
		t.Fatalf("built-in model not in the cache: %v", err)
	}
	c := openai.NewClient(option.WithBaseURL(p.base+"/v1/"), option.WithAPIKey("x"), option.WithMaxRetries(0))
	params := openai.ChatCompletionNewParams{Model: "autoglm-tiny", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")},
		MaxTokens: openai.Int(12), Temperature: openai.Float(0)}
	a, err := c.Chat.Completions.New(context.Background(), params)
	if err != nil || a.Usage.CompletionTokens < 1 || a.Usage.PromptTokens < 5 {
		t.Fatalf("%+v %v\n%s", a, err, p.stderr)
	}
	b, err := c.Chat.Completions.New(context.Background(), params)
	if err != nil || b.Choices[0].Message.Content != a.Choices[0].Message.Content {
		t.Fatalf("greedy decoding must repeat: %q vs %q (%v)", a.Choices[0].Message.Content, b.Choices[0].Message.Content, err)
	}
	if !strings.Contains(p.stderr.String(), "native llama, 4 layers, Q8_0 weights") {
		t.Errorf("log does not describe the engine:\n%s", p.stderr)
	}
}

// TestQuantizeCommand: `autoglm-sidecar quantize` turns an F32 model into
// a smaller Q8_0 one (the default) or a Q4_K_M one that the native engine
// serves.
func TestQuantizeCommand(t *testing.T) {
	bin := build(t)
	for _, tc := range []struct {
		recipe  string
		embd    int
		ratio   float64 // at least this much smaller
		weights string  // as the start-up log names them
	}{
		{"", 64, 3, "Q8_0 weights"},
		{"Q4_K_M", 256, 5.5, "Q4_K+Q6_K weights"},
	} {
		t.Run(cmp.Or(tc.recipe, "default"), func(t *testing.T) {
			dir := t.TempDir()
			in, out := filepath.Join(dir, "f32.gguf"), filepath.Join(dir, "q.gguf")
			var b bytes.Buffer
			vocab := tokenizer.Vocabulary(nil)
			if err := tiny.WriteWith(&b, tiny.Config{Vocab: 259, Embd: tc.embd, Layers: 2, Heads: 4, FF: 2 * tc.embd, Context: 128, Seed: 3}, vocab); err != nil {
				t.Fatal(err)
			}
			os.WriteFile(in, b.Bytes(), 0o644)
			args := []string{"quantize", in, out}
			if tc.recipe != "" {
				args = append(args, tc.recipe)
			}
			o, err := exec.Command(bin, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("quantize: %v\n%s", err, o)
			}
			st, err := os.Stat(out)
			if err != nil || float64(st.Size()) > float64(b.Len())/tc.ratio {
				t.Fatalf("quantized file %v bytes from %d (%v)", st.Size(), b.Len(), err)
			}
			// A model file others can read (not CreateTemp's 0600), and a
			// word on what was done.
			if st.Mode().Perm() != 0o644 || !strings.Contains(string(o), "wrote "+out) {
				t.Errorf("quantized file mode %v, output %q", st.Mode().Perm(), o)
			}
			addr := freePort(t)
			p := &proc{cmd: exec.Command(bin, "-engine", "native", "-native-model", out, "-model", "q", "-http-addr", addr, "-grpc-addr", ""), stderr: &logBuffer{}, base: "http://" + addr}
			p.cmd.Stderr = p.stderr
			if err := p.cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait() })
			waitReady(t, p)
			if !strings.Contains(p.stderr.String(), tc.weights) {
				t.Fatalf("not served with %s:\n%s", tc.weights, p.stderr)
			}
			resp, err := http.Post(p.base+"/v1/completions", "application/json", strings.NewReader(`{"model":"q","prompt":"hello","max_tokens":8,"seed":1}`))
			if err != nil {
				t.Fatal(err)
			}
			var c struct {
				Usage struct {
					CompletionTokens int `json:"completion_tokens"`
				} `json:"usage"`
			}
			json.NewDecoder(resp.Body).Decode(&c)
			resp.Body.Close()
			if resp.StatusCode != 200 || c.Usage.CompletionTokens == 0 {
				t.Fatalf("completion: %d, %+v", resp.StatusCode, c)
			}
		})
	}
	if o, err := exec.Command(bin, "quantize", "in.gguf").CombinedOutput(); err == nil || !strings.Contains(string(o), "usage") {
		t.Fatalf("bad usage: %v %s", err, o)
	}
	if o, err := exec.Command(bin, "quantize", "in.gguf", "out.gguf", "Q3_K_S").CombinedOutput(); err == nil || !strings.Contains(string(o), "Q4_K_M") {
		t.Fatalf("unknown type: %v %s", err, o)
	}
}
