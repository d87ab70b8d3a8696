/**
 * Counting a node's listening TCP sockets on a port, from a hostNetwork pod with nothing but a
 * shell, cat and grep: /proc/net/tcp and tcp6 are the reader's network namespace, which for a
 * hostNetwork pod is the node's. Two sockets on one port mean two processes share it with
 * SO_REUSEPORT (--permit-port-sharing): the old instance and the new one beside it.
 */

/** A port as /proc/net/tcp writes it: four upper-case hex digits. */
export const hexPort = (port: number): string => port.toString(16).toUpperCase().padStart(4, '0')

/**
 * A shell function `listeners HEXPORT` that prints how many sockets LISTEN (state 0A) on the
 * port; `$net` names the files to read (tests point it at fixtures).
 */
export const LISTENERS_FN = `net=\${NET_FILES:-/proc/net/tcp /proc/net/tcp6}
listeners() { cat $net 2>/dev/null | grep -c "^ *[0-9]*: [0-9A-Fa-f]*:$1 [0-9A-Fa-f]*:0000 0A " || true; }`
