// Package tokenizer reads a model's tokenizer from its GGUF metadata
// (tokenizer.ggml.*) and turns text into token ids and back: byte-level BPE
// with merges (the gpt2 family: Qwen2, Llama 3, SmolLM), special tokens, and
// the chat templates the sidecar renders conversations with.
package tokenizer

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/chat"
	"github.com/open-autoglm/autoglm/inference/gguf"
	"golang.org/x/text/unicode/norm"
)

// Token types of tokenizer.ggml.token_type.
const (
	typeNormal      = 1
	typeControl     = 3
	typeUserDefined = 4
)

// BPE is a byte-level BPE tokenizer.
type BPE struct {
	tokens  []string
	ids     map[string]int
	ranks   map[[2]string]int
	special []string // control and user-defined texts, longest first
	control map[int]bool
	pieces  [][]byte
	ends
	format
	pre preTokenizer
}

// Tokenizer is what an engine needs of one.
type Tokenizer interface {
	inference.Tokenizer
	IsControl(tok int) bool
	EOSToken() int
	// EndsGeneration says whether tok ends a reply: EOS, EOT, EOM.
	EndsGeneration(tok int) bool
	// FramePrompt adds the BOS (and EOS) the model's metadata asks for
	// around an encoded prompt.
	FramePrompt(prompt []int) []int
	// ChatFormat says what prompts the model: the file's chat template,
	// or the family's format it falls back to, and why.
	ChatFormat() string
}

// ends are a vocabulary's sequence markers, from the GGUF metadata.
type ends struct {
	BOS, EOS       int // -1: none
	AddBOS, AddEOS bool
	eog            map[int]bool // every end-of-generation token
}

// read takes tokenizer.ggml.{bos,eos,eot,eom}_token_id and
// add_{bos,eos}_token; addBOS is the default of the tokenizer's family
// (llama.cpp's: SentencePiece adds BOS, byte-level BPE does not unless
// the metadata says so).
func (e *ends) read(get func(string) any, n int, addBOS bool) error {
	e.BOS, e.EOS, e.AddBOS, e.eog = -1, -1, addBOS, map[int]bool{}
	for _, k := range []string{"bos", "eos", "eot", "eom"} {
		key := "tokenizer.ggml." + k + "_token_id"
		v, ok := get(key).(uint32)
		if !ok {
			continue
		}
		if int(v) >= n {
			return fmt.Errorf("%s %d is outside the vocabulary", key, v)
		}
		switch k {
		case "bos":
			e.BOS = int(v)
		case "eos":
			e.EOS = int(v)
			e.eog[int(v)] = true
		default:
			e.eog[int(v)] = true
		}
	}
	if v, ok := get("tokenizer.ggml.add_bos_token").(bool); ok {
		e.AddBOS = v
	}
	if v, ok := get("tokenizer.ggml.add_eos_token").(bool); ok {
		e.AddEOS = v
	}
	return nil
}

// EndsGeneration says whether tok ends a reply.
func (e *ends) EndsGeneration(tok int) bool { return e.eog[tok] }

// FramePrompt prepends BOS when the metadata asks for it and the prompt
// does not already start with it (a chat template may write it), and
// appends EOS when asked.
func (e *ends) FramePrompt(p []int) []int {
	if e.AddBOS && e.BOS >= 0 && (len(p) == 0 || p[0] != e.BOS) {
		p = append([]int{e.BOS}, p...)
	}
	if e.AddEOS && e.EOS >= 0 && (len(p) == 0 || p[len(p)-1] != e.EOS) {
		p = append(p, e.EOS)
	}
	return p
}

// FromGGUF builds the tokenizer of f: byte-level BPE ("gpt2") or
// SentencePiece-style ("llama").
func FromGGUF(f *gguf.File) (Tokenizer, error) {
	get := func(key string) any { v, _ := f.Get(key); return v }
	model, _ := get("tokenizer.ggml.model").(string)
	if model != "gpt2" && model != "llama" {
		return nil, fmt.Errorf("tokenizer.ggml.model %q is not supported (gpt2, llama)", model)
	}
	tokens, ok := get("tokenizer.ggml.tokens").([]string)
	if !ok || len(tokens) == 0 {
		return nil, errors.New("tokenizer.ggml.tokens is missing")
	}
	types, _ := get("tokenizer.ggml.token_type").([]int32)
	if types != nil && len(types) != len(tokens) {
		return nil, fmt.Errorf("tokenizer.ggml.token_type has %d entries for %d tokens", len(types), len(tokens))
	}
	if model == "llama" {
		return newSPM(f, tokens, types)
	}
	merges, _ := get("tokenizer.ggml.merges").([]string)
	t := &BPE{tokens: tokens, ids: make(map[string]int, len(tokens)), ranks: make(map[[2]string]int, len(merges)),
		control: map[int]bool{}, pieces: make([][]byte, len(tokens)), format: format{family: chat.ChatML}}
	for i, s := range tokens {
		t.ids[s] = i
		kind := typeNormal
		if types != nil {
			kind = int(types[i])
		}
		switch kind {
		case typeControl:
			t.control[i] = true
			t.special = append(t.special, s)
		case typeUserDefined:
			t.special = append(t.special, s)
			t.pieces[i] = []byte(s)
		default:
			t.pieces[i] = decodeBytes(s)
		}
	}
	for i, m := range merges {
		a, b, ok := strings.Cut(m, " ")
		if !ok {
			return nil, fmt.Errorf("tokenizer.ggml.merges[%d] %q is not two symbols", i, m)
		}
		t.ranks[[2]string{a, b}] = i
	}
	if err := t.ends.read(get, len(tokens), false); err != nil {
		return nil, err
	}
	pre, _ := get("tokenizer.ggml.pre").(string)
	var err error
	if t.pre, err = preTokenizerNamed(pre); err != nil {
		return nil, err
	}
	sortLongestFirst(t.special)
	if tpl, _ := get("tokenizer.chat_template").(string); strings.Contains(tpl, "<|start_header_id|>") {
		t.family = chat.Llama3
	} else if pre == "chatglm-bpe" || pre == "glm4" {
		t.family = chat.GLM4
	}
	t.format.load(get, tokens, t.BOS, t.EOS)
	return t, nil
}

