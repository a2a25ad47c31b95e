package grammar

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/open-autoglm/autoglm/internal/schematest"
)

// Schemas of the kinds structured output and tool calls use.
var schemas = map[string]string{
	"person": `{"type":"object","properties":{"name":{"type":"string","maxLength":12},"age":{"type":"integer"},
		"email":{"type":["string","null"]},"tags":{"type":"array","items":{"type":"string","maxLength":5},"maxItems":3}},
		"required":["name","age","email","tags"],"additionalProperties":false}`,
	"enum": `{"type":"object","properties":{"unit":{"enum":["celsius","fahrenheit"]},"n":{"enum":[1,10,100]},
		"ok":{"type":"boolean"}},"required":["unit","n","ok"],"additionalProperties":false}`,
	"optional": `{"type":"object","properties":{"a":{"type":"number"},"b":{"const":"x"},"c":{"type":"null"}},"required":["b"]}`,
	"nested": `{"type":"object","properties":{"items":{"type":"array","minItems":2,"maxItems":4,"items":{"type":"object",
		"properties":{"id":{"type":"integer"},"price":{"type":"number"}},"required":["id","price"],"additionalProperties":false}}},
		"required":["items"],"additionalProperties":false}`,
	"recursive": `{"$defs":{"node":{"type":"object","properties":{"v":{"type":"integer"},"kids":{"type":"array","maxItems":2,
		"items":{"$ref":"#/$defs/node"}}},"required":["v"],"additionalProperties":false}},"$ref":"#/$defs/node"}`,
	"anyof":    `{"type":"object","properties":{"x":{"anyOf":[{"type":"string","minLength":2},{"type":"integer"},{"type":"null"}]}},"required":["x"]}`,
	"map":      `{"type":"object","additionalProperties":{"type":"integer"}}`,
	"free":     `{"type":"object"}`,
	"escapes":  `{"type":"object","properties":{"a\"b":{"type":"string","minLength":3,"maxLength":3},"π/~":{"type":"boolean"}},"required":["a\"b","π/~"]}`,
	"toplevel": `{"type":"array","items":{"type":"number"},"minItems":1}`,
}

// validator compiles schema with an independent JSON Schema implementation.
func validator(t testing.TB, schema string) *jsonschema.Schema {
	return schematest.Compile(t, []byte(schema))
}

func validate(t testing.TB, s *jsonschema.Schema, out []byte) {
	t.Helper()
	if !json.Valid(out) {
		t.Fatalf("output is not JSON: %s", out)
	}
	schematest.Validate(t, s, out)
}

// testVocab is a byte-level vocabulary (every byte a token, as in
// byte-level BPE) plus multi-byte tokens that cross JSON's structure, and
// an end token.
func testVocab() (*Vocab, [][]byte) {
	pieces := make([][]byte, 0, 300)
	for b := range 256 {
		pieces = append(pieces, []byte{byte(b)})
	}
	for _, s := range []string{`":`, `","`, `{"`, `"}`, `true`, `null`, `false`, `, "`, `name`, `age":1`, `}]`, `"]`,
		`\u00e9`, `é`, `日本`, `0.5e`, `-0`, `12`, `\"`, `""`} {
		pieces = append(pieces, []byte(s))
	}
	pieces = append(pieces, nil) // the end token
	end := len(pieces) - 1
	return NewVocab(len(pieces), func(t int) []byte { return pieces[t] }, func(t int) bool { return t == end },
		func(int) bool { return false }), pieces
}

// generate samples random logits through the constraint until an end
// token, as an engine would.
func generate(t testing.TB, v *Vocab, pieces [][]byte, g *Grammar, budget int, rng *rand.Rand) ([]byte, int) {
	t.Helper()
	c, err := v.Constrain(g, budget)
	if err != nil {
		t.Fatal(err)
	}
	logits := make([]float32, v.Size())
	var out []byte
	for n := 0; ; n++ {
		if n > budget {
			t.Fatalf("no end within the budget of %d tokens: %s", budget, out)
		}
		for i := range logits {
			logits[i] = float32(rng.NormFloat64() * 3)
		}
		c.Mask(logits)
		best, bestV := -1, float32(math.Inf(-1))
		for i, x := range logits {
			if x > bestV {
				best, bestV = i, x
			}
		}
		if best < 0 {
			t.Fatalf("mask left no token after %s", out)
		}
		c.Accept(best, pieces[best])
		if pieces[best] == nil {
			if c.Failed() {
				t.Fatalf("constraint failed: %s", out)
			}
			return out, n
		}
		out = append(out, pieces[best]...)
	}
}

