import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'

import {CliError} from '../../../src/errors.js'
import {endpointChainName, nftEndpointChain, nftServiceChains, servicePortChains} from '../../../src/trace/hash.js'
import {compileRule, parseIptablesSave} from '../../../src/trace/iptables.js'
import {iptablesRuleSet} from '../../../src/trace/iptables-rules.js'
import type {SliceEndpoint} from '../../../src/trace/model.js'
import {traceService} from '../../../src/trace/trace.js'
import {Walker} from '../../../src/trace/walk.js'

const fixture = (name: string) => readFileSync(new URL(`../../fixtures/kube-proxy/${name}`, import.meta.url), 'utf8')
const v129 = fixture('iptables-v1.29-counters.txt')

function traceOffline(dumpText: string, namespace: string, name: string) {
  const rules = iptablesRuleSet(parseIptablesSave(dumpText))
  const service = rules.findService(namespace, name)
  assert.ok(service, `${namespace}/${name} found in the rules`)
  return traceService(rules, service)
}

const frontend = (result: ReturnType<typeof traceOffline>, kind: string, from = kind === 'clusterIP' ? 'pod' : 'external', portIndex = 0) => {
  const found = result.ports[portIndex].frontends.filter((f) => f.kind === kind && f.from === from)
  assert.equal(found.length, 1, `one ${kind} from ${from}: ${JSON.stringify(result.ports[portIndex].frontends.map((f) => [f.kind, f.from, f.assumptions]))}`)
  return found[0]
}

const sharesOf = (f: {endpoints: Array<{ip: string; port?: number; share: number}>}) =>
  Object.fromEntries(f.endpoints.map((e) => [`${e.ip}:${e.port}`, Number(e.share.toFixed(9))]))

describe('kube-proxy chain names', () => {
  it('match the DESIGN.md test vectors', () => {
    assert.equal(servicePortChains('ns1', 'svc1', 'p80', 'tcp').svc, 'KUBE-SVC-XPGD46QRK7WJZT7O')
    assert.equal(endpointChainName('ns1', 'svc1', 'p80', 'TCP', '10.180.0.1:80'), 'KUBE-SEP-SXIVWICOYRO3J4NJ')
  })

  it('share one hash across SVC/SVL/EXT/FW/XLB and omit the colon for an unnamed port', () => {
    const chains = servicePortChains('ns5', 'svc5', 'p80', 'tcp')
    assert.equal(chains.fw, 'KUBE-FW-NUKIZ6OKUXPJNT4C')
    assert.equal(chains.ext, 'KUBE-EXT-NUKIZ6OKUXPJNT4C')
    assert.equal(chains.xlb, 'KUBE-XLB-NUKIZ6OKUXPJNT4C')
    // Every chain of the hand-written fixture was named by an independent implementation.
    assert.ok(v129.includes(`:${servicePortChains('default', 'sticky', '', 'tcp').svc} - [0:0]`))
    assert.ok(v129.includes(`:${endpointChainName('kube-system', 'kube-dns', 'dns', 'udp', '10.244.1.2:53')} - [0:0]`))
  })

  it('name nftables chains as kube-proxy does', () => {
    assert.equal(nftServiceChains('home', 'http-server', 'mainhttp', 'tcp').service, 'service-MJTK4JPM-home/http-server/tcp/mainhttp')
    assert.equal(
      nftEndpointChain('home', 'http-server', 'mainhttp', 'tcp', '10.244.1.71', 8000),
      'endpoint-ZRZOUO6E-home/http-server/tcp/mainhttp__10.244.1.71/8000',
    )
  })
})

