package api

import (
	"encoding/json"
	"fmt"
)

// MaxEmbeddingInputs is the most inputs of one embeddings request
// (OpenAI's limit).
const MaxEmbeddingInputs = 2048

// EmbeddingRequest is the body of POST /v1/embeddings.
type EmbeddingRequest struct {
	Model          string          `json:"model"`
	Input          json.RawMessage `json:"input"`
	EncodingFormat string          `json:"encoding_format"`
	Dimensions     *int            `json:"dimensions"`
	User           string          `json:"user"`
	TimeoutMS      *int64          `json:"timeout_ms"`

	// Texts or Tokens: the inputs, decoded.
	Texts  []string `json:"-"`
	Tokens [][]int  `json:"-"`
}

// DecodeEmbeddings parses and validates an embeddings request: input a
// string, an array of strings, an array of token ids or an array of such
// arrays, none empty.
func DecodeEmbeddings(body []byte) (*EmbeddingRequest, *Error) {
	var r EmbeddingRequest
	if err := decode(body, &r); err != nil {
		return nil, err
	}
	var p problems
	if r.Model == "" {
		p.add("model", "is required")
	}
	// Each form into a fresh value: a failed Unmarshal may leave a
	// partly filled one.
	var one string
	var texts []string
	var ids []int
	var idss [][]int
	switch {
	case !isSet(r.Input):
		p.add("input", "is required")
	case json.Unmarshal(r.Input, &one) == nil:
		r.Texts = []string{one}
	case json.Unmarshal(r.Input, &texts) == nil:
		r.Texts = texts
	case json.Unmarshal(r.Input, &ids) == nil:
		r.Tokens = [][]int{ids}
	case json.Unmarshal(r.Input, &idss) == nil:
		r.Tokens = idss
	default:
		p.add("input", "must be a string, an array of strings, an array of token ids or an array of such arrays")
	}
	if n := len(r.Texts) + len(r.Tokens); n > MaxEmbeddingInputs {
		p.add("input", "at most %d inputs, got %d", MaxEmbeddingInputs, n)
	}
	for i, t := range r.Texts {
		if t == "" {
			p.add(fmt.Sprintf("input[%d]", i), "must not be empty")
		}
	}
	for i, t := range r.Tokens {
		if len(t) == 0 {
			p.add(fmt.Sprintf("input[%d]", i), "must not be empty")
		}
	}
	switch r.EncodingFormat {
	case "", "float", "base64":
	default:
		p.add("encoding_format", "must be float or base64, got %q", r.EncodingFormat)
	}
	if r.Dimensions != nil {
		p.add("dimensions", "is not supported: the model's embeddings have a fixed size")
	}
	if r.TimeoutMS != nil && *r.TimeoutMS <= 0 {
		p.add("timeout_ms", "must be positive, got %d", *r.TimeoutMS)
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	return &r, nil
}

// Embedding is one entry of an embeddings response; Embedding is a list of
// floats or, with encoding_format base64, a string.
type Embedding struct {
	Object    string `json:"object"`
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"`
}

// EmbeddingList is the body of an embeddings response.
type EmbeddingList struct {
	Object string      `json:"object"`
	Data   []Embedding `json:"data"`
	Model  string      `json:"model"`
	Usage  struct {
		PromptTokens int `json:"prompt_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
}
