package server

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/shared"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/native"
	"github.com/open-autoglm/autoglm/inference/testengine"
	"github.com/open-autoglm/autoglm/internal/schematest"
)

// localEngines are the engines that run in the sidecar: the native engine
// on the built-in model (random weights: without a constraint it never
// writes JSON) and the test engine.
func localEngines(t *testing.T) map[string]func() (inference.Engine, string) {
	return map[string]func() (inference.Engine, string){
		"native": func() (inference.Engine, string) {
			path, err := native.Builtin(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			e, err := native.Open(path, native.Config{Slots: 4, ContextLength: 2048})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { e.Close() })
			return e, native.BuiltinName
		},
		"test": func() (inference.Engine, string) {
			// A step cost, so a streamed reply comes in several events.
			return testengine.New(testengine.Config{Model: "autoglm-test", ContextLength: 2048, StepCost: time.Millisecond}), "autoglm-test"
		},
	}
}

func startLocal(t *testing.T, fresh func() (inference.Engine, string)) (openai.Client, string) {
	c, model, _ := startLocalURL(t, fresh)
	return c, model
}

func startLocalURL(t *testing.T, fresh func() (inference.Engine, string)) (openai.Client, string, string) {
	eng, model := fresh()
	cfg := testConfig()
	cfg.Engine.Model = model
	sc := startWith(t, cfg, eng)
	return client(sc), model, sc.url
}

// schemaValidator compiles a schema with an independent JSON Schema
// implementation.
func schemaValidator(t *testing.T, schema map[string]any) *jsonschema.Schema {
	b, _ := json.Marshal(schema)
	return schematest.Compile(t, b)
}

func mustValidate(t *testing.T, s *jsonschema.Schema, text string) {
	t.Helper()
	schematest.Validate(t, s, []byte(text))
}

var weatherSchema = map[string]any{
	"type": "object",
	"properties": map[string]any{
		"city":     map[string]any{"type": "string", "maxLength": 16},
		"unit":     map[string]any{"enum": []string{"celsius", "fahrenheit"}},
		"days":     map[string]any{"type": "integer"},
		"hourly":   map[string]any{"type": "boolean"},
		"stations": map[string]any{"type": "array", "items": map[string]any{"type": "string", "maxLength": 6}, "maxItems": 3},
		"note":     map[string]any{"type": []string{"string", "null"}, "maxLength": 10},
	},
	"required":             []string{"city", "unit", "days", "hourly", "stations", "note"},
	"additionalProperties": false,
}

func TestStructuredOutput(t *testing.T) {
	for name, fresh := range localEngines(t) {
		t.Run(name, func(t *testing.T) {
			c, model := startLocal(t, fresh)
			ctx := context.Background()
			v := schemaValidator(t, weatherSchema)
			params := openai.ChatCompletionNewParams{Model: model, N: openai.Int(4), MaxTokens: openai.Int(160), Temperature: openai.Float(1),
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("the weather in Paris as JSON")},
				ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{
					JSONSchema: shared.ResponseFormatJSONSchemaJSONSchemaParam{Name: "weather", Strict: openai.Bool(true), Schema: weatherSchema}}}}
			for seed := range 3 {
				params.Seed = openai.Int(int64(seed))
				resp, err := c.Chat.Completions.New(ctx, params)
				if err != nil {
					t.Fatal(err)
				}
				if len(resp.Choices) != 4 {
					t.Fatalf("%d choices, want 4", len(resp.Choices))
				}
				for i, ch := range resp.Choices {
					if ch.Index != int64(i) || ch.FinishReason != "stop" {
						t.Fatalf("choice %d: index %d, finish %q", i, ch.Index, ch.FinishReason)
					}
					mustValidate(t, v, ch.Message.Content)
				}
			}

			// Streamed, the joined deltas validate too.
			st := c.Chat.Completions.NewStreaming(ctx, params)
			acc := openai.ChatCompletionAccumulator{}
			for st.Next() {
				acc.AddChunk(st.Current())
			}
			if err := st.Err(); err != nil {
				t.Fatal(err)
			}
			if len(acc.Choices) != 4 {
				t.Fatalf("streamed: %d choices", len(acc.Choices))
			}
			for _, ch := range acc.Choices {
				mustValidate(t, v, ch.Message.Content)
			}

			// json_object: any object.
			obj, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: model, MaxTokens: openai.Int(60), Seed: openai.Int(1),
				Messages:       []openai.ChatCompletionMessageParamUnion{openai.UserMessage("JSON please")},
				ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONObject: &shared.ResponseFormatJSONObjectParam{}}})
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(obj.Choices[0].Message.Content), &m); err != nil {
				t.Fatalf("json_object: %q: %v", obj.Choices[0].Message.Content, err)
			}

			// A schema the compiler cannot enforce is refused by name.
			_, err = c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: model,
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")},
				ResponseFormat: openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{
					JSONSchema: shared.ResponseFormatJSONSchemaJSONSchemaParam{Name: "s", Schema: map[string]any{"type": "string", "pattern": "^a+$"}}}}})
			var apiErr *openai.Error
			if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Param != "response_format.json_schema.schema" ||
				!strings.Contains(apiErr.Message, `"pattern" is not supported`) {
				t.Fatalf("unsupported schema: %v", err)
			}
			_, err = c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: model,
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")},
				Tools: []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{Name: "when",
					Parameters: shared.FunctionParameters{"type": "object", "properties": map[string]any{"d": map[string]any{"type": "string", "format": "date"}}}})}})
			if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Param != "tools[0].function.parameters" ||
				!strings.Contains(apiErr.Message, `/properties/d/format: the keyword "format" is not supported`) {
				t.Fatalf("unsupported tool schema: %v", err)
			}
		})
	}
}

