import {servicePortChains} from './hash.js'
import type {Condition, Rule} from './graph.js'
import type {IptablesDump} from './iptables.js'
import {Cidr} from './ip.js'
import type {ServiceInfo, ServicePortInfo} from './model.js'
import type {RuleSet} from './trace.js'
import {InterfaceSpace, Where} from './interfaces.js'
import {Origin, Outcome, WalkPacket, Walker} from './walk.js'

/** The filter chains kube-proxy hooks in, for dumps (like kube-proxy's test data) without built-in chains. */
const KUBE_FILTER_CHAINS: Record<string, string[]> = {
  INPUT: ['KUBE-PROXY-FIREWALL', 'KUBE-NODEPORTS', 'KUBE-EXTERNAL-SERVICES', 'KUBE-FIREWALL'],
  FORWARD: ['KUBE-PROXY-FIREWALL', 'KUBE-FORWARD', 'KUBE-SERVICES', 'KUBE-EXTERNAL-SERVICES'],
  OUTPUT: ['KUBE-PROXY-FIREWALL', 'KUBE-SERVICES', 'KUBE-FIREWALL'],
}

/**
 * "ns/name:port what" as kube-proxy writes its comments; an unnamed port is "ns/name what"
 * from about 1.16 and "ns/name: what" before (ServicePortName always had the colon then).
 */
const COMMENT = /^([a-z0-9][-a-z0-9.]*)\/([a-z0-9][-a-z0-9.]*)(?::(\S*))?(?: (.*))?$/

interface CommentRef {
  namespace: string
  name: string
  portName: string
  what: string
}

export function parseServiceComment(comment: string | undefined): CommentRef | undefined {
  const match = comment ? COMMENT.exec(comment) : null
  if (!match) return undefined
  return {namespace: match[1], name: match[2], portName: match[3] ?? '', what: match[4] ?? ''}
}

const firstOf = <K extends Condition['kind']>(conditions: Condition[], kind: K) =>
  conditions.find((c): c is Extract<Condition, {kind: K}> => c.kind === kind && !('negated' in c && c.negated))

