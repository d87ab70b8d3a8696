import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'

import {CliError} from '../../../src/errors.js'
import {nftServiceChains} from '../../../src/trace/hash.js'
import {parseIpvs} from '../../../src/trace/ipvs.js'
import {detectMode, ruleSetFor, splitSections} from '../../../src/trace/load.js'
import type {FrontendTrace, TraceResult} from '../../../src/trace/model.js'
import {parseNftTable} from '../../../src/trace/nftables.js'
import {servicesAtAddress, traceService} from '../../../src/trace/trace.js'

const fixture = (name: string) => readFileSync(new URL(`../../fixtures/kube-proxy/${name}`, import.meta.url), 'utf8')

function load(name: string) {
  const sections = splitSections(fixture(name))
  const mode = detectMode(sections)!
  return ruleSetFor(sections, mode)
}

const only = (result: TraceResult, kind: string, from: string): FrontendTrace => {
  const found = result.ports.flatMap((p) => p.frontends).filter((f) => f.kind === kind && f.from === from)
  assert.equal(found.length, 1, `${kind} from ${from}`)
  return found[0]
}

const shares = (f: FrontendTrace) => Object.fromEntries(f.endpoints.map((e) => [`${e.ip}:${e.port}`, Number(e.share.toFixed(9))]))

describe('nftables trace (hand-written v1.33 table)', () => {
  const rules = load('nftables-v1.33-node.txt')

  it('is recognised as nftables and rebuilds Services from map keys and chain names', () => {
    assert.equal(rules.mode, 'nftables')
    assert.deepEqual(rules.serviceNames().sort(), ['default/empty', 'default/sticky', 'default/web', 'kube-system/kube-dns'])
    assert.deepEqual(rules.findService('default', 'web')?.ports, [{name: 'http', protocol: 'tcp', port: 80, nodePort: 30080}])
    assert.deepEqual(
      rules.clusterCidrs().map((c) => c.text),
      ['10.244.0.0/16'],
    )
    assert.deepEqual(rules.notes, [])
  })

  it('splits numgen random mod 3 into thirds through the hooked chains, masquerading NodePort traffic only', () => {
    const result = traceService(rules, rules.findService('default', 'web')!)
    const cluster = only(result, 'clusterIP', 'pod')
    assert.deepEqual(shares(cluster), {'10.244.1.5:8080': 0.333333333, '10.244.2.6:8080': 0.333333333, '10.244.3.7:8080': 0.333333333})
    assert.ok(cluster.endpoints.every((e) => !e.masquerade && e.chain?.startsWith('endpoint-')))
    assert.equal(cluster.tree[0].chain, 'nat-prerouting')
    const nodePort = only(result, 'nodePort', 'external')
    assert.equal(nodePort.endpoints.length, 3)
    assert.ok(nodePort.endpoints.every((e) => e.masquerade))
    assert.equal(result.ports[0].expectedChains?.service, nftServiceChains('default', 'web', 'http', 'tcp').service)
    assert.deepEqual(result.findings, [])
  })

  it('reports affinity sets and UDP', () => {
    const sticky = only(traceService(rules, rules.findService('default', 'sticky')!), 'clusterIP', 'pod')
    assert.deepEqual(shares(sticky), {'10.244.1.8:8443': 0.5, '10.244.2.9:8443': 0.5})
    assert.ok(
      sticky.endpoints.every((e) => e.affinitySeconds === 10_800),
      'timeout 3h of the affinity sets',
    )
    const dns = only(traceService(rules, rules.findService('kube-system', 'kube-dns')!), 'clusterIP', 'pod')
    assert.deepEqual(shares(dns), {'10.244.1.2:53': 0.5, '10.244.2.3:53': 0.5})
  })

  it('rejects a Service without endpoints through no-endpoint-services, naming it', () => {
    const empty = only(traceService(rules, rules.findService('default', 'empty')!), 'clusterIP', 'pod')
    assert.deepEqual(
      empty.verdicts.map((v) => [v.kind, v.share, v.chain, v.reason]),
      [['reject', 1, 'reject-chain', 'REJECT in reject-chain (default/empty:http)']],
    )
  })

  it('fails on a listing that is not nft output, naming the line', () => {
    assert.throws(
      () => parseNftTable('hello\n'),
      (e: unknown) => e instanceof CliError && /line 1: expected "table <family> <name> \{"/.test(e.message),
    )
    assert.throws(() => parseNftTable('table ip kube-proxy {\n\tbogus thing\n}\n'), /line 2: unexpected "bogus thing"/)
    assert.throws(() => parseNftTable('table ip kube-proxy {\n\tmap m {\n\t\telements = { 1 : goto a,\n'), /line 3: the elements of m never end/)
  })
})

