package manifests

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/open-autoglm/autoglm/internal/toolcache"
)

// istioctlBin is where make test's istioctl target caches istioctl.
func istioctlBin(t *testing.T) string {
	t.Helper()
	mod, err := os.ReadFile(filepath.Join(root(), "test", "istioctl", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^require istio.io/istio (\S+)$`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("test/istioctl/go.mod pins no istio.io/istio")
	}
	dir := toolcache.Require(t, "istioctl", "istioctl-"+string(m[1])+"/bin", "istioctl")
	return filepath.Join(dir, "istioctl")
}

// TestIstioctl: istioctl validate accepts every Istio file and every
// rendered overlay, and istioctl analyze (offline) finds no error or
// warning in them together.
func TestIstioctl(t *testing.T) {
	bin := istioctlBin(t)
	dir := t.TempDir()
	files, _ := filepath.Glob(filepath.Join(root(), "istio", "*.yaml"))
	var rendered []string
	for _, o := range []string{"dev", "gpu"} {
		var out []string
		for _, obj := range build(t, filepath.Join(root(), "manifests", "overlays", o)) {
			b, err := yaml.Marshal(obj)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, string(b))
		}
		p := filepath.Join(dir, o+".yaml")
		if err := os.WriteFile(p, []byte(strings.Join(out, "---\n")), 0o644); err != nil {
			t.Fatal(err)
		}
		rendered = append(rendered, p)
	}
	// The drills replace traffic.yaml's VirtualService for a while: they
	// are validated, not analyzed beside it.
	drills, _ := filepath.Glob(filepath.Join(root(), "istio", "drills", "*.yaml"))
	for _, f := range append(append(append([]string(nil), files...), rendered...), drills...) {
		out, err := exec.Command(bin, "validate", "-f", f).CombinedOutput()
		if err != nil {
			t.Errorf("istioctl validate -f %s: %v\n%s", filepath.Base(f), err, out)
		}
	}
	for _, o := range rendered {
		args := []string{"analyze", "--use-kube=false", "--failure-threshold", "Warning"}
		for _, f := range files {
			if filepath.Base(f) != "operator.yaml" { // an install file, not a mesh resource
				args = append(args, f)
			}
		}
		out, err := exec.Command(bin, append(args, o)...).CombinedOutput()
		if err != nil {
			t.Errorf("istioctl analyze with %s: %v\n%s", filepath.Base(o), err, out)
		}
	}
}
