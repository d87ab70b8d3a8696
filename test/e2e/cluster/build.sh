#!/usr/bin/env bash
# Builds the real control-plane binaries the e2e suite and `npm run sandbox` run, once per
# pinned version, into a cache outside the repository. A second run is a cache hit.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
# The CoreDNS kubeadm v1.37 deploys (kubeadm's constants.CoreDNSVersion); older kubeadm releases
# are told this tag too (real-cluster.ts), so one build serves every version.
COREDNS_VERSION="${COREDNS_VERSION:-v1.14.6}"
CACHE="${SELFHOST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-selfhost}"
BIN="$CACHE/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION"
K8S_COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl kubelet kubeadm)

have_all() {
  for c in "${K8S_COMMANDS[@]}" etcd kwok coredns; do [ -x "$BIN/$c" ] || return 1; done
}

if have_all; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null 2>&1 || { echo "build.sh: go is not installed; it is needed once, to build the test control plane" >&2; exit 1; }
mkdir -p "$BIN" "$CACHE/src"
# Several test runs may start at once: one builds, the others wait for it and reuse its work.
exec 9>"$CACHE/build.lock"
flock 9
if have_all; then
  echo "$BIN"
  exit 0
fi
export GOFLAGS="${GOFLAGS:--buildvcs=false} -mod=mod"
export CGO_ENABLED=0

# k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with local
# paths, which only works inside its own repository. A scratch module pins each staging
# module to its published v0.<minor>.<patch> instead.
k8s_mod="$CACHE/src/k8s-$K8S_VERSION"
if [ ! -f "$k8s_mod/go.sum" ]; then
  rm -rf "$k8s_mod" && mkdir -p "$k8s_mod"
  staging_version="v0.${K8S_VERSION#v1.}"
  upstream_mod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  go_directive=$(awk '/^go /{print $2; exit}' "$upstream_mod")
  {
    echo "module selfhost.local/k8s-build"
    echo
    echo "go $go_directive"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    # Every staging module appears in upstream's replace block as => ./staging/src/...
    grep -E '^\s*k8s.io/[a-z0-9-]+ => \./staging/src/' "$upstream_mod" |
      awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
  } > "$k8s_mod/go.mod"
  cat > "$k8s_mod/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubectl/pkg/cmd"
)
GO
  (cd "$k8s_mod" && go mod tidy >&2)
fi

ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
pkgs=()
for c in "${K8S_COMMANDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
# One invocation for all commands, so shared packages compile once.
k8s_built() { for c in "${K8S_COMMANDS[@]}"; do [ -x "$BIN/$c" ] || return 1; done; }
k8s_built || (cd "$k8s_mod" && go build -trimpath -ldflags "$ldflags" -o "$BIN/" "${pkgs[@]}" >&2)

etcd_mod="$CACHE/src/etcd-$ETCD_VERSION"
if [ ! -x "$BIN/etcd" ]; then
  rm -rf "$etcd_mod" && mkdir -p "$etcd_mod"
  (cd "$etcd_mod" && go mod init selfhost.local/etcd-build >/dev/null 2>&1 &&
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2 &&
    go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3 >&2)
fi

if [ ! -x "$BIN/kwok" ]; then
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >&2
fi

# CoreDNS as a library (its README's way to build a custom server): its coremain with the plugins
# of the Corefile kubeadm writes, plus log. The stock main links every plugin, the cloud DNS
# providers' SDKs included, which costs minutes of compiling for code no node here runs.
coredns_mod="$CACHE/src/coredns-$COREDNS_VERSION"
if [ ! -x "$BIN/coredns" ]; then
  rm -rf "$coredns_mod" && mkdir -p "$coredns_mod"
  cat > "$coredns_mod/main.go" <<'GO'
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func main() { coremain.Run() }
GO
  (cd "$coredns_mod" && go mod init selfhost.local/coredns-build >/dev/null 2>&1 &&
    go get "github.com/coredns/coredns@$COREDNS_VERSION" >&2 && go mod tidy >&2 &&
    go build -trimpath -ldflags "-s -w" -o "$BIN/coredns" . >&2)
fi

have_all
echo "$BIN"
