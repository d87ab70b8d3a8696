import type {Cidr} from './ip.js'
import type {InterfaceSpace, Where} from './interfaces.js'
import {isIPv4} from './ip.js'
import type {
  Finding,
  FrontendKind,
  FrontendTrace,
  PortTrace,
  ProxyMode,
  ServiceInfo,
  ServicePortInfo,
  SliceEndpoint,
  TraceNode,
  TraceResult,
  TracedEndpoint,
  TracedVerdict,
} from './model.js'
import {Origin, Outcome, WalkPacket, formatHostPort} from './walk.js'

/** One node's kube-proxy rules in one mode, able to follow a packet and to name its Services. */
export interface RuleSet {
  mode: ProxyMode
  trace(packet: WalkPacket): Outcome[]
  /** Rebuilds a Service from the rules alone (offline): comments, chain names, map keys. */
  findService(namespace: string, name: string): ServiceInfo | undefined
  /** "ns/name" of every Service the rules mention, for "did you mean". */
  serviceNames(): string[]
  /** Services with a frontend at this address (offline `trace IP[:PORT]`), when the mode knows better than the names. */
  servicesAt?(ip: string, port?: number): ServiceInfo[]
  /** The pod network, as the rules' masquerade conditions reveal it. */
  clusterCidrs(): Cidr[]
  /** Chain names kube-proxy computes for a service port, and whether each exists. */
  expectedChains?(service: ServiceInfo, port: ServicePortInfo): Record<string, string>
  /** The interface names of the rules and the (in, out) pairs a packet from `origin` can have. */
  interfaces?(origin: Origin): {space: InterfaceSpace; start: Where}
  /** Does the dump hold kube-proxy's rules at all (an empty set means "wrong backend/mode"). */
  hasKubeProxyRules(): boolean
  notes: string[]
}

export interface TraceContext {
  node?: string
  /** The node's own address, the destination of NodePort traffic. */
  nodeAddress?: string
  /** EndpointSlice endpoints of the Service; undefined offline. */
  slices?: SliceEndpoint[]
  clusterCidrs?: Cidr[]
  backend?: string
}

/** Sums below this are rounding, not traffic (iptables prints 10-11 decimals). */
const SHARE_TOLERANCE = 1e-6

const FRONTEND_LABEL: Record<FrontendKind, string> = {
  clusterIP: 'ClusterIP',
  nodePort: 'NodePort',
  externalIP: 'external IP',
  loadBalancer: 'LoadBalancer IP',
}

export const describeFrontend = (f: Pick<FrontendTrace, 'kind' | 'address' | 'from'>): string =>
  `${FRONTEND_LABEL[f.kind]} ${f.address} from ${f.from === 'pod' ? 'a pod' : f.from === 'node' ? 'the node' : 'outside the cluster'}`

export const portLabel = (port: ServicePortInfo): string => `${port.name || '(unnamed)'} ${port.port}/${port.protocol.toUpperCase()}`

interface FrontendPlan {
  kind: FrontendKind
  address: string
  packet: WalkPacket
}

