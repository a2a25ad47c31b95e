#!/bin/sh
# build-ratelimit.sh — builds Envoy's rate limit service
# (github.com/envoyproxy/ratelimit, pinned by the wrapper module
# test/ratelimit) once into $AUTOGLM_TOOLS/ratelimit-<version>/bin (default
# ~/.cache/autoglm-tools). A cold build takes a few minutes.
exec "$(dirname "$0")/build-gotool.sh" ratelimit github.com/envoyproxy/ratelimit github.com/envoyproxy/ratelimit/src/service_cmd
