import assert from 'node:assert/strict'

import type {V1Node} from '@kubernetes/client-node'

import {chooseNodes, modeOf, proxyConfig, serviceInfoOf, serviceRulesScript, sliceEndpoints} from '../../../src/trace/live.js'
import {splitSections} from '../../../src/trace/load.js'
import {closeMatches} from '../../../src/trace/suggest.js'
import {parseTraceTarget} from '../../../src/trace/target.js'

describe('trace helpers', () => {
  it('parses targets: svc/NAME, NAME, svc/NS/NAME, IP[:PORT]', () => {
    assert.deepEqual(parseTraceTarget('svc/web'), {kind: 'service', namespace: undefined, name: 'web'})
    assert.deepEqual(parseTraceTarget('web'), {kind: 'service', namespace: undefined, name: 'web'})
    assert.deepEqual(parseTraceTarget('service/shop/web'), {kind: 'service', namespace: 'shop', name: 'web'})
    assert.deepEqual(parseTraceTarget('10.96.0.10:53'), {kind: 'address', ip: '10.96.0.10', port: 53})
    assert.deepEqual(parseTraceTarget('10.96.0.10'), {kind: 'address', ip: '10.96.0.10', port: undefined})
    assert.throws(() => parseTraceTarget('deploy/web'), /is not a Service/)
    assert.throws(() => parseTraceTarget('svc/Web_1'), /not a valid Service name/)
  })

  it('suggests close names, transpositions included, and not unrelated short ones', () => {
    assert.deepEqual(closeMatches('wbe', ['web', 'db', 'web-admin']), ['web'])
    assert.deepEqual(closeMatches('frontend', ['frontend-v2', 'backend', 'frontnd']), ['frontend-v2', 'frontnd'])
    assert.deepEqual(closeMatches('zzz', ['web']), [])
  })

  it("reads kube-proxy's mode and pod network from its ConfigMap ('' means iptables)", () => {
    assert.equal(proxyConfig('mode: ""\n').mode, 'iptables')
    assert.equal(proxyConfig('mode: ipvs\nclusterCIDR: 10.244.0.0/16,fd00::/48\n').mode, 'ipvs')
    assert.deepEqual(proxyConfig('mode: nftables\nclusterCIDR: 10.244.0.0/16\n').clusterCidrs.map((c) => c.text), ['10.244.0.0/16'])
    assert.deepEqual(proxyConfig(undefined), {clusterCidrs: []})
    assert.equal(proxyConfig('mode: kernelspace\n').mode, undefined)
  })

  it('turns a Service and its EndpointSlices into what trace compares', () => {
    const info = serviceInfoOf({
      metadata: {name: 'edge', namespace: 'shop'},
      spec: {type: 'LoadBalancer', clusterIP: '10.96.0.5', externalIPs: ['198.51.100.7'], ports: [{port: 443, protocol: 'TCP', nodePort: 31443}], externalTrafficPolicy: 'Local'},
      status: {loadBalancer: {ingress: [{ip: '192.0.2.50'}, {hostname: 'lb.example.com'}]}},
    })
    assert.deepEqual([info.clusterIPs, info.externalIPs, info.loadBalancerIPs], [['10.96.0.5'], ['198.51.100.7'], ['192.0.2.50']])
    assert.deepEqual(info.ports, [{name: '', port: 443, protocol: 'tcp', nodePort: 31443, targetPort: undefined}])
    const endpoints = sliceEndpoints(
      [{addressType: 'IPv4', endpoints: [{addresses: ['10.244.1.5'], nodeName: 'n1', targetRef: {kind: 'Pod', name: 'p1'}}, {addresses: ['10.244.1.6'], conditions: {ready: false, terminating: true}}], ports: [{name: '', port: 8443, protocol: 'TCP'}]}],
      [{metadata: {name: 'p1'}, status: {phase: 'Running', conditions: [{type: 'Ready', status: 'True'}]}}],
    )
    assert.deepEqual(
      endpoints.map((e) => [e.ip, e.port, e.ready, e.terminating, e.pod, e.podReady]),
      [
        ['10.244.1.5', 8443, true, false, 'p1', true],
        ['10.244.1.6', 8443, false, true, undefined, undefined],
      ],
    )
  })

  it('picks --node, else the Ready node hosting most endpoints; refuses unknown nodes', () => {
    const node = (name: string, ready = true): V1Node => ({metadata: {name}, status: {conditions: [{type: 'Ready', status: ready ? 'True' : 'False'}]}})
    const nodes = [node('a'), node('b'), node('c', false)]
    const ep = (ip: string, nodeName: string) => ({ip, port: 80, portName: '', protocol: 'TCP', ready: true, serving: true, terminating: false, nodeName})
    assert.deepEqual(chooseNodes(nodes, [ep('1.1.1.1', 'a'), ep('1.1.1.2', 'b'), ep('1.1.1.3', 'b'), ep('1.1.1.4', 'c'), ep('1.1.1.5', 'c'), ep('1.1.1.6', 'c')], {}).map((n) => n.metadata?.name), ['b'])
    assert.deepEqual(chooseNodes(nodes, [], {allNodes: true}).map((n) => n.metadata?.name), ['a', 'b'])
    assert.deepEqual(chooseNodes(nodes, [], {node: 'c'}).map((n) => n.metadata?.name), ['c'])
    assert.throws(() => chooseNodes(nodes, [], {node: 'zz'}), /node "zz" not found; nodes: a, b, c/)
  })

  it('takes the mode from --mode, then kube-proxy itself, then its ConfigMap, then the rules', () => {
    assert.deepEqual(modeOf('ipvs', 'iptables', 'nftables', 'iptables'), ['ipvs', 'flag'])
    assert.deepEqual(modeOf(undefined, 'nftables', 'iptables', 'iptables'), ['nftables', 'kube-proxy'])
    assert.deepEqual(modeOf(undefined, undefined, 'iptables', 'nftables'), ['iptables', 'configmap'])
    assert.deepEqual(modeOf(undefined, undefined, undefined, 'nftables'), ['nftables', 'rules'])
    assert.deepEqual(modeOf(), ['iptables', 'rules'])
    assert.equal(splitSections('### selfhost-trace proxymode nftables\n### selfhost-trace end\n').proxyMode, 'nftables')
    assert.equal(splitSections('### selfhost-trace proxymode kernelspace\n').proxyMode, undefined)
  })

  it("the node script's sections are what the loader splits", () => {
    assert.match(serviceRulesScript('default', 'web'), /for cmd in iptables iptables-nft iptables-legacy; do/)
    assert.match(serviceRulesScript('default', 'web'), /--comment "\?default\/web\(\[: "\]\|\$\)/)
    const partial = splitSections('### selfhost-trace iptables iptables-nft partial\n*nat\n-P PREROUTING ACCEPT\n-N KUBE-SERVICES\nCOMMIT\n### selfhost-trace crash iptables-save 139\n### selfhost-trace end\n')
    assert.equal(partial.partial, true)
    assert.deepEqual(partial.crashes, [{command: 'iptables-save', exitCode: 139}])
    const sections = splitSections('### selfhost-trace iptables iptables-legacy-save\n*nat\nCOMMIT\n### selfhost-trace nft\ntable ip kube-proxy {\n}\n### selfhost-trace end\n')
    assert.equal(sections.iptablesCommand, 'iptables-legacy-save')
    assert.equal(sections.iptables, '*nat\nCOMMIT\n')
    assert.equal(sections.nft, 'table ip kube-proxy {\n}\n')
  })
})