// Random weights without the constraint do not write JSON: the test above
// shows the mask at work, not luck.
func TestNativeUnconstrainedIsNotJSON(t *testing.T) {
	c, model := startLocal(t, localEngines(t)["native"])
	resp, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{Model: model, N: openai.Int(8),
		MaxTokens: openai.Int(60), Seed: openai.Int(3), Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("the weather in Paris as JSON")}})
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range resp.Choices {
		if json.Valid([]byte(strings.TrimSpace(ch.Message.Content))) {
			t.Fatalf("the random model wrote JSON unconstrained: %q", ch.Message.Content)
		}
	}
}

var weatherTool = shared.FunctionDefinitionParam{Name: "get_weather", Description: openai.String("Current weather of a city"),
	Parameters: shared.FunctionParameters{"type": "object", "properties": map[string]any{
		"city": map[string]any{"type": "string", "maxLength": 12}, "unit": map[string]any{"enum": []string{"c", "f"}}},
		"required": []string{"city", "unit"}, "additionalProperties": false}}

var timeTool = shared.FunctionDefinitionParam{Name: "get_time",
	Parameters: shared.FunctionParameters{"type": "object", "properties": map[string]any{"zone": map[string]any{"type": "string", "maxLength": 8}},
		"required": []string{"zone"}, "additionalProperties": false}}