function planFrontends(service: ServiceInfo, port: ServicePortInfo, ctx: TraceContext, cidrs: Cidr[], mode: ProxyMode): FrontendPlan[] {
  const protocol = port.protocol.toLowerCase()
  // One rules dump covers one address family; IPv6 lives in ip6tables / "ip6 kube-proxy".
  const family = (ip: string) => isIPv4(ip)
  const plans: FrontendPlan[] = []
  const packet = (destination: string | undefined, destinationPort: number, origin: Origin, destinationLocal = false): WalkPacket => ({
    protocol,
    destination,
    destinationPort,
    destinationLocal,
    origin,
    clusterCidrs: cidrs,
  })
  for (const ip of service.clusterIPs.filter(family)) {
    for (const origin of ['pod', 'node'] as const)
      plans.push({kind: 'clusterIP', address: formatHostPort(ip, port.port), packet: packet(ip, port.port, origin)})
  }

  const externals: Array<[FrontendKind, string[]]> = [
    ['externalIP', service.externalIPs],
    ['loadBalancer', service.loadBalancerIPs],
  ]
  for (const [kind, ips] of externals) {
    for (const ip of ips.filter(family)) {
      for (const origin of ['external', 'pod'] as const) plans.push({kind, address: formatHostPort(ip, port.port), packet: packet(ip, port.port, origin)})
    }
  }

  if (port.nodePort && mode !== 'ipvs') {
    const where = ctx.nodeAddress ?? '<node>'
    for (const origin of ['external', 'pod'] as const) {
      plans.push({kind: 'nodePort', address: `${where}:${port.nodePort}`, packet: packet(ctx.nodeAddress, port.nodePort, origin, true)})
    }
  } else if (port.nodePort && ctx.nodeAddress) {
    // IPVS serves a NodePort as one virtual server per node address: it needs the address.
    plans.push({kind: 'nodePort', address: `${ctx.nodeAddress}:${port.nodePort}`, packet: packet(ctx.nodeAddress, port.nodePort, 'external', true)})
  }

  return plans
}

const endpointKey = (ip: string, port?: number) => `${ip}|${port ?? ''}`

function verdictReason(outcome: Outcome): string {
  const v = outcome.verdict
  if (v.kind === 'unhandled') return 'no kube-proxy rule handles it: the packet leaves unchanged'
  if (v.kind === 'missing') return `chain ${v.chain} is not in the dump (cut short?)`
  if (v.kind === 'dnat') return ''
  return v.comment ?? `${v.kind.toUpperCase()} in ${v.chain}`
}

/** Merges the outcomes' step lists into a tree, each node with the share passing through it. */
export function buildTree(outcomes: Outcome[], annotate: (ip: string, port?: number) => TraceNode['endpoint']): TraceNode[] {
  const roots: TraceNode[] = []
  for (const outcome of outcomes) {
    let level = roots
    for (const [i, step] of outcome.steps.entries()) {
      let node = level.find((n) => n.chain === step.chain && n.line === step.line && n.action === step.action && n.assumed === step.assumed)
      if (!node) {
        node = {
          action: step.action,
          table: step.table,
          chain: step.chain,
          line: step.line,
          comment: step.comment,
          share: 0,
          probability: step.probability,
          assumed: step.assumed,
          children: [],
        }
        if (i === outcome.steps.length - 1 && outcome.verdict.kind === 'dnat') node.endpoint = annotate(outcome.verdict.ip, outcome.verdict.port)
        level.push(node)
      }

      node.share += outcome.probability
      level = node.children
    }

    if (outcome.verdict.kind === 'unhandled') level.push({action: 'no rule matched', share: outcome.probability, children: []})
  }

  return roots
}

function frontendFromOutcomes(
  plan: FrontendPlan,
  assumptions: string[],
  outcomes: Outcome[],
  slices: Map<string, SliceEndpoint>,
  sliceKnown: boolean,
): FrontendTrace {
  const endpoints = new Map<string, TracedEndpoint>()
  const verdicts = new Map<string, TracedVerdict>()
  const annotate = (ip: string, port?: number) => {
    const slice = slices.get(endpointKey(ip, port))
    return {ip, port, pod: slice?.pod, ready: slice ? slice.ready : undefined}
  }

  for (const outcome of outcomes) {
    const v = outcome.verdict
    if (v.kind === 'dnat') {
      const key = endpointKey(v.ip, v.port)
      const existing = endpoints.get(key)
      if (existing) {
        existing.share += outcome.probability
        existing.masquerade ||= outcome.masquerade
        continue
      }

      const slice = slices.get(key)
      const seconds = outcome.affinity.find((a) => a.seconds !== undefined)?.seconds
      endpoints.set(key, {
        ip: v.ip,
        port: v.port,
        share: outcome.probability,
        chain: outcome.steps.at(-1)?.chain,
        masquerade: outcome.masquerade,
        masqueradeWhen: outcome.masqueradeWhen,
        affinitySeconds: outcome.affinity.length > 0 ? (seconds ?? 10_800) : undefined,
        pod: slice?.pod,
        node: slice?.nodeName,
        ready: sliceKnown ? (slice?.ready ?? false) : undefined,
        inSlice: sliceKnown ? slice !== undefined : undefined,
      })
      continue
    }

    const key = `${v.kind}|${v.kind === 'unhandled' ? '' : `${v.chain}|${v.line}`}`
    const existing = verdicts.get(key)
    if (existing) existing.share += outcome.probability
    else
      verdicts.set(key, {
        kind: v.kind,
        share: outcome.probability,
        chain: v.kind === 'unhandled' ? undefined : v.chain,
        line: v.kind === 'unhandled' ? undefined : v.line,
        reason: verdictReason(outcome),
      })
  }

  return {
    kind: plan.kind,
    address: plan.address,
    from: plan.packet.origin,
    assumptions,
    endpoints: [...endpoints.values()],
    verdicts: [...verdicts.values()],
    tree: buildTree(outcomes, annotate),
  }
}

