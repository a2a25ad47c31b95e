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
mkdir "$dir/filter" "$dir/autoglm"
(cd "$src" && tar cf - --exclude=./vendor .) | (cd "$dir/filter" && tar xf -)
# The filter imports dependency-free packages of the main module (xfcc),
# joined by the repository's go.work. Vendoring all of the main module would
# pull in its dependencies; the scratch workspace holds a copy of just the
# packages the filter imports, under the main module's path.
root=github.com/open-autoglm/autoglm
printf 'module %s\n\ngo %s\n' "$root" "$(cd "$src" && go mod edit -json | sed -n 's/^[[:space:]]*"Go": "\(.*\)",*$/\1/p')" > "$dir/autoglm/go.mod"
(cd "$src" && GOOS=wasip1 GOARCH=wasm go list -deps -f '{{with .Module}}{{if eq .Path "'"$root"'"}}{{$.ImportPath}} {{$.Dir}} {{join $.GoFiles " "}}{{end}}{{end}}' "$pkg") |
while read -r path pdir files; do
	rel=${path#"$root"/}
	mkdir -p "$dir/autoglm/$rel"
	for f in $files; do cp "$pdir/$f" "$dir/autoglm/$rel/"; done
done
printf 'go %s\n\nuse (\n\t./filter\n\t./autoglm\n)\n' "$(sed -n 's/^go //p' "$dir/autoglm/go.mod")" > "$dir/go.work"
cd "$dir"
go work vendor
internal=$dir/vendor/github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/internal
test -f "$internal/abi_hostcalls_mock.go" || { echo "build.sh: the SDK's layout changed: $internal/abi_hostcalls_mock.go is missing" >&2; exit 1; }
cat > overlay.json <<JSON
{"Replace": {
  "$internal/abi_hostcalls_mock.go": "$dir/filter/abishim/hostcalls.go",
  "$internal/zz_abishim_exports.go": "$dir/filter/abishim/exports.go"
}}
JSON
cd filter
GOOS=wasip1 GOARCH=wasm go build -mod=vendor -overlay ../overlay.json -buildmode=c-shared -trimpath -o "$out" "$pkg"
