/**
 * The checkpointer: a static pod on every self-hosted control-plane node that needs no API to
 * start and no HTTP client in its image (the cluster's kube-proxy image: dash, cat, grep, ln,
 * rm, sleep, wc). It watches the node's listening sockets in /proc/net/tcp{,6} (hostNetwork:
 * the node's own) and nothing else:
 *
 * - no kube-apiserver listening for GRACE seconds (BOOT_GRACE on its first start since the node
 *   booted: /run is new each boot) → it gives each checkpoint a second name in the kubelet's
 *   manifest directory, with its own pod name (never the self-hosted pod's, never the original
 *   static manifest's), so the kubelet starts the last control plane that ran Ready here;
 * - a checkpoint copy running and a second listener on its port for APISERVER_SETTLE seconds
 *   (SETTLE for the scheduler and controller-manager) with none leaving meanwhile (the
 *   self-hosted pod, which the kubelet starts once the API is back, sharing the port with
 *   SO_REUSEPORT) → it removes the copy: the kubelet stops it while the other keeps serving;
 * - a version without port sharing (before 1.19): the copy serves for NO_SHARING_HOLD seconds,
 *   then steps aside and the self-hosted pod binds at its next restart (the plan says so).
 *
 * It never writes a checkpoint: only the CLI does, after the version passed its gates there.
 * A checkpoint that is missing, cut short, of another cluster or older than the floor (the
 * apiserver version the cluster's data was last written by) is never started; the reason is in
 * /tmp/problems, which the pod's readiness probe turns into NotReady for `status`.
 *
 * What a power loss can take (the image has no sync): the checkpoints, the floor and the
 * checkpointer's manifest are new data, each written to a new dot-file linked over its name
 * (put); ext4 (auto_da_alloc, on by default) writes a file's data out before a rename over an
 * existing file commits, a first write under a new name is not covered, and a checkpoint a crash
 * cut short lacks its end line and is never started. A copy the checkpointer starts is the
 * checkpoint file under a second name (link_as): no new data, so a crash right after it cannot
 * leave the kubelet an empty manifest. Nothing is written into an existing file: put and link_as
 * first remove a dot-file a killed task may have left as another name of one.
 */

import {FILE_FNS} from '../node/files.js'
import {LISTENERS_FN} from '../node/listeners.js'

/** Where the checkpoints live on the node (written only by kubectl-selfhost's node tasks). */
export const CHECKPOINT_DIR = '/etc/kubernetes/selfhost/checkpoint'
/** A tmpfs directory (new each boot) where the checkpointer marks that it started since boot. */
export const CHECKPOINT_RUN_DIR = '/run/kubectl-selfhost'
/** The checkpointer's own static manifest, in the kubelet's manifest directory. */
export const CHECKPOINTER_FILE = 'selfhost-checkpointer.yaml'
/** The last line of every checkpoint: a file without it was cut short and is never started. */
export const CHECKPOINT_END = '# kubectl-selfhost checkpoint end'
/** Where the checkpointer keeps what it would not start, read by its readiness probe. */
export const PROBLEMS_FILE = '/tmp/problems'

/**
 * The checkpointer's loop. Env: CLUSTER (the kube-system namespace uid), APISERVER_PORT (hex, as
 * /proc/net/tcp writes it), OTHERS ("component:hexport" for the scheduler and controller-manager,
 * hexport 0 when the checkpoint does not serve), SHARING (1 or 0), GRACE, BOOT_GRACE, SETTLE,
 * APISERVER_SETTLE, NO_SHARING_HOLD, LINGER (seconds); for tests also K8S_DIR, RUN_DIR, NET_FILES
 * and TICK.
 */
