import type {Finding, MultiNodeTrace, TraceResult} from './model.js'
import {describeFrontend, portLabel} from './trace.js'
import {formatHostPort} from './walk.js'

const pct = (share: number) => `${(share * 100).toFixed(1)}%`

/** What one node does with one frontend, as text two nodes can be compared by. */
function routing(result: TraceResult): Map<string, string> {
  const routes = new Map<string, string>()
  for (const port of result.ports) {
    for (const f of port.frontends) {
      // NodePort addresses name the node itself: compare them by port only.
      const key = `${portLabel(port.port)} ${f.kind === 'nodePort' ? `NodePort ${port.port.nodePort} from ${f.from}` : describeFrontend(f)}${f.assumptions.length > 0 ? ` if ${f.assumptions.join(' and ')}` : ''}`
      const parts = [
        ...[...f.endpoints]
          .sort((a, b) => a.ip.localeCompare(b.ip) || (a.port ?? 0) - (b.port ?? 0))
          .map((e) => `${formatHostPort(e.ip, e.port)} ${pct(e.share)}`),
        ...f.verdicts.map((v) => `${v.kind} ${pct(v.share)}`),
      ]
      routes.set(key, parts.join(', ') || 'nothing')
    }
  }

  return routes
}

/** Puts per-node traces side by side and says where nodes disagree (--all-nodes). */
export function compareNodes(results: TraceResult[]): MultiNodeTrace {
  const perNode = results.map((r) => ({node: r.node ?? '?', routes: routing(r)}))
  const keys = [...new Set(perNode.flatMap((n) => [...n.routes.keys()]))]
  const differences: string[] = []
  for (const key of keys) {
    const groups = new Map<string, string[]>()
    for (const {node, routes} of perNode) {
      const route = routes.get(key) ?? 'not traced'
      groups.set(route, [...(groups.get(route) ?? []), node])
    }

    if (groups.size > 1) {
      differences.push(`${key}: ${[...groups].map(([route, nodes]) => `${nodes.join(', ')} -> ${route}`).join('; ')}`)
    }
  }

  const findings: Finding[] = results.flatMap((r) => r.findings.map((f) => ({...f, message: `node ${r.node}: ${f.message}`})))
  return {nodes: results, differences, findings}
}
