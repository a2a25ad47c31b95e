package compile_test

import (
	"encoding/json"
	"flag"
	"path/filepath"
	"strings"
	"testing"

	"github.com/open-autoglm/autoglm/internal/golden"
	"github.com/open-autoglm/autoglm/xds/compile"
	"github.com/open-autoglm/autoglm/xds/config"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestGolden is the config → IR stage: every configuration of
// xds/envoygen/testdata compiles to the IR in testdata/NAME.ir.json (go
// test ./xds/compile -update rewrites them; a mismatch prints the diff),
// and the IR holds its invariants (ir.Validate).
func TestGolden(t *testing.T) {
	inputs, _ := filepath.Glob("../envoygen/testdata/*.yaml")
	if len(inputs) == 0 {
		t.Fatal("no testdata")
	}
	// The kubernetes configuration's Services, as discovery found them.
	found := compile.Discovered{
		{Namespace: "models", Name: "llama-v1", Port: 8080}: {"10.1.0.1:8080", "10.1.0.2:8080"},
	}
	for _, in := range inputs {
		t.Run(filepath.Base(in), func(t *testing.T) {
			c, err := config.Load(in)
			if err != nil {
				t.Fatal(err)
			}
			out := compile.Compile(c, found)
			if err := out.Validate(); err != nil {
				t.Fatalf("compiled IR breaks its invariants: %v", err)
			}
			got, err := json.MarshalIndent(out, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			name := strings.TrimSuffix(filepath.Base(in), ".yaml")
			golden.Check(t, filepath.Join("testdata", name+".ir.json"), append(got, '\n'), *update, "go test ./xds/compile -update")
		})
	}
}
