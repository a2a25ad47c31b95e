// Package api holds the OpenAI-compatible wire format of the sidecar: the
// request types with their strict decoding and validation, the response and
// streaming chunk types, and the error shape. It is the first stage of the
// sidecar's request path and does no I/O, so every rule is testable and
// fuzzable on bytes.
package api
