#!/bin/sh
# race-packages.sh [DIR] — the packages of the module in DIR (default .)
# with concurrency in their code or tests: goroutines, sync, errgroup, or
# servers (net.Listen, httptest, gRPC). make test runs them under the race
# detector, so a new concurrent package is covered without a hand-kept
# list. Not here: test/e2e and test/manifests (they drive built binaries
# and tools in other processes; the packages e2e exercises are raced
# in-process) and the tool-wrapper modules.
set -eu
cd "${1:-.}"
grep -rlE '^\s*go (func\b|[A-Za-z_][A-Za-z0-9_.]*\()|"sync"|"sync/atomic"|errgroup\.|httptest\.New|net\.Listen\(|grpc\.NewServer' --include='*.go' . |
	grep -vE '^\./(test/(e2e|manifests|spire|istioctl|kube|ratelimit)|filter|vendor)/' |
	xargs -n1 dirname | sort -u | sed 's|$|/|'
