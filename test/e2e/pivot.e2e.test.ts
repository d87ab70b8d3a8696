import {strict as assert} from 'node:assert'
import {readFileSync, readdirSync} from 'node:fs'
import {dirname, join} from 'node:path'

import {discoverControlPlane} from '../../src/controlplane/discover.js'
import {KubeClient} from '../../src/kube/client.js'
import {isNotFound} from '../../src/kube/errors.js'
import {type NodeTask, runNodeTask} from '../../src/node/runner.js'
import {PivotOptions, PivotRunner} from '../../src/pivot/execute.js'
import {withPortSharing} from '../../src/pivot/manifest.js'
import {parseAllDocuments} from 'yaml'

import {runCommand} from '../helpers/run-command.js'
import {type TestCluster} from './cluster/harness.js'
import {runBuiltCli, startTestClusterOrSkip} from './support.js'

const PIVOTED = ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler'] as const

/** Runs the built CLI as a user would; `interrupt` may send it signals while it runs. */
function cli(args: string[], interrupt?: (child: ReturnType<typeof runBuiltCli>, stderr: () => string) => void) {
  const child = runBuiltCli(args)
  let stderr = ''
  child.stderr.on('data', (c) => (stderr += c))
  interrupt?.(child, () => stderr)
  return child
}

class Interrupted extends Error {}

/** Every file of every control-plane node's manifest directory, byte for byte. */
function manifestBytes(cluster: TestCluster): Map<string, string> {
  const files = new Map<string, string>()
  for (const node of cluster.nodes.filter((n) => n.role === 'control-plane')) {
    const dir = join(node.root, 'etc/kubernetes/manifests')
    for (const name of readdirSync(dir).sort()) files.set(`${node.name}/${name}`, readFileSync(join(dir, name), 'utf8'))
  }

  return files
}

/** Polls /readyz until stopped: how many answers were healthy, and the longest gap without one. */
function measureApi(client: KubeClient) {
  let ok = 0
  let failed = 0
  let lastOk = Date.now()
  let longestGapMs = 0
  let running = true
  const loop = (async () => {
    while (running) {
      const res = await client.raw('GET', '/readyz', {intent: {verb: 'get', resource: '/readyz'}, timeoutMs: 2000}).catch(() => ({status: 0}))
      if (res.status === 200) {
        ok++
        longestGapMs = Math.max(longestGapMs, Date.now() - lastOk)
        lastOk = Date.now()
      } else {
        failed++
      }

      await new Promise((r) => setTimeout(r, 200))
    }
  })()
  return async () => {
    running = false
    await loop
    return {ok, failed, longestGapMs: Math.max(longestGapMs, Date.now() - lastOk)}
  }
}

