#!/bin/sh
# build-spire.sh — builds spire-server and spire-agent (SPIRE v1.15.3, pinned
# by the wrapper module test/spire) once into a cache outside the repository:
# $AUTOGLM_TOOLS/spire-1.15.3/bin (default ~/.cache/autoglm-tools). A cold
# build takes ~8–10 minutes and ~3 GB of memory; later runs reuse it.
set -eu
tools=${AUTOGLM_TOOLS:-$HOME/.cache/autoglm-tools}
out=$tools/spire-1.15.3/bin
if [ -x "$out/spire-server" ] && [ -x "$out/spire-agent" ]; then
	exit 0
fi
cd "$(dirname "$0")/../spire"
mkdir -p "$out.tmp"
echo "building SPIRE v1.15.3 into $out (once; several minutes)"
# A private build cache keeps SPIRE's ~1 GB of objects out of the shared one.
GOCACHE=$tools/spire-1.15.3/gocache GOWORK=off GOFLAGS=-mod=mod go build -trimpath -o "$out.tmp/" \
	github.com/spiffe/spire/cmd/spire-server github.com/spiffe/spire/cmd/spire-agent
rm -rf "$tools/spire-1.15.3/gocache"
rm -rf "$out"
mv "$out.tmp" "$out"
