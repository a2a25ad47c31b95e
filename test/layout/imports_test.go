// Package layout checks that dependencies point the way ARCHITECTURE.md
// and HOUSE_STYLE.md say: engines know nothing of HTTP (but the remote
// engine, an HTTP client by nature) or the sidecar, the
// admission queue and scheduler know nothing of the wire formats, the wire
// format knows nothing of the scheduler.
package layout

import (
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/open-autoglm/autoglm/"

var rules = []struct {
	pkg       string
	forbidden []string
	except    string // a package under pkg the rule does not cover
}{
	{"inference/...", []string{"net/http", "google.golang.org/grpc", mod + "sidecar", mod + "xds", mod + "filter"}, mod + "inference/remote"},
	{"inference/remote", []string{"google.golang.org/grpc", mod + "sidecar", mod + "xds", mod + "filter"}, ""},
	{"sidecar/admission", []string{"net/http", "google.golang.org/grpc", mod}, ""},
	{"sidecar/telemetry", []string{"google.golang.org/grpc", mod + "sidecar"}, ""},
	{"sidecar/stream", []string{"net/http", "google.golang.org/grpc", mod}, ""},
	{"sidecar/dispatch", []string{"net/http", "google.golang.org/grpc", mod + "sidecar/api", mod + "sidecar/server", mod + "sidecar/batch"}, ""},
	{"sidecar/batch", []string{"net/http", "google.golang.org/grpc", mod + "sidecar/api", mod + "sidecar/server"}, ""},
	{"sidecar/api", []string{"google.golang.org/grpc", mod + "sidecar/batch", mod + "sidecar/admission", mod + "inference"}, ""},
	{"sidecar/config", []string{"net/http", mod + "sidecar", mod + "inference", mod + "xds"}, ""},
	{"internal/strictyaml", []string{"net/http", mod + "sidecar", mod + "inference", mod + "xds"}, ""},
	{"xds/...", []string{mod + "sidecar", mod + "inference", mod + "filter"}, ""},
}

// TestImportDirections checks each package's direct imports against the
// rules, and its transitive dependencies on packages of this module.
func TestImportDirections(t *testing.T) {
	for _, r := range rules {
		out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}|{{join .Imports \" \"}}|{{join .Deps \" \"}}", mod+r.pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", r.pkg, err, out)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			parts := strings.SplitN(line, "|", 3)
			if r.except != "" && parts[0] == r.except {
				continue
			}
			self := strings.TrimSuffix(r.pkg, "/...")
			check := func(dep string) {
				if strings.HasPrefix(dep, mod+self) {
					return
				}
				for _, f := range r.forbidden {
					if dep == f || strings.HasPrefix(dep, f+"/") || (strings.HasSuffix(f, "/") && strings.HasPrefix(dep, f)) {
						t.Errorf("%s depends on %s (forbidden: %s)", parts[0], dep, f)
					}
				}
			}
			for _, dep := range strings.Fields(parts[1]) {
				check(dep)
			}
			for _, dep := range strings.Fields(parts[2]) {
				if strings.HasPrefix(dep, mod) {
					check(dep)
				}
			}
		}
	}
}
