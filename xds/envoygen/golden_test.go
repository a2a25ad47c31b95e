package envoygen_test

import (
	"flag"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/open-autoglm/autoglm/internal/golden"

	"github.com/open-autoglm/autoglm/xds/compile"
	"github.com/open-autoglm/autoglm/xds/config"
	"github.com/open-autoglm/autoglm/xds/envoygen"
	"github.com/open-autoglm/autoglm/xds/ir"
	"github.com/open-autoglm/autoglm/xds/snapshot"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestGolden is the IR → Envoy stage: it translates the IR that every
// testdata/*.yaml configuration compiles to and compares each resource type
// with testdata/NAME.golden/TYPE.yaml (go test ./xds/envoygen -update
// rewrites them; a mismatch prints the diff). Every run also builds a
// snapshot (which checks the resources' consistency) and translates twice
// (the output must not vary).
func TestGolden(t *testing.T) {
	inputs, _ := filepath.Glob("testdata/*.yaml")
	if len(inputs) == 0 {
		t.Fatal("no testdata")
	}
	for _, in := range inputs {
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
			got, err := res.YAMLByType()
			if err != nil {
				t.Fatal(err)
			}
			again, _ := envoygen.Generate(compile.Compile(c, nil))
			if b, _ := again.YAMLByType(); !reflect.DeepEqual(b, got) {
				t.Fatal("the same configuration gave different resources")
			}
			dir := strings.TrimSuffix(in, ".yaml") + ".golden"
			for _, typ := range envoygen.Types {
				golden.Check(t, filepath.Join(dir, typ+".yaml"), got[typ], *update, "go test ./xds/envoygen -update")
			}
		})
	}
}

// TestGenerateRefusesBrokenIR: IR that breaks the invariants envoygen
// relies on is refused with the reason, never translated.
func TestGenerateRefusesBrokenIR(t *testing.T) {
	good := func() *ir.Config {
		return &ir.Config{GRPC: []string{"g"}, Models: []ir.Model{
			{Name: "a", Versions: []ir.Version{{Name: "v1", Weight: 100, HTTP: ir.Cluster{Name: "a-v1", Endpoints: []ir.Endpoint{{Host: "10.0.0.1", Port: 8080}}}}}},
			{Name: "b", Versions: []ir.Version{{Name: "v1", Weight: 100, HTTP: ir.Cluster{Name: "b-v1", DNS: "b.example", DNSPort: 8080}}}},
		}}
	}
	if _, err := envoygen.Generate(good()); err != nil {
		t.Fatalf("the valid IR: %v", err)
	}
	for _, tc := range []struct {
		name, want string
		breakIt    func(*ir.Config)
	}{
		{"unsorted", `models not sorted and unique at "a"`, func(c *ir.Config) { c.Models[0], c.Models[1] = c.Models[1], c.Models[0] }},
		{"duplicate model", `models not sorted and unique at "a"`, func(c *ir.Config) { c.Models[1].Name = "a"; c.Models[1].Versions[0].HTTP.Name = "x" }},
		{"duplicate cluster", `cluster name "a-v1" used twice`, func(c *ir.Config) { c.Models[1].Versions[0].HTTP.Name = "a-v1" }},
		{"no weight", `model "a": weights sum to 0`, func(c *ir.Config) { c.Models[0].Versions[0].Weight = 0 }},
		{"endpoints and dns", `cluster "a-v1": exactly one of endpoints and dns`, func(c *ir.Config) { c.Models[0].Versions[0].HTTP.DNS = "x" }},
		{"neither", `cluster "b-v1": exactly one of endpoints and dns`, func(c *ir.Config) { c.Models[1].Versions[0].HTTP.DNS = "" }},
	} {
		c := good()
		tc.breakIt(c)
		if _, err := envoygen.Generate(c); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
