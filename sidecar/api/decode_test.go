package api

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestDecodeChat(t *testing.T) {
	r, err := DecodeChat([]byte(`{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi "},{"type":"text","text":"there"}]}],"max_completion_tokens":7,"stop":"\n","stream":true,"stream_options":{"include_usage":true},"seed":3,"temperature":0}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.Messages[1].Content.Text != "hi there" || *r.MaxTokens != 7 || len(r.Stop) != 1 || !r.StreamOptions.IncludeUsage || *r.Seed != 3 {
		t.Fatalf("%+v", r)
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body, param, msg string
	}{
		{"malformed", `{"model":`, "", "invalid JSON body"},
		{"not an object", `[1,2]`, "", "JSON object"},
		{"trailing", `{"model":"m","messages":[{"role":"user","content":"x"}]} {}`, "", "after the top-level object"},
		{"wrong type", `{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":"ten"}`, "max_tokens", "expected an integer"},
		{"unknown field", `{"model":"m","messages":[{"role":"user","content":"x"}],"bogus":1}`, "bogus", "Unrecognized request argument"},
		{"no messages", `{"model":"m","messages":[]}`, "messages", "at least one"},
		{"no model", `{"messages":[{"role":"user","content":"x"}]}`, "model", "is required"},
		{"bad role", `{"model":"m","messages":[{"role":"robot","content":"x"}]}`, "messages[0].role", "must be one of"},
		{"missing content", `{"model":"m","messages":[{"role":"user"}]}`, "messages[0].content", "is required"},
		{"image part", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, "messages[0].content", "only text content parts"},
		{"zero max", `{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}`, "max_tokens", "at least 1"},
		{"negative max", `{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-5}`, "max_tokens", "at least 1"},
		{"all problems", `{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3,"top_p":0,"n":17}`, "temperature", "n: must be between 1 and 16"},
		{"stream options", `{"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}}`, "stream_options", "only allowed"},
		{"too many stops", `{"model":"m","messages":[{"role":"user","content":"x"}],"stop":["a","b","c","d","e"]}`, "stop", "at most 4"},
		{"tool name", `{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":""}}]}`, "tools[0].function.name", "must be 1 to 64"},
		{"tool type", `{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"web","function":{"name":"f"}}]}`, "tools[0].type", "only \"function\""},
		{"tool schema", `{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":[1]}}]}`, "tools[0].function.parameters", "must be a JSON Schema object"},
		{"tool twice", `{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}},{"type":"function","function":{"name":"f"}}]}`, "tools[1].function.name", "declared twice"},
		{"choice unknown", `{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"g"}}}`, "tool_choice.function.name", "not among the tools"},
		{"choice without tools", `{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":"required"}`, "tool_choice", "needs tools"},
		{"tool message", `{"model":"m","messages":[{"role":"tool","content":"x"}]}`, "messages[0].tool_call_id", "is required"},
		{"user tool calls", `{"model":"m","messages":[{"role":"user","content":"x","tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"{}"}}]}]}`, "messages[0].tool_calls", "only assistant"},
		{"schema name", `{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"schema":{}}}}`, "response_format.json_schema.name", "is required"},
		{"format type", `{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"xml"}}`, "response_format.type", "must be text, json_object or json_schema"},
		{"top logprobs", `{"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":21}`, "top_logprobs", "between 0 and 20"},
		{"top without logprobs", `{"model":"m","messages":[{"role":"user","content":"x"}],"top_logprobs":2}`, "top_logprobs", "requires logprobs"},
		{"invalid utf8", "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}", "", "UTF-8"},
		{"empty", ``, "", "empty or truncated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeChat([]byte(tc.body))
			if err == nil {
				t.Fatal("accepted")
			}
			if err.Status != 400 || err.Type != "invalid_request_error" || !strings.Contains(err.Message, tc.msg) {
				t.Fatalf("got %d %s %q", err.Status, err.Type, err.Message)
			}
			if got := ""; err.Param != nil {
				got = *err.Param
				if got != tc.param {
					t.Fatalf("param %q, want %q", got, tc.param)
				}
			} else if tc.param != "" {
				t.Fatalf("no param, want %q", tc.param)
			}
			var shape struct {
				Error struct {
					Message string  `json:"message"`
					Type    string  `json:"type"`
					Param   *string `json:"param"`
					Code    *string `json:"code"`
				} `json:"error"`
			}
			if json.Unmarshal(err.JSON(), &shape) != nil || shape.Error.Message != err.Message {
				t.Fatalf("error body %s", err.JSON())
			}
		})
	}
}

func TestDecodeCompletion(t *testing.T) {
	for _, tc := range []struct {
		body   string
		text   string
		tokens int
		bad    string
	}{
		{body: `{"model":"m","prompt":"hello"}`, text: "hello"},
		{body: `{"model":"m","prompt":["hello"]}`, text: "hello"},
		{body: `{"model":"m","prompt":[1,2,3]}`, tokens: 3},
		{body: `{"model":"m","prompt":["a","b"]}`, bad: "only one prompt"},
		{body: `{"model":"m","prompt":[1,"a"]}`, bad: "only strings or only token ids"},
		{body: `{"model":"m"}`, bad: "prompt: is required"},
		{body: `{"model":"m","prompt":""}`, bad: "must not be empty"},
		{body: `{"model":"m","prompt":"x","echo":true}`, bad: "echo"},
		{body: `{"model":"m","prompt":{}}`, bad: "prompt must be"},
	} {
		r, err := DecodeCompletion([]byte(tc.body))
		if tc.bad != "" {
			if err == nil || !strings.Contains(err.Message, tc.bad) {
				t.Errorf("%s: got %v, want error with %q", tc.body, err, tc.bad)
			}
			continue
		}
		if err != nil || r.Prompt.Text != tc.text || len(r.Prompt.Tokens) != tc.tokens {
			t.Errorf("%s: %+v %v", tc.body, r, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":3,"stop":["a"]}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"}]}]}`,
		`{"model":"m","prompt":[1,2,3],"stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"m","prompt":["a"],"temperature":0.5,"top_k":4}`,
		`{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c"}]},{"role":"tool","tool_call_id":"c","content":"r"}],"tools":[{}],"n":2}`,
		`{"model":"m","prompt":["a","b"],"echo":true,"logprobs":2,"best_of":3}`,
		`{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"enum":[1,2]}}}}}],"tool_choice":{"type":"function","function":{"name":"f"}}}`,
		`{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"$defs":{"n":{"type":"array","items":{"$ref":"#/$defs/n"}}},"$ref":"#/$defs/n"}}},"logprobs":true,"top_logprobs":3}`,
		`{"model":"m","input":[[1,2],[3]],"encoding_format":"base64"}`,
		`{"model":`, `[]`, `null`, `""`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, dec := range []func([]byte) *Error{
			func(b []byte) *Error { _, err := DecodeChat(b); return err },
			func(b []byte) *Error { _, err := DecodeCompletion(b); return err },
			func(b []byte) *Error { _, err := DecodeEmbeddings(b); return err },
			func(b []byte) *Error {
				r, err := DecodeChatPassThrough(b)
				if err == nil {
					r.PassThrough()
				}
				return err
			},
			func(b []byte) *Error {
				r, err := DecodeCompletionPassThrough(b)
				if err == nil {
					r.PassThrough()
				}
				return err
			},
		} {
			if err := dec(b); err != nil && (err.Status != 400 || err.Message == "" || !json.Valid(err.JSON())) {
				t.Fatalf("bad error for %q: %+v", b, err)
			}
		}
	})
}