func sortLongestFirst(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && len(s[j]) > len(s[j-1]); j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// Encode tokenizes text; special tokens written in it are recognised.
func (t *BPE) Encode(text string) []int {
	var out []int
	for text != "" {
		// The earliest special token, then the ordinary text before it.
		at, sp := len(text), ""
		for _, s := range t.special {
			if i := strings.Index(text, s); i >= 0 && (i < at || (i == at && len(s) > len(sp))) {
				at, sp = i, s
			}
		}
		plain := text[:at]
		if t.pre.nfc {
			plain = norm.NFC.String(plain)
		}
		for _, word := range t.pre.pretokenize(plain) {
			out = t.bpe(word, out)
		}
		if sp == "" {
			break
		}
		out = append(out, t.ids[sp])
		text = text[at+len(sp):]
	}
	return out
}

// bpe merges one pre-token's byte symbols by rank and appends their ids.
func (t *BPE) bpe(word string, out []int) []int {
	if t.pre.ignoreMerges {
		if id, ok := t.ids[encodeText(word)]; ok {
			return append(out, id)
		}
	}
	syms := make([]string, 0, len(word))
	for i := 0; i < len(word); i++ {
		syms = append(syms, string(byteToRune[word[i]]))
	}
	for len(syms) > 1 {
		best, at := -1, -1
		for i := 0; i+1 < len(syms); i++ {
			if r, ok := t.ranks[[2]string{syms[i], syms[i+1]}]; ok && (best < 0 || r < best) {
				best, at = r, i
			}
		}
		if at < 0 {
			break
		}
		syms[at] += syms[at+1]
		syms = append(syms[:at+1], syms[at+2:]...)
	}
	for _, s := range syms {
		if id, ok := t.ids[s]; ok {
			out = append(out, id)
			continue
		}
		for _, r := range s { // not in the vocabulary: byte by byte
			if id, ok := t.ids[string(r)]; ok {
				out = append(out, id)
			}
		}
	}
	return out
}

// Piece is a token's bytes; control tokens have none.
func (t *BPE) Piece(tok int) []byte {
	if tok < 0 || tok >= len(t.pieces) {
		return nil
	}
	return t.pieces[tok]
}

// IsControl reports whether tok is a control token (EOS and the like).
func (t *BPE) IsControl(tok int) bool { return t.control[tok] }

// EOSToken is the end-of-sequence token (-1: none).
func (t *BPE) EOSToken() int { return t.EOS }

// GPT-2 maps every byte to a printable rune so that tokens are text.
var byteToRune, runeToByte = func() ([256]rune, map[rune]byte) {
	var b2r [256]rune
	r2b := map[rune]byte{}
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff) {
			b2r[b] = rune(b)
		} else {
			b2r[b] = rune(256 + n)
			n++
		}
		r2b[b2r[b]] = byte(b)
	}
	return b2r, r2b
}()

// decodeBytes maps a token's runes back to its bytes.
func decodeBytes(s string) []byte {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		if b, ok := runeToByte[r]; ok {
			out = append(out, b)
		} else {
			out = utf8.AppendRune(out, r)
		}
	}
	return out
}

// Vocabulary is a byte-level vocabulary for generated models: the 256
// bytes, the given merges' results, and ChatML's control tokens; it returns
// the GGUF metadata for it.
func Vocabulary(merges [][2]string) []gguf.KV {
	var tokens []string
	var types []int32
	for b := 0; b < 256; b++ {
		tokens, types = append(tokens, string(byteToRune[b])), append(types, typeNormal)
	}
	var ms []string
	for _, m := range merges {
		a, b := encodeText(m[0]), encodeText(m[1])
		ms = append(ms, a+" "+b)
		tokens, types = append(tokens, a+b), append(types, typeNormal)
	}
	eos := len(tokens)
	for _, s := range []string{"<|endoftext|>", "<|im_start|>", "<|im_end|>"} {
		tokens, types = append(tokens, s), append(types, typeControl)
	}
	return []gguf.KV{
		{Key: "tokenizer.ggml.model", Value: "gpt2"},
		{Key: "tokenizer.ggml.tokens", Value: tokens},
		{Key: "tokenizer.ggml.token_type", Value: types},
		{Key: "tokenizer.ggml.merges", Value: ms},
		{Key: "tokenizer.ggml.bos_token_id", Value: uint32(eos)},
		{Key: "tokenizer.ggml.eos_token_id", Value: uint32(eos + 2)}, // <|im_end|> ends a chat reply
	}
}

func encodeText(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteRune(byteToRune[s[i]])
	}
	return b.String()
}
