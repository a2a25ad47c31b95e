package native

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/open-autoglm/autoglm/inference/gguf"
	"github.com/open-autoglm/autoglm/inference/llama/tiny"
	"github.com/open-autoglm/autoglm/inference/tokenizer"
)

// BuiltinName is the served name of the built-in model.
const BuiltinName = "autoglm-tiny"

// builtinMerges give the built-in byte-level vocabulary a few common
// English pairs.
var builtinMerges = [][2]string{{"t", "h"}, {"th", "e"}, {"i", "n"}, {"e", "r"}, {"a", "n"}, {" ", "the"}, {"o", "n"}, {"r", "e"}}

// unprintable lists the built-in vocabulary's tokens that would put
// control characters or invalid UTF-8 on a terminal: the byte tokens of
// C0 controls but newline and tab, DEL, and the bytes 0x80–0xFF (alone,
// never valid UTF-8), and the control tokens that do not end a reply
// (<|endoftext|>, <|im_start|>; <|im_end|>, the EOS, stays).
func unprintable(vocab int) []int {
	var out []int
	for b := range 256 {
		if (b < 0x20 && b != '\n' && b != '\t') || b >= 0x7f {
			out = append(out, b)
		}
	}
	return append(out, vocab-3, vocab-2)
}

// Builtin returns the path of the built-in tiny model (random weights, so
// its text is gibberish: it exercises the real engine with no download),
// writing it under dir on first use.
func Builtin(dir string) (string, error) {
	path := filepath.Join(dir, "autoglm-tiny-v2.gguf")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	vocab := tokenizer.Vocabulary(builtinMerges)
	tokens := vocab[1].Value.([]string)
	var b bytes.Buffer
	err := tiny.WriteWith(&b, tiny.Config{
		Vocab: len(tokens), Embd: 128, Layers: 4, Heads: 4, KVHeads: 2, FF: 384, Context: 4096,
		Type: gguf.Q8_0, Seed: 1, Suppress: unprintable(len(tokens)),
	}, append(vocab, gguf.KV{Key: "general.name", Value: BuiltinName}))
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, "tiny-*.gguf")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b.Bytes()); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	os.Chmod(tmp.Name(), 0o644)
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("built-in model: %w", err)
	}
	return path, nil
}
