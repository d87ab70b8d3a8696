import {CliError} from '../errors.js'
import type {IptablesDump} from './iptables.js'
import {iptablesRuleSet} from './iptables-rules.js'
import type {Cidr} from './ip.js'
import type {ServiceInfo} from './model.js'
import type {RuleSet} from './trace.js'
import {Outcome, WalkPacket, formatHostPort} from './walk.js'

export interface IpvsRealServer {
  address: string
  port: number
  forward: string
  weight: number
  line: number
}

export interface IpvsVirtualServer {
  protocol: string
  address: string
  port: number
  scheduler: string
  /** `persistent N`: kube-proxy's ClientIP session affinity. */
  persistentSeconds?: number
  line: number
  reals: IpvsRealServer[]
  /** An elided stretch ("...") follows it in a pasted excerpt: it may have more real servers. */
  elided?: boolean
}

const ipvsError = (line: number, what: string) => new CliError(`IPVS listing, line ${line}: ${what}`)

/** "10.0.0.1:443", "[fd00::1]:443" or /proc/net/ip_vs's "0A000001:01BB". */
function parseEndpoint(text: string, line: number): {address: string; port: number} {
  const hex = /^([0-9A-F]{8}):([0-9A-F]{4})$/i.exec(text)
  if (hex) {
    const n = Number.parseInt(hex[1], 16)
    return {address: [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.'), port: Number.parseInt(hex[2], 16)}
  }

  const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(text)
  if (v6) return {address: v6[1], port: Number(v6[2])}
  const v4 = /^(\d+\.\d+\.\d+\.\d+):(\d+)$/.exec(text)
  if (v4) return {address: v4[1], port: Number(v4[2])}
  throw ipvsError(line, `"${text}" is not an address:port`)
}

/** Parses `ipvsadm -Ln` or /proc/net/ip_vs. */
export function parseIpvs(text: string): IpvsVirtualServer[] {
  const servers: IpvsVirtualServer[] = []
  let sawHeader = false
  let elidedBefore = false
  for (const [i, raw] of text.split('\n').entries()) {
    const line = i + 1
    const trimmed = raw.trim()
    if (trimmed === '') continue
    if (/^IP Virtual Server version/.test(trimmed) || /^Prot LocalAddress/.test(trimmed) || /^-> RemoteAddress/.test(trimmed)) {
      sawHeader = true
      continue
    }

    const real = /^->\s+(\S+)\s+(\w+)\s+(\d+)\s+\d+\s+\d+$/.exec(trimmed)
    if (real) {
      const current = servers.at(-1)
      if (!current) throw ipvsError(line, 'a real server before any virtual server')
      current.reals.push({...parseEndpoint(real[1], line), forward: real[2], weight: Number(real[3]), line})
      continue
    }

    const virtual = /^(TCP|UDP|SCTP)\s+(\S+)\s+(\S+)(.*)$/.exec(trimmed)
    if (virtual) {
      const persistent = /persistent (\d+)/.exec(virtual[4])
      servers.push({
        protocol: virtual[1].toLowerCase(),
        ...parseEndpoint(virtual[2], line),
        scheduler: virtual[3],
        persistentSeconds: persistent ? Number(persistent[1]) : undefined,
        line,
        reals: [],
      })
      continue
    }

    if (/^FWM\s/.test(trimmed)) continue
    if (/^(\.{3,}|…)$/.test(trimmed)) {
      // An excerpt pasted with lines left out: what follows still parses, what was cut is unknown.
      const current = servers.at(-1)
      if (current) current.elided = true
      else elidedBefore = true
      continue
    }

    throw ipvsError(line, `"${trimmed.slice(0, 60)}" is neither a virtual nor a real server line`)
  }

  if (!sawHeader && servers.length === 0)
    throw new CliError('IPVS listing: no "IP Virtual Server" header and no virtual servers; this is not `ipvsadm -Ln` output')
  if (elidedBefore && servers.length > 0) servers[0].elided = true
  return servers
}

/**
 * IPVS mode: the kernel's virtual servers pick a real server by weight; the iptables rules
 * IPVS mode keeps only decide masquerading (and drops), so they are walked for that.
 */
export function ipvsRuleSet(servers: IpvsVirtualServer[], iptables?: IptablesDump): RuleSet {
  const companion = iptables ? iptablesRuleSet(iptables) : undefined
  const notes = iptables ? [] : ['no iptables rules alongside the IPVS listing: masquerading is not shown']
  return {
    mode: 'ipvs',
    notes,
    trace(packet: WalkPacket): Outcome[] {
      const matches = servers.filter(
        (s) =>
          s.protocol === packet.protocol && s.port === packet.destinationPort && (packet.destination === undefined ? true : s.address === packet.destination),
      )
      const server = matches[0]
      const marks = companion?.trace(packet) ?? []
      const masquerade = marks.some((o) => o.masquerade)
      const masqueradeWhen = [...new Set(marks.flatMap((o) => o.masqueradeWhen))]
      const base = {assumptions: [], masquerade, masqueradeWhen, mark: 0}
      if (!server) return [{...base, probability: 1, steps: [], affinity: [], verdict: {kind: 'unhandled'}}]
      const chain = `${server.protocol.toUpperCase()} ${formatHostPort(server.address, server.port)} ${server.scheduler}${server.persistentSeconds ? ` persistent ${server.persistentSeconds}` : ''}`
      const serving = server.reals.filter((r) => r.weight > 0)
      const total = serving.reduce((sum, r) => sum + r.weight, 0)
      const affinity = server.persistentSeconds ? [{list: chain, seconds: server.persistentSeconds}] : []
      if (serving.length === 0) {
        return [
          {
            ...base,
            probability: 1,
            affinity,
            steps: [{table: 'ipvs', chain, line: server.line, action: 'no real server with weight > 0'}],
            verdict: {kind: 'drop', chain, line: server.line, comment: 'the virtual server has no real servers (no endpoints)'},
          },
        ]
      }

      if (server.elided && !notes.some((n) => n.includes(chain))) {
        notes.push(
          `the listing leaves lines out ("...") after virtual server ${chain} (line ${server.line}): its shares count only the ${serving.length} real server(s) shown`,
        )
      }

      return serving.map((real) => ({
        ...base,
        probability: real.weight / total,
        affinity,
        steps: [
          {
            table: 'ipvs',
            chain,
            line: real.line,
            action: `-> ${formatHostPort(real.address, real.port)} (${real.forward}, weight ${real.weight})`,
            probability: real.weight / total,
          },
        ],
        verdict: {kind: 'dnat', ip: real.address, port: real.port},
      }))
    },
    findService: () => undefined,
    serviceNames: () => [],
    servicesAt(ip: string, port?: number): ServiceInfo[] {
      const at = servers.filter((s) => s.address === ip && (port === undefined || s.port === port))
      if (at.length === 0) return []
      return [
        {
          namespace: '',
          name: formatHostPort(ip, port),
          clusterIPs: [ip],
          externalIPs: [],
          loadBalancerIPs: [],
          ports: at.map((s) => ({name: '', port: s.port, protocol: s.protocol})),
          source: 'rules',
        },
      ]
    },
    clusterCidrs(): Cidr[] {
      return companion?.clusterCidrs() ?? []
    },
    hasKubeProxyRules: () => servers.length > 0,
  }
}
