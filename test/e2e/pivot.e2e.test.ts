import {strict as assert} from 'node:assert'
import {existsSync, readFileSync, readdirSync} from 'node:fs'
import {join} from 'node:path'

import {discoverControlPlane} from '../../src/controlplane/discover.js'
import {KubeClient} from '../../src/kube/client.js'
import {isNotFound} from '../../src/kube/errors.js'
import {nodeTaskImage} from '../../src/node/image.js'
import {type NodeTask, runNodeTask} from '../../src/node/runner.js'
import {PivotOptions, PivotRunner} from '../../src/pivot/execute.js'
import {withPortSharing} from '../../src/pivot/manifest.js'
import {BACKUP_DIR, HANDOFF_DIR, REVERTED_MARKER} from '../../src/pivot/node-scripts.js'
import {CHECKPOINT_DIR} from '../../src/checkpoint/scripts.js'
import {parseAllDocuments} from 'yaml'

import {runCommand} from '../helpers/run-command.js'
import {type TestCluster} from './cluster/harness.js'
import {eventually, runBuiltCli, startTestClusterOrSkip} from './support.js'

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

/** A directory of pivot's on a node (an absolute path there), on this machine. */
const onNode = (node: {root: string}, path: string) => join(node.root, path)

/** The backup directories on a node, and whether each is retired (a REVERTED file in it). */
function backupsOn(node: {root: string}): Array<{stamp: string; reverted: boolean}> {
  const root = onNode(node, BACKUP_DIR)
  if (!existsSync(root)) return []
  return readdirSync(root)
    .sort()
    .map((stamp) => ({stamp, reverted: existsSync(join(root, stamp, REVERTED_MARKER))}))
}

