// Package xds will hold the control plane (autoglm-xds): config → compile →
// ir → envoygen → snapshot → ADS, and the rollout controller. It is built
// under its own issue; nothing here is wired into the sidecar yet.
package xds
