package tokenizer

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/gguf"
)

func build(t testing.TB, merges [][2]string, extra ...gguf.KV) *BPE {
	t.Helper()
	var b bytes.Buffer
	meta := append(Vocabulary(merges), extra...)
	if err := gguf.Write(&b, meta, nil); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Parse(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	return tok.(*BPE)
}

var merges = [][2]string{{"t", "h"}, {"th", "e"}, {" ", "the"}, {"l", "l"}, {"e", "ll"}, {"h", "ell"}}

func decode(t *BPE, ids []int) string {
	var b []byte
	for _, id := range ids {
		b = append(b, t.Piece(id)...)
	}
	return string(b)
}

func TestPretokenize(t *testing.T) {
	for in, want := range map[string][]string{
		"Hello world": {"Hello", " world"},
		"a  b":        {"a", " ", " b"},
		"x\n\ny":      {"x", "\n", "\n", "y"}, // \s+(?!\S) leaves the last newline; \s+ takes it alone
		"it's 2024!":  {"it", "'s", " 2024", "!"},
		"  lead":      {" ", " lead"},
		"end  ":       {"end", "  "},
		"naïve café":  {"naïve", " café"},
		"a\n b":       {"a", "\n", " b"},
		"x=y+1;":      {"x", "=", "y", "+", "1", ";"},
	} {
		if got := preTokenizers["gpt2"].pretokenize(in); !reflect.DeepEqual(got, want) {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

func TestEncode(t *testing.T) {
	tok := build(t, merges)
	ids := tok.Encode("the hello the")
	var pieces []string
	for _, id := range ids {
		pieces = append(pieces, string(tok.Piece(id)))
	}
	if !reflect.DeepEqual(pieces, []string{"the", " ", "hell", "o", " the"}) {
		t.Fatalf("pieces %q", pieces)
	}
	chat := tok.Encode("<|im_start|>user\nhi<|im_end|>")
	if !tok.IsControl(chat[0]) || !tok.IsControl(chat[len(chat)-1]) || tok.Piece(chat[0]) != nil || decode(tok, chat) != "user\nhi" {
		t.Fatalf("special tokens: %v", chat)
	}
	if tok.EOS != chat[len(chat)-1] {
		t.Fatalf("eos %d", tok.EOS)
	}
}

func TestRoundTrip(t *testing.T) {
	tok := build(t, merges)
	for _, s := range []string{"", "the", "  the\n\n\tthe  ", "héllo wörld 日本語 🙂", "\x00\xff\xfe raw", "it'll've"} {
		if got := decode(tok, tok.Encode(s)); got != s {
			t.Errorf("%q -> %q", s, got)
		}
	}
}

func TestChatTemplates(t *testing.T) {
	msgs := []inference.Message{{Role: "system", Content: "be brief"}, {Role: "user", Content: "hi"}}
	p, err := build(t, nil).ChatPrompt(msgs, nil)
	if err != nil || p != "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n" {
		t.Fatalf("chatml %q %v", p, err)
	}
	// A template that does not compile: the family its text names.
	l3 := build(t, nil, gguf.KV{Key: "tokenizer.chat_template", Value: "{% if <|start_header_id|> %}"})
	if !strings.Contains(l3.ChatFormat(), "llama3 (the file's chat template does not compile") {
		t.Fatalf("format %q", l3.ChatFormat())
	}
	p, _ = l3.ChatPrompt(msgs, nil)
	if !strings.HasPrefix(p, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nbe brief<|eot_id|>") || !strings.HasSuffix(p, "<|start_header_id|>assistant<|end_header_id|>\n\n") {
		t.Fatalf("llama3 %q", p)
	}
	if _, err := l3.ChatPrompt([]inference.Message{{Role: "robot"}}, nil); err == nil {
		t.Fatal("unknown role accepted")
	}
	// A GLM-4 vocabulary (chatglm-bpe) without a template: GLM-4's format.
	glm := build(t, nil, gguf.KV{Key: "tokenizer.ggml.pre", Value: "chatglm-bpe"})
	if p, err := glm.ChatPrompt(msgs, nil); err != nil || p != "[gMASK]<sop><|system|>\nbe brief<|user|>\nhi<|assistant|>" || !strings.HasPrefix(glm.ChatFormat(), "glm4") {
		t.Fatalf("glm4 %q %v (%s)", p, err, glm.ChatFormat())
	}
	// A template that compiles is the model's format, with the
	// vocabulary's BOS and EOS texts.
	own := build(t, nil, gguf.KV{Key: "tokenizer.chat_template",
		Value: "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"})
	p, err = own.ChatPrompt(msgs, nil)
	if err != nil || p != "<|endoftext|>[system]be brief<|im_end|>[user]hi<|im_end|>[assistant]" || own.ChatFormat() != "the file's chat template" {
		t.Fatalf("own template %q %v (%s)", p, err, own.ChatFormat())
	}
}

func TestFromGGUFErrors(t *testing.T) {
	for _, tc := range []struct {
		meta []gguf.KV
		want string
	}{
		{[]gguf.KV{{Key: "tokenizer.ggml.model", Value: "bert"}}, `"bert" is not supported`},
		{[]gguf.KV{{Key: "tokenizer.ggml.model", Value: "gpt2"}}, "tokens is missing"},
		{[]gguf.KV{{Key: "tokenizer.ggml.model", Value: "gpt2"}, {Key: "tokenizer.ggml.tokens", Value: []string{"a"}}, {Key: "tokenizer.ggml.merges", Value: []string{"ab"}}}, "not two symbols"},
		{[]gguf.KV{{Key: "tokenizer.ggml.model", Value: "gpt2"}, {Key: "tokenizer.ggml.tokens", Value: []string{"a"}}, {Key: "tokenizer.ggml.eos_token_id", Value: uint32(5)}}, "outside the vocabulary"},
	} {
		var b bytes.Buffer
		gguf.Write(&b, tc.meta, nil)
		f, _ := gguf.Parse(b.Bytes())
		if _, err := FromGGUF(f); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v, want %q", err, tc.want)
		}
	}
}

// FuzzRoundTrip: any text without special-token markup decodes back to
// itself.
func FuzzRoundTrip(f *testing.F) {
	tok := build(f, merges)
	for _, s := range []string{"the hello", " \n\t ", "日本", "'s'S"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if strings.Contains(s, "<|") {
			return
		}
		if got := decode(tok, tok.Encode(s)); got != s {
			t.Fatalf("%q -> %q", s, got)
		}
	})
}
