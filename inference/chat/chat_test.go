package chat

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/grammar"
)

var weather = inference.Tool{Name: "get_weather", Description: "Weather of a city",
	Parameters: []byte(`{"type":"object","properties":{"city":{"type":"string","maxLength":8}},"required":["city"],"additionalProperties":false}`)}

var conversation = []inference.Message{
	{Role: "system", Content: "be brief"},
	{Role: "user", Content: "Weather in Paris?"},
	{Role: "assistant", ToolCalls: []inference.ToolCall{{ID: "call_1", Name: "get_weather", Arguments: `{"city":"Paris"}`}}},
	{Role: "tool", ToolCallID: "call_1", Content: `{"temp_c":21}`},
}

// The formats as the families' own templates write them (Qwen2.5's
// tokenizer_config.json chat_template; Llama 3.1's JSON tool calling).
func TestRender(t *testing.T) {
	got, err := Render(ChatML, conversation, []inference.Tool{weather})
	if err != nil {
		t.Fatal(err)
	}
	want := "<|im_start|>system\nbe brief\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n" +
		"You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n" +
		`{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city", "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}}, "required": ["city"], "additionalProperties": false}}}` +
		"\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n" +
		"<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" +
		"<|im_start|>user\nWeather in Paris?<|im_end|>\n" +
		"<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n" +
		"<|im_start|>user\n<tool_response>\n{\"temp_c\":21}\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
	if got != want {
		t.Errorf("chatml:\n%s\nwant:\n%s", got, want)
	}
	got, _ = Render(Llama3, conversation, []inference.Tool{weather})
	for _, part := range []string{
		"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\n\nbe brief<|eot_id|>",
		"<|start_header_id|>user<|end_header_id|>\n\nGiven the following functions, please respond with a JSON for a function call",
		`{"type": "function", "function": {"name": "get_weather"`, "\n\nWeather in Paris?<|eot_id|>",
		"<|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}<|eot_id|>",
		"<|start_header_id|>ipython<|end_header_id|>\n\n{\"temp_c\":21}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
	} {
		if !strings.Contains(got, part) {
			t.Errorf("llama3 lacks %q:\n%s", part, got)
		}
	}
	// Without tools, the plain formats.
	got, _ = Render(ChatML, conversation[:2], nil)
	if got != "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n" {
		t.Errorf("plain chatml %q", got)
	}
	if _, err := Render(ChatML, []inference.Message{{Role: "robot"}}, nil); err == nil {
		t.Error("unknown role accepted")
	}
	// Llama 2 / Mistral: the system turn in the first [INST]; no tools.
	got, err = Render(Llama2, []inference.Message{{Role: "system", Content: "be brief"}, {Role: "user", Content: "hi"},
		{Role: "assistant", Content: "hello"}, {Role: "user", Content: "bye"}}, nil)
	if err != nil || got != "[INST] <<SYS>>\nbe brief\n<</SYS>>\n\nhi [/INST] hello </s><s>[INST] bye [/INST]" {
		t.Errorf("llama2 %q %v", got, err)
	}
	got, err = Render(GLM4, []inference.Message{{Role: "system", Content: "be brief"}, {Role: "user", Content: "hi"},
		{Role: "assistant", Content: "hello"}, {Role: "user", Content: "bye"}}, nil)
	if want := "[gMASK]<sop><|system|>\nbe brief<|user|>\nhi<|assistant|>\nhello<|user|>\nbye<|assistant|>"; got != want || err != nil {
		t.Errorf("glm4 %q %v", got, err)
	}
	if _, err := Render(GLM4, conversation[:2], []inference.Tool{weather}); err == nil {
		t.Error("glm4 fallback took tools")
	}
	if _, err := Render(Llama2, conversation[:2], []inference.Tool{weather}); err == nil {
		t.Error("tools accepted by a format without them")
	}
}

