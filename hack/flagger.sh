#!/usr/bin/env bash
# Provides Flagger, pinned, built from the module proxy in a throw-away module (Flagger's go.mod has
# no replaces), cached outside the clone by version. Its CRDs (the module's
# artifacts/flagger/crd.yaml) are copied next to the binary, as crd.yaml. Prints the binary's path.
# ~2.5 min on 2 cores, once per version. The e2e suite (e2e/tools_test.go) runs it.
source "$(dirname "$0")/lib.sh"

version="${FLAGGER_VERSION:-v1.36.1}"
mod="github.com/fluxcd/flagger"
out="${SMI2ISTIO_CACHE}/flagger/${version}/flagger"
if [ ! -x "$out" ] || [ ! -f "$(dirname "$out")/crd.yaml" ]; then
  work="${SMI2ISTIO_CACHE}/build/flagger-${version}"
  log "building Flagger from ${mod}@${version} (~2.5 min on 2 cores, once)"
  mkdir -p "$work" "$(dirname "$out")"
  info=$(cd "$work" && GOFLAGS= go mod download -json "${mod}@${version}")
  src=$(jq -r .Dir <<<"$info")
  gomod=$(jq -r .GoMod <<<"$info")
  {
    echo "module smi2istio.local/flaggerbuild"
    echo
    echo "go $(GOFLAGS= go mod edit -json "$gomod" | jq -r .Go)"
    echo
    echo "require ${mod} ${version}"
    echo
    GOFLAGS= go mod edit -json "$gomod" |
      jq -r '.Replace[]? | select(.New.Version != null) | "replace \(.Old.Path) => \(.New.Path) \(.New.Version)"'
  } > "$work/go.mod"
  cat > "$work/tools.go" <<'GO'
//go:build tools

package flaggerbuild

import _ "github.com/fluxcd/flagger/cmd/flagger"
GO
  (cd "$work" && GOFLAGS=-mod=mod go mod tidy -e >/dev/null 2>&1 || true)
  (cd "$work" && GOFLAGS=-mod=mod go build -tags tools -trimpath -ldflags "-s -w" -o "$out.tmp" "${mod}/cmd/flagger")
  install -m 0644 "$src/artifacts/flagger/crd.yaml" "$(dirname "$out")/crd.yaml.tmp"
  mv "$(dirname "$out")/crd.yaml.tmp" "$(dirname "$out")/crd.yaml"
  mv "$out.tmp" "$out"
fi
echo "$out"