export const CHECKPOINTER_SCRIPT = `set -u
k=\${K8S_DIR:-/host/etc/kubernetes}
dir="$k/selfhost/checkpoint"
man="$k/manifests"
run=\${RUN_DIR:-${CHECKPOINT_RUN_DIR}}
${LISTENERS_FN}
say() { echo "checkpointer: $*"; }
${FILE_FNS}
active() { [ -f "$man/selfhost-checkpoint-$1.yaml" ]; }
# Why the checkpoint of $1 must not start, or nothing.
verdict() {
  f="$dir/$1.yaml"
  if [ ! -f "$f" ]; then echo "$1: no checkpoint on this node"; return; fi
  if ! grep -qx '${CHECKPOINT_END}' "$f"; then echo "$1: the checkpoint is cut short or unreadable"; return; fi
  if ! grep -qx "# cluster $CLUSTER" "$f"; then echo "$1: the checkpoint belongs to another cluster"; return; fi
  if [ "$1" = kube-apiserver ]; then
    v=$(grep -m1 '^# version ' "$f" || true); n=\${v##* }; floor=$(cat "$dir/floor" 2>/dev/null || echo 0)
    if ! [ "$n" -ge "$floor" ] 2>/dev/null; then echo "$1: the checkpoint (\${v#\\# version }) is older than the version the cluster's data was last written by; not started"; fi
  fi
}
check_all() {
  out=""
  for c in kube-apiserver $others_names; do w=$(verdict "$c"); [ -n "$w" ] && out="$out$w
"; done
  printf '%s' "$out" > "\${PROBLEMS:-${PROBLEMS_FILE}}"
  if [ "$out" != "$last_problems" ]; then printf '%s' "$out" | while read -r line; do say "problem: $line"; done; last_problems=$out; fi
}
start_copy() {
  if [ -n "$(verdict "$1")" ]; then return; fi
  link_as "$dir/$1.yaml" "$man/selfhost-checkpoint-$1.yaml" && say "started the checkpoint of $1 ($2)"
}
step_aside() { rm -f "$man/selfhost-checkpoint-$1.yaml"; say "removed the checkpoint of $1: $2"; }

others_names=""
for e in $OTHERS; do others_names="$others_names \${e%%:*}"; done
last_problems=""
grace=$GRACE
if [ ! -e "$run/booted" ]; then
  grace=$BOOT_GRACE
  : > "$run/booted"
  say "first start since the node booted: a checkpoint starts after \${BOOT_GRACE}s without a kube-apiserver on this node"
fi
say "watching: kube-apiserver on port 0x$APISERVER_PORT, port sharing $SHARING, grace \${GRACE}s, settle \${APISERVER_SETTLE}s (\${SETTLE}s for the others)"
down=0; shared=0; served=0; since_back=0; tick=0; last_a=0
while :; do
  if [ $((tick % 10)) -eq 0 ]; then check_all; fi
  a=$(listeners "$APISERVER_PORT")
  if active kube-apiserver; then
    since_back=0
    # A listener that goes (a new instance that crashed, an old pod deleted) starts the count again.
    if [ "$a" -ge 2 ] && [ "$a" -ge "$last_a" ]; then shared=$((shared + 1)); else shared=0; fi
    if [ "$a" -ge 1 ]; then served=$((served + 1)); fi
    if [ "$SHARING" = 1 ] && [ "$shared" -ge "$APISERVER_SETTLE" ]; then
      step_aside kube-apiserver "the self-hosted kube-apiserver has listened beside it for \${APISERVER_SETTLE}s"
    elif [ "$SHARING" = 0 ] && [ "$served" -ge "$NO_SHARING_HOLD" ]; then
      step_aside kube-apiserver "it served \${NO_SHARING_HOLD}s; without port sharing the self-hosted kube-apiserver binds at its next restart"
    fi
  else
    shared=0; served=0; since_back=$((since_back + 1))
    if [ "$a" -eq 0 ]; then down=$((down + 1)); else down=0; fi
    if [ "$down" -ge "$grace" ]; then
      check_all
      start_copy kube-apiserver "no kube-apiserver listened on this node for \${grace}s"
      for e in $OTHERS; do start_copy "\${e%%:*}" "with kube-apiserver"; done
      down=0; grace=$GRACE
    fi
  fi
  # The scheduler and controller-manager copies go once their self-hosted pod listens beside
  # them, or LINGER seconds after the apiserver's copy went (their pods may run on other nodes).
  i=0
  for e in $OTHERS; do
    i=$((i + 1)); c=\${e%%:*}; p=\${e#*:}
    if ! active "$c"; then eval "beside_$i=0"; continue; fi
    eval "n=\\\${beside_$i:-0} was=\\\${count_$i:-0}"
    l=0; if [ "$p" != 0 ]; then l=$(listeners "$p"); fi
    if [ "$l" -ge 2 ] && [ "$l" -ge "$was" ]; then n=$((n + 1)); else n=0; fi
    eval "beside_$i=$n count_$i=$l"
    if [ "$n" -ge "$SETTLE" ]; then step_aside "$c" "its self-hosted pod has listened beside it for \${SETTLE}s"
    elif ! active kube-apiserver && [ "$since_back" -ge "$LINGER" ]; then step_aside "$c" "kube-apiserver's checkpoint stepped aside \${LINGER}s ago"; fi
  done
  last_a=$a
  tick=$((tick + 1))
  sleep "\${TICK:-1}" &
  wait $! || true
done
`