describe('iptables-save parser', () => {
  it('reads every table, chain policies and counters', () => {
    const dump = parseIptablesSave(v129)
    assert.deepEqual([...dump.tables.keys()], ['mangle', 'filter', 'nat'])
    assert.equal(dump.chain('filter', 'INPUT')?.policy, 'ACCEPT')
    assert.equal(dump.chain('nat', 'KUBE-SERVICES')?.policy, undefined)
    assert.equal(dump.generator, 'v1.8.9 (nf_tables)')
    const input = dump.chain('filter', 'INPUT')!.rules()
    assert.equal(input.length, 4)
    assert.deepEqual(input[0].action, {kind: 'jump', chain: 'KUBE-PROXY-FIREWALL'})
    assert.equal(input[0].comment, 'kubernetes load balancer firewall')
  })

  it('compiles quoted comments with spaces and escaped quotes, negations, marks, statistic and DNAT', () => {
    const rule = compileRule(
      '! -s 10.244.0.0/16 -d 10.96.0.1/32 -p tcp -m comment --comment "say \\"hi\\" to ns/svc:p cluster IP" -m tcp --dport 443 -m statistic --mode random --probability 0.33333333349 -j DNAT --to-destination 10.244.0.5:8443',
      7,
    )
    assert.equal(rule.comment, 'say "hi" to ns/svc:p cluster IP')
    assert.deepEqual(rule.action, {kind: 'dnat', ip: '10.244.0.5', port: 8443})
    assert.deepEqual(
      rule.conditions.map((c) => [c.kind, 'negated' in c ? c.negated : undefined]),
      [
        ['address', true],
        ['address', false],
        ['protocol', false],
        ['port', false],
        ['probability', undefined],
      ],
    )
    assert.deepEqual(compileRule('-j MARK --set-xmark 0x4000/0x4000', 1).action, {kind: 'mark', clear: 0x4000, xor: 0x4000})
    assert.deepEqual(compileRule('-j MARK --or-mark 0x4000', 1).action, {kind: 'mark', clear: 0x4000, xor: 0x4000})
    assert.deepEqual(compileRule('-m mark ! --mark 0x4000/0x4000 -j RETURN', 1).conditions, [{kind: 'mark', value: 0x4000, mask: 0x4000, negated: true}])
    assert.deepEqual(compileRule('-g KUBE-SVC-X', 1).action, {kind: 'goto', chain: 'KUBE-SVC-X'})
  })

  it('reads kube-proxy test data (no built-in chains, no header)', () => {
    const dump = parseIptablesSave('*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -m comment --comment ns1/svc1:p80 -j RETURN\nCOMMIT\n')
    assert.equal(dump.chain('nat', 'KUBE-SERVICES')!.rules()[0].comment, 'ns1/svc1:p80')
  })

  const bad: Array<[string, string, RegExp]> = [
    ['truncated (no COMMIT)', '*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j RETURN\n', /line 3: .*without COMMIT.*truncated/],
    ['garbage line', '*nat\n:A - [0:0]\nhello world\nCOMMIT\n', /line 3: "hello world" is not a table, chain, rule or COMMIT line/],
    ['rule of an undeclared chain', '*nat\n-A NOPE -j RETURN\nCOMMIT\n', /line 2: rule for chain NOPE, which table nat does not declare/],
    ['rule before any table', ':X - [0:0]\n', /line 1: .*outside any table/],
    ['two tables without COMMIT', '*nat\n*filter\nCOMMIT\n', /line 2: table "filter" starts before table "nat" \(line 1\) has its COMMIT/],
    ['not a dump at all', '\n\n', /not iptables-save output/],
    ['malformed chain declaration', '*nat\n:KUBE-SERVICES\nCOMMIT\n', /line 2: malformed chain declaration/],
  ]
  for (const [what, text, message] of bad) {
    it(`rejects a ${what} with one line naming the line`, () => {
      assert.throws(
        () => parseIptablesSave(text),
        (e: unknown) => e instanceof CliError && message.test(e.message) && !e.message.includes('\n'),
      )
    })
  }

  it('skips a rule by its text only when its compiled destination could not match', () => {
    const dumps = [v129, ...['captured-iptables-save-v1.8.9-nft.txt'].map(fixture)]
    let skipped = 0
    for (const text of dumps) {
      const dump = parseIptablesSave(text)
      const addresses = [...new Set([...text.matchAll(/-d (\d+\.\d+\.\d+\.\d+)/g)].map((m) => m[1])), '203.0.113.9']
      for (const chains of dump.tables.values()) {
        for (const chain of chains.values()) {
          for (let i = 0; i < chain.ruleCount; i++) {
            for (const destination of addresses) {
              if (chain.mayMatchDestination(i, destination)) continue
              skipped++
              const excluding = chain
                .rule(i)
                .conditions.some((c) => c.kind === 'address' && c.field === 'destination' && !c.negated && c.cidr.text !== `${destination}/32`)
              assert.ok(excluding, `rule at line ${chain.line(i)} skipped for ${destination}: ${chain.text(i)}`)
            }
          }
        }
      }
    }

    assert.ok(skipped > 100, `the shortcut is used (${skipped} skips)`)
  })

  it('names the line of a rule cut off inside a quoted comment when the rule is used', () => {
    const dump = parseIptablesSave('*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -m comment --comment "ns/svc:p cluster\nCOMMIT\n')
    assert.throws(() => dump.chain('nat', 'KUBE-SERVICES')!.rules(), /iptables dump, line 3: a quoted string never ends/)
  })
})

