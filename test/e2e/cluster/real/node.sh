#!/usr/bin/env bash
# Real test nodes as namespaces on this machine. Each node has a network namespace of its own
# (a persistent namespace file, not /run/netns), joined to the cluster's switch (a bridge in
# another namespace) by a veth pair; the machine reaches the nodes through one more veth pair
# whose host end holds PREFIX.1. Nothing is written to the machine's /etc, /var/lib or /run.
#   node.sh net-up CLUSTER_DIR PREFIX HOST_IF       switch + host link (PREFIX.1/24 on HOST_IF)
#   node.sh create NODE_DIR NAME IP SWITCH_FILE IF  a node's network namespace and cgroup root
#   node.sh boot NODE_DIR                           start it (boot.sh as PID 1 of a new PID ns)
#   node.sh power-off NODE_DIR                      kill -9 everything of the node, as a power loss
#   node.sh power-cycle NODE_DIR                    power-off, then boot
#   node.sh destroy NODE_DIR                        power-off, remove its namespace and cgroups
#   node.sh lb-up CLUSTER_DIR LB_IP CONFIG          haproxy in the switch namespace on LB_IP (the
#                                                   cluster's controlPlaneEndpoint)
#   node.sh net-down CLUSTER_DIR HOST_IF            stop haproxy, remove the switch and the host link
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cmd=$1
shift

# A persistent namespace lives as a bind mount of /proc/PID/ns/net on a file.
new_netns() {
  local file=$1
  touch "$file"
  unshare --net="$file" true
}

drop_netns() {
  local file=$1
  [ -e "$file" ] || return 0
  umount "$file" 2>/dev/null || true
  rm -f "$file"
}

in_ns() {
  local file=$1
  shift
  nsenter --net="$file" "$@"
}

cgroup_dirs() {
  local root=$1
  for hierarchy in /sys/fs/cgroup/*/; do
    [ "$(stat -f -c %T "$hierarchy")" = cgroupfs ] || continue
    [ -f "$hierarchy/cgroup.procs" ] || continue
    # cgroup v1 only: the machine's empty cgroup2 mount is left alone.
    [ -f "$hierarchy/cgroup.controllers" ] && continue
    echo "${hierarchy%/}$root"
  done
}

# The same, plus the machine's cgroup2 mount, where runc (hybrid mode) makes a directory for each
# container too: only for removing the node's directories, nothing of the node is set there.
removable_cgroup_dirs() {
  local root=$1
  cgroup_dirs "$root"
  for hierarchy in /sys/fs/cgroup/*/; do
    if [ "$(stat -f -c %T "$hierarchy")" = cgroup2fs ]; then echo "${hierarchy%/}$root"; fi
  done
}

boot_pid() { cat "$1/boot.pid" 2>/dev/null || true; }