/** Files a hand-off holds on a node (a held manifest, a confirmation): none once every hand-off ended. */
function heldOn(node: {root: string}): string[] {
  const dir = onNode(node, HANDOFF_DIR)
  return existsSync(dir) ? readdirSync(dir) : []
}

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
  let image: string
  const log: string[] = []

  before(async function () {
    cluster = await startTestClusterOrSkip(this, 'pivot', {controlPlaneNodes: 3, workers: 0})
    client = await KubeClient.connect({kubeconfig: cluster.kubeconfig})
    originals = manifestBytes(cluster)
    image = await nodeTaskImage(client)
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
   * The real executor with the real node-task runner and the node-task image the CLI uses (the
   * cluster's kube-proxy image). The processes serving the test cluster are the harness's, not
   * the manifests': a static pod stops as soon as the harness's kubelet sees its manifest gone,
   * and "the new apiserver on node N", asked through the API server's pods/proxy, is the one real
   * kube-apiserver reached through node N's address (see the harness).
   */
  function runner(opts: Partial<PivotOptions> = {}, interruptAfterTask?: number): PivotRunner {
    let tasks = 0
    const runTask = async (task: NodeTask, runOpts?: {signal?: AbortSignal}) => {
      const result = await runNodeTask(client, task, {pollIntervalMs: 250, signal: runOpts?.signal, onWarning: (m) => log.push(`warning: ${m}`)})
      if (task.purpose !== 'pivot-read' && ++tasks === interruptAfterTask)
        throw new Interrupted(`interrupted after node task ${tasks} (${task.purpose} on ${task.node})`)
      return result
    }

    return new PivotRunner(
      {api: client, runTask, log: (line) => log.push(line)},
      {
        image,
        timeoutMs: 120_000,
        pollMs: 250,
        handoffDeadlineSeconds: 60,
        ...opts,
      },
    )
  }

  async function assertSelfHosted() {
    const now = manifestBytes(cluster!)
    for (const node of cluster!.nodes.filter((n) => n.role === 'control-plane')) {
      assert.deepEqual(
        readdirSync(join(node.root, 'etc/kubernetes/manifests')),
        ['etcd.yaml', 'selfhost-checkpointer.yaml'],
        `only etcd and the checkpointer are static on ${node.name}`,
      )
      assert.deepEqual(
        readdirSync(onNode(node, CHECKPOINT_DIR))
          .filter((f) => f.endsWith('.yaml'))
          .sort(),
        PIVOTED.map((c) => `${c}.yaml`).sort(),
        `checkpoints on ${node.name}`,
      )
      assert.equal(now.get(`${node.name}/etcd.yaml`), originals.get(`${node.name}/etcd.yaml`))
      const active = backupsOn(node).filter((b) => !b.reverted)
      assert.equal(active.length, 1, `one active backup on ${node.name}: ${JSON.stringify(backupsOn(node))}`)
      for (const c of PIVOTED) {
        assert.equal(
          readFileSync(join(onNode(node, BACKUP_DIR), active[0].stamp, `${c}.yaml`), 'utf8'),
          originals.get(`${node.name}/${c}.yaml`),
          `backup of ${c} on ${node.name}`,
        )
      }

      assert.deepEqual(heldOn(node), [], `no hand-off holds anything on ${node.name}`)
    }

    const plane = await discoverControlPlane(client)
    for (const c of PIVOTED) {
      const state = plane.components.find((s) => s.name === c)!
      assert.equal(state.mode, 'self-hosted', `${c} is self-hosted per status`)
      assert.equal(state.instances.filter((i) => i.ready).length, 3, `${c} has 3 Ready instances`)
      assert.ok(state.healthy, `${c} healthy per status: ${state.problems.join('; ')}`)
    }

    // Every node holds current checkpoints (kwok: the checkpointer's mirror pod is simulated, its
    // script never runs here; the real-node suite runs it), so no manual-recovery warning.
    const apiserver = plane.components.find((s) => s.name === 'kube-apiserver')!
    assert.deepEqual(
      plane.checkpoints.map((c) => [c.node, c.checkpointer, c.gap, c.checkpoints.length]),
      plane.checkpoints.map((c) => [c.node, 'ready', undefined, 3]),
    )
    assert.equal(plane.checkpoints.length, 3)
    assert.deepEqual(
      apiserver.warnings.filter((w) => /no checkpointing|recover on one node/.test(w)),
      [],
      apiserver.warnings.join('\n'),
    )
  }

  async function assertStatic() {
    assert.deepEqual(manifestBytes(cluster!), originals, 'every manifest byte for byte as before the pivot')
    for (const node of cluster!.nodes.filter((n) => n.role === 'control-plane')) {
      assert.deepEqual(
        backupsOn(node).filter((b) => !b.reverted),
        [],
        `every backup on ${node.name} kept and marked ${REVERTED_MARKER}`,
      )
      assert.deepEqual(heldOn(node), [], `no hand-off holds anything on ${node.name}`)
      assert.ok(!existsSync(onNode(node, CHECKPOINT_DIR)), `no checkpoints left on ${node.name}`)
    }

    for (const [resource, name] of [
      ['daemonsets', 'self-hosted-kube-apiserver'],
      ['deployments', 'self-hosted-kube-controller-manager'],
      ['deployments', 'self-hosted-kube-scheduler'],
    ]) {
      await assert.rejects(client.request('GET', `/apis/apps/v1/namespaces/kube-system/${resource}/${name}`, {intent: {verb: 'get', resource}}), (e) =>
        isNotFound(e),
      )
    }

    const plane = await discoverControlPlane(client)
    for (const c of PIVOTED) assert.equal(plane.components.find((s) => s.name === c)!.mode, 'static', `${c} is static again per status`)
    assert.deepEqual(
      plane.components.flatMap((c) => c.warnings.filter((w) => /no checkpointing/.test(w))),
      [],
      'static again: no self-hosting cost',
    )
  }

  afterEach(async function () {
    if (this.currentTest?.state !== 'failed') return
    console.log(log.slice(-30).join('\n'))
    for (const pod of (await client.listPods('kube-system')).items) {
      console.log(
        `${pod.metadata!.name} ${pod.spec!.nodeName ?? '-'} ${pod.status?.phase} ready=${pod.status?.conditions?.find((c) => c.type === 'Ready')?.status}`,
      )
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
    assert.deepEqual(
      docs.map((d) => d.kind),
      ['DaemonSet', 'Deployment', 'PodDisruptionBudget', 'Deployment', 'PodDisruptionBudget'],
    )
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
    console.log(
      `      (pivot took ${((Date.now() - started) / 1000).toFixed(1)}s; /readyz ${api.ok} ok, ${api.failed} failed, longest gap ${api.longestGapMs}ms)`,
    )
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
    assert.equal(
      (await client.getDeployment('kube-system', 'self-hosted-kube-controller-manager')).spec!.replicas,
      3,
      'and kept the untouched one at one per node',
    )
  })

  it('revert restores every manifest byte for byte and removes the workloads', async () => {
    const result = await runner().revert()
    assert.equal(result.exitCode, 0)
    await assertStatic()
  })

  it("a new apiserver that does not serve on its node: the node's watchdog puts the manifest back and pivot reverts everything (exit 3)", async () => {
    // The self-hosted pod on control-plane-2 gets Ready (kwok), but nothing answers at its address:
    // only the per-node check through pods/proxy can tell, the shared API stays healthy throughout.
    await cluster!.setNodeApiserverServing('control-plane-2', false)
    try {
      const result = await runner({handoffDeadlineSeconds: 20}).pivot()
      assert.equal(result.outcome, 'rolled-back', log.slice(-5).join('\n'))
      assert.equal(result.exitCode, 3)
      assert.match(result.summary.join('\n'), /kube-apiserver hand-off failed; the static control plane was restored/)
    } finally {
      await cluster!.setNodeApiserverServing('control-plane-2', true)
    }

    assert.ok(
      log.some((l) => l.includes('[kube-apiserver] control-plane-1: hand-off confirmed')),
      'control-plane-1, whose instance serves, was handed off first',
    )
    assert.ok(
      log.some((l) => /\[kube-apiserver\] control-plane-2: not confirmed/.test(l)),
      log.slice(-10).join('\n'),
    )
    await assertStatic()
    await eventually('no node-task pod left', 20_000, async () =>
      (await client.listPods('kube-system', {labelSelector: 'selfhost.kubectl.io/node-task'})).items.length === 0 ? true : undefined,
    )
  })

  it('Ctrl-C on the CLI during an apiserver hand-off: the node puts the manifest back, no node pod is left, a re-run finishes', async () => {
    const kubeconfig = cluster!.kubeconfig
    const node = cluster!.nodes.find((n) => n.name === 'control-plane-1')!
    const held = join(onNode(node, HANDOFF_DIR), 'kube-apiserver.yaml')
    // The new apiserver on control-plane-1 does not answer yet, so the CLI cannot confirm: the
    // watchdog holds the manifest, waiting, when Ctrl-C comes.
    await cluster!.setNodeApiserverServing('control-plane-1', false)
    let first
    try {
      first = await cli(['pivot', '--kubeconfig', kubeconfig], (child) => {
        const timer = setInterval(() => {
          if (existsSync(held)) {
            clearInterval(timer)
            setTimeout(() => child.kill('SIGINT'), 1000)
          }
        }, 100)
        child.on('close', () => clearInterval(timer))
      })
    } finally {
      await cluster!.setNodeApiserverServing('control-plane-1', true)
    }

    assert.equal(first.exitCode, 130, first.stderr)
    const manifest = join(node.root, 'etc/kubernetes/manifests/kube-apiserver.yaml')
    const expected = withPortSharing(originals.get('control-plane-1/kube-apiserver.yaml')!, 'kube-apiserver')
    await eventually('the manifest back on control-plane-1', 15_000, async () => (existsSync(manifest) ? true : undefined))
    assert.equal(readFileSync(manifest, 'utf8'), expected, "the watchdog, stopped by its pod's deletion, put the (port-sharing) manifest back")
    assert.deepEqual(heldOn(node), [], 'nothing held any more')
    const leftovers = await eventually('no node-task pod left', 15_000, async () => {
      const pods = (await client.listPods('kube-system', {labelSelector: 'selfhost.kubectl.io/node-task'})).items
      return pods.length === 0 ? pods : undefined
    }).catch(async () => (await client.listPods('kube-system', {labelSelector: 'selfhost.kubectl.io/node-task'})).items)
    assert.deepEqual(
      leftovers.map((p) => p.metadata!.name),
      [],
      'no node-task pod left behind',
    )

    const resumed = await cli(['pivot', '--kubeconfig', kubeconfig])
    assert.equal(resumed.exitCode, 0, resumed.stderr)
    assert.match(resumed.stdout, /Pivot complete/)
    await assertSelfHosted()
    const reverted = await cli(['revert', '--kubeconfig', kubeconfig])
    assert.equal(reverted.exitCode, 0, reverted.stderr)
    await assertStatic()
  })

  it('a pivot interrupted in the middle of the apiserver hand-offs completes on re-run, and reverts again', async () => {
    // Node tasks as they end: 3 backups, then on control-plane-1 the confirmation and its
    // watchdog, then the same on control-plane-2: stop once that hand-off is done.
    await assert.rejects(runner({}, 7).pivot(), Interrupted)
    const halfway = readdirSync(join(cluster!.nodes.find((n) => n.name === 'control-plane-2')!.root, 'etc/kubernetes/manifests'))
    assert.ok(!halfway.includes('kube-apiserver.yaml'), "the interrupted run had moved control-plane-2's apiserver manifest")
    const resumed = await runner().pivot()
    assert.equal(resumed.outcome, 'completed')
    await assertSelfHosted()
    await runner().revert()
    await assertStatic()
  })
})
