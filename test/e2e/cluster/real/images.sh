#!/usr/bin/env bash
# Builds the container images a real kubeadm node needs, as OCI archives, from binaries built
# on this machine (build.sh) and Debian's packages, with Debian's umoci (no hand-written image
# writer). Usage: images.sh BIN_DIR OUT_DIR KIND=REF...
#   KIND: kube-apiserver kube-controller-manager kube-scheduler kube-proxy etcd pause coredns busybox
#         broken-kube-apiserver (an apiserver image whose binary exits 1: real/broken.c)
#         hanging-kube-apiserver (one whose binary runs and never listens: the pause program)
#   REF:  the name kubeadm expects, e.g. registry.k8s.io/kube-apiserver:v1.37.2
# Writes OUT_DIR/<KIND>.tar (an OCI layout, tag = REF's tag) and OUT_DIR/<KIND>.ref; an archive
# that exists for the same REF and recipe is kept (cache hit).
set -euo pipefail
bin=$1 out=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
recipe=$(cat "$0" "$here/pause.c" "$here/broken.c" | sha256sum | cut -c1-12)
mkdir -p "$out"
# Test files run side by side (npm test runs them in parallel): one builds an archive, the others
# wait for it and find it cached.
exec 9>"$out/.lock"
flock 9
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
PATH_ENV="PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"

# Copies host binaries with the shared libraries they load (ldd) into a root file system.
copy_with_libs() {
  local root=$1
  shift
  for f in "$@"; do
    mkdir -p "$root$(dirname "$f")"
    cp -L "$f" "$root$f"
    ldd "$f" 2>/dev/null | awk '/=>/ {print $3} $1 ~ /^\// {print $1}' | while read -r lib; do
      [ -n "$lib" ] && [ -e "$lib" ] || continue
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    done
  done
}

# What registry.k8s.io/build-image/distroless-iptables ships (kubernetes/release,
# images/build/distroless-iptables): iptables (legacy and nft), ip6tables, ipset, nft, kmod,
# dash as /bin/sh, cat, chmod, grep, ln, rm, sleep, wc, and nothing else: no base64, mv, date,
# curl or wget. Node tasks are proven against exactly this set.
populate_distroless_iptables() {
  local root=$1
  copy_with_libs "$root" /usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi /usr/sbin/nft /usr/sbin/ipset \
    /bin/kmod /bin/dash /bin/cat /bin/chmod /bin/grep /bin/ln /bin/rm /bin/sleep /usr/bin/wc
  mkdir -p "$root/usr/lib/x86_64-linux-gnu" "$root/etc" "$root/tmp" "$root/run" "$root/var/run"
  cp -a /usr/lib/x86_64-linux-gnu/xtables "$root/usr/lib/x86_64-linux-gnu/"
  # The match and target extensions load libraries of their own (libxt_statistic needs libm).
  for ext in /usr/lib/x86_64-linux-gnu/xtables/*.so; do
    ldd "$ext" 2>/dev/null | awk '/=>/ {print $3}' | while read -r lib; do
      [ -n "$lib" ] && [ -e "$lib" ] && [ ! -e "$root$lib" ] || continue
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    done
  done
  cp /etc/protocols /etc/services /etc/ethertypes "$root/etc/" 2>/dev/null || true
  ln -sf dash "$root/bin/sh"
  # The real image's iptables-wrapper picks a backend at first use; these nodes use nft.
  for t in iptables ip6tables; do
    for s in "" -save -restore; do
      ln -sf xtables-nft-multi "$root/usr/sbin/$t$s"
      ln -sf xtables-nft-multi "$root/usr/sbin/$t-nft$s"
      ln -sf xtables-legacy-multi "$root/usr/sbin/$t-legacy$s"
    done
  done
  for m in lsmod modprobe rmmod insmod modinfo depmod; do ln -sf /bin/kmod "$root/usr/sbin/$m"; done
}

build_one() {
  local kind=$1 ref=$2
  local tag=${ref##*:}
  local tar="$out/$kind.tar"
  if [ -f "$tar" ] && [ "$(cat "$out/$kind.ref" 2>/dev/null)" = "$ref $recipe" ]; then return 0; fi
  local layout="$work/$kind-layout" bundle="$work/$kind-bundle"
  umoci init --layout "$layout"
  umoci new --image "$layout:$tag"
  umoci unpack --image "$layout:$tag" "$bundle" >/dev/null
  local root="$bundle/rootfs"
  mkdir -p "$root/usr/local/bin" "$root/tmp"
  chmod 1777 "$root/tmp"
  local entry=()
  case "$kind" in
    kube-apiserver | kube-controller-manager | kube-scheduler | etcd)
      cp "$bin/$kind" "$root/usr/local/bin/$kind" ;;
    kube-proxy)
      populate_distroless_iptables "$root"
      cp "$bin/kube-proxy" "$root/usr/local/bin/kube-proxy" ;;
    hanging-kube-apiserver)
      gcc -static -O2 -s -o "$root/usr/local/bin/kube-apiserver" "$here/pause.c" ;;
    broken-kube-apiserver)
      gcc -static -O2 -s -o "$root/usr/local/bin/kube-apiserver" "$here/broken.c" ;;
    pause)
      gcc -static -O2 -s -o "$root/pause" "$here/pause.c"
      entry=(--config.entrypoint /pause) ;;
    coredns)
      cp "$bin/coredns" "$root/coredns"
      entry=(--config.entrypoint /coredns) ;;
    busybox)
      mkdir -p "$root/bin"
      cp /usr/bin/busybox "$root/bin/busybox"
      for a in $(/usr/bin/busybox --list); do [ -e "$root/bin/$a" ] || ln -s busybox "$root/bin/$a"; done
      entry=(--config.cmd sh) ;;
    *) echo "images.sh: unknown image kind $kind" >&2; exit 1 ;;
  esac
  umoci repack --image "$layout:$tag" "$bundle"
  umoci config --image "$layout:$tag" --config.env "$PATH_ENV" "${entry[@]}"
  umoci gc --layout "$layout"
  tar -C "$layout" -cf "$tar.partial" .
  mv "$tar.partial" "$tar"
  echo "$ref $recipe" > "$out/$kind.ref"
}

for pair in "$@"; do build_one "${pair%%=*}" "${pair#*=}"; done