describe('iptables trace (hand-written v1.29 node dump)', () => {
  it('splits a 3-endpoint ClusterIP into thirds from 11-decimal probabilities, no masquerade from pods', () => {
    const result = traceOffline(v129, 'default', 'web')
    const f = frontend(result, 'clusterIP')
    assert.deepEqual(sharesOf(f), {'10.244.1.5:8080': 0.333333333, '10.244.2.6:8080': 0.333333333, '10.244.3.7:8080': 0.333333333})
    assert.ok(Math.abs(f.endpoints.reduce((s, e) => s + e.share, 0) - 1) < 1e-9)
    assert.ok(f.endpoints.every((e) => !e.masquerade && e.masqueradeWhen[0]?.includes('hairpin')))
    assert.ok(f.endpoints.every((e) => e.chain?.startsWith('KUBE-SEP-')))
    assert.deepEqual(result.findings, [])
    assert.equal(result.ports[0].expectedChains?.svc, servicePortChains('default', 'web', 'http', 'tcp').svc)
    // The tree: PREROUTING -> KUBE-SERVICES -> KUBE-SVC -> three KUBE-SEP -> DNAT.
    const [root] = f.tree
    assert.equal(root.action, '-> KUBE-SERVICES')
    const svc = root.children[0]
    assert.equal(svc.action, `-> ${servicePortChains('default', 'web', 'http', 'tcp').svc}`)
    assert.equal(svc.children.length, 3)
    assert.deepEqual(
      svc.children.map((c) => c.probability && Number(c.probability.toFixed(6))),
      [0.333333, 0.5, undefined],
    )
  })

  it('reports session affinity and still gives first connections an even split', () => {
    const f = frontend(traceOffline(v129, 'default', 'sticky'), 'clusterIP')
    assert.deepEqual(sharesOf(f), {'10.244.1.8:8443': 0.5, '10.244.2.9:8443': 0.5})
    assert.ok(f.endpoints.every((e) => e.affinitySeconds === 10_800))
  })

  it('follows UDP and SCTP by protocol', () => {
    assert.deepEqual(sharesOf(frontend(traceOffline(v129, 'kube-system', 'kube-dns'), 'clusterIP')), {'10.244.1.2:53': 0.5, '10.244.2.3:53': 0.5})
    assert.deepEqual(sharesOf(frontend(traceOffline(v129, 'default', 'cafe'), 'clusterIP')), {'10.244.2.40:3868': 1})
  })

  it('shows the REJECT of a Service without endpoints', () => {
    const f = frontend(traceOffline(v129, 'default', 'empty'), 'clusterIP')
    assert.equal(f.endpoints.length, 0)
    assert.deepEqual(
      f.verdicts.map((v) => [v.kind, v.share, v.chain, v.reason]),
      [['reject', 1, 'KUBE-SERVICES', 'default/empty:http has no endpoints']],
    )
  })

  it('masquerades NodePort traffic from outside (externalTrafficPolicy Cluster)', () => {
    const f = frontend(traceOffline(v129, 'default', 'shop'), 'nodePort')
    assert.deepEqual(sharesOf(f), {'10.244.1.11:80': 0.5, '10.244.3.12:80': 0.5})
    assert.ok(f.endpoints.every((e) => e.masquerade))
  })

  it('sends outside traffic of an externalTrafficPolicy Local Service only to the local endpoint, unmasqueraded; pods reach all', () => {
    const result = traceOffline(v129, 'default', 'edge')
    for (const kind of ['loadBalancer', 'externalIP', 'nodePort']) {
      const outside = frontend(result, kind, 'external')
      assert.deepEqual(sharesOf(outside), {'10.244.1.20:8443': 1}, kind)
      assert.equal(outside.endpoints[0].masquerade, false)
      const fromPod = frontend(result, kind, 'pod')
      assert.equal(fromPod.endpoints.length, 3, kind)
    }
  })

  it('follows internalTrafficPolicy Local (KUBE-SVL) chains', () => {
    const f = frontend(traceOffline(v129, 'default', 'node-local'), 'clusterIP')
    assert.deepEqual(sharesOf(f), {'10.244.1.10:9100': 1})
    assert.ok(f.tree[0].children[0].action.startsWith('-> KUBE-SVL-'))
  })

  it('finds shares that do not add up to 100% (a last rule that keeps a probability)', () => {
    const result = traceOffline(v129, 'default', 'broken')
    const f = frontend(result, 'clusterIP')
    assert.deepEqual(sharesOf(f), {'10.244.1.30:80': 0.5, '10.244.2.31:80': 0.25})
    assert.deepEqual(
      result.findings.map((x) => x.kind),
      ['share-sum'],
    )
    assert.match(result.findings[0].message, /add up to 75\.0%; 25\.0% of connections match no rule/)
  })

  it('compares the rules with EndpointSlices: not programmed, no longer in a slice, no rules at all', () => {
    const rules = iptablesRuleSet(parseIptablesSave(v129))
    const web = rules.findService('default', 'web')!
    const ep = (ip: string, ready = true): SliceEndpoint => ({
      ip,
      port: 8080,
      portName: 'http',
      protocol: 'TCP',
      ready,
      serving: ready,
      terminating: false,
      pod: `web-${ip.split('.')[3]}`,
    })
    const slices = [ep('10.244.1.5'), ep('10.244.2.6'), ep('10.244.9.9'), ep('10.244.8.8', false)]
    const result = traceService(rules, web, {slices, node: 'n1'})
    assert.deepEqual(
      result.findings.map((f) => [f.kind, f.message]),
      [
        ['not-programmed', 'endpoint 10.244.9.9:8080 (pod web-9) is ready in an EndpointSlice but not in the rules'],
        ['not-in-slice', 'the rules still send traffic to 10.244.3.7:8080, which no EndpointSlice lists any more'],
      ],
    )
    const traced = frontend(result, 'clusterIP').endpoints.find((e) => e.ip === '10.244.1.5')!
    assert.equal(traced.pod, 'web-5')
    assert.equal(traced.ready, true)

    const empty = rules.findService('default', 'empty')!
    const noRules = traceService(rules, empty, {slices: [{...ep('10.244.1.1'), portName: 'http', port: 80}], node: 'n1'})
    assert.deepEqual(
      noRules.findings.map((f) => f.kind),
      ['no-rules'],
    )
  })

  it('rebuilds Services offline from the rule comments', () => {
    const rules = iptablesRuleSet(parseIptablesSave(v129))
    const edge = rules.findService('default', 'edge')!
    assert.deepEqual(edge.clusterIPs, ['10.96.10.15'])
    assert.deepEqual(edge.loadBalancerIPs, ['192.0.2.50'])
    assert.deepEqual(edge.externalIPs, ['198.51.100.7'])
    assert.deepEqual(edge.ports, [{name: 'https', protocol: 'tcp', port: 443, nodePort: 31443}])
    assert.equal(edge.type, 'LoadBalancer')
    assert.deepEqual(
      rules.clusterCidrs().map((c) => c.text),
      ['10.244.0.0/16'],
    )
    assert.equal(rules.findService('default', 'nope'), undefined)
  })
})

