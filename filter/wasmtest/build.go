// Package wasmtest builds the filter's .wasm for tests and hosts it in
// wazero.
package wasmtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
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
			b.err = fmt.Errorf("build.sh %s: %v\n%s", pkg, err, out)
			return
		}
		b.bin, b.err = os.ReadFile(out)
	})
	return b.bin, b.err
}
