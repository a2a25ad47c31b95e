// Package chat holds the chat formats of the supported model families: a
// conversation, with the tools the model may call, rendered into the
// prompt the family was trained on (ChatML for Qwen2/2.5, the header
// format of Llama 3.x), how each family writes a tool call, the grammar
// that makes a model write one, and the parser that reads calls back out
// of the generated text. It is the first stage of a chat request on the
// native engine and the last of its answer.
package chat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/grammar"
)

// Formats, the fallbacks for a model without a chat template of its own.
const (
	ChatML = "chatml" // Qwen2, Qwen2.5 (and the built-in model)
	Llama3 = "llama3" // Llama 3.x
	Llama2 = "llama2" // Llama 2, Mistral ([INST]); no tools
	GLM4   = "glm4"   // GLM-4 ([gMASK]<sop><|role|>); no tools
)

// Syntax is how a format's model writes a tool call, as the family's own
// chat template describes it to the model.
func Syntax(format string) inference.ToolSyntax {
	if format == Llama3 {
		// Llama 3.1's JSON tool calling: the reply is the call.
		return inference.ToolSyntax{ArgsKey: "parameters"}
	}
	return inference.ToolSyntax{Open: "<tool_call>\n", Close: "\n</tool_call>", ArgsKey: "arguments"}
}

// Render renders msgs and tools in format, ending where the assistant's
// reply starts.
func Render(format string, msgs []inference.Message, tools []inference.Tool) (string, error) {
	for i, m := range msgs {
		switch m.Role {
		case "system", "user", "assistant", "developer", "tool":
		default:
			return "", fmt.Errorf("messages[%d].role: %q is not supported", i, m.Role)
		}
	}
	switch format {
	case Llama3:
		return renderLlama3(msgs, tools), nil
	case Llama2:
		if len(tools) > 0 {
			return "", fmt.Errorf("tools: the model's chat format (Llama 2's [INST]) has no place for tools")
		}
		return renderLlama2(msgs)
	case GLM4:
		if len(tools) > 0 {
			return "", fmt.Errorf("tools: the model has no chat template of its own, and the GLM-4 fallback format writes no tools")
		}
		return renderGLM4(msgs), nil
	}
	return renderChatML(msgs, tools), nil
}

// renderLlama2 follows Llama 2's template (Mistral's without a system
// turn): the system turn inside the first [INST], each exchange a
// BOS…EOS pair; the first BOS is the tokenizer's to add.
func renderLlama2(msgs []inference.Message) (string, error) {
	var b strings.Builder
	system := ""
	if len(msgs) > 0 && (msgs[0].Role == "system" || msgs[0].Role == "developer") {
		system, msgs = "<<SYS>>\n"+strings.TrimSpace(msgs[0].Content)+"\n<</SYS>>\n\n", msgs[1:]
	}
	for i, m := range msgs {
		switch m.Role {
		case "user":
			if i > 0 {
				b.WriteString("<s>")
			}
			b.WriteString("[INST] " + system + strings.TrimSpace(m.Content) + " [/INST]")
			system = ""
		case "assistant":
			b.WriteString(" " + strings.TrimSpace(m.Content) + " </s>")
		default:
			return "", fmt.Errorf("messages[%d].role: %q has no place in the Llama 2 format", i, m.Role)
		}
	}
	return b.String(), nil
}

// renderGLM4 follows GLM-4-9B-Chat's template: the [gMASK]<sop> prefix,
// each turn a role token and a newline before its text (a tool's result
// is an observation), ending with the assistant's role token (the model
// writes the newline).
func renderGLM4(msgs []inference.Message) string {
	var b strings.Builder
	b.WriteString("[gMASK]<sop>")
	for _, m := range msgs {
		role := m.Role
		switch role {
		case "developer":
			role = "system"
		case "tool":
			role = "observation"
		}
		b.WriteString("<|" + role + "|>\n" + m.Content)
	}
	b.WriteString("<|assistant|>")
	return b.String()
}

