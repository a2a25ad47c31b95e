package tokenizer

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/open-autoglm/autoglm/inference/chat"
	"github.com/open-autoglm/autoglm/inference/gguf"
)

// SPM is a SentencePiece-style tokenizer (tokenizer.ggml.model "llama"):
// spaces become "▁", adjacent pieces merge by the highest score while the
// merge is a token, and characters with no token fall back to <0xXX> bytes.
type SPM struct {
	tokens  []string
	scores  []float32
	ids     map[string]int
	control map[int]bool
	bytes   [256]int // <0xXX> tokens, -1 if absent
	special []string
	pieces  [][]byte
	ends
	prefix bool // add_space_prefix
	format
}

const spmSpace = "▁"

func newSPM(f *gguf.File, tokens []string, types []int32) (*SPM, error) {
	scores, _ := getKey(f, "tokenizer.ggml.scores").([]float32)
	if scores != nil && len(scores) != len(tokens) {
		return nil, fmt.Errorf("tokenizer.ggml.scores has %d entries for %d tokens", len(scores), len(tokens))
	}
	t := &SPM{tokens: tokens, scores: scores, ids: make(map[string]int, len(tokens)), control: map[int]bool{},
		pieces: make([][]byte, len(tokens)), prefix: true, format: format{family: chat.Llama2}}
	if v, ok := getKey(f, "tokenizer.ggml.add_space_prefix").(bool); ok {
		t.prefix = v
	}
	for i := range t.bytes {
		t.bytes[i] = -1
	}
	for i, s := range tokens {
		t.ids[s] = i
		kind := typeNormal
		if types != nil {
			kind = int(types[i])
		}
		var b byte
		switch {
		case kind == typeControl:
			t.control[i] = true
			t.special = append(t.special, s)
		case kind == 6 || (len(s) == 6 && strings.HasPrefix(s, "<0x") && s[5] == '>'): // byte tokens
			if _, err := fmt.Sscanf(s, "<0x%02X>", &b); err == nil {
				t.bytes[b] = i
				t.pieces[i] = []byte{b}
			}
		case kind == typeUserDefined:
			t.special = append(t.special, s)
			t.pieces[i] = []byte(s)
		default:
			t.pieces[i] = []byte(strings.ReplaceAll(s, spmSpace, " "))
		}
	}
	sortLongestFirst(t.special)
	if tpl, _ := getKey(f, "tokenizer.chat_template").(string); strings.Contains(tpl, "<|im_start|>") {
		t.family = chat.ChatML
	}
	get := func(k string) any { return getKey(f, k) }
	if err := t.ends.read(get, len(tokens), true); err != nil {
		return nil, err
	}
	t.format.load(get, tokens, t.BOS, t.EOS)
	return t, nil
}

func getKey(f *gguf.File, key string) any { v, _ := f.Get(key); return v }

// Encode tokenizes text, recognising special tokens written in it.
func (t *SPM) Encode(text string) []int {
	var out []int
	first := true
	for text != "" {
		at, sp := len(text), ""
		for _, s := range t.special {
			if i := strings.Index(text, s); i >= 0 && i < at {
				at, sp = i, s
			}
		}
		if at > 0 {
			part := text[:at]
			if first && t.prefix {
				part = " " + part
			}
			out = t.spm(strings.ReplaceAll(part, " ", spmSpace), out)
		}
		first = false
		if sp == "" {
			break
		}
		out = append(out, t.ids[sp])
		text = text[at+len(sp):]
	}
	return out
}

// spm merges the characters of s, best-scoring pair first.
func (t *SPM) spm(s string, out []int) []int {
	syms := make([]string, 0, len(s))
	for i := 0; i < len(s); {
		_, n := utf8.DecodeRuneInString(s[i:]) // invalid bytes stay single bytes
		syms = append(syms, s[i:i+n])
		i += n
	}
	for len(syms) > 1 {
		best, at := float32(0), -1
		for i := 0; i+1 < len(syms); i++ {
			if id, ok := t.ids[syms[i]+syms[i+1]]; ok {
				sc := float32(-float32(id)) // without scores, earlier tokens win
				if t.scores != nil {
					sc = t.scores[id]
				}
				if at < 0 || sc > best {
					best, at = sc, i
				}
			}
		}
		if at < 0 {
			break
		}
		syms[at] += syms[at+1]
		syms = append(syms[:at+1], syms[at+2:]...)
	}
	for _, sym := range syms {
		if id, ok := t.ids[sym]; ok {
			out = append(out, id)
			continue
		}
		for i := 0; i < len(sym); i++ { // byte fallback
			if id := t.bytes[sym[i]]; id >= 0 {
				out = append(out, id)
			}
		}
	}
	return out
}

// Piece is a token's bytes ("▁" as a space); control tokens have none.
func (t *SPM) Piece(tok int) []byte {
	if tok < 0 || tok >= len(t.pieces) {
		return nil
	}
	return t.pieces[tok]
}

// IsControl reports whether tok is a control token.
func (t *SPM) IsControl(tok int) bool { return t.control[tok] }

// EOSToken is the end-of-sequence token (-1: none).
func (t *SPM) EOSToken() int { return t.EOS }
