//go:build tools

// Package ratelimit pins Envoy's rate limit service for the filter's
// global-limit test: make ratelimit builds it once from this module into
// a cache outside the repository (test/tools/build-ratelimit.sh).
package ratelimit

import _ "github.com/envoyproxy/ratelimit/src/service_cmd"
