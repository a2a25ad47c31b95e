//go:build wasip1

package internal

import (
	"unsafe"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"
)

// The SDK marks its callbacks with TinyGo's //export, which standard Go
// ignores; these are the same callbacks exported with //go:wasmexport and
// the ABI's 32-bit integer signatures.

//go:wasmexport proxy_abi_version_0_2_0
func exportABIVersion() {}

// pinned keeps the buffers the host asked for (proxy_on_memory_allocate)
// reachable until the SDK has made Go pointers to them: the host writes
// into a buffer and hands its address back within the same host call, so
// they are released when the next callback starts.
var pinned [][]byte

// The SDK's module says go 1.19: these files compile at that language
// version (no clear, min or max).
func release() {
	for i := range pinned {
		pinned[i] = nil
	}
	pinned = pinned[:0]
}

//go:wasmexport proxy_on_memory_allocate
func exportOnMemoryAllocate(size uint32) uint32 {
	if size == 0 {
		size = 1
	}
	buf := make([]byte, size)
	pinned = append(pinned, buf)
	return uint32(uintptr(unsafe.Pointer(&buf[0])))
}

func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

//go:wasmexport proxy_on_context_create
func exportOnContextCreate(contextID, rootContextID uint32) {
	release()
	proxyOnContextCreate(contextID, rootContextID)
}

//go:wasmexport proxy_on_vm_start
func exportOnVMStart(rootContextID, configSize uint32) uint32 {
	release()
	return b2u(bool(proxyOnVMStart(rootContextID, int(configSize))))
}

//go:wasmexport proxy_on_configure
func exportOnConfigure(rootContextID, configSize uint32) uint32 {
	release()
	return b2u(bool(proxyOnConfigure(rootContextID, int(configSize))))
}

//go:wasmexport proxy_on_tick
func exportOnTick(rootContextID uint32) {
	release()
	proxyOnTick(rootContextID)
}

//go:wasmexport proxy_on_queue_ready
func exportOnQueueReady(rootContextID, queueID uint32) {
	release()
	proxyOnQueueReady(rootContextID, queueID)
}

//go:wasmexport proxy_on_new_connection
func exportOnNewConnection(contextID uint32) uint32 {
	release()
	return uint32(proxyOnNewConnection(contextID))
}

//go:wasmexport proxy_on_downstream_data
func exportOnDownstreamData(contextID, size, endOfStream uint32) uint32 {
	release()
	return uint32(proxyOnDownstreamData(contextID, int(size), endOfStream != 0))
}

//go:wasmexport proxy_on_downstream_connection_close
func exportOnDownstreamConnectionClose(contextID, peer uint32) {
	release()
	proxyOnDownstreamConnectionClose(contextID, types.PeerType(peer))
}

//go:wasmexport proxy_on_upstream_data
func exportOnUpstreamData(contextID, size, endOfStream uint32) uint32 {
	release()
	return uint32(proxyOnUpstreamData(contextID, int(size), endOfStream != 0))
}

//go:wasmexport proxy_on_upstream_connection_close
func exportOnUpstreamConnectionClose(contextID, peer uint32) {
	release()
	proxyOnUpstreamConnectionClose(contextID, types.PeerType(peer))
}

//go:wasmexport proxy_on_request_headers
func exportOnRequestHeaders(contextID, headers, endOfStream uint32) uint32 {
	release()
	return uint32(proxyOnRequestHeaders(contextID, int(headers), endOfStream != 0))
}

//go:wasmexport proxy_on_request_body
func exportOnRequestBody(contextID, size, endOfStream uint32) uint32 {
	release()
	return uint32(proxyOnRequestBody(contextID, int(size), endOfStream != 0))
}

//go:wasmexport proxy_on_request_trailers
func exportOnRequestTrailers(contextID, trailers uint32) uint32 {
	release()
	return uint32(proxyOnRequestTrailers(contextID, int(trailers)))
}

//go:wasmexport proxy_on_response_headers
func exportOnResponseHeaders(contextID, headers, endOfStream uint32) uint32 {
	release()
	return uint32(proxyOnResponseHeaders(contextID, int(headers), endOfStream != 0))
}

//go:wasmexport proxy_on_response_body
func exportOnResponseBody(contextID, size, endOfStream uint32) uint32 {
	release()
	return uint32(proxyOnResponseBody(contextID, int(size), endOfStream != 0))
}

//go:wasmexport proxy_on_response_trailers
func exportOnResponseTrailers(contextID, trailers uint32) uint32 {
	release()
	return uint32(proxyOnResponseTrailers(contextID, int(trailers)))
}

//go:wasmexport proxy_on_http_call_response
func exportOnHttpCallResponse(rootContextID, token, headers, bodySize, trailers uint32) {
	release()
	proxyOnHttpCallResponse(rootContextID, token, int(headers), int(bodySize), int(trailers))
}

//go:wasmexport proxy_on_log
func exportOnLog(contextID uint32) {
	release()
	proxyOnLog(contextID)
}

//go:wasmexport proxy_on_done
func exportOnDone(contextID uint32) uint32 {
	release()
	return b2u(proxyOnDone(contextID))
}

//go:wasmexport proxy_on_delete
func exportOnDelete(contextID uint32) {
	release()
	proxyOnDelete(contextID)
}