/** What a set of outcomes does, as text: equal texts route the same way. */
function routingKey(outcomes: Outcome[]): string {
  const totals = new Map<string, number>()
  for (const o of outcomes) {
    const v = o.verdict
    const key = v.kind === 'dnat' ? `dnat ${v.ip}|${v.port}|${o.masquerade}` : v.kind === 'unhandled' ? 'unhandled' : `${v.kind} ${v.chain}|${v.line}`
    totals.set(key, (totals.get(key) ?? 0) + o.probability)
  }

  return [...totals]
    .map(([k, p]) => `${k}=${p.toFixed(9)}`)
    .sort()
    .join(';')
}

/**
 * Splits outcomes that hold for different interfaces into cells that each hold for one set of
 * interfaces, every packet of a cell meeting the same outcomes; cells that route the same way
 * are one. Without interface conditions there is one cell, with no condition.
 */
export function interfaceCells(outcomes: Outcome[], interfaces?: {space: InterfaceSpace; start: Where}): Array<{where?: string; outcomes: Outcome[]}> {
  if (!interfaces || outcomes.every((o) => !o.where || interfaces.space.equal(o.where, interfaces.start))) return [{outcomes}]
  const {space, start} = interfaces
  const cells = new Map<string, {pairs: number[]; outcomes: Outcome[]}>()
  for (const pair of space.pairs(start)) {
    const members: Outcome[] = []
    let key = ''
    for (const [i, o] of outcomes.entries()) {
      if (o.where && !space.has(o.where, pair)) continue
      members.push(o)
      key += `${i},`
    }

    if (members.length === 0) continue
    const cell = cells.get(key)
    if (cell) cell.pairs.push(pair)
    else cells.set(key, {pairs: [pair], outcomes: members})
  }

  // Cells that route alike are one; the first one's paths stand for them all.
  const byRouting = new Map<string, {pairs: number[]; outcomes: Outcome[]}>()
  for (const cell of cells.values()) {
    const key = routingKey(cell.outcomes)
    const seen = byRouting.get(key)
    if (seen) seen.pairs.push(...cell.pairs)
    else byRouting.set(key, {pairs: [...cell.pairs], outcomes: cell.outcomes})
  }

  return [...byRouting.values()].map((cell) => {
    const where = space.empty()
    for (const pair of cell.pairs) where[pair >>> 5] |= 1 << (pair & 31)
    return {where: space.describe(where, start) || undefined, outcomes: cell.outcomes}
  })
}

const sameRouting = (a: FrontendTrace, b: FrontendTrace) =>
  JSON.stringify([
    a.assumptions,
    a.endpoints.map((e) => [e.ip, e.port, e.share.toFixed(9), e.masquerade]),
    a.verdicts.map((v) => [v.kind, v.share.toFixed(9)]),
  ]) ===
  JSON.stringify([b.assumptions, b.endpoints.map((e) => [e.ip, e.port, e.share.toFixed(9), e.masquerade]), b.verdicts.map((v) => [v.kind, v.share.toFixed(9)])])

