import assert from 'node:assert/strict'
import {spawnSync} from 'node:child_process'
import {chmodSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import type {V1Node} from '../../../src/kube/types.js'
import {chooseNodes, ipvsQueries, modeOf, nodesByPreference, proxyConfig, serviceInfoOf, serviceRulesScript, sliceEndpoints} from '../../../src/trace/live.js'
import {ruleSetFor, splitSections} from '../../../src/trace/load.js'
import {traceService} from '../../../src/trace/trace.js'
import {distrolessPath} from '../../helpers/distroless-tools.js'
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
    assert.deepEqual(
      proxyConfig('mode: nftables\nclusterCIDR: 10.244.0.0/16\n').clusterCidrs.map((c) => c.text),
      ['10.244.0.0/16'],
    )
    assert.deepEqual(proxyConfig(undefined), {clusterCidrs: []})
    assert.equal(proxyConfig('mode: kernelspace\n').mode, undefined)
  })

  it('turns a Service and its EndpointSlices into what trace compares', () => {
    const info = serviceInfoOf({
      metadata: {name: 'edge', namespace: 'shop'},
      spec: {
        type: 'LoadBalancer',
        clusterIP: '10.96.0.5',
        externalIPs: ['198.51.100.7'],
        ports: [{port: 443, protocol: 'TCP', nodePort: 31443}],
        externalTrafficPolicy: 'Local',
      },
      status: {loadBalancer: {ingress: [{ip: '192.0.2.50'}, {hostname: 'lb.example.com'}]}},
    })
    assert.deepEqual([info.clusterIPs, info.externalIPs, info.loadBalancerIPs], [['10.96.0.5'], ['198.51.100.7'], ['192.0.2.50']])
    assert.deepEqual(info.ports, [{name: '', port: 443, protocol: 'tcp', nodePort: 31443, targetPort: undefined}])
    const endpoints = sliceEndpoints(
      [
        {
          addressType: 'IPv4',
          endpoints: [
            {addresses: ['10.244.1.5'], nodeName: 'n1', targetRef: {kind: 'Pod', name: 'p1'}},
            {addresses: ['10.244.1.6'], conditions: {ready: false, terminating: true}},
          ],
          ports: [{name: '', port: 8443, protocol: 'TCP'}],
        },
      ],
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
    assert.deepEqual(
      chooseNodes(nodes, [ep('1.1.1.1', 'a'), ep('1.1.1.2', 'b'), ep('1.1.1.3', 'b'), ep('1.1.1.4', 'c'), ep('1.1.1.5', 'c'), ep('1.1.1.6', 'c')], {}).map(
        (n) => n.metadata?.name,
      ),
      ['b'],
    )
    assert.deepEqual(
      chooseNodes(nodes, [], {allNodes: true}).map((n) => n.metadata?.name),
      ['a', 'b'],
    )
    assert.deepEqual(
      chooseNodes(nodes, [], {node: 'c'}).map((n) => n.metadata?.name),
      ['c'],
    )
    assert.throws(() => chooseNodes(nodes, [], {node: 'zz'}), /node "zz" not found; nodes: a, b, c/)
  })

  it('without --node prefers the node hosting most endpoints, then workers over control-plane nodes', () => {
    const node = (name: string, role?: string): V1Node => ({
      metadata: {name, labels: role ? {[`node-role.kubernetes.io/${role}`]: ''} : {}},
      status: {conditions: [{type: 'Ready', status: 'True'}]},
    })
    const nodes = [node('cp-1', 'control-plane'), node('cp-2', 'master'), node('w-1'), node('w-2')]
    const ep = (ip: string, nodeName?: string) => ({
      ip,
      port: 6443,
      portName: 'https',
      protocol: 'TCP',
      ready: true,
      serving: true,
      terminating: false,
      nodeName,
    })
    // svc/kubernetes: its endpoints are API servers, on no node as far as the slice says.
    assert.deepEqual(
      nodesByPreference(nodes, [ep('10.0.0.1'), ep('10.0.0.2')]).map((n) => n.metadata?.name),
      ['w-1', 'w-2', 'cp-1', 'cp-2'],
    )
    assert.deepEqual(
      chooseNodes(nodes, [ep('10.0.0.1')], {}).map((n) => n.metadata?.name),
      ['w-1'],
    )
    assert.deepEqual(
      nodesByPreference(nodes, [ep('10.0.0.1', 'cp-2'), ep('10.0.0.2', 'w-2')]).map((n) => n.metadata?.name),
      ['w-2', 'cp-2', 'w-1', 'cp-1'],
    )
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
    const partial = splitSections(
      '### selfhost-trace iptables iptables-nft partial\n*nat\n-P PREROUTING ACCEPT\n-N KUBE-SERVICES\nCOMMIT\n### selfhost-trace crash iptables-save 139\n### selfhost-trace end\n',
    )
    assert.equal(partial.partial, true)
    assert.deepEqual(partial.crashes, [{command: 'iptables-save', exitCode: 139}])
    const sections = splitSections(
      '### selfhost-trace iptables iptables-legacy-save\n*nat\nCOMMIT\n### selfhost-trace nft\ntable ip kube-proxy {\n}\n### selfhost-trace end\n',
    )
    assert.equal(sections.iptablesCommand, 'iptables-legacy-save')
    assert.equal(sections.iptables, '*nat\nCOMMIT\n')
    assert.equal(sections.nft, 'table ip kube-proxy {\n}\n')
  })

  it("IPVS on a big node: the script asks ipvsadm only for the Service's virtual servers (a fake ipvsadm: this kernel has no ip_vs)", function () {
    if (process.platform !== 'linux') this.skip()
    const service = {
      namespace: 'shop',
      name: 'web',
      clusterIPs: ['10.96.30.1'],
      externalIPs: ['203.0.113.7'],
      loadBalancerIPs: [],
      ports: [
        {name: 'http', port: 80, protocol: 'tcp', nodePort: 30080},
        {name: 'dns', port: 53, protocol: 'udp'},
      ],
      source: 'api' as const,
    }
    const queries = ipvsQueries(service, '192.168.0.2')
    assert.deepEqual(queries, ['-t 10.96.30.1:80', '-t 203.0.113.7:80', '-t 192.168.0.2:30080', '-u 10.96.30.1:53', '-u 203.0.113.7:53'])
    assert.deepEqual(ipvsQueries({...service, clusterIPs: ['fd00::1'], externalIPs: [], ports: [service.ports[0]]}), ['-t [fd00::1]:80'])
    // A listing of 4,000 virtual servers (12,000 lines) with the Service's among them.
    const dir = mkdtempSync(join(tmpdir(), 'fake-ipvsadm-'))
    const blocks = Array.from(
      {length: 4000},
      (_, i) =>
        `TCP  10.97.${i >> 8}.${i & 255}:80 rr\n  -> 10.244.${i >> 8}.${i & 255}:8080              Masq    1      0          0\n  -> 10.245.${i >> 8}.${i & 255}:8080              Masq    1      0          0`,
    )
    blocks.splice(
      1234,
      0,
      'TCP  10.96.30.1:80 wrr\n  -> 10.244.1.5:8080              Masq    3      0          0\n  -> 10.244.2.6:8080              Masq    1      0          0',
    )
    const header =
      'IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn'
    writeFileSync(join(dir, 'listing'), `${header}\n${blocks.join('\n')}\n`)
    // The fake answers -Ln with the whole listing, -Ln -t/-u ADDRESS:PORT with that block or exit 1, as ipvsadm does.
    writeFileSync(
      join(dir, 'ipvsadm'),
      `#!/bin/sh
echo "$*" >> ${dir}/calls
[ "$#" -eq 1 ] && exec cat ${dir}/listing
found=""; out=""
while IFS= read -r line; do
  case "$line" in
    "TCP  $3 "*|"UDP  $3 "*) found=1; out="$line" ;;
    "  ->"*) [ -n "$found" ] && [ -n "$out" ] && out="$out
$line" ;;
    *) [ -n "$found" ] && [ -n "$out" ] && break ;;
  esac
done < ${dir}/listing
[ -n "$out" ] || exit 1
printf '%s\\n%s\\n' "${header.replaceAll('\n', '\\n')}" "$out"
`,
    )
    chmodSync(join(dir, 'ipvsadm'), 0o755)
    const path = distrolessPath()
    symlinkSync(join(dir, 'ipvsadm'), join(path, 'ipvsadm'))
    try {
      const run = spawnSync('sh', ['-c', serviceRulesScript('shop', 'web', queries)], {encoding: 'utf8', env: {PATH: path}})
      assert.equal(run.status, 0, run.stderr)
      const sections = splitSections(run.stdout)
      assert.equal(sections.ipvsPartial, true)
      assert.ok(sections.ipvs!.split('\n').length < 20, sections.ipvs)
      const calls = readFileSync(join(dir, 'calls'), 'utf8').trim().split('\n')
      assert.deepEqual(
        calls.slice(1),
        queries.map((q) => `-Ln ${q}`),
      )
      const rules = ruleSetFor(sections, 'ipvs')
      const result = traceService(rules, {...service, ports: [service.ports[0]]})
      const frontend = result.ports[0].frontends.find((f) => f.kind === 'clusterIP')!
      assert.deepEqual(
        frontend.endpoints.map((e) => [e.ip, e.share]),
        [
          ['10.244.1.5', 0.75],
          ['10.244.2.6', 0.25],
        ],
      )
    } finally {
      rmSync(dir, {recursive: true, force: true})
      rmSync(path, {recursive: true, force: true})
    }
  })
})
