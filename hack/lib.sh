#!/usr/bin/env bash
# Shared settings for hack/ scripts: pinned versions and the cache location (outside the clone).
set -euo pipefail

# Pinned versions. Bump here only; the cache is keyed by these. (Istio: the istio.io/istio version
# in go.mod, see hack/istio-crds.sh.)
KUBE_VERSION="${KUBE_VERSION:-v1.36.3}"
CONTROLLER_GEN_VERSION="${CONTROLLER_GEN_VERSION:-v0.23.0}"
GOLANGCI_LINT_VERSION="${GOLANGCI_LINT_VERSION:-v2.15.0}"

SMI2ISTIO_CACHE="${SMI2ISTIO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/smi2istio}"
KUBE_ASSETS="${SMI2ISTIO_CACHE}/kube/${KUBE_VERSION}"
TOOLS_BIN="${SMI2ISTIO_CACHE}/tools"

log() { printf '[hack] %s\n' "$*" >&2; }