/** Traces every port and frontend of a Service through one node's rules, with findings. */
export function traceService(rules: RuleSet, service: ServiceInfo, ctx: TraceContext = {}): TraceResult {
  const cidrs = ctx.clusterCidrs && ctx.clusterCidrs.length > 0 ? ctx.clusterCidrs : rules.clusterCidrs()
  const sliceKnown = ctx.slices !== undefined
  const notes: string[] = []
  if (cidrs.length === 0) notes.push('the pod network (cluster CIDR) is unknown: masquerading of pod traffic is shown as conditional')
  const ipv6 = [...service.clusterIPs, ...service.externalIPs, ...service.loadBalancerIPs].filter((ip) => !isIPv4(ip))
  if (ipv6.length > 0) notes.push(`IPv6 addresses are not traced (${ipv6.join(', ')}): only IPv4 rules (iptables, "ip kube-proxy") are read`)
  const ports: PortTrace[] = []
  const findings: Finding[] = []
  for (const port of service.ports) {
    const portSlices = new Map<string, SliceEndpoint>()
    for (const e of ctx.slices ?? []) {
      if (e.portName === port.name && e.protocol.toLowerCase() === port.protocol.toLowerCase()) portSlices.set(endpointKey(e.ip, e.port), e)
    }

    const frontends: FrontendTrace[] = []
    for (const plan of planFrontends(service, port, ctx, cidrs, rules.mode)) {
      const outcomes = rules.trace(plan.packet)
      const groups = new Map<string, Outcome[]>()
      for (const outcome of outcomes) {
        const key = outcome.assumptions.join('\u0000')
        groups.set(key, [...(groups.get(key) ?? []), outcome])
      }

      const cells = [...groups.values()].flatMap((group) =>
        interfaceCells(group, rules.interfaces?.(plan.packet.origin)).map((cell) => ({
          assumptions: cell.where ? [...group[0].assumptions, cell.where] : group[0].assumptions,
          outcomes: cell.outcomes,
        })),
      )
      for (const cell of cells) {
        const traced = frontendFromOutcomes(plan, cell.assumptions, cell.outcomes, portSlices, sliceKnown)
        // A pod reaching an external address usually routes like outside traffic: keep one.
        // The node's own connections to a ClusterIP usually route like a pod's: keep one too.
        const twin = frontends.find((f) => f.kind === traced.kind && f.address === traced.address && f.from !== traced.from)
        if (((traced.from === 'pod' && plan.kind !== 'clusterIP') || traced.from === 'node') && twin && sameRouting(twin, traced)) continue
        frontends.push(traced)
      }
    }

    ports.push({port, expectedChains: rules.expectedChains?.(service, port), frontends})
    findings.push(...portFindings(port, frontends, [...portSlices.values()], service, ctx))
  }

  return {
    service: {namespace: service.namespace, name: service.name, type: service.type, clusterIPs: service.clusterIPs, source: service.source},
    node: ctx.node,
    mode: rules.mode,
    backend: ctx.backend,
    ports,
    findings,
    // The rule set learns some of its notes while tracing (e.g. which interfaces are Docker's).
    notes: [...rules.notes, ...notes],
  }
}

const pct = (share: number) => `${(share * 100).toFixed(1)}%`

