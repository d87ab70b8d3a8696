#!/usr/bin/env bash
# Installs what the tests and the sandbox need on a fresh Debian machine: system packages,
# then the real control-plane binaries built from Go modules (cached; see build.sh).
#   iptables, conntrack  kube-proxy (iptables mode) in each worker's network namespace, trace
#   nftables, ipvsadm    trace's readers of the other kube-proxy modes
#   iproute2             network namespaces and veth pairs of worker nodes
#   socat                forwards the API server and kwok's kubelet port into those namespaces
#   util-linux           unshare: control-plane processes run under their node's hostname
#   openssl              the cluster's certificates and service-account key
#   curl                 the e2e suite reaches a ClusterIP from a worker's namespace
#   zsh                  the plugin suite runs the zsh completion script in a real zsh
set -euo pipefail
need=()
for pkg_cmd in iptables:iptables-save nftables:nft ipvsadm:ipvsadm iproute2:ip openssl:openssl socat:socat conntrack:conntrack util-linux:unshare curl:curl zsh:zsh; do
  command -v "${pkg_cmd#*:}" >/dev/null 2>&1 || need+=("${pkg_cmd%%:*}")
done
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps.sh: missing packages ${need[*]}; run as root (or install them) first" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # Another apt run (a second session on this machine) holds the lock for a while: wait for it.
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${need[@]}"
fi
started=$(date +%s)
bin_dir=$(bash "$(dirname "$0")/build.sh")
echo "install-deps.sh: control-plane binaries in $bin_dir ($(($(date +%s) - started))s)"
