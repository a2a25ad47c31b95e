// Package server is the sidecar's front on the request path: the
// OpenAI-compatible HTTP API with SSE streaming, the gRPC API, health,
// readiness, Prometheus metrics and ORCA load reports. It turns requests
// into scheduler work (package batch) and maps outcomes back to status
// codes; Run composes the listeners and the scheduler and drains them on
// shutdown.
package server
