import {PIVOTED_COMPONENTS, PivotedComponent} from '../controlplane/model.js'
import {CliError} from '../errors.js'
import {FILE_FNS} from '../node/files.js'
import {LISTENERS_FN} from '../node/listeners.js'

/**
 * The shell run on control-plane nodes (through src/node's task pods, HOST_ROOT = the node's
 * "/"). They use only what the cluster's own kube-proxy image has, so they work air-gapped on
 * every kubeadm node: dash's builtins and cat, grep, ln, rm, sleep, wc (the distroless-iptables
 * image has no mkdir, mv, cp, sync, base64, date, curl or wget). Directories are made by the
 * kubelet (hostPath DirectoryOrCreate volumes of the task pod, see NODE_DIRS); a rename is
 * `ln -f` (link to a temporary name, then rename(2)). Every script is safe to run twice.
 *
 * What a power loss can take, with no sync in the image:
 * - Moves that carry no new data: the backup is a second name of the original manifest; a
 *   hand-off holds the manifest's file under another name and put_back gives that same file its
 *   name again; restoring the original gives the manifest's name to the backup file (link_as).
 *   Only names change, never bytes (the original's were on disk before pivot began): a crash
 *   can at most undo a recent link or rename.
 * - Writes of new data: PREPARE's NEW_CONTENT and RESTORE's CONTENT (the --permit-port-sharing
 *   variant), the hand-off's confirmation and its watchdog record, through put: a new dot-file
 *   linked over the name, so the kubelet never reads half a file. Unflushed, the new bytes rely
 *   on the filesystem: ext4 (auto_da_alloc, on by default) writes a file's data out before a
 *   rename over an existing file commits; a file given a name that did not exist (CONTENT where
 *   a hand-off had removed the manifest) is not covered, and until the kernel writes it back on
 *   its own a crash can leave it empty, as on filesystems without that rule. The REVERTED
 *   marker is new data too; only its existence counts.
 * - Nothing is ever written into an existing file, so a backup keeps its bytes while the restored
 *   manifest shares its file: every write makes a new file, and put and link_as first remove a
 *   dot-file a killed task may have left as another name of a manifest or a backup. A tool that
 *   rewrites a restored manifest in place (instead of a new file renamed over it) changes the
 *   backup's bytes too.
 */

const COMPONENT_LIST = PIVOTED_COMPONENTS.join(' ')
/** Where pivot keeps what it owns on a node; originals and working files apart. */
export const SELFHOST_DIR = '/etc/kubernetes/selfhost'
/** The original manifests, one directory per pivot: nothing else is ever written there. */
export const BACKUP_DIR = `${SELFHOST_DIR}/backup`
/** The hand-off's working files: the manifest held while a watchdog waits, its confirmation, and which pod the watchdog is. */
export const HANDOFF_DIR = `${SELFHOST_DIR}/handoff`
/** The file that marks a backup directory as put back by `revert` (kept on disk, no longer active). */
export const REVERTED_MARKER = 'REVERTED'
/** Exit code of the hand-off script when it put the static manifest back. */
export const HANDOFF_RESTORED_EXIT = 3
/** Exit code of the hand-off script when it was stopped (pod deleted) and put the manifest back. */
export const HANDOFF_INTERRUPTED_EXIT = 4

/** The directories a task needs on the node (created by the kubelet before the task starts). */
export function nodeDirs(stamp?: string): string[] {
  return [HANDOFF_DIR, ...(stamp ? [`${BACKUP_DIR}/${stamp}`] : [])]
}

const PATHS = `k="$HOST_ROOT/etc/kubernetes"
m="$k/manifests/$COMPONENT.yaml"
d="$HOST_ROOT${BACKUP_DIR}/\${STAMP:-none}"
b="$d/$COMPONENT.yaml"
w="$HOST_ROOT${HANDOFF_DIR}"
held="$w/$COMPONENT.yaml"
${FILE_FNS}`

/** Prints every pivoted manifest, every backup, every held hand-off and its watchdog's pod, each framed by its byte count. */
export const READ_STATE_SCRIPT = `set -eu
for tool in cat wc ln rm sleep; do command -v "$tool" >/dev/null 2>&1 || { echo "the node-task image has no $tool"; exit 1; }; done
k="$HOST_ROOT/etc/kubernetes"
emit() { printf 'begin %s %s\\n' "$1" "$(wc -c < "$2")"; cat "$2"; printf '\\nend\\n'; }
for c in ${COMPONENT_LIST}; do
  if [ -f "$k/manifests/$c.yaml" ]; then emit "manifest $c" "$k/manifests/$c.yaml"; fi
  if [ -f "$HOST_ROOT${HANDOFF_DIR}/$c.yaml" ]; then emit "held $c" "$HOST_ROOT${HANDOFF_DIR}/$c.yaml"; fi
  if [ -f "$HOST_ROOT${HANDOFF_DIR}/$c.watchdog" ]; then emit "watchdog $c" "$HOST_ROOT${HANDOFF_DIR}/$c.watchdog"; fi
done
for dir in "$HOST_ROOT${BACKUP_DIR}"/*/; do
  if [ ! -d "$dir" ]; then continue; fi
  stamp=\${dir%/}; stamp=\${stamp##*/}
  if [ -f "\${dir}${REVERTED_MARKER}" ]; then printf 'backup-dir %s reverted\n' "$stamp"; else printf 'backup-dir %s\n' "$stamp"; fi
  for c in ${COMPONENT_LIST}; do
    if [ -f "$dir$c.yaml" ]; then emit "backup $stamp $c" "$dir$c.yaml"; fi
  done
done
echo end-of-state
`

