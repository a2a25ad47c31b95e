#!/bin/sh
# check-install.sh — proves that a user's `go install
# github.com/open-autoglm/autoglm/...@version` works: it runs exactly that,
# outside the workspace (GOWORK=off), for the commit at HEAD, with the Go
# tool fetching the module from this clone (git's url.insteadOf points the
# module's GitHub address here; GOPRIVATE keeps the checksum database out of
# it) and its dependencies from the module proxy. `go install pkg@version`
# refuses a go.mod with replace directives and a module that needs another
# one not published; the binaries are then run once.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
rev=$(git -C "$root" rev-parse HEAD)
bin=$(mktemp -d "${TMPDIR:-/tmp}/autoglm-install.XXXXXX")
modcache=$(GOWORK=off go env GOMODCACHE)
cleanup() {
	chmod -R u+w "$modcache/github.com/open-autoglm" "$modcache/cache/download/github.com/open-autoglm" 2>/dev/null || true
	rm -rf "$bin" "$modcache/github.com/open-autoglm" "$modcache/cache/download/github.com/open-autoglm"
}
trap cleanup EXIT
if [ -n "$(git -C "$root" status --porcelain --untracked-files=no -- '*.go' go.mod go.sum)" ]; then
	echo "check-install.sh: note: uncommitted Go changes are not part of what is installed (HEAD $rev is)"
fi
cd "$bin"
env GOWORK=off GOFLAGS=-mod=mod GOPRIVATE='github.com/open-autoglm/*' GOBIN="$bin" \
	GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0="url.file://$root.insteadOf" GIT_CONFIG_VALUE_0=https://github.com/open-autoglm/autoglm \
	go install "github.com/open-autoglm/autoglm/sidecar/cmd/...@$rev" "github.com/open-autoglm/autoglm/xds/cmd/...@$rev" "github.com/open-autoglm/autoglm/test/cmd/...@$rev"
for b in autoglm-sidecar autoglm-xds autoglm-load; do
	[ -x "$bin/$b" ] || { echo "check-install.sh: go install did not produce $b" >&2; exit 1; }
	"$bin/$b" -h >/dev/null 2>&1 || [ $? -eq 2 ] || { echo "check-install.sh: $b -h failed" >&2; exit 1; }
done
echo "check-install.sh: go install …@$rev built and ran $(ls "$bin" | tr '\n' ' ')"
