#!/usr/bin/env bash
# The local stack of `make run`: autoglm-xds, two sidecar versions (v1 on
# :8080/:9090, v2 on :8082/:9092, split 90/10), and Envoy on :10000 when an
# envoy binary is on PATH. Ctrl-C stops everything.
set -euo pipefail
bin=${BIN:-bin}
dev=sidecar/cmd/autoglm-sidecar/dev.yaml
pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT INT TERM

"$bin/autoglm-sidecar" -config "$dev" -http-addr 127.0.0.1:8080 -grpc-addr 127.0.0.1:9090 -log-format text 2> >(sed 's/^/[v1] /' >&2) &
pids+=($!)
"$bin/autoglm-sidecar" -config "$dev" -http-addr 127.0.0.1:8082 -grpc-addr 127.0.0.1:9092 -log-format text 2> >(sed 's/^/[v2] /' >&2) &
pids+=($!)
"$bin/autoglm-xds" serve -config xds/cmd/autoglm-xds/local.yaml -ads 127.0.0.1:18000 -status 127.0.0.1:18001 2> >(sed 's/^/[xds] /' >&2) &
pids+=($!)

envoy_line="Envoy: no envoy binary on PATH, so no HTTP gateway on :10000; put one on PATH (e.g. from func-e or a release
  tarball) and rerun to get it. autoglm-xds serves it with: bin/autoglm-xds bootstrap -node local -ads 127.0.0.1:18000"
if command -v envoy >/dev/null; then
  "$bin/autoglm-xds" bootstrap -node local -ads 127.0.0.1:18000 -admin-port 9901 > "${TMPDIR:-/tmp}/autoglm-envoy.yaml"
  envoy -c "${TMPDIR:-/tmp}/autoglm-envoy.yaml" --log-level warn 2> >(sed 's/^/[envoy] /' >&2) &
  pids+=($!)
  envoy_line="Envoy: http://127.0.0.1:10000 routes on x-autoglm-model (90 % v1, 10 % v2; x-autoglm-version pins one), e.g.
  curl -N http://127.0.0.1:10000/v1/chat/completions -H 'x-autoglm-model: autoglm-tiny' -H 'content-type: application/json' \\
    -d '{\"model\":\"autoglm-tiny\",\"stream\":true,\"max_tokens\":32,\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}'"
fi

for _ in $(seq 100); do
  curl -fs 127.0.0.1:8080/readyz >/dev/null 2>&1 && curl -fs 127.0.0.1:8082/readyz >/dev/null 2>&1 &&
    curl -fs 127.0.0.1:18001/readyz >/dev/null 2>&1 && break
  sleep 0.1
done
cat <<MSG

autoglm local stack (the sidecars run the native engine on the built-in tiny model: random weights, so the text is
  gibberish; point engine.native.model_path in sidecar/cmd/autoglm-sidecar/dev.yaml at a GGUF model for language)
  sidecar v1: http://127.0.0.1:8080 (OpenAI API, /metrics, /readyz), grpc 127.0.0.1:9090
  sidecar v2: http://127.0.0.1:8082, grpc 127.0.0.1:9092
  autoglm-xds: ADS 127.0.0.1:18000, status http://127.0.0.1:18001/status (edit xds/cmd/autoglm-xds/local.yaml to shift weights)
  $envoy_line
Try, in another shell:
  curl -N http://127.0.0.1:8080/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"autoglm-tiny","stream":true,"max_tokens":32,"messages":[{"role":"user","content":"hello"}]}'
  bin/autoglm-load run -grpc xds:///autoglm-inference -xds-server 127.0.0.1:18000 -model autoglm-tiny -vus 8 -duration 10s -output 16
    (proxyless gRPC through the control plane: compare the v1 and v2 sidecars' autoglm_requests_total)
Ctrl-C stops everything.
MSG
wait -n "${pids[@]}"
