#!/bin/sh
# install-node-sdk.sh — installs the npm packages pinned by
# test/nodesdk/package-lock.json (the OpenAI Node SDK, Hugging Face
# tokenizers in JS, llama.cpp through node-llama-cpp) once into $AUTOGLM_TOOLS/nodesdk-<lock hash> (default
# ~/.cache/autoglm-tools) with `npm install` from the npm registry (optional
# dependencies left out: node-llama-cpp takes only its linux-x64 binary,
# named directly; the lock pins the rest); Node.js and
# npm from Debian's packages when they are missing.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
tools=${AUTOGLM_TOOLS:-$HOME/.cache/autoglm-tools}
hash=$(sha256sum "$root/test/nodesdk/package-lock.json" | cut -c1-12)
dir="$tools/nodesdk-$hash"
[ -f "$dir/done" ] && exit 0
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	echo "installing nodejs and npm (Debian)"
	(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm) >/dev/null
fi
rm -rf "$dir"
mkdir -p "$dir"
cp "$root/test/nodesdk/package.json" "$root/test/nodesdk/package-lock.json" "$dir/"
(cd "$dir" && npm install --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error)
touch "$dir/done"
