#!/usr/bin/env bash
# Provides istioctl built from the istio.io/istio version go.mod requires, in the same throw-away
# module as istiod (hack/istiod.sh: same require, same replaces as our go.mod), cached outside the
# clone by that version. Prints the binary's path. ~1.5 min on 2 cores with istiod's build cache
# warm, once per Istio version. Run it after hack/istiod.sh, not at the same time (shared module).
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

version=$(go list -m -f '{{.Version}}' istio.io/istio)
out="${SMI2ISTIO_CACHE}/istio/${version}/istioctl"
if [ ! -x "$out" ]; then
  work="${SMI2ISTIO_CACHE}/build/istiod-${version}"
  log "building istioctl from istio.io/istio@${version} (~1.5 min with istiod's build cache, once)"
  mkdir -p "$work" "$(dirname "$out")"
  if [ ! -f "$work/go.mod" ]; then
    # The module hack/istiod.sh makes: the Istio version and the replaces of our go.mod.
    {
      echo "module smi2istio.local/istiodbuild"
      echo
      echo "go 1.26"
      echo
      echo "require istio.io/istio ${version}"
      echo
      go mod edit -json | sed -n '/"Replace"/,$p' |
        awk '/"Old"/{old=1} /"New"/{old=0} /"Path"/{gsub(/[",]/,"",$2); if (old) o=$2; else p=$2} /"Version"/{gsub(/[",]/,"",$2); if (!old) print "replace " o " => " p " " $2}'
    } > "$work/go.mod"
  fi
  cat > "$work/tools_istioctl.go" <<'GO'
//go:build tools

package istiodbuild

import _ "istio.io/istio/istioctl/cmd/istioctl"
GO
  (cd "$work" && GOFLAGS=-mod=mod go mod tidy -e >/dev/null 2>&1 || true)
  (cd "$work" && GOFLAGS=-mod=mod go build -tags tools -trimpath -ldflags "-s -w" -o "$out.tmp" istio.io/istio/istioctl/cmd/istioctl)
  mv "$out.tmp" "$out"
fi
echo "$out"