/**
 * Node task: writes this node's checkpoints atomically (a dot-file, then ln -f: a full disk
 * fails the write and leaves the last good checkpoint), drops those of components that no
 * longer run here, records the floor, then (re)writes the checkpointer's manifest. Env:
 * COMPONENTS (names, in the order of CHECKPOINT_1, CHECKPOINT_2, …), FLOOR, CHECKPOINTER.
 */
export const WRITE_CHECKPOINTS_SCRIPT = `set -eu
dir="$HOST_ROOT${CHECKPOINT_DIR}"
man="$HOST_ROOT/etc/kubernetes/manifests"
${FILE_FNS}
i=0
for c in $COMPONENTS; do
  i=$((i + 1))
  eval "content=\\$CHECKPOINT_$i"
  printf '%s' "$content" | put "$dir/$c.yaml"
  grep -qx '${CHECKPOINT_END}' "$dir/$c.yaml" || { echo "the checkpoint of $c did not reach the disk whole"; exit 1; }
  echo "checkpoint of $c written"
done
for c in kube-apiserver kube-controller-manager kube-scheduler; do
  case " $COMPONENTS " in *" $c "*) ;; *) if [ -f "$dir/$c.yaml" ]; then rm -f "$dir/$c.yaml"; echo "checkpoint of $c removed: it no longer runs here"; fi ;; esac
done
printf '%s' "$FLOOR" | put "$dir/floor"
printf '%s' "$CHECKPOINTER" | put "$man/${CHECKPOINTER_FILE}"
echo "checkpointer manifest written"
`

/**
 * Node task for revert: the checkpointer's manifest first (so it cannot start a copy while the
 * static pods come back), then any copy it started, then the checkpoints. Safe to run twice.
 */
export const REMOVE_CHECKPOINTS_SCRIPT = `set -eu
k="$HOST_ROOT/etc/kubernetes"
if [ -f "$k/manifests/${CHECKPOINTER_FILE}" ]; then rm -f "$k/manifests/${CHECKPOINTER_FILE}"; echo "checkpointer manifest removed"; fi
for f in "$k"/manifests/selfhost-checkpoint-*.yaml; do
  if [ -f "$f" ]; then rm -f "$f"; echo "removed \${f#$HOST_ROOT}"; fi
done
if [ -d "$HOST_ROOT${CHECKPOINT_DIR}" ]; then rm -rf "$HOST_ROOT${CHECKPOINT_DIR}"; echo "checkpoints removed"; fi
rm -rf "$HOST_ROOT${CHECKPOINT_RUN_DIR}"
`
