import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'

import {parseIptablesSave} from '../../../src/trace/iptables.js'
import {iptablesRuleSet} from '../../../src/trace/iptables-rules.js'
import {detectMode, ruleSetFor, splitSections} from '../../../src/trace/load.js'
import type {FrontendTrace, TraceResult} from '../../../src/trace/model.js'
import {servicesAtAddress, traceService} from '../../../src/trace/trace.js'
import {sharedFixturesDir} from '../../helpers/ci.js'

/** Dumps captured from real clusters and kube-proxy's own test data (../shared/fixtures, required in CI). */
const shared = sharedFixturesDir('kube-proxy')
const folder = `${shared}/`
const present = shared !== undefined

function load(name: string) {
  const sections = splitSections(readFileSync(folder + name, 'utf8'))
  return ruleSetFor(sections, detectMode(sections)!)
}

function trace(name: string, namespace: string, service: string): TraceResult {
  const rules = load(name)
  const info = rules.findService(namespace, service)
  assert.ok(info, `${namespace}/${service} in ${name}`)
  return traceService(rules, info)
}

const frontends = (r: TraceResult, kind: string, from: string, port?: string) =>
  r.ports.filter((p) => port === undefined || p.port.name === port).flatMap((p) => p.frontends.filter((f) => f.kind === kind && f.from === from))
const shares = (f: FrontendTrace) => Object.fromEntries(f.endpoints.map((e) => [`${e.ip}:${e.port}`, Number(e.share.toFixed(6))]))

