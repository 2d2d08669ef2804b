#!/usr/bin/env bash
# Provides kube-apiserver, kube-controller-manager and etcd for envtest in $KUBE_ASSETS
# (built from the k8s.io/kubernetes module; etcd from Debian), cached by version outside the clone.
# Prints the assets directory (use as KUBEBUILDER_ASSETS).
source "$(dirname "$0")/lib.sh"

mkdir -p "$KUBE_ASSETS"

build_kube() {
  local work="${SMI2ISTIO_CACHE}/build/kube-${KUBE_VERSION}"
  local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  local staging="v0.${KUBE_VERSION#v1.}"
  log "building kube-apiserver and kube-controller-manager ${KUBE_VERSION} (5-8 min on 2 cores, once)"
  mkdir -p "$work"
  local gomod
  gomod=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [ -f "$gomod" ] || { log "cannot find go.mod of k8s.io/kubernetes@${KUBE_VERSION}"; exit 1; }
  {
    echo "module smi2istio.local/kubebuild"
    echo
    echo "go 1.26"
    echo
    echo "require k8s.io/kubernetes ${KUBE_VERSION}"
    echo
    # Every staging module the kubernetes go.mod replaces with ./staging/src/k8s.io/<name>
    # must come from the proxy at the matching v0.X.Y instead.
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/k8s.io/.*#\1#p' "$gomod" | sort -u |
      while read -r m; do echo "replace $m => $m ${staging}"; done
  } > "$work/go.mod"
  cat > "$work/tools.go" <<'GO'
//go:build tools

package kubebuild

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
GO
  (cd "$work" && go mod tidy -e >/dev/null 2>&1 || true
   cd "$work" && GOFLAGS=-mod=mod go mod tidy)
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=${KUBE_VERSION} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor}"
  (cd "$work" && GOFLAGS=-mod=mod go build -tags tools -ldflags "$ldflags" -o "$KUBE_ASSETS/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
  mv "$KUBE_ASSETS/kube-apiserver.tmp" "$KUBE_ASSETS/kube-apiserver"
  (cd "$work" && GOFLAGS=-mod=mod go build -tags tools -ldflags "$ldflags" -o "$KUBE_ASSETS/kube-controller-manager.tmp" k8s.io/kubernetes/cmd/kube-controller-manager)
  mv "$KUBE_ASSETS/kube-controller-manager.tmp" "$KUBE_ASSETS/kube-controller-manager"
}

provide_etcd() {
  if ! command -v etcd >/dev/null 2>&1 && [ ! -x /usr/bin/etcd ]; then
    log "installing etcd from Debian (etcd-server)"
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq >/dev/null
    # The package tries to start a systemd unit; without systemd that fails harmlessly.
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq etcd-server >/dev/null 2>&1 || true
  fi
  local etcd_bin
  etcd_bin=$(command -v etcd || echo /usr/bin/etcd)
  [ -x "$etcd_bin" ] || { log "etcd is not available after apt-get install etcd-server"; exit 1; }
  cp "$etcd_bin" "$KUBE_ASSETS/etcd.tmp" && mv "$KUBE_ASSETS/etcd.tmp" "$KUBE_ASSETS/etcd"
}

[ -x "$KUBE_ASSETS/kube-apiserver" ] && [ -x "$KUBE_ASSETS/kube-controller-manager" ] || build_kube
[ -x "$KUBE_ASSETS/etcd" ] || provide_etcd
echo "$KUBE_ASSETS"
