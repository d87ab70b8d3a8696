import {strict as assert} from 'node:assert'
import {existsSync, mkdirSync, renameSync} from 'node:fs'
import {join} from 'node:path'

import type {V1DaemonSet} from '../../src/kube/types.js'

import {discoverControlPlane} from '../../src/controlplane/discover.js'
import type {ComponentName, ControlPlane} from '../../src/controlplane/model.js'
import {KubeClient} from '../../src/kube/client.js'
import {ensureBuilt} from '../helpers/build.js'
import {BINARY_VERSION, type TestCluster} from './cluster/harness.js'
import {eventually, runBuiltCli, startTestClusterOrSkip} from './support.js'
import {inCI} from '../helpers/ci.js'

/**
 * `status` and `logs` as installed (the built bin/run.js), against the test cluster's real
 * etcd, kube-apiserver, kube-controller-manager and kube-scheduler: mirror pods synced from the
 * nodes' manifests, real Leases renewed by the real processes, the real /readyz and /livez, and
 * the real apiserver's log served through `pods/log`. kwok plays the kubelets, so workload pods
 * (kube-proxy, CoreDNS, the self-hosted DaemonSets made here) are simulated; an image tag ending
 * in -broken never becomes Ready.
 */

const selfhost = (kubeconfig: string, ...args: string[]) => runBuiltCli(args, {KUBECONFIG: kubeconfig})

const component = (plane: ControlPlane, name: ComponentName) => plane.components.find((c) => c.name === name)!

/** A self-hosted DaemonSet as pivot makes it (label k8s-app=self-hosted-<c>) on the control-plane nodes. */
function selfHostedDaemonSet(name: string, image: string): V1DaemonSet {
  const labels = {'k8s-app': `self-hosted-${name}`, component: name, tier: 'control-plane'}
  return {
    apiVersion: 'apps/v1',
    kind: 'DaemonSet',
    metadata: {name: `self-hosted-${name}`, namespace: 'kube-system', labels},
    spec: {
      selector: {matchLabels: {'k8s-app': `self-hosted-${name}`}},
      template: {
        metadata: {labels},
        spec: {
          hostNetwork: true,
          nodeSelector: {'node-role.kubernetes.io/control-plane': ''},
          tolerations: [{key: 'node-role.kubernetes.io/control-plane', operator: 'Exists', effect: 'NoSchedule'}],
          containers: [{name, image, command: [name, '--leader-elect=true']}],
        },
      },
    },
  }
}

