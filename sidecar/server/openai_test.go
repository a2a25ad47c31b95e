package server

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

func client(sc *sidecar, opts ...option.RequestOption) openai.Client {
	return openai.NewClient(append([]option.RequestOption{
		option.WithBaseURL(sc.url + "/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0),
	}, opts...)...)
}

func TestOpenAIChat(t *testing.T) {
	sc := start(t)
	c := client(sc)
	params := openai.ChatCompletionNewParams{
		Model:     "autoglm-test",
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("be brief"), openai.UserMessage("hello")},
		MaxTokens: openai.Int(12),
		Seed:      openai.Int(7),
	}
	resp, err := c.Chat.Completions.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Choices) != 1 || resp.Object != "chat.completion" || resp.Model != "autoglm-test" || !strings.HasPrefix(resp.ID, "chatcmpl-") {
		t.Fatalf("%+v", resp)
	}
	ch := resp.Choices[0]
	if ch.Message.Role != "assistant" || len(ch.Message.Content) != 12 || ch.FinishReason != "length" {
		t.Fatalf("choice %+v", ch)
	}
	if resp.Usage.CompletionTokens != 12 || resp.Usage.PromptTokens == 0 || resp.Usage.TotalTokens != resp.Usage.PromptTokens+12 {
		t.Fatalf("usage %+v", resp.Usage)
	}

	// The same request streamed yields the same text, the role first, a
	// finish reason, and usage in a final chunk with no choices.
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := c.Chat.Completions.NewStreaming(context.Background(), params)
	var text strings.Builder
	var role, finish string
	var usage openai.CompletionUsage
	chunks := 0
	for stream.Next() {
		ck := stream.Current()
		chunks++
		if ck.Object != "chat.completion.chunk" || ck.ID == "" {
			t.Fatalf("chunk %+v", ck)
		}
		if len(ck.Choices) == 0 {
			usage = ck.Usage
			continue
		}
		if ck.Choices[0].Delta.Role != "" {
			role = ck.Choices[0].Delta.Role
		}
		text.WriteString(ck.Choices[0].Delta.Content)
		if ck.Choices[0].FinishReason != "" {
			finish = ck.Choices[0].FinishReason
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if text.String() != ch.Message.Content || role != "assistant" || finish != "length" || chunks < 3 {
		t.Fatalf("streamed %q role %q finish %q in %d chunks; non-streamed %q", text.String(), role, finish, chunks, ch.Message.Content)
	}
	if usage.CompletionTokens != 12 || usage.PromptTokens != resp.Usage.PromptTokens {
		t.Fatalf("stream usage %+v", usage)
	}
}

func TestOpenAICompletion(t *testing.T) {
	sc := start(t)
	c := client(sc)
	params := openai.CompletionNewParams{
		Model:  openai.CompletionNewParamsModel("autoglm-test"),
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("once upon a time")},
		Stop:   openai.CompletionNewParamsStopUnion{OfString: openai.String("zzzz")},
	}
	resp, err := c.Completions.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Object != "text_completion" || len(resp.Choices) != 1 || resp.Usage.CompletionTokens != 16 || len(resp.Choices[0].Text) != 16 {
		t.Fatalf("default max_tokens is 16: %+v", resp)
	}
	stream := c.Completions.NewStreaming(context.Background(), params)
	var text strings.Builder
	for stream.Next() {
		if ck := stream.Current(); len(ck.Choices) > 0 {
			text.WriteString(ck.Choices[0].Text)
		}
	}
	if err := stream.Err(); err != nil || text.String() != resp.Choices[0].Text {
		t.Fatalf("streamed %q (%v), want %q", text.String(), err, resp.Choices[0].Text)
	}
	models, err := c.Models.List(context.Background())
	if err != nil || len(models.Data) != 1 || models.Data[0].ID != "autoglm-test" {
		t.Fatalf("models %+v %v", models, err)
	}
}

func TestOpenAIErrors(t *testing.T) {
	sc := start(t)
	c := client(sc)
	for _, tc := range []struct {
		name   string
		params openai.ChatCompletionNewParams
		status int
		code   string
		param  string
	}{
		{"unknown model", openai.ChatCompletionNewParams{Model: "gpt-9", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")}}, 404, "model_not_found", "model"},
		{"beyond context", openai.ChatCompletionNewParams{Model: "autoglm-test", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")}, MaxTokens: openai.Int(100000)}, 400, "context_length_exceeded", ""},
		{"empty messages", openai.ChatCompletionNewParams{Model: "autoglm-test", Messages: []openai.ChatCompletionMessageParamUnion{}}, 400, "", "messages"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Chat.Completions.New(context.Background(), tc.params)
			var apiErr *openai.Error
			if !errors.As(err, &apiErr) {
				t.Fatalf("got %v, want an API error", err)
			}
			if apiErr.StatusCode != tc.status || apiErr.Code != tc.code || apiErr.Param != tc.param || apiErr.Message == "" {
				t.Fatalf("got %d code=%q param=%q %q", apiErr.StatusCode, apiErr.Code, apiErr.Param, apiErr.Message)
			}
		})
	}
}

func completionParams(prompt string) openai.CompletionNewParams {
	return openai.CompletionNewParams{
		Model:  openai.CompletionNewParamsModel("autoglm-test"),
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(prompt)},
	}
}
