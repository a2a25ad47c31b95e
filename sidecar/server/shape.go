package server

import (
	"crypto/rand"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/chat"
	"github.com/open-autoglm/autoglm/inference/grammar"
	"github.com/open-autoglm/autoglm/sidecar/api"
	"github.com/open-autoglm/autoglm/sidecar/stream"
)

// delta is what one event of an answer carries for one choice.
type delta struct {
	text  string
	lps   []stream.Logprob
	calls []api.ToolCall
}

func (d delta) empty() bool { return d.text == "" && len(d.lps) == 0 && len(d.calls) == 0 }

// shaper turns a choice's generated text into the answer's content and
// tool calls. Without tools it passes text through. With tools it reads
// the model's calls in its chat format's syntax: when a call is required
// the reply is one (the grammar makes it so), streamed as the name and
// then the arguments as they are written; when the model may call, text
// that starts like a call is held to the end and read then.
type shaper struct {
	syn    inference.ToolSyntax
	tools  bool // tools offered (tool_choice is not none)
	forced bool // a call is required
	named  bool // tool_choice names the function (finish "stop", as OpenAI)
	buf    strings.Builder
	mode   int
	lps    []stream.Logprob
	sent   int    // forced: bytes of arguments sent
	head   int    // forced: where the arguments start in buf (0: not yet)
	id     string // forced: the call's id
	called bool
}

const (
	undecided = iota
	textMode
	callMode
)

func newShaper(g *generation, syn inference.ToolSyntax) *shaper {
	sh := &shaper{syn: syn}
	if len(g.tools) > 0 && g.choice.Mode != "none" {
		sh.tools = true
		sh.forced = g.choice.Mode == "required" || g.choice.Mode == "function"
		sh.named = g.choice.Mode == "function"
	}
	if !sh.tools {
		sh.mode = textMode
	} else if sh.forced {
		sh.mode = callMode
	}
	return sh
}

// feed takes newly generated text and returns what may be sent now.
func (sh *shaper) feed(text string, lps []stream.Logprob) delta {
	if sh.mode == textMode && sh.buf.Len() == 0 {
		return delta{text: text, lps: lps}
	}
	sh.buf.WriteString(text)
	sh.lps = append(sh.lps, lps...)
	switch sh.mode {
	case undecided:
		held := sh.buf.String()
		if sh.startsCall(held) {
			if sh.fullOpen(held) {
				sh.mode = callMode
			}
			return delta{}
		}
		sh.mode = textMode
		sh.buf.Reset()
		d := delta{text: held, lps: sh.lps}
		sh.lps = nil
		return d
	case callMode:
		if sh.forced {
			return sh.streamCall(false)
		}
	}
	return delta{}
}

// startsCall says whether held text may still be the start of a call.
func (sh *shaper) startsCall(held string) bool {
	t := strings.TrimLeft(held, " \n\t")
	if sh.syn.Open == "" {
		return t == "" || t[0] == '{'
	}
	open := strings.TrimSpace(sh.syn.Open)
	return strings.HasPrefix(open, t) || strings.HasPrefix(t, open)
}

func (sh *shaper) fullOpen(held string) bool {
	t := strings.TrimLeft(held, " \n\t")
	return sh.syn.Open == "" && t != "" || sh.syn.Open != "" && strings.HasPrefix(t, strings.TrimSpace(sh.syn.Open))
}

// streamCall sends a required call as it is written: `Open{"name":"f","args":`
// gives the name, then the arguments go out, less the `}Close` that
// may end them.
func (sh *shaper) streamCall(end bool) delta {
	buf := sh.buf.String()
	var d delta
	if sh.head == 0 {
		pre := sh.syn.Open + `{"name":"`
		mid := `","` + sh.syn.ArgsKey + `":`
		if !strings.HasPrefix(buf, pre) {
			return d
		}
		k := strings.Index(buf[len(pre):], mid)
		if k < 0 {
			return d
		}
		name := buf[len(pre) : len(pre)+k]
		sh.head = len(pre) + k + len(mid)
		sh.id, sh.called = callID(), true
		zero := 0
		d.calls = []api.ToolCall{{Index: &zero, ID: sh.id, Type: "function", Function: api.FunctionCall{Name: name}}}
	}
	tail := "}" + sh.syn.Close
	upto := len(buf) - len(tail)
	if end {
		upto = len(buf)
		if strings.HasSuffix(buf, tail) {
			upto = len(buf) - len(tail)
		}
	}
	for upto > sh.head+sh.sent && upto < len(buf) && !utf8.RuneStart(buf[upto]) {
		upto-- // never half a character: JSON would replace it
	}
	if upto > sh.head+sh.sent {
		args := buf[sh.head+sh.sent : upto]
		sh.sent += len(args)
		zero := 0
		if len(d.calls) > 0 {
			d.calls[0].Function.Arguments = args
		} else {
			d.calls = []api.ToolCall{{Index: &zero, Function: api.FunctionCall{Arguments: args}}}
		}
	}
	if len(d.calls) > 0 || end {
		d.lps, sh.lps = sh.lps, nil
	}
	return d
}

