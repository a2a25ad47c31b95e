package openai

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
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
	if err != nil || c.PromptTokens != 2 || c.MaxTokens != 5 || c.Deterministic() || c.HasTemperature {
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

// reference is the filter's earlier reader, on encoding/json: Parse must
// agree with it on every input (FuzzParse).
func reference(body []byte) (r Request, m map[string]any, err error) {
	if !json.Valid(body) {
		return r, nil, ErrNotJSON
	}
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	if err := d.Decode(&m); err != nil || m == nil {
		return r, nil, ErrNotJSON
	}
	// Members are matched as encoding/json matches struct fields: without
	// case; names equal without case are refused (ErrDuplicate).
	keys := topKeys(body)
	for i := range keys {
		for j := range i {
			if strings.EqualFold(keys[i], keys[j]) {
				return r, nil, ErrDuplicate
			}
		}
	}
	orig := m
	defer func() { m = orig }() // the key check re-encodes the body as it was
	m = foldKeys(m)
	model, ok := m["model"].(string)
	if !ok || model == "" {
		return r, nil, ErrNoModel
	}
	r.Model = model
	if v, present := m["stream"]; present {
		b, ok := v.(bool)
		if !ok {
			return r, nil, ErrBadField
		}
		r.Stream = b
	}
	for _, k := range []string{"max_tokens", "max_completion_tokens"} {
		if v, present := m[k]; present && v != nil {
			n, ok := v.(json.Number)
			i, err := n.Int64()
			if !ok || err != nil || i < 0 || i > 1<<31 {
				return r, nil, ErrBadField
			}
			r.MaxTokens = int(i)
		}
	}
	if v, present := m["temperature"]; present && v != nil {
		n, ok := v.(json.Number)
		f, err := n.Float64()
		if !ok || err != nil {
			return r, nil, ErrBadField
		}
		r.Temperature, r.HasTemperature = f, true
	}
	r.PromptTokens = refEstimate(m["messages"]) + refEstimate(m["prompt"])
	return r, m, nil
}

// topKeys are the top-level member names in order, duplicates kept.
func topKeys(body []byte) []string {
	d := json.NewDecoder(bytes.NewReader(body))
	var keys []string
	depth := 0
	for {
		tok, err := d.Token()
		if err != nil {
			return keys
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
			if depth == 1 || tok == json.Delim('[') {
				continue
			}
		case json.Delim('}'), json.Delim(']'):
			depth--
			continue
		}
		if k, ok := tok.(string); ok && depth == 1 && d.More() {
			keys = append(keys, k)
			var skip json.RawMessage
			if d.Decode(&skip) != nil {
				return keys
			}
		}
	}
}

// foldKeys renames the members the filter reads to their lower-case
// names (encoding/json's matching); with two names equal without case in
// one nested object the estimate is not compared (nestedDup).
func foldKeys(v map[string]any) map[string]any {
	out := map[string]any{}
	for k, x := range v {
		for _, n := range []string{"role", "text", "model", "stream", "prompt", "content", "messages", "max_tokens", "temperature", "max_completion_tokens"} {
			if strings.EqualFold(k, n) {
				k = n
			}
		}
		out[k] = foldAny(x)
	}
	return out
}

func foldAny(x any) any {
	switch y := x.(type) {
	case map[string]any:
		return foldKeys(y)
	case []any:
		z := make([]any, len(y))
		for i, e := range y {
			z[i] = foldAny(e)
		}
		return z
	}
	return x
}

// foldDup reports an object, at any depth, with two member names equal
// without case but not byte for byte (which a map cannot order).
func foldDup(v any) bool {
	switch x := v.(type) {
	case map[string]any:
		for k := range x {
			for k2 := range x {
				if k != k2 && strings.EqualFold(k, k2) {
					return true
				}
			}
			if foldDup(x[k]) {
				return true
			}
		}
	case []any:
		for _, e := range x {
			if foldDup(e) {
				return true
			}
		}
	}
	return false
}

func refEstimate(v any) int {
	switch x := v.(type) {
	case string:
		return (utf8.RuneCountInString(x) + 3) / 4
	case []any:
		n := 0
		for _, e := range x {
			if msg, ok := e.(map[string]any); ok && msg["role"] != nil {
				n += 4 + refEstimate(msg["content"])
				continue
			}
			n += refEstimate(e)
		}
		return n
	case map[string]any:
		return refEstimate(x["text"])
	}
	return 0
}

func refUsage(body []byte) (Usage, bool) {
	var r struct {
		Usage *Usage `json:"usage"`
	}
	if json.Unmarshal(body, &r) != nil || r.Usage == nil {
		return Usage{}, false
	}
	return r.Usage.total(), true
}

// TestDuplicateMembers: names equal without case (as encoding/json
// matches them, Unicode folding included) are refused, and a field in
// another case is read as that field.
func TestDuplicateMembers(t *testing.T) {
	for _, body := range []string{
		`{"model":"m","prompt":"b","n":1,"prompt":"a"}`,
		`{"model":"m","temperature":0,"Temperature":0.9}`,
		`{"model":"m","max_tokens":5,"max_to\u212aens":9}`,
		`{"model":"m","x":1,"X":2}`,
	} {
		if _, err := Parse([]byte(body)); !errors.Is(err, ErrDuplicate) {
			t.Errorf("%s: %v", body, err)
		}
	}
	r, err := Parse([]byte(`{"Model":"m","TEMPERATURE":0,"Max_Tokens":7}`))
	if err != nil || r.Model != "m" || !r.Deterministic() || r.MaxTokens != 7 {
		t.Fatalf("%+v %v", r, err)
	}
}

func TestKeyCanonical(t *testing.T) {
	key := func(body string) string {
		r, err := Parse([]byte(body))
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		return r.Key()
	}
	base := key(`{"model":"m","prompt":"a","n":1}`)
	for _, same := range []string{
		`{ "n" : 1 , "prompt" : "a" , "model" : "m" }`,
		`{"model":"m","prompt":"\u0061","n":1}`,
		`{"model":"m","prompt":"a","n":1,"user":"x","metadata":{"k":1},"store":true}`,
	} {
		if key(same) != base {
			t.Errorf("%s: key differs from %s", same, base)
		}
	}
	for _, other := range []string{
		`{"model":"m","prompt":"a","n":"1"}`, // a string is not a number
		`{"model":"m","prompt":"a","n":1.0}`, // numbers as written
		`{"model":"m","prompt":["a"],"n":1}`,
		`{"model":"m","prompt":"a","n":1,"x":null}`,
		`{"model":"m","prompt":"a","n":1,"tools":[{"user":1}]}`,
		`{"model":"m","prompt":"a ","n":1}`,
		`{"model":"m","prompt":"a","n":true}`,
		`{"model":"m","promp":"ta","n":1}`, // lengths make the form unambiguous
	} {
		if key(other) == base {
			t.Errorf("%s: same key as the base request", other)
		}
	}
}

func TestUsageLikeEncodingJSON(t *testing.T) {
	for _, body := range []string{
		`{"usage":{"prompt_tokens":3,"completion_tokens":4}}`,
		`{"USAGE":{"Prompt_Tokens":3,"total_tokens":9}}`,
		`{"usage":{"prompt_tokens":3},"usage":{"completion_tokens":4}}`,
		`{"usage":{"prompt_tokens":3},"usage":null}`,
		`{"usage":{"prompt_tokens":"3"}}`,
		`{"usage":{"prompt_tokens":3.5}}`,
		`{"usage":[1]}`,
		`{"usage":{"prompt_tokens":null,"completion_tokens":1}}`,
		`{"usage":{"prompt_tokens":3}} x`,
		`[{"usage":{}}]`,
		`null`,
	} {
		got, gok := UsageOf([]byte(body))
		want, wok := refUsage([]byte(body))
		if got != want || gok != wok {
			t.Errorf("%s: %+v %v, encoding/json %+v %v", body, got, gok, want, wok)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}`))
	f.Add([]byte(`{"model":"m","prompt":["a","b"],"max_tokens":3}`))
	f.Add([]byte(`{"model":"m\u00e9\ud83d\ude00\ud800x","messages":[{"role":null,"text":"\u0041\""},[{"role":"u","content":[{"type":"text","text":"hÿi"}]}]],"stream":true,"max_completion_tokens":1e1}`))
	f.Add([]byte(`{"model":"m","temperature":1e400,"max_tokens":-0,"user":{"a":[1,2,{"b":null}]}}`))
	f.Add([]byte(`{"id":"x","usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := Parse(body)
		want, m, werr := reference(body)
		for _, e := range []error{ErrNotJSON, ErrNoModel, ErrBadField, ErrDuplicate} {
			if errors.Is(err, e) != errors.Is(werr, e) {
				t.Fatalf("error %v, encoding/json's %v", err, werr)
			}
		}
		if err == nil {
			var raw map[string]any
			_ = json.Unmarshal(body, &raw)
			if r.Model != want.Model || r.Stream != want.Stream || r.MaxTokens != want.MaxTokens ||
				r.HasTemperature != want.HasTemperature || (r.PromptTokens != want.PromptTokens && !foldDup(raw)) ||
				r.Temperature != want.Temperature {
				t.Fatalf("%+v, encoding/json's %+v", r, want)
			}
			// The key is the same for encoding/json's rewriting of the body.
			again, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			r2, err := Parse(again)
			if err != nil || r2.Key() != r.Key() || len(r.Key()) != 32 {
				t.Fatalf("key %s; of %s: %s %v", r.Key(), again, r2.Key(), err)
			}
		}
		u, ok := UsageOf(body)
		wu, wok := refUsage(body)
		if u != wu || ok != wok {
			t.Fatalf("usage %+v %v, encoding/json's %+v %v", u, ok, wu, wok)
		}
		StreamUsage(body)
	})
}

func TestDepthLikeEncodingJSON(t *testing.T) {
	for _, depth := range []int{9999, 10000} { // the object itself is one level
		body := `{"model":"m","prompt":` + strings.Repeat("[", depth) + strings.Repeat("]", depth) + `}`
		_, err := Parse([]byte(body))
		_, _, werr := reference([]byte(body))
		if (err == nil) != (werr == nil) {
			t.Errorf("depth %d: %v, encoding/json's %v", depth+1, err, werr)
		}
	}
}

var benchBody = []byte(`{"model":"qwen","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Summarise the plot of Hamlet in two sentences."}],"max_tokens":64,"temperature":0}`)

// BenchmarkParse and BenchmarkKey: the filter's per-request reading of a
// chat request (natively; the wasm figures are in BENCHMARKS.md).
func BenchmarkParse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(benchBody); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkKey(b *testing.B) {
	b.ReportAllocs()
	r, _ := Parse(benchBody)
	for b.Loop() {
		r.key = ""
		_ = r.Key()
	}
}

// TestSpecial8: the 8-byte test agrees with the byte table for every byte
// value at every position, among plain bytes and beside other specials.
func TestSpecial8(t *testing.T) {
	for c := range 256 {
		for p := range 8 {
			for _, fill := range []byte{'a', ' ', 0x7f, '"'} {
				b := bytes.Repeat([]byte{fill}, 8)
				b[p] = byte(c)
				want := false
				for _, x := range b {
					want = want || !plain[x]
				}
				if got := special8(binary.LittleEndian.Uint64(b)); got != want {
					t.Fatalf("%q: %v, want %v", b, got, want)
				}
			}
		}
	}
}

func TestComplete(t *testing.T) {
	chunk := func(s string) string { return "data: " + s + "\n\n" }
	delta := `{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}`
	stop := `{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`
	for _, tc := range []struct {
		name  string
		body  string
		sse   bool
		store bool
	}{
		{"json", `{"choices":[{"index":0,"message":{"content":"hi"},"finish_reason":"stop"}],"usage":{"total_tokens":3}}`, false, true},
		{"json length", `{"choices":[{"index":0,"message":{"content":"hi"},"finish_reason":"length"}]}`, false, true},
		{"json error", `{"error":{"message":"boom"},"choices":[{"finish_reason":"stop"}]}`, false, false},
		{"json unfinished", `{"choices":[{"index":0,"message":{"content":"hi"},"finish_reason":null}]}`, false, false},
		{"json torn", `{"choices":[{"index":0,"message":{"content":"hi"`, false, false},
		{"sse", chunk(delta) + chunk(stop) + chunk("[DONE]"), true, true},
		{"sse cut", chunk(delta) + chunk(delta), true, false},
		{"sse no finish", chunk(delta) + chunk("[DONE]"), true, false},
		{"sse error event", chunk(delta) + chunk(`{"error":{"message":"deadline exceeded","type":"timeout"}}`) + chunk("[DONE]"), true, false},
		{"sse named error event", chunk(delta) + "event: error\n" + chunk(`{"message":"x"}`) + chunk(stop) + chunk("[DONE]"), true, false},
		{"sse one of two choices", chunk(delta) + chunk(`{"choices":[{"index":1,"delta":{"content":"x"},"finish_reason":null}]}`) + chunk(stop) + chunk("[DONE]"), true, false},
		{"sse after done", chunk(delta) + chunk(stop) + chunk("[DONE]") + chunk(delta), true, false},
		{"sse empty", "", true, false},
	} {
		if got := Complete([]byte(tc.body), tc.sse); got != tc.store {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.store)
		}
	}
}
