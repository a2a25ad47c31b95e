package api

import (
	"bytes"
	"encoding/json"
	"errors"
)

// Role names accepted in chat messages.
var roles = map[string]bool{"system": true, "developer": true, "user": true, "assistant": true, "tool": true}

// ChatMessage is one message of a chat request. Content is a string or an
// array of text parts; both decode into Content.
type ChatMessage struct {
	Role       string          `json:"role"`
	Content    Content         `json:"content"`
	Name       string          `json:"name,omitempty"`
	ToolCallID string          `json:"tool_call_id,omitempty"`
	ToolCalls  json.RawMessage `json:"tool_calls,omitempty"`
	Refusal    *string         `json:"refusal,omitempty"`
	// Calls are ToolCalls decoded (native engine).
	Calls []ToolCall `json:"-"`
}

// Content is message text; Set reports that the field was present.
type Content struct {
	Text string
	Set  bool
	// Other: the array held parts that are not text (image_url,
	// input_audio, file), which only a remote engine is sent.
	Other bool
}

func (c *Content) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		c.Set = true
		// The decoder has validated b; without escapes it is the text.
		if len(b) >= 2 && bytes.IndexByte(b, '\\') < 0 {
			c.Text = string(b[1 : len(b)-1])
			return nil
		}
		return json.Unmarshal(b, &c.Text)
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(b, &parts); err != nil {
		return errors.New("content must be a string or an array of text parts")
	}
	c.Set = true
	for _, p := range parts {
		if p.Type != "text" {
			c.Other = true // an image or audio part: only a remote engine takes it
			continue
		}
		c.Text += p.Text
	}
	return nil
}

func strconvQuote(s string) string { b, _ := json.Marshal(s); return string(b) }

// StringList is a field that is a string or an array of strings (stop).
type StringList []string

func (l *StringList) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*l = StringList{s}
		return nil
	}
	var ss []string
	if err := json.Unmarshal(b, &ss); err != nil {
		return errors.New("must be a string or an array of strings")
	}
	*l = ss
	return nil
}

// StreamOptions are the options of a streamed response.
type StreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
	// IncludeObfuscation is accepted and ignored: nothing is obfuscated.
	IncludeObfuscation *bool `json:"include_obfuscation"`
}

// Sampling holds the fields common to chat and text completions.
type Sampling struct {
	Model            string          `json:"model"`
	MaxTokens        *int            `json:"max_tokens"`
	Temperature      *float64        `json:"temperature"`
	TopP             *float64        `json:"top_p"`
	N                *int            `json:"n"`
	Stream           bool            `json:"stream"`
	StreamOptions    *StreamOptions  `json:"stream_options"`
	Stop             StringList      `json:"stop"`
	Seed             *int64          `json:"seed"`
	PresencePenalty  *float64        `json:"presence_penalty"`
	FrequencyPenalty *float64        `json:"frequency_penalty"`
	LogitBias        map[string]int  `json:"logit_bias"`
	User             string          `json:"user"`
	Metadata         json.RawMessage `json:"metadata"`
	Store            *bool           `json:"store"`
	ServiceTier      string          `json:"service_tier"`
	// Extensions that vLLM also accepts.
	TopK              *int     `json:"top_k"`
	MinP              *float64 `json:"min_p"`
	RepetitionPenalty *float64 `json:"repetition_penalty"`
	// TimeoutMS is an autoglm extension: the request's deadline in
	// milliseconds (the tighter of it and the deadline headers wins).
	TimeoutMS *int64 `json:"timeout_ms"`
}

