import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {existsSync, readFileSync, symlinkSync} from 'node:fs'
import {join} from 'node:path'

import {execa} from 'execa'

import {parseIptablesSave} from '../../src/trace/iptables.js'
import {iptablesRuleSet} from '../../src/trace/iptables-rules.js'
import type {FrontendTrace, TraceResult} from '../../src/trace/model.js'
import {parseNftTable} from '../../src/trace/nftables.js'
import {nftRuleSet} from '../../src/trace/nft-rules.js'
import {serviceRulesScript} from '../../src/trace/live.js'
import {detectMode, ruleSetFor, splitSections} from '../../src/trace/load.js'
import type {RuleSet} from '../../src/trace/trace.js'
import {traceService} from '../../src/trace/trace.js'
import {withHostRules} from '../fixtures/kube-proxy/host-rules.js'
import {distrolessPath} from '../helpers/distroless-tools.js'
import {generateServices, iptablesSaveOf, nftTableOf} from '../helpers/kube-proxy-dump.js'
import {assertKernelAgrees, probeInNamespace} from './kernel/agreement.js'
import {inCI, sharedFixturesDir} from '../helpers/ci.js'

/**
 * The kernel as oracle: load kube-proxy rules into a network namespace of our own, listen on
 * the endpoint addresses, connect to the ClusterIP many times and check that every connection
 * lands where `trace` said and that the split matches its shares. Every address lives inside
 * the namespace, which is deleted afterwards.
 */

const CONNECTIONS = 300
const fixtures = new URL('../fixtures/kube-proxy/', import.meta.url)

async function which(command: string): Promise<boolean> {
  return (await execa('sh', ['-c', `command -v ${command}`], {reject: false})).exitCode === 0
}

async function kernelUnavailable(): Promise<string | undefined> {
  if (process.platform !== 'linux') return 'network namespaces need Linux'
  if (process.getuid?.() !== 0) return 'needs root to create a network namespace (ip netns add)'
  for (const command of ['ip', 'iptables-restore', 'iptables-save', 'nft']) {
    if (!(await which(command))) return `${command} is not installed (apt-get install iproute2 iptables nftables)`
  }

  return undefined
}

class TestNamespace {
  readonly name = `selfhost-trace-${process.pid}-${randomBytes(3).toString('hex')}`
  private created = false

  async create(): Promise<void> {
    await execa('ip', ['netns', 'add', this.name])
    this.created = true
    await this.exec(['ip', 'link', 'set', 'lo', 'up'])
    // Everything is local: endpoints (and the addresses we listen on) sit on lo.
    await this.exec(['ip', 'route', 'add', 'default', 'dev', 'lo'])
  }

  exec(argv: string[], input?: string) {
    return execa('ip', ['netns', 'exec', this.name, ...argv], {input})
  }

  async addAddresses(ips: Iterable<string>): Promise<void> {
    for (const ip of new Set(ips)) await this.exec(['ip', 'addr', 'add', `${ip}/32`, 'dev', 'lo'])
  }

  /** Listens on `listen`, connects `count` times to each target; where each landed. */
  probe(listen: string[], targets: Array<{target: string; count: number}>): Promise<Record<string, Record<string, number>>> {
    return probeInNamespace(this.name, listen, targets)
  }

  async delete(): Promise<void> {
    if (this.created) await execa('ip', ['netns', 'del', this.name], {reject: false})
    this.created = false
  }
}

/** The ClusterIP result for connections from `from`: the probe's own connections start on the node itself. */
function clusterFrontend(result: TraceResult, portName?: string, from: 'node' | 'pod' = 'node'): FrontendTrace {
  const port = portName === undefined ? result.ports[0] : result.ports.find((p) => p.port.name === portName)!
  const frontend =
    port.frontends.find((f) => f.kind === 'clusterIP' && f.assumptions.length === 0 && f.from === from) ??
    // A node result that routes exactly like a pod's is folded into the pod's.
    port.frontends.find((f) => f.kind === 'clusterIP' && f.assumptions.length === 0)
  assert.ok(frontend, `a ClusterIP frontend for ${result.service.namespace}/${result.service.name}`)
  return frontend
}