/**
 * Gives the live manifest a second name in the backup (never over an existing backup: that is
 * the original), then, when NEW_CONTENT is set, replaces the live manifest with it atomically.
 */
export const PREPARE_SCRIPT = `set -eu
${PATHS}
if [ ! -f "$b" ]; then
  [ -f "$m" ] || { echo "no $COMPONENT manifest and no backup of it in $d"; exit 2; }
  ln "$m" "$b"
  echo "backed up $m to $b"
fi
if [ -n "\${NEW_CONTENT+set}" ]; then
  printf '%s' "$NEW_CONTENT" | put "$m"
  echo "rewrote $m"
fi
`

/**
 * The node-side half of a hand-off, a dead man's switch that needs no API and no HTTP client:
 * it takes the live manifest out of the kubelet's sight (held in HANDOFF_DIR; the kubelet
 * stops the static pod) and waits up to DEADLINE seconds for the CLI to confirm, by a second
 * task on this node, that the self-hosted instance serves on its own. Unconfirmed (the new
 * instance never served, or the CLI is gone), it puts the manifest back. Stopped early (the
 * CLI's Ctrl-C deletes the pod: SIGTERM first), it puts the manifest back too. With PORT (hex)
 * and SETTLE set (port sharing), it first waits, within the same DEADLINE, until a second process
 * has listened on that port for SETTLE seconds; it never moves the manifest otherwise.
 * While it runs, HANDOFF_DIR/<component>.watchdog names its pod (NODE_TASK_POD, "namespace/name"),
 * so a later run finds it whatever namespace it was started in.
 */
export const HANDOFF_SCRIPT = `set -eu
${PATHS}
${LISTENERS_FN}
ok="$w/$COMPONENT.confirmed"
rec="$w/$COMPONENT.watchdog"
rm -f "$ok"
# The held file gets its name back: no new data, nothing a crash could leave half written.
put_back() { ln -f "$held" "$m"; rm -f "$held"; echo "$1: put $m back"; }
# The record goes last, whatever the way out, and only while it still names this pod.
forget() { if [ "$(cat "$rec" 2>/dev/null)" = "\${NODE_TASK_POD:-}" ]; then rm -f "$rec"; fi; }
trap forget EXIT
# The trap comes first: as a container's PID 1 this shell ignores a TERM it has no trap for, so
# a deletion during the move would otherwise be lost.
trap 'if [ -f "$held" ] && [ ! -f "$m" ]; then put_back "interrupted before the hand-off was confirmed"; fi; exit ${HANDOFF_INTERRUPTED_EXIT}' TERM INT HUP
# Who watches, before anything moves: a later run with another --namespace lists pods only in that one.
if [ -n "\${NODE_TASK_POD:-}" ]; then printf '%s' "$NODE_TASK_POD" | put "$rec"; fi
# Five checks a second (no date command: time is counted in ticks), one count for the whole deadline.
tick=0
nap() { sleep 0.2 & wait $! || true; tick=$((tick + 1)); }
# Port sharing: the new instance's pod can be Ready while only the static one listens (its probes
# reach whichever process the kernel picks), so the static one goes only once a second process
# has listened on the port for SETTLE seconds.
if [ -n "\${PORT:-}" ] && [ -f "$m" ]; then
  echo "waiting for a second process to listen on port $((0x$PORT)) beside the static $COMPONENT for \${SETTLE}s"
  beside=0
  while [ "$beside" -le $((SETTLE * 5)) ]; do
    if [ "$tick" -ge $((DEADLINE * 5)) ]; then
      echo "no second process listened on port $((0x$PORT)) beside the static $COMPONENT for \${SETTLE}s within \${DEADLINE}s: the static manifest stays"
      exit ${HANDOFF_RESTORED_EXIT}
    fi
    if [ "$(listeners "$PORT")" -ge 2 ]; then beside=$((beside + 1)); else beside=0; fi
    nap
  done
  echo "a second process listened on port $((0x$PORT)) beside the static $COMPONENT for \${SETTLE}s"
fi
if [ -f "$m" ]; then
  ln -f "$m" "$held"
  rm -f "$m"
  echo "moved $m out of the kubelet's sight, waiting up to \${DEADLINE}s for confirmation"
elif [ -f "$held" ]; then
  echo "$m already held by an earlier hand-off, waiting up to \${DEADLINE}s for confirmation"
else
  echo "no $m and nothing held: nothing to hand off"
  exit 2
fi
while [ "$tick" -lt $((DEADLINE * 5)) ]; do
  if [ -f "$ok" ] && [ "$(cat "$ok")" = "$TOKEN" ]; then
    trap - TERM INT HUP
    rm -f "$held" "$ok"
    echo "hand-off confirmed after about $((tick / 5))s"
    exit 0
  fi
  nap
done
trap - TERM INT HUP
put_back "not confirmed within \${DEADLINE}s"
exit ${HANDOFF_RESTORED_EXIT}
`

