package strictyaml

import (
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