;(present ? describe : describe.skip)('trace over real-world dumps (../shared/fixtures/kube-proxy)', () => {
  describe('kube-proxy v1.27 test data (TestOverallIPTablesRulesWithMultipleServices)', () => {
    const file = 'kube-proxy-test-v1.27-TestOverallIPTablesRulesWithMultipleServices.txt'

    it('ns1/svc1: ClusterIP 172.30.0.41:80 -> 10.180.0.1:80', () => {
      const [f] = frontends(trace(file, 'ns1', 'svc1'), 'clusterIP', 'pod')
      assert.equal(f.address, '172.30.0.41:80')
      assert.deepEqual(shares(f), {'10.180.0.1:80': 1})
      assert.equal(f.endpoints[0].chain, 'KUBE-SEP-SXIVWICOYRO3J4NJ')
    })

    it('ns2/svc2 (externalTrafficPolicy Local, no local endpoint): outside traffic dropped on every external frontend, pods still reach 10.180.0.2', () => {
      const r = trace(file, 'ns2', 'svc2')
      for (const kind of ['externalIP', 'loadBalancer', 'nodePort']) {
        const [outside] = frontends(r, kind, 'external')
        assert.deepEqual(outside.endpoints, [], kind)
        assert.deepEqual(
          outside.verdicts.map((v) => [v.kind, v.reason]),
          [['drop', 'ns2/svc2:p80 has no local endpoints']],
          kind,
        )
      }

      assert.deepEqual(shares(frontends(r, 'clusterIP', 'pod')[0]), {'10.180.0.2:80': 1})
      assert.deepEqual(shares(frontends(r, 'loadBalancer', 'pod')[0]), {'10.180.0.2:80': 1})
    })

    it('ns3/svc3: NodePort 3003 from outside is masqueraded to 10.180.0.3:80', () => {
      const [f] = frontends(trace(file, 'ns3', 'svc3'), 'nodePort', 'external')
      assert.deepEqual(shares(f), {'10.180.0.3:80': 1})
      assert.equal(f.endpoints[0].masquerade, true)
    })

    it('ns4/svc4: ClusterIP and externalIP split 50/50 over 10.180.0.4 and 10.180.0.5', () => {
      const r = trace(file, 'ns4', 'svc4')
      assert.deepEqual(shares(frontends(r, 'clusterIP', 'pod')[0]), {'10.180.0.4:80': 0.5, '10.180.0.5:80': 0.5})
      const [external] = frontends(r, 'externalIP', 'external')
      assert.equal(external.address, '192.168.99.33:80')
      assert.deepEqual(shares(external), {'10.180.0.4:80': 0.5, '10.180.0.5:80': 0.5})
      assert.ok(external.endpoints.every((e) => e.masquerade))
    })

    it('ns5/svc5: loadBalancerSourceRanges admit 203.0.113.0/25 and drop the rest in KUBE-PROXY-FIREWALL', () => {
      const lb = frontends(trace(file, 'ns5', 'svc5'), 'loadBalancer', 'external')
      const admitted = lb.find((f) => f.assumptions[0] === 'source in 203.0.113.0/25')!
      assert.deepEqual(shares(admitted), {'10.180.0.3:80': 1})
      const refused = lb.find((f) => f.assumptions[0] === 'not (source in 203.0.113.0/25)')!
      assert.deepEqual(
        refused.verdicts.map((v) => [v.kind, v.chain]),
        [['drop', 'KUBE-PROXY-FIREWALL']],
      )
    })

    it('ns6/svc6: no endpoints -> REJECT in the filter table', () => {
      const [f] = frontends(trace(file, 'ns6', 'svc6'), 'clusterIP', 'pod')
      assert.deepEqual(
        f.verdicts.map((v) => [v.kind, v.reason]),
        [['reject', 'ns6/svc6:p80 has no endpoints']],
      )
    })
  })

  describe('kind v1.23 node (full iptables-save with mangle/filter/nat)', () => {
    const file = 'v1.23-kind-traefik-ericpuwang.txt'

    it('default/traefik web and websecure reach 10.244.0.5:8000 and :8443', () => {
      const r = trace(file, 'default', 'traefik')
      assert.deepEqual(shares(frontends(r, 'clusterIP', 'pod', 'web')[0]), {'10.244.0.5:8000': 1})
      assert.deepEqual(shares(frontends(r, 'clusterIP', 'pod', 'websecure')[0]), {'10.244.0.5:8443': 1})
      assert.deepEqual(r.findings, [])
    })

    it('kube-system/kube-dns splits dns, dns-tcp and metrics 50/50 between 10.244.0.3 and 10.244.0.4', () => {
      const r = trace(file, 'kube-system', 'kube-dns')
      assert.deepEqual(shares(frontends(r, 'clusterIP', 'pod', 'dns')[0]), {'10.244.0.3:53': 0.5, '10.244.0.4:53': 0.5})
      assert.deepEqual(shares(frontends(r, 'clusterIP', 'pod', 'dns-tcp')[0]), {'10.244.0.3:53': 0.5, '10.244.0.4:53': 0.5})
      assert.deepEqual(shares(frontends(r, 'clusterIP', 'pod', 'metrics')[0]), {'10.244.0.3:9153': 0.5, '10.244.0.4:9153': 0.5})
      assert.equal(r.ports.find((p) => p.port.name === 'dns')?.port.protocol, 'udp')
    })

    it('default/kubernetes reaches the apiserver 172.18.0.5:6443, and the pod CIDR is read from the masquerade rules', () => {
      assert.deepEqual(shares(frontends(trace(file, 'default', 'kubernetes'), 'clusterIP', 'pod')[0]), {'172.18.0.5:6443': 1})
      assert.deepEqual(
        load(file)
          .clusterCidrs()
          .map((c) => c.text),
        ['10.244.0.0/16'],
      )
    })
  })

  describe('nftables v1.32 listing (cut short by its author)', () => {
    const file = 'nftables-v1.32-kubeadm-temach-k8s-training.txt'

    it('home/http-server mainhttp 8000 splits 25% to each of its 4 endpoints', () => {
      const r = trace(file, 'home', 'http-server')
      assert.deepEqual(shares(frontends(r, 'clusterIP', 'pod')[0]), {
        '10.244.1.71:8000': 0.25,
        '10.244.1.72:8000': 0.25,
        '10.244.1.73:8000': 0.25,
        '10.244.1.76:8000': 0.25,
      })
      assert.ok(r.notes.some((n) => /stops at line/.test(n)))
    })

    it('default/kubernetes reaches 10.128.0.16:6443', () => {
      assert.deepEqual(shares(frontends(trace(file, 'default', 'kubernetes'), 'clusterIP', 'pod')[0]), {'10.128.0.16:6443': 1})
    })

    it('says the chains of ingress-nginx fall after the cut instead of inventing a verdict', () => {
      const [f] = frontends(trace(file, 'ingress-nginx', 'ingress-nginx-controller'), 'clusterIP', 'pod')
      assert.deepEqual(
        f.verdicts.map((v) => v.kind),
        ['missing'],
      )
      assert.match(f.verdicts[0].reason, /not in the dump/)
    })
  })

  describe('IPVS listing from kube-proxy README', () => {
    const file = 'ipvs-kubernetes-pkg-proxy-ipvs-README-ipvsadm-ln.txt'

    it('default/kubernetes 10.0.0.1:443 -> 192.168.0.1:6443 with persistence (session affinity)', () => {
      const rules = load(file)
      const [service] = servicesAtAddress(rules, '10.0.0.1', 443)
      const [f] = frontends(traceService(rules, service), 'clusterIP', 'pod')
      assert.deepEqual(shares(f), {'192.168.0.1:6443': 1})
      assert.equal(f.endpoints[0].affinitySeconds, 10_800)
    })

    it('kube-dns 10.0.0.10:53 over TCP and UDP -> 172.17.0.2:53', () => {
      const rules = load(file)
      const [service] = servicesAtAddress(rules, '10.0.0.10', 53)
      const r = traceService(rules, service)
      assert.deepEqual(
        r.ports.map((p) => p.port.protocol),
        ['tcp', 'udp'],
      )
      for (const p of r.ports) assert.deepEqual(shares(p.frontends[0]), {'172.17.0.2:53': 1})
    })
  })
})

