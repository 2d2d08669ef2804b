#!/usr/bin/env bash
# Provides istiod (pilot-discovery) built from the istio.io/istio version go.mod requires, with the
# same replaces as go.mod, cached outside the clone by that version. Prints the binary's path.
# ~10 min and ~3 GB RAM on 2 cores, once per Istio version.
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

version=$(go list -m -f '{{.Version}}' istio.io/istio)
out="${SMI2ISTIO_CACHE}/istio/${version}/pilot-discovery"
if [ ! -x "$out" ]; then
  work="${SMI2ISTIO_CACHE}/build/istiod-${version}"
  log "building istiod (pilot-discovery) from istio.io/istio@${version} (~10 min on 2 cores, once)"
  mkdir -p "$work" "$(dirname "$out")"
  {
    echo "module smi2istio.local/istiodbuild"
    echo
    echo "go 1.26"
    echo
    echo "require istio.io/istio ${version}"
    echo
    # The replaces of our go.mod (istio api/client-go, go-control-plane) are what make this version
    # resolvable from the proxy; use exactly them.
    go mod edit -json | sed -n '/"Replace"/,$p' |
      awk '/"Old"/{old=1} /"New"/{old=0} /"Path"/{gsub(/[",]/,"",$2); if (old) o=$2; else p=$2} /"Version"/{gsub(/[",]/,"",$2); if (!old) print "replace " o " => " p " " $2}'
  } > "$work/go.mod"
  cat > "$work/tools.go" <<'GO'
//go:build tools

package istiodbuild

import _ "istio.io/istio/pilot/cmd/pilot-discovery"
GO
  (cd "$work" && GOFLAGS=-mod=mod go mod tidy -e >/dev/null 2>&1 || true)
  (cd "$work" && GOFLAGS=-mod=mod go build -tags tools -trimpath -ldflags "-s -w" -o "$out.tmp" istio.io/istio/pilot/cmd/pilot-discovery)
  mv "$out.tmp" "$out"
fi
echo "$out"
