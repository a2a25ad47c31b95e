package tokenizer

import (
	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/chat"
)

// format is how a vocabulary's model is prompted: its own chat template
// (tokenizer.chat_template) when the file has one that compiles, else its
// family's known format.
type format struct {
	family string
	tmpl   *chat.Template
	note   string // what prompts the model, for operators
}

// load takes the file's template; bos and eos are the vocabulary's texts.
func (f *format) load(get func(string) any, tokens []string, bos, eos int) {
	f.note = f.family + " (the file has no chat template)"
	src, _ := get("tokenizer.chat_template").(string)
	if src == "" {
		return
	}
	text := func(id int) string {
		if id >= 0 && id < len(tokens) {
			return tokens[id]
		}
		return ""
	}
	t, err := chat.Compile(src, text(bos), text(eos))
	if err != nil {
		f.note = f.family + " (the file's chat template does not compile: " + err.Error() + ")"
		return
	}
	f.tmpl, f.note = t, "the file's chat template"
}

// ChatPrompt renders a conversation, with tools, as the model expects it,
// ending where the assistant's reply starts.
func (f *format) ChatPrompt(msgs []inference.Message, tools []inference.Tool) (string, error) {
	if f.tmpl != nil {
		return f.tmpl.Render(msgs, tools)
	}
	return chat.Render(f.family, msgs, tools)
}

// ToolSyntax is how the model writes a tool call.
func (f *format) ToolSyntax() inference.ToolSyntax {
	if f.tmpl != nil {
		return f.tmpl.Syntax()
	}
	return chat.Syntax(f.family)
}

// ChatFormat says what prompts the model.
func (f *format) ChatFormat() string { return f.note }