describe('IPVS trace', () => {
  const rules = load('ipvs-v1.28-node.txt')
  const at = (ip: string, port?: number) => {
    const [service] = servicesAtAddress(rules, ip, port)
    assert.ok(service, `${ip}:${port} found`)
    return traceService(rules, service, {nodeAddress: '192.168.0.2'})
  }

  it('is recognised as IPVS with the iptables rules it keeps', () => {
    assert.equal(rules.mode, 'ipvs')
    assert.deepEqual(
      rules.clusterCidrs().map((c) => c.text),
      ['10.244.0.0/16'],
    )
  })

  it('shares by weight and leaves out weight-0 (quiesced) real servers', () => {
    assert.deepEqual(shares(only(at('10.96.30.1', 80), 'clusterIP', 'pod')), {'10.244.1.5:8080': 0.75, '10.244.2.6:8080': 0.25})
  })

  it('shows persistence as session affinity and both protocols of one address', () => {
    const sticky = only(at('10.96.30.2', 443), 'clusterIP', 'pod')
    assert.ok(sticky.endpoints.every((e) => e.affinitySeconds === 10_800))
    const dns = at('10.96.0.10')
    assert.deepEqual(dns.ports.map((p) => p.port.protocol).sort(), ['tcp', 'udp'])
  })

  it('drops at a virtual server without real servers', () => {
    const empty = only(at('10.96.30.3', 80), 'clusterIP', 'pod')
    assert.deepEqual(
      empty.verdicts.map((v) => v.kind),
      ['drop'],
    )
    assert.match(empty.verdicts[0].reason, /no real servers/)
  })

  it('reads /proc/net/ip_vs (hex) the same way', () => {
    const proc = load('proc-net-ip_vs.txt')
    const [service] = servicesAtAddress(proc, '10.96.0.1', 443)
    const f = only(traceService(proc, service), 'clusterIP', 'pod')
    assert.deepEqual(shares(f), {'192.168.0.10:6443': 1})
    assert.equal(f.endpoints[0].affinitySeconds, 10_800)
  })

  it('names the line of a garbled listing', () => {
    assert.throws(() => parseIpvs('IP Virtual Server version 1.2.1\nTCP  10.0.0.1:80 rr\n  -> nonsense\n'), /IPVS listing, line 3: "-> nonsense" is neither/)
  })
})

describe('listings captured from the kernel (iptables-save v1.8.9, nft v1.0.6)', () => {
  const summary = (file: string, names: string[]) => {
    const rules = load(file)
    return names.map((full) => {
      const [namespace, name] = full.split('/')
      const result = traceService(rules, rules.findService(namespace, name)!)
      return result.ports.map((p) =>
        p.frontends.map((f) => [f.kind, f.from, f.assumptions, shares(f), f.verdicts.map((v) => [v.kind, Number(v.share.toFixed(9))])]),
      )
    })
  }

  it('trace the kernel rendering of the iptables fixture exactly as the fixture itself', () => {
    const names = [
      'default/web',
      'default/sticky',
      'kube-system/kube-dns',
      'default/node-local',
      'default/empty',
      'default/shop',
      'default/edge',
      'default/broken',
      'default/cafe',
    ]
    assert.deepEqual(summary('captured-iptables-save-v1.8.9-nft.txt', names), summary('iptables-v1.29-counters.txt', names))
  })

  it('trace the kernel rendering of the nftables fixture exactly as the fixture itself', () => {
    const names = ['default/web', 'default/sticky', 'kube-system/kube-dns', 'default/empty']
    assert.deepEqual(summary('captured-nft-list-v1.0.6.txt', names), summary('nftables-v1.33-node.txt', names))
  })
})

describe('a real kube-proxy v1.37.2 dump (captured on the test cluster)', () => {
  const rules = load('captured-kube-proxy-v1.37.2-iptables.txt')
  const traced = (namespace: string, name: string) => traceService(rules, rules.findService(namespace, name)!)

  it('shop/web: a third to each endpoint from pods, masqueraded NodePort 30080 from outside', () => {
    const result = traced('shop', 'web')
    assert.deepEqual(shares(only(result, 'clusterIP', 'pod')), {'10.244.1.2:8080': 0.333333333, '10.244.1.3:8080': 0.333333333, '10.244.1.4:8080': 0.333333333})
    const nodePort = only(result, 'nodePort', 'external')
    assert.equal(nodePort.assumptions.length, 0, 'nfacct accounting is no condition')
    assert.ok(nodePort.endpoints.length === 3 && nodePort.endpoints.every((e) => e.masquerade))
    assert.deepEqual(result.findings, [])
  })

  it('shop/empty is rejected; default/kubernetes reaches the apiserver', () => {
    assert.deepEqual(
      only(traced('shop', 'empty'), 'clusterIP', 'pod').verdicts.map((v) => [v.kind, v.reason]),
      [['reject', 'shop/empty:http has no endpoints']],
    )
    assert.deepEqual(shares(only(traced('default', 'kubernetes'), 'clusterIP', 'pod')), {'198.19.215.1:34379': 1})
  })
})
