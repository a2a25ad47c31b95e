package tokenizer

import (
	"fmt"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// preTokenizer splits text into the pieces byte-level BPE merges within,
// as the regular expression the vocabulary was trained with does
// (tokenizer.ggml.pre names it). Go's regexp has no lookahead, so each
// expression is written out: split returns the length of the piece at the
// start of s, trying the alternatives in order as a backtracking engine
// would.
type preTokenizer struct {
	split func(s string) int
	// nfc: the text is normalised to NFC first (Qwen2's tokenizer.json).
	nfc bool
	// ignoreMerges: a piece that is a token is taken whole, before any
	// merge (Llama 3's tokenizer.json).
	ignoreMerges bool
}

// preTokenizers are the expressions of the vocabularies the engine serves,
// by the names llama.cpp's converter writes.
var preTokenizers = map[string]preTokenizer{
	// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
	"default": {split: splitGPT2},
	"gpt2":    {split: splitGPT2},
	"gpt-2":   {split: splitGPT2},
	// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
	"llama-bpe": {split: splitLlama3(3), ignoreMerges: true},
	"llama3":    {split: splitLlama3(3), ignoreMerges: true},
	"llama-v3":  {split: splitLlama3(3), ignoreMerges: true},
	// GLM-4 (chatglm-bpe; glm4 for the 0414 models): Llama 3's expression.
	"chatglm-bpe": {split: splitLlama3(3)},
	"glm4":        {split: splitLlama3(3)},
	// Llama 3's with one digit per piece.
	"qwen2": {split: splitLlama3(1), nfc: true},
}

func preTokenizerNamed(name string) (preTokenizer, error) {
	if name == "" {
		name = "default" // llama.cpp's choice when the converter wrote none
	}
	p, ok := preTokenizers[name]
	if !ok {
		names := make([]string, 0, len(preTokenizers))
		for n := range preTokenizers {
			names = append(names, n)
		}
		sort.Strings(names)
		return p, fmt.Errorf("tokenizer.ggml.pre %q is not supported (supported: %s)", name, strings.Join(names, ", "))
	}
	return p, nil
}

func isLetter(r rune) bool  { return unicode.IsLetter(r) }
func isNumber(r rune) bool  { return unicode.IsNumber(r) }
func isSpace(r rune) bool   { return unicode.IsSpace(r) }
func isNewline(r rune) bool { return r == '\r' || r == '\n' }

// isOther is [^\s\p{L}\p{N}].
func isOther(r rune) bool { return !isSpace(r) && !isLetter(r) && !isNumber(r) }

// run is the length of the prefix of s whose runes all satisfy f, at most
// max runes (max < 0: no limit).
func run(s string, f func(rune) bool, max int) int {
	i := 0
	for n := 0; i < len(s) && n != max; n++ {
		r, size := utf8.DecodeRuneInString(s[i:])
		if !f(r) {
			break
		}
		i += size
	}
	return i
}

// contraction matches 's 't 're 've 'm 'll 'd, in any ASCII case when
// fold is set.
func contraction(s string, fold bool) int {
	if len(s) < 2 || s[0] != '\'' {
		return 0
	}
	for _, c := range [...]string{"s", "t", "re", "ve", "m", "ll", "d"} {
		if len(s) > len(c) && (s[1:1+len(c)] == c || fold && strings.EqualFold(s[1:1+len(c)], c)) {
			return 1 + len(c)
		}
	}
	return 0
}

// spaceRun matches \s+(?!\S) then \s+ at a whitespace run of w bytes: all
// of it at the end of the text or before more whitespace, else all but its
// last character (left to the piece that follows), else the one character.
func spaceRun(s string, w int) int {
	if w == len(s) {
		return w
	}
	_, last := utf8.DecodeLastRuneInString(s[:w])
	if w > last {
		return w - last
	}
	return w
}

func splitGPT2(s string) int {
	if n := contraction(s, false); n > 0 {
		return n
	}
	// ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional literal
	// space, then a run of one class.
	start := 0
	if s[0] == ' ' && len(s) > 1 {
		start = 1
	}
	for start >= 0 {
		r, _ := utf8.DecodeRuneInString(s[start:])
		for _, class := range [...]func(rune) bool{isLetter, isNumber, isOther} {
			if class(r) {
				return start + run(s[start:], class, -1)
			}
		}
		start--
	}
	return spaceRun(s, run(s, isSpace, -1))
}

// splitLlama3 is Llama 3's expression with runs of at most digits numbers.
func splitLlama3(digits int) func(string) int {
	return func(s string) int {
		if n := contraction(s, true); n > 0 {
			return n
		}
		r0, n0 := utf8.DecodeRuneInString(s)
		// [^\r\n\p{L}\p{N}]?\p{L}+
		if !isNewline(r0) && !isLetter(r0) && !isNumber(r0) && n0 < len(s) {
			if r1, _ := utf8.DecodeRuneInString(s[n0:]); isLetter(r1) {
				return n0 + run(s[n0:], isLetter, -1)
			}
		}
		if isLetter(r0) {
			return run(s, isLetter, -1)
		}
		// \p{N}{1,digits}
		if isNumber(r0) {
			return run(s, isNumber, digits)
		}
		// ` ?[^\s\p{L}\p{N}]+[\r\n]*`
		start := 0
		if r0 == ' ' && n0 < len(s) {
			if r1, _ := utf8.DecodeRuneInString(s[n0:]); isOther(r1) {
				start = n0
			}
		}
		if r, _ := utf8.DecodeRuneInString(s[start:]); isOther(r) {
			i := start + run(s[start:], isOther, -1)
			return i + run(s[i:], isNewline, -1)
		}
		// s starts with whitespace. \s*[\r\n]+: up to its last newline.
		w := run(s, isSpace, -1)
		if k := strings.LastIndexAny(s[:w], "\r\n"); k >= 0 {
			return k + 1
		}
		return spaceRun(s, w)
	}
}

// pretokenize splits text into pieces.
func (p preTokenizer) pretokenize(text string) []string {
	var out []string
	for text != "" {
		n := p.split(text)
		out = append(out, text[:n])
		text = text[n:]
	}
	return out
}
