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
# Real nodes (test/e2e/cluster/real, `npm run sandbox -- --real`):
#   containerd, runc     each node's container runtime (Debian's containerd 1.6, runc 1.1)
#   containernetworking-plugins  the bridge, host-local and portmap CNI plugins in /usr/lib/cni
#   umoci                builds the node images (OCI layouts) from the built binaries
#   ipset, busybox-static, gcc, libc6-dev  tools copied into the images; the static pause binary
#   kmod                 modprobe and lsmod in the kube-proxy image, as in the real one (a fresh
#                        machine may lack it: images.sh then fails copying /bin/kmod)
#   haproxy              the load balancer in front of several control-plane nodes
# `install-deps.sh --check`: print the missing packages the sandbox needs (exit 1 if any), install
# and build nothing (the sandbox asks this before it builds anything).
set -euo pipefail
need=()
for pkg_cmd in iptables:iptables-save nftables:nft ipvsadm:ipvsadm iproute2:ip openssl:openssl socat:socat conntrack:conntrack util-linux:unshare curl:curl \
  containerd:containerd runc:runc umoci:umoci ipset:ipset busybox-static:busybox gcc:gcc haproxy:haproxy kmod:kmod; do
  command -v "${pkg_cmd#*:}" >/dev/null 2>&1 || need+=("${pkg_cmd%%:*}")
done
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || need+=(libc6-dev)
command -v go >/dev/null 2>&1 || need+=(golang-go)
if [ "${1:-}" = --check ]; then
  [ "${#need[@]}" -eq 0 ] && exit 0
  echo "${need[*]}"
  exit 1
fi
# Only the test suites need these: zsh (the completion script in a real zsh), and qemu with
# arm64 libraries (the linux/arm64 single executable).
command -v zsh >/dev/null 2>&1 || need+=(zsh)
command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
[ -d /usr/aarch64-linux-gnu/lib ] || need+=(libc6-arm64-cross libstdc++6-arm64-cross)
# Go comes with the machine (a newer one than Debian's): build.sh says so if it is missing.
packages=()
for p in "${need[@]}"; do [ "$p" = golang-go ] || packages+=("$p"); done
need=("${packages[@]}")
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
# The release the real-node suite starts from and upgrades away from (real-cluster.ts,
# PREVIOUS_REAL_VERSION): kubeadm, kubelet and control plane of the previous minor.
started=$(date +%s)
previous_dir=$(K8S_VERSION=v1.36.3 bash "$(dirname "$0")/build.sh")
echo "install-deps.sh: the previous release's binaries in $previous_dir ($(($(date +%s) - started))s)"
