# Open-AutoGLM mesh. `make run` and `make test` are the two commands a fresh
# machine needs; everything they depend on is installed here, idempotently.
SHELL := /bin/bash
.DEFAULT_GOAL := help

GO        ?= go
MODULE    := github.com/open-autoglm/autoglm
TOOLS     ?= $(HOME)/.cache/autoglm-tools/bin
export AUTOGLM_TOOLS := $(dir $(TOOLS))
BIN       := bin
PROTOS    := $(wildcard sidecar/proto/autoglm/v1/*.proto)
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
RUN_ADDR  ?= 127.0.0.1:8080
RUN_GRPC  ?= 127.0.0.1:9090
# Stamp the VCS revision into binaries (`version`, autoglm_build_info) when
# built in a git checkout, whatever GOFLAGS says.
BUILDVCS  := $(shell git rev-parse --git-dir >/dev/null 2>&1 && echo -buildvcs=true)

.PHONY: images help deps node-sdk spire istioctl kube ratelimit golangci-lint build filter filter-image run run-sidecar test test-race bench lint generate check-generate tools protoc fuzz chaos clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}' | \
		sed -e 's|$$(dir $$(TOOLS))|$(dir $(TOOLS))|g' -e 's|$$(TOOLS)|$(TOOLS)|g' -e 's|$$(BIN)|$(BIN)|g'

build: ## build every binary into bin/
	$(GO) build $(BUILDVCS) -o $(BIN)/ ./sidecar/cmd/... ./xds/cmd/... ./test/cmd/...

filter: ## build the proxy-wasm filter into bin/autoglm-filter.wasm (standard Go, wasip1)
	./filter/build.sh $(BIN)/autoglm-filter.wasm

VERSION   ?= dev
REPO      ?= ghcr.io/open-autoglm
images: ## OCI images of autoglm-sidecar and autoglm-xds into bin/images (an OCI layout, no Docker); VERSION=tag, PUSH=1 pushes to REPO
	CGO_ENABLED=1 $(GO) build -trimpath $(BUILDVCS) -o $(BIN)/image/ ./sidecar/cmd/autoglm-sidecar
	CGO_ENABLED=0 $(GO) build -trimpath $(BUILDVCS) -o $(BIN)/image/ ./xds/cmd/autoglm-xds
	$(GO) run ./release/cmd/build-images -bin $(BIN)/image -out $(BIN)/images -version $(VERSION) -repo $(REPO) \
		-revision "$$(git rev-parse HEAD 2>/dev/null)" $(if $(PUSH),-push)

filter-image: filter ## package the filter as the OCI image Istio's WasmPlugin pulls (bin/autoglm-filter-oci; PUSH=ref pushes it)
	cd filter && $(GO) run ./cmd/filter-image -wasm ../$(BIN)/autoglm-filter.wasm -out ../$(BIN)/autoglm-filter-oci $(if $(PUSH),-push $(PUSH))

run: build ## the local stack: autoglm-xds, two sidecar versions (90/10), Envoy if on PATH; prints what to try
	BIN=$(BIN) ./test/tools/run-local.sh

run-sidecar: build ## just one sidecar on the embedded default engine
	./$(BIN)/autoglm-sidecar -config sidecar/cmd/autoglm-sidecar/dev.yaml -http-addr $(RUN_ADDR) -grpc-addr $(RUN_GRPC) -log-format text

test: lint check-generate deps spire istioctl kube ratelimit node-sdk images ## vet, format check, generated-code check and all tests (race detector on every package with concurrency: test/tools/race-packages.sh)
	$(GO) test -count=1 -timeout 15m ./...
	cd filter && $(GO) test -count=1 -timeout 5m ./...
	$(GO) test -count=1 -timeout 10m -race $$(./test/tools/race-packages.sh)
	cd filter && $(GO) test -count=1 -timeout 10m -race $$(../test/tools/race-packages.sh .)
	./test/tools/check-install.sh

bench: ## benchmarks recorded in BENCHMARKS.md
	$(GO) test -run '^$$' -bench . -benchtime 1x -count 1 ./test/bench/
	cd filter && $(GO) test -run '^$$' -bench . -benchtime 1x -count 1 ./wasmtest/
	cd filter && $(GO) test -run '^$$' -bench . -benchmem ./openai/

chaos: ## the chaos drills (test/chaos) with every phase 5× longer than in make test; a table per drill in the log
	set -o pipefail; AUTOGLM_CHAOS_SCALE=5 $(GO) test -count=1 -timeout 20m -v -run . ./test/chaos/ | grep -E '^(=== RUN|--- |ok|FAIL)|drill '

fuzz: ## run every fuzz target (test/tools/fuzz-all.sh finds them) for a while each (FUZZTIME=30s)
	./test/tools/fuzz-all.sh

GOLANGCI_LINT = $(dir $(TOOLS))golangci-lint-$(shell awk '$$1 == "require" && $$2 == "github.com/golangci/golangci-lint/v2" { print $$3 }' test/golangci-lint/go.mod)/bin/golangci-lint

golangci-lint: ## build golangci-lint (pinned by test/golangci-lint) once into the tools cache (cold: ~3 min)
	./test/tools/build-gotool.sh golangci-lint github.com/golangci/golangci-lint/v2 github.com/golangci/golangci-lint/v2/cmd/golangci-lint

lint: golangci-lint ## go vet, golangci-lint (.golangci.yml: a small set of bug-finding linters) and a gofmt check, both modules
	$(GO) vet ./...
	cd filter && $(GO) vet ./...
	$(GOLANGCI_LINT) run ./...
	cd filter && $(GOLANGCI_LINT) run --config ../.golangci.yml ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

deps: ## system packages the tests use (redis-server), installed with apt when missing
	@command -v redis-server >/dev/null || { echo "installing redis-server (Debian)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null; }

node-sdk: ## install the OpenAI Node SDK pinned by test/nodesdk once into $(dir $(TOOLS))nodesdk-<version> (Node.js from Debian if missing)
	./test/tools/install-node-sdk.sh

spire: ## build spire-server and spire-agent v1.15.3 once into $(dir $(TOOLS))spire-1.15.3 (cold: ~10 min)
	./test/tools/build-spire.sh

ratelimit: ## build Envoy's rate limit service once into $(dir $(TOOLS))ratelimit-<version> (cold: a few minutes)
	./test/tools/build-ratelimit.sh

istioctl: ## build istioctl once into $(dir $(TOOLS))istioctl-<version> (cold: several minutes)
	./test/tools/build-istioctl.sh

kube: istioctl ## build etcd and kube-apiserver once into $(dir $(TOOLS))kube-v1.36.3, with the CRDs the manifests use (cold: ~8 min)
	./test/tools/build-kube.sh

tools: protoc ## build the code generators into $(TOOLS)
	@mkdir -p $(TOOLS)
	@test -x $(TOOLS)/protoc-gen-go || GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go
	@test -x $(TOOLS)/protoc-gen-go-grpc || GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

protoc:
	@command -v protoc >/dev/null || { echo "installing protoc (Debian protobuf-compiler)"; \
		(apt-get update -qq && apt-get install -y -qq protobuf-compiler) >/dev/null; }

generate: tools ## regenerate committed code (gRPC stubs)
	PATH=$(TOOLS):$$PATH protoc -I sidecar/proto \
		--go_out=. --go_opt=module=$(MODULE) \
		--go-grpc_out=. --go-grpc_opt=module=$(MODULE) $(PROTOS)

check-generate: tools ## fail if the committed generated code is stale
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	PATH=$(TOOLS):$$PATH protoc -I sidecar/proto --go_out=$$tmp --go-grpc_out=$$tmp $(PROTOS) && \
	diff -r $$tmp/$(MODULE)/sidecar/proto sidecar/proto -x '*.proto' && echo "generated code is up to date" || \
	{ echo "generated code is stale: run make generate"; exit 1; }

clean:
	rm -rf $(BIN)
