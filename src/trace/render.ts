import chalk from 'chalk'

import type {FrontendTrace, MultiNodeTrace, PortTrace, TraceNode, TraceResult} from './model.js'
import {describeFrontend, portLabel} from './trace.js'
import {formatHostPort} from './walk.js'

const pct = (share: number) => `${(share * 100).toFixed(1)}%`

function nodeLabel(node: TraceNode, parentShare: number): string {
  const where = node.chain
    ? chalk.dim(`[${node.table && node.table !== 'kube-proxy' ? `${node.table}/` : ''}${node.chain}${node.line ? `:${node.line}` : ''}]`)
    : ''
  const share = node.share < parentShare - 1e-9 ? `${chalk.bold(pct(node.share).padStart(6))} ` : ''
  const probability = node.probability !== undefined && node.probability < 1 ? chalk.dim(` (p=${Number(node.probability.toFixed(5))})`) : ''
  const assumed = node.assumed ? chalk.yellow(` if ${node.assumed}`) : ''
  let text = `${share}${node.action}${probability}${assumed} ${where}`
  if (node.endpoint) {
    const e = node.endpoint
    const readiness = e.ready === undefined ? '' : e.ready ? chalk.green(' Ready') : chalk.red(' NotReady')
    if (e.pod || e.ready !== undefined) text += `  ${chalk.cyan('->')} ${e.pod ? `pod ${e.pod}` : 'in no EndpointSlice'}${readiness}`
  }

  if (/^(REJECT|DROP)/.test(node.action)) text = chalk.red(text)
  return text.trimEnd()
}

function renderTree(nodes: TraceNode[], prefix: string, parentShare: number, out: string[]): void {
  for (const [i, node] of nodes.entries()) {
    const last = i === nodes.length - 1
    out.push(`${prefix}${last ? '└─ ' : '├─ '}${nodeLabel(node, parentShare)}`)
    renderTree(node.children, `${prefix}${last ? '   ' : '│  '}`, node.share, out)
  }
}

export interface TraceRenderOptions {
  /** The whole chain tree of every way in (-o wide, --chains); default: endpoints and verdicts only. */
  chains?: boolean
}

function endpointText(e: FrontendTrace['endpoints'][number]): string {
  const who = e.pod ? `pod ${e.pod}${e.ready === undefined ? '' : e.ready ? ' Ready' : ' NotReady'}` : e.inSlice === false ? 'in no EndpointSlice' : ''
  const flags = [who, e.masquerade ? 'masqueraded' : '', e.affinitySeconds ? `affinity ${e.affinitySeconds}s` : ''].filter(Boolean)
  return `${formatHostPort(e.ip, e.port)} ${pct(e.share)}${flags.length > 0 ? ` (${flags.join(', ')})` : ''}`
}

function verdictText(v: FrontendTrace['verdicts'][number]): string {
  const where = v.chain ? ` [${v.chain}${v.line ? `:${v.line}` : ''}]` : ''
  return `${pct(v.share)} ${v.kind.toUpperCase()}: ${v.reason}${where}`
}

function renderFrontend(frontend: FrontendTrace, indent: string, out: string[], options: TraceRenderOptions): void {
  const assumptions = frontend.assumptions.length > 0 ? chalk.yellow(`, if ${frontend.assumptions.join(' and ')}`) : ''
  out.push(`${indent}${chalk.bold(describeFrontend(frontend))}${assumptions}`)
  if (options.chains) renderTree(frontend.tree, `${indent}`, 1, out)
  const inner = options.chains ? indent : `${indent}  `
  for (const v of frontend.verdicts) {
    const line = `${inner}=> ${verdictText(v)}`
    out.push(v.kind === 'reject' || v.kind === 'drop' ? chalk.red(line) : chalk.yellow(line))
  }

  if (frontend.endpoints.length > 0) {
    out.push(`${inner}=> ${frontend.endpoints.map(endpointText).join(', ')}`)
    const hairpin = frontend.endpoints.some((e) => e.masqueradeWhen.some((w) => w.includes('hairpin')))
    if (hairpin && options.chains) out.push(chalk.dim(`${inner}   masqueraded as well when an endpoint calls its own Service (hairpin)`))
  }
}

/**
 * The default view: one block per way in (address and origin); when the result depends on
 * conditions trace cannot decide (interfaces, source ranges), one line per condition.
 */
