package wasmtest

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// Host runs the compiled filter the way Envoy does: one module instance
// (VM) per worker, all sharing the proxy's shared data, with the proxy-wasm
// ABI 0.2.1 host functions, a controlled clock and HTTP callouts the test
// answers. Each stream goes through a model of the part of Envoy's HTTP
// filter manager that decides what the filter and the next filter (the
// router) see — see Stream. Workers are independent: a test may drive
// each from its own goroutine, truly in parallel, as Envoy's worker
// threads are (only shared data is common, under a lock as in
// proxy-wasm-cpp-host's SharedData).
type Host struct {
	ctx     context.Context
	rt      wazero.Runtime
	Workers []*Worker

	mu     sync.Mutex
	casSeq uint32
	shared map[string]*sharedValue
	// OnSharedGet, when set, runs after a worker has read a shared-data
	// key and before it can write it back: a test makes another worker
	// write in between (a real compare-and-swap conflict).
	OnSharedGet func(w *Worker, key string)
	// Interleave, when set, runs after every shared-data read and write,
	// outside the lock: parallel tests yield there to let other workers'
	// calls fall between a read and the write that follows it.
	Interleave func()
	// SharedDown makes every shared-data call fail (InternalFailure).
	SharedDown bool
	// SharedReads counts proxy_get_shared_data calls.
	SharedReads int

	allowStop bool
	now       atomic.Int64 // unix nanoseconds
	props     map[string]string
	clusters  map[string]string
}

// SetProperty sets (or, with "", removes) a property every VM sees.
func (h *Host) SetProperty(path, value string) {
	if value == "" {
		delete(h.props, path)
		return
	}
	h.props[path] = value
}

// compiled caches machine code across the tests' runtimes.
var compiled = wazero.NewCompilationCache()

type sharedValue struct {
	data []byte
	cas  uint32
}

// Dispatch performs the callouts not yet answered as real HTTP requests
// to the clusters' base URLs (Config.Clusters), within each callout's
// timeout, and delivers the answers; a failed or timed-out call is
// delivered with no headers, as Envoy does. Unknown clusters fail.
func (h *Host) Dispatch() {
	for _, w := range h.Workers {
		for _, c := range w.Callouts {
			if c.answered {
				continue
			}
			c.answered = true
			hs, body := h.do(c)
			w.Respond(c, hs, body)
		}
	}
}

