#!/usr/bin/env bash
# A real node's "boot": runs as PID 1 of the node's own PID namespace, in a fresh mount and UTS
# namespace, inside the node's network namespace (node.sh boot starts it so). Everything the
# node writes lands on its "disk" (NODE_DIR/disk, NODE_DIR/data); /run is a new tmpfs every
# boot, as after a power cycle. Then it does what systemd does on a kubeadm node: start
# containerd, wait until it answers, and keep the kubelet running once kubeadm configured it.
# Killing this process kills every process of the node at once (the kernel empties a PID
# namespace whose init dies): that is a power loss.
set -euo pipefail
node_dir=$1
# shellcheck source=/dev/null
. "$node_dir/node.env" # NODE_NAME BIN_DIR CGROUP_ROOT
log="$node_dir/log"
mkdir -p "$log"
hostname "$NODE_NAME"
# Every PID namespace the node ever booted in, so a teardown check can look for what outlived it,
# with this init's start time (clock ticks since the machine booted, field 22 of stat): the kernel
# hands a dead namespace's number to the next new one, and the pair tells them apart.
read -r -a stat </proc/$$/stat
echo "$(readlink /proc/self/ns/pid) ${stat[21]}" >>"$node_dir/pid-namespaces"

# The node's disk: its own /etc, /var/lib, /var/log and /usr/libexec over the machine's
# (overlays: the machine's files show through, the node's writes stay in NODE_DIR/disk).
for d in etc var/lib var/log usr/libexec; do
  mkdir -p "$node_dir/disk/$d" "$node_dir/disk/.work/$d"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$node_dir/disk/$d,workdir=$node_dir/disk/.work/$d" "/$d"
done
# containerd's overlayfs snapshots cannot live on an overlay; etcd and the kubelet get plain
# directories too.
for d in var/lib/containerd var/lib/kubelet var/lib/etcd; do
  mkdir -p "$node_dir/data/$d" "/$d"
  mount --bind "$node_dir/data/$d" "/$d"
done
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/lock
# Inside this mount namespace only (it was created private): volumes with mount propagation.
mount --make-rshared /

# Pods are routed through the node, as on any Kubernetes node (kubeadm's preflight checks it).
echo 1 >/proc/sys/net/ipv4/ip_forward
# A boot starts with no packet filter rules.
for ipt in iptables-nft iptables-legacy ip6tables-nft ip6tables-legacy; do
  for table in filter nat mangle raw; do
    "$ipt" -t "$table" -F 2>/dev/null || true
    "$ipt" -t "$table" -X 2>/dev/null || true
  done
done
nft flush ruleset 2>/dev/null || true

containerd --config "$node_dir/containerd.toml" >>"$log/containerd.log" 2>&1 &
for _ in $(seq 1 100); do
  ctr --address /run/containerd/containerd.sock version >/dev/null 2>&1 && break
  sleep 0.2
done
echo "boot: containerd answers" >>"$log/boot.log"
touch /run/selfhost-node-booted

# kubeadm's systemd drop-in (10-kubeadm.conf), as a loop: start the kubelet once kubeadm has
# written its config and flags, and restart it whenever it exits.
while true; do
  if [ -f /var/lib/kubelet/config.yaml ] && [ -f /var/lib/kubelet/kubeadm-flags.env ]; then
    KUBELET_KUBEADM_ARGS=""
    # shellcheck source=/dev/null
    . /var/lib/kubelet/kubeadm-flags.env
    echo "boot: starting kubelet $(date -u +%FT%TZ)" >>"$log/boot.log"
    # shellcheck disable=SC2086
    "$BIN_DIR/kubelet" --bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf \
      --kubeconfig=/etc/kubernetes/kubelet.conf --config=/var/lib/kubelet/config.yaml \
      $KUBELET_KUBEADM_ARGS >>"$log/kubelet.log" 2>&1 || true
  fi
  sleep 1
done
