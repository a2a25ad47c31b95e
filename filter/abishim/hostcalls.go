//go:build wasip1

// Package internal, in this directory, is not a package of its own: its
// files are laid over the proxy-wasm Go SDK's internal package (go build
// -overlay, see filter/Makefile.wasm) to make the SDK, written for TinyGo,
// build with standard Go for wasip1. This file replaces the SDK's mock host
// (abi_hostcalls_mock.go) with the real host calls, imported from Envoy's
// "env" module with the 32-bit integer signatures of the proxy-wasm ABI
// 0.2.x. Addresses are linear-memory offsets (uint32); values the host
// returns through pointers land in scratch words in static memory (globals
// do not move) and are copied out.
package internal

import "unsafe"

func addr[T any](p *T) uint32 { return uint32(uintptr(unsafe.Pointer(p))) }

// out holds the host's returned pointer and size (or ID, CAS) words.
var out [3]uint32

func setOut(data **byte, size *int) {
	if data != nil {
		*data = (*byte)(unsafe.Pointer(uintptr(out[0])))
	}
	if size != nil {
		*size = int(out[1])
	}
}

//go:wasmimport env proxy_log
func proxy_log(level, msg, size uint32) uint32

func ProxyLog(logLevel LogLevel, messageData *byte, messageSize int) Status {
	return Status(proxy_log(uint32(logLevel), addr(messageData), uint32(messageSize)))
}

//go:wasmimport env proxy_send_local_response
func proxy_send_local_response(status, details, detailsSize, body, bodySize, headers, headersSize uint32, grpcStatus int32) uint32

func ProxySendLocalResponse(statusCode uint32, statusCodeDetailData *byte, statusCodeDetailsSize int,
	bodyData *byte, bodySize int, headersData *byte, headersSize int, grpcStatus int32) Status {
	return Status(proxy_send_local_response(statusCode, addr(statusCodeDetailData), uint32(statusCodeDetailsSize),
		addr(bodyData), uint32(bodySize), addr(headersData), uint32(headersSize), grpcStatus))
}

//go:wasmimport env proxy_get_shared_data
func proxy_get_shared_data(key, keySize, retData, retSize, retCas uint32) uint32

func ProxyGetSharedData(keyData *byte, keySize int, returnValueData **byte, returnValueSize *int, returnCas *uint32) Status {
	st := Status(proxy_get_shared_data(addr(keyData), uint32(keySize), addr(&out[0]), addr(&out[1]), addr(&out[2])))
	if st == StatusOK {
		setOut(returnValueData, returnValueSize)
		*returnCas = out[2]
	}
	return st
}

//go:wasmimport env proxy_set_shared_data
func proxy_set_shared_data(key, keySize, value, valueSize, cas uint32) uint32

func ProxySetSharedData(keyData *byte, keySize int, valueData *byte, valueSize int, cas uint32) Status {
	return Status(proxy_set_shared_data(addr(keyData), uint32(keySize), addr(valueData), uint32(valueSize), cas))
}

//go:wasmimport env proxy_register_shared_queue
func proxy_register_shared_queue(name, nameSize, retID uint32) uint32

func ProxyRegisterSharedQueue(nameData *byte, nameSize int, returnID *uint32) Status {
	st := Status(proxy_register_shared_queue(addr(nameData), uint32(nameSize), addr(&out[0])))
	*returnID = out[0]
	return st
}

//go:wasmimport env proxy_resolve_shared_queue
func proxy_resolve_shared_queue(vmID, vmIDSize, name, nameSize, retID uint32) uint32

func ProxyResolveSharedQueue(vmIDData *byte, vmIDSize int, nameData *byte, nameSize int, returnID *uint32) Status {
	st := Status(proxy_resolve_shared_queue(addr(vmIDData), uint32(vmIDSize), addr(nameData), uint32(nameSize), addr(&out[0])))
	*returnID = out[0]
	return st
}

//go:wasmimport env proxy_dequeue_shared_queue
func proxy_dequeue_shared_queue(queueID, retData, retSize uint32) uint32

func ProxyDequeueSharedQueue(queueID uint32, returnValueData **byte, returnValueSize *int) Status {
	st := Status(proxy_dequeue_shared_queue(queueID, addr(&out[0]), addr(&out[1])))
	if st == StatusOK {
		setOut(returnValueData, returnValueSize)
	}
	return st
}