func TestGeneratedOutputValidates(t *testing.T) {
	v, pieces := testVocab()
	for name, schema := range schemas {
		t.Run(name, func(t *testing.T) {
			g, err := Compile([]byte(schema))
			if err != nil {
				t.Fatal(err)
			}
			s := validator(t, schema)
			rng := rand.New(rand.NewPCG(1, uint64(len(name))))
			for _, budget := range []int{60, 120, 400} {
				for range 40 {
					out, _ := generate(t, v, pieces, g, budget, rng)
					validate(t, s, out)
				}
			}
		})
	}
	t.Run("json_object", func(t *testing.T) {
		s := validator(t, `{"type":"object"}`)
		rng := rand.New(rand.NewPCG(2, 2))
		for range 100 {
			out, _ := generate(t, v, pieces, JSONObject(), 80, rng)
			validate(t, s, out)
		}
	})
}

// The budget (tokens before the end token, as max_tokens counts them) is
// met exactly: with the fewest tokens a document needs, the
// output is still complete.
func TestTightBudget(t *testing.T) {
	v, pieces := testVocab()
	for name, schema := range schemas {
		g, err := Compile([]byte(schema))
		if err != nil {
			t.Fatal(err)
		}
		need := g.Matcher().MinRemaining()
		if _, err := v.Constrain(g, need-1); err == nil {
			t.Errorf("%s: a budget of %d below the shortest document (%d) was taken", name, need-1, need)
		}
		rng := rand.New(rand.NewPCG(3, 3))
		for range 20 {
			out, n := generate(t, v, pieces, g, need, rng) // the end token is not counted
			if n > need {
				t.Fatalf("%s: %d tokens > budget", name, n)
			}
			validate(t, validator(t, schema), out)
		}
	}
}

// MinRemaining is exact: a greedy walk that always writes the byte the
// shortest completion needs takes exactly that many bytes.
func TestMinRemainingIsReachable(t *testing.T) {
	for name, schema := range schemas {
		g, err := Compile([]byte(schema))
		if err != nil {
			t.Fatal(err)
		}
		m := g.Matcher()
		want := m.MinRemaining()
		var out []byte
		for !m.Done() {
			need := m.MinRemaining()
			found := false
			for b := range 256 {
				next := &Matcher{}
				next.copyFrom(m)
				if next.Feed(byte(b)) && next.MinRemaining() == need-1 {
					m, found = next, true
					out = append(out, byte(b))
					break
				}
			}
			if !found {
				t.Fatalf("%s: no byte after %q brings the %d left down by one", name, out, need)
			}
		}
		if len(out) != want {
			t.Errorf("%s: shortest document %q is %d bytes, MinRemaining said %d", name, out, len(out), want)
		}
		validate(t, validator(t, schema), out)
	}
}

func TestMatcherAcceptsAndRefuses(t *testing.T) {
	g, err := Compile([]byte(schemas["person"]))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		doc  string
		ok   bool
		done bool
	}{
		{`{"name":"Ann","age":3,"email":null,"tags":[]}`, true, true},
		{`{"tags":["a"],"age":-12,"name":"é日","email":"x@y"}`, true, true},
		{`{"name":"Ann","age":3,"email":null`, true, false}, // a required member missing: not done, '}' refused
		{`{"name":"Ann","age":3,"email":null,"tags":[]}}`, false, false},
		{`{"name":"Ann","name":"Bob"`, false, false}, // a member twice
		{`{"nam":1`, false, false},                   // no such key
		{`{"age":3.5`, false, false},                 // not an integer
		{`{"age":01`, false, false},                  // a leading zero
		{`{"name":"1234567890123"`, false, false},    // longer than maxLength
		{`{ "name"`, false, false},                   // whitespace is not written
		{"{\"name\":\"a\x01", false, false},          // a control character
		{"{\"name\":\"\xff", false, false},           // invalid UTF-8
		{"{\"name\":\"\xed\xa0\x80", false, false},   // a UTF-8 surrogate
		{`{"name":"\q`, false, false},                // a bad escape
		{`{"name":"\u00e9\n","age":0,"email":"","tags":["\/"]}`, true, true},
	} {
		m := g.Matcher()
		ok := m.Write([]byte(tc.doc))
		if ok != tc.ok || (ok && m.Done() != tc.done) {
			t.Errorf("%s: accepted %v (want %v), done %v (want %v)", tc.doc, ok, tc.ok, ok && m.Done(), tc.done)
		}
		if tc.ok && !tc.done && m.Feed('}') {
			t.Errorf("%s: '}' taken before every required member", tc.doc)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	for _, tc := range []struct{ schema, want string }{
		{`{"type":"string","pattern":"^a"}`, `/pattern: the keyword "pattern" is not supported`},
		{`{"type":"object","properties":{"when":{"type":"string","format":"date-time"}}}`, `/properties/when/format`},
		{`{"type":"integer","minimum":0}`, `/minimum`},
		{`{"anyOf":[{"type":"object"},{"type":"object","properties":{"a":{}}}]}`, "/anyOf/1: this alternative can start like an earlier one"},
		{`{"type":"object","properties":{"a":{"$ref":"#/$defs/nope"}}}`, "does not resolve"},
		{`{"$ref":"https://example.com/s.json"}`, "only local references"},
		{`{"$defs":{"n":{"type":"object","properties":{"k":{"$ref":"#/$defs/n"}},"required":["k"]}},"$ref":"#/$defs/n"}`, "no finite value"},
		{`{"type":"object","required":["x"]}`, `"x" is not among the properties`},
		{`{"type":"strng"}`, `unknown type "strng"`},
		{`false`, "admits no value"},
		{`{"type":"array","minItems":3,"maxItems":2}`, "below minItems"},
		{`not json`, "not valid JSON"},
	} {
		_, err := Compile([]byte(tc.schema))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.schema, err, tc.want)
		}
	}
}