func TestToolCalls(t *testing.T) {
	for name, fresh := range localEngines(t) {
		t.Run(name, func(t *testing.T) {
			c, model := startLocal(t, fresh)
			ctx := context.Background()
			tools := []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(weatherTool), openai.ChatCompletionFunctionTool(timeTool)}
			args := map[string]*jsonschema.Schema{"get_weather": schemaValidator(t, weatherTool.Parameters), "get_time": schemaValidator(t, timeTool.Parameters)}
			params := openai.ChatCompletionNewParams{Model: model, Tools: tools, MaxTokens: openai.Int(80), Seed: openai.Int(5),
				Messages:   []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Weather in Paris?")},
				ToolChoice: openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("required")}}

			// A required call: one of the tools, arguments valid for it.
			first, err := c.Chat.Completions.New(ctx, params)
			if err != nil {
				t.Fatal(err)
			}
			ch := first.Choices[0]
			if ch.FinishReason != "tool_calls" || len(ch.Message.ToolCalls) != 1 || ch.Message.Content != "" {
				t.Fatalf("required call: %+v", ch)
			}
			call := ch.Message.ToolCalls[0]
			if args[call.Function.Name] == nil || !strings.HasPrefix(call.ID, "call_") || call.Type != "function" {
				t.Fatalf("call %+v", call)
			}
			mustValidate(t, args[call.Function.Name], call.Function.Arguments)

			// The round trip: the call and the tool's result go back, and
			// the model answers in text.
			params.Messages = append(params.Messages, ch.Message.ToParam(), openai.ToolMessage(`{"sky":"clear","temp_c":21}`, call.ID))
			params.ToolChoice = openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("none")}
			second, err := c.Chat.Completions.New(ctx, params)
			if err != nil {
				t.Fatal(err)
			}
			if len(second.Choices[0].Message.ToolCalls) != 0 || second.Choices[0].Message.Content == "" || second.Usage.PromptTokens <= first.Usage.PromptTokens {
				t.Fatalf("after the tool's result: %+v", second)
			}

			// A named function: that one, finish "stop" (as OpenAI).
			params.Messages = params.Messages[:1]
			params.ToolChoice = openai.ToolChoiceOptionFunctionToolChoice(openai.ChatCompletionNamedToolChoiceFunctionParam{Name: "get_time"})
			named, err := c.Chat.Completions.New(ctx, params)
			if err != nil {
				t.Fatal(err)
			}
			if nc := named.Choices[0]; nc.FinishReason != "stop" || len(nc.Message.ToolCalls) != 1 || nc.Message.ToolCalls[0].Function.Name != "get_time" {
				t.Fatalf("named call: %+v", nc)
			} else {
				mustValidate(t, args["get_time"], nc.Message.ToolCalls[0].Function.Arguments)
			}

			// Streamed: the name first, then the arguments in deltas that
			// the SDK's accumulator joins into the call the whole answer had.
			params.ToolChoice = openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("required")}
			params.Temperature = openai.Float(0)
			whole, err := c.Chat.Completions.New(ctx, params)
			if err != nil {
				t.Fatal(err)
			}
			st := c.Chat.Completions.NewStreaming(ctx, params)
			acc := openai.ChatCompletionAccumulator{}
			argDeltas := 0
			for st.Next() {
				ck := st.Current()
				acc.AddChunk(ck)
				if len(ck.Choices) > 0 && len(ck.Choices[0].Delta.ToolCalls) > 0 && ck.Choices[0].Delta.ToolCalls[0].Function.Arguments != "" {
					argDeltas++
				}
			}
			if err := st.Err(); err != nil {
				t.Fatal(err)
			}
			got, want := acc.Choices[0].Message.ToolCalls, whole.Choices[0].Message.ToolCalls
			if len(got) != 1 || got[0].Function.Name != want[0].Function.Name || got[0].Function.Arguments != want[0].Function.Arguments ||
				acc.Choices[0].FinishReason != "tool_calls" || argDeltas < 2 {
				t.Fatalf("streamed call %+v (%d argument deltas, finish %q), whole %+v", got, argDeltas, acc.Choices[0].FinishReason, want)
			}
		})
	}
}

func TestLogprobs(t *testing.T) {
	for name, fresh := range localEngines(t) {
		t.Run(name, func(t *testing.T) {
			c, model := startLocal(t, fresh)
			ctx := context.Background()
			params := openai.ChatCompletionNewParams{Model: model, MaxTokens: openai.Int(10), Seed: openai.Int(2), Temperature: openai.Float(0),
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}, Logprobs: openai.Bool(true), TopLogprobs: openai.Int(3)}
			resp, err := c.Chat.Completions.New(ctx, params)
			if err != nil {
				t.Fatal(err)
			}
			ch := resp.Choices[0]
			var joined []byte
			for _, tl := range ch.Logprobs.Content {
				if tl.Logprob > 0 || len(tl.TopLogprobs) != 3 || tl.TopLogprobs[0].Logprob < tl.TopLogprobs[2].Logprob {
					t.Fatalf("token %+v", tl)
				}
				for _, b := range tl.Bytes {
					joined = append(joined, byte(b))
				}
			}
			if len(ch.Logprobs.Content) != int(resp.Usage.CompletionTokens) || string(joined) != ch.Message.Content {
				t.Fatalf("%d logprobs for %d tokens; their bytes %q, content %q", len(ch.Logprobs.Content), resp.Usage.CompletionTokens, joined, ch.Message.Content)
			}
			// Streamed, the same tokens with the same log probabilities.
			st := c.Chat.Completions.NewStreaming(ctx, params)
			var streamed []openai.ChatCompletionTokenLogprob
			for st.Next() {
				if ck := st.Current(); len(ck.Choices) > 0 {
					streamed = append(streamed, ck.Choices[0].Logprobs.Content...)
				}
			}
			if len(streamed) != len(ch.Logprobs.Content) {
				t.Fatalf("streamed %d logprobs, whole %d", len(streamed), len(ch.Logprobs.Content))
			}
			for i := range streamed {
				if streamed[i].Token != ch.Logprobs.Content[i].Token || streamed[i].Logprob != ch.Logprobs.Content[i].Logprob {
					t.Fatalf("token %d: streamed %+v, whole %+v", i, streamed[i], ch.Logprobs.Content[i])
				}
			}
			// The completions API's form.
			cp, err := c.Completions.New(ctx, openai.CompletionNewParams{Model: openai.CompletionNewParamsModel(model), Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("once")},
				Logprobs: openai.Int(2), MaxTokens: openai.Int(5), Temperature: openai.Float(0)})
			if err != nil {
				t.Fatal(err)
			}
			lp := cp.Choices[0].Logprobs
			if len(lp.Tokens) != 5 || len(lp.TokenLogprobs) != 5 || len(lp.TopLogprobs) != 5 || len(lp.TopLogprobs[0]) == 0 || lp.TextOffset[1] != int64(len(lp.Tokens[0])) {
				t.Fatalf("completion logprobs %+v", lp)
			}
		})
	}
}

