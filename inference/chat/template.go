package chat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/ardanlabs/jinja"

	"github.com/open-autoglm/autoglm/inference"
)

// Template is a model's own chat template (the GGUF's
// tokenizer.chat_template, a Jinja2 program), rendered by a Jinja engine
// built for these templates, with the variables Hugging Face's
// apply_chat_template gives them.
type Template struct {
	t        *jinja.Template
	bos, eos string
	syntax   inference.ToolSyntax
}

// Compile compiles a chat template; bos and eos are the vocabulary's BOS
// and EOS texts, which templates write.
func Compile(src, bos, eos string) (*Template, error) {
	t, err := jinja.Compile(src)
	if err != nil {
		return nil, fmt.Errorf("tokenizer.chat_template: %w", err)
	}
	return &Template{t: t, bos: bos, eos: eos, syntax: syntaxOf(src)}, nil
}

// syntaxOf is how a template tells its model to call tools: in
// <tool_call> tags (Qwen2.5, Qwen3, Hermes), or as a bare JSON object with
// "parameters" (Llama 3.1–3.3).
func syntaxOf(src string) inference.ToolSyntax {
	if !strings.Contains(src, "<tool_call>") && (strings.Contains(src, "ipython") || strings.Contains(src, `"parameters"`)) {
		return Syntax(Llama3)
	}
	return Syntax(ChatML)
}

// Syntax is how the template's model writes a tool call.
func (t *Template) Syntax() inference.ToolSyntax { return t.syntax }

// Render renders msgs and tools, ending where the assistant's reply
// starts (add_generation_prompt). Objects keep their members' order, as
// Python dicts do (a tool's parameters as the client wrote them), so tojson
// writes what Hugging Face's apply_chat_template writes.
func (t *Template) Render(msgs []inference.Message, tools []inference.Tool) (string, error) {
	ms := make([]jinja.Value, len(msgs))
	for i, m := range msgs {
		v := dict("role", jinja.NewString(m.Role), "content", jinja.NewString(m.Content))
		if len(m.ToolCalls) > 0 {
			calls := make([]jinja.Value, len(m.ToolCalls))
			for j, c := range m.ToolCalls {
				// Templates take the arguments as a mapping (vLLM parses the
				// JSON text before rendering).
				args, err := jsonValue([]byte(c.Arguments))
				if err != nil || !args.IsDict() {
					args = jinja.NewString(c.Arguments)
				}
				calls[j] = dict("id", jinja.NewString(c.ID), "type", jinja.NewString("function"),
					"function", dict("name", jinja.NewString(c.Name), "arguments", args))
			}
			v.AsDict().Set("tool_calls", jinja.NewList(calls))
		}
		if m.ToolCallID != "" {
			v.AsDict().Set("tool_call_id", jinja.NewString(m.ToolCallID))
		}
		ms[i] = v
	}
	data := map[string]jinja.Value{"messages": jinja.NewList(ms), "add_generation_prompt": jinja.NewBool(true),
		"bos_token": jinja.NewString(t.bos), "eos_token": jinja.NewString(t.eos),
		"date_string": jinja.NewString(time.Now().Format("02 Jan 2006"))}
	if len(tools) > 0 {
		ts := make([]jinja.Value, len(tools))
		for i, tl := range tools {
			params, err := jsonValue(tl.Parameters)
			if len(tl.Parameters) == 0 || err != nil {
				params = dict("type", jinja.NewString("object"), "properties", jinja.NewDict())
			}
			ts[i] = dict("type", jinja.NewString("function"), "function",
				dict("name", jinja.NewString(tl.Name), "description", jinja.NewString(tl.Description), "parameters", params))
		}
		data["tools"] = jinja.NewList(ts)
	}
	out, err := t.t.RenderValues(data)
	if err != nil {
		return "", fmt.Errorf("the model's chat template: %w", err)
	}
	return out, nil
}

// dict is an ordered dict of key, value pairs.
func dict(kv ...any) jinja.Value {
	d := jinja.NewDict()
	for i := 0; i < len(kv); i += 2 {
		d.AsDict().Set(kv[i].(string), kv[i+1].(jinja.Value))
	}
	return d
}

// jsonValue is a JSON text as a template value, objects in their order.
func jsonValue(b []byte) (jinja.Value, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	v, err := decodeValue(d)
	if err == nil && d.More() {
		err = fmt.Errorf("data after the JSON value")
	}
	return v, err
}

func decodeValue(d *json.Decoder) (jinja.Value, error) {
	tok, err := d.Token()
	if err != nil {
		return jinja.Undefined(), err
	}
	switch x := tok.(type) {
	case json.Delim:
		if x == '[' {
			var items []jinja.Value
			for d.More() {
				v, err := decodeValue(d)
				if err != nil {
					return v, err
				}
				items = append(items, v)
			}
			_, err := d.Token()
			return jinja.NewList(items), err
		}
		obj := jinja.NewDict()
		for d.More() {
			k, err := d.Token()
			if err != nil {
				return obj, err
			}
			v, err := decodeValue(d)
			if err != nil {
				return v, err
			}
			obj.AsDict().Set(k.(string), v)
		}
		_, err := d.Token()
		return obj, err
	case string:
		return jinja.NewString(x), nil
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return jinja.NewInt(i), nil
		}
		f, err := x.Float64()
		return jinja.NewFloat(f), err
	case bool:
		return jinja.NewBool(x), nil
	}
	return jinja.None(), nil
}