describe('older kube-proxy layouts (1.14: "ns/name: what" comments for unnamed ports)', () => {
  const v114 = readFileSync(new URL('../../fixtures/kube-proxy/iptables-v1.14-unnamed-port.txt', import.meta.url), 'utf8')
  const rules = iptablesRuleSet(parseIptablesSave(v114))

  it('finds a Service by name and by address when its comments read "default/hostnames: cluster IP"', () => {
    const service = rules.findService('default', 'hostnames')
    assert.ok(service)
    assert.deepEqual(service.clusterIPs, ['10.96.0.20'])
    assert.deepEqual(service.externalIPs, ['192.0.2.50'])
    assert.equal(service.ports[0].nodePort, 30376)
    assert.deepEqual(
      servicesAtAddress(rules, '10.96.0.20', 80).map((s) => s.name),
      ['hostnames'],
    )
    const result = traceService(rules, service)
    // The chain names of that time hashed "default/hostnames:" with the colon.
    assert.equal(result.ports[0].expectedChains?.svc, 'KUBE-SVC-NWV5X2332I4OT4T3')
    const cluster = result.ports[0].frontends.filter((f) => f.kind === 'clusterIP' && f.from === 'pod')
    assert.equal(cluster.length, 1)
    assert.equal(cluster[0].endpoints.length, 3)
    assert.equal(result.findings.length, 0)
  })

  it('a direct "-j MARK --set-xmark 0x4000/0x4000" masquerade rule is a masquerade note, not six paths and false findings', () => {
    const result = traceService(rules, rules.findService('default', 'direct')!)
    const frontends = result.ports[0].frontends.filter((f) => f.from === 'pod')
    assert.equal(frontends.length, 1, JSON.stringify(frontends.map((f) => f.assumptions)))
    assert.deepEqual(
      frontends[0].endpoints.map((e) => e.share),
      [0.5, 0.5],
    )
    assert.equal(result.findings.length, 0)
    assert.deepEqual(
      rules.clusterCidrs().map((c) => c.text),
      ['10.244.0.0/16'],
    )
  })
})
