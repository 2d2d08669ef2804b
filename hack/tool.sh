#!/usr/bin/env bash
# Installs a pinned Go tool from the module proxy into the cache (once) and prints its path.
# Usage: hack/tool.sh controller-gen|golangci-lint
source "$(dirname "$0")/lib.sh"

case "${1:-}" in
  controller-gen) pkg="sigs.k8s.io/controller-tools/cmd/controller-gen"; ver="$CONTROLLER_GEN_VERSION" ;;
  golangci-lint)  pkg="github.com/golangci/golangci-lint/v2/cmd/golangci-lint"; ver="$GOLANGCI_LINT_VERSION" ;;
  *) echo "usage: $0 controller-gen|golangci-lint" >&2; exit 2 ;;
esac

dir="${TOOLS_BIN}/$1-${ver}"
if [ ! -x "$dir/$1" ]; then
  log "installing $1 ${ver} from the module proxy (once)"
  mkdir -p "$dir"
  # GOFLAGS cleared: the tool builds from its own go.mod, not ours.
  (cd "$dir" && GOFLAGS= GOBIN="$dir" go install "${pkg}@${ver}")
fi
echo "$dir/$1"