// toolJSON is a tool as the families' templates list it: the request's
// tool through Jinja's tojson (Python's json.dumps: ", " and ": ").
func toolJSON(t inference.Tool) string {
	params := t.Parameters
	if len(params) == 0 {
		params = []byte(`{"type":"object","properties":{}}`)
	}
	return `{"type": "function", "function": {"name": ` + pyString(t.Name) + `, "description": ` + pyString(t.Description) +
		`, "parameters": ` + pySpaced(params) + `}}`
}

// callJSON is a call as the templates write it in an assistant turn.
func callJSON(c inference.ToolCall, argsKey string) string {
	args := []byte(c.Arguments)
	if !json.Valid(args) {
		return `{"name": ` + pyString(c.Name) + `, "` + argsKey + `": ` + pyString(c.Arguments) + `}`
	}
	return `{"name": ` + pyString(c.Name) + `, "` + argsKey + `": ` + pySpaced(args) + `}`
}

func pyString(s string) string {
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	e.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}

// pySpaced is a JSON text with Python's separators.
func pySpaced(v []byte) string {
	var c bytes.Buffer
	if json.Compact(&c, v) != nil {
		return string(v)
	}
	var b strings.Builder
	in, esc := false, false
	for _, x := range c.Bytes() {
		b.WriteByte(x)
		switch {
		case esc:
			esc = false
		case in && x == '\\':
			esc = true
		case x == '"':
			in = !in
		case !in && (x == ',' || x == ':'):
			b.WriteByte(' ')
		}
	}
	return b.String()
}

// renderChatML follows Qwen2.5's template: the tools in the system turn
// with the instruction to answer in <tool_call> tags, calls in the
// assistant's turn, results as <tool_response> in a user turn.
func renderChatML(msgs []inference.Message, tools []inference.Tool) string {
	var b strings.Builder
	syn := Syntax(ChatML)
	if len(tools) > 0 {
		b.WriteString("<|im_start|>system\n")
		if len(msgs) > 0 && (msgs[0].Role == "system" || msgs[0].Role == "developer") {
			b.WriteString(msgs[0].Content)
			msgs = msgs[1:]
		} else {
			b.WriteString("You are a helpful assistant.")
		}
		b.WriteString("\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n" +
			"You are provided with function signatures within <tools></tools> XML tags:\n<tools>")
		for _, t := range tools {
			b.WriteString("\n" + toolJSON(t))
		}
		b.WriteString("\n</tools>\n\nFor each function call, return a json object with function name and arguments within " +
			"<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n")
	}
	for i, m := range msgs {
		switch {
		case m.Role == "tool":
			if i == 0 || msgs[i-1].Role != "tool" {
				b.WriteString("<|im_start|>user")
			}
			b.WriteString("\n<tool_response>\n" + m.Content + "\n</tool_response>")
			if i == len(msgs)-1 || msgs[i+1].Role != "tool" {
				b.WriteString("<|im_end|>\n")
			}
		case m.Role == "assistant" && len(m.ToolCalls) > 0:
			b.WriteString("<|im_start|>assistant\n" + m.Content)
			for j, c := range m.ToolCalls {
				if j > 0 || m.Content != "" {
					b.WriteString("\n")
				}
				b.WriteString(syn.Open + callJSON(c, syn.ArgsKey) + syn.Close)
			}
			b.WriteString("<|im_end|>\n")
		default:
			fmt.Fprintf(&b, "<|im_start|>%s\n%s<|im_end|>\n", m.Role, m.Content)
		}
	}
	b.WriteString("<|im_start|>assistant\n")
	return b.String()
}

