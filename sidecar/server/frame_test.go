package server

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/testengine"
)

// bosEngine's tokenizer asks for a BOS (token 1) before every prompt, as a
// SentencePiece GGUF does.
type bosEngine struct{ *testengine.Engine }

type bosTokenizer struct{ inference.Tokenizer }

func (e bosEngine) Tokenizer() inference.Tokenizer { return bosTokenizer{e.Engine.Tokenizer()} }

func (bosTokenizer) FramePrompt(p []int) []int { return append([]int{1}, p...) }

// TestPromptFramedWithBOS: a text prompt gets the BOS the tokenizer asks
// for, and usage.prompt_tokens counts it; a prompt of token ids is sent as
// given.
func TestPromptFramedWithBOS(t *testing.T) {
	sc := startWith(t, testConfig(), bosEngine{testengine.New(testengine.Config{Model: "autoglm-test"})})
	usage := func(body string) int {
		resp, err := http.Post(sc.url+"/v1/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var v struct {
			Usage struct {
				PromptTokens int `json:"prompt_tokens"`
			} `json:"usage"`
		}
		if resp.StatusCode != 200 || json.Unmarshal(b, &v) != nil {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
		return v.Usage.PromptTokens
	}
	// The test engine's tokens are bytes: "hello" is 5, with BOS 6.
	if n := usage(`{"model":"autoglm-test","prompt":"hello","max_tokens":1}`); n != 6 {
		t.Fatalf("text prompt: %d prompt tokens, want 6 (BOS counted)", n)
	}
	if n := usage(`{"model":"autoglm-test","prompt":[104,105],"max_tokens":1}`); n != 2 {
		t.Fatalf("token prompt: %d prompt tokens, want 2", n)
	}
}
