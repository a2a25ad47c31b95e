//go:build tools

// Package golangcilint pins golangci-lint for make lint: the Makefile
// builds it once from this module into a cache outside the repository
// (test/tools/build-gotool.sh).
package golangcilint

import _ "github.com/golangci/golangci-lint/v2/cmd/golangci-lint"
