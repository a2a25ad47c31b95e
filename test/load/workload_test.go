package load

import (
	"math/rand/v2"
	"strings"
	"testing"
)

func TestParseDist(t *testing.T) {
	for in, want := range map[string]Dist{
		"128":            {Kind: "fixed", A: 128},
		"uniform:64-256": {Kind: "uniform", A: 64, B: 256},
		"normal:128,32":  {Kind: "normal", A: 128, B: 32},
	} {
		d, err := ParseDist(in)
		if err != nil || d != want || d.String() != in {
			t.Errorf("%q: %+v %v", in, d, err)
		}
	}
	for _, bad := range []string{"", "0", "-5", "x", "uniform:9-3", "uniform:5", "gamma:1,2", "normal:0,1", "normal:a,b", "NaN", "normal:NaN,1", "uniform:1-Inf", "1e9"} {
		if _, err := ParseDist(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	u := Dist{Kind: "uniform", A: 10, B: 20}
	seen := map[int]bool{}
	for range 2000 {
		v := u.Sample(rng)
		if v < 10 || v > 20 {
			t.Fatalf("uniform sample %d", v)
		}
		seen[v] = true
	}
	if len(seen) != 11 {
		t.Fatalf("uniform:10-20 drew %d distinct values, want 11", len(seen))
	}
	if v := (Dist{Kind: "normal", A: 1, B: 100}).Sample(rng); v < 1 {
		t.Fatalf("normal sample %d below 1", v)
	}
}

func TestReadDataset(t *testing.T) {
	ds, err := ReadDataset(strings.NewReader(`{"prompt":"one"}

{"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"a"},{"role":"assistant","content":"x"},{"role":"user","content":"b"}]}
`))
	if err != nil || len(ds) != 2 || ds[0][0].Content != "one" || len(ds[1]) != 3 || ds[1][2].Content != "b" {
		t.Fatalf("%+v %v", ds, err)
	}
	for in, want := range map[string]string{
		`{"prompt":"a"}` + "\n" + `{"prompt":`:         "line 2",
		`{"prompt":"a","messages":[]}`:                 "line 1: want exactly one",
		`{"messages":[{"role":"tool","content":"x"}]}`: "messages[0].role",
		`{"prompt":"a","n":2}`:                         "unknown field",
		``:                                             "no prompts",
	} {
		if _, err := ReadDataset(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
}

// TestDatasetSessions: a session sends its conversation's user messages in
// turn, system messages once, then starts another conversation.
func TestDatasetSessions(t *testing.T) {
	w := Workload{Chat: true, Output: Dist{Kind: "fixed", A: 4}, Turns: 2, Dataset: [][]Message{
		{{Role: "system", Content: "s"}, {Role: "user", Content: "a"}, {Role: "user", Content: "b"}},
	}}
	s := &session{rng: rand.New(rand.NewPCG(1, 1))}
	r1 := w.next(s)
	s.reply("A")
	r2 := w.next(s)
	s.reply("B")
	r3 := w.next(s)
	if key(r1.Chat) != key([]Message{{"system", "s"}, {"user", "a"}}) ||
		key(r2.Chat) != key([]Message{{"system", "s"}, {"user", "a"}, {"assistant", "A"}, {"user", "b"}}) ||
		key(r3.Chat) != key(r1.Chat) || r1.MaxTokens != 4 {
		t.Fatalf("%+v\n%+v\n%+v", r1.Chat, r2.Chat, r3.Chat)
	}
}

func FuzzReadDataset(f *testing.F) {
	f.Add(`{"prompt":"x"}`)
	f.Add(`{"messages":[{"role":"user","content":"a"}]}` + "\n" + `{"prompt":""}`)
	f.Fuzz(func(t *testing.T, in string) {
		ds, err := ReadDataset(strings.NewReader(in))
		if err == nil && len(ds) == 0 {
			t.Fatal("no error and no prompts")
		}
		for _, c := range ds {
			for _, m := range c {
				if m.Role == "assistant" {
					t.Fatal("assistant messages must come from the service")
				}
			}
		}
	})
}

func FuzzParseDist(f *testing.F) {
	for _, s := range []string{"5", "uniform:1-3", "normal:9,2", "uniform:1e308-1e309"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		d, err := ParseDist(in)
		if err != nil {
			return
		}
		if v := d.Sample(rand.New(rand.NewPCG(1, 1))); v < 1 {
			t.Fatalf("%q sampled %d", in, v)
		}
	})
}