// ChatRequest is the body of POST /v1/chat/completions.
type ChatRequest struct {
	Sampling
	Messages            []ChatMessage   `json:"messages"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Logprobs            *bool           `json:"logprobs"`
	TopLogprobs         *int            `json:"top_logprobs"`
	Tools               json.RawMessage `json:"tools"`
	ToolChoice          json.RawMessage `json:"tool_choice"`
	ParallelToolCalls   *bool           `json:"parallel_tool_calls"`
	ResponseFormat      *struct {
		Type       string          `json:"type"`
		JSONSchema json.RawMessage `json:"json_schema"`
	} `json:"response_format"`
	ReasoningEffort string `json:"reasoning_effort"`

	// Set by the decoder for the native engine: the tools, the tool
	// choice, and the JSON output response_format asks for (nil: text).
	ToolDefs []ToolDef   `json:"-"`
	Choice   ToolChoice  `json:"-"`
	Format   *JSONFormat `json:"-"`
}

// JSONFormat is response_format json_object (Schema nil) or json_schema.
type JSONFormat struct {
	Schema json.RawMessage
}

// Prompt is the prompt of a text completion: a string, one string in an
// array, or an array of token ids.
type Prompt struct {
	Text   string
	Tokens []int
	Count  int // number of prompts given (only 1 is served)
}

func (p *Prompt) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		p.Count = 1
		return json.Unmarshal(b, &p.Text)
	}
	var arr []json.RawMessage
	if err := json.Unmarshal(b, &arr); err != nil {
		return errors.New("prompt must be a string, an array of strings or an array of token ids")
	}
	if len(arr) == 0 {
		return nil
	}
	if arr[0][0] == '"' {
		var ss []string
		if err := json.Unmarshal(b, &ss); err != nil {
			return errors.New("prompt array must hold only strings or only token ids")
		}
		p.Count = len(ss)
		p.Text = ss[0]
		return nil
	}
	if err := json.Unmarshal(b, &p.Tokens); err != nil {
		return errors.New("prompt array must hold only strings or only token ids")
	}
	p.Count = 1
	return nil
}

// CompletionRequest is the body of POST /v1/completions.
type CompletionRequest struct {
	Sampling
	Prompt   *Prompt `json:"prompt"`
	Echo     bool    `json:"echo"`
	Suffix   *string `json:"suffix"`
	Logprobs *int    `json:"logprobs"`
	BestOf   *int    `json:"best_of"`
}

// Usage counts tokens.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// ChatCompletion is a non-streamed chat response.
type ChatCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []ChatChoice `json:"choices"`
	Usage   *Usage       `json:"usage,omitempty"`
}

type ChatChoice struct {
	Index        int             `json:"index"`
	Message      AssistantOutput `json:"message"`
	Logprobs     *ChatLogprobs   `json:"logprobs"`
	FinishReason string          `json:"finish_reason"`
}

type AssistantOutput struct {
	Role string `json:"role"`
	// Content is null in a reply that only calls tools.
	Content   *string    `json:"content"`
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
}

// ToolDef is a tool of a chat request.
type ToolDef struct {
	Type     string      `json:"type"`
	Function FunctionDef `json:"function"`
}

type FunctionDef struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	Parameters  json.RawMessage `json:"parameters"`
	Strict      *bool           `json:"strict"`
}

// ToolCall is a call of a tool, in an assistant message (request or
// reply); in a streamed delta Index says which call a fragment extends.
type ToolCall struct {
	Index    *int         `json:"index,omitempty"`
	ID       string       `json:"id,omitempty"`
	Type     string       `json:"type,omitempty"`
	Function FunctionCall `json:"function"`
}

type FunctionCall struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"`
}

// ToolChoice is a request's tool_choice: Mode none, auto, required or
// function (Name is the function).
type ToolChoice struct {
	Mode string
	Name string
}

// ChatLogprobs are the log probabilities of a chat choice's tokens.
type ChatLogprobs struct {
	Content []TokenLogprob `json:"content"`
}

type TokenLogprob struct {
	Token       string       `json:"token"`
	Logprob     float64      `json:"logprob"`
	Bytes       []int        `json:"bytes"`
	TopLogprobs []TopLogprob `json:"top_logprobs"`
}

type TopLogprob struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

// CompletionLogprobs are the legacy completions API's log probabilities.
type CompletionLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float64            `json:"token_logprobs"`
	TopLogprobs   []map[string]float64 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

// ChatChunk is one SSE event of a streamed chat response.
type ChatChunk struct {
	ID      string        `json:"id"`
	Object  string        `json:"object"`
	Created int64         `json:"created"`
	Model   string        `json:"model"`
	Choices []ChunkChoice `json:"choices"`
	Usage   *Usage        `json:"usage,omitempty"`
}

type ChunkChoice struct {
	Index        int           `json:"index"`
	Delta        Delta         `json:"delta"`
	Logprobs     *ChatLogprobs `json:"logprobs"`
	FinishReason *string       `json:"finish_reason"`
}

type Delta struct {
	Role      string     `json:"role,omitempty"`
	Content   string     `json:"content"`
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
}

// Completion is a text completion response; streamed chunks share it.
type Completion struct {
	ID      string             `json:"id"`
	Object  string             `json:"object"`
	Created int64              `json:"created"`
	Model   string             `json:"model"`
	Choices []CompletionChoice `json:"choices"`
	Usage   *Usage             `json:"usage,omitempty"`
}

type CompletionChoice struct {
	Text         string              `json:"text"`
	Index        int                 `json:"index"`
	Logprobs     *CompletionLogprobs `json:"logprobs"`
	FinishReason *string             `json:"finish_reason"`
}

// Model is an entry of GET /v1/models.
type Model struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
	// MaxModelLen is the context length (vLLM's field name).
	MaxModelLen int `json:"max_model_len,omitempty"`
}

// ModelList is the body of GET /v1/models.
type ModelList struct {
	Object string  `json:"object"`
	Data   []Model `json:"data"`
}
