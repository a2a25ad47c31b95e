package strictyaml

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

type inner struct {
	Name  string        `yaml:"name"`
	Every time.Duration `yaml:"every"`
}

type doc struct {
	inner `yaml:",inline"`
	Items []inner           `yaml:"items"`
	Ptr   *inner            `yaml:"ptr"`
	Named map[string]inner  `yaml:"named"`
	Tags  []string          `yaml:"tags"`
	Plain map[string]string `yaml:"plain"`
	Keep  int               `yaml:"keep"`
}

func TestDecode(t *testing.T) {
	d := doc{Keep: 7}
	err := Decode([]byte(`
name: top
items:
  - name: a
    every: 5s
  - name: b
ptr: {name: p}
named:
  x: {every: 1m}
tags: [t1, t2]
plain: {k: v}
`), &d)
	if err != nil || len(d.Items) != 2 || d.Items[0].Every != 5*time.Second || d.Ptr.Name != "p" || d.Named["x"].Every != time.Minute ||
		len(d.Tags) != 2 || d.Plain["k"] != "v" || d.Keep != 7 || d.Name != "top" {
		t.Fatalf("%+v %v", d, err)
	}
}

func TestDecodeErrors(t *testing.T) {
	var d doc
	err := Decode([]byte(`
items:
  - name: a
    nmae: typo
  - every: soon
ptr: {bogus: 1}
named:
  x: {every: [1]}
items2: 3
`), &d)
	for _, want := range []string{"items[0].nmae (line 4): unknown field", "items[1].every (line 5)", "ptr.bogus (line 6): unknown field", "named.x.every (line 8)", "items2 (line 9): unknown field"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v\ndoes not contain %q", err, want)
		}
	}
	if err := Decode([]byte("items: 3\n"), &d); err == nil || !strings.Contains(err.Error(), "items (line 1): must be a list") {
		t.Errorf("%v", err)
	}
}

// TestAliasBomb: nested aliases that would expand to billions of nodes are
// refused at once, with little memory.
func TestAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&b, "a%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d]\n", i, i, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1)
	}
	b.WriteString("tags: *a9\n")
	var d doc
	err := Decode([]byte(b.String()), &d)
	if err == nil || !strings.Contains(err.Error(), "aliases expand it by more than") {
		t.Fatalf("alias bomb: %v", err)
	}
	// Many aliases of a small value.
	var c strings.Builder
	c.WriteString("name: &n x\ntags:\n")
	for range MaxAliases + 1 {
		c.WriteString("  - *n\n")
	}
	if err := Decode([]byte(c.String()), &d); err == nil || !strings.Contains(err.Error(), "aliases") {
		t.Fatalf("aliases: %v", err)
	}
	// A few aliases are fine.
	if err := Decode([]byte("name: &n x\nitems: [{name: *n}, {name: *n}]\n"), &d); err != nil || d.Items[1].Name != "x" {
		t.Fatalf("%v %+v", err, d)
	}
}

// TestErrorsCapped: an invalid file reports its first MaxErrors problems.
func TestErrorsCapped(t *testing.T) {
	var b strings.Builder
	b.WriteString("items:\n")
	for i := range 10_000 {
		fmt.Fprintf(&b, "  - {bogus%d: 1}\n", i)
	}
	err := Decode([]byte(b.String()), &doc{})
	if err == nil || strings.Count(err.Error(), "\n") != MaxErrors || !strings.Contains(err.Error(), "and 9950 more errors") {
		t.Fatalf("%d lines: %.200v", strings.Count(fmt.Sprint(err), "\n"), err)
	}
}

// TestDuplicateKeys: a key given twice is an error, not the last one.
func TestDuplicateKeys(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"keep: 90\nkeep: 10\n", "keep (line 2): duplicate key (first at line 1)"},
		{"items:\n  - {name: a, name: b}\n", "items[0].name (line 2): duplicate key"},
		{"named:\n  x: {name: a}\n  x: {name: b}\n", "named.x (line 3): duplicate key"},
		{"plain: {a: 1, a: 2}\n", "already defined"},
	} {
		if err := Decode([]byte(tc.yaml), &doc{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

// FuzzDecode: no input panics, and none makes the decoder do more than
// the bounds allow.
func FuzzDecode(f *testing.F) {
	f.Add([]byte("name: top\nitems: [{name: a, every: 5s}]\nptr: {name: p}\nnamed: {x: {name: y}}\n"))
	f.Add([]byte("a: &a [1, 2]\nb: [*a, *a]\ntags: *a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var d doc
		if err := Decode(data, &d); err != nil && strings.Count(err.Error(), "\n") > MaxErrors {
			t.Fatalf("%d error lines", strings.Count(err.Error(), "\n"))
		}
	})
}