// renderLlama3 follows Llama 3.1's template with its defaults: the tools
// in the first user turn with the instruction to answer with a JSON call,
// "Environment: ipython" in the system turn, results in ipython turns.
func renderLlama3(msgs []inference.Message, tools []inference.Tool) string {
	var b strings.Builder
	b.WriteString("<|begin_of_text|>")
	header := func(role string) { fmt.Fprintf(&b, "<|start_header_id|>%s<|end_header_id|>\n\n", role) }
	if len(tools) > 0 {
		header("system")
		b.WriteString("Environment: ipython\n\n")
		if len(msgs) > 0 && (msgs[0].Role == "system" || msgs[0].Role == "developer") {
			b.WriteString(msgs[0].Content)
			msgs = msgs[1:]
		}
		b.WriteString("<|eot_id|>")
	}
	first := true
	for _, m := range msgs {
		switch {
		case m.Role == "user" && first && len(tools) > 0:
			first = false
			header("user")
			b.WriteString("Given the following functions, please respond with a JSON for a function call with its proper " +
				"arguments that best answers the given prompt.\n\nRespond in the format {\"name\": function name, \"parameters\": " +
				"dictionary of argument name and its value}.Do not use variables.\n\n")
			for _, t := range tools {
				b.WriteString(toolJSON(t) + "\n\n")
			}
			b.WriteString(m.Content + "<|eot_id|>")
		case m.Role == "tool":
			header("ipython")
			b.WriteString(m.Content + "<|eot_id|>")
		case m.Role == "assistant" && len(m.ToolCalls) > 0:
			header("assistant")
			b.WriteString(callJSON(m.ToolCalls[0], "parameters") + "<|eot_id|>")
		default:
			header(m.Role)
			b.WriteString(m.Content + "<|eot_id|>")
		}
	}
	header("assistant")
	return b.String()
}

// ToolGrammar is the grammar of a reply that calls one of tools (all of
// them, or only the one named), written in syn: the name one of theirs
// and the arguments valid against that tool's parameters.
func ToolGrammar(tools []inference.Tool, only string, syn inference.ToolSyntax) (*grammar.Grammar, error) {
	var alts []grammar.Alt
	for _, t := range tools {
		if only != "" && t.Name != only {
			continue
		}
		name, _ := json.Marshal(t.Name)
		params := t.Parameters
		if len(params) == 0 {
			params = []byte(`{"type":"object","properties":{}}`)
		}
		alts = append(alts, grammar.Alt{
			Prefix: []byte(syn.Open + `{"name":` + string(name) + `,"` + syn.ArgsKey + `":`),
			Schema: params,
			Suffix: []byte("}" + syn.Close),
		})
	}
	if len(alts) == 0 {
		return nil, fmt.Errorf("no tool named %q", only)
	}
	return grammar.Choice(alts)
}

// Parse reads tool calls written in syn out of a reply: the calls, and the
// text around them. A reply that holds no well-formed call is all text.
func Parse(text string, syn inference.ToolSyntax) (calls []inference.ToolCall, content string) {
	if syn.Open == "" { // the whole reply is one call, or text
		if c, ok := parseCall(strings.TrimSpace(text), syn.ArgsKey); ok {
			return []inference.ToolCall{c}, ""
		}
		return nil, text
	}
	var rest strings.Builder
	open, close := strings.TrimSpace(syn.Open), strings.TrimSpace(syn.Close)
	for {
		i := strings.Index(text, open)
		if i < 0 {
			break
		}
		j := strings.Index(text[i+len(open):], close)
		if j < 0 {
			break
		}
		body := text[i+len(open) : i+len(open)+j]
		c, ok := parseCall(strings.TrimSpace(body), syn.ArgsKey)
		if !ok {
			break
		}
		rest.WriteString(text[:i])
		calls = append(calls, c)
		text = text[i+len(open)+j+len(close):]
	}
	rest.WriteString(text)
	if len(calls) == 0 {
		return nil, rest.String()
	}
	return calls, strings.TrimSpace(rest.String())
}

func parseCall(s, argsKey string) (inference.ToolCall, bool) {
	var v map[string]json.RawMessage
	d := json.NewDecoder(strings.NewReader(s))
	if d.Decode(&v) != nil || d.More() {
		return inference.ToolCall{}, false
	}
	var name string
	if json.Unmarshal(v["name"], &name) != nil || name == "" {
		return inference.ToolCall{}, false
	}
	args, ok := v[argsKey]
	if !ok {
		args, ok = v["arguments"]
	}
	if !ok {
		args = json.RawMessage("{}")
	}
	var compact bytes.Buffer
	if json.Compact(&compact, args) != nil || compact.Len() == 0 || compact.Bytes()[0] != '{' {
		return inference.ToolCall{}, false
	}
	return inference.ToolCall{Name: name, Arguments: compact.String()}, true
}
