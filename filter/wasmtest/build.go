// Package wasmtest builds the filter's .wasm for tests and hosts it in
// wazero.
package wasmtest

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

type built struct {
	once sync.Once
	bin  []byte
	err  error
}

var filter, empty built

// Module returns the compiled filter (built once per test process with
// build.sh, as make filter does).
func Module() ([]byte, error) { return filter.get(".") }

// EmptyModule returns a filter that does nothing, built the same way: the
// benchmarks' baseline.
func EmptyModule() ([]byte, error) { return empty.get("./internal/emptyfilter") }

func (b *built) get(pkg string) ([]byte, error) {
	b.once.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Dir(filepath.Dir(file))
		// The module is built by a separate process: reading its sources
		// here lets go test's cache see them, so that a change to the
		// filter reruns these tests.
		if b.err = touchSources(root); b.err != nil {
			return
		}
		dir, err := os.MkdirTemp("", "autoglm-filter-")
		if err != nil {
			b.err = err
			return
		}
		defer os.RemoveAll(dir)
		out := filepath.Join(dir, "filter.wasm")
		cmd := exec.Command("sh", filepath.Join(root, "build.sh"), out, pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("build.sh %s: %w\n%s", pkg, err, out)
			return
		}
		b.bin, b.err = os.ReadFile(out)
	})
	return b.bin, b.err
}

// touchSources reads the files the build depends on.
func touchSources(root string) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != root && (strings.HasPrefix(n, ".") || n == "testdata" || n == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if n := d.Name(); strings.HasSuffix(n, ".go") || n == "go.mod" || n == "go.sum" || n == "build.sh" {
			_, err = os.ReadFile(path)
		}
		return err
	})
}