describe('status and logs (e2e, real control plane)', function () {
  this.timeout(600_000)
  let cluster: TestCluster | undefined
  let client: KubeClient
  const controlPlaneNodes = () => cluster!.nodes.filter((n) => n.role === 'control-plane').map((n) => n.name)

  before(async function () {
    await ensureBuilt()
    cluster = await startTestClusterOrSkip(this, 'status', {controlPlaneNodes: 2, workers: 1})
    client = await KubeClient.connect({kubeconfig: cluster.kubeconfig})
    // The harness returns once the control plane serves; kube-proxy's and CoreDNS's pods follow.
    await eventually('kube-proxy and CoreDNS pods to be Ready', 180_000, async () => {
      const plane = await discoverControlPlane(client)
      const ready = (name: ComponentName, count: number) => component(plane, name).instances.filter((i) => i.ready).length === count
      return ready('kube-proxy', 3) && ready('coredns', 2) ? true : undefined
    })
  })

  after(async () => {
    await cluster?.stop()
  })

  it('status: a kubeadm-style static control plane, healthy, leaders matched to their mirror pods (exit 0)', async () => {
    const run = await selfhost(cluster!.kubeconfig, 'status', '-o', 'json')
    assert.equal(run.exitCode, 0, `${run.stdout}\n${run.stderr}`)
    const plane = JSON.parse(run.stdout) as ControlPlane
    assert.equal(plane.serverVersion, BINARY_VERSION)
    for (const name of ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'etcd'] as const) {
      const c = component(plane, name)
      assert.equal(c.mode, 'static', name)
      assert.deepEqual(
        c.instances.map((i) => [i.node, i.source, i.ready]),
        controlPlaneNodes().map((n) => [n, 'static', true]),
        name,
      )
    }

    assert.deepEqual(component(plane, 'kube-apiserver').versions, [BINARY_VERSION])
    assert.equal(component(plane, 'kube-proxy').mode, 'self-hosted')
    assert.equal(component(plane, 'kube-proxy').instances.length, 3)
    assert.equal(component(plane, 'coredns').mode, 'self-hosted')
    for (const name of ['kube-controller-manager', 'kube-scheduler'] as const) {
      const leader = component(plane, name).leader!
      assert.equal(leader.source, 'Lease')
      assert.equal(leader.stale, false)
      assert.equal(leader.pod, `${name}-${leader.holder}`, `${name} leader ${leader.holderIdentity} matched to its mirror pod`)
    }

    assert.equal(plane.apiserver.readyz.endpoint, '/readyz')
    assert.ok(plane.apiserver.readyz.ok && plane.apiserver.livez.ok)
    assert.ok(
      plane.apiserver.readyz.checks.some((c) => c.name === 'etcd' && c.ok),
      'the real /readyz?verbose lists its etcd check',
    )
    assert.equal(plane.healthy, true, JSON.stringify(plane.components.flatMap((c) => c.problems)))

    const table = await selfhost(cluster!.kubeconfig, 'health')
    assert.equal(table.exitCode, 0)
    assert.match(table.stdout, new RegExp(`^kube-scheduler\\s+static\\s+2/2\\s+${BINARY_VERSION.replace(/\./g, '\\.')}\\s+control-plane-\\d\\s+ok$`, 'm'))
  })

  it('discovery costs the same fixed number of requests against the real API server', async () => {
    const before = client.requestCount
    await discoverControlPlane(client)
    assert.equal(client.requestCount - before, 8)
  })

  it('logs: the real apiserver log of every instance, prefixed [node/pod]; --leader; -f ends cleanly on Ctrl-C', async () => {
    const all = await selfhost(cluster!.kubeconfig, 'logs', 'kube-apiserver', '--tail', '3')
    assert.equal(all.exitCode, 0, all.stderr)
    const lines = all.stdout.trimEnd().split('\n')
    for (const node of controlPlaneNodes()) {
      const own = lines.filter((l) => l.startsWith(`[${node}/kube-apiserver-${node}] `))
      assert.equal(own.length, 3, all.stdout)
      for (const line of own) assert.match(line, /\] [IWE]\d{4} \d\d:\d\d:\d\d\.\d+ /, 'a klog line of the real apiserver')
    }

    const leader = (await client.getLease('kube-system', 'kube-scheduler'))!.spec!.holderIdentity!.split('_')[0]
    const onlyLeader = await selfhost(cluster!.kubeconfig, 'logs', 'scheduler', '--leader', '--tail', '5')
    assert.equal(onlyLeader.exitCode, 0, onlyLeader.stderr)
    const prefixes = new Set(
      onlyLeader.stdout
        .trimEnd()
        .split('\n')
        .map((l) => l.split(' ')[0]),
    )
    assert.deepEqual([...prefixes], [`[${leader}/kube-scheduler-${leader}]`])

    const follow = selfhost(cluster!.kubeconfig, 'logs', 'kube-apiserver', '-f', '--tail', '1')
    let seen = ''
    follow.stdout!.on('data', (chunk: Buffer) => (seen += chunk.toString()))
    await eventually('a followed line from every apiserver', 60_000, async () =>
      controlPlaneNodes().every((n) => seen.includes(`[${n}/kube-apiserver-${n}]`)) ? true : undefined,
    )
    follow.kill('SIGINT')
    const ended = await follow
    assert.equal(ended.exitCode, 0, ended.stderr)
    assert.equal(ended.stderr, '')
  })

  it("logs kube-proxy: the worker's pod serves the real kube-proxy log from its network namespace", async function () {
    const worker = cluster!.nodes.find((n) => n.role === 'worker')!
    if (!worker.netns) {
      // The harness runs kube-proxy only where it can make network namespaces (root); CI must.
      if (inCI()) throw new Error('the test cluster ran no kube-proxy on the worker')
      this.skip()
    }

    const run = await selfhost(cluster!.kubeconfig, 'logs', 'kube-proxy', '--tail', '3')
    const own = run.stdout.split('\n').filter((l) => l.startsWith(`[${worker.name}/kube-proxy-`))
    assert.equal(own.length, 3, `${run.stdout}\n${run.stderr}`)
    for (const line of own) assert.match(line, /\] [IWE]\d{4} \d\d:\d\d:\d\d\.\d+ /)
  })

  describe('mid-pivot and after it', () => {
    const moved: Array<{from: string; to: string}> = []
    after(async () => {
      for (const {from, to} of moved) if (existsSync(to)) renameSync(to, from)
      for (const name of ['kube-scheduler', 'kube-controller-manager']) await client.delete('apps/v1', 'daemonsets', 'kube-system', `self-hosted-${name}`)
    })

    it('a self-hosted scheduler whose pods never get Ready beside the static one: mixed, unhealthy, exit 2', async () => {
      await client.apply('apps/v1', 'daemonsets', selfHostedDaemonSet('kube-scheduler', `registry.k8s.io/kube-scheduler:${BINARY_VERSION}-broken`))
      await eventually('the DaemonSet pods on both control-plane nodes', 120_000, async () => {
        const plane = await discoverControlPlane(client)
        return component(plane, 'kube-scheduler').instances.filter((i) => i.source === 'workload').length === 2 ? true : undefined
      })

      const run = await selfhost(cluster!.kubeconfig, 'status')
      assert.equal(run.exitCode, 2, run.stdout)
      assert.match(
        run.stdout,
        /^kube-scheduler\s+mixed\s+2\/4\s+\S+\s+control-plane-\d\s+UNHEALTHY\s+self-hosted-kube-scheduler-\S+ on control-plane-\d is not ready/m,
      )
      assert.match(run.stdout, /Control plane UNHEALTHY: 2 problem\(s\)\./)
    })

    it('once the static manifests are gone: self-hosted, healthy again with Ready pods', async () => {
      await client.delete('apps/v1', 'daemonsets', 'kube-system', 'self-hosted-kube-scheduler')
      await client.apply('apps/v1', 'daemonsets', selfHostedDaemonSet('kube-controller-manager', `registry.k8s.io/kube-controller-manager:${BINARY_VERSION}`))
      for (const node of cluster!.nodes.filter((n) => n.role === 'control-plane')) {
        const from = join(node.root, 'etc/kubernetes/manifests/kube-controller-manager.yaml')
        const aside = join(node.root, 'etc/kubernetes/selfhost-e2e-aside')
        mkdirSync(aside, {recursive: true})
        const to = join(aside, 'kube-controller-manager.yaml')
        renameSync(from, to)
        moved.push({from, to})
      }

      const plane = await eventually('mirror pods gone and DaemonSet pods Ready', 120_000, async () => {
        const p = await discoverControlPlane(client)
        const kcm = component(p, 'kube-controller-manager')
        const scheduler = component(p, 'kube-scheduler')
        return kcm.mode === 'self-hosted' && kcm.instances.every((i) => i.ready) && kcm.instances.length === 2 && scheduler.mode === 'static' ? p : undefined
      })
      assert.deepEqual(
        component(plane, 'kube-controller-manager').workloads.map((w) => `${w.kind}/${w.name}`),
        ['DaemonSet/self-hosted-kube-controller-manager'],
      )

      const run = await selfhost(cluster!.kubeconfig, 'status', '-o', 'wide')
      assert.equal(run.exitCode, 0, run.stdout)
      assert.match(run.stdout, /^kube-controller-manager\s+self-hosted\s+2\/2\s+.*workload 2\/2\s+DaemonSet\/self-hosted-kube-controller-manager 2\/2$/m)
      // Only a self-hosted apiserver cannot come back from a full restart by itself; a self-hosted kcm restarts through it.
      assert.doesNotMatch(run.stdout, /no checkpointing/)

      // logs reads DaemonSet pods the same way as mirror pods (the harness serves the real
      // controller-manager's log for pods of that image).
      const logs = await selfhost(cluster!.kubeconfig, 'logs', 'controller-manager', '--tail', '2')
      assert.equal(logs.exitCode, 0, logs.stderr)
      assert.equal(logs.stderr, '')
      for (const instance of component(plane, 'kube-controller-manager').instances) {
        assert.match(instance.pod, /^self-hosted-kube-controller-manager-/)
        const own = logs.stdout.split('\n').filter((l) => l.startsWith(`[${instance.node}/${instance.pod}] `))
        assert.equal(own.length, 2, logs.stdout)
        for (const line of own) assert.match(line, /\] [IWE]\d{4} \d\d:\d\d:\d\d\.\d+ /)
      }
    })
  })
})
