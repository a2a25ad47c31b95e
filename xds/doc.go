// Package xds is the control plane, autoglm-xds, along the config path of
// ARCHITECTURE.md: config (strict YAML) → compile → ir → envoygen (Envoy
// resources) → snapshot (content-hash version, validated, consistent) →
// server (go-control-plane ADS, file watch, NACK back-off, status), plus
// bootstrap for Envoy and cmd/autoglm-xds. The rollout controller is still
// to come.
package xds
