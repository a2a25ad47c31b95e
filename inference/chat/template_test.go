package chat

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/open-autoglm/autoglm/inference"
)

// realTemplate is a model's own chat template, from the test data of the
// Jinja module (templates taken from the models' GGUF files).
func realTemplate(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/ardanlabs/jinja").Output()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "testdata", "templates", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Qwen3's own template renders what the ChatML fallback writes (which
// follows Qwen2.5's template): a plain conversation, and one with tools,
// a call and its result.
func TestQwenTemplateMatchesFallback(t *testing.T) {
	tpl, err := Compile(realTemplate(t, "Qwen3-8B-Q8_0.jinja"), "", "<|im_end|>")
	if err != nil {
		t.Fatal(err)
	}
	if tpl.Syntax() != Syntax(ChatML) {
		t.Fatalf("syntax %+v", tpl.Syntax())
	}
	for _, tc := range []struct {
		msgs  []inference.Message
		tools []inference.Tool
	}{{conversation[:2], nil}, {conversation, []inference.Tool{weather}}} {
		got, err := tpl.Render(tc.msgs, tc.tools)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := Render(ChatML, tc.msgs, tc.tools)
		if got != want {
			t.Errorf("Qwen3's template:\n%q\nthe ChatML fallback:\n%q", got, want)
		}
	}
}

// Llama 3.2's own template: tools in the first user turn, the call as
// JSON with "parameters", the result in an ipython turn.
func TestLlamaTemplate(t *testing.T) {
	tpl, err := Compile(realTemplate(t, "Llama-3.2-1B-Instruct-GGUF.jinja"), "<|begin_of_text|>", "<|eot_id|>")
	if err != nil {
		t.Fatal(err)
	}
	if tpl.Syntax() != Syntax(Llama3) {
		t.Fatalf("syntax %+v", tpl.Syntax())
	}
	got, err := tpl.Render(conversation, []inference.Tool{weather})
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range []string{
		"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\n",
		"be brief<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nGiven the following functions",
		`"name": "get_weather"`, "Weather in Paris?<|eot_id|>",
		`<|start_header_id|>assistant<|end_header_id|>` + "\n\n" + `{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>`,
		// The template writes a string result through tojson (a string
		// "is iterable" in Jinja), as Hugging Face's rendering does.
		`<|start_header_id|>ipython<|end_header_id|>` + "\n\n" + `"{\"temp_c\":21}"<|eot_id|>`,
	} {
		if !strings.Contains(got, part) {
			t.Errorf("lacks %q:\n%s", part, got)
		}
	}
	if !strings.HasSuffix(got, "<|start_header_id|>assistant<|end_header_id|>\n\n") {
		t.Errorf("does not end at the assistant's turn:\n%q", got)
	}
}
