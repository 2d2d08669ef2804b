#!/usr/bin/env bash
# Provides Istio's CRDs (manifests/charts/base/files/crd-all.gen.yaml) from the istio.io/istio
# version go.mod requires, cached outside the clone. Prints the file's path.
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

version=$(go list -m -f '{{.Version}}' istio.io/istio)
out="${SMI2ISTIO_CACHE}/istio/${version}/crd-all.gen.yaml"
if [ ! -s "$out" ]; then
  dir=$(go mod download -json "istio.io/istio@${version}" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -f "$dir/manifests/charts/base/files/crd-all.gen.yaml" ] || { log "no CRDs in istio.io/istio@${version}"; exit 1; }
  mkdir -p "$(dirname "$out")"
  cp "$dir/manifests/charts/base/files/crd-all.gen.yaml" "$out.tmp" && mv "$out.tmp" "$out"
fi
echo "$out"
