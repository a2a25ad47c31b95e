package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/open-autoglm/autoglm/internal/schematest"
	"github.com/open-autoglm/autoglm/internal/toolcache"
)

// nodeSDK is the OpenAI Node SDK that make node-sdk installs.
func nodeSDK(t *testing.T) string { return filepath.Join(toolcache.NodeModules(t), "openai") }

// nodeReport is what test/nodesdk/check.cjs got from the sidecar.
type nodeReport struct {
	Schema     json.RawMessage `json:"schema"`
	Structured []string        `json:"structured"`
	Call       struct {
		Finish  string     `json:"finish"`
		Calls   []nodeCall `json:"calls"`
		Content *string    `json:"content"`
	} `json:"call"`
	Answer struct {
		Content           *string    `json:"content"`
		Calls             []nodeCall `json:"calls"`
		Finish            string     `json:"finish"`
		PromptTokens      int        `json:"promptTokens"`
		FirstPromptTokens int        `json:"firstPromptTokens"`
	} `json:"answer"`
	Streamed struct {
		Calls  []nodeCall `json:"calls"`
		Finish string     `json:"finish"`
		Chunks int        `json:"chunks"`
	} `json:"streamed"`
	Logprobs []struct {
		Token   string  `json:"token"`
		Logprob float64 `json:"logprob"`
		Top     int     `json:"top"`
	} `json:"logprobs"`
	LogprobTokens int `json:"logprobTokens"`
	Embeddings    []struct {
		Index  int     `json:"index"`
		Length int     `json:"length"`
		Norm2  float64 `json:"norm2"`
	} `json:"embeddings"`
}

type nodeCall struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// TestNodeSDK: the official OpenAI Node SDK drives structured output, a
// tool round trip, a streamed tool call (joined by the SDK's stream
// helper), log probabilities and embeddings (base64, the SDK's default)
// against a native-engine sidecar binary, and the same through a
// remote-engine sidecar in front of it (everything passed through).
func TestNodeSDK(t *testing.T) {
	sdk := nodeSDK(t)
	bin := build(t)
	home := t.TempDir()
	nativeAddr, remoteAddr := freePort(t), freePort(t)
	env := []string{"HOME=" + home, "XDG_CACHE_HOME=" + filepath.Join(home, ".cache")}
	native := startSidecarEnv(t, bin, fmt.Sprintf(`server: {http_addr: %s, grpc_addr: ""}
engine: {kind: native, model: autoglm-tiny, native: {slots: 8, context_length: 1024}}
`, nativeAddr), env...)
	native.base = "http://" + nativeAddr
	waitReady(t, native)
	remote := startSidecar(t, bin, fmt.Sprintf(`server: {http_addr: %s, grpc_addr: ""}
engine: {kind: remote, model: agents, remote: {url: http://%s, model: autoglm-tiny, concurrency: 8}}
`, remoteAddr, nativeAddr))
	remote.base = "http://" + remoteAddr
	waitReady(t, remote)

	for _, tc := range []struct{ name, base, model string }{{"native", native.base, "autoglm-tiny"}, {"remote", remote.base, "agents"}} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("node", "../nodesdk/check.cjs", tc.base, tc.model)
			cmd.Env = append(os.Environ(), "OPENAI_MODULE="+sdk)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("node: %v\n%s\nnative sidecar:\n%s", err, stderr.String(), native.stderr.String())
			}
			var r nodeReport
			if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
				t.Fatalf("%v: %s", err, stdout.String())
			}
			schema := schematest.Compile(t, r.Schema)
			if len(r.Structured) != 2 {
				t.Fatalf("%d structured choices", len(r.Structured))
			}
			for _, s := range r.Structured {
				schematest.Validate(t, schema, []byte(s))
			}
			args := schematest.Compile(t, []byte(`{"type":"object","properties":{"city":{"type":"string","maxLength":12}},"required":["city"],"additionalProperties":false}`))
			if r.Call.Finish != "tool_calls" || len(r.Call.Calls) != 1 || r.Call.Calls[0].Function.Name != "get_weather" ||
				!strings.HasPrefix(r.Call.Calls[0].ID, "call_") || r.Call.Content != nil {
				t.Fatalf("tool call %+v", r.Call)
			}
			schematest.Validate(t, args, []byte(r.Call.Calls[0].Function.Arguments))
			// A text reply (a random model may end it at once), with the call
			// and the tool's result in its prompt.
			if r.Answer.Content == nil || len(r.Answer.Calls) != 0 || (r.Answer.Finish != "stop" && r.Answer.Finish != "length") ||
				r.Answer.PromptTokens <= r.Answer.FirstPromptTokens {
				t.Fatalf("answer after the tool's result %+v", r.Answer)
			}
			if len(r.Streamed.Calls) != 1 || r.Streamed.Calls[0].Function.Arguments != r.Call.Calls[0].Function.Arguments ||
				r.Streamed.Finish != "tool_calls" || r.Streamed.Chunks < 3 {
				t.Fatalf("streamed call %+v, whole %+v", r.Streamed, r.Call.Calls)
			}
			if len(r.Logprobs) == 0 || len(r.Logprobs) != r.LogprobTokens {
				t.Fatalf("logprobs %+v", r.Logprobs)
			}
			for _, lp := range r.Logprobs {
				if lp.Logprob > 0 || lp.Top != 2 {
					t.Fatalf("logprob %+v", lp)
				}
			}
			if len(r.Embeddings) != 2 || r.Embeddings[1].Index != 1 || r.Embeddings[0].Length < 64 || math.Abs(r.Embeddings[0].Norm2-1) > 1e-4 {
				t.Fatalf("embeddings %+v", r.Embeddings)
			}
		})
	}
}