//go:wasmimport env proxy_enqueue_shared_queue
func proxy_enqueue_shared_queue(queueID, value, valueSize uint32) uint32

func ProxyEnqueueSharedQueue(queueID uint32, valueData *byte, valueSize int) Status {
	return Status(proxy_enqueue_shared_queue(queueID, addr(valueData), uint32(valueSize)))
}

//go:wasmimport env proxy_get_header_map_value
func proxy_get_header_map_value(mapType, key, keySize, retData, retSize uint32) uint32

func ProxyGetHeaderMapValue(mapType MapType, keyData *byte, keySize int, returnValueData **byte, returnValueSize *int) Status {
	st := Status(proxy_get_header_map_value(uint32(mapType), addr(keyData), uint32(keySize), addr(&out[0]), addr(&out[1])))
	if st == StatusOK {
		setOut(returnValueData, returnValueSize)
	}
	return st
}

//go:wasmimport env proxy_add_header_map_value
func proxy_add_header_map_value(mapType, key, keySize, value, valueSize uint32) uint32

func ProxyAddHeaderMapValue(mapType MapType, keyData *byte, keySize int, valueData *byte, valueSize int) Status {
	return Status(proxy_add_header_map_value(uint32(mapType), addr(keyData), uint32(keySize), addr(valueData), uint32(valueSize)))
}

//go:wasmimport env proxy_replace_header_map_value
func proxy_replace_header_map_value(mapType, key, keySize, value, valueSize uint32) uint32

func ProxyReplaceHeaderMapValue(mapType MapType, keyData *byte, keySize int, valueData *byte, valueSize int) Status {
	return Status(proxy_replace_header_map_value(uint32(mapType), addr(keyData), uint32(keySize), addr(valueData), uint32(valueSize)))
}

//go:wasmimport env proxy_remove_header_map_value
func proxy_remove_header_map_value(mapType, key, keySize uint32) uint32

func ProxyRemoveHeaderMapValue(mapType MapType, keyData *byte, keySize int) Status {
	return Status(proxy_remove_header_map_value(uint32(mapType), addr(keyData), uint32(keySize)))
}

//go:wasmimport env proxy_get_header_map_pairs
func proxy_get_header_map_pairs(mapType, retData, retSize uint32) uint32

func ProxyGetHeaderMapPairs(mapType MapType, returnValueData **byte, returnValueSize *int) Status {
	st := Status(proxy_get_header_map_pairs(uint32(mapType), addr(&out[0]), addr(&out[1])))
	if st == StatusOK {
		setOut(returnValueData, returnValueSize)
	}
	return st
}

//go:wasmimport env proxy_set_header_map_pairs
func proxy_set_header_map_pairs(mapType, data, size uint32) uint32

func ProxySetHeaderMapPairs(mapType MapType, mapData *byte, mapSize int) Status {
	return Status(proxy_set_header_map_pairs(uint32(mapType), addr(mapData), uint32(mapSize)))
}

//go:wasmimport env proxy_get_buffer_bytes
func proxy_get_buffer_bytes(bufferType, start, maxSize, retData, retSize uint32) uint32

func ProxyGetBufferBytes(bufferType BufferType, start int, maxSize int, returnBufferData **byte, returnBufferSize *int) Status {
	st := Status(proxy_get_buffer_bytes(uint32(bufferType), uint32(start), uint32(maxSize), addr(&out[0]), addr(&out[1])))
	if st == StatusOK {
		setOut(returnBufferData, returnBufferSize)
	}
	return st
}

//go:wasmimport env proxy_set_buffer_bytes
func proxy_set_buffer_bytes(bufferType, start, maxSize, data, size uint32) uint32

func ProxySetBufferBytes(bufferType BufferType, start int, maxSize int, bufferData *byte, bufferSize int) Status {
	return Status(proxy_set_buffer_bytes(uint32(bufferType), uint32(start), uint32(maxSize), addr(bufferData), uint32(bufferSize)))
}

//go:wasmimport env proxy_continue_stream
func proxy_continue_stream(streamType uint32) uint32

func ProxyContinueStream(streamType StreamType) Status {
	return Status(proxy_continue_stream(uint32(streamType)))
}

//go:wasmimport env proxy_close_stream
func proxy_close_stream(streamType uint32) uint32

