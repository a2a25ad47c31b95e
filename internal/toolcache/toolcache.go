// Package toolcache locates the tools that make builds once outside the
// repository (SPIRE, istioctl, etcd, kube-apiserver): $AUTOGLM_TOOLS, by
// default ~/.cache/autoglm-tools (the Makefile exports the same).
package toolcache

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"runtime"
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

// NodeModules is the node_modules directory make node-sdk installs the
// packages of test/nodesdk into (named by the hash of its lock file), and
// fails the test when they are not installed.
func NodeModules(t testing.TB) string {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	lock, err := os.ReadFile(filepath.Join(filepath.Dir(self), "..", "..", "test", "nodesdk", "package-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(lock)
	dir := Require(t, "node-sdk", "nodesdk-"+hex.EncodeToString(sum[:])[:12], "done")
	return filepath.Join(dir, "node_modules")
}
