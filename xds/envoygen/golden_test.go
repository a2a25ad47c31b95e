package envoygen_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/open-autoglm/autoglm/xds/compile"
	"github.com/open-autoglm/autoglm/xds/config"
	"github.com/open-autoglm/autoglm/xds/envoygen"
	"github.com/open-autoglm/autoglm/xds/snapshot"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestGolden translates every testdata/*.yaml configuration and compares
// the resources with testdata/*.golden.yaml (go test -update rewrites
// them). Every run also validates the resources and builds a snapshot.
func TestGolden(t *testing.T) {
	inputs, _ := filepath.Glob("testdata/*.yaml")
	n := 0
	for _, in := range inputs {
		if strings.HasSuffix(in, ".golden.yaml") {
			continue
		}
		n++
		t.Run(filepath.Base(in), func(t *testing.T) {
			c, err := config.Load(in)
			if err != nil {
				t.Fatal(err)
			}
			res, err := envoygen.Generate(compile.Compile(c, nil))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := snapshot.Build(res); err != nil {
				t.Fatal(err)
			}
			got, err := res.YAML()
			if err != nil {
				t.Fatal(err)
			}
			again, _ := envoygen.Generate(compile.Compile(c, nil))
			if b, _ := again.YAML(); !bytes.Equal(b, got) {
				t.Fatal("the same configuration gave different resources")
			}
			golden := strings.TrimSuffix(in, ".yaml") + ".golden.yaml"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (go test ./xds/envoygen -update writes it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s is stale: go test ./xds/envoygen -update, and review the diff", golden)
			}
		})
	}
	if n == 0 {
		t.Fatal("no testdata")
	}
}
