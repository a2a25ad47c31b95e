// host.mjs — a minimal proxy-wasm host in Node.js, to time the compiled
// filter in V8 (Envoy's default wasm runtime) the way BenchmarkFilter times
// it in wazero: node host.mjs FILTER.wasm EMPTY.wasm prints a JSON report.
// Only what the benchmark's requests use is implemented; one worker, no
// callouts. Run by BenchmarkFilterV8 (filter/wasmtest).
import { readFileSync } from 'node:fs';
import { WASI } from 'node:wasi';

const OK = 0, NOT_FOUND = 1, BAD_ARGUMENT = 2, CAS_MISMATCH = 8, UNIMPLEMENTED = 12;
const enc = new TextEncoder(), dec = new TextDecoder();

async function vm(bin, pluginConfig, props) {
  const wasi = new WASI({ version: 'preview1' });
  const shared = new Map(); // key → {data, cas}
  const st = { active: 0, streams: new Map(), plugin: enc.encode(pluginConfig), metrics: [], logs: [] };
  let inst;
  const mem = () => new Uint8Array(inst.exports.memory.buffer);
  const view = () => new DataView(inst.exports.memory.buffer);
  const read = (p, n) => mem().slice(p, p + n);
  const str = (p, n) => dec.decode(read(p, n));
  const give = (bytes, retPtr, retSize) => {
    let p = 0;
    if (bytes.length > 0) {
      p = inst.exports.proxy_on_memory_allocate(bytes.length);
      mem().set(bytes, p);
    }
    view().setUint32(retPtr, p, true);
    view().setUint32(retSize, bytes.length, true);
    return OK;
  };
  const headers = (t) => {
    const s = st.streams.get(st.active);
    if (!s) return null;
    return t === 0 ? s.reqHeaders : t === 2 ? s.respHeaders : null;
  };
  const env = {
    proxy_log: (lvl, p, n) => { st.logs.push(str(p, n)); return OK; },
    proxy_set_tick_period_milliseconds: () => OK,
    proxy_set_effective_context: (id) => { st.active = id; return OK; },
    proxy_done: () => OK,
    proxy_get_property: (p, n, rp, rs) => {
      const path = str(p, n).split('\0').filter(Boolean).join('/');
      const v = props[path];
      return v === undefined ? NOT_FOUND : give(enc.encode(v), rp, rs);
    },
    proxy_set_property: () => OK,
    proxy_get_header_map_value: (t, kp, kn, rp, rs) => {
      const hs = headers(t); if (!hs) return BAD_ARGUMENT;
      const k = str(kp, kn).toLowerCase();
      const h = hs.find(([hk]) => hk === k);
      return h ? give(enc.encode(h[1]), rp, rs) : NOT_FOUND;
    },
    proxy_replace_header_map_value: (t, kp, kn, vp, vn) => {
      const hs = headers(t); if (!hs) return BAD_ARGUMENT;
      const k = str(kp, kn).toLowerCase(), v = str(vp, vn);
      for (let i = hs.length - 1; i >= 0; i--) if (hs[i][0] === k) hs.splice(i, 1);
      hs.push([k, v]); return OK;
    },
    proxy_add_header_map_value: (t, kp, kn, vp, vn) => {
      const hs = headers(t); if (!hs) return BAD_ARGUMENT;
      hs.push([str(kp, kn).toLowerCase(), str(vp, vn)]); return OK;
    },
    proxy_remove_header_map_value: (t, kp, kn) => {
      const hs = headers(t); if (!hs) return BAD_ARGUMENT;
      const k = str(kp, kn).toLowerCase();
      for (let i = hs.length - 1; i >= 0; i--) if (hs[i][0] === k) hs.splice(i, 1);
      return OK;
    },
    proxy_get_header_map_pairs: (t, rp, rs) => {
      const hs = headers(t); if (!hs) return BAD_ARGUMENT;
      const parts = hs.map(([k, v]) => [enc.encode(k), enc.encode(v)]);
      let n = 4 + 8 * parts.length; for (const [k, v] of parts) n += k.length + v.length + 2;
      const b = new Uint8Array(n), dv = new DataView(b.buffer);
      dv.setUint32(0, parts.length, true);
      let o = 4 + 8 * parts.length;
      parts.forEach(([k, v], i) => {
        dv.setUint32(4 + 8 * i, k.length, true); dv.setUint32(8 + 8 * i, v.length, true);
        b.set(k, o); o += k.length + 1; b.set(v, o); o += v.length + 1;
      });
      return give(b, rp, rs);
    },
    proxy_set_header_map_pairs: () => UNIMPLEMENTED,
    proxy_get_buffer_bytes: (t, start, max, rp, rs) => {
      const s = st.streams.get(st.active);
      const buf = t === 0 ? s?.reqBody : t === 1 ? s?.respBody : t === 7 ? st.plugin : null;
      if (!buf) return BAD_ARGUMENT;
      return give(buf.subarray(start, Math.min(buf.length, start + max)), rp, rs);
    },
    proxy_set_buffer_bytes: () => UNIMPLEMENTED,
    proxy_get_shared_data: (kp, kn, rp, rs, rc) => {
      const v = shared.get(str(kp, kn));
      if (!v) return NOT_FOUND;
      give(v.data, rp, rs); view().setUint32(rc, v.cas, true); return OK;
    },
    proxy_set_shared_data: (kp, kn, vp, vn, cas) => {
      const k = str(kp, kn), v = shared.get(k), data = read(vp, vn);
      if (!v) { shared.set(k, { data, cas: 1 }); return OK; }
      if (cas !== 0 && cas !== v.cas) return CAS_MISMATCH;
      v.data = data; v.cas++; return OK;
    },
    proxy_send_local_response: (status, dp, dn, bp, bn, hp, hn) => {
      const s = st.streams.get(st.active); if (!s) return BAD_ARGUMENT;
      s.local = { status, body: read(bp, bn) }; return OK;
    },
    proxy_continue_stream: () => OK,
    proxy_close_stream: () => OK,
    proxy_define_metric: (t, np, nn, rid) => { st.metrics.push(0); view().setUint32(rid, st.metrics.length - 1, true); return OK; },
    proxy_increment_metric: (id, off) => { st.metrics[id] += Number(off); return OK; },
    proxy_record_metric: (id, v) => { st.metrics[id] = Number(v); return OK; },
    proxy_get_metric: () => UNIMPLEMENTED,
    proxy_http_call: () => UNIMPLEMENTED,
  };
  const mod = await WebAssembly.compile(bin);
  const imports = { wasi_snapshot_preview1: wasi.wasiImport, env: {} };
  for (const imp of WebAssembly.Module.imports(mod)) {
    if (imp.module === 'env') imports.env[imp.name] = env[imp.name] ?? (() => UNIMPLEMENTED);
  }
  inst = await WebAssembly.instantiate(mod, imports);
  wasi.initialize(inst);
  const x = inst.exports;
  const root = 1;
  x.proxy_on_context_create(root, 0);
  if (x.proxy_on_vm_start(root, 0) !== 1) throw new Error('vm start failed: ' + st.logs.join('\n'));
  if (x.proxy_on_configure(root, st.plugin.length) !== 1) throw new Error('configure failed: ' + st.logs.join('\n'));
  let next = 2;
  return {
    st,
    request(reqHeaders, body, respHeaders, reply) {
      const id = next++;
      const s = { reqHeaders: reqHeaders.map((h) => [...h]), respHeaders: respHeaders.map((h) => [...h]), reqBody: body, respBody: reply };
      st.streams.set(id, s);
      st.active = id;
      x.proxy_on_context_create(id, root);
      st.active = id; x.proxy_on_request_headers(id, s.reqHeaders.length, 0);
      st.active = id; x.proxy_on_request_body(id, body.length, 1);
      if (!s.local) {
        st.active = id; x.proxy_on_response_headers(id, s.respHeaders.length, 0);
        st.active = id; x.proxy_on_response_body(id, reply.length, 1);
      }
      st.active = id; x.proxy_on_log(id);
      x.proxy_on_done(id);
      x.proxy_on_delete(id);
      st.streams.delete(id);
      return s;
    },
  };
}