func TestLocalEmbeddings(t *testing.T) {
	for name, fresh := range localEngines(t) {
		t.Run(name, func(t *testing.T) {
			c, model, url := startLocalURL(t, fresh)
			ctx := context.Background()
			inputs := []string{"the weather in Paris", "a recipe for bread", "the weather in Paris"}
			resp, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: model,
				Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: inputs}, EncodingFormat: openai.EmbeddingNewParamsEncodingFormatFloat})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Data) != 3 || resp.Model != model || resp.Object != "list" || resp.Usage.PromptTokens == 0 || resp.Usage.TotalTokens != resp.Usage.PromptTokens {
				t.Fatalf("%+v", resp)
			}
			for i, d := range resp.Data {
				norm := 0.0
				for _, x := range d.Embedding {
					norm += x * x
				}
				if d.Index != int64(i) || len(d.Embedding) < 8 || math.Abs(norm-1) > 1e-5 {
					t.Fatalf("embedding %d: index %d, %d numbers, norm² %g", i, d.Index, len(d.Embedding), norm)
				}
			}
			if !slices.Equal(resp.Data[0].Embedding, resp.Data[2].Embedding) || slices.Equal(resp.Data[0].Embedding, resp.Data[1].Embedding) {
				t.Fatal("equal inputs must embed equally, different ones differently")
			}
			// Alone as in a batch; base64 is the same numbers.
			alone, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: model,
				Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String(inputs[1])}})
			if err != nil || len(alone.Data) != 1 || maxDiff(alone.Data[0].Embedding, resp.Data[1].Embedding) > 1e-5 {
				t.Fatalf("alone %v differs from in a batch: %v", alone, err)
			}
			// base64 (the Node SDK's default): little-endian float32s.
			hr, err := http.Post(url+"/v1/embeddings", "application/json", strings.NewReader(
				`{"model":"`+model+`","input":[[3,4,5]],"encoding_format":"base64"}`))
			if err != nil {
				t.Fatal(err)
			}
			var b64 struct {
				Data []struct {
					Embedding string `json:"embedding"`
				} `json:"data"`
			}
			json.NewDecoder(hr.Body).Decode(&b64)
			hr.Body.Close()
			raw, err := base64.StdEncoding.DecodeString(b64.Data[0].Embedding)
			if err != nil || len(raw) != 4*len(resp.Data[0].Embedding) {
				t.Fatalf("base64 embedding %q: %v", b64.Data[0].Embedding, err)
			}
			norm := 0.0
			for i := 0; i < len(raw); i += 4 {
				x := float64(math.Float32frombits(binary.LittleEndian.Uint32(raw[i:])))
				norm += x * x
			}
			if math.Abs(norm-1) > 1e-5 {
				t.Fatalf("base64 embedding of token ids: norm² %g", norm)
			}
			// What it cannot do is refused by name.
			_, err = c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: model, Dimensions: openai.Int(4),
				Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("x")}})
			var ae *openai.Error
			if !errors.As(err, &ae) || ae.StatusCode != 400 || ae.Param != "dimensions" {
				t.Fatalf("dimensions: %v", err)
			}
		})
	}
}

func maxDiff(a, b []float64) float64 {
	d := math.Inf(1)
	if len(a) != len(b) {
		return d
	}
	d = 0
	for i := range a {
		d = max(d, math.Abs(a[i]-b[i]))
	}
	return d
}