func ProxyCloseStream(streamType StreamType) Status {
	return Status(proxy_close_stream(uint32(streamType)))
}

//go:wasmimport env proxy_http_call
func proxy_http_call(upstream, upstreamSize, headers, headersSize, body, bodySize, trailers, trailersSize, timeout, retID uint32) uint32

func ProxyHttpCall(upstreamData *byte, upstreamSize int, headerData *byte, headerSize int,
	bodyData *byte, bodySize int, trailersData *byte, trailersSize int, timeout uint32, calloutIDPtr *uint32,
) Status {
	st := Status(proxy_http_call(addr(upstreamData), uint32(upstreamSize), addr(headerData), uint32(headerSize),
		addr(bodyData), uint32(bodySize), addr(trailersData), uint32(trailersSize), timeout, addr(&out[0])))
	*calloutIDPtr = out[0]
	return st
}

//go:wasmimport env proxy_call_foreign_function
func proxy_call_foreign_function(name, nameSize, param, paramSize, retData, retSize uint32) uint32

func ProxyCallForeignFunction(funcNamePtr *byte, funcNameSize int, paramPtr *byte, paramSize int, returnData **byte, returnSize *int) Status {
	st := Status(proxy_call_foreign_function(addr(funcNamePtr), uint32(funcNameSize), addr(paramPtr), uint32(paramSize), addr(&out[0]), addr(&out[1])))
	if st == StatusOK {
		setOut(returnData, returnSize)
	}
	return st
}

//go:wasmimport env proxy_set_tick_period_milliseconds
func proxy_set_tick_period_milliseconds(period uint32) uint32

func ProxySetTickPeriodMilliseconds(period uint32) Status {
	return Status(proxy_set_tick_period_milliseconds(period))
}

//go:wasmimport env proxy_set_effective_context
func proxy_set_effective_context(contextID uint32) uint32

func ProxySetEffectiveContext(contextID uint32) Status {
	return Status(proxy_set_effective_context(contextID))
}

//go:wasmimport env proxy_done
func proxy_done() uint32

func ProxyDone() Status { return Status(proxy_done()) }

//go:wasmimport env proxy_define_metric
func proxy_define_metric(metricType, name, nameSize, retID uint32) uint32

func ProxyDefineMetric(metricType MetricType, metricNameData *byte, metricNameSize int, returnMetricIDPtr *uint32) Status {
	st := Status(proxy_define_metric(uint32(metricType), addr(metricNameData), uint32(metricNameSize), addr(&out[0])))
	*returnMetricIDPtr = out[0]
	return st
}

//go:wasmimport env proxy_increment_metric
func proxy_increment_metric(metricID uint32, offset int64) uint32

func ProxyIncrementMetric(metricID uint32, offset int64) Status {
	return Status(proxy_increment_metric(metricID, offset))
}

//go:wasmimport env proxy_record_metric
func proxy_record_metric(metricID uint32, value uint64) uint32

func ProxyRecordMetric(metricID uint32, value uint64) Status {
	return Status(proxy_record_metric(metricID, value))
}

// metricOut is 8-byte aligned static memory for proxy_get_metric.
var metricOut uint64

//go:wasmimport env proxy_get_metric
func proxy_get_metric(metricID, retValue uint32) uint32

func ProxyGetMetric(metricID uint32, returnMetricValue *uint64) Status {
	st := Status(proxy_get_metric(metricID, addr(&metricOut)))
	*returnMetricValue = metricOut
	return st
}

//go:wasmimport env proxy_get_property
func proxy_get_property(path, pathSize, retData, retSize uint32) uint32

func ProxyGetProperty(pathData *byte, pathSize int, returnValueData **byte, returnValueSize *int) Status {
	st := Status(proxy_get_property(addr(pathData), uint32(pathSize), addr(&out[0]), addr(&out[1])))
	if st == StatusOK {
		setOut(returnValueData, returnValueSize)
	}
	return st
}

//go:wasmimport env proxy_set_property
func proxy_set_property(path, pathSize, value, valueSize uint32) uint32

func ProxySetProperty(pathData *byte, pathSize int, valueData *byte, valueSize int) Status {
	return Status(proxy_set_property(addr(pathData), uint32(pathSize), addr(valueData), uint32(valueSize)))
}
