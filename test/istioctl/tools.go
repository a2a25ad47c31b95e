//go:build tools

// Package istioctl pins istioctl for the manifests' validation: make
// istioctl builds it once from this module into a cache outside the
// repository (test/tools/build-istioctl.sh).
package istioctl

import _ "istio.io/istio/istioctl/cmd/istioctl"