// end returns what was held and the finish reason to report in place of
// the generation's (empty: keep it).
func (sh *shaper) end() (delta, string) {
	switch {
	case sh.mode == callMode && sh.forced:
		d := sh.streamCall(true)
		return d, sh.finish()
	case sh.buf.Len() == 0:
		return delta{lps: sh.lps}, ""
	}
	held := sh.buf.String()
	sh.buf.Reset()
	calls, content := chat.Parse(held, sh.syn)
	d := delta{lps: sh.lps}
	sh.lps = nil
	if len(calls) == 0 {
		d.text = held
		return d, ""
	}
	d.text = content
	d.calls = apiCalls(calls, true)
	sh.called = true
	return d, sh.finish()
}

func (sh *shaper) finish() string {
	if !sh.called || sh.named {
		return ""
	}
	return "tool_calls"
}

// whole shapes a complete reply: its content (nil when it only calls
// tools), its calls and the finish reason to report in place of the
// generation's (empty: keep it).
func (sh *shaper) whole(text string) (*string, []api.ToolCall, string) {
	if !sh.tools {
		return &text, nil, ""
	}
	calls, content := chat.Parse(text, sh.syn)
	if len(calls) == 0 {
		return &text, nil, ""
	}
	sh.called = true
	var c *string
	if content != "" {
		c = &content
	}
	return c, apiCalls(calls, false), sh.finish()
}

func apiCalls(calls []inference.ToolCall, indexed bool) []api.ToolCall {
	out := make([]api.ToolCall, len(calls))
	for i, c := range calls {
		out[i] = api.ToolCall{ID: callID(), Type: "function", Function: api.FunctionCall{Name: c.Name, Arguments: c.Arguments}}
		if indexed {
			out[i].Index = &i
		}
	}
	return out
}

// compileFormat compiles the grammars a chat request's constrained
// decoding needs, naming the construct the compiler cannot enforce: the
// response_format's (returned; nil for text), and the tools' parameters
// (checked here, compiled again from the cache when a call is required).
func compileFormat(req *api.ChatRequest) (*grammar.Grammar, *api.Error) {
	for i, t := range req.ToolDefs {
		if len(t.Function.Parameters) > 0 && string(t.Function.Parameters) != "null" {
			if _, err := grammar.Compile(t.Function.Parameters); err != nil {
				at := fmt.Sprintf("tools[%d].function.parameters", i)
				return nil, api.Invalid(at, at+": "+err.Error())
			}
		}
	}
	switch {
	case req.Format == nil:
		return nil, nil
	case req.Format.Schema == nil:
		return grammar.JSONObject(), nil
	}
	g, err := grammar.Compile(req.Format.Schema)
	if err != nil {
		return nil, api.Invalid("response_format.json_schema.schema", "response_format.json_schema.schema: "+err.Error())
	}
	return g, nil
}

// callID is a tool call's id, as OpenAI's: "call_" and 24 random
// characters.
func callID() string { return "call_" + rand.Text()[:24] }

// toolMessages turns a request's messages into the engine's, with their
// tool calls.
func toolMessages(msgs []api.ChatMessage) []inference.Message {
	out := make([]inference.Message, len(msgs))
	for i, m := range msgs {
		out[i] = inference.Message{Role: m.Role, Content: m.Content.Text, ToolCallID: m.ToolCallID}
		for _, c := range m.Calls {
			out[i].ToolCalls = append(out[i].ToolCalls, inference.ToolCall{ID: c.ID, Name: c.Function.Name, Arguments: c.Function.Arguments})
		}
	}
	return out
}

func engineTools(defs []api.ToolDef) []inference.Tool {
	out := make([]inference.Tool, len(defs))
	for i, d := range defs {
		out[i] = inference.Tool{Name: d.Function.Name, Description: d.Function.Description, Parameters: d.Function.Parameters}
	}
	return out
}