func TestParse(t *testing.T) {
	syn := Syntax(ChatML)
	for _, tc := range []struct {
		text, content string
		calls         []string // name:arguments
	}{
		{"<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>", "", []string{`get_weather:{"city":"Paris"}`}},
		{"Let me check.\n<tool_call>{\"name\":\"a\",\"arguments\":{}}</tool_call>\n<tool_call>{\"name\":\"b\",\"arguments\":{\"x\":1}}</tool_call>",
			"Let me check.", []string{"a:{}", `b:{"x":1}`}},
		{"<tool_call>{\"name\":\"a\",\"arguments\":[1]}</tool_call>", "<tool_call>{\"name\":\"a\",\"arguments\":[1]}</tool_call>", nil}, // not an object
		{"<tool_call>{\"name\":\"a\"", "<tool_call>{\"name\":\"a\"", nil},                                                               // cut
		{"plain text", "plain text", nil},
	} {
		calls, content := Parse(tc.text, syn)
		var got []string
		for _, c := range calls {
			got = append(got, c.Name+":"+c.Arguments)
		}
		if content != tc.content || strings.Join(got, "|") != strings.Join(tc.calls, "|") {
			t.Errorf("%q: calls %v content %q, want %v %q", tc.text, got, content, tc.calls, tc.content)
		}
	}
	calls, content := Parse(`{"name": "get_weather", "parameters": {"city": "Oslo"}}`, Syntax(Llama3))
	if len(calls) != 1 || calls[0].Arguments != `{"city":"Oslo"}` || content != "" {
		t.Errorf("llama3 call %v %q", calls, content)
	}
	if calls, _ := Parse(`{"answer": 42}`, Syntax(Llama3)); calls != nil {
		t.Errorf("a JSON reply without a name taken for a call: %v", calls)
	}
}

// Whatever the tool grammar lets a model write parses back into a call of
// one of the tools with valid arguments.
func TestToolGrammarParsesBack(t *testing.T) {
	other := inference.Tool{Name: "get_time", Parameters: []byte(`{"type":"object","properties":{"zone":{"enum":["utc","cet"]}},"required":["zone"]}`)}
	for _, format := range []string{ChatML, Llama3} {
		syn := Syntax(format)
		g, err := ToolGrammar([]inference.Tool{weather, other}, "", syn)
		if err != nil {
			t.Fatal(err)
		}
		pieces := make([][]byte, 257)
		for b := range 256 {
			pieces[b] = []byte{byte(b)}
		}
		v := grammar.NewVocab(257, func(t int) []byte { return pieces[t] }, func(t int) bool { return t == 256 }, func(int) bool { return false })
		rng := rand.New(rand.NewPCG(1, 2))
		names := map[string]bool{}
		for range 30 {
			c, err := v.Constrain(g, 120)
			if err != nil {
				t.Fatal(err)
			}
			var out []byte
			logits := make([]float32, 257)
			for {
				for i := range logits {
					logits[i] = float32(rng.NormFloat64())
				}
				c.Mask(logits)
				best := 0
				for i, x := range logits {
					if x > logits[best] {
						best = i
					}
				}
				c.Accept(best, pieces[best])
				if best == 256 {
					break
				}
				out = append(out, pieces[best]...)
			}
			calls, content := Parse(string(out), syn)
			if len(calls) != 1 || content != "" {
				t.Fatalf("%s: %q parsed as %v + %q", format, out, calls, content)
			}
			names[calls[0].Name] = true
			var args map[string]any
			if err := json.Unmarshal([]byte(calls[0].Arguments), &args); err != nil {
				t.Fatal(err)
			}
			if calls[0].Name == "get_weather" && len(args["city"].(string)) > 8*4 || calls[0].Name == "get_time" && args["zone"] != "utc" && args["zone"] != "cet" {
				t.Fatalf("arguments %v", args)
			}
		}
		if len(names) != 2 {
			t.Errorf("%s: only %v called in 30 tries", format, names)
		}
	}
	if _, err := ToolGrammar([]inference.Tool{weather}, "nope", Syntax(ChatML)); err == nil {
		t.Error("a grammar for an unknown tool")
	}
}