const [filterPath, emptyPath] = process.argv.slice(2);
const filter = readFileSync(filterPath), empty = readFileSync(emptyPath);
const props = { 'connection/uri_san_peer_certificate': 'spiffe://mesh.local/ns/a/sa/app' };
const body = enc.encode('{"model":"qwen","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Summarise the plot of Hamlet in two sentences."}],"max_tokens":64,"temperature":0}');
const reply = enc.encode('{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"A prince avenges his father, and nearly everyone dies."},"finish_reason":"stop"}],"usage":{"prompt_tokens":30,"completion_tokens":12,"total_tokens":42}}');
const reqHeaders = [[':method', 'POST'], [':path', '/v1/chat/completions'], [':authority', 'gw'], ['content-type', 'application/json'],
  ['x-request-id', 'abc'], ['user-agent', 'OpenAI/Python 1.50.0'], ['accept', 'application/json'], ['authorization', 'Bearer sk-x']];
const respHeaders = [[':status', '200'], ['content-type', 'application/json']];
const confs = [
  { name: 'empty', bin: empty, plugin: '{}' },
  // Standalone mode, as the wazero benchmark (this host gives the body whatever the header status).
  { name: 'pass', bin: filter, plugin: '{"mode": "standalone"}' },
  { name: 'throttle', bin: filter, plugin: '{"mode": "standalone", "throttle": {"enabled": true, "requests_per_second": 1e9, "tokens_per_minute": 1e12}}' },
  { name: 'hit', bin: filter, plugin: '{"mode": "standalone", "cache": {"enabled": true}}', answers: true },
];
for (const c of confs) { c.vm = await vm(c.bin, c.plugin, props); c.d = []; }
const n = 3000, warm = 300, block = 100;
for (let from = 0; from < n + warm; from += block) {
  for (const c of confs) {
    for (let i = from; i < from + block; i++) {
      const t0 = process.hrtime.bigint();
      const s = c.vm.request(reqHeaders, body, respHeaders, reply);
      const d = Number(process.hrtime.bigint() - t0) / 1e3;
      if (c.answers && i > 0 && !s.local) throw new Error(c.name + ': expected a cache hit');
      if (c.name !== 'empty' && !s.local && !s.reqHeaders.some(([k, v]) => k === 'x-autoglm-model' && v === 'qwen')) {
        throw new Error(c.name + ': no model header');
      }
      if (i >= warm) c.d.push(d);
    }
  }
}
const q = (d, p) => { const s = [...d].sort((a, b) => a - b); return s[Math.floor(p * (s.length - 1))]; };
const out = {};
for (const c of confs) { out[c.name + '-p50-µs'] = q(c.d, 0.5); out[c.name + '-p99-µs'] = q(c.d, 0.99); }
out['node'] = process.version;
console.log(JSON.stringify(out));