/** kube-proxy's iptables (or IPVS-mode iptables) rules of one node as a RuleSet. */
export function iptablesRuleSet(dump: IptablesDump): RuleSet {
  let services: Map<string, ServiceInfo> | undefined
  let cidrs: Cidr[] | undefined
  const notes: string[] = [...(dump.notes ?? [])]
  const nat = dump.chains('nat')
  const filter = dump.chains('filter')
  const hasNatChain = (name: string) => dump.chain('nat', name) !== undefined
  const hasRules = (table: string, chain: string) => (dump.chain(table, chain)?.ruleCount ?? 0) > 0
  const masqueradeRule = dump
    .chain('nat', 'KUBE-MARK-MASQ')
    ?.rules()
    .find((r) => r.action.kind === 'mark')
  const masqueradeMark = masqueradeRule?.action.kind === 'mark' ? masqueradeRule.action.xor : undefined
  if (notes.length === 0 && !hasRules('nat', 'PREROUTING') && !hasRules('nat', 'OUTPUT') && hasRules('nat', 'KUBE-SERVICES')) {
    notes.push('the dump has no PREROUTING/OUTPUT jumps (kube-proxy test data?): packets enter at KUBE-SERVICES as on a real node')
  }

  /** Rebuilds Services from comments; with `only`, compiles just the rules that name it. */
  const collectServices = (only?: {namespace: string; name: string}): Map<string, ServiceInfo> => {
    const found = new Map<string, ServiceInfo>()
    const scan = (table: string, chainName: string) => {
      const chain = dump.chain(table, chainName)
      if (!chain) return
      const key = only && `${only.namespace}/${only.name}`
      const rules = key ? chain.rulesMentioning(key) : chain.rules()
      for (const rule of rules) {
        const ref = parseServiceComment(rule.comment)
        if (!ref || (only && (ref.namespace !== only.namespace || ref.name !== only.name))) continue
        const serviceKey = `${ref.namespace}/${ref.name}`
        const service = found.get(serviceKey) ?? {
          namespace: ref.namespace,
          name: ref.name,
          clusterIPs: [],
          externalIPs: [],
          loadBalancerIPs: [],
          ports: [],
          source: 'rules' as const,
        }
        found.set(serviceKey, service)
        const protocol = firstOf(rule.conditions, 'protocol')?.protocol ?? 'tcp'
        const address = firstOf(rule.conditions, 'address')
        const dport = firstOf(rule.conditions, 'port')?.ranges[0]?.[0]
        const ip = address?.field === 'destination' ? address.cidr.text.replace(/\/32$/, '') : undefined
        let port = service.ports.find((p) => p.name === ref.portName && p.protocol === protocol)
        if (!port) {
          port = {name: ref.portName, protocol, port: 0}
          service.ports.push(port)
        }

        const isNodePort = chainName === 'KUBE-NODEPORTS' || (ref.what === 'has no local endpoints' && !ip)
        if (isNodePort) {
          if (dport && !ref.what.includes('health check')) port.nodePort = dport
          continue
        }

        if (dport && port.port === 0) port.port = dport
        if (!ip) continue
        const list = ref.what.startsWith('external IP')
          ? service.externalIPs
          : ref.what.startsWith('loadbalancer IP')
            ? service.loadBalancerIPs
            : ref.what.startsWith('cluster IP') || ref.what === 'has no endpoints'
              ? service.clusterIPs
              : undefined
        if (list && !list.includes(ip)) list.push(ip)
      }
    }

    for (const [table, chain] of [
      ['nat', 'KUBE-SERVICES'],
      ['nat', 'KUBE-NODEPORTS'],
      ['filter', 'KUBE-SERVICES'],
      ['filter', 'KUBE-EXTERNAL-SERVICES'],
      ['filter', 'KUBE-NODEPORTS'],
    ]) {
      scan(table, chain)
    }

    for (const service of found.values()) {
      service.ports = service.ports.filter((p) => p.port !== 0 || p.nodePort)
      service.type = service.loadBalancerIPs.length > 0 ? 'LoadBalancer' : service.ports.some((p) => p.nodePort) ? 'NodePort' : 'ClusterIP'
    }

    return found
  }

  const marksForMasquerade = (r: Rule) =>
    (r.action.kind === 'jump' && r.action.chain === 'KUBE-MARK-MASQ') ||
    (r.action.kind === 'mark' && masqueradeMark !== undefined && (r.action.xor & masqueradeMark) !== 0)
  const detectClusterCidrs = (): Cidr[] => {
    // kube-proxy masquerades ClusterIP traffic from outside the pod network: "! -s <cidr> -j KUBE-MARK-MASQ".
    let examined = 0
    for (const chain of nat ?? []) {
      if (!chain.name.startsWith('KUBE-SVC-') || chain.ruleCount === 0) continue
      const found = chain
        .rules()
        .filter(marksForMasquerade)
        .flatMap((r) => r.conditions.filter((c): c is Extract<Condition, {kind: 'address'}> => c.kind === 'address' && c.field === 'source' && c.negated))
        .map((c) => c.cidr)
      if (found.length > 0) return found
      if (++examined >= 5) break
    }

    // IPVS mode keeps the same condition on KUBE-SERVICES itself (with an ipset match).
    return (dump.chain('nat', 'KUBE-SERVICES')?.rules() ?? [])
      .filter(marksForMasquerade)
      .flatMap((r) => r.conditions.filter((c): c is Extract<Condition, {kind: 'address'}> => c.kind === 'address' && c.field === 'source' && c.negated))
      .map((c) => c.cidr)
      .slice(0, 1)
  }

  /** The chains a hook runs: the built-in one, or (dumps without it) kube-proxy's own. */
  const hookEntry = (table: string, hook: string, fallback: string[]) =>
    hasRules(table, hook) || dump.chain(table, hook)?.policy === 'DROP' ? [hook] : fallback

  let interfaceModel: InterfaceModel | undefined
  const interfaces = (origin: Origin) => {
    interfaceModel ??= buildInterfaceModel(dump)
    if (interfaceModel.dockerNames.length > 0 && !notes.some((n) => n.startsWith('Docker'))) {
      notes.push(
        `Docker's bridges (${interfaceModel.dockerNames.join(', ')}) are assumed to carry no traffic of pods or Services: their FORWARD rules are followed for other interfaces only`,
      )
    }

    return {space: interfaceModel.space, start: interfaceModel.start(origin)}
  }

  return {
    mode: 'iptables',
    notes,
    interfaces,
    trace(packet: WalkPacket): Outcome[] {
      const walker = new Walker(dump, packet, {masqueradeMark, interfaces: interfaces(packet.origin)})
      const natHook = packet.origin === 'node' ? 'OUTPUT' : 'PREROUTING'
      const natEntry = hookEntry('nat', natHook, ['KUBE-SERVICES'])
      const afterNat = nat ? walker.walk('nat', natEntry) : [walker.walk('nat', [])[0]]
      if (!filter) return afterNat
      return afterNat.flatMap((outcome) => {
        const hook = packet.origin === 'node' ? 'OUTPUT' : outcome.verdict.kind !== 'dnat' && packet.destinationLocal ? 'INPUT' : 'FORWARD'
        const entry = hookEntry('filter', hook, KUBE_FILTER_CHAINS[hook])
        // Only a filter verdict is worth showing; accepted packets keep the nat path.
        return walker
          .walk('filter', entry, outcome)
          .map((o) => (o.verdict.kind === 'dnat' || o.verdict.kind === 'unhandled' ? {...o, steps: outcome.steps} : o))
      })
    },
    findService(namespace, name) {
      // Only the rules naming this Service are compiled: a large dump is mostly other Services.
      return (services ?? collectServices({namespace, name})).get(`${namespace}/${name}`)
    },
    serviceNames() {
      services ??= collectServices()
      return [...services.keys()]
    },
    clusterCidrs() {
      cidrs ??= detectClusterCidrs()
      return cidrs
    },
    expectedChains(service: ServiceInfo, port: ServicePortInfo) {
      // Hash names as kube-proxy computes them; before ~1.16 an unnamed port kept its colon ("ns/name:").
      const schemes = [servicePortChains(service.namespace, service.name, port.name, port.protocol)]
      if (!port.name) schemes.push(servicePortChains(service.namespace, `${service.name}:`, '', port.protocol))
      const chains = schemes.find((c) => hasNatChain(c.svc) || hasNatChain(c.svl)) ?? schemes[0]
      const expected: Record<string, string> = {}
      for (const [kind, chain] of Object.entries(chains) as Array<[string, string]>) {
        if (kind === 'svc' || hasNatChain(chain)) expected[kind] = chain
      }

      if (!hasNatChain(expected.svc)) {
        // A naming scheme of its own: the chains the Service's rules jump to are the truth.
        for (const rule of dump.chain('nat', 'KUBE-SERVICES')?.rulesMentioning(`${service.namespace}/${service.name}`) ?? []) {
          const ref = parseServiceComment(rule.comment)
          const target = rule.action.kind === 'jump' || rule.action.kind === 'goto' ? rule.action.chain : ''
          const kind = /^KUBE-(SVC|SVL|EXT|FW|XLB)-/.exec(target)?.[1].toLowerCase()
          if (kind && ref?.name === service.name && ref.portName === port.name) expected[kind] = target
        }
      }

      return expected
    },
    hasKubeProxyRules() {
      if (hasRules('nat', 'KUBE-SERVICES')) return true
      for (const chain of nat ?? []) if (chain.name.startsWith('KUBE-SVC-')) return true
      return false
    },
  }
}

