import {nftServiceChains} from './hash.js'
import type {Condition} from './graph.js'
import {Cidr} from './ip.js'
import type {ServiceInfo, ServicePortInfo} from './model.js'
import {NftChain, NftTable} from './nftables.js'
import type {RuleSet} from './trace.js'
import {Outcome, WalkPacket, Walker} from './walk.js'

/** "service-HASH-ns/name/proto/port" and friends. */
const CHAIN_NAME = /^(service|external|firewall|local)-[A-Z2-7]{8}-([^/]+)\/([^/]+)\/([a-z]+)\/(.*)$/

/** The lookups kube-proxy's `services` chain does, for listings that lack the chain itself. */
const SERVICES_LOOKUPS = [
  'ip daddr . meta l4proto . th dport vmap @service-ips',
  'fib daddr type local ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports',
]

/** kube-proxy's nftables table of one node as a RuleSet. */
export function nftRuleSet(table: NftTable): RuleSet {
  const notes: string[] = []
  if (table.truncatedAt !== undefined) notes.push(`the listing stops at line ${table.truncatedAt} before the table closes: chains after that point are missing`)
  if (!table.chains.has('services') && table.sets.has('service-ips')) {
    const services = new NftChain('services', table.name, () => table)
    for (const text of SERVICES_LOOKUPS) services.rawRules.push({line: 0, text})
    table.chains.set('services', services)
    notes.push('the listing has no "services" chain: packets are looked up in the service-ips/service-nodeports maps directly, as that chain does')
  }

  const baseChains = (hook: string) =>
    [...table.chains.values()]
      .filter((c) => c.hook?.hook === hook)
      .sort((a, b) => a.hook!.priority - b.hook!.priority)
      .map((c) => c.name)

  let services: Map<string, ServiceInfo> | undefined
  const collect = () => {
    const found = new Map<string, ServiceInfo>()
    const serviceOf = (namespace: string, name: string) => {
      const key = `${namespace}/${name}`
      const service = found.get(key) ?? {namespace, name, clusterIPs: [], externalIPs: [], loadBalancerIPs: [], ports: [], source: 'rules' as const}
      found.set(key, service)
      return service
    }

    const portOf = (service: ServiceInfo, name: string, protocol: string) => {
      let port = service.ports.find((p) => p.name === name && p.protocol === protocol)
      if (!port) {
        port = {name, protocol, port: 0}
        service.ports.push(port)
      }

      return port
    }

    for (const element of table.sets.get('service-ips')?.elements ?? []) {
      const target = CHAIN_NAME.exec(element.value?.split(/\s+/)[1] ?? '')
      const [ip, protocol, port] = element.key.split(' . ').map((s) => s.trim())
      if (!target) continue
      const [, kind, namespace, name, , portName] = target
      const service = serviceOf(namespace, name)
      const servicePort = portOf(service, portName, protocol)
      if (kind === 'service') {
        servicePort.port = Number(port)
        if (!service.clusterIPs.includes(ip)) service.clusterIPs.push(ip)
      } else {
        // external- and firewall- targets serve externalIPs and LoadBalancer IPs alike.
        const list = kind === 'firewall' ? service.loadBalancerIPs : service.externalIPs
        if (!list.includes(ip)) list.push(ip)
        if (servicePort.port === 0) servicePort.port = Number(port)
      }
    }

    for (const element of table.sets.get('service-nodeports')?.elements ?? []) {
      const target = CHAIN_NAME.exec(element.value?.split(/\s+/)[1] ?? '')
      if (!target) continue
      const [protocol, port] = element.key.split(' . ').map((s) => s.trim())
      portOf(serviceOf(target[2], target[3]), target[5], protocol).nodePort = Number(port)
    }

    for (const element of table.sets.get('no-endpoint-services')?.elements ?? []) {
      const ref = element.comment ? /^([^/]+)\/([^:\s]+)(?::(\S+))?/.exec(element.comment) : null
      if (!ref) continue
      const [ip, protocol, port] = element.key.split(' . ').map((s) => s.trim())
      const service = serviceOf(ref[1], ref[2])
      portOf(service, ref[3] ?? '', protocol).port = Number(port)
      if (!service.clusterIPs.includes(ip)) service.clusterIPs.push(ip)
    }

    for (const service of found.values()) {
      service.ports = service.ports.filter((p) => p.port !== 0 || p.nodePort)
      service.type = service.ports.some((p) => p.nodePort) ? 'NodePort' : 'ClusterIP'
    }

    return found
  }

  return {
    mode: 'nftables',
    notes,
    trace(packet: WalkPacket): Outcome[] {
      const walker = new Walker(table, packet)
      const first = packet.origin === 'node' ? baseChains('output') : baseChains('prerouting')
      const entry = first.length > 0 ? first : ['services']
      const afterFirst = walker.walk(table.name, entry)
      if (packet.origin === 'node') return afterFirst
      return afterFirst.flatMap((outcome) => {
        const hook = outcome.verdict.kind !== 'dnat' && packet.destinationLocal ? 'input' : 'forward'
        return walker
          .walk(table.name, baseChains(hook), outcome)
          .map((o) => (o.verdict.kind === 'dnat' || o.verdict.kind === 'unhandled' ? {...o, steps: outcome.steps} : o))
      })
    },
    findService(namespace, name) {
      services ??= collect()
      return services.get(`${namespace}/${name}`)
    },
    serviceNames() {
      services ??= collect()
      return [...services.keys()]
    },
    clusterCidrs(): Cidr[] {
      for (const chain of table.chains.values()) {
        if (!chain.name.startsWith('service-')) continue
        const found = chain
          .rules()
          .filter((r) => r.action.kind === 'jump' && r.action.chain === 'mark-for-masquerade')
          .flatMap((r) => r.conditions.filter((c): c is Extract<Condition, {kind: 'address'}> => c.kind === 'address' && c.field === 'source' && c.negated))
          .map((c) => c.cidr)
        if (found.length > 0) return found
      }

      return []
    },
    expectedChains(service: ServiceInfo, port: ServicePortInfo) {
      const chains = nftServiceChains(service.namespace, service.name, port.name, port.protocol)
      return Object.fromEntries(Object.entries(chains).filter(([kind, name]) => kind === 'service' || table.chains.has(name)))
    },
    hasKubeProxyRules() {
      return [...table.chains.keys()].some((n) => n.startsWith('service-')) || (table.sets.get('service-ips')?.elements.length ?? 0) > 0
    },
  }
}
