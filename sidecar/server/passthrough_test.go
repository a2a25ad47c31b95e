package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/shared"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/remote"
)

// toolUpstream is an OpenAI-compatible upstream that implements tool
// calling, structured output, logprobs and n deterministically, as vLLM
// does, and names its model "up-model". It records the bodies it gets.
type toolUpstream struct {
	mu     sync.Mutex
	bodies []map[string]any
}

func (u *toolUpstream) record(req map[string]any) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.bodies = append(u.bodies, req)
}

func (u *toolUpstream) last() map[string]any {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.bodies[len(u.bodies)-1]
}

func (u *toolUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req map[string]any
	b, _ := io.ReadAll(r.Body)
	json.Unmarshal(b, &req)
	stream, _ := req["stream"].(bool)
	usage := map[string]any{"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
	switch {
	case r.URL.Path == "/v1/embeddings":
		u.record(req)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.25,-0.5,1]}],"model":"up-model","usage":{"prompt_tokens":2,"total_tokens":2}}`)
		return
	case r.URL.Path == "/v1/completions" && req["logprobs"] != nil:
		u.record(req)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id":"cmpl-up","object":"text_completion","created":1,"model":"up-model","choices":[{"index":0,"text":"once x",`+
			`"logprobs":{"tokens":["once"," x"],"token_logprobs":[null,-0.25],"top_logprobs":[null,{" x":-0.25," y":-1.5}],"text_offset":[0,4]},`+
			`"finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)
		return
	}
	if r.URL.Path == "/v1/completions" { // the sidecar's warm-up
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "data: {\"model\":\"up-model\",\"choices\":[{\"index\":0,\"text\":\"x\",\"finish_reason\":\"length\"}]}\n\n")
		fmt.Fprintf(w, "data: {\"model\":\"up-model\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}\n\ndata: [DONE]\n\n")
		return
	}
	u.record(req)
	msgs, _ := req["messages"].([]any)
	lastRole := ""
	if len(msgs) > 0 {
		lastRole, _ = msgs[len(msgs)-1].(map[string]any)["role"].(string)
	}
	n := 1
	if v, ok := req["n"].(float64); ok {
		n = int(v)
	}
	// What the model "says".
	var message map[string]any
	finish := "stop"
	switch rf, _ := req["response_format"].(map[string]any); {
	case req["tools"] != nil && lastRole != "tool":
		finish = "tool_calls"
		message = map[string]any{"role": "assistant", "content": nil, "tool_calls": []any{map[string]any{
			"id": "call_1", "type": "function", "function": map[string]any{"name": "get_weather", "arguments": `{"city":"Paris"}`}}}}
	case req["tools"] != nil:
		message = map[string]any{"role": "assistant", "content": "It is sunny in Paris."}
	case rf != nil && rf["type"] == "json_schema":
		message = map[string]any{"role": "assistant", "content": `{"city":"Paris","temp_c":21}`}
	default:
		message = map[string]any{"role": "assistant", "content": "x"}
	}
	var logprobs any
	if lp, _ := req["logprobs"].(bool); lp {
		logprobs = map[string]any{"content": []any{map[string]any{"token": "x", "logprob": -0.25, "bytes": []int{120},
			"top_logprobs": []any{map[string]any{"token": "x", "logprob": -0.25, "bytes": []int{120}}, map[string]any{"token": "y", "logprob": -1.5, "bytes": []int{121}}}}}}
	}
	if !stream {
		var choices []any
		for i := range n {
			choices = append(choices, map[string]any{"index": i, "message": message, "finish_reason": finish, "logprobs": logprobs})
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": "up-model", "choices": choices, "usage": usage})
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	chunk := func(delta map[string]any, fin any) {
		b, _ := json.Marshal(map[string]any{"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": "up-model",
			"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": fin}}})
		fmt.Fprintf(w, "data: %s\n\n", b)
		w.(http.Flusher).Flush()
	}
	if calls, ok := message["tool_calls"]; ok {
		call := calls.([]any)[0].(map[string]any)
		chunk(map[string]any{"role": "assistant", "tool_calls": []any{map[string]any{"index": 0, "id": call["id"], "type": "function",
			"function": map[string]any{"name": "get_weather", "arguments": ""}}}}, nil)
		chunk(map[string]any{"tool_calls": []any{map[string]any{"index": 0, "function": map[string]any{"arguments": `{"city":`}}}}, nil)
		chunk(map[string]any{"tool_calls": []any{map[string]any{"index": 0, "function": map[string]any{"arguments": `"Paris"}`}}}}, nil)
	} else {
		chunk(map[string]any{"role": "assistant", "content": message["content"]}, nil)
	}
	chunk(map[string]any{}, finish)
	if so, _ := req["stream_options"].(map[string]any); so != nil && so["include_usage"] == true {
		b, _ := json.Marshal(map[string]any{"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": "up-model", "choices": []any{}, "usage": usage})
		fmt.Fprintf(w, "data: %s\n\n", b)
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
}

// TestPassThroughToRemoteEngine: with a remote engine, what the sidecar
// does not implement itself reaches the engine as the client sent it and
// comes back as the engine answered — checked with the official Go SDK:
// a full tool-call round trip, tool-call deltas streamed and accumulated,
// structured output with a JSON schema, logprobs and n — while the
// sidecar still queues, counts and names the model as the client did.
func TestPassThroughToRemoteEngine(t *testing.T) {
	up := &toolUpstream{}
	hs := httptest.NewServer(up)
	defer hs.Close()
	rc, err := remote.New(remote.Config{URL: hs.URL, Model: "up-model"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.Engine.Remote.Concurrency = 2
	sc := startServer(t, NewRemote(cfg, rc, inference.Info{Model: "autoglm-test", ContextLength: 4096}, slog.New(slog.DiscardHandler)))
	c := client(sc)
	ctx := context.Background()
	tools := []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{
		Name: "get_weather", Parameters: shared.FunctionParameters{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}, "required": []string{"city"}},
	})}
	params := openai.ChatCompletionNewParams{Model: "autoglm-test", Tools: tools,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Weather in Paris?")}}

	// A tool call, then the tool's result and the final answer.
	first, err := c.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if first.Model != "autoglm-test" || first.Choices[0].FinishReason != "tool_calls" || len(first.Choices[0].Message.ToolCalls) != 1 ||
		first.Choices[0].Message.ToolCalls[0].Function.Name != "get_weather" || first.Choices[0].Message.ToolCalls[0].Function.Arguments != `{"city":"Paris"}` ||
		first.Usage.TotalTokens != 12 {
		t.Fatalf("tool call: %+v", first)
	}
	if got := up.last(); got["model"] != "up-model" || got["tools"] == nil {
		t.Fatalf("upstream got %v", got)
	}
	call := first.Choices[0].Message.ToolCalls[0]
	params.Messages = append(params.Messages, first.Choices[0].Message.ToParam(), openai.ToolMessage(`{"sky":"clear","temp_c":21}`, call.ID))
	second, err := c.Chat.Completions.New(ctx, params)
	if err != nil || second.Choices[0].Message.Content != "It is sunny in Paris." {
		t.Fatalf("after the tool's result: %+v %v", second, err)
	}
	sent, _ := up.last()["messages"].([]any)
	if len(sent) != 3 || sent[2].(map[string]any)["tool_call_id"] != call.ID {
		t.Fatalf("the tool's result did not reach the upstream: %v", sent)
	}

	// Streamed: the tool call arrives as deltas the SDK's accumulator joins.
	params.Messages = params.Messages[:1]
	st := c.Chat.Completions.NewStreaming(ctx, params)
	acc := openai.ChatCompletionAccumulator{}
	chunks, usageChunks := 0, 0
	for st.Next() {
		ck := st.Current()
		acc.AddChunk(ck)
		chunks++
		if ck.Model != "autoglm-test" {
			t.Errorf("chunk names model %q", ck.Model)
		}
		if len(ck.Choices) == 0 {
			usageChunks++
		}
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	if chunks != 4 || usageChunks != 0 || len(acc.Choices) != 1 || len(acc.Choices[0].Message.ToolCalls) != 1 ||
		acc.Choices[0].Message.ToolCalls[0].Function.Arguments != `{"city":"Paris"}` || acc.Choices[0].FinishReason != "tool_calls" {
		t.Fatalf("streamed: %d chunks (%d usage-only, not asked for), %+v", chunks, usageChunks, acc.ChatCompletion)
	}

	// Structured output with a schema.
	so, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "autoglm-test",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("weather as JSON")},
		ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{
			JSONSchema: shared.ResponseFormatJSONSchemaJSONSchemaParam{Name: "weather", Strict: openai.Bool(true), Schema: map[string]any{
				"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}, "temp_c": map[string]any{"type": "integer"}},
				"required": []string{"city", "temp_c"}, "additionalProperties": false}}}}})
	var out struct {
		City  string `json:"city"`
		TempC int    `json:"temp_c"`
	}
	if err != nil || json.Unmarshal([]byte(so.Choices[0].Message.Content), &out) != nil || out.City != "Paris" || out.TempC != 21 {
		t.Fatalf("structured output: %+v %v", so, err)
	}
	if rf, _ := up.last()["response_format"].(map[string]any); rf["type"] != "json_schema" {
		t.Fatalf("response_format sent %v", up.last()["response_format"])
	}

	// Logprobs, and n.
	lp, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "autoglm-test", N: openai.Int(2),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")}, Logprobs: openai.Bool(true), TopLogprobs: openai.Int(2)})
	if err != nil || len(lp.Choices) != 2 || len(lp.Choices[0].Logprobs.Content) != 1 || len(lp.Choices[0].Logprobs.Content[0].TopLogprobs) != 2 ||
		lp.Choices[0].Logprobs.Content[0].Logprob != -0.25 {
		t.Fatalf("logprobs and n: %+v %v", lp, err)
	}

	// An image part goes to the engine as it came.
	img, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "autoglm-test",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage([]openai.ChatCompletionContentPartUnionParam{
			openai.TextContentPart("what is this?"),
			openai.ImageContentPart(openai.ChatCompletionContentPartImageImageURLParam{URL: "data:image/png;base64,iVBORw0KGgo="}),
		})}})
	if err != nil || img.Choices[0].Message.Content != "x" {
		t.Fatalf("image part: %+v %v", img, err)
	}
	parts, _ := up.last()["messages"].([]any)[0].(map[string]any)["content"].([]any)
	if len(parts) != 2 || parts[1].(map[string]any)["type"] != "image_url" {
		t.Fatalf("the upstream got content %v", parts)
	}

	// Completions: echo and logprobs; embeddings.
	cp, err := c.Completions.New(ctx, openai.CompletionNewParams{Model: "autoglm-test", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("once")},
		Echo: openai.Bool(true), Logprobs: openai.Int(2), MaxTokens: openai.Int(1)})
	if err != nil || cp.Model != "autoglm-test" || cp.Choices[0].Text != "once x" || len(cp.Choices[0].Logprobs.Tokens) != 2 {
		t.Fatalf("completion with echo and logprobs: %+v %v", cp, err)
	}
	if got := up.last(); got["echo"] != true || got["model"] != "up-model" {
		t.Fatalf("upstream got %v", got)
	}
	emb, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "autoglm-test", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("hi")},
		EncodingFormat: openai.EmbeddingNewParamsEncodingFormatFloat})
	if err != nil || emb.Model != "autoglm-test" || len(emb.Data) != 1 || len(emb.Data[0].Embedding) != 3 || emb.Data[0].Embedding[1] != -0.5 {
		t.Fatalf("embeddings: %+v %v", emb, err)
	}

	// The sidecar counted them: 6 answered, 3 completion tokens each (and 1 of the warm-up).
	m := scrape(t, sc.url, "")
	for _, want := range []string{`autoglm_requests_total{api="chat",code="200",model="autoglm-test"} 6`,
		`autoglm_requests_total{api="completions",code="200",model="autoglm-test"} 1`, `autoglm_requests_total{api="embeddings",code="200",model="autoglm-test"} 1`,
		`autoglm_generation_tokens_total{model="autoglm-test"} 20`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if t.Failed() {
		for _, l := range strings.Split(m, "\n") {
			if strings.HasPrefix(l, "autoglm_requests_total") || strings.HasPrefix(l, "autoglm_generation_tokens_total") {
				t.Log(l)
			}
		}
	}
}