// FuzzMatcher feeds arbitrary bytes: whatever the matcher takes and calls
// complete must parse and validate (by the independent validator).
func FuzzMatcher(f *testing.F) {
	names := []string{"person", "enum", "optional", "nested", "recursive", "anyof", "map", "free", "escapes", "toplevel"}
	for i, n := range names {
		f.Add(uint8(i), []byte(`{"name":"a","age":1,"email":null,"tags":["x"]}`))
		f.Add(uint8(i), []byte(`{"unit":"celsius","n":10,"ok":true}`+n))
	}
	f.Add(uint8(5), []byte(`{"x":-0.5e+3}`))
	type compiled struct {
		g *Grammar
		s *jsonschema.Schema
	}
	var cs []compiled
	for _, n := range names {
		g, err := Compile([]byte(schemas[n]))
		if err != nil {
			f.Fatal(err)
		}
		cs = append(cs, compiled{g, validator(f, schemas[n])})
	}
	f.Fuzz(func(t *testing.T, which uint8, in []byte) {
		c := cs[int(which)%len(cs)]
		m := c.g.Matcher()
		var took []byte
		for _, b := range in {
			next := &Matcher{}
			next.copyFrom(m)
			if !next.Feed(b) {
				continue // skip what the grammar refuses, go on with the rest
			}
			m = next
			took = append(took, b)
			if m.Done() {
				validate(t, c.s, took)
			}
		}
	})
}

// FuzzCompile compiles arbitrary schemas: an error or a grammar, never a
// panic or a hang, and a random document of the grammar validates.
func FuzzCompile(f *testing.F) {
	for _, s := range schemas {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"$ref":"#"}`))
	f.Add([]byte(`{"anyOf":[{"$ref":"#"},{"type":"null"}]}`))
	v, pieces := testVocab()
	f.Fuzz(func(t *testing.T, schema []byte) {
		g, err := Compile(schema)
		if err != nil {
			return
		}
		need := g.Matcher().MinRemaining()
		if need > 100 {
			return
		}
		out, _ := generate(t, v, pieces, g, need+20, rand.New(rand.NewPCG(uint64(len(schema)), 1)))
		if !json.Valid(out) {
			t.Fatalf("not JSON: %s", out)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema))
		if err != nil {
			return
		}
		c := jsonschema.NewCompiler()
		if c.AddResource("s.json", doc) != nil {
			return
		}
		s, err := c.Compile("s.json")
		if err != nil {
			return // the reference refuses it (e.g. an invalid keyword value)
		}
		validate(t, s, out)
	})
}

func ExampleCompile() {
	g, _ := Compile([]byte(`{"type":"object","properties":{"ok":{"type":"boolean"}},"required":["ok"]}`))
	m := g.Matcher()
	fmt.Println(m.MinRemaining(), m.Write([]byte(`{"ok":tr`)), m.MinRemaining(), m.Write([]byte(`ue}`)), m.Done())
	// Output: 11 true 3 true true
}
