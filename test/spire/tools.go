//go:build tools

// Package spire pins SPIRE for the end-to-end identity tests: make test
// builds spire-server and spire-agent from this module once, into a cache
// outside the repository (test/tools/build-spire.sh).
package spire

import (
	_ "github.com/spiffe/spire/cmd/spire-agent"
	_ "github.com/spiffe/spire/cmd/spire-server"
)
