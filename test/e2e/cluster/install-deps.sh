#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine: system packages, then the real
# control-plane binaries built from Go modules (cached; see build.sh).
set -euo pipefail
need=()
for pkg_cmd in iptables:iptables-save nftables:nft ipvsadm:ipvsadm iproute2:ip openssl:openssl; do
  command -v "${pkg_cmd#*:}" >/dev/null 2>&1 || need+=("${pkg_cmd%%:*}")
done
if [ "${#need[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
bash "$(dirname "$0")/build.sh" >/dev/null
