// Package toolcache locates the tools that make builds once outside the
// repository (SPIRE, istioctl, etcd, kube-apiserver): $AUTOGLM_TOOLS, by
// default ~/.cache/autoglm-tools (the Makefile exports the same).
package toolcache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
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

// RunNode runs a Node.js script with in as JSON on its standard input and
// decodes its standard output, JSON, into out; it fails the test with the
// script's standard error when it fails.
func RunNode(t testing.TB, script string, in, out any, args ...string) {
	t.Helper()
	stdin, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", append([]string{script}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("node %s: %v\n%s", script, err, stderr.String())
	}
	if err := json.Unmarshal(stdout, out); err != nil {
		t.Fatalf("node %s: %v: %.300s", script, err, stdout)
	}
}
