#!/usr/bin/env bash
# Provides Argo Rollouts' controller (rollouts-controller), pinned, built from the module proxy in a
# throw-away module that copies the replaces of Argo's own go.mod (without them k8s.io resolves to
# versions Argo does not build against), cached outside the clone by version. Its CRDs (the
# module's manifests/crds) are copied next to the binary, under crds/. Prints the binary's path.
# ~6 min and ~2.5 GB RAM on 2 cores, once per version. The e2e suite (e2e/tools_test.go) runs it.
source "$(dirname "$0")/lib.sh"

# v1.10.2 needs a newer Go than the toolchain pinned here (see ENVIRONMENT.md).
version="${ARGO_ROLLOUTS_VERSION:-v1.10.1}"
mod="github.com/argoproj/argo-rollouts"
out="${SMI2ISTIO_CACHE}/argo-rollouts/${version}/rollouts-controller"
if [ ! -x "$out" ] || [ ! -d "$(dirname "$out")/crds" ]; then
  work="${SMI2ISTIO_CACHE}/build/argo-rollouts-${version}"
  log "building Argo Rollouts' controller from ${mod}@${version} (~6 min on 2 cores, once)"
  mkdir -p "$work" "$(dirname "$out")"
  # GOFLAGS cleared: this module is not ours (no -mod=vendor or build tags of the caller).
  info=$(cd "$work" && GOFLAGS= go mod download -json "${mod}@${version}")
  src=$(jq -r .Dir <<<"$info")
  gomod=$(jq -r .GoMod <<<"$info")
  {
    echo "module smi2istio.local/argorolloutsbuild"
    echo
    echo "go $(GOFLAGS= go mod edit -json "$gomod" | jq -r .Go)"
    echo
    echo "require ${mod} ${version}"
    echo
    # Argo's replaces, verbatim (only those to a module version; a local path cannot be fetched).
    GOFLAGS= go mod edit -json "$gomod" |
      jq -r '.Replace[]? | select(.New.Version != null) | "replace \(.Old.Path) => \(.New.Path) \(.New.Version)"'
  } > "$work/go.mod"
  cat > "$work/tools.go" <<'GO'
//go:build tools

package argorolloutsbuild

import _ "github.com/argoproj/argo-rollouts/cmd/rollouts-controller"
GO
  (cd "$work" && GOFLAGS=-mod=mod go mod tidy -e >/dev/null 2>&1 || true)
  (cd "$work" && GOFLAGS=-mod=mod go build -tags tools -trimpath -ldflags "-s -w" -o "$out.tmp" "${mod}/cmd/rollouts-controller")
  rm -rf "$(dirname "$out")/crds.tmp" && mkdir -p "$(dirname "$out")/crds.tmp"
  cp "$src"/manifests/crds/*-crd.yaml "$(dirname "$out")/crds.tmp/"
  chmod u+w "$(dirname "$out")"/crds.tmp/*
  rm -rf "$(dirname "$out")/crds" && mv "$(dirname "$out")/crds.tmp" "$(dirname "$out")/crds"
  mv "$out.tmp" "$out"
fi
echo "$out"
