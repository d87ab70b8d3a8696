/**
 * Writing files on a node from a shell with nothing but the kube-proxy image's tools (no mv, cp
 * or sync): a rename is `ln -f` (a link to a temporary name, then rename(2)), so the kubelet never
 * reads half a file. Each temporary name is a dot-file beside its target (the kubelet ignores
 * those) and is removed first: one a killed task left may be another name of a manifest or a
 * backup, and writing into it would change that file's bytes.
 */

/**
 * Shell functions `put FILE` (writes stdin to FILE as a new file) and `link_as FILE NAME` (makes
 * NAME another name of FILE: no new data, nothing to flush). Each returns the status of its write,
 * for scripts with and without `set -e`.
 */
export const FILE_FNS = `temp_for() { printf '%s/.%s.selfhost-tmp' "\${1%/*}" "\${1##*/}"; }
put() { t="$(temp_for "$1")"; rm -f "$t"; cat > "$t" && ln -f "$t" "$1"; put_rc=$?; rm -f "$t"; return $put_rc; }
link_as() { t="$(temp_for "$2")"; rm -f "$t"; ln "$1" "$t" && ln -f "$t" "$2"; put_rc=$?; rm -f "$t"; return $put_rc; }`
