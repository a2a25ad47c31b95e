#!/bin/sh
# build.sh OUT.wasm [PACKAGE] — builds the filter (or PACKAGE, e.g.
# ./internal/emptyfilter) with standard Go for wasip1.
#
# The proxy-wasm Go SDK v0.24.0 targets TinyGo; with standard Go it would
# compile its mock host. The ABI shim in abishim/ is laid over the SDK's
# internal package with -overlay, which the Go tool refuses for files in the
# module cache: so the module is copied to a scratch directory and vendored
# there (a vendor/ directory in the source tree would switch every go
# command in it to -mod=vendor).
set -eu
out=${1:?usage: build.sh OUT.wasm [PACKAGE]}
pkg=${2:-.}
case $out in /*) ;; *) out=$PWD/$out ;; esac
src=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d "${TMPDIR:-/tmp}/autoglm-filter-build.XXXXXX")
trap 'rm -rf "$dir"' EXIT
(cd "$src" && tar cf - --exclude=./vendor .) | (cd "$dir" && tar xf -)
cd "$dir"
go mod vendor
internal=$dir/vendor/github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/internal
test -f "$internal/abi_hostcalls_mock.go" || { echo "build.sh: the SDK's layout changed: $internal/abi_hostcalls_mock.go is missing" >&2; exit 1; }
cat > overlay.json <<JSON
{"Replace": {
  "$internal/abi_hostcalls_mock.go": "$dir/abishim/hostcalls.go",
  "$internal/zz_abishim_exports.go": "$dir/abishim/exports.go"
}}
JSON
GOOS=wasip1 GOARCH=wasm go build -mod=vendor -overlay overlay.json -buildmode=c-shared -trimpath -o "$out" "$pkg"