interface InterfaceModel {
  space: InterfaceSpace
  dockerNames: string[]
  start(origin: Origin): Where
}

const DETECT_LOCAL_CHAINS = /^KUBE-(SVC|SVL|XLB|EXT)-/

/**
 * What the interfaces named in the rules are: kube-proxy's own "not from a pod" rules
 * (`! -i cali+ -j KUBE-MARK-MASQ`, --detect-local-mode InterfaceNamePrefix or BridgeInterface)
 * name the pods' interfaces; Docker's chains name its bridges, which pods do not use.
 */
function buildInterfaceModel(dump: IptablesDump): InterfaceModel {
  const space = new InterfaceSpace(dump.interfaceNames())
  const podPatterns = new Set<string>()
  const docker = new Set<string>()
  if (space.size > 2) {
    let examined = 0
    for (const chain of dump.chains('nat') ?? []) {
      if (!DETECT_LOCAL_CHAINS.test(chain.name) || chain.ruleCount === 0) continue
      for (const rule of chain.rulesMentioning('KUBE-MARK-MASQ')) {
        for (const c of rule.conditions) if (c.kind === 'interface' && c.field === 'in') podPatterns.add(c.name)
      }

      if (++examined >= 5) break
    }

    for (const chain of dump.chains('filter') ?? []) {
      const dockers = chain.name.startsWith('DOCKER')
      if (!dockers && chain.name !== 'FORWARD') continue
      for (const rule of chain.rules()) {
        if (!dockers && !(rule.action.kind === 'jump' && rule.action.chain.startsWith('DOCKER'))) continue
        for (const c of rule.conditions) if (c.kind === 'interface' && c.name !== '+') docker.add(c.name)
      }
    }
  }

  const atoms = [...Array(space.size).keys()]
  const isDocker = new Set(atoms.filter((a) => [...docker].some((d) => space.atomMatches(a, d))))
  const isPod = new Set(atoms.filter((a) => [...podPatterns].some((p) => space.atomMatches(a, p))))
  const notDocker = (a: number) => !isDocker.has(a)
  const starts = new Map<Origin, Where>()
  return {
    space,
    dockerNames: [...docker].sort(),
    start(origin) {
      let where = starts.get(origin)
      if (!where) {
        // Atom 0 is "no interface": only what the node itself sends arrives without one.
        const ins =
          origin === 'node'
            ? (a: number) => a === 0
            : origin === 'pod'
              ? (a: number) => (isPod.size > 0 ? isPod.has(a) : a !== 0 && notDocker(a))
              : (a: number) => a !== 0 && notDocker(a) && !isPod.has(a)
        where = space.product(ins, notDocker)
        starts.set(origin, where)
      }

      return where
    },
  }
}
