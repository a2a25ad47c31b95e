package native

import (
	"testing"
	"unicode/utf8"

	"github.com/open-autoglm/autoglm/inference"
)

// TestBuiltinPrintsPrintableText: the built-in model's gibberish never
// holds a control character (but newline and tab) or invalid UTF-8 — what
// it writes on a terminal stays readable — sampling at temperature 1.5
// from several prompts, and it can still end a reply (EOS is not
// suppressed).
func TestBuiltinPrintsPrintableText(t *testing.T) {
	path, err := Builtin(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e, err := Open(path, Config{Slots: 1, ContextLength: 512})
	if err != nil {
		t.Fatal(err)
	}
	tok := e.Tokenizer()
	eos := -1
	if ends, ok := tok.(interface{ EndsGeneration(int) bool }); ok {
		for id := range e.Info().Vocab {
			if ends.EndsGeneration(id) {
				eos = id
			}
		}
	}
	bad := map[int]bool{}
	for _, id := range unprintable(e.Info().Vocab) {
		bad[id] = true
	}
	seen := 0
	for i, prompt := range []string{"hello", "Once upon a time", "\x1b[31m red \x07", "日本語"} {
		toks := generate(t, e, 0, tok.Encode(prompt), 400, inference.Sampling{Temperature: 1.5, Seed: int64(i + 1), HasSeed: true})
		for _, id := range toks {
			if bad[id] {
				t.Fatalf("prompt %q: generated the suppressed token %d", prompt, id)
			}
			if id == eos {
				continue
			}
			s := string(tok.Piece(id))
			if !utf8.ValidString(s) {
				t.Fatalf("prompt %q: token %d decodes to invalid UTF-8 %q", prompt, id, s)
			}
			for _, r := range s {
				if (r < 0x20 && r != '\n' && r != '\t') || r == 0x7f {
					t.Fatalf("prompt %q: token %d decodes to a control character %q", prompt, id, s)
				}
			}
			seen++
		}
		e.Release(0)
	}
	if seen < 1000 {
		t.Errorf("only %d tokens checked", seen)
	}
}