func (h *Host) do(c *Callout) ([][2]string, []byte) {
	base, ok := h.clusters[c.Cluster]
	if !ok {
		return nil, nil
	}
	method, path := Header(c.Headers, ":method"), Header(c.Headers, ":path")
	ctx, cancel := context.WithTimeout(h.ctx, c.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, base+path, bytes.NewReader(c.Body))
	if err != nil {
		return nil, nil
	}
	for _, kv := range c.Headers {
		if !strings.HasPrefix(kv[0], ":") {
			req.Header.Add(kv[0], kv[1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil
	}
	out := [][2]string{{":status", fmt.Sprint(resp.StatusCode)}}
	for k, vs := range resp.Header {
		for _, v := range vs {
			out = append(out, [2]string{strings.ToLower(k), v})
		}
	}
	return out, body
}

// Config shapes a host.
type Config struct {
	// Clusters maps the cluster names the filter calls to base URLs that
	// Dispatch reaches over real HTTP.
	Clusters map[string]string
	Workers  int
	Plugin   []byte // the plugin configuration
	// Properties answers proxy_get_property, by path segments joined with
	// "/", e.g. "connection/uri_san_peer_certificate".
	Properties map[string]string
	// Listener, when set, is told of calls to the module's functions
	// (benchmarks time functions with it).
	Listener experimental.FunctionListenerFactory
	// AllowOnHeadersStopIteration is Envoy's PluginConfig field of that
	// name (Envoy 1.35 and later; false by default, and Istio's
	// WasmPlugin cannot set it): whether a pause from the request
	// headers callback stays a StopIteration.
	AllowOnHeadersStopIteration bool
}

// Worker is one VM: a module instance with its root (plugin) context.
type Worker struct {
	h       *Host
	Name    string
	mod     api.Module
	exports map[string]api.Function
	root    uint32
	next    uint32
	streams map[uint32]*Stream
	active  uint32
	props   map[string]string
	plugin  []byte

	Logs     []string
	metrics  map[string]uint32
	values   []int64
	Callouts []*Callout
	callout  *Callout // whose response is being delivered

	// Actions the host defers until the outermost call into the VM
	// returns, as Envoy does for continue_stream and local replies
	// (Context::continueStream: "We are in a reentrant call, so defer").
	depth int
	after []func()
}

// Callout is a proxy_http_call the filter made.
type Callout struct {
	Token    uint32
	Cluster  string
	Headers  [][2]string
	Body     []byte
	Timeout  time.Duration
	answered bool
	response struct {
		headers [][2]string
		body    []byte
	}
}

// Stream is one HTTP request through a worker's filter, and what Envoy's
// filter manager (source/common/http/filter_manager.cc) and wasm context
// (source/extensions/common/wasm/context.cc, with proxy-wasm-cpp-host's
// src/context.cc) make of the filter's answers:
//
//   - The request headers callback's StopIteration (Pause) is converted
//     by the host to StopAllIterationAndWatermark for ABI 0.2.x plugins
//     unless the plugin config sets allow_on_headers_stop_iteration
//     (ContextBase::onRequestHeaders). After StopAll the filter manager
//     withholds body data from this filter itself, buffering it, until
//     the filter continues (ActiveStreamFilterBase::handleDataIfStopAll);
//     then the data is delivered to it.
//   - With a plain StopIteration (the flag set) the body is still
//     delivered to the filter; the next filter gets nothing.
//   - Continue from the headers passes them to the router as they are
//     then; the wasm context drops its header map (Context::decodeHeaders
//     nulls request_headers_), so later header calls fail BadArgument.
//   - A body callback's Pause is StopIterationAndBuffer: the data is
//     buffered and the next call sees the whole buffer (getBuffer returns
//     the decoding buffer while buffering). Its Continue passes the
//     headers (if still held) and the buffered body on.
//   - proxy_continue_stream drops the header map at once and continues
//     decoding after the VM call returns (Context::continueStream).
//   - A local reply ends the request: nothing more reaches the filter or
//     the router.
type Stream struct {
	w  *Worker
	ID uint32

	RequestHeaders, ResponseHeaders [][2]string
	requestBody, responseBody       []byte
	// Local is the response the filter sent itself, if any.
	Local *LocalResponse
	// Resumed counts proxy_continue_stream calls.
	Resumed int
	// Upstream is what went past the filter to the router: the request
	// headers as they were when they went (nil: held), the body, and
	// whether the request is complete.
	Upstream struct {
		Headers [][2]string
		Body    []byte
		End     bool
	}
	// RouteCacheCleared counts calls of Envoy's clear_route_cache foreign
	// function.
	RouteCacheCleared int

	headersLive bool   // the wasm context still has the request header map
	stopAll     bool   // the filter stopped all iteration at the headers
	withheld    []byte // body the filter manager keeps from the filter meanwhile
	withheldEnd bool
	bodyEnd     bool // the filter has seen the end of the body
	endHeaders  bool // the request had no body
}

// LocalResponse is a proxy_send_local_response.
type LocalResponse struct {
	Status  int
	Headers [][2]string
	Body    []byte
}

// New compiles bin and starts cfg.Workers VMs with the plugin started.
func New(ctx context.Context, bin []byte, cfg Config) (*Host, error) {
	h := &Host{ctx: ctx, shared: map[string]*sharedValue{}, props: map[string]string{},
		clusters: cfg.Clusters, allowStop: cfg.AllowOnHeadersStopIteration}
	h.now.Store(time.Unix(1_700_000_000, 0).UnixNano())
	for k, v := range cfg.Properties {
		h.props[k] = v
	}
	rc := wazero.NewRuntimeConfig().WithCompilationCache(compiled)
	if cfg.Listener != nil {
		// Listeners are bound when the module is compiled: not from the
		// cache, which other hosts share.
		ctx = experimental.WithFunctionListenerFactory(ctx, cfg.Listener)
		h.ctx = ctx
		rc = wazero.NewRuntimeConfig()
	}
	h.rt = wazero.NewRuntimeWithConfig(ctx, rc)
	wasi_snapshot_preview1.MustInstantiate(ctx, h.rt)
	if err := h.instantiateEnv(); err != nil {
		return nil, err
	}
	mod, err := h.rt.CompileModule(ctx, bin)
	if err != nil {
		return nil, err
	}
	for i := range max(cfg.Workers, 1) {
		w := &Worker{h: h, Name: fmt.Sprintf("worker-%d", i), root: 1, next: 2, streams: map[uint32]*Stream{},
			exports: map[string]api.Function{}, props: h.props, plugin: cfg.Plugin, metrics: map[string]uint32{}}
		h.Workers = append(h.Workers, w)
		mc := wazero.NewModuleConfig().WithName(w.Name).WithStartFunctions("_initialize").
			WithWalltime(func() (int64, int32) { n := h.now.Load(); return n / 1e9, int32(n % 1e9) }, 1).
			WithNanotime(func() int64 { return h.now.Load() }, 1)
		if w.mod, err = h.rt.InstantiateModule(ctx, mod, mc); err != nil {
			return nil, fmt.Errorf("%s: %w", w.Name, err)
		}
		w.call("proxy_on_context_create", uint64(w.root), 0)
		if w.call("proxy_on_vm_start", uint64(w.root), 0)[0] != 1 {
			return nil, fmt.Errorf("%s: VM start failed: %v", w.Name, w.Logs)
		}
		if w.call("proxy_on_configure", uint64(w.root), uint64(len(cfg.Plugin)))[0] != 1 {
			return nil, fmt.Errorf("%s: plugin start failed: %s", w.Name, strings.Join(w.Logs, "\n"))
		}
	}
	return h, nil
}

// Close releases the runtime.
func (h *Host) Close() error { return h.rt.Close(h.ctx) }

// Tick runs each VM's timer callback (proxy_on_tick on its root context),
// as Envoy does every period the plugin set.
func (h *Host) Tick() {
	for _, w := range h.Workers {
		w.call("proxy_on_tick", uint64(w.root))
	}
}

// Advance moves the clock every VM sees.
func (h *Host) Advance(d time.Duration) { h.now.Add(int64(d)) }

func (h *Host) worker(m api.Module) *Worker {
	for _, w := range h.Workers {
		if w.mod == m || w.Name == m.Name() {
			return w
		}
	}
	panic("unknown module " + m.Name())
}

// call runs an exported function; a trap (a Go panic in the VM) fails the
// test through the returned error's panic.
func (w *Worker) call(name string, args ...uint64) []uint64 {
	f := w.exports[name]
	if f == nil {
		if f = w.mod.ExportedFunction(name); f == nil {
			panic(w.Name + ": no export " + name)
		}
		w.exports[name] = f // as Envoy does: looked up once, not per call
	}
	prev := w.active
	if len(args) > 0 {
		w.active = uint32(args[0])
	}
	w.depth++
	res, err := f.Call(w.h.ctx, args...)
	w.depth--
	w.active = prev
	if err != nil {
		panic(fmt.Sprintf("%s: %s trapped: %v\n%s", w.Name, name, err, strings.Join(w.Logs, "\n")))
	}
	for w.depth == 0 && len(w.after) > 0 {
		a := w.after[0]
		w.after = w.after[1:]
		a()
	}
	return res
}

// NewStream creates an HTTP context.
func (w *Worker) NewStream() *Stream {
	s := &Stream{w: w, ID: w.next}
	w.next++
	w.streams[s.ID] = s
	w.call("proxy_on_context_create", uint64(s.ID), uint64(w.root))
	return s
}

// Action values.
const (
	Continue = 0
	Pause    = 1
)

// SendRequestHeaders calls proxy_on_request_headers and applies the
// filter manager's rules to its answer.
func (s *Stream) SendRequestHeaders(hs [][2]string, endOfStream bool) int {
	s.RequestHeaders = lower(hs)
	s.headersLive, s.endHeaders = true, endOfStream
	a := int(s.w.call("proxy_on_request_headers", uint64(s.ID), uint64(len(hs)), b(endOfStream))[0])
	switch {
	case s.Local != nil || s.Upstream.Headers != nil: // answered, or continued from within
	case a == Continue:
		s.passHeaders()
	case a == Pause && s.w.h.allowStop:
		// StopIteration: the body still comes to this filter.
	default:
		// StopIteration without the flag (or any StopAll status).
		s.stopAll = true
	}
	return a
}

// SendRequestBody delivers a chunk of the body: to the filter (which
// sees all it has buffered so far) unless the filter manager withholds it.
func (s *Stream) SendRequestBody(chunk []byte, endOfStream bool) int {
	if s.Local != nil {
		return Pause
	}
	if s.stopAll {
		s.withheld = append(s.withheld, chunk...)
		s.withheldEnd = s.withheldEnd || endOfStream
		return Pause
	}
	return s.deliverBody(chunk, endOfStream)
}

func (s *Stream) deliverBody(chunk []byte, endOfStream bool) int {
	s.requestBody = append(s.requestBody, chunk...)
	s.bodyEnd = endOfStream
	a := int(s.w.call("proxy_on_request_body", uint64(s.ID), uint64(len(s.requestBody)), b(endOfStream))[0])
	if a == Continue && s.Local == nil {
		s.passBody()
	}
	return a
}

// passHeaders gives the request headers to the router as they are now.
func (s *Stream) passHeaders() {
	if s.Upstream.Headers != nil {
		return
	}
	s.headersLive = false
	s.Upstream.Headers = append([][2]string{}, s.RequestHeaders...)
	s.Upstream.End = s.endHeaders
}

// passBody gives the router the headers (if still held) and the body
// buffered so far.
func (s *Stream) passBody() {
	s.passHeaders()
	s.Upstream.Body = append(s.Upstream.Body, s.requestBody...)
	s.requestBody = nil
	s.Upstream.End = s.Upstream.End || s.bodyEnd
}

// continueDecoding is the filter manager's answer to continue_stream,
// after the VM call that asked for it.
func (s *Stream) continueDecoding() {
	if s.Local != nil {
		return
	}
	s.passHeaders()
	if s.stopAll {
		s.stopAll = false
		if len(s.withheld) > 0 || s.withheldEnd {
			data, end := s.withheld, s.withheldEnd
			s.withheld, s.withheldEnd = nil, false
			s.deliverBody(data, end)
			return
		}
	}
	if len(s.requestBody) > 0 || s.bodyEnd {
		s.passBody()
	}
}

// Stalled says that the request is stuck: not answered, not passed on
// whole, and with no callout left to answer — in Envoy it would wait for
// its stream timeout.
func (s *Stream) Stalled() bool {
	if s.Local != nil || s.Upstream.End {
		return false
	}
	for _, c := range s.w.Callouts {
		if !c.answered {
			return false
		}
	}
	return true
}

// SendResponseHeaders calls proxy_on_response_headers.
func (s *Stream) SendResponseHeaders(hs [][2]string, endOfStream bool) int {
	s.ResponseHeaders = lower(hs)
	return int(s.w.call("proxy_on_response_headers", uint64(s.ID), uint64(len(hs)), b(endOfStream))[0])
}

// SendResponseBody calls proxy_on_response_body with one chunk.
func (s *Stream) SendResponseBody(chunk []byte, endOfStream bool) int {
	s.responseBody = append(s.responseBody, chunk...)
	a := int(s.w.call("proxy_on_response_body", uint64(s.ID), uint64(len(s.responseBody)), b(endOfStream))[0])
	if a == Continue {
		s.responseBody = nil
	}
	return a
}

// Done ends the stream as Envoy does: log, done, delete.
func (s *Stream) Done() {
	s.w.call("proxy_on_log", uint64(s.ID))
	s.w.call("proxy_on_done", uint64(s.ID))
	s.w.call("proxy_on_delete", uint64(s.ID))
	delete(s.w.streams, s.ID)
}

// Header returns a header of hs.
func Header(hs [][2]string, k string) string {
	for _, h := range hs {
		if strings.EqualFold(h[0], k) {
			return h[1]
		}
	}
	return ""
}

// Respond delivers the response to a callout.
func (w *Worker) Respond(c *Callout, headers [][2]string, body []byte) {
	c.response.headers, c.response.body = lower(headers), body
	w.callout = c
	defer func() { w.callout = nil }()
	w.call("proxy_on_http_call_response", uint64(w.root), uint64(c.Token), uint64(len(headers)), uint64(len(body)), 0)
}

func lower(hs [][2]string) [][2]string {
	out := make([][2]string, len(hs))
	for i, h := range hs {
		out[i] = [2]string{strings.ToLower(h[0]), h[1]}
	}
	return out
}

func b(v bool) uint64 {
	if v {
		return 1
	}
	return 0
}

// Metric is a metric's value on this worker.
func (w *Worker) Metric(name string) int64 {
	if id, ok := w.metrics[name]; ok {
		return w.values[id]
	}
	return -1
}

// ---- memory helpers

func (w *Worker) read(ptr, size uint32) []byte {
	if size == 0 {
		return nil
	}
	data, ok := w.mod.Memory().Read(ptr, size)
	if !ok {
		panic(fmt.Sprintf("%s: read out of range %d+%d", w.Name, ptr, size))
	}
	return append([]byte(nil), data...)
}

// give copies data into memory the module allocates and writes its
// address and size at retPtr and retSize.
func (w *Worker) give(data []byte, retPtr, retSize uint32) uint32 {
	ptr := uint32(0)
	if len(data) > 0 {
		ptr = uint32(w.call("proxy_on_memory_allocate", uint64(len(data)))[0])
		w.mod.Memory().Write(ptr, data)
	}
	w.mod.Memory().WriteUint32Le(retPtr, ptr)
	w.mod.Memory().WriteUint32Le(retSize, uint32(len(data)))
	return statusOK
}

func encodePairs(hs [][2]string) []byte {
	n := 4 + 8*len(hs)
	for _, h := range hs {
		n += len(h[0]) + len(h[1]) + 2
	}
	out := make([]byte, 4+8*len(hs), n)
	binary.LittleEndian.PutUint32(out, uint32(len(hs)))
	for i, h := range hs {
		binary.LittleEndian.PutUint32(out[4+8*i:], uint32(len(h[0])))
		binary.LittleEndian.PutUint32(out[8+8*i:], uint32(len(h[1])))
	}
	for _, h := range hs {
		out = append(append(append(append(out, h[0]...), 0), h[1]...), 0)
	}
	return out
}

func decodePairs(b []byte) [][2]string {
	if len(b) < 4 {
		return nil
	}
	n := int(binary.LittleEndian.Uint32(b))
	if 4+8*n > len(b) {
		return nil
	}
	out := make([][2]string, n)
	p := 4 + 8*n
	for i := range n {
		kl := int(binary.LittleEndian.Uint32(b[4+8*i:]))
		vl := int(binary.LittleEndian.Uint32(b[8+8*i:]))
		if p+kl+vl+2 > len(b) {
			return nil
		}
		out[i] = [2]string{string(b[p : p+kl]), string(b[p+kl+1 : p+kl+1+vl])}
		p += kl + vl + 2
	}
	return out
}

const (
	statusOK          = 0
	statusNotFound    = 1
	statusBadArgument = 2
	statusCasMismatch = 8
	statusInternal    = 10
	statusUnimpl      = 12
)
