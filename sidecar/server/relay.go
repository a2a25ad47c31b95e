package server

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"

	"github.com/open-autoglm/autoglm/inference/remote"
	"github.com/open-autoglm/autoglm/sidecar/api"
)

// relay serves a request that a remote engine answers as it is (tools,
// structured output, logprobs, n, image parts): admission, priority,
// deadline, tenancy and metrics as for any request; the upstream's answer
// — its events, streamed — goes to the client as it came, apart from
// "model" (the name the client asked for) and, when the client did not
// ask for it, the usage event the sidecar requested for its accounting.
func (s *Server) relay(w http.ResponseWriter, r *http.Request, c *call, g *generation, sp *api.Sampling) {
	seqs, cancel := s.start(w, r, c, g)
	if seqs == nil {
		return
	}
	seq := seqs[0]
	defer cancel()
	rename := s.renamer(g.model)
	if !sp.Stream {
		body, err := seq.Wait()
		if err != io.EOF {
			s.reply(w, c, s.failure(err))
			return
		}
		c.generated("", seq.Result())
		out := rename.apply([]byte(body))
		h := w.Header()
		h["Content-Type"] = jsonContentType
		h["Content-Length"] = []string{strconv.Itoa(len(out))}
		w.WriteHeader(http.StatusOK)
		w.Write(out)
		c.answered(http.StatusOK, nil)
		return
	}
	event, err := seq.Next()
	if err != nil && err != io.EOF {
		s.reply(w, c, s.failure(err))
		return
	}
	out := s.startSSE(w, c)
	includeUsage := sp.StreamOptions != nil && sp.StreamOptions.IncludeUsage
	for {
		// The events read since the last time, one per line.
		buf := out.buf[:0]
		for _, ev := range bytes.Split([]byte(event), []byte("\n")) {
			if len(ev) > 0 && (includeUsage || !usageOnly(ev)) {
				buf = out.event(buf, rename.apply(ev))
			}
		}
		if len(buf) > 0 && !out.write(buf) {
			return
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			out.fail(s, c, err)
			return
		}
		event, err = seq.Next()
	}
	c.generated("", seq.Result())
	out.done()
}

// renamer puts the model name the client used in an upstream answer (the
// upstream names its own), changing nothing else: the member is replaced
// where it stands, so the rest stays byte for byte. It is made once per
// request, not per event.
type renamer struct {
	old, new []byte // `"model":"upstream"`, `"model":"client"`; nil: nothing to do
	want     []byte
}

func (s *Server) renamer(model string) renamer {
	up, _ := json.Marshal(s.upstreamModel)
	want, _ := json.Marshal(model)
	if bytes.Equal(up, want) {
		return renamer{}
	}
	return renamer{old: append([]byte(`"model":`), up...), new: append([]byte(`"model":`), want...), want: want}
}

func (r renamer) apply(b []byte) []byte {
	if r.old == nil {
		return b
	}
	if i := bytes.Index(b, r.old); i >= 0 {
		out := make([]byte, 0, len(b)+len(r.new)-len(r.old))
		out = append(append(out, b[:i]...), r.new...)
		return append(out, b[i+len(r.old):]...)
	}
	var m map[string]json.RawMessage // spaced JSON: rewrite the member
	if json.Unmarshal(b, &m) != nil || m["model"] == nil {
		return b
	}
	m["model"] = r.want
	if out, err := json.Marshal(m); err == nil {
		return out
	}
	return b
}

// usageOnly says whether an event is the final usage event (no choices),
// which the sidecar asked for on its own account. Only an event that
// names usage is parsed.
func usageOnly(ev []byte) bool {
	if !bytes.Contains(ev, []byte(`"usage"`)) {
		return false
	}
	var c struct {
		Choices []json.RawMessage `json:"choices"`
		Usage   json.RawMessage   `json:"usage"`
	}
	return json.Unmarshal(ev, &c) == nil && len(c.Choices) == 0 && len(c.Usage) > 0 && string(c.Usage) != "null"
}

// embeddings serves /v1/embeddings: a remote engine's, passed through as
// any relayed request (queued, timed out, counted), or the local engine's
// pooled hidden states (embed).
func (s *Server) embeddings(w http.ResponseWriter, r *http.Request) {
	c := s.begin(r.Context(), headerCarrier(r), "embeddings", "embeddings", r.Header.Get(HeaderRequestID))
	defer c.finish()
	raw, aerr := s.readBody(w, r)
	if aerr != nil {
		s.reply(w, c, aerr)
		return
	}
	var req struct {
		Model     string          `json:"model"`
		Input     json.RawMessage `json:"input"`
		TimeoutMS *int64          `json:"timeout_ms"`
	}
	if !json.Valid(raw) || json.Unmarshal(raw, &req) != nil {
		s.reply(w, c, api.Invalid("", "request body must be a JSON object with model and input"))
		return
	}
	switch {
	case req.Model == "":
		s.reply(w, c, api.Invalid("model", "model: is required"))
		return
	case len(req.Input) == 0 || string(req.Input) == "null":
		s.reply(w, c, api.Invalid("input", "input: is required"))
		return
	case s.sched != nil:
		s.embed(w, r, c, raw)
		return
	}
	g := generation{model: req.Model, prompt: " ", timeoutMS: req.TimeoutMS,
		raw: &remote.RawRequest{Path: "/v1/embeddings", Body: raw}}
	s.relay(w, r, c, &g, &api.Sampling{Model: req.Model})
}
