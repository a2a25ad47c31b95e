package wasmtest

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
)

// envoyImports are the host functions Envoy 1.33 and later provide to a
// proxy-wasm module: the proxy-wasm ABI 0.2.1 "env" functions and the WASI
// preview 1 functions its runtime implements.
var envoyImports = map[string][]string{
	"env": {"proxy_log", "proxy_get_log_level", "proxy_get_status", "proxy_set_tick_period_milliseconds",
		"proxy_get_current_time_nanoseconds", "proxy_get_property", "proxy_set_property", "proxy_get_buffer_bytes",
		"proxy_set_buffer_bytes", "proxy_get_header_map_pairs", "proxy_set_header_map_pairs", "proxy_get_header_map_value",
		"proxy_replace_header_map_value", "proxy_add_header_map_value", "proxy_remove_header_map_value",
		"proxy_get_shared_data", "proxy_set_shared_data", "proxy_register_shared_queue", "proxy_resolve_shared_queue",
		"proxy_dequeue_shared_queue", "proxy_enqueue_shared_queue", "proxy_continue_stream", "proxy_close_stream",
		"proxy_send_local_response", "proxy_http_call", "proxy_grpc_call", "proxy_grpc_stream", "proxy_grpc_send",
		"proxy_grpc_cancel", "proxy_grpc_close", "proxy_done", "proxy_call_foreign_function", "proxy_define_metric",
		"proxy_increment_metric", "proxy_record_metric", "proxy_get_metric", "proxy_set_effective_context",
		"proxy_continue_request", "proxy_continue_response", "proxy_clear_route_cache"},
	"wasi_snapshot_preview1": {"args_get", "args_sizes_get", "environ_get", "environ_sizes_get", "clock_res_get",
		"clock_time_get", "fd_close", "fd_fdstat_get", "fd_fdstat_set_flags", "fd_prestat_get", "fd_prestat_dir_name",
		"fd_read", "fd_seek", "fd_write", "path_open", "poll_oneoff", "proc_exit", "random_get", "sched_yield"},
}

// TestModuleABI: the compiled filter exports the proxy-wasm ABI version
// and callbacks Envoy calls, and imports nothing Envoy does not provide.
func TestModuleABI(t *testing.T) {
	bin, err := Module()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	m, err := r.CompileModule(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	exports := m.ExportedFunctions()
	for _, name := range []string{"_initialize", "proxy_abi_version_0_2_0", "proxy_on_memory_allocate", "proxy_on_context_create",
		"proxy_on_vm_start", "proxy_on_configure", "proxy_on_request_headers", "proxy_on_request_body", "proxy_on_response_headers",
		"proxy_on_response_body", "proxy_on_http_call_response", "proxy_on_tick", "proxy_on_log", "proxy_on_done", "proxy_on_delete"} {
		if _, ok := exports[name]; !ok {
			t.Errorf("the module does not export %s", name)
		}
	}
	if _, ok := m.ExportedMemories()["memory"]; !ok {
		t.Error("the module does not export its memory")
	}
	for _, f := range m.ImportedFunctions() {
		mod, name, _ := f.Import()
		if !slices.Contains(envoyImports[mod], name) {
			t.Errorf("the module imports %s.%s, which Envoy does not provide", mod, name)
		}
	}
	var proxyOn int
	for name := range exports {
		if strings.HasPrefix(name, "proxy_on_") {
			proxyOn++
		}
	}
	t.Logf("%d proxy_on_* exports, %d imports, %d bytes", proxyOn, len(m.ImportedFunctions()), len(bin))
}