/** Tells a waiting hand-off (HANDOFF_SCRIPT with the same TOKEN) that the new instance serves. */
export const CONFIRM_SCRIPT = `set -eu
${PATHS}
printf '%s' "$TOKEN" | put "$w/$COMPONENT.confirmed"
echo "confirmed the $COMPONENT hand-off"
`

/**
 * Puts a manifest back: the backup file itself under the manifest's name (the original bytes,
 * on disk since before the pivot), or CONTENT when set (a port-sharing step on the way).
 */
export const RESTORE_SCRIPT = `set -eu
${PATHS}
[ -f "$b" ] || { echo "no backup of $COMPONENT in $d"; exit 2; }
if [ -n "\${CONTENT+set}" ]; then printf '%s' "$CONTENT" | put "$m"; else link_as "$b" "$m"; fi
rm -f "$held"
echo "restored $m"
`

/** Retires a backup directory after revert: kept on disk, no longer the active one. */
export const RETIRE_BACKUP_SCRIPT = `set -eu
d="$HOST_ROOT${BACKUP_DIR}/$STAMP"
if [ -d "$d" ]; then echo "put back by kubectl selfhost revert" > "$d/${REVERTED_MARKER}"; echo "kept $d, marked ${REVERTED_MARKER}"; fi
`

export interface NodeBackup {
  stamp: string
  /** Retired by a completed revert. */
  reverted: boolean
  files: Partial<Record<PivotedComponent, string>>
}

export interface NodeFiles {
  node: string
  manifests: Partial<Record<PivotedComponent, string>>
  /** Manifests a hand-off holds out of the kubelet's sight while its watchdog waits (or after it died). */
  held: Partial<Record<PivotedComponent, string>>
  /** The pod ("namespace/name") of each hand-off watchdog that started here and has not ended (or was killed outright). */
  watchdogs: Partial<Record<PivotedComponent, string>>
  backups: NodeBackup[]
}

/** Parses READ_STATE_SCRIPT's output; an output cut short or garbled is refused rather than half-read. */
export function parseNodeState(node: string, output: string): NodeFiles {
  const files: NodeFiles = {node, manifests: {}, held: {}, watchdogs: {}, backups: []}
  const incomplete = (why: string) =>
    new CliError(`reading the manifests on ${node} gave an incomplete answer (${why}): ${output.trim().split('\n').pop() ?? ''}`)
  const bytes = Buffer.from(output, 'utf8')
  const isComponent = (c: string | undefined): c is PivotedComponent => (PIVOTED_COMPONENTS as readonly string[]).includes(c ?? '')
  let at = 0
  let ended = false
  while (at < bytes.length) {
    let eol = bytes.indexOf(10, at)
    if (eol < 0) eol = bytes.length
    const line = bytes.subarray(at, eol).toString('utf8').trim()
    at = eol + 1
    const [kind, ...rest] = line.split(' ')
    if (kind === 'end-of-state') {
      ended = true
      break
    }

    if (kind === 'backup-dir' && rest[0]) files.backups.push({stamp: rest[0], reverted: rest[1] === 'reverted', files: {}})
    if (kind !== 'begin') continue
    const size = Number(rest.at(-1))
    if (!Number.isInteger(size) || size < 0 || at + size > bytes.length) throw incomplete(`bad size in "${line}"`)
    const content = bytes.subarray(at, at + size).toString('utf8')
    at += size
    if (bytes.subarray(at, at + 5).toString('utf8') !== '\nend\n') throw incomplete(`no end after ${line}`)
    at += 5
    const [what, a, b] = rest
    if (what === 'manifest' && isComponent(a)) files.manifests[a] = content
    if (what === 'held' && isComponent(a)) files.held[a] = content
    // A record a crash cut short names no pod: nothing to stop.
    if (what === 'watchdog' && isComponent(a) && /^[a-z0-9-]+\/[a-z0-9.-]+$/.test(content)) files.watchdogs[a] = content
    if (what === 'backup' && isComponent(b)) {
      const backup = files.backups.find((x) => x.stamp === a)
      if (backup) backup.files[b] = content
    }
  }

  if (!ended) throw incomplete('no end-of-state line')
  return files
}

/** The backup directory a pivot in progress (or a completed one) writes to: the newest one not yet reverted. */
export function activeBackup(files: NodeFiles): NodeBackup | undefined {
  return files.backups.filter((b) => !b.reverted && Object.keys(b.files).length > 0).sort((a, b) => b.stamp.localeCompare(a.stamp))[0]
}

/** A sortable UTC stamp for a backup directory name: 20261123T184501Z. */
export function backupStamp(now: Date): string {
  return now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z')
}