func TestContentEscapes(t *testing.T) {
	r, err := DecodeChat([]byte(`{"model":"m","messages":[{"role":"user","content":"plain é"},{"role":"user","content":"tab\there \"q\" \u00e9"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.Messages[0].Content.Text != "plain é" || r.Messages[1].Content.Text != "tab\there \"q\" é" {
		t.Fatalf("%q %q", r.Messages[0].Content.Text, r.Messages[1].Content.Text)
	}
}

// TestDuplicateMembers: names equal without case are refused at any
// depth; the same name in different objects is not a duplicate.
func TestDuplicateMembers(t *testing.T) {
	for body, dup := range map[string]bool{
		`{"model":"m","temperature":0,"Temperature":0.9,"messages":[{"role":"user","content":"x"}]}`:             true,
		`{"model":"m","messages":[{"role":"user","content":"x","Content":"y"}]}`:                                 true,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a","TEXT":"b"}]}]}`:           true,
		`{"model":"m","messages":[{"role":"user","content":"x"},{"role":"assistant","content":"y"}]}`:            false,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"model"}]}],"stop":["model"]}`: false,
	} {
		_, err := DecodeChat([]byte(body))
		if got := err != nil && strings.Contains(err.Message, "duplicate member"); got != dup {
			t.Errorf("%s: duplicate %v (%v), want %v", body, got, err, dup)
		}
	}
}
