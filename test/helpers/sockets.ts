import {type Server, createServer} from 'node:net'

import type {V1Pod} from '../../src/kube/types.js'
import {securePort} from '../../src/controlplane/container.js'
import {PIVOTED_COMPONENTS, selfHostedComponentOf} from '../../src/controlplane/model.js'
import {isReady} from '../../src/kube/objects.js'
import {hexPort} from '../../src/node/listeners.js'

/** A real listening socket on the kernel's loopback, visible in /proc/net/tcp as a node task reads it. */
export function listen(port: number, host: string): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(port, host, () => resolve(server))
  })
}

export const close = (server: Server) => new Promise<void>((r) => server.close(() => r()))

/** A port nothing listens on right now. */
export async function freePort(): Promise<number> {
  const s = await listen(0, '127.0.0.1')
  const port = (s.address() as {port: number}).port
  await close(s)
  return port
}

/**
 * For the simulated nodes (the unit fake, the kwok harness), where no pod is a real process:
 * the node's /proc/net/tcp as a node task would read it, one LISTEN socket for each Ready
 * control-plane pod on the node (static or self-hosted) on its secure port.
 */
export function simulatedProcNetTcp(pods: V1Pod[], node: string): string {
  const lines = ['  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode']
  for (const pod of pods) {
    if (pod.spec?.nodeName !== node || !isReady(pod) || pod.metadata?.deletionTimestamp) continue
    const component = selfHostedComponentOf(pod) ?? pod.metadata?.labels?.component
    const container = pod.spec?.containers?.[0]
    if (!component || !container || !(PIVOTED_COMPONENTS as readonly string[]).includes(component)) continue
    lines.push(
      `${String(lines.length - 1).padStart(4)}: 00000000:${hexPort(securePort(component, container))} 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 ${1000 + lines.length} 1`,
    )
  }

  return `${lines.join('\n')}\n`
}
