package openai

import (
	"bytes"
	"encoding/json"
)

// Complete reports whether a 200 response is a whole, successful answer
// that a cache may give again: a JSON object with no "error" whose every
// choice has a finish_reason; or an event stream with no error event that
// ends with "data: [DONE]" and finished every choice it began. A stream
// cut by a deadline or an upstream failure, or one that reported an error
// mid-way, is not. (Rarely run — only for a response about to be stored —
// so encoding/json, whose case-insensitive keys make it err on the side of
// not storing.)
func Complete(body []byte, eventStream bool) bool {
	type choice struct {
		Index        int     `json:"index"`
		FinishReason *string `json:"finish_reason"`
	}
	type msg struct {
		Error   json.RawMessage `json:"error"`
		Choices []choice        `json:"choices"`
	}
	if !eventStream {
		var m msg
		if json.Unmarshal(body, &m) != nil || m.Error != nil || len(m.Choices) == 0 {
			return false
		}
		for _, c := range m.Choices {
			if c.FinishReason == nil || *c.FinishReason == "" {
				return false
			}
		}
		return true
	}
	begun, finished := map[int]bool{}, map[int]bool{}
	done := false
	for line := range bytes.Lines(body) {
		line = bytes.TrimRight(line, "\r\n")
		data, ok := bytes.CutPrefix(line, []byte("data:"))
		if !ok {
			if bytes.HasPrefix(line, []byte("event:")) && bytes.Contains(line, []byte("error")) {
				return false
			}
			continue
		}
		if done {
			return false // data after the end
		}
		data = bytes.TrimSpace(data)
		if string(data) == "[DONE]" {
			done = true
			continue
		}
		var m msg
		if json.Unmarshal(data, &m) != nil || m.Error != nil {
			return false
		}
		for _, c := range m.Choices {
			begun[c.Index] = true
			if c.FinishReason != nil && *c.FinishReason != "" {
				finished[c.Index] = true
			}
		}
	}
	if !done || len(begun) == 0 {
		return false
	}
	for i := range begun {
		if !finished[i] {
			return false
		}
	}
	return true
}