describe('pivot and revert (e2e: real control plane, kwok nodes, node tasks run for real on node roots)', function () {
  this.timeout(900_000)
  let cluster: TestCluster | undefined
  let client: KubeClient
  let originals: Map<string, string>
  const log: string[] = []

  before(async function () {
    cluster = await startTestClusterOrSkip(this, 'pivot', {controlPlaneNodes: 3, workers: 0})
    client = await KubeClient.connect({kubeconfig: cluster.kubeconfig})
    originals = manifestBytes(cluster)
    // Pods (node tasks, workload pods) are refused until the controller-manager made kube-system's default service account.
    for (let i = 0; ; i++) {
      const res = await client.raw('GET', '/api/v1/namespaces/kube-system/serviceaccounts/default', {intent: {verb: 'get', resource: 'serviceaccounts'}})
      if (res.status === 200) break
      if (i > 240) throw new Error('kube-system/default service account never appeared')
      await new Promise((r) => setTimeout(r, 250))
    }
  })

  after(async function () {
    if (process.env.PIVOT_E2E_LOG) console.log(log.join('\n'))
    await cluster?.stop()
  })

  /**
   * The real executor with the real node-task runner. The processes serving the test cluster
   * are the harness's, not the manifests': the watchdog asks the real API server, and the
   * static pods stop as soon as the harness's kubelet sees a manifest gone.
   */
  function runner(opts: Partial<PivotOptions> = {}, interruptAfterTask?: number): PivotRunner {
    let tasks = 0
    const runTask = async (task: NodeTask) => {
      const result = await runNodeTask(client, task, {pollIntervalMs: 250, onWarning: (m) => log.push(`warning: ${m}`)})
      if (!['pivot-read', 'pivot-check'].includes(task.purpose) && ++tasks === interruptAfterTask) throw new Interrupted(`interrupted after node task ${tasks} (${task.purpose} on ${task.node})`)
      return result
    }

    return new PivotRunner(
      {api: client, runTask, log: (line) => log.push(line)},
      {
        image: 'busybox',
        timeoutMs: 120_000,
        pollMs: 250,
        handoffDeadlineSeconds: 60,
        handoffSettleChecks: 2,
        staticStopSeconds: 2,
        nodeHealthUrl: () => `${client.server}/readyz`,
        ...opts,
      },
    )
  }

  async function assertSelfHosted() {
    const now = manifestBytes(cluster!)
    for (const node of cluster!.nodes.filter((n) => n.role === 'control-plane')) {
      assert.deepEqual(readdirSync(join(node.root, 'etc/kubernetes/manifests')), ['etcd.yaml'], `only etcd stays static on ${node.name}`)
      assert.equal(now.get(`${node.name}/etcd.yaml`), originals.get(`${node.name}/etcd.yaml`))
      const backupRoot = join(node.root, 'etc/kubernetes/selfhost-backup')
      const active = readdirSync(backupRoot).filter((d) => !d.endsWith('-reverted'))
      assert.equal(active.length, 1)
      for (const c of PIVOTED) assert.equal(readFileSync(join(backupRoot, active[0], `${c}.yaml`), 'utf8'), originals.get(`${node.name}/${c}.yaml`), `backup of ${c} on ${node.name}`)
    }

    const plane = await discoverControlPlane(client)
    for (const c of PIVOTED) {
      const state = plane.components.find((s) => s.name === c)!
      assert.equal(state.mode, 'self-hosted', `${c} is self-hosted per status`)
      assert.equal(state.instances.filter((i) => i.ready).length, 3, `${c} has 3 Ready instances`)
      assert.ok(state.healthy, `${c} healthy per status: ${state.problems.join('; ')}`)
    }

    // What self-hosting costs, flagged as a warning: the control plane stays healthy.
    const apiserver = plane.components.find((s) => s.name === 'kube-apiserver')!
    assert.equal(apiserver.warnings.filter((w) => /^self-hosted, no checkpointing: if every control-plane node restarts at once/.test(w)).length, 1, apiserver.warnings.join('\n'))
  }

  async function assertStatic() {
    assert.deepEqual(manifestBytes(cluster!), originals, 'every manifest byte for byte as before the pivot')
    for (const [resource, name] of [
      ['daemonsets', 'self-hosted-kube-apiserver'],
      ['deployments', 'self-hosted-kube-controller-manager'],
      ['deployments', 'self-hosted-kube-scheduler'],
    ]) {
      await assert.rejects(client.request('GET', `/apis/apps/v1/namespaces/kube-system/${resource}/${name}`, {intent: {verb: 'get', resource}}), (e) => isNotFound(e))
    }

    const plane = await discoverControlPlane(client)
    for (const c of PIVOTED) assert.equal(plane.components.find((s) => s.name === c)!.mode, 'static', `${c} is static again per status`)
    assert.deepEqual(plane.components.flatMap((c) => c.warnings.filter((w) => /no checkpointing/.test(w))), [], 'static again: no self-hosting cost')
  }

  afterEach(async function () {
    if (this.currentTest?.state !== 'failed') return
    console.log(log.slice(-30).join('\n'))
    for (const pod of (await client.listPods('kube-system')).items) {
      console.log(`${pod.metadata!.name} ${pod.spec!.nodeName ?? '-'} ${pod.status?.phase} ready=${pod.status?.conditions?.find((c) => c.type === 'Ready')?.status}`)
    }
  })

  it('--dry-run reads the nodes, plans, and changes nothing', async () => {
    const result = await runner({dryRun: true}).pivot()
    assert.equal(result.outcome, 'planned')
    assert.equal(result.plan.objects.length, 5)
    assert.deepEqual(result.plan.nodes, ['control-plane-1', 'control-plane-2', 'control-plane-3'])
    assert.deepEqual(manifestBytes(cluster!), originals)
  })

  it('the commands: `pivot --dry-run -o yaml` prints the objects (the same from mirror pods), `revert --dry-run` finds nothing to revert', async () => {
    const pivot = await runCommand(['pivot', '--kubeconfig', cluster!.kubeconfig, '--dry-run', '-o', 'yaml'])
    assert.equal(pivot.exitCode, 0, pivot.stderr)
    const docs = parseAllDocuments(pivot.stdout).map((d) => d.toJS())
    assert.deepEqual(docs.map((d) => d.kind), ['DaemonSet', 'Deployment', 'PodDisruptionBudget', 'Deployment', 'PodDisruptionBudget'])
    const mirrors = await runCommand(['pivot', '--kubeconfig', cluster!.kubeconfig, '--dry-run', '--from-mirror-pods', '-o', 'yaml'])
    assert.equal(mirrors.exitCode, 0, mirrors.stderr)
    const fromMirrors = parseAllDocuments(mirrors.stdout).map((d) => d.toJS())
    // Mirror pods come back from the real API server with its defaults: the commands must still match the files'.
    for (const [i, doc] of docs.entries()) {
      if (doc.kind === 'PodDisruptionBudget') continue
      assert.deepEqual(fromMirrors[i].spec.template.spec.containers[0].command, doc.spec.template.spec.containers[0].command)
      assert.deepEqual(fromMirrors[i].spec.template.spec.tolerations, doc.spec.template.spec.tolerations)
    }

    const revert = await runCommand(['revert', '--kubeconfig', cluster!.kubeconfig, '--dry-run'])
    assert.equal(revert.exitCode, 0, revert.stderr)
    assert.match(revert.stdout, /nothing to revert: the control plane already runs from static manifests/)
    assert.deepEqual(manifestBytes(cluster!), originals)
  })

  it('pivots the control plane with the API answering throughout, and status shows it self-hosted', async () => {
    const stop = measureApi(client)
    const started = Date.now()
    const result = await runner().pivot()
    const api = await stop()
    console.log(`      (pivot took ${((Date.now() - started) / 1000).toFixed(1)}s; /readyz ${api.ok} ok, ${api.failed} failed, longest gap ${api.longestGapMs}ms)`)
    assert.equal(result.outcome, 'completed', log.slice(-5).join('\n'))
    assert.equal(api.failed, 0)
    await assertSelfHosted()
  })

  it('a re-run after scaling keeps the scaled replica count (real server-side apply, after a merge patch as `scale` sends)', async () => {
    const name = 'self-hosted-kube-scheduler'
    await client.patch('apps/v1', 'deployments', 'kube-system', name, {spec: {replicas: 1}}, 'application/merge-patch+json')
    const again = await runner().pivot()
    assert.equal(again.outcome, 'completed', log.slice(-5).join('\n'))
    assert.equal((await client.getDeployment('kube-system', name)).spec!.replicas, 1, 'pivot left the scaled count alone')
    assert.equal((await client.getDeployment('kube-system', 'self-hosted-kube-controller-manager')).spec!.replicas, 3, 'and kept the untouched one at one per node')
  })

  it('revert restores every manifest byte for byte and removes the workloads', async () => {
    const result = await runner().revert()
    assert.equal(result.exitCode, 0)
    await assertStatic()
  })

  it('Ctrl-C on the CLI during an apiserver hand-off: the node puts the manifest back, no node pod is left, a re-run finishes', async () => {
    const kubeconfig = cluster!.kubeconfig
    const health = `${client.server}/readyz`
    const first = await cli(['pivot', '--kubeconfig', kubeconfig, '--apiserver-health-url', health, '--static-stop-time', '30s'], (child, stderr) => {
      const timer = setInterval(() => {
        // The watchdog on control-plane-1 is waiting out its stop window: interrupt now.
        if (stderr().includes('[kube-apiserver] control-plane-1: handing off')) {
          clearInterval(timer)
          setTimeout(() => child.kill('SIGINT'), 3000)
        }
      }, 100)
      child.on('close', () => clearInterval(timer))
    })
    assert.equal(first.exitCode, 130, first.stderr)
    const node = cluster!.nodes.find((n) => n.name === 'control-plane-1')!
    const manifest = join(node.root, 'etc/kubernetes/manifests/kube-apiserver.yaml')
    const expected = withPortSharing(originals.get('control-plane-1/kube-apiserver.yaml')!, 'kube-apiserver')
    for (let i = 0; i < 40 && !(readdirSync(dirname(manifest)).includes('kube-apiserver.yaml')); i++) await new Promise((r) => setTimeout(r, 250))
    assert.equal(readFileSync(manifest, 'utf8'), expected, 'the watchdog, stopped early, put the (port-sharing) manifest back')
    const leftovers = (await client.listPods('kube-system', {labelSelector: 'selfhost.kubectl.io/node-task'})).items
    assert.deepEqual(leftovers.map((p) => p.metadata!.name), [], 'no node-task pod left behind')

    const resumed = await cli(['pivot', '--kubeconfig', kubeconfig, '--apiserver-health-url', health, '--static-stop-time', '2s'])
    assert.equal(resumed.exitCode, 0, resumed.stderr)
    assert.match(resumed.stdout, /Pivot complete/)
    await assertSelfHosted()
    const reverted = await cli(['revert', '--kubeconfig', kubeconfig])
    assert.equal(reverted.exitCode, 0, reverted.stderr)
    await assertStatic()
  })

  it('a pivot interrupted in the middle of the apiserver hand-offs completes on re-run, and reverts again', async () => {
    // Node tasks: 3 backups, then the hand-off on control-plane-1 and control-plane-2: stop there.
    await assert.rejects(runner({}, 5).pivot(), Interrupted)
    const halfway = readdirSync(join(cluster!.nodes.find((n) => n.name === 'control-plane-2')!.root, 'etc/kubernetes/manifests'))
    assert.ok(!halfway.includes('kube-apiserver.yaml'), 'the interrupted run had moved control-plane-2\'s apiserver manifest')
    const resumed = await runner().pivot()
    assert.equal(resumed.outcome, 'completed')
    await assertSelfHosted()
    await runner().revert()
    await assertStatic()
  })
})
