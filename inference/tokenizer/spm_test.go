package tokenizer

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/open-autoglm/autoglm/inference/gguf"
)

// spmVocab is a small SentencePiece vocabulary: control tokens, the 256
// byte fallbacks, and pieces with scores (higher merges first).
func spmVocab(t testing.TB) *SPM {
	tokens := []string{"<unk>", "<s>", "</s>"}
	types := []int32{2, typeControl, typeControl}
	scores := []float32{0, 0, 0}
	for b := range 256 {
		tokens, types, scores = append(tokens, fmt.Sprintf("<0x%02X>", b)), append(types, 6), append(scores, 0)
	}
	for i, p := range []string{"▁", "h", "e", "l", "o", "w", "r", "d", "he", "ll", "hell", "▁hell", "▁hello", "▁w", "or", "▁wor", "ld", "▁world"} {
		tokens, types, scores = append(tokens, p), append(types, typeNormal), append(scores, float32(-i))
	}
	// Longer pieces score higher, so they win.
	for i, p := range tokens {
		if types[i] == typeNormal {
			scores[i] = float32(utf8.RuneCountInString(p))
		}
	}
	var b bytes.Buffer
	gguf.Write(&b, []gguf.KV{
		{Key: "tokenizer.ggml.model", Value: "llama"}, {Key: "tokenizer.ggml.tokens", Value: tokens},
		{Key: "tokenizer.ggml.token_type", Value: types}, {Key: "tokenizer.ggml.scores", Value: scores},
		{Key: "tokenizer.ggml.bos_token_id", Value: uint32(1)}, {Key: "tokenizer.ggml.eos_token_id", Value: uint32(2)},
	}, nil)
	f, err := gguf.Parse(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	return tok.(*SPM)
}

func TestSPM(t *testing.T) {
	tok := spmVocab(t)
	ids := tok.Encode("hello world")
	var pieces []string
	for _, id := range ids {
		pieces = append(pieces, tok.tokens[id])
	}
	if strings.Join(pieces, "|") != "▁hello|▁world" {
		t.Fatalf("pieces %v", pieces)
	}
	// Unknown characters fall back to bytes; decoding restores the text
	// (with the space prefix SentencePiece adds).
	s := "hello 日本\n"
	var out []byte
	for _, id := range tok.Encode(s) {
		out = append(out, tok.Piece(id)...)
	}
	if string(out) != " "+s {
		t.Fatalf("round trip %q", out)
	}
	if got := tok.Encode("</s>"); len(got) != 1 || got[0] != 2 || !tok.IsControl(2) || tok.EOSToken() != 2 {
		t.Fatalf("control token: %v", got)
	}
}

func FuzzSPMRoundTrip(f *testing.F) {
	tok := spmVocab(f)
	f.Add("hello world")
	f.Add("\x00 日本")
	f.Fuzz(func(t *testing.T, s string) {
		if strings.Contains(s, "</s>") || strings.Contains(s, "<s>") || strings.Contains(s, "<unk>") || strings.Contains(s, "▁") {
			return
		}
		var out []byte
		for _, id := range tok.Encode(s) {
			out = append(out, tok.Piece(id)...)
		}
		want := s
		if s != "" {
			want = " " + s
		}
		if string(out) != want {
			t.Fatalf("%q -> %q", s, out)
		}
	})
}