/** Compares what the rules do with what the EndpointSlices say should happen. */
function portFindings(port: ServicePortInfo, frontends: FrontendTrace[], slices: SliceEndpoint[], service: ServiceInfo, ctx: TraceContext): Finding[] {
  const findings: Finding[] = []
  const label = portLabel(port)
  for (const frontend of frontends) {
    const reached = frontend.endpoints.reduce((sum, e) => sum + e.share, 0)
    const stopped = frontend.verdicts.filter((v) => v.kind === 'reject' || v.kind === 'drop').reduce((sum, v) => sum + v.share, 0)
    const lost = frontend.verdicts.filter((v) => v.kind === 'unhandled' || v.kind === 'missing').reduce((sum, v) => sum + v.share, 0)
    for (const v of frontend.verdicts) {
      if (v.kind === 'missing' && v.share > SHARE_TOLERANCE) {
        findings.push({
          kind: 'missing-chain',
          port: label,
          message: `${describeFrontend(frontend)}: ${pct(v.share)} of connections jump to chain ${v.chain}${v.line ? ` (line ${v.line})` : ''}, which the rules do not hold`,
        })
      }
    }

    // The node's own connections meet the same Service chain as a pod's: one finding for both.
    const podTwin = frontend.from === 'node' && frontends.find((f) => f.from === 'pod' && f.kind === frontend.kind && f.address === frontend.address)
    const sameShares = podTwin && Math.abs(podTwin.endpoints.reduce((sum, e) => sum + e.share, 0) - reached) < SHARE_TOLERANCE
    if (!sameShares && reached > SHARE_TOLERANCE && Math.abs(reached + stopped - 1) > SHARE_TOLERANCE) {
      findings.push({
        kind: 'share-sum',
        port: label,
        message: `${describeFrontend(frontend)}: endpoint shares add up to ${pct(reached)}${lost > SHARE_TOLERANCE ? `; ${pct(lost)} of connections match no rule` : ''}`,
      })
    }
  }

  if (ctx.slices === undefined) return findings
  const clusterTraces = frontends.filter((f) => f.kind === 'clusterIP' && f.assumptions.length === 0)
  if (clusterTraces.length === 0) return findings
  const local = service.internalTrafficPolicy === 'Local'
  const ready = slices.filter((e) => e.ready && (!local || e.nodeName === ctx.node))
  const programmed = new Map<string, TracedEndpoint>()
  for (const frontend of clusterTraces) for (const e of frontend.endpoints) programmed.set(endpointKey(e.ip, e.port), e)

  if (ready.length > 0 && programmed.size === 0) {
    findings.push({
      kind: 'no-rules',
      port: label,
      message: `${ready.length} ready endpoint(s) in EndpointSlices, but no rule on ${ctx.node ? `node ${ctx.node}` : 'this node'} sends ${clusterTraces.map((f) => f.address).join(', ')} to any of them`,
    })
    return findings
  }

  for (const e of ready) {
    if (!programmed.has(endpointKey(e.ip, e.port))) {
      findings.push({
        kind: 'not-programmed',
        port: label,
        message: `endpoint ${formatHostPort(e.ip, e.port)}${e.pod ? ` (pod ${e.pod})` : ''} is ready in an EndpointSlice but not in the rules`,
      })
    }
  }

  const known = new Set(slices.map((e) => endpointKey(e.ip, e.port)))
  for (const e of programmed.values()) {
    if (!known.has(endpointKey(e.ip, e.port))) {
      findings.push({
        kind: 'not-in-slice',
        port: label,
        message: `the rules still send traffic to ${formatHostPort(e.ip, e.port)}, which no EndpointSlice lists any more`,
      })
    }
  }

  return findings
}

/** Services whose ClusterIP, external or LoadBalancer IP is `ip` (and that serve `port`). */
export function servicesAtAddress(rules: RuleSet, ip: string, port?: number): ServiceInfo[] {
  if (rules.servicesAt) return rules.servicesAt(ip, port)
  const found: ServiceInfo[] = []
  for (const key of rules.serviceNames()) {
    const [namespace, name] = key.split('/')
    const service = rules.findService(namespace, name)
    if (!service || ![...service.clusterIPs, ...service.externalIPs, ...service.loadBalancerIPs].includes(ip)) continue
    const ports = port === undefined ? service.ports : service.ports.filter((p) => p.port === port || p.nodePort === port)
    if (ports.length > 0) found.push({...service, ports})
  }

  return found
}