/** Traces the named Services, runs the probe against their ClusterIPs, compares. */
async function checkAgainstKernel(ns: TestNamespace, rules: RuleSet, names: string[]): Promise<void> {
  const frontends = names.map((full) => {
    const [namespace, name] = full.split('/')
    const service = rules.findService(namespace, name)
    assert.ok(service, `${full} in the rules`)
    return clusterFrontend(traceService(rules, service))
  })
  const listen = frontends.flatMap((f) => [
    ...f.endpoints.map((e) => `${e.ip}:${e.port}`),
    ...(f.verdicts.some((v) => v.kind === 'unhandled') ? [f.address] : []),
  ])
  await ns.addAddresses(listen.map((a) => a.slice(0, a.lastIndexOf(':'))))
  // A target trace says reaches nothing needs few tries: each may wait out a 1 s timeout.
  const count = (f: FrontendTrace) => (f.endpoints.length === 0 && f.verdicts.every((v) => v.kind !== 'unhandled') ? 20 : CONNECTIONS)
  const landed = await ns.probe(
    listen,
    frontends.map((f) => ({target: f.address, count: count(f)})),
  )
  for (const f of frontends) assertKernelAgrees(f, landed[f.address], count(f))
}

describe('trace agrees with the kernel (network namespace, real iptables/nftables)', function () {
  this.timeout(180_000)
  let ns: TestNamespace

  before(async function () {
    const reason = await kernelUnavailable()
    if (reason) {
      // CI has root and the tools: a test that cannot run there must fail, not pass silently.
      if (inCI()) throw new Error(`the kernel test cannot run in CI: ${reason}`)
      console.log(`    skipped: ${reason}`)
      this.skip()
    }
  })

  beforeEach(async () => {
    ns = new TestNamespace()
    await ns.create()
  })

  afterEach(async () => {
    await ns?.delete()
  })

  it('iptables: the hand-written v1.29 node dump, re-read from the kernel with iptables-save', async () => {
    await ns.exec(['iptables-restore', '-c'], readFileSync(new URL('iptables-v1.29-counters.txt', fixtures), 'utf8'))
    const {stdout} = await ns.exec(['iptables-save'])
    const rules = iptablesRuleSet(parseIptablesSave(stdout))
    // web: thirds; broken: 50% / 25% and 25% left unNATed; shop and edge: halves and thirds.
    await checkAgainstKernel(ns, rules, ['default/web', 'default/broken', 'default/shop', 'default/edge'])
  })

  it('iptables: the hand-written v1.14 layout ("ns/name: cluster IP" comments, unnamed ports, a direct MARK masquerade rule)', async () => {
    await ns.exec(['iptables-restore'], readFileSync(new URL('iptables-v1.14-unnamed-port.txt', fixtures), 'utf8'))
    const rules = iptablesRuleSet(parseIptablesSave((await ns.exec(['iptables-save'])).stdout))
    await checkAgainstKernel(ns, rules, ['default/hostnames', 'default/direct'])
  })

  it('iptables-legacy: a 70-deep acyclic chain of jumps in front of a Service (more than the nft backend allows), as the kernel follows it', async function () {
    if (!(await which('iptables-legacy-restore'))) {
      if (inCI()) throw new Error('iptables-legacy-restore is missing in CI (Debian iptables ships it)')
      this.skip()
    }

    const depth = 70
    const hops = Array.from({length: depth}, (_, i) => `HOP-${i}`)
    const dump = readFileSync(new URL('iptables-v1.29-counters.txt', fixtures), 'utf8')
      .replace(':KUBE-SVC-25DWG537JSJ6MPWM - [0:0]', `:KUBE-SVC-25DWG537JSJ6MPWM - [0:0]\n${hops.map((h) => `:${h} - [0:0]`).join('\n')}`)
      .replace(
        '-A KUBE-SERVICES -d 10.96.10.10/32',
        `-A KUBE-SERVICES -d 10.96.10.10/32 -p tcp -m tcp --dport 80 -j HOP-0\n${hops.map((h, i) => `-A ${h} -j ${hops[i + 1] ?? 'RETURN'}`).join('\n')}\n-A KUBE-SERVICES -d 10.96.10.10/32`,
      )
    await ns.exec(['iptables-legacy-restore'], dump)
    const rules = iptablesRuleSet(parseIptablesSave((await ns.exec(['iptables-legacy-save'])).stdout))
    await checkAgainstKernel(ns, rules, ['default/web'])
  })

  it('iptables: generated kube-proxy rules with 7 endpoints (probabilities 1/7 ... 1/2)', async () => {
    const services = generateServices(3, 7)
    await ns.exec(['iptables-restore'], iptablesSaveOf(services))
    const rules = iptablesRuleSet(parseIptablesSave((await ns.exec(['iptables-save'])).stdout))
    await checkAgainstKernel(
      ns,
      rules,
      services.map((s) => `${s.namespace}/${s.name}`),
    )
  })

  it('nftables: the hand-written v1.33 table, re-listed by nft (numgen random mod 3, REJECT of a Service without endpoints)', async () => {
    await ns.exec(['nft', '-f', '-'], readFileSync(new URL('nftables-v1.33-node.txt', fixtures), 'utf8'))
    const {stdout} = await ns.exec(['nft', 'list', 'table', 'ip', 'kube-proxy'])
    const rules = nftRuleSet(parseNftTable(stdout))
    await checkAgainstKernel(ns, rules, ['default/web', 'default/empty'])
  })

  it('nftables: session affinity keeps one client on one endpoint that trace listed', async () => {
    await ns.exec(['nft', '-f', '-'], readFileSync(new URL('nftables-v1.33-node.txt', fixtures), 'utf8'))
    const rules = nftRuleSet(parseNftTable((await ns.exec(['nft', 'list', 'table', 'ip', 'kube-proxy'])).stdout))
    const sticky = clusterFrontend(traceService(rules, rules.findService('default', 'sticky')!))
    assert.ok(sticky.endpoints.length === 2 && sticky.endpoints.every((e) => e.affinitySeconds === 10_800))
    const listen = sticky.endpoints.map((e) => `${e.ip}:${e.port}`)
    await ns.addAddresses(sticky.endpoints.map((e) => e.ip))
    const landed = (await ns.probe(listen, [{target: sticky.address, count: 50}]))[sticky.address]
    assert.equal(Object.keys(landed).length, 1, `all 50 connections on one endpoint: ${JSON.stringify(landed)}`)
    assert.ok(listen.includes(Object.keys(landed)[0]))
  })

  it("the node task's script finds rules in the legacy backend when the nft backend is empty, and the kernel agrees", async function () {
    if (!(await which('iptables-legacy-restore'))) {
      if (inCI()) throw new Error('iptables-legacy-restore is missing in CI (Debian iptables ships it)')
      this.skip()
    }

    await ns.exec(['iptables-legacy-restore', '-c'], readFileSync(new URL('iptables-v1.29-counters.txt', fixtures), 'utf8'))
    const {stdout} = await ns.exec(['sh', '-c', serviceRulesScript('default', 'web')])
    const sections = splitSections(stdout)
    assert.equal(sections.iptablesCommand, 'iptables-legacy-save')
    assert.equal(detectMode(sections), 'iptables')
    await checkAgainstKernel(ns, ruleSetFor(sections, 'iptables'), ['default/web', 'default/shop'])
  })

  it("on a big node (2,500 Services x 10 endpoints, Docker's rules) the node task reads only the Service's chains, and the kernel agrees", async () => {
    const services = generateServices(2500, 10)
    const filter = [
      '*filter',
      ':INPUT ACCEPT [0:0]',
      ':FORWARD ACCEPT [0:0]',
      ':OUTPUT ACCEPT [0:0]',
      ':KUBE-FORWARD - [0:0]',
      '-A FORWARD -j KUBE-FORWARD',
      '-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT',
      'COMMIT',
      '',
    ].join('\n')
    await ns.exec(['iptables-restore'], withHostRules(filter + iptablesSaveOf(services), {dockerNetworks: 4, flannel: {podCidr: '10.128.0.0/9'}}))
    const last = services.at(-1)!
    let started = performance.now()
    const {stdout} = await ns.exec(['sh', '-c', serviceRulesScript(last.namespace, last.name)])
    const partialMs = performance.now() - started
    started = performance.now()
    const whole = (await ns.exec(['iptables-save'])).stdout
    const wholeMs = performance.now() - started
    const sections = splitSections(stdout)
    assert.equal(sections.partial, true)
    const lines = sections.iptables!.split('\n').length
    assert.ok(lines < 200, `${lines} lines read`)
    console.log(
      `      partial read: ${lines} lines in ${partialMs.toFixed(0)} ms; iptables-save: ${whole.split('\n').length} lines in ${wholeMs.toFixed(0)} ms`,
    )
    const partial = ruleSetFor(sections, 'iptables')
    const full = iptablesRuleSet(parseIptablesSave(whole))
    const fromPartial = traceService(partial, partial.findService(last.namespace, last.name)!)
    const fromWhole = traceService(full, full.findService(last.namespace, last.name)!)
    // The same routing from either read (line numbers differ: they are lines of different texts).
    const routing = (r: TraceResult) =>
      r.ports.flatMap((p) =>
        p.frontends.map((f) => [
          f.kind,
          f.from,
          f.assumptions,
          f.endpoints.map((e) => [e.ip, e.port, e.share.toFixed(9), e.masquerade]),
          f.verdicts.map((v) => [v.kind, v.share]),
        ]),
      )
    assert.deepEqual(routing(fromPartial), routing(fromWhole))
    assert.equal(fromPartial.ports[0].frontends[0].endpoints.length, 10)
    await checkAgainstKernel(ns, partial, [`${last.namespace}/${last.name}`])
  })

  it("on a big nftables node (2,100 Services x 2 endpoints) the node task cuts the table to the Service's chains and elements, and the kernel agrees", async () => {
    const services = generateServices(2100, 2)
    await ns.exec(['nft', '-f', '-'], nftTableOf(services))
    const last = services.at(-1)!
    // Only the tools the kube-proxy image has (no sed, awk, head), and nft.
    const path = distrolessPath()
    symlinkSync((await execa('sh', ['-c', 'command -v nft'])).stdout.trim(), join(path, 'nft'))
    let started = performance.now()
    const {stdout} = await ns.exec(['env', '-i', `PATH=${path}`, 'sh', '-c', serviceRulesScript(last.namespace, last.name)])
    const partialMs = performance.now() - started
    started = performance.now()
    const whole = (await ns.exec(['nft', 'list', 'table', 'ip', 'kube-proxy'])).stdout
    const wholeMs = performance.now() - started
    const sections = splitSections(stdout)
    assert.equal(sections.nftPartial, true)
    assert.equal(detectMode(sections), 'nftables')
    const lines = sections.nft!.split('\n').length
    assert.ok(lines < 150, `${lines} lines kept`)
    console.log(
      `      nft, cut on the node: ${lines} lines in ${partialMs.toFixed(0)} ms; the whole listing: ${whole.split('\n').length} lines in ${wholeMs.toFixed(0)} ms`,
    )
    const partial = ruleSetFor(sections, 'nftables')
    const full = nftRuleSet(parseNftTable(whole))
    // Another Service's chains are not there; this one's routes exactly as in the whole table.
    assert.equal(partial.findService(services[0].namespace, services[0].name), undefined)
    const fromPartial = traceService(partial, partial.findService(last.namespace, last.name)!)
    const fromWhole = traceService(full, full.findService(last.namespace, last.name)!)
    const routing = (r: TraceResult) =>
      r.ports.flatMap((p) =>
        p.frontends.map((f) => [
          f.kind,
          f.from,
          f.assumptions,
          f.endpoints.map((e) => [e.ip, e.port, e.share.toFixed(9), e.masquerade]),
          f.verdicts.map((v) => [v.kind, v.share]),
        ]),
      )
    assert.deepEqual(routing(fromPartial), routing(fromWhole))
    assert.equal(fromPartial.ports[0].frontends[0].endpoints.length, 2)
    await checkAgainstKernel(ns, partial, [`${last.namespace}/${last.name}`])
    // An address of the cut's cluster-ips set is this Service's alone: a wrong port of it is still refused.
    assert.ok(sections.nft!.includes(`elements = { ${last.clusterIP} }`), "cluster-ips kept to the Service's address")
  })

  it("the node task's script reads kube-proxy's nftables table", async () => {
    await ns.exec(['nft', '-f', '-'], readFileSync(new URL('nftables-v1.33-node.txt', fixtures), 'utf8'))
    const sections = splitSections((await ns.exec(['sh', '-c', serviceRulesScript('default', 'web')])).stdout)
    assert.equal(detectMode(sections), 'nftables')
    await checkAgainstKernel(ns, ruleSetFor(sections, 'nftables'), ['default/web'])
  })

  it('iptables: kube-proxy v1.27 test data with the OUTPUT jumps a real node has (../shared/fixtures)', async function () {
    // Missing fixtures fail in CI and skip elsewhere with one line saying why.
    const shared = sharedFixturesDir('kube-proxy')
    if (!shared) this.skip()
    const file = join(shared!, 'kube-proxy-test-v1.27-TestOverallIPTablesRulesWithMultipleServices.txt')
    if (!existsSync(file)) throw new Error(`${file} is missing`)

    const original = readFileSync(file, 'utf8')
    // kube-proxy's test data has no built-in chains: add the jumps a node's nat and filter tables have.
    const [filter, nat] = original.split('COMMIT\n')
    const withJumps = `${filter}-A OUTPUT -m conntrack --ctstate NEW -j KUBE-SERVICES\nCOMMIT\n${nat}-A OUTPUT -j KUBE-SERVICES\nCOMMIT\n`
    await ns.exec(['iptables-restore'], withJumps)
    const rules = iptablesRuleSet(parseIptablesSave(original))
    await checkAgainstKernel(ns, rules, ['ns1/svc1', 'ns4/svc4', 'ns6/svc6'])
  })
})

