package wasmtest

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"github.com/tetratelabs/wazero/api"
)

type u = uint32

// instantiateEnv provides the proxy-wasm "env" host functions.
func (h *Host) instantiateEnv() error {
	bld := h.rt.NewHostModuleBuilder("env")
	fn := func(name string, f any) {
		call, params := bind(f)
		bld.NewFunctionBuilder().WithGoModuleFunction(call, params, []api.ValueType{api.ValueTypeI32}).Export(name)
	}
	w := h.worker

	fn("proxy_log", func(_ context.Context, m api.Module, level, msg, size u) u {
		wk := w(m)
		wk.Logs = append(wk.Logs, fmt.Sprintf("[%d] %s", level, wk.read(msg, size)))
		return statusOK
	})
	fn("proxy_set_tick_period_milliseconds", func(_ context.Context, m api.Module, p u) u { return statusOK })
	fn("proxy_set_effective_context", func(_ context.Context, m api.Module, id u) u {
		w(m).active = id
		return statusOK
	})
	fn("proxy_done", func(_ context.Context, m api.Module) u { return statusOK })

	// Shared data, with Envoy's compare-and-swap: cas 0 writes
	// unconditionally, any other must match the value's current cas.
	fn("proxy_get_shared_data", func(_ context.Context, m api.Module, key, ksize, retData, retSize, retCas u) u {
		wk := w(m)
		if h.SharedDown {
			return statusInternal
		}
		k := string(wk.read(key, ksize))
		h.mu.Lock()
		h.SharedReads++
		v, ok := h.shared[k]
		var data []byte
		var cas u
		if ok {
			data, cas = append([]byte(nil), v.data...), v.cas
		}
		h.mu.Unlock()
		if !ok {
			return statusNotFound
		}
		wk.give(data, retData, retSize)
		wk.mod.Memory().WriteUint32Le(retCas, cas)
		h.mu.Lock()
		hook := h.OnSharedGet
		h.OnSharedGet = nil // one interleaving per arming
		h.mu.Unlock()
		if hook != nil {
			hook(wk, k)
		}
		if h.Interleave != nil {
			h.Interleave()
		}
		return statusOK
	})
	fn("proxy_set_shared_data", func(_ context.Context, m api.Module, key, ksize, val, vsize, cas u) u {
		wk := w(m)
		if h.SharedDown {
			return statusInternal
		}
		k := string(wk.read(key, ksize))
		data := wk.read(val, vsize)
		if h.Interleave != nil {
			defer h.Interleave()
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		// As proxy-wasm-cpp-host's SharedData::set: an absent key is
		// written whatever the cas; an existing one when cas is 0 or
		// matches. Cas values come from one counter, never 0.
		h.casSeq++
		v, ok := h.shared[k]
		if !ok {
			h.shared[k] = &sharedValue{data: data, cas: h.casSeq}
			return statusOK
		}
		if cas != 0 && cas != v.cas {
			return statusCasMismatch
		}
		v.data, v.cas = data, h.casSeq
		return statusOK
	})
	for _, name := range []string{"proxy_register_shared_queue", "proxy_enqueue_shared_queue"} {
		fn(name, func(_ context.Context, m api.Module, a, b, c u) u { return statusUnimpl })
	}
	fn("proxy_resolve_shared_queue", func(_ context.Context, m api.Module, a, b, c, d, e u) u { return statusUnimpl })
	fn("proxy_dequeue_shared_queue", func(_ context.Context, m api.Module, a, b, c u) u { return statusUnimpl })
	// Envoy's foreign functions (source/extensions/common/wasm/foreign.cc):
	// clear_route_cache only; an unknown name is NotFound.
	fn("proxy_call_foreign_function", func(_ context.Context, m api.Module, name, nsize, _, _, retData, retSize u) u {
		wk := w(m)
		if string(wk.read(name, nsize)) != "clear_route_cache" {
			return statusNotFound
		}
		if s := wk.streams[wk.active]; s != nil {
			s.RouteCacheCleared++
		}
		wk.mod.Memory().WriteUint32Le(retData, 0)
		wk.mod.Memory().WriteUint32Le(retSize, 0)
		return statusOK
	})

	// Headers of the active stream (or of the callout being answered).
	headers := func(wk *Worker, mt u) *[][2]string {
		switch mt {
		case 6:
			if wk.callout != nil {
				return &wk.callout.response.headers
			}
			return nil
		case 0, 2:
			s := wk.streams[wk.active]
			if s == nil {
				return nil
			}
			if mt == 0 {
				if !s.headersLive {
					return nil // the wasm context has dropped the map: BadArgument
				}
				return &s.RequestHeaders
			}
			return &s.ResponseHeaders
		}
		return nil
	}
	fn("proxy_get_header_map_value", func(_ context.Context, m api.Module, mt, key, ksize, retData, retSize u) u {
		wk := w(m)
		hs := headers(wk, mt)
		if hs == nil {
			return statusBadArgument
		}
		k := strings.ToLower(string(wk.read(key, ksize)))
		for _, kv := range *hs {
			if kv[0] == k {
				return wk.give([]byte(kv[1]), retData, retSize)
			}
		}
		return statusNotFound
	})
	set := func(replace bool) any {
		return func(_ context.Context, m api.Module, mt, key, ksize, val, vsize u) u {
			wk := w(m)
			hs := headers(wk, mt)
			if hs == nil {
				return statusBadArgument
			}
			k, v := strings.ToLower(string(wk.read(key, ksize))), string(wk.read(val, vsize))
			if replace {
				out := (*hs)[:0]
				for _, kv := range *hs {
					if kv[0] != k {
						out = append(out, kv)
					}
				}
				*hs = out
			}
			*hs = append(*hs, [2]string{k, v})
			return statusOK
		}
	}
	fn("proxy_add_header_map_value", set(false))
	fn("proxy_replace_header_map_value", set(true))
	fn("proxy_remove_header_map_value", func(_ context.Context, m api.Module, mt, key, ksize u) u {
		wk := w(m)
		hs := headers(wk, mt)
		if hs == nil {
			return statusBadArgument
		}
		k := strings.ToLower(string(wk.read(key, ksize)))
		out := (*hs)[:0]
		for _, kv := range *hs {
			if kv[0] != k {
				out = append(out, kv)
			}
		}
		*hs = out
		return statusOK
	})
	fn("proxy_get_header_map_pairs", func(_ context.Context, m api.Module, mt, retData, retSize u) u {
		wk := w(m)
		hs := headers(wk, mt)
		if hs == nil {
			return statusBadArgument
		}
		return wk.give(encodePairs(*hs), retData, retSize)
	})
	fn("proxy_set_header_map_pairs", func(_ context.Context, m api.Module, mt, data, size u) u {
		wk := w(m)
		hs := headers(wk, mt)
		if hs == nil {
			return statusBadArgument
		}
		*hs = decodePairs(wk.read(data, size))
		return statusOK
	})

	buffer := func(wk *Worker, bt u) *[]byte {
		s := wk.streams[wk.active]
		switch bt {
		case 0:
			if s != nil {
				return &s.requestBody
			}
		case 1:
			if s != nil {
				return &s.responseBody
			}
		case 4:
			if wk.callout != nil {
				return &wk.callout.response.body
			}
		case 7:
			return &wk.plugin
		}
		return nil
	}
	fn("proxy_get_buffer_bytes", func(_ context.Context, m api.Module, bt, start, maxSize, retData, retSize u) u {
		wk := w(m)
		buf := buffer(wk, bt)
		if buf == nil {
			return statusBadArgument
		}
		data := *buf
		if int(start) > len(data) {
			return statusBadArgument
		}
		end := min(len(data), int(start)+int(maxSize))
		return wk.give(data[start:end], retData, retSize)
	})
	fn("proxy_set_buffer_bytes", func(_ context.Context, m api.Module, bt, start, maxSize, data, size u) u {
		wk := w(m)
		buf := buffer(wk, bt)
		if buf == nil {
			return statusBadArgument
		}
		*buf = wk.read(data, size)
		return statusOK
	})
	fn("proxy_continue_stream", func(_ context.Context, m api.Module, st u) u {
		wk := w(m)
		s := wk.streams[wk.active]
		if s == nil {
			return statusOK
		}
		s.Resumed++
		if st == 0 { // the request
			s.headersLive = false
			wk.after = append(wk.after, s.continueDecoding)
		}
		return statusOK
	})
	fn("proxy_close_stream", func(_ context.Context, m api.Module, st u) u { return statusOK })
	fn("proxy_send_local_response", func(_ context.Context, m api.Module, status, details, dsize, body, bsize, hdrs, hsize u, grpc int32) u {
		wk := w(m)
		s := wk.streams[wk.active]
		if s == nil {
			return statusBadArgument
		}
		s.Local = &LocalResponse{Status: int(status), Body: wk.read(body, bsize), Headers: decodePairs(wk.read(hdrs, hsize))}
		return statusOK
	})
	fn("proxy_http_call", func(_ context.Context, m api.Module, up, upsize, hdrs, hsize, body, bsize, tr, trsize, timeout, retID u) u {
		wk := w(m)
		c := &Callout{Token: u(len(wk.Callouts) + 1), Cluster: string(wk.read(up, upsize)), Headers: decodePairs(wk.read(hdrs, hsize)),
			Body: wk.read(body, bsize), Timeout: time.Duration(timeout) * time.Millisecond}
		wk.Callouts = append(wk.Callouts, c)
		wk.mod.Memory().WriteUint32Le(retID, c.Token)
		return statusOK
	})
	fn("proxy_define_metric", func(_ context.Context, m api.Module, typ, name, nsize, retID u) u {
		wk := w(m)
		n := string(wk.read(name, nsize))
		id, ok := wk.metrics[n]
		if !ok {
			id = u(len(wk.values))
			wk.metrics[n] = id
			wk.values = append(wk.values, 0)
		}
		wk.mod.Memory().WriteUint32Le(retID, id)
		return statusOK
	})
	fn("proxy_increment_metric", func(_ context.Context, m api.Module, id u, off int64) u {
		wk := w(m)
		if int(id) >= len(wk.values) {
			return statusNotFound
		}
		wk.values[id] += off
		return statusOK
	})
	fn("proxy_record_metric", func(_ context.Context, m api.Module, id u, v uint64) u {
		wk := w(m)
		if int(id) >= len(wk.values) {
			return statusNotFound
		}
		wk.values[id] = int64(v)
		return statusOK
	})
	fn("proxy_get_metric", func(_ context.Context, m api.Module, id, ret u) u {
		wk := w(m)
		if int(id) >= len(wk.values) {
			return statusNotFound
		}
		b := binary.LittleEndian.AppendUint64(nil, uint64(wk.values[id]))
		wk.mod.Memory().Write(ret, b)
		return statusOK
	})
	fn("proxy_get_property", func(_ context.Context, m api.Module, path, psize, retData, retSize u) u {
		wk := w(m)
		p := strings.Trim(strings.ReplaceAll(string(wk.read(path, psize)), "\x00", "/"), "/")
		v, ok := wk.props[p]
		if !ok {
			return statusNotFound
		}
		return wk.give([]byte(v), retData, retSize)
	})
	fn("proxy_set_property", func(_ context.Context, m api.Module, path, psize, val, vsize u) u { return statusOK })
	_, err := bld.Instantiate(h.ctx)
	return err
}

// bind adapts a host function to wazero's stack-based calling convention
// without reflection (reflective binding costs about a microsecond a call,
// far more than Envoy's): every ABI function takes 32-bit integers and
// returns a status, except the three with a 64-bit or signed argument.
func bind(f any) (api.GoModuleFunc, []api.ValueType) {
	i32 := func(n int) []api.ValueType {
		t := make([]api.ValueType, n)
		for i := range t {
			t[i] = api.ValueTypeI32
		}
		return t
	}
	a := func(s []uint64, i int) u { return u(s[i]) }
	type (
		c = context.Context
		m = api.Module
	)
	switch f := f.(type) {
	case func(c, m) u:
		return func(ctx c, mod m, s []uint64) { s[0] = uint64(f(ctx, mod)) }, nil
	case func(c, m, u) u:
		return func(ctx c, mod m, s []uint64) { s[0] = uint64(f(ctx, mod, a(s, 0))) }, i32(1)
	case func(c, m, u, u) u:
		return func(ctx c, mod m, s []uint64) { s[0] = uint64(f(ctx, mod, a(s, 0), a(s, 1))) }, i32(2)
	case func(c, m, u, u, u) u:
		return func(ctx c, mod m, s []uint64) { s[0] = uint64(f(ctx, mod, a(s, 0), a(s, 1), a(s, 2))) }, i32(3)
	case func(c, m, u, u, u, u) u:
		return func(ctx c, mod m, s []uint64) { s[0] = uint64(f(ctx, mod, a(s, 0), a(s, 1), a(s, 2), a(s, 3))) }, i32(4)
	case func(c, m, u, u, u, u, u) u:
		return func(ctx c, mod m, s []uint64) {
			s[0] = uint64(f(ctx, mod, a(s, 0), a(s, 1), a(s, 2), a(s, 3), a(s, 4)))
		}, i32(5)
	case func(c, m, u, u, u, u, u, u) u:
		return func(ctx c, mod m, s []uint64) {
			s[0] = uint64(f(ctx, mod, a(s, 0), a(s, 1), a(s, 2), a(s, 3), a(s, 4), a(s, 5)))
		}, i32(6)
	case func(c, m, u, u, u, u, u, u, u, int32) u:
		return func(ctx c, mod m, s []uint64) {
			s[0] = uint64(f(ctx, mod, a(s, 0), a(s, 1), a(s, 2), a(s, 3), a(s, 4), a(s, 5), a(s, 6), int32(s[7])))
		}, i32(8)
	case func(c, m, u, u, u, u, u, u, u, u, u, u) u:
		return func(ctx c, mod m, s []uint64) {
			s[0] = uint64(f(ctx, mod, a(s, 0), a(s, 1), a(s, 2), a(s, 3), a(s, 4), a(s, 5), a(s, 6), a(s, 7), a(s, 8), a(s, 9)))
		}, i32(10)
	case func(c, m, u, int64) u:
		return func(ctx c, mod m, s []uint64) { s[0] = uint64(f(ctx, mod, a(s, 0), int64(s[1]))) },
			[]api.ValueType{api.ValueTypeI32, api.ValueTypeI64}
	case func(c, m, u, uint64) u:
		return func(ctx c, mod m, s []uint64) { s[0] = uint64(f(ctx, mod, a(s, 0), s[1])) },
			[]api.ValueType{api.ValueTypeI32, api.ValueTypeI64}
	}
	panic(fmt.Sprintf("wasmtest: no binding for %T", f))
}
