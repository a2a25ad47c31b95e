// Package toolcache locates the tools that make builds once outside the
// repository (SPIRE, istioctl, etcd, kube-apiserver): $AUTOGLM_TOOLS, by
// default ~/.cache/autoglm-tools (the Makefile exports the same).
package toolcache

import (
	"os"
	"path/filepath"
	"testing"
)

// Dir is the cache directory.
func Dir() string {
	if d := os.Getenv("AUTOGLM_TOOLS"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "autoglm-tools")
}

// Require returns Dir()/sub and fails the test, naming the make target
// that builds them, when any of files (relative to it) is missing.
func Require(t testing.TB, target, sub string, files ...string) string {
	t.Helper()
	dir := filepath.Join(Dir(), sub)
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("%s is not built: run `make %s` (make test does): %v", f, target, err)
		}
	}
	return dir
}
