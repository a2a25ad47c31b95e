#!/bin/sh
# fuzz-all.sh — runs every fuzz target of the repository's modules (the
# root and filter/) for $FUZZTIME each (default 30s): found by their
# names, so a new target is run without a hand-kept list.
set -eu
cd "$(dirname "$0")/../.."
for mod in . filter; do
	(cd "$mod" && grep -rlE '^func Fuzz[A-Za-z0-9_]*\(' --include='*_test.go' . |
		grep -vE '^\./(filter|vendor|test/(spire|istioctl|kube|ratelimit))/' |
		while read -r f; do
			for fn in $(sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\(.*/\1/p' "$f"); do
				echo "== $mod $(dirname "$f") $fn"
				go test -run '^$' -fuzz "^$fn\$" -fuzztime "${FUZZTIME:-30s}" "$(dirname "$f")/"
			done
		done)
done
