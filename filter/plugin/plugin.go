// Package plugin is the filter's logic over the proxy-wasm API: the VM,
// plugin (configuration, metrics) and HTTP contexts.
package plugin

import (
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"
)

// VM is the VM context.
type VM struct {
	types.DefaultVMContext
}

// NewPluginContext implements types.VMContext.
func (*VM) NewPluginContext(contextID uint32) types.PluginContext { return &Plugin{} }

// Plugin is one plugin configuration on one worker.
type Plugin struct {
	types.DefaultPluginContext
}

// OnPluginStart implements types.PluginContext.
func (p *Plugin) OnPluginStart(size int) types.OnPluginStartStatus {
	proxywasm.LogInfo("autoglm filter started")
	return types.OnPluginStartStatusOK
}

// NewHttpContext implements types.PluginContext.
func (p *Plugin) NewHttpContext(contextID uint32) types.HttpContext { return &types.DefaultHttpContext{} }
