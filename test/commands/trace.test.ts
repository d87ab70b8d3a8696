import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'
import {fileURLToPath} from 'node:url'

import nock from 'nock'

import type {V1Pod} from '../../src/kube/types.js'
import type {TraceResult} from '../../src/trace/model.js'
import {fakeApiServerSuite} from '../helpers/fake-api.js'
import {FAKE_SERVER} from '../helpers/fake-cluster.js'
import {runBuiltCli, runCommand} from '../helpers/run-command.js'

const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/kube-proxy/${name}`, import.meta.url))
const v129 = fixture('iptables-v1.29-counters.txt')

describe('trace --from-file (no cluster)', () => {
  it('prints one block per way in by default: endpoints, shares, masquerading', async () => {
    const {stdout, stderr, exitCode} = await runCommand(['trace', '--from-file', v129, 'svc/default/web'])
    assert.equal(exitCode, 0, stderr)
    assert.match(stdout, /  ClusterIP 10\.96\.10\.10:80 from a pod\n    => 10\.244\.1\.5:8080 33\.3%, 10\.244\.2\.6:8080 33\.3%, 10\.244\.3\.7:8080 33\.3%\n/)
    assert.match(stdout, /  ClusterIP 10\.96\.10\.10:80 from the node\n    => 10\.244\.1\.5:8080 33\.3% \(masqueraded\)/)
    assert.doesNotMatch(stdout, /KUBE-SEP-/)
  })

  it('prints the tree with shares with -o wide (or --chains) and exits 0 when nothing is wrong', async () => {
    const wide = await runCommand(['trace', '--from-file', v129, 'svc/default/web', '--chains'])
    assert.equal(wide.stdout, (await runCommand(['trace', '--from-file', v129, 'svc/default/web', '-o', 'wide'])).stdout)
    const {stdout, stderr, exitCode} = wide
    assert.equal(exitCode, 0, stderr)
    assert.match(stdout, /svc\/web in default \(ClusterIP 10\.96\.10\.10\): kube-proxy iptables mode/)
    assert.match(stdout, /ClusterIP 10\.96\.10\.10:80 from a pod/)
    assert.equal(stdout.match(/33\.3% -> KUBE-SEP-/g)?.length, 6)
    assert.match(stdout, /=> 10\.244\.1\.5:8080 33\.3%, 10\.244\.2\.6:8080 33\.3%, 10\.244\.3\.7:8080 33\.3%/)
  })

  it('-o json: every endpoint an object with ip, port and share; -n picks the namespace', async () => {
    const {stdout, exitCode} = await runCommand(['trace', '--from-file', v129, 'svc/shop', '-n', 'default', '-o', 'json'])
    assert.equal(exitCode, 0)
    const result = JSON.parse(stdout) as TraceResult
    const nodePort = result.ports[0].frontends.find((f) => f.kind === 'nodePort')!
    assert.deepEqual(
      nodePort.endpoints.map((e) => [e.ip, e.port, Number(e.share.toFixed(6)), e.masquerade]),
      [
        ['10.244.1.11', 80, 0.5, true],
        ['10.244.3.12', 80, 0.5, true],
      ],
    )
  })

  it('-o yaml has the same structure', async () => {
    const {stdout, exitCode} = await runCommand(['trace', '--from-file', v129, 'svc/default/web', '--port', 'http', '-o', 'yaml'])
    assert.equal(exitCode, 0)
    assert.match(stdout, /endpoints:\n\s+- ip: 10\.244\.1\.5\n\s+port: 8080\n\s+share: 0\.33/)
  })

  it('exits 2 on findings (shares not adding up to 100%)', async () => {
    const {stdout, exitCode} = await runCommand(['trace', '--from-file', v129, 'svc/default/broken'])
    assert.equal(exitCode, 2)
    assert.match(stdout, /1 finding\(s\):\n\s+! \[\(unnamed\) 80\/TCP\] ClusterIP 10\.96\.10\.16:80 from a pod: endpoint shares add up to 75\.0%/)
  })

  it('traces nftables and IPVS dumps offline, IPVS by address', async () => {
    const nft = await runCommand(['trace', '--from-file', fixture('nftables-v1.33-node.txt'), 'svc/default/web', '-o', 'json'])
    assert.equal(nft.exitCode, 0, nft.stderr)
    assert.equal((JSON.parse(nft.stdout) as TraceResult).mode, 'nftables')
    const ipvs = await runCommand(['trace', '--from-file', fixture('ipvs-v1.28-node.txt'), '10.96.30.1:80'])
    assert.equal(ipvs.exitCode, 0, ipvs.stderr)
    assert.match(ipvs.stdout, /kube-proxy ipvs mode/)
    assert.match(ipvs.stdout, /10\.244\.1\.5:8080 75\.0%, 10\.244\.2\.6:8080 25\.0%/)
  })

  const refusals: Array<[string, string[], RegExp]> = [
    [
      'an unknown Service lists close matches',
      ['svc/default/webb'],
      /^error: service default\/webb is not in this iptables dump; did you mean: svc\/default\/web/,
    ],
    ['a Service name in an IPVS listing asks for an address', ['--from-file', fixture('ipvs-v1.28-node.txt'), 'svc/x'], /IPVS listings carry no Service names/],
    ['a missing file', ['--from-file', '/nonexistent/dump.txt', 'svc/x'], /^error: cannot read \/nonexistent\/dump\.txt: ENOENT/],
    [
      'a garbage dump names the line',
      ['--from-file', fixture('README.md'), 'svc/x'],
      /^error: iptables dump, line 3: "\| file \| what \|" is outside any table/,
    ],
    ['a bad target', ['svc/a/b/c'], /is not a Service: use svc\/NAME, NAME or svc\/NAMESPACE\/NAME/],
    ['an unknown port', ['svc/default/web', '--port', 'grpc'], /svc\/web has no port "grpc"; its ports: http \(80\)/],
  ]
  for (const [what, args, message] of refusals) {
    it(`refuses ${what} in one line, exit 1`, async () => {
      const argv = args[0] === '--from-file' ? ['trace', ...args] : ['trace', '--from-file', v129, ...args]
      const {stderr, exitCode} = await runCommand(argv)
      assert.equal(exitCode, 1)
      assert.match(stderr, message)
      assert.equal(stderr.trim().split('\n').length, 1, stderr)
    })
  }
})

describe('trace (live cluster, HTTP fake)', function () {
  // The first connect loads @kubernetes/client-node.
  this.timeout(30_000)
  const kubeconfig = fakeApiServerSuite('shop')
  const dumpLog = `### selfhost-trace iptables iptables-save\n${readFileSync(v129, 'utf8')}### selfhost-trace end\n`
  const service = {
    metadata: {name: 'web', namespace: 'shop'},
    spec: {
      type: 'ClusterIP',
      clusterIP: '10.96.10.10',
      clusterIPs: ['10.96.10.10'],
      selector: {app: 'web'},
      ports: [{name: 'http', port: 80, protocol: 'TCP', targetPort: 8080}],
    },
  }
  const endpoint = (ip: string, node: string, ready = true) => ({
    addresses: [ip],
    conditions: {ready},
    nodeName: node,
    targetRef: {kind: 'Pod', name: `web-${ip.split('.')[2]}`},
  })
  const node = (name: string) => ({
    metadata: {name},
    status: {conditions: [{type: 'Ready', status: 'True'}], addresses: [{type: 'InternalIP', address: '192.168.0.2'}]},
  })

  // The dump was taken from namespace "default"; the fake Service lives in "shop": same rules, renamed.
  const rulesFor = (text: string) => text.replaceAll('default/web', 'shop/web')

  function fakeCluster(endpoints: unknown[], podLog = rulesFor(dumpLog), exitCode = 0) {
    let created: V1Pod | undefined
    let deleted = false
    nock(FAKE_SERVER)
      .get('/api/v1/namespaces/shop/services/web')
      .reply(200, service)
      .get('/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices')
      .query({labelSelector: 'kubernetes.io/service-name=web'})
      .reply(200, {items: [{ports: [{name: 'http', port: 8080, protocol: 'TCP'}], endpoints}]})
      .get('/api/v1/namespaces/shop/pods')
      .reply(200, {items: [{metadata: {name: 'web-1'}, status: {phase: 'Running', conditions: [{type: 'Ready', status: 'True'}]}}]})
      .get('/api/v1/namespaces/kube-system/configmaps/kube-proxy')
      .reply(200, {data: {'config.conf': 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ""\nclusterCIDR: 10.244.0.0/16\n'}})
      .get('/apis/apps/v1/namespaces/kube-system/daemonsets')
      .reply(200, {
        items: [{metadata: {name: 'kube-proxy'}, spec: {template: {spec: {containers: [{name: 'kube-proxy', image: 'registry.k8s.io/kube-proxy:v1.37.2'}]}}}}],
      })
      .get('/api/v1/nodes')
      .reply(200, {items: [node('cp-1'), node('worker-2')]})
      .post('/api/v1/namespaces/kube-system/pods', (body: V1Pod) => {
        created = body
        return true
      })
      .reply(201, (_uri, body) => body as V1Pod)
      .get(/\/api\/v1\/namespaces\/kube-system\/pods\/selfhost-trace-worker-2-[0-9a-f]{6}$/)
      .reply(200, {status: {phase: exitCode === 0 ? 'Succeeded' : 'Failed', containerStatuses: [{name: 'task', state: {terminated: {exitCode}}}]}})
      .get(/\/api\/v1\/namespaces\/kube-system\/pods\/selfhost-trace-worker-2-[0-9a-f]{6}\/log/)
      .reply(200, podLog)
      .delete(/\/api\/v1\/namespaces\/kube-system\/pods\/selfhost-trace-worker-2-[0-9a-f]{6}$/)
      .reply(200, () => {
        deleted = true
        return {}
      })
    return {created: () => created, deleted: () => deleted}
  }

  /** svc/web with no endpoints on a cluster with neither kube-proxy's ConfigMap nor its DaemonSet: the reads before any node pod. */
  const webWithoutKubeProxy = () =>
    nock(FAKE_SERVER)
      .get('/api/v1/namespaces/shop/services/web')
      .reply(200, service)
      .get('/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices')
      .query(true)
      .reply(200, {items: []})
      .get('/api/v1/namespaces/kube-system/configmaps/kube-proxy')
      .reply(404, {})
      .get('/apis/apps/v1/namespaces/kube-system/daemonsets')
      .reply(200, {items: []})

  it("reads the rules with kube-proxy's own image on the node hosting an endpoint, shows pods and readiness, deletes the pod", async () => {
    const cluster = fakeCluster([endpoint('10.244.1.5', 'worker-2'), endpoint('10.244.2.6', 'worker-2'), endpoint('10.244.3.7', 'cp-1')])
    const {stdout, stderr, exitCode} = await runCommand(['trace', 'svc/web', '--kubeconfig', kubeconfig, '-o', 'json'])
    assert.equal(exitCode, 0, stderr)
    const pod = cluster.created()!
    assert.equal(pod.spec?.nodeName, 'worker-2')
    assert.equal(pod.spec?.containers[0].image, 'registry.k8s.io/kube-proxy:v1.37.2')
    assert.equal(pod.spec?.hostNetwork, true)
    assert.ok(cluster.deleted(), 'node pod deleted')
    const result = JSON.parse(stdout) as TraceResult
    assert.equal(result.node, 'worker-2')
    assert.equal(result.backend, 'iptables-save')
    const cluster1 = result.ports[0].frontends.find((f) => f.kind === 'clusterIP')!
    assert.deepEqual(
      cluster1.endpoints.map((e) => [e.ip, e.port, Number(e.share.toFixed(6)), e.pod, e.ready]),
      [
        ['10.244.1.5', 8080, 0.333333, 'web-1', true],
        ['10.244.2.6', 8080, 0.333333, 'web-2', true],
        ['10.244.3.7', 8080, 0.333333, 'web-3', true],
      ],
    )
    assert.deepEqual(result.findings, [])
    assert.equal(nock.pendingMocks().length, 0, nock.pendingMocks().join(', '))
  })

  it('reads only what the Service needs with a script of sh, grep, wc and iptables; a crashed tool is named as such', async () => {
    const cluster = fakeCluster([endpoint('10.244.1.5', 'worker-2')], 'Segmentation fault (core dumped)\n', 139)
    const {stderr, exitCode} = await runCommand(['trace', 'svc/web', '--kubeconfig', kubeconfig])
    assert.equal(exitCode, 1)
    assert.match(stderr, /reading rules on node worker-2 failed: the task was killed \(exit code 139, SIGSEGV: the tool crashed\): Segmentation fault/)
    assert.doesNotMatch(stderr, /does image .* have sh/)
    const script = cluster.created()!.spec!.containers[0].command!.join(' ')
    assert.match(script, /-t "\$table" -S "\$chain"/)
    assert.match(script, /--comment "\?shop\/web\(/)
    // Only the tools the kube-proxy image (distroless-iptables) has.
    for (const tool of ['sed', 'awk', 'sort', 'base64', 'cut ', 'head ', 'tail ', 'mv '])
      assert.ok(!script.includes(` ${tool}`) && !script.includes(`| ${tool}`), tool)
  })

  it('exits 2 when a ready endpoint is missing from the rules and a programmed one left the slices', async () => {
    fakeCluster([endpoint('10.244.1.5', 'worker-2'), endpoint('10.244.2.6', 'worker-2'), endpoint('10.244.9.9', 'worker-2')])
    const {stdout, exitCode} = await runCommand(['trace', 'web', '--kubeconfig', kubeconfig])
    assert.equal(exitCode, 2)
    assert.match(stdout, /! \[http 80\/TCP\] endpoint 10\.244\.9\.9:8080 \(pod web-9\) is ready in an EndpointSlice but not in the rules/)
    assert.match(stdout, /! \[http 80\/TCP\] the rules still send traffic to 10\.244\.3\.7:8080, which no EndpointSlice lists any more/)
  })

  it('says so when the node has no kube-proxy rules', async () => {
    fakeCluster(
      [endpoint('10.244.1.5', 'worker-2')],
      '### selfhost-trace iptables iptables-save\n*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n### selfhost-trace end\n',
    )
    const {stderr, exitCode} = await runCommand(['trace', 'svc/web', '--kubeconfig', kubeconfig, '--node', 'worker-2'])
    assert.equal(exitCode, 1)
    assert.match(stderr, /^error: node worker-2 has no kube-proxy rules in iptables mode; is kube-proxy running there\?$/m)
  })

  it('lists close matches for an unknown Service', async () => {
    nock(FAKE_SERVER)
      .get('/api/v1/namespaces/shop/services/wbe')
      .reply(404, {kind: 'Status', reason: 'NotFound', message: 'services "wbe" not found'})
      .get('/api/v1/namespaces/shop/services')
      .reply(200, {items: [{metadata: {name: 'web'}}, {metadata: {name: 'web-admin'}}, {metadata: {name: 'db'}}]})
    const {stderr, exitCode} = await runCommand(['trace', 'svc/wbe', '--kubeconfig', kubeconfig])
    assert.equal(exitCode, 1)
    assert.equal(stderr.trim(), 'error: service "wbe" not found in namespace "shop"; did you mean: web?')
  })

  it('explains an ExternalName Service instead of failing', async () => {
    nock(FAKE_SERVER)
      .get('/api/v1/namespaces/shop/services/ext')
      .reply(200, {metadata: {name: 'ext', namespace: 'shop'}, spec: {type: 'ExternalName', externalName: 'db.example.com'}})
      .get('/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices')
      .query(true)
      .reply(200, {items: []})
    const {stdout, exitCode} = await runCommand(['trace', 'svc/ext', '--kubeconfig', kubeconfig])
    assert.equal(exitCode, 0)
    assert.match(stdout, /ExternalName Service: cluster DNS answers with a CNAME to "db\.example\.com"/)
  })

  it('says so when the user may not create pods', async () => {
    webWithoutKubeProxy()
      .get('/api/v1/nodes')
      .reply(200, {items: [node('worker-2')]})
      .post('/api/v1/namespaces/kube-system/pods')
      .reply(403, {
        kind: 'Status',
        reason: 'Forbidden',
        message: 'pods is forbidden: User "dev" cannot create resource "pods" in API group "" in the namespace "kube-system"',
      })
    const {stderr, exitCode} = await runCommand(['trace', 'svc/web', '--kubeconfig', kubeconfig, '--image', 'busybox:1.36'])
    assert.equal(exitCode, 1)
    assert.match(stderr, /^error: the trace task needs to create a privileged pod in namespace "kube-system": forbidden \(403\): you may not create pods/m)
  })

  it('says so when the cluster has no kube-proxy DaemonSet to borrow an image from', async () => {
    webWithoutKubeProxy()
    const {stderr, exitCode} = await runCommand(['trace', 'svc/web', '--kubeconfig', kubeconfig])
    assert.equal(exitCode, 1)
    assert.match(stderr, /^error: no kube-proxy DaemonSet in kube-system to borrow an image from .*pass --image/)
  })

  it('explains a headless Service with the addresses DNS returns', async () => {
    nock(FAKE_SERVER)
      .get('/api/v1/namespaces/shop/services/db')
      .reply(200, {metadata: {name: 'db', namespace: 'shop'}, spec: {type: 'ClusterIP', clusterIP: 'None', selector: {app: 'db'}, ports: [{port: 5432}]}})
      .get('/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices')
      .query(true)
      .reply(200, {
        items: [
          {
            ports: [{port: 5432, protocol: 'TCP'}],
            endpoints: [
              {addresses: ['10.244.1.7'], conditions: {ready: true}},
              {addresses: ['10.244.2.8'], conditions: {ready: false}},
            ],
          },
        ],
      })
    const {stdout, exitCode} = await runCommand(['trace', 'svc/db', '--kubeconfig', kubeconfig, '-o', 'json'])
    assert.equal(exitCode, 0)
    const result = JSON.parse(stdout) as TraceResult
    assert.match(
      result.explanation ?? '',
      /^headless Service \(clusterIP: None\): cluster DNS returns the ready endpoints' addresses directly \(10\.244\.1\.7\)/,
    )
    assert.deepEqual(result.ports, [])
  })

  it('explains a PodSecurity refusal of the node pod', async () => {
    webWithoutKubeProxy()
      .get('/api/v1/nodes')
      .reply(200, {items: [node('worker-2')]})
      .post('/api/v1/namespaces/apps/pods')
      .reply(403, {
        kind: 'Status',
        reason: 'Forbidden',
        message: 'pods "x" is forbidden: violates PodSecurity "restricted:latest": host namespaces (hostNetwork=true)',
      })
    const {stderr, exitCode} = await runCommand(['trace', 'svc/web', '--kubeconfig', kubeconfig, '--image', 'busybox:1.36', '--debug-namespace', 'apps'])
    assert.equal(exitCode, 1)
    assert.match(stderr, /^error: namespace "apps" refuses privileged pods \(PodSecurity "restricted:latest"\)/m)
  })
})

describe('trace through a pipe (the built CLI, a child process)', function () {
  this.timeout(180_000)

  it('a 2.8 MB JSON result with findings (exit 2) arrives whole: the process waits for stdout before it exits', async () => {
    const {ensureBuilt} = await import('../helpers/build.js')
    const {generateServices, iptablesSaveOf} = await import('../helpers/kube-proxy-dump.js')
    const {mkdtempSync, rmSync, writeFileSync} = await import('node:fs')
    const {tmpdir} = await import('node:os')
    const {join} = await import('node:path')
    await ensureBuilt()
    // 2,000 endpoints, the last KUBE-SVC rule gone: 1/2000 of connections match nothing (a finding).
    const lines = iptablesSaveOf(generateServices(1, 2000)).split('\n')
    lines.splice(
      lines.reduce((last, l, k) => (l.startsWith('-A KUBE-SVC-') ? k : last), -1),
      1,
    )
    const dir = mkdtempSync(join(tmpdir(), 'selfhost-trace-pipe-'))
    try {
      const file = join(dir, 'dump.txt')
      writeFileSync(file, lines.join('\n'))
      const run = await runBuiltCli(['trace', '--from-file', file, 'svc/ns0/svc-0', '-o', 'json'])
      assert.equal(run.exitCode, 2, run.stderr)
      assert.ok(run.stdout.length > 1_000_000, `${run.stdout.length} bytes`)
      const result = JSON.parse(run.stdout) as TraceResult
      assert.equal(result.ports[0].frontends[0].endpoints.length, 1999)
      assert.ok(result.findings.some((f) => f.kind === 'share-sum'))
    } finally {
      rmSync(dir, {recursive: true, force: true})
    }
  })
})

describe('trace default view on a node with Docker and CNI rules', () => {
  it('a 2-port Service with 3 endpoints prints at most 30 lines (flannel, and Calico-style dispatch)', async () => {
    const {generateServices, iptablesSaveOf} = await import('../helpers/kube-proxy-dump.js')
    const {withHostRules} = await import('../fixtures/kube-proxy/host-rules.js')
    const {mkdtempSync, rmSync, writeFileSync} = await import('node:fs')
    const {tmpdir} = await import('node:os')
    const {join} = await import('node:path')
    const [base] = generateServices(1, 3)
    const services = [base, {...base, portName: 'https', port: 443, endpoints: base.endpoints.map((e) => ({...e, port: 8443}))}]
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
    const dir = mkdtempSync(join(tmpdir(), 'selfhost-trace-view-'))
    try {
      for (const cni of [{flannel: {podCidr: '10.128.0.0/9'}}, {calico: {workloads: ['calia1b2c3d4e5f', 'cali0f9e8d7c6b5']}}]) {
        const file = join(dir, 'node.txt')
        writeFileSync(file, withHostRules(filter + iptablesSaveOf(services), {dockerNetworks: 3, ...cni}))
        const {stdout, stderr, exitCode} = await runCommand(['trace', '--from-file', file, `svc/${base.namespace}/${base.name}`])
        assert.equal(exitCode, 0, stderr)
        const lines = stdout.trimEnd().split('\n')
        assert.ok(lines.length <= 30, `${Object.keys(cni)[0]}: ${lines.length} lines:\n${stdout}`)
        assert.equal(stdout.match(/^port /gm)?.length, 2)
        assert.match(stdout, /=> 10\.128\.0\.1:8443 33\.3%/)
      }
    } finally {
      rmSync(dir, {recursive: true, force: true})
    }
  })
})
