package server

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"time"

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
	if !sp.Stream {
		body, err := seq.Wait()
		if err != io.EOF {
			s.reply(w, c, s.failure(err))
			return
		}
		c.generated("", seq.Result())
		out := s.clientModel([]byte(body), g.model)
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
	h := w.Header()
	h["Content-Type"] = sseContentType
	h["Cache-Control"] = noCache
	h["X-Accel-Buffering"] = no
	w.WriteHeader(http.StatusOK)
	c.answered(http.StatusOK, nil)
	rc := http.NewResponseController(w)
	includeUsage := sp.StreamOptions != nil && sp.StreamOptions.IncludeUsage
	var buf []byte
	for {
		// The events read since the last time, one per line.
		buf = buf[:0]
		for _, ev := range bytes.Split([]byte(event), []byte("\n")) {
			if len(ev) > 0 && (includeUsage || !usageOnly(ev)) {
				buf = append(append(append(buf, "data: "...), s.clientModel(ev, g.model)...), "\n\n"...)
			}
		}
		if len(buf) > 0 {
			if s.opts.WriteTimeout > 0 {
				_ = rc.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
			}
			if _, werr := w.Write(buf); werr != nil || rc.Flush() != nil {
				return
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if e := s.failure(err); e != nil {
				c.failedLater(e)
				buf = append(append(append(buf[:0], "data: "...), e.JSON()...), "\n\n"...)
				w.Write(buf)
				io.WriteString(w, "data: [DONE]\n\n")
			}
			return
		}
		event, err = seq.Next()
	}
	c.generated("", seq.Result())
	io.WriteString(w, "data: [DONE]\n\n")
	rc.Flush()
}

// clientModel puts the model name the client used in an upstream answer
// (the upstream names its own), changing nothing else: the member is
// replaced where it stands, so the rest stays byte for byte.
func (s *Server) clientModel(b []byte, model string) []byte {
	up, _ := json.Marshal(s.upstreamModel)
	want, _ := json.Marshal(model)
	if bytes.Equal(up, want) {
		return b
	}
	old := append([]byte(`"model":`), up...)
	if i := bytes.Index(b, old); i >= 0 {
		out := make([]byte, 0, len(b)+len(want))
		out = append(append(append(out, b[:i]...), `"model":`...), want...)
		return append(out, b[i+len(old):]...)
	}
	var m map[string]json.RawMessage // spaced JSON: rewrite the member
	if json.Unmarshal(b, &m) != nil || m["model"] == nil {
		return b
	}
	m["model"] = want
	if out, err := json.Marshal(m); err == nil {
		return out
	}
	return b
}

// usageOnly says whether an event is the final usage event (no choices),
// which the sidecar asked for on its own account.
func usageOnly(ev []byte) bool {
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
