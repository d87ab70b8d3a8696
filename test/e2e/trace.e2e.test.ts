import {strict as assert} from 'node:assert'
import {execFile} from 'node:child_process'
import {promisify} from 'node:util'

import {KubeClient} from '../../src/kube/client.js'
import type {MultiNodeTrace, TraceResult} from '../../src/trace/model.js'
import {runCommand} from '../helpers/run-command.js'
import {type TestCluster} from './cluster/harness.js'
import {assertKernelAgrees, probeInNamespace} from './kernel/agreement.js'
import {eventually, startTestClusterOrSkip} from './support.js'
import {inCI} from '../helpers/ci.js'

const run = promisify(execFile)

/**
 * trace against a real control plane whose worker nodes run a real kube-proxy in their own
 * network namespace: the node task's script runs there for real and reads what kube-proxy
 * programmed for a Service whose endpoints the real EndpointSlice controller wrote.
 */
describe('trace (e2e: real kube-proxy on the test cluster workers)', function () {
  this.timeout(400_000)
  let cluster: TestCluster | undefined
  let client: KubeClient
  const namespace = 'shop'

  before(async function () {
    cluster = await startTestClusterOrSkip(this, 'trace', {controlPlaneNodes: 1, workers: 2})
    const workers = cluster.nodes.filter((n) => n.role === 'worker')
    if (workers.some((w) => !w.netns)) {
      if (inCI()) throw new Error('the test cluster workers have no network namespace (kube-proxy) in CI')
      console.warn('skipping trace e2e: the workers run without kube-proxy here (no root?)')
      this.skip()
    }

    client = await KubeClient.connect({kubeconfig: cluster.kubeconfig})
    await client.apply('v1', 'namespaces', {apiVersion: 'v1', kind: 'Namespace', metadata: {name: namespace}})
    await client.apply('apps/v1', 'deployments', {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: {name: 'web', namespace},
      spec: {
        replicas: 3,
        selector: {matchLabels: {app: 'web'}},
        template: {
          metadata: {labels: {app: 'web'}},
          spec: {containers: [{name: 'web', image: 'registry.k8s.io/e2e-test-images/agnhost:2.53', ports: [{name: 'http', containerPort: 8080}]}]},
        },
      },
    })
    await client.apply('v1', 'services', {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: {name: 'web', namespace},
      spec: {selector: {app: 'web'}, ports: [{name: 'http', port: 80, targetPort: 'http', protocol: 'TCP'}]},
    })
  })

  after(async () => {
    await cluster?.stop()
  })

  /** The ready endpoints the real EndpointSlice controller wrote, once there are three. */
  const readyEndpoints = () =>
    eventually(
      '3 ready endpoints in the EndpointSlices of shop/web',
      120_000,
      async () => {
        const slices = await client.listEndpointSlices(namespace, 'kubernetes.io/service-name=web')
        const ips = slices.items.flatMap((s) => (s.endpoints ?? []).filter((e) => e.conditions?.ready !== false).flatMap((e) => e.addresses))
        return ips.length === 3 ? ips.sort() : undefined
      },
      500,
    )

  it("traces svc/web on a worker through the real kube-proxy's rules: every ready endpoint, a third each, pods named, node pod gone", async () => {
    const ips = await readyEndpoints()
    const worker = cluster!.nodes.find((n) => n.role === 'worker')!
    await eventually(
      `kube-proxy on ${worker.name} to program shop/web's 3 endpoints`,
      60_000,
      async () => {
        const {stdout} = await run('ip', ['netns', 'exec', worker.netns!, 'iptables-save', '-t', 'nat'])
        return ips.every((ip) => stdout.includes(`shop/web:http -> ${ip}:8080`)) ? true : undefined
      },
      500,
    )

    const {stdout, stderr, exitCode} = await runCommand([
      'trace',
      'svc/web',
      '-n',
      namespace,
      '--kubeconfig',
      cluster!.kubeconfig,
      '--node',
      worker.name,
      '-o',
      'json',
    ])
    assert.equal(exitCode, 0, stderr)
    const result = JSON.parse(stdout) as TraceResult
    assert.equal(result.node, worker.name)
    assert.equal(result.mode, 'iptables')
    // The script asks kube-proxy itself with curl (install-deps.sh installs it for CI).
    const hasCurl = await run('sh', ['-c', 'command -v curl']).then(
      () => true,
      () => false,
    )
    if (hasCurl || inCI()) assert.equal(result.modeSource, 'kube-proxy')
    assert.deepEqual(result.findings, [])
    const clusterIP = result.ports[0].frontends.find((f) => f.kind === 'clusterIP')!
    assert.deepEqual(clusterIP.endpoints.map((e) => e.ip).sort(), ips)
    for (const e of clusterIP.endpoints) {
      assert.equal(e.port, 8080)
      assert.ok(Math.abs(e.share - 1 / 3) < 1e-6, `${e.ip}: ${e.share}`)
      assert.match(e.pod ?? '', /^web-/)
      assert.equal(e.ready, true)
    }

    // The kernel agrees: endpoint addresses become local in the worker's namespace, listeners
    // answer there, and 300 connections to the ClusterIP split as trace said.
    for (const ip of ips) await run('ip', ['netns', 'exec', worker.netns!, 'ip', 'addr', 'add', `${ip}/32`, 'dev', 'lo'])
    const landed = await probeInNamespace(
      worker.netns!,
      clusterIP.endpoints.map((e) => `${e.ip}:${e.port}`),
      [{target: clusterIP.address, count: 300}],
    )
    assertKernelAgrees(clusterIP, landed[clusterIP.address], 300)

    const left = await client.listPods('kube-system', {labelSelector: 'app.kubernetes.io/managed-by=kubectl-selfhost,selfhost.kubectl.io/node-task=trace'})
    assert.deepEqual(
      left.items.filter((p) => !p.metadata?.deletionTimestamp).map((p) => p.metadata?.name),
      [],
      'no node pod left running',
    )
  })

  it('`trace svc/kubernetes -n default` with no other flag (KUBECONFIG from the environment): traced on a node with kube-proxy, the API servers as endpoints', async () => {
    const saved = process.env.KUBECONFIG
    process.env.KUBECONFIG = cluster!.kubeconfig
    let outcome: Awaited<ReturnType<typeof runCommand>>
    try {
      outcome = await runCommand(['trace', 'svc/kubernetes', '-n', 'default'])
    } finally {
      if (saved === undefined) delete process.env.KUBECONFIG
      else process.env.KUBECONFIG = saved
    }

    const {stdout, stderr, exitCode} = outcome
    assert.equal(exitCode, 0, `${stdout}\n${stderr}`)
    const workers = cluster!.nodes.filter((n) => n.role === 'worker').map((n) => n.name)
    const header = /^svc\/kubernetes in default \(ClusterIP (\S+)\) on node (\S+): kube-proxy iptables mode/m.exec(stdout)
    assert.ok(header, stdout)
    // Traced on a worker: here control-plane nodes run no kube-proxy.
    assert.ok(workers.includes(header[2]), `traced on ${header[2]}, not a worker`)
    const slices = await client.listEndpointSlices('default', 'kubernetes.io/service-name=kubernetes')
    const apiServers = slices.items.flatMap((s) => s.endpoints.flatMap((e) => e.addresses.flatMap((a) => (s.ports ?? []).map((p) => `${a}:${p.port}`)))).sort()
    assert.ok(apiServers.length > 0)
    const line = new RegExp(`ClusterIP ${header[1].replaceAll('.', '\\.')}:443 from a pod\n    => (.*)\n`).exec(stdout)
    assert.ok(line, stdout)
    const landed = [...line[1].matchAll(/(\d+\.\d+\.\d+\.\d+:\d+) (\d+\.\d)%/g)]
    assert.deepEqual(landed.map((m) => m[1]).sort(), apiServers)
    for (const m of landed) assert.ok(Math.abs(Number(m[2]) - 100 / apiServers.length) < 0.1, line[1])
  })

  it('--all-nodes: both workers route alike; the control-plane node without kube-proxy is a finding (exit 2)', async () => {
    await readyEndpoints()
    const {stdout, exitCode} = await runCommand(['trace', 'svc/web', '-n', namespace, '--kubeconfig', cluster!.kubeconfig, '--all-nodes', '-o', 'json'])
    const trace = JSON.parse(stdout) as MultiNodeTrace
    const workers = cluster!.nodes
      .filter((n) => n.role === 'worker')
      .map((n) => n.name)
      .sort()
    assert.deepEqual(trace.nodes.map((n) => n.node).sort(), workers)
    assert.deepEqual(trace.differences, [])
    const controlPlane = cluster!.nodes.find((n) => n.role === 'control-plane')!.name
    assert.deepEqual(
      trace.findings.map((f) => f.kind),
      ['node-unreadable'],
    )
    assert.match(trace.findings[0].message, new RegExp(`node ${controlPlane} has no kube-proxy rules`))
    assert.equal(exitCode, 2)
  })
})
