package api

import (
	"errors"
	"testing"

	"github.com/open-autoglm/autoglm/filter/openai"
)

// FuzzFilterAgrees: the mesh filter (its own JSON reader, in wasm) and
// this sidecar (encoding/json) read a request body the same way — a body
// one refuses as having duplicate member names the other refuses too, and
// of a body both accept they read the same model, stream flag, token
// limit and temperature (what the filter's cache and limits rest on).
func FuzzFilterAgrees(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":0,"Temperature":0.9}`,
		`{"model":"m","messages":[{"role":"user","content":"x"}],"TEMPERATURE":0,"Max_Tokens":5}`,
		`{"model":"m","messages":[{"role":"user","content":"x"}],"max_to\u212aens":5}`,
		`{"model":"m","messages":[{"role":"user","content":"x","Content":"y"}]}`,
		`{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true,"max_tokens":3}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		fr, ferr := openai.Parse(body)
		sr, serr := DecodeChat(body)
		if errors.Is(ferr, openai.ErrDuplicate) && serr == nil {
			t.Fatalf("the filter refuses duplicate names, the sidecar accepts %s", body)
		}
		if ferr != nil || serr != nil {
			return
		}
		want := 0
		if sr.MaxTokens != nil {
			want = *sr.MaxTokens
		}
		if sr.MaxCompletionTokens != nil {
			want = *sr.MaxCompletionTokens
		}
		if fr.Model != sr.Model || fr.Stream != sr.Stream || (sr.Temperature != nil) != fr.HasTemperature ||
			(sr.Temperature != nil && *sr.Temperature != fr.Temperature) || (fr.MaxTokens != want && sr.MaxTokens != nil && sr.MaxCompletionTokens != nil) {
			t.Fatalf("filter %+v, sidecar %+v of %s", fr, sr.Sampling, body)
		}
	})
}
