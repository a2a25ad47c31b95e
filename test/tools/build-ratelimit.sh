#!/bin/sh
# build-ratelimit.sh — builds Envoy's rate limit service
# (github.com/envoyproxy/ratelimit, pinned by the wrapper module
# test/ratelimit) once into $AUTOGLM_TOOLS/ratelimit-<version>/bin (default
# ~/.cache/autoglm-tools). A cold build takes a few minutes.
set -eu
tools=${AUTOGLM_TOOLS:-$HOME/.cache/autoglm-tools}
cd "$(dirname "$0")/../ratelimit"
version=$(sed -n 's/^require github.com\/envoyproxy\/ratelimit \(.*\)$/\1/p' go.mod)
out=$tools/ratelimit-$version/bin
if [ -x "$out/ratelimit" ]; then
	exit 0
fi
mkdir -p "$out.tmp"
echo "building envoyproxy/ratelimit $version into $out (once; a few minutes)"
GOCACHE=$tools/ratelimit-$version/gocache GOFLAGS=-mod=mod go build -trimpath -o "$out.tmp/ratelimit" github.com/envoyproxy/ratelimit/src/service_cmd
rm -rf "$tools/ratelimit-$version/gocache"
rm -rf "$out"
mv "$out.tmp" "$out"