describe('iptables trace: pre-1.24 XLB chains, goto and RETURN', () => {
  const old = fixture('iptables-v1.22-xlb.txt')

  it('drops NodePort traffic from outside through KUBE-MARK-DROP when the node has no local endpoint; pods still reach the endpoint', () => {
    const result = traceOffline(old, 'old', 'local')
    assert.equal(result.ports[0].expectedChains?.xlb, 'KUBE-XLB-MEUOTAWK75ANQP6F')
    const outside = frontend(result, 'nodePort', 'external')
    assert.deepEqual(outside.endpoints, [])
    assert.deepEqual(
      outside.verdicts.map((v) => [v.kind, v.chain]),
      [['drop', 'KUBE-FIREWALL']],
    )
    assert.deepEqual(sharesOf(frontend(result, 'nodePort', 'pod')), {'10.244.2.9:80': 1})
  })

  it('follows -g (goto) into a chain, and RETURN from a jumped chain back to the rule after the jump', () => {
    const f = frontend(traceOffline(old, 'old', 'hops'), 'clusterIP')
    // HOP jumps to HOP-BACK: 25% RETURN to HOP (whose next rule DNATs to .3), 75% DNAT to .4.
    assert.deepEqual(sharesOf(f), {'10.244.3.3:80': 0.25, '10.244.3.4:80': 0.75})
    assert.equal(f.tree[0].children[0].action, 'goto HOP')
  })
})

describe('walker semantics', () => {
  const walk = (jumpKind: '-g' | '-j') => {
    const dump = parseIptablesSave(
      [
        '*nat',
        ':PREROUTING ACCEPT [0:0]',
        ':KUBE-SERVICES - [0:0]',
        ':EMPTY - [0:0]',
        '-A PREROUTING -j KUBE-SERVICES',
        '-A PREROUTING -j DNAT --to-destination 10.0.0.9:1',
        `-A KUBE-SERVICES -d 10.96.0.1/32 ${jumpKind} EMPTY`,
        '-A KUBE-SERVICES -j DNAT --to-destination 10.0.0.8:1',
        'COMMIT',
        '',
      ].join('\n'),
    )
    const [outcome] = new Walker(dump, {
      protocol: 'tcp',
      destination: '10.96.0.1',
      destinationPort: 80,
      destinationLocal: false,
      origin: 'pod',
      clusterCidrs: [],
    }).walk('nat', ['PREROUTING'])
    return outcome.verdict
  }

  it('a chain entered by goto that falls off its end returns to the caller of the chain that did the goto', () => {
    assert.deepEqual(walk('-g'), {kind: 'dnat', ip: '10.0.0.9', port: 1})
    assert.deepEqual(walk('-j'), {kind: 'dnat', ip: '10.0.0.8', port: 1})
  })
})
