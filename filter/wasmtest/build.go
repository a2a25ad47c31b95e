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

var (
	once  sync.Once
	built []byte
	err   error
)

// Module returns the compiled filter (built once per test process with
// build.sh, as make filter does).
func Module() ([]byte, error) {
	once.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Dir(filepath.Dir(file))
		dir, e := os.MkdirTemp("", "autoglm-filter-")
		if e != nil {
			err = e
			return
		}
		defer os.RemoveAll(dir)
		out := filepath.Join(dir, "autoglm-filter.wasm")
		cmd := exec.Command("sh", filepath.Join(root, "build.sh"), out)
		cmd.Dir = root
		if b, e := cmd.CombinedOutput(); e != nil {
			err = fmt.Errorf("build.sh: %v\n%s", e, b)
			return
		}
		built, err = os.ReadFile(out)
	})
	return built, err
}