/**
 * A node that forwards: a client namespace (a pod on another node, 10.244.9.9) reaches the
 * node through eth0, endpoints live in a third namespace behind cni0, so the packet takes
 * nat PREROUTING and filter FORWARD, where Docker's and flannel's rules sit.
 */
class ForwardingNode {
  private readonly id = `${process.pid}-${randomBytes(2).toString('hex')}`
  readonly node = `selfhost-fwd-n-${this.id}`
  readonly client = `selfhost-fwd-c-${this.id}`
  readonly pods = `selfhost-fwd-p-${this.id}`
  private made: string[] = []

  private run(netns: string, argv: string[], input?: string) {
    return execa('ip', ['netns', 'exec', netns, ...argv], {input})
  }

  async create(): Promise<void> {
    for (const ns of [this.node, this.client, this.pods]) {
      await execa('ip', ['netns', 'add', ns])
      this.made.push(ns)
      await this.run(ns, ['ip', 'link', 'set', 'lo', 'up'])
    }

    const steps: Array<[string, string[]]> = [
      [this.node, ['ip', 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'c0', 'netns', this.client]],
      [this.node, ['ip', 'link', 'add', 'cni0', 'type', 'veth', 'peer', 'name', 'p0', 'netns', this.pods]],
      [this.node, ['ip', 'addr', 'add', '192.0.2.1/24', 'dev', 'eth0']],
      [this.node, ['ip', 'addr', 'add', '198.51.100.1/24', 'dev', 'cni0']],
      [this.node, ['ip', 'link', 'set', 'eth0', 'up']],
      [this.node, ['ip', 'link', 'set', 'cni0', 'up']],
      [this.node, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']],
      [this.node, ['ip', 'route', 'add', '10.244.0.0/16', 'via', '198.51.100.2', 'dev', 'cni0']],
      [this.node, ['ip', 'route', 'add', '10.244.9.9/32', 'via', '192.0.2.10', 'dev', 'eth0']],
      [this.client, ['ip', 'addr', 'add', '192.0.2.10/24', 'dev', 'c0']],
      [this.client, ['ip', 'addr', 'add', '10.244.9.9/32', 'dev', 'c0']],
      [this.client, ['ip', 'link', 'set', 'c0', 'up']],
      [this.client, ['ip', 'route', 'add', 'default', 'via', '192.0.2.1', 'src', '10.244.9.9']],
      [this.pods, ['ip', 'addr', 'add', '198.51.100.2/24', 'dev', 'p0']],
      [this.pods, ['ip', 'link', 'set', 'p0', 'up']],
      [this.pods, ['ip', 'route', 'add', 'default', 'via', '198.51.100.1']],
    ]
    for (const [ns, argv] of steps) await this.run(ns, argv)
  }

  restore(dump: string) {
    return this.run(this.node, ['iptables-restore'], dump)
  }

  /** Endpoints listen in the pods' namespace; the client connects `count` times to `target`. */
  async probe(endpoints: string[], target: string, count: number): Promise<Record<string, number>> {
    for (const ip of new Set(endpoints.map((e) => e.slice(0, e.lastIndexOf(':'))))) await this.run(this.pods, ['ip', 'addr', 'add', `${ip}/32`, 'dev', 'lo'])
    const listener = execa('ip', ['netns', 'exec', this.pods, process.execPath, '-e', LISTENER, JSON.stringify(endpoints)], {reject: false})
    await new Promise<void>((resolve, reject) => {
      listener.stdout!.on('data', (chunk: Buffer) => chunk.toString().includes('ready') && resolve())
      listener.once('exit', () => reject(new Error('listener exited')))
    })
    try {
      return (await probeInNamespace(this.client, [], [{target, count}]))[target]
    } finally {
      listener.kill()
      await listener
    }
  }

  async delete(): Promise<void> {
    for (const ns of this.made) await execa('ip', ['netns', 'del', ns], {reject: false})
    this.made = []
  }
}

const LISTENER = `
const net = require('node:net')
let open = 0
const addresses = JSON.parse(process.argv[1])
for (const a of addresses) {
  const i = a.lastIndexOf(':')
  net.createServer((s) => s.end(s.localAddress + ':' + s.localPort + '\\n')).listen({host: a.slice(0, i), port: Number(a.slice(i + 1))}, () => {
    if (++open === addresses.length) console.log('ready')
  })
}
`

describe('trace agrees with the kernel on a forwarding node with Docker and flannel filter rules (three network namespaces)', function () {
  this.timeout(180_000)
  let node: ForwardingNode
  const v129 = () => readFileSync(new URL('iptables-v1.29-counters.txt', fixtures), 'utf8')

  before(async function () {
    const reason = await kernelUnavailable()
    if (reason) {
      if (inCI()) throw new Error(`the kernel test cannot run in CI: ${reason}`)
      this.skip()
    }
  })

  beforeEach(async () => {
    node = new ForwardingNode()
    await node.create()
  })

  afterEach(async () => {
    await node?.delete()
  })

  async function agree(dump: string): Promise<FrontendTrace> {
    await node.restore(dump)
    const rules = iptablesRuleSet(parseIptablesSave((await execa('ip', ['netns', 'exec', node.node, 'iptables-save'])).stdout))
    const web = clusterFrontend(traceService(rules, rules.findService('default', 'web')!), undefined, 'pod')
    const endpoints = ['10.244.1.5:8080', '10.244.2.6:8080', '10.244.3.7:8080']
    const count = web.endpoints.length === 0 ? 20 : CONNECTIONS
    assertKernelAgrees(web, await node.probe(endpoints, web.address, count), count)
    return web
  }

  it("Docker's FORWARD policy DROP with 4 bridge networks and no CNI rule accepting: trace says DROP and nothing lands", async () => {
    const web = await agree(withHostRules(v129(), {dockerNetworks: 4}))
    assert.equal(web.endpoints.length, 0)
    assert.match(web.verdicts[0].reason, /policy is DROP/)
  })

  it("Docker's rules (16 networks) plus flannel's FLANNEL-FWD: thirds, as the kernel spreads them", async () => {
    const web = await agree(withHostRules(v129(), {dockerNetworks: 16, flannel: {podCidr: '10.244.0.0/16'}}))
    assert.equal(web.endpoints.length, 3)
  })

  it('Calico-style FORWARD: a packet out via a non-cali interface meets the DROP policy, as trace says for that cell', async () => {
    await node.restore(withHostRules(v129(), {dockerNetworks: 1, calico: {workloads: ['calia1b2c3d4e5f']}}))
    const rules = iptablesRuleSet(parseIptablesSave((await execa('ip', ['netns', 'exec', node.node, 'iptables-save'])).stdout))
    const cells = traceService(rules, rules.findService('default', 'web')!).ports[0].frontends.filter((f) => f.kind === 'clusterIP')
    // This node's interfaces are eth0 in and cni0 out: names no rule mentions.
    const cell = cells.find((f) => f.assumptions.some((a) => a.includes('in not via') && a.includes('out not via') && !a.includes(' or ')))
    assert.ok(cell, JSON.stringify(cells.map((c) => c.assumptions)))
    assertKernelAgrees(cell, await node.probe(['10.244.1.5:8080', '10.244.2.6:8080', '10.244.3.7:8080'], cell.address, 20), 20)
  })
})
