#!/bin/sh
# build-kube.sh — builds etcd v3.7.3 and kube-apiserver v1.36.3 (pinned by
# the wrapper module test/kube) once into $AUTOGLM_TOOLS/kube-v1.36.3/bin,
# and gathers the CRDs the manifests use (Istio's, the Prometheus Operator's
# ServiceMonitor and PrometheusRule, SPIRE's ClusterSPIFFEID, Flagger's and Argo Rollouts'
# analysis resources) from their Go modules into
# .../crds, for the server-side dry-run in test/manifests. Cold: ~8 min.
set -eu
tools=${AUTOGLM_TOOLS:-$HOME/.cache/autoglm-tools}
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=$tools/kube-v1.36.3
if [ -x "$dir/bin/etcd" ] && [ -x "$dir/bin/kube-apiserver" ] && [ -f "$dir/crds/done-4" ]; then
	exit 0
fi
mkdir -p "$dir/bin.tmp" "$dir/crds"
cd "$root/test/kube"
if ! [ -x "$dir/bin/kube-apiserver" ]; then
	echo "building etcd and kube-apiserver into $dir/bin (once; several minutes)"
	GOCACHE=$dir/gocache GOWORK=off GOFLAGS=-mod=mod go build -trimpath -o "$dir/bin.tmp/etcd" go.etcd.io/etcd/server/v3
	GOCACHE=$dir/gocache GOWORK=off GOFLAGS=-mod=mod go build -trimpath -o "$dir/bin.tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
	rm -rf "$dir/gocache" "$dir/bin"
	mv "$dir/bin.tmp" "$dir/bin"
fi
moddir() { (cd "$dir" && GOWORK=off GOFLAGS= go mod download -json "$1") | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'; }
istio=$(sed -n 's/^require istio.io\/istio \(.*\)$/\1/p' "$root/test/istioctl/go.mod")
cp "$(moddir istio.io/istio@$istio)/manifests/charts/base/files/crd-all.gen.yaml" "$dir/crds/istio.yaml"
po=$(moddir github.com/prometheus-operator/prometheus-operator@v0.85.0)/example/prometheus-operator-crd
cp "$po/monitoring.coreos.com_servicemonitors.yaml" "$dir/crds/servicemonitors.yaml"
cp "$po/monitoring.coreos.com_prometheusrules.yaml" "$dir/crds/prometheusrules.yaml"
cp "$(moddir github.com/spiffe/spire-controller-manager@v0.6.3)/config/crd/bases/spire.spiffe.io_clusterspiffeids.yaml" "$dir/crds/clusterspiffeids.yaml"
# Flagger's and Argo Rollouts' CRDs, for istio/rollout-tools/.
cp "$(moddir github.com/fluxcd/flagger@v1.36.1)/artifacts/flagger/crd.yaml" "$dir/crds/flagger.yaml"
cp "$(moddir github.com/argoproj/argo-rollouts@v1.9.0)/manifests/crds/analysis-template-crd.yaml" "$dir/crds/argo-analysistemplates.yaml"
# The Gateway API Inference Extension's InferencePool, for istio/inference-extension/.
cp "$(moddir sigs.k8s.io/gateway-api-inference-extension@v1.5.0)/config/crd/bases/inference.networking.k8s.io_inferencepools.yaml" "$dir/crds/inferencepools.yaml"
chmod 644 "$dir/crds/"*.yaml
touch "$dir/crds/done-4"
