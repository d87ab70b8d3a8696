import {PIVOTED_COMPONENTS, PivotedComponent} from '../controlplane/model.js'
import {CliError} from '../errors.js'

/**
 * The shell run on control-plane nodes (through src/node's task pods, HOST_ROOT = the node's
 * "/"). POSIX sh plus base64/cp/mv/date, and curl or wget for the apiserver watchdog: what a
 * busybox or alpine image has. Every script is safe to run twice.
 */

const COMPONENT_LIST = PIVOTED_COMPONENTS.join(' ')
/** Suffix that retires a backup directory once `revert` has put its files back. */
export const REVERTED_SUFFIX = '-reverted'
/** Exit code of the hand-off script when it put the static manifest back. */
export const HANDOFF_RESTORED_EXIT = 3
/** Exit code of the hand-off script when it was stopped (pod deleted) and put the manifest back. */
export const HANDOFF_INTERRUPTED_EXIT = 4

const PATHS = `root="$HOST_ROOT/etc/kubernetes"
m="$root/manifests/$COMPONENT.yaml"
d="$root/selfhost-backup/$STAMP"
b="$d/$COMPONENT.yaml"`

/** One answer of 2xx from HEALTH_URL (TLS not verified: the watchdog only asks "do you serve?"). */
const HEALTH_FUNCTION = `healthy() {
  if command -v curl >/dev/null 2>&1; then curl -fsk -m 5 -o /dev/null "$HEALTH_URL"
  else wget -q -T 5 -O /dev/null --no-check-certificate "$HEALTH_URL"; fi
}`

/**
 * Run before any change: the watchdog's own check must succeed against the static apiserver
 * that serves now, or a good hand-off would be undone (no curl/wget, no TLS, a wrong URL,
 * anonymous /readyz refused).
 */
export const WATCHDOG_CHECK_SCRIPT = `${HEALTH_FUNCTION}
if healthy; then echo "watchdog check ok: $HEALTH_URL"; else echo "cannot get a 2xx from $HEALTH_URL with curl or wget"; exit 1; fi
`

/** Prints every pivoted manifest and every backup on the node, base64-encoded, one per line. */
export const READ_STATE_SCRIPT = `set -eu
root="$HOST_ROOT/etc/kubernetes"
for c in ${COMPONENT_LIST}; do
  if [ -f "$root/manifests/$c.yaml" ]; then printf 'manifest %s %s\\n' "$c" "$(base64 < "$root/manifests/$c.yaml" | tr -d '\\n')"; fi
done
for dir in "$root"/selfhost-backup/*/; do
  [ -d "$dir" ] || continue
  stamp=$(basename "$dir")
  printf 'backup-dir %s\\n' "$stamp"
  for c in ${COMPONENT_LIST}; do
    if [ -f "$dir$c.yaml" ]; then printf 'backup %s %s %s\\n' "$stamp" "$c" "$(base64 < "$dir$c.yaml" | tr -d '\\n')"; fi
  done
done
echo end-of-state
`

/**
 * Copies the live manifest into the backup (never over an existing backup: that holds the
 * original), then, when NEW_B64 is set, replaces the live manifest with it atomically.
 */
export const PREPARE_SCRIPT = `set -eu
${PATHS}
mkdir -p "$d"
if [ ! -f "$b" ]; then
  [ -f "$m" ] || { echo "no $COMPONENT manifest and no backup of it in $d"; exit 2; }
  cp -p "$m" "$d/.$COMPONENT.partial"
  mv "$d/.$COMPONENT.partial" "$b"
  echo "backed up $m to $b"
fi
if [ -n "\${NEW_B64:-}" ]; then
  printf '%s' "$NEW_B64" | base64 -d > "$d/.$COMPONENT.new"
  mv "$d/.$COMPONENT.new" "$m"
  echo "rewrote $m"
fi
`

/**
 * Moves the live manifest out of the kubelet's sight (the kubelet then stops the static pod).
 * With HEALTH_URL set (the apiserver), it stays on the node as a watchdog that needs no API:
 * after STOP_SECONDS (time for the static instance to stop) the local apiserver must answer
 * HEALTH_URL SETTLE times in a row before DEADLINE seconds, or the manifest goes back. Stopped
 * early (the CLI's Ctrl-C deletes the pod: SIGTERM first), it also puts the manifest back.
 */
