import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'

import {InterfaceSpace} from '../../../src/trace/interfaces.js'
import {parseIptablesSave} from '../../../src/trace/iptables.js'
import {iptablesRuleSet} from '../../../src/trace/iptables-rules.js'
import type {FrontendTrace, TraceResult} from '../../../src/trace/model.js'
import {traceService} from '../../../src/trace/trace.js'
import {withHostRules} from '../../fixtures/kube-proxy/host-rules.js'

const v129 = readFileSync(new URL('../../fixtures/kube-proxy/iptables-v1.29-counters.txt', import.meta.url), 'utf8')

function trace(dump: string, namespace = 'default', name = 'web'): TraceResult {
  const rules = iptablesRuleSet(parseIptablesSave(dump))
  return traceService(rules, rules.findService(namespace, name)!)
}

const fromPods = (r: TraceResult) => r.ports[0].frontends.filter((f) => f.kind === 'clusterIP' && f.from === 'pod')
const shares = (f: FrontendTrace) =>
  Object.fromEntries([
    ...f.endpoints.map((e) => [`${e.ip}:${e.port}`, Number(e.share.toFixed(6))]),
    ...f.verdicts.map((v) => [v.kind, Number(v.share.toFixed(6))]),
  ])
const total = (f: FrontendTrace) => [...f.endpoints, ...f.verdicts].reduce((sum, x) => sum + x.share, 0)

/** "in via X ... in not via X" or "out via X ... out not via X" in one conjunction. */
function contradicts(condition: string): boolean {
  return condition.split(' or ').some((part) => {
    const via = [...part.matchAll(/(in|out) via (\S+)/g)].map((m) => `${m[1]} ${m[2]}`)
    const notVia = [...part.matchAll(/(in|out) not via (\S+)/g)].map((m) => `${m[1]} ${m[2]}`)
    return via.some((v) => notVia.includes(v))
  })
}

describe('trace with Docker and CNI filter rules (interface conditions)', () => {
  it("Docker's FORWARD rules with 16 bridge networks: one result per way in, well under a second", () => {
    const started = performance.now()
    const result = trace(withHostRules(v129, {dockerNetworks: 16, flannel: {podCidr: '10.244.0.0/16'}}))
    const ms = performance.now() - started
    assert.ok(ms < 1000, `${ms.toFixed(0)} ms`)
    const pods = fromPods(result)
    assert.equal(pods.length, 1, JSON.stringify(pods.map((f) => f.assumptions)))
    assert.deepEqual(shares(pods[0]), {'10.244.1.5:8080': 0.333333, '10.244.2.6:8080': 0.333333, '10.244.3.7:8080': 0.333333})
    assert.ok(JSON.stringify(result).length < 50_000)
    assert.ok(
      result.notes.some((n) => n.includes('docker0')),
      'the Docker assumption is a note',
    )
  })

  it('-i docker0 is not read as "comes from a pod"', () => {
    // Without flannel nothing accepts a pod's forwarded packet: Docker's FORWARD policy DROP drops it.
    const pods = fromPods(trace(withHostRules(v129, {dockerNetworks: 1})))
    assert.equal(pods.length, 1)
    assert.deepEqual(shares(pods[0]), {drop: 1})
    assert.match(pods[0].verdicts[0].reason, /policy is DROP/)
  })

  it('built-in chain policies: FORWARD DROP with nothing accepting is 100% DROP, not delivery', () => {
    const dropping = v129.replace('*filter\n:INPUT ACCEPT [5000:300000]\n:FORWARD ACCEPT [0:0]', '*filter\n:INPUT ACCEPT [5000:300000]\n:FORWARD DROP [0:0]')
    assert.notEqual(dropping, v129)
    const pods = fromPods(trace(dropping))
    assert.deepEqual(shares(pods[0]), {drop: 1})
  })

  it('with interface names it cannot place, 16 networks still end in a few cells, none contradictory, each adding up to 100%', () => {
    // Renamed chains hide that these are Docker's bridges: every -i/-o is an open question.
    const dump = withHostRules(v129, {dockerNetworks: 16}).replaceAll('DOCKER', 'ISOLATE')
    const started = performance.now()
    const result = trace(dump)
    const ms = performance.now() - started
    assert.ok(ms < 1000, `${ms.toFixed(0)} ms`)
    const pods = fromPods(result)
    assert.ok(pods.length <= 20, `${pods.length} cells`)
    for (const f of pods) {
      assert.ok(!contradicts(f.assumptions.join(' and ')), f.assumptions.join(' and '))
      assert.ok(Math.abs(total(f) - 1) < 1e-9, `${f.assumptions}: ${total(f)}`)
    }

    // Forwarded between two of the networks: the isolation rule drops it.
    assert.ok(pods.some((f) => f.verdicts.some((v) => v.kind === 'drop' && v.chain === 'ISOLATE-ISOLATION-STAGE-2')))
    assert.ok(pods.some((f) => f.endpoints.length === 3))
  })

  it('Calico-style dispatch: unknown cali interfaces are dropped, known workloads go through', () => {
    const pods = fromPods(trace(withHostRules(v129, {calico: {workloads: ['calia1b2c3d4e5f', 'cali0f9e8d7c6b5']}})))
    for (const f of pods) assert.ok(!contradicts(f.assumptions.join(' and ')))
    assert.ok(pods.some((f) => f.verdicts.some((v) => v.reason === 'cali:Unknown interface')))
    const delivered = pods.find((f) => f.endpoints.length === 3)
    assert.ok(delivered && Math.abs(total(delivered) - 1) < 1e-9)
  })
})

describe('interface space', () => {
  const space = new InterfaceSpace(['docker0', 'br-1', 'cali+', 'calia'])
  it('prunes contradictions and keeps wildcards apart from exact names', () => {
    const inDocker = space.condition('in', 'docker0', false)
    const notInDocker = space.condition('in', 'docker0', true)
    assert.ok(space.isEmpty(space.and(inDocker, notInDocker)))
    assert.ok(space.equal(space.or(inDocker, notInDocker), space.full()))
    // calia matches cali+; the wildcard atom "cali+" stands for cali names other than calia.
    assert.ok(space.atomMatches(space.atoms.indexOf('calia'), 'cali+'))
    assert.ok(!space.atomMatches(space.atoms.indexOf('cali+'), 'calia'))
    assert.ok(space.atomMatches(space.atoms.indexOf('cali+'), '+'))
  })

  it('describes a set relative to what the origin allows', () => {
    const base = space.full()
    assert.equal(space.describe(base, base), '')
    assert.equal(space.describe(space.condition('out', 'docker0', false), base), 'out via docker0')
    assert.equal(space.describe(space.condition('in', 'br-1', true), base), 'in not via br-1')
  })
})
