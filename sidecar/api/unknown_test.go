package api

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestSplitUnknown(t *testing.T) {
	for _, tc := range []struct {
		body, want string
		names      []string
	}{
		{`{"model":"m","messages":[{"role":"user","content":"x","extra_in_message":1}],"future":{"a":[1,2]},"n":1,"zeta":null}`,
			`{"model":"m","messages":[{"role":"user","content":"x","extra_in_message":1}],"n":1}`, []string{"future", "zeta"}},
		{`{"model":"m","Temperature":0.5,"messages":[]}`, `{"model":"m","Temperature":0.5,"messages":[]}`, nil}, // known without case
		{`{"model":"m","messages":[]}`, `{"model":"m","messages":[]}`, nil},
		{`[1,2]`, `[1,2]`, nil},
		{`{"model":`, `{"model":`, nil},
		{"{\"a\":\"\xff\"}", "{\"a\":\"\xff\"}", nil},
	} {
		out, u := SplitUnknown([]byte(tc.body), new(ChatRequest))
		if string(out) != tc.want || !reflect.DeepEqual(u.Names, tc.names) {
			t.Errorf("%s: got %s %v, want %s %v", tc.body, out, u.Names, tc.want, tc.names)
		}
	}
	// The completions API knows its own members.
	_, u := SplitUnknown([]byte(`{"model":"m","prompt":"p","echo":false,"best_of":1,"messages":[]}`), new(CompletionRequest))
	if !reflect.DeepEqual(u.Names, []string{"messages"}) {
		t.Errorf("completions: unknown %v", u.Names)
	}
}

// FuzzSplitUnknown: whatever the body, the members kept and the members
// taken out are together exactly the body's members, and a body with
// nothing taken out is returned as it was.
func FuzzSplitUnknown(f *testing.F) {
	for _, s := range []string{`{"model":"m","x":1}`, `{"messages":[{"role":"user"}],"tools":[],"y":{"z":2}}`, `{}`, `[]`, `{"a":1,"a":2}`, `{"MODEL":"m","Model":"n"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		out, u := SplitUnknown([]byte(body), new(ChatRequest))
		if len(u.Names) == 0 {
			if string(out) != body {
				t.Fatalf("nothing unknown, yet the body changed: %q → %q", body, out)
			}
			return
		}
		var in, kept map[string]json.RawMessage
		if err := json.Unmarshal([]byte(body), &in); err != nil {
			t.Fatalf("names taken from a body that is no object: %q", body)
		}
		if err := json.Unmarshal(out, &kept); err != nil {
			t.Fatalf("the rest is not an object: %q → %q (%v)", body, out, err)
		}
		for k := range kept {
			if _, dropped := u.Fields[k]; dropped {
				t.Fatalf("%q both kept and taken out", k)
			}
		}
		for k := range in {
			_, k1 := kept[k]
			_, k2 := u.Fields[k]
			if !k1 && !k2 {
				t.Fatalf("member %q lost: %q → %q + %v", k, body, out, u.Names)
			}
		}
		for _, n := range u.Names {
			if strings.EqualFold(n, "model") || strings.EqualFold(n, "messages") {
				t.Fatalf("a known member taken out: %q", n)
			}
		}
	})
}
