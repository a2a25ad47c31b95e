package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
)

// toolName is OpenAI's rule for function names.
var toolName = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// MaxTools is the most tools one request may declare (OpenAI's limit).
const MaxTools = 128

// decodeTools checks tools and tool_choice for the native engine, which
// renders the tools through the model's chat format and, when a call is
// required, constrains the reply to one.
func decodeTools(r *ChatRequest, p *problems) {
	if isSet(r.Tools) {
		if err := strictJSON(r.Tools, &r.ToolDefs); err != nil {
			p.add("tools", "must be an array of tools: %v", err)
			return
		}
		if len(r.ToolDefs) > MaxTools {
			p.add("tools", "at most %d tools, got %d", MaxTools, len(r.ToolDefs))
		}
		seen := map[string]bool{}
		for i, t := range r.ToolDefs {
			at := fmt.Sprintf("tools[%d]", i)
			if t.Type != "function" {
				p.add(at+".type", "only \"function\" is supported, got %q", t.Type)
			}
			if !toolName.MatchString(t.Function.Name) {
				p.add(at+".function.name", "must be 1 to 64 letters, digits, underscores or dashes, got %q", t.Function.Name)
			}
			if seen[t.Function.Name] {
				p.add(at+".function.name", "%q is declared twice", t.Function.Name)
			}
			seen[t.Function.Name] = true
			if isSet(t.Function.Parameters) && t.Function.Parameters[0] != '{' {
				p.add(at+".function.parameters", "must be a JSON Schema object")
			}
		}
	}
	r.Choice = ToolChoice{Mode: "auto"}
	if len(r.ToolDefs) == 0 {
		r.Choice.Mode = "none"
	}
	if !isSet(r.ToolChoice) {
		return
	}
	var mode string
	if json.Unmarshal(r.ToolChoice, &mode) == nil {
		switch mode {
		case "none", "auto", "required":
			r.Choice.Mode = mode
		default:
			p.add("tool_choice", "must be none, auto, required or a function, got %q", mode)
			return
		}
	} else {
		var named struct {
			Type     string `json:"type"`
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		}
		if err := strictJSON(r.ToolChoice, &named); err != nil || named.Type != "function" {
			p.add("tool_choice", "must be none, auto, required or {\"type\":\"function\",\"function\":{\"name\":…}}")
			return
		}
		r.Choice = ToolChoice{Mode: "function", Name: named.Function.Name}
		if !seenTool(r.ToolDefs, named.Function.Name) {
			p.add("tool_choice.function.name", "%q is not among the tools", named.Function.Name)
		}
	}
	if r.Choice.Mode != "none" && len(r.ToolDefs) == 0 {
		p.add("tool_choice", "%s needs tools", r.Choice.Mode)
	}
}

func seenTool(tools []ToolDef, name string) bool {
	for _, t := range tools {
		if t.Function.Name == name {
			return true
		}
	}
	return false
}

// decodeMessageTools checks an assistant message's tool calls and a tool
// message's reference to one.
func decodeMessageTools(m *ChatMessage, i int, p *problems) {
	at := fmt.Sprintf("messages[%d]", i)
	if isSet(m.ToolCalls) {
		if m.Role != "assistant" {
			p.add(at+".tool_calls", "only assistant messages carry tool calls")
			return
		}
		if err := strictJSON(m.ToolCalls, &m.Calls); err != nil {
			p.add(at+".tool_calls", "must be an array of tool calls: %v", err)
			return
		}
		for j, c := range m.Calls {
			if c.Type != "" && c.Type != "function" {
				p.add(fmt.Sprintf("%s.tool_calls[%d].type", at, j), "only \"function\" is supported")
			}
			if c.Function.Name == "" {
				p.add(fmt.Sprintf("%s.tool_calls[%d].function.name", at, j), "is required")
			}
		}
	}
	if m.Role == "tool" && m.ToolCallID == "" {
		p.add(at+".tool_call_id", "is required in a tool message")
	}
}

// decodeFormat reads response_format's JSON output and its schema (which
// the server compiles for constrained decoding).
func decodeFormat(r *ChatRequest, p *problems) {
	rf := r.ResponseFormat
	if rf == nil {
		return
	}
	switch rf.Type {
	case "text":
	case "json_object":
		r.Format = &JSONFormat{}
	case "json_schema":
		var js struct {
			Name        string          `json:"name"`
			Description string          `json:"description"`
			Schema      json.RawMessage `json:"schema"`
			Strict      *bool           `json:"strict"`
		}
		if err := strictJSON(rf.JSONSchema, &js); err != nil {
			p.add("response_format.json_schema", "must be an object with name, schema, strict and description: %v", err)
			return
		}
		if js.Name == "" {
			p.add("response_format.json_schema.name", "is required")
		}
		if !isSet(js.Schema) {
			js.Schema = json.RawMessage(`{}`)
		}
		r.Format = &JSONFormat{Schema: js.Schema}
	default:
		p.add("response_format.type", "must be text, json_object or json_schema, got %q", rf.Type)
	}
}

// strictJSON decodes b into v refusing unknown members.
func strictJSON(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	return d.Decode(v)
}