is_running() {
  local pid
  pid=$(boot_pid "$1")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

power_off() {
  local node_dir=$1 pid
  pid=$(boot_pid "$node_dir")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    # unshare --kill-child passes the SIGKILL on to the node's init; the kernel then kills
    # every process in the node's PID namespace (containers included).
    kill -9 "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  # Wait until no process is left in the node's cgroups (containers).
  # shellcheck source=/dev/null
  . "$node_dir/node.env"
  for _ in $(seq 1 100); do
    local left=0
    for dir in $(cgroup_dirs "$CGROUP_ROOT"); do
      [ -d "$dir" ] || continue
      if find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null | grep -q .; then left=1; fi
    done
    [ "$left" = 0 ] && break
    for dir in $(cgroup_dirs "$CGROUP_ROOT"); do
      [ -d "$dir" ] && find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    done
    sleep 0.1
  done
  # A machine that reboots starts with an empty cgroup tree. Left in place, the pods' cgroups of
  # the last boot make the kubelet's cAdvisor ask containerd about each dead container (3 s
  # apiece) before the kubelet starts any pod: a delay no real reboot has.
  for dir in $(removable_cgroup_dirs "$CGROUP_ROOT"); do
    [ -d "$dir" ] && find "$dir" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  rm -f "$node_dir/boot.pid"
}

case "$cmd" in
  net-up)
    cluster_dir=$1 prefix=$2 host_if=$3
    sw="$cluster_dir/switch.netns"
    new_netns "$sw"
    in_ns "$sw" ip link add br0 type bridge
    in_ns "$sw" ip link set br0 up
    in_ns "$sw" ip link set lo up
    ip link add "$host_if" type veth peer name "${host_if}p"
    ip link set "${host_if}p" netns "$sw"
    in_ns "$sw" ip link set "${host_if}p" master br0 up
    ip addr add "$prefix.1/24" dev "$host_if"
    ip link set "$host_if" up
    ;;
  lb-up)
    cluster_dir=$1 lb_ip=$2 config=$3
    sw="$cluster_dir/switch.netns"
    in_ns "$sw" ip addr add "$lb_ip/24" dev br0
    haproxy -c -q -f "$config"
    # In the foreground (-db) under setsid, so its pid is the one to kill and its log is a file.
    setsid nsenter --net="$sw" haproxy -db -f "$config" >>"$cluster_dir/haproxy.log" 2>&1 </dev/null &
    echo $! >"$cluster_dir/haproxy.pid"
    for _ in $(seq 1 50); do
      in_ns "$sw" bash -c "exec 3<>/dev/tcp/$lb_ip/6443" 2>/dev/null && exit 0
      sleep 0.1
    done
    echo "node.sh: haproxy did not listen on $lb_ip:6443; log: $cluster_dir/haproxy.log" >&2
    exit 1
    ;;
  net-down)
    cluster_dir=$1 host_if=$2
    if [ -f "$cluster_dir/haproxy.pid" ]; then
      kill -9 "$(cat "$cluster_dir/haproxy.pid")" 2>/dev/null || true
      rm -f "$cluster_dir/haproxy.pid"
    fi
    ip link del "$host_if" 2>/dev/null || true
    drop_netns "$cluster_dir/switch.netns"
    ;;
  create)
    node_dir=$1 name=$2 ip=$3 sw=$4 ifname=$5
    mkdir -p "$node_dir"
    new_netns "$node_dir/netns"
    ip link add "$ifname" type veth peer name eth0 netns "$node_dir/netns"
    ip link set "$ifname" netns "$sw"
    in_ns "$sw" ip link set "$ifname" master br0 up
    in_ns "$node_dir/netns" ip link set lo up
    in_ns "$node_dir/netns" ip addr add "$ip/24" dev eth0
    in_ns "$node_dir/netns" ip link set eth0 up
    # The kubelet needs a default route to find the node's IP. It leads nowhere: no gateway,
    # so nothing in the node can reach past the switch.
    in_ns "$node_dir/netns" ip route add default dev eth0
    # shellcheck source=/dev/null
    . "$node_dir/node.env"
    for dir in $(cgroup_dirs "$CGROUP_ROOT"); do
      mkdir -p "$dir"
      parent=$(dirname "$dir")
      if [ -f "$dir/cpuset.cpus" ]; then
        cat "$parent/cpuset.cpus" >"$dir/cpuset.cpus"
        cat "$parent/cpuset.mems" >"$dir/cpuset.mems"
      fi
    done
    ;;
  boot)
    node_dir=$1
    if is_running "$node_dir"; then echo "node.sh: $node_dir is already running" >&2; exit 1; fi
    mkdir -p "$node_dir/log"
    setsid nsenter --net="$node_dir/netns" \
      unshare --mount --uts --pid --fork --mount-proc --kill-child=SIGKILL \
      bash "$here/boot.sh" "$node_dir" >>"$node_dir/log/boot.log" 2>&1 </dev/null &
    echo $! >"$node_dir/boot.pid"
    ;;
  power-off)
    power_off "$1"
    ;;
  power-cycle)
    power_off "$1"
    bash "$0" boot "$1"
    ;;
  destroy)
    node_dir=$1
    [ -d "$node_dir" ] || exit 0
    power_off "$node_dir"
    drop_netns "$node_dir/netns"
    # shellcheck source=/dev/null
    . "$node_dir/node.env"
    for dir in $(removable_cgroup_dirs "$CGROUP_ROOT"); do
      [ -d "$dir" ] && find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
    ;;
  *)
    echo "node.sh: unknown command $cmd" >&2
    exit 1
    ;;
esac
