package openai

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	r, err := Parse([]byte(`{"model":"m","stream":true,"max_tokens":64,"temperature":0,"user":"u1",
		"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":[{"type":"text","text":"Hello there"}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.Model != "m" || !r.Stream || r.MaxTokens != 64 || !r.Deterministic() || r.PromptTokens != 4+4+4+3 {
		t.Fatalf("%+v", r)
	}
	// The key ignores field order, spacing and "user"; sampling changes it.
	same, _ := Parse([]byte(`{"user":"u2","temperature":0,"max_tokens":64,"stream":true,"model":"m",
		"messages":[{"content":"You are terse.","role":"system"},{"role":"user","content":[{"text":"Hello there","type":"text"}]}]}`))
	other, _ := Parse([]byte(`{"model":"m","stream":true,"max_tokens":64,"temperature":0.7,
		"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":[{"type":"text","text":"Hello there"}]}]}`))
	if same.Key() != r.Key() || other.Key() == r.Key() || len(r.Key()) != 32 {
		t.Fatalf("keys %s %s %s", r.Key(), same.Key(), other.Key())
	}
	c, err := Parse([]byte(`{"model":"m","prompt":"abcdefgh","max_completion_tokens":5}`))
	if err != nil || c.PromptTokens != 2 || c.MaxTokens != 5 || c.Deterministic() || c.Temperature != nil {
		t.Fatalf("%+v %v", c, err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want error
	}{
		{`not json`, ErrNotJSON},
		{`[1]`, ErrNotJSON},
		{`{"model":"m"} {}`, ErrNotJSON},
		{`{"prompt":"x"}`, ErrNoModel},
		{`{"model":""}`, ErrNoModel},
		{`{"model":7}`, ErrNoModel},
		{`{"model":"m","stream":"yes"}`, ErrBadField},
		{`{"model":"m","max_tokens":-1}`, ErrBadField},
		{`{"model":"m","max_tokens":1.5}`, ErrBadField},
		{`{"model":"m","temperature":"hot"}`, ErrBadField},
	} {
		if _, err := Parse([]byte(tc.in)); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.in, err, tc.want)
		}
	}
}

func TestUsage(t *testing.T) {
	u, ok := UsageOf([]byte(`{"id":"x","usage":{"prompt_tokens":3,"completion_tokens":4}}`))
	if !ok || u.TotalTokens != 7 {
		t.Fatalf("%+v %v", u, ok)
	}
	sse := "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n" +
		"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n" +
		"data: [DONE]\n\n"
	if u, ok := StreamUsage([]byte(sse)); !ok || u.TotalTokens != 7 {
		t.Fatalf("stream %+v %v", u, ok)
	}
	if _, ok := StreamUsage([]byte("data: {\"usage\":null}\n\ndata: [DONE]\n\n")); ok {
		t.Fatal("usage found where there is none")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}`))
	f.Add([]byte(`{"model":"m","prompt":["a","b"],"max_tokens":3}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := Parse(body)
		if err == nil && (r.Model == "" || r.MaxTokens < 0 || len(r.Key()) != 32) {
			t.Fatalf("%+v", r)
		}
		StreamUsage(body)
	})
}
