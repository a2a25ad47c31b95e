#!/bin/sh
# build-istioctl.sh — builds istioctl (istio.io/istio, pinned by the wrapper
# module test/istioctl) once into $AUTOGLM_TOOLS/istioctl-<version>/bin
# (default ~/.cache/autoglm-tools). A cold build takes several minutes.
set -eu
tools=${AUTOGLM_TOOLS:-$HOME/.cache/autoglm-tools}
cd "$(dirname "$0")/../istioctl"
version=$(sed -n 's/^require istio.io\/istio \(.*\)$/\1/p' go.mod)
out=$tools/istioctl-$version/bin
if [ -x "$out/istioctl" ]; then
	exit 0
fi
mkdir -p "$out.tmp"
echo "building istioctl $version into $out (once; several minutes)"
GOCACHE=$tools/istioctl-$version/gocache GOFLAGS=-mod=mod go build -trimpath -o "$out.tmp/istioctl" istio.io/istio/istioctl/cmd/istioctl
rm -rf "$tools/istioctl-$version/gocache"
rm -rf "$out"
mv "$out.tmp" "$out"
