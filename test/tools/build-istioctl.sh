#!/bin/sh
# build-istioctl.sh — builds istioctl (istio.io/istio, pinned by the wrapper
# module test/istioctl) once into $AUTOGLM_TOOLS/istioctl-<version>/bin
# (default ~/.cache/autoglm-tools). A cold build takes several minutes.
exec "$(dirname "$0")/build-gotool.sh" istioctl istio.io/istio istio.io/istio/istioctl/cmd/istioctl
