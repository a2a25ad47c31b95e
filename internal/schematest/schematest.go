// Package schematest checks JSON against a JSON Schema with an independent
// implementation (santhosh-tekuri/jsonschema), for the tests of structured
// output and tool calls.
package schematest

import (
	"bytes"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Compile compiles schema or fails the test.
func Compile(t testing.TB, schema []byte) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("schema.json")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Validate fails the test unless text is JSON that s admits.
func Validate(t testing.TB, s *jsonschema.Schema, text []byte) {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(text))
	if err != nil {
		t.Fatalf("not JSON: %q: %v", text, err)
	}
	if err := s.Validate(doc); err != nil {
		t.Fatalf("%q does not validate: %v", text, err)
	}
}
