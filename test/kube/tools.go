//go:build tools

// Package kube pins etcd and kube-apiserver for the manifests' server-side
// dry-run: make kube builds them once from this module into a cache
// outside the repository (test/tools/build-kube.sh).
package kube

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
