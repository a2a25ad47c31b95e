#!/bin/sh
# build-gotool.sh NAME MODULE PACKAGE — builds the command PACKAGE of
# MODULE, at the version the wrapper module test/NAME pins, once into
# $AUTOGLM_TOOLS/NAME-<version>/bin/NAME (default ~/.cache/autoglm-tools),
# with a private build cache that is deleted afterwards.
set -eu
name=$1 module=$2 pkg=$3
tools=${AUTOGLM_TOOLS:-$HOME/.cache/autoglm-tools}
cd "$(dirname "$0")/../$name"
version=$(awk -v m="$module" '$1 == "require" && $2 == m { print $3 }' go.mod)
[ -n "$version" ] || { echo "build-gotool.sh: test/$name/go.mod does not require $module" >&2; exit 1; }
out=$tools/$name-$version/bin
if [ -x "$out/$name" ]; then
	exit 0
fi
mkdir -p "$out.tmp"
echo "building $name ($module $version) into $out (once; a few minutes)"
GOCACHE=$tools/$name-$version/gocache GOWORK=off GOFLAGS=-mod=mod go build -trimpath -o "$out.tmp/$name" "$pkg"
rm -rf "$tools/$name-$version/gocache"
rm -rf "$out"
mv "$out.tmp" "$out"