function renderWaysIn(frontends: FrontendTrace[], out: string[]): void {
  const ways = new Map<string, FrontendTrace[]>()
  for (const f of frontends) {
    const key = describeFrontend(f)
    ways.set(key, [...(ways.get(key) ?? []), f])
  }

  for (const [way, cells] of ways) {
    out.push(`  ${chalk.bold(way)}`)
    for (const cell of cells) {
      const condition = cell.assumptions.length > 0 ? chalk.yellow(`if ${cell.assumptions.join(' and ')}: `) : ''
      const results = [
        ...cell.verdicts.map((v) => (v.kind === 'reject' || v.kind === 'drop' ? chalk.red(verdictText(v)) : chalk.yellow(verdictText(v)))),
        ...(cell.endpoints.length > 0 ? [cell.endpoints.map(endpointText).join(', ')] : []),
      ]
      for (const [i, result] of results.entries()) out.push(`    ${i === 0 ? condition : ' '.repeat(condition.length > 0 ? 2 : 0)}=> ${result}`)
    }
  }
}

function renderPort(port: PortTrace, out: string[], options: TraceRenderOptions): void {
  const chains = port.expectedChains ? chalk.dim(`  chains: ${Object.values(port.expectedChains).join(', ')}`) : ''
  out.push(`port ${portLabel(port.port)}${port.port.nodePort ? ` nodePort ${port.port.nodePort}` : ''}${chains}`)
  if (port.frontends.length === 0) out.push('  (no address of this Service is in this rules dump)')
  if (options.chains) for (const frontend of port.frontends) renderFrontend(frontend, '  ', out, options)
  else renderWaysIn(port.frontends, out)
  const hairpin = port.frontends.some((f) => f.endpoints.some((e) => e.masqueradeWhen.some((w) => w.includes('hairpin'))))
  if (hairpin && !options.chains) out.push(chalk.dim('  (an endpoint calling its own Service is masqueraded: hairpin)'))
}

const MODE_SOURCE: Record<NonNullable<TraceResult['modeSource']>, string> = {
  flag: '--mode',
  'kube-proxy': 'kube-proxy :10249/proxyMode',
  configmap: 'the kube-proxy ConfigMap',
  rules: 'the rules',
}

function serviceKind(s: TraceResult['service']): string {
  const ips = s.clusterIPs.join(',')
  if (!s.type) return ''
  if (!ips) return ` (${s.type})`
  return s.type === 'ClusterIP' ? ` (ClusterIP ${ips})` : ` (${s.type}, ClusterIP ${ips})`
}

/** The human view of a trace: a block per way in (with the chain tree if asked), then findings and notes. */
export function renderTrace(result: TraceResult, options: TraceRenderOptions = {}): string {
  const out: string[] = []
  const s = result.service
  const name = s.namespace ? `svc/${s.name} in ${s.namespace}` : s.name
  const where = result.node ? ` on node ${result.node}` : ''
  const backend = result.backend ? `, ${result.backend}` : ''
  const source = result.modeSource ? chalk.dim(` [mode from ${MODE_SOURCE[result.modeSource]}]`) : ''
  out.push(`${chalk.bold(`${name}${serviceKind(s)}${where}: kube-proxy ${result.mode} mode${backend}`)}${source}`)
  if (result.explanation) out.push(result.explanation)
  for (const port of result.ports) renderPort(port, out, options)
  appendFindings(result.findings, out)
  for (const note of result.notes) out.push(chalk.dim(`note: ${note}`))
  return out.join('\n')
}

function appendFindings(findings: TraceResult['findings'], out: string[]): void {
  if (findings.length === 0) return
  out.push(chalk.red.bold(`${findings.length} finding(s):`))
  for (const f of findings) out.push(chalk.red(`  ! ${f.port ? `[${f.port}] ` : ''}${f.message}`))
}

export function renderMultiNode(trace: MultiNodeTrace, options: TraceRenderOptions = {}): string {
  const out = trace.nodes.map((n) => renderTrace(n, options))
  const unreadable = trace.findings.filter((f) => f.kind === 'node-unreadable')
  if (unreadable.length > 0) {
    const lines: string[] = []
    appendFindings(unreadable, lines)
    out.push(lines.join('\n'))
  }

  if (trace.differences.length === 0) out.push(chalk.green(`all ${trace.nodes.length} nodes route this Service the same way`))
  else {
    out.push(chalk.yellow.bold('nodes differ:'))
    for (const d of trace.differences) out.push(chalk.yellow(`  ${d}`))
  }

  return out.join('\n\n')
}
