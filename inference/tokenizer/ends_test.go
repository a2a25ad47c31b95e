package tokenizer

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/open-autoglm/autoglm/inference/gguf"
)

// vocab is a tiny vocabulary of the given model ("llama": SentencePiece,
// "gpt2": byte-level BPE) with <s>=1, </s>=2, <|eot_id|>=3, <|eom_id|>=4
// and the extra metadata.
func vocab(t *testing.T, model string, extra ...gguf.KV) Tokenizer {
	t.Helper()
	tokens := []string{"<unk>", "<s>", "</s>", "<|eot_id|>", "<|eom_id|>", "a", "b"}
	types := []int32{2, typeControl, typeControl, typeNormal, typeNormal, typeNormal, typeNormal}
	kv := []gguf.KV{{Key: "tokenizer.ggml.model", Value: model}, {Key: "tokenizer.ggml.tokens", Value: tokens},
		{Key: "tokenizer.ggml.token_type", Value: types}, {Key: "tokenizer.ggml.bos_token_id", Value: uint32(1)},
		{Key: "tokenizer.ggml.eos_token_id", Value: uint32(2)}}
	if model == "llama" {
		kv = append(kv, gguf.KV{Key: "tokenizer.ggml.scores", Value: make([]float32, len(tokens))})
	} else {
		kv = append(kv, gguf.KV{Key: "tokenizer.ggml.merges", Value: []string{}})
	}
	tok, err := fromKVs(t, append(kv, extra...))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// fromKVs is the tokenizer of a GGUF file holding just kv.
func fromKVs(t *testing.T, kv []gguf.KV) (Tokenizer, error) {
	t.Helper()
	var b bytes.Buffer
	if err := gguf.Write(&b, kv, nil); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Parse(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return FromGGUF(f)
}

// TestFramePrompt: BOS and EOS follow the GGUF's add_bos_token and
// add_eos_token, with llama.cpp's defaults when they are absent
// (SentencePiece adds BOS, byte-level BPE does not); a prompt that
// already starts with BOS (a chat template wrote it) gets no second one.
func TestFramePrompt(t *testing.T) {
	yes, no := gguf.KV{Key: "tokenizer.ggml.add_bos_token", Value: true}, gguf.KV{Key: "tokenizer.ggml.add_bos_token", Value: false}
	eos := gguf.KV{Key: "tokenizer.ggml.add_eos_token", Value: true}
	for _, tc := range []struct {
		name   string
		tok    Tokenizer
		prompt []int
		want   []int
	}{
		{"spm default", vocab(t, "llama"), []int{5, 6}, []int{1, 5, 6}},
		{"spm add_bos false", vocab(t, "llama", no), []int{5, 6}, []int{5, 6}},
		{"bpe default", vocab(t, "gpt2"), []int{5, 6}, []int{5, 6}},
		{"bpe add_bos true (Llama 3)", vocab(t, "gpt2", yes), []int{5, 6}, []int{1, 5, 6}},
		{"already there", vocab(t, "gpt2", yes), []int{1, 5}, []int{1, 5}},
		{"add_eos", vocab(t, "llama", eos), []int{5}, []int{1, 5, 2}},
	} {
		if got := tc.tok.FramePrompt(append([]int(nil), tc.prompt...)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestEndOfGeneration: EOS, EOT and EOM all end a reply, whatever their
// token type.
func TestEndOfGeneration(t *testing.T) {
	tok := vocab(t, "gpt2", gguf.KV{Key: "tokenizer.ggml.eot_token_id", Value: uint32(3)}, gguf.KV{Key: "tokenizer.ggml.eom_token_id", Value: uint32(4)})
	for id, want := range map[int]bool{1: false, 2: true, 3: true, 4: true, 5: false} {
		if got := tok.EndsGeneration(id); got != want {
			t.Errorf("token %d: ends generation %v, want %v", id, got, want)
		}
	}
	if _, err := fromKVs(t, []gguf.KV{{Key: "tokenizer.ggml.model", Value: "gpt2"}, {Key: "tokenizer.ggml.tokens", Value: []string{"<unk>", "<s>", "</s>"}},
		{Key: "tokenizer.ggml.merges", Value: []string{}}, {Key: "tokenizer.ggml.eot_token_id", Value: uint32(99)}}); err == nil {
		t.Error("an EOT outside the vocabulary was accepted")
	}
}
