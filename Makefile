# smi2istio — run `make help` for the targets.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

# Everything heavy (control plane binaries, tools) is cached outside the clone, keyed by version.
export SMI2ISTIO_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/smi2istio

VERSION ?= 0.1.0
BIN ?= bin/smi2istio
# The Dockerfile runs `make build`: keep the flags here and only here.
BUILD_FLAGS ?= -trimpath -ldflags "-s -w -X main.version=$(VERSION)"
GO_TEST_FLAGS ?= -count=1

CONTROLLER_GEN = $(shell hack/tool.sh controller-gen)
GOLANGCI_LINT = $(shell hack/tool.sh golangci-lint)

.DEFAULT_GOAL := help

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: ## Generate the CRDs (config/crd/bases: SMI kinds and our config) and the RBAC role (config/rbac) from the code.
	go run ./hack/crdgen -out config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths=./... output:rbac:artifacts:config=config/rbac output:crd:artifacts:config=config/crd/bases

.PHONY: generate
generate: ## Generate DeepCopy methods for the operator's own API types.
	$(CONTROLLER_GEN) object paths=./api/...

.PHONY: fmt
fmt: ## Format the code.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: lint
lint: ## Run golangci-lint (pinned in hack/lib.sh, config in .golangci.yml).
	$(GOLANGCI_LINT) run --build-tags e2e ./...

.PHONY: assets
assets: ## Build or reuse the local control plane binaries (etcd, kube-apiserver, kube-controller-manager), istiod and the tools the e2e runs (Argo Rollouts, Flagger).
	@hack/kube-assets.sh
	@hack/istiod.sh
	@hack/argo-rollouts.sh >/dev/null
	@hack/flagger.sh >/dev/null

.PHONY: test
test: lint verify-manifests build ## Lint, check generated files, build as the Dockerfile does, run every test on a real local control plane, then the e2e suite on istiod.
	KUBEBUILDER_ASSETS="$$(hack/kube-assets.sh)" go test $(GO_TEST_FLAGS) ./...
	@$(MAKE) --no-print-directory e2e

.PHONY: e2e
e2e: ## Run the end-to-end suite: the operator binary and istiod (built once by hack/istiod.sh) on a local control plane.
	@hack/istiod.sh >/dev/null
	@hack/istioctl.sh >/dev/null
	@hack/argo-rollouts.sh >/dev/null
	@hack/flagger.sh >/dev/null
	KUBEBUILDER_ASSETS="$$(hack/kube-assets.sh)" go test $(GO_TEST_FLAGS) -tags e2e -timeout 30m ./e2e/...

SIZES ?= S,M,L
IDLE ?= 5m

.PHONY: bench
bench: ## Measure convergence against a raw-write baseline, writes, change latency and memory at scale (SIZES=S,M,L IDLE=5m BENCH_FLAGS=); see docs/benchmarks.md.
	KUBEBUILDER_ASSETS="$$(hack/kube-assets.sh)" go run ./hack/bench -sizes $(SIZES) -idle $(IDLE) $(BENCH_FLAGS)

.PHONY: verify-manifests
verify-manifests: ## Fail if config/ differs from what `make manifests` would generate.
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	go run ./hack/crdgen -out "$$tmp/crd" && \
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths=./... output:rbac:artifacts:config="$$tmp/rbac" output:crd:artifacts:config="$$tmp/crd" && \
	diff -ru config/crd/bases "$$tmp/crd" && diff -u config/rbac/role.yaml "$$tmp/rbac/role.yaml" \
	|| { echo "generated manifests are out of date: run 'make manifests'"; exit 1; }

##@ Build and run

.PHONY: build
build: ## Build the operator binary (the Dockerfile runs exactly this).
	CGO_ENABLED=0 go build $(BUILD_FLAGS) -o $(BIN) .

.PHONY: build-installer
build-installer: manifests ## Render config/default into dist/install.yaml and config/without-crds (keep another installer's SMI CRDs) into dist/install-without-crds.yaml (IMG=<image> to set the manager image).
	go run ./hack/build-installer -out dist/install.yaml $(if $(IMG),-image $(IMG))
	go run ./hack/build-installer -dir config/without-crds -out dist/install-without-crds.yaml $(if $(IMG),-image $(IMG))

.PHONY: bundle
bundle: manifests ## Generate the OLM bundle (bundle/, bundle.Dockerfile) from config/ (VERSION, IMG).
	go run ./hack/bundle -version $(VERSION) -image $(or $(IMG),ghcr.io/smi2istio/smi2istio:$(VERSION))

.PHONY: run
run: build ## Run the operator: against $$KUBECONFIG when set, else on a local control plane it starts.
	@if [ -z "$${KUBECONFIG:-}" ]; then \
		export KUBEBUILDER_ASSETS="$$(hack/kube-assets.sh)"; \
		set -- --local-istio-crds="$$(hack/istio-crds.sh)"; \
	fi; \
	exec $(BIN) --zap-devel "$$@" $(RUN_ARGS)