export const HANDOFF_SCRIPT = `set -eu
${PATHS}
[ -f "$b" ] || { echo "no backup of $COMPONENT in $d: refusing to move the manifest"; exit 2; }
if [ ! -f "$m" ]; then echo "$m already moved"; exit 0; fi
held="$d/$COMPONENT.handoff.yaml"
[ -n "\${HEALTH_URL:-}" ] || { mv "$m" "$held"; echo "moved $m to $held"; exit 0; }
# Stopped before the new apiserver proved itself (Ctrl-C deletes this pod): put the static one back.
trap 'mv "$held" "$m"; echo "interrupted before the local apiserver was confirmed healthy: put $m back"; exit ${HANDOFF_INTERRUPTED_EXIT}' TERM INT HUP
mv "$m" "$held"
echo "moved $m to $held"
${HEALTH_FUNCTION}
start=$(date +%s)
ok=0
while [ $(( $(date +%s) - start )) -lt "$DEADLINE" ]; do
  answered=1
  if [ $(( $(date +%s) - start )) -ge "$STOP_SECONDS" ]; then
    # Checks and sleeps run in the background so a TERM is handled at once.
    healthy >/dev/null 2>&1 &
    wait $! && answered=0
  fi
  if [ "$answered" -eq 0 ]; then
    ok=$((ok + 1))
    if [ "$ok" -ge "$SETTLE" ]; then trap - TERM INT HUP; echo "local apiserver healthy at $HEALTH_URL"; exit 0; fi
  else
    ok=0
  fi
  sleep 1 &
  wait $! || true
done
trap - TERM INT HUP
mv "$held" "$m"
echo "local apiserver not healthy within \${DEADLINE}s: put $m back"
exit ${HANDOFF_RESTORED_EXIT}
`

/** Puts a manifest back: the backup's bytes, or CONTENT_B64 when set (a port-sharing step on the way). */
export const RESTORE_SCRIPT = `set -eu
${PATHS}
[ -f "$b" ] || { echo "no backup of $COMPONENT in $d"; exit 2; }
mkdir -p "$root/manifests"
if [ -n "\${CONTENT_B64:-}" ]; then printf '%s' "$CONTENT_B64" | base64 -d > "$d/.$COMPONENT.restore"
else cp -p "$b" "$d/.$COMPONENT.restore"; fi
mv "$d/.$COMPONENT.restore" "$m"
echo "restored $m"
`

/** Retires a backup directory after revert: kept on disk, no longer the active one. */
export const RETIRE_BACKUP_SCRIPT = `set -eu
d="$HOST_ROOT/etc/kubernetes/selfhost-backup/$STAMP"
if [ -d "$d" ]; then mv "$d" "$d${REVERTED_SUFFIX}"; echo "kept $d as $d${REVERTED_SUFFIX}"; fi
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
  backups: NodeBackup[]
}

const decode = (b64: string | undefined) => Buffer.from(b64 ?? '', 'base64').toString('utf8')

/** Parses READ_STATE_SCRIPT's output; an output cut short is refused rather than half-read. */
export function parseNodeState(node: string, output: string): NodeFiles {
  const files: NodeFiles = {node, manifests: {}, backups: []}
  const lines = output.split('\n').map((l) => l.trim())
  if (!lines.includes('end-of-state')) throw new CliError(`reading the manifests on ${node} gave an incomplete answer: ${output.trim().split('\n').pop() ?? ''}`)
  const isComponent = (c: string): c is PivotedComponent => (PIVOTED_COMPONENTS as readonly string[]).includes(c)
  for (const line of lines) {
    const [kind, ...rest] = line.split(' ')
    if (kind === 'manifest' && isComponent(rest[0])) files.manifests[rest[0]] = decode(rest[1])
    if (kind === 'backup-dir') files.backups.push({stamp: rest[0], reverted: rest[0].endsWith(REVERTED_SUFFIX), files: {}})
    if (kind === 'backup' && isComponent(rest[1])) {
      const backup = files.backups.find((b) => b.stamp === rest[0])
      if (backup) backup.files[rest[1]] = decode(rest[2])
    }
  }

  return files
}

/** The backup directory a pivot in progress (or a completed one) writes to: the newest one not yet reverted. */
export function activeBackup(files: NodeFiles): NodeBackup | undefined {
  return files.backups.filter((b) => !b.reverted && Object.keys(b.files).length > 0).sort((a, b) => b.stamp.localeCompare(a.stamp))[0]
}

/** A sortable UTC stamp for a backup directory name: 20261123T184501Z. */
export function backupStamp(now: Date): string {
  return now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')
}
