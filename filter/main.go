// Command filter is the autoglm proxy-wasm filter, built for Envoy with
// standard Go (GOOS=wasip1 GOARCH=wasm -buildmode=c-shared; see make filter).
// The module's entry point is _initialize, which runs init below.
package main

import (
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"

	"github.com/open-autoglm/autoglm/filter/plugin"
)

func init() { proxywasm.SetVMContext(&plugin.VM{}) }

func main() {}
