import assert from 'node:assert/strict'
import {randomBytes} from 'node:crypto'
import {existsSync, readFileSync} from 'node:fs'
import {join} from 'node:path'

import {execa} from 'execa'

import {parseIptablesSave} from '../../src/trace/iptables.js'
import {iptablesRuleSet} from '../../src/trace/iptables-rules.js'
import type {FrontendTrace, TraceResult} from '../../src/trace/model.js'
import {parseNftTable} from '../../src/trace/nftables.js'
import {nftRuleSet} from '../../src/trace/nft-rules.js'
import {READ_RULES_SCRIPT} from '../../src/trace/live.js'
import {detectMode, ruleSetFor, splitSections} from '../../src/trace/load.js'
import type {RuleSet} from '../../src/trace/trace.js'
import {traceService} from '../../src/trace/trace.js'
import {generateServices, iptablesSaveOf} from '../helpers/kube-proxy-dump.js'
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

function clusterFrontend(result: TraceResult, portName?: string): FrontendTrace {
  const port = portName === undefined ? result.ports[0] : result.ports.find((p) => p.port.name === portName)!
  const frontend = port.frontends.find((f) => f.kind === 'clusterIP' && f.assumptions.length === 0)
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
  const listen = frontends.flatMap((f) => [...f.endpoints.map((e) => `${e.ip}:${e.port}`), ...(f.verdicts.some((v) => v.kind === 'unhandled') ? [f.address] : [])])
  await ns.addAddresses(listen.map((a) => a.slice(0, a.lastIndexOf(':'))))
  // A target trace says reaches nothing needs few tries: each may wait out a 1 s timeout.
  const count = (f: FrontendTrace) => (f.endpoints.length === 0 && f.verdicts.every((v) => v.kind !== 'unhandled') ? 20 : CONNECTIONS)
  const landed = await ns.probe(listen, frontends.map((f) => ({target: f.address, count: count(f)})))
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

  it('iptables: generated kube-proxy rules with 7 endpoints (probabilities 1/7 ... 1/2)', async () => {
    const services = generateServices(3, 7)
    await ns.exec(['iptables-restore'], iptablesSaveOf(services))
    const rules = iptablesRuleSet(parseIptablesSave((await ns.exec(['iptables-save'])).stdout))
    await checkAgainstKernel(ns, rules, services.map((s) => `${s.namespace}/${s.name}`))
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
    const {stdout} = await ns.exec(['sh', '-c', READ_RULES_SCRIPT])
    const sections = splitSections(stdout)
    assert.equal(sections.iptablesCommand, 'iptables-legacy-save')
    assert.equal(detectMode(sections), 'iptables')
    await checkAgainstKernel(ns, ruleSetFor(sections, 'iptables'), ['default/web', 'default/shop'])
  })

  it("the node task's script reads kube-proxy's nftables table", async () => {
    await ns.exec(['nft', '-f', '-'], readFileSync(new URL('nftables-v1.33-node.txt', fixtures), 'utf8'))
    const sections = splitSections((await ns.exec(['sh', '-c', READ_RULES_SCRIPT])).stdout)
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
