import {strict as assert} from 'node:assert'
import {existsSync, mkdirSync, readFileSync, renameSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {dirname, join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'

import type {V1Deployment} from '../../src/kube/types.js'
import {execa} from 'execa'

import {MANAGED_BY_LABEL, PIVOTED_COMPONENTS, SYSTEM_NAMESPACE} from '../../src/controlplane/model.js'
import {KubeClient} from '../../src/kube/client.js'
import {pollUntil, waitForRollout} from '../../src/kube/wait.js'
import {manifestFileName} from '../../src/pivot/manifest.js'
import {type SelfHostedObject, planPivot} from '../../src/pivot/plan.js'
import type {ScaleResult} from '../../src/scale/execute.js'
import type {TestCluster} from './cluster/harness.js'
import {startTestClusterOrSkip} from './support.js'

/**
 * `scale` against the real control plane of the test cluster: real kube-apiserver, etcd,
 * kube-controller-manager (its Deployment and ReplicaSet controllers create and delete the
 * pods) and kube-scheduler (it binds them to the control-plane nodes, honouring the
 * nodeSelector, tolerations and spread constraints pivot wrote); kwok plays the kubelets and
 * marks the pods Running and Ready.
 *
 * What the sandbox cannot prove: the scheduler Deployment's pods are simulated, so no
 * process in them runs for leader election. The lease kube-system/kube-scheduler is held and
 * renewed by the real kube-scheduler process the harness started before any replica existed,
 * under the first control-plane node's hostname (or this machine's, without root/unshare).
 * A replica on that node shares the hostname, so a name match alone would credit it; the
 * tool refuses that match because the lease was taken before the pod started, and the test
 * checks it says "another process on that node leads" instead of pretending a replica does.
 * What is proven for real: the patch, the controllers' reaction, the readiness wait, the
 * placement on control-plane nodes, which pods the ReplicaSet controller removed (against
 * the plan's prediction), the pods reported as standbys, and that the lease keeps being
 * renewed across each change. A replica taking the lease over cannot be shown here.
 */

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
const DEPLOYMENT = 'self-hosted-kube-scheduler'
type ScaledComponent = 'kube-scheduler' | 'kube-controller-manager'
/** Where the static manifests wait while their component is self-hosted. */
const MANIFEST_BACKUP = join(tmpdir(), `selfhost-scale-e2e-${process.pid}`)

async function selfhost(kubeconfig: string, ...args: string[]) {
  return execa('node', ['--import', 'tsx', join(repoRoot, 'bin', 'run.js'), ...args], {
    cwd: repoRoot,
    env: {KUBECONFIG: kubeconfig, NO_COLOR: '1'},
    reject: false,
  })
}

describe('scale (e2e, real control plane)', function () {
  this.timeout(600_000)
  let cluster: TestCluster | undefined
  let client: KubeClient
  let pivotObjects: Map<ScaledComponent, SelfHostedObject[]>
  /** Where each node's static manifests were moved, to put back at the end. */
  const movedManifests: Array<{from: string; to: string}> = []

  before(async function () {
    cluster = await startTestClusterOrSkip(this, 'scale', {controlPlaneNodes: 3, workers: 1})

    client = await KubeClient.connect({kubeconfig: cluster.kubeconfig})
    pivotObjects = await planSelfHosting(cluster, client)
    await selfHost('kube-scheduler', pivotObjects.get('kube-scheduler')!, cluster, client, movedManifests)
  })

  after(async () => {
    for (const {from, to} of movedManifests) if (existsSync(to)) renameSync(to, from)
    rmSync(MANIFEST_BACKUP, {recursive: true, force: true})
    await cluster?.stop()
  })

  async function scaleTo(replicas: number, component: ScaledComponent = 'kube-scheduler'): Promise<ScaleResult> {
    const run = await selfhost(cluster!.kubeconfig, 'scale', component, '--replicas', String(replicas), '--timeout', '2m', '-o', 'json')
    assert.equal(run.exitCode, 0, `scale --replicas ${replicas} failed:\n${run.stderr}`)
    return JSON.parse(run.stdout) as ScaleResult
  }

  async function workloadPods(component: ScaledComponent = 'kube-scheduler'): Promise<Array<{name: string; node: string; ready: boolean; startedAt: string}>> {
    const deployment = await client.getDeployment(SYSTEM_NAMESPACE, `self-hosted-${component}`)
    const selector = Object.entries(deployment.spec!.selector.matchLabels!)
      .map(([k, v]) => `${k}=${v}`)
      .join(',')
    const pods = await client.listPods(SYSTEM_NAMESPACE, {labelSelector: selector})
    return pods.items
      .filter((p) => !p.metadata?.deletionTimestamp)
      .map((p) => ({
        name: p.metadata!.name!,
        node: p.spec?.nodeName ?? '',
        ready: p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false,
        startedAt: String(p.status?.startTime ?? ''),
      }))
  }

  /** One leader and the rest standbys, as the tool reports them, checked against the cluster itself. */
  async function assertLeadership(result: ScaleResult, replicas: number, component: ScaledComponent = 'kube-scheduler'): Promise<void> {
    const pods = await workloadPods(component)
    assert.equal(pods.length, replicas, `pods: ${JSON.stringify(pods)}`)
    assert.ok(pods.every((p) => p.ready))
    const controlPlane = new Set(cluster!.nodes.filter((n) => n.role === 'control-plane').map((n) => n.name))
    assert.ok(
      pods.every((p) => controlPlane.has(p.node)),
      `pods off the control plane: ${JSON.stringify(pods)}`,
    )
    // Spread one per node while there are nodes enough (pivot's topology spread constraint).
    assert.equal(new Set(pods.map((p) => p.node)).size, Math.min(replicas, controlPlane.size))

    // Who holds the lock, judged from the cluster itself: the holder's hostname, when it names
    // a node, and whether that node runs a replica that started before the lock was taken.
    const lease = (await client.getLease(SYSTEM_NAMESPACE, component))!
    const holder = lease.spec!.holderIdentity!.split('_')[0]
    const acquired = Date.parse(String(lease.spec!.acquireTime))
    const podOnHolderNode = pods.find((p) => p.node === holder)
    const replicaHolds = podOnHolderNode !== undefined && acquired + 1000 >= Date.parse(podOnHolderNode.startedAt)
    const leadership = result.leadership!
    assert.equal(leadership.leader?.holder, holder)
    if (replicaHolds) {
      assert.equal(leadership.leaderPod, podOnHolderNode!.name)
    } else {
      // The harness's real process leads (since before any replica started); the tool must not
      // credit the replica that merely shares its node's name.
      assert.equal(leadership.leaderPod, undefined)
      assert.match(
        leadership.holderElsewhere ?? '',
        podOnHolderNode ? /took the lease at .* before pod .* started .*another process on that node leads/ : /matches no pod of this workload/,
      )
      assert.ok(result.caveats.some((c) => c.includes(`the renewals prove only that some ${component} leads`)))
    }

    const standbys = pods
      .filter((p) => p.name !== leadership.leaderPod)
      .map((p) => p.name)
      .sort()
    assert.deepEqual(leadership.standbys.map((s) => s.pod).sort(), standbys)
    assert.equal(standbys.length + (leadership.leaderPod ? 1 : 0), replicas, 'one leader (or none of the replicas) and the rest standbys')

    const renewal = result.renewal!
    assert.equal(renewal.renewed, true)
    assert.ok(Date.parse(renewal.after!) > Date.parse(renewal.before!), `renewTime did not advance: ${renewal.before} -> ${renewal.after}`)
    assert.ok(renewal.observedWithinMs! <= renewal.windowMs)
  }

  it('dry-run from 1 to 3 names the leader and changes nothing', async () => {
    const before = await client.getDeployment(SYSTEM_NAMESPACE, DEPLOYMENT)
    const run = await selfhost(cluster!.kubeconfig, 'scale', 'scheduler', '--replicas', '3', '--dry-run')
    assert.equal(run.exitCode, 0, run.stderr)
    assert.match(run.stdout, /scale Deployment kube-system\/self-hosted-kube-scheduler from 1 to 3 replicas \(dry run: nothing changed\)/)
    assert.match(run.stdout, /leader now: /)
    const after = await client.getDeployment(SYSTEM_NAMESPACE, DEPLOYMENT)
    assert.equal(after.metadata?.resourceVersion, before.metadata?.resourceVersion)
  })

  it('scales 1 -> 3 -> 1, showing one leader and the standbys at each step', async () => {
    const up = await scaleTo(3)
    assert.equal(up.plan.from, 1)
    assert.equal(up.patched, true)
    assert.deepEqual(up.rollout, {desired: 3, ready: 3, updated: 3, current: 3})
    await assertLeadership(up, 3)
    const patched = await client.getDeployment(SYSTEM_NAMESPACE, DEPLOYMENT)
    assert.equal(patched.metadata?.annotations?.['selfhost.kubectl.io/previous-replicas'], '1')

    const down = await scaleTo(1)
    assert.equal(down.plan.from, 3)
    // The plan's prediction of which pods go, held against what the real ReplicaSet controller did:
    // the certain ones gone, and from a tie (up-times within a power of two) exactly the tied count.
    const {expectedRemovals, possibleRemovals} = down.plan.leadership
    assert.equal(expectedRemovals.length + (possibleRemovals?.count ?? 0), 2)
    const left = (await workloadPods()).map((p) => p.name)
    assert.ok(!expectedRemovals.some((p) => left.includes(p)), `predicted ${expectedRemovals} to go, left ${left}`)
    if (possibleRemovals) {
      const goneOfTie = possibleRemovals.among.filter((p) => !left.includes(p)).length
      assert.equal(goneOfTie, possibleRemovals.count, `tie ${JSON.stringify(possibleRemovals)}, left ${left}`)
    }
    await assertLeadership(down, 1)

    // Re-running with the count already in place changes nothing and repeats the checks.
    const again = await scaleTo(1)
    assert.equal(again.patched, false)
    assert.equal(again.plan.change, 'none')
    await assertLeadership(again, 1)
  })

  it('rolls back to the previous count when the new replicas cannot get Ready, and exits 3', async () => {
    // Two cordoned control-plane nodes: the real scheduler cannot place the new replicas.
    const cordoned = cluster!.nodes
      .filter((n) => n.role === 'control-plane')
      .slice(1)
      .map((n) => n.name)
    const cordon = (unschedulable: boolean) =>
      Promise.all(cordoned.map((name) => client.patch('v1', 'nodes', undefined, name, {spec: {unschedulable}}, 'application/merge-patch+json')))
    await cordon(true)
    try {
      const run = await selfhost(cluster!.kubeconfig, 'scale', 'scheduler', '--replicas', '3', '--timeout', '15s')
      assert.equal(run.exitCode, 3, run.stderr)
      assert.match(run.stdout, /warning: 3 replicas but only 1 node they can run on/)
      assert.match(run.stderr, /error: the 3 replicas did not get Ready: timed out after 15s .*; rolled back to 1 replica, Ready again$/)
      const deployment = await client.getDeployment(SYSTEM_NAMESPACE, DEPLOYMENT)
      assert.equal(deployment.spec?.replicas, 1)
      const pods = await workloadPods()
      assert.deepEqual(
        pods.map((p) => p.ready),
        [true],
      )
    } finally {
      await cordon(false)
    }
  })

  it('refuses in one line what it must refuse, against the real cluster', async () => {
    const zero = await selfhost(cluster!.kubeconfig, 'scale', 'scheduler', '--replicas', '0')
    assert.equal(zero.exitCode, 1)
    assert.match(zero.stderr, /^error: refusing to scale kube-scheduler to 0: .*add --force if you mean it$/)
    const apiserver = await selfhost(cluster!.kubeconfig, 'scale', 'apiserver', '--replicas', '2')
    assert.equal(apiserver.exitCode, 1)
    assert.match(apiserver.stderr, /^error: kube-apiserver runs as static pods on .* run `kubectl selfhost pivot` first/)
    const kcm = await selfhost(cluster!.kubeconfig, 'scale', 'controller-manager', '--replicas', '2')
    assert.equal(kcm.exitCode, 1)
    assert.match(kcm.stderr, /^error: kube-controller-manager runs as static pods/)

    // Leader election switched off in the Deployment: more than one replica is refused.
    const deployment = await client.getDeployment(SYSTEM_NAMESPACE, DEPLOYMENT)
    const container = deployment.spec!.template.spec!.containers.find((c) => c.name === 'kube-scheduler')!
    const setCommand = (command: string[]) =>
      client.patch('apps/v1', 'deployments', SYSTEM_NAMESPACE, DEPLOYMENT, {spec: {template: {spec: {containers: [{name: container.name, command}]}}}})
    await setCommand(container.command!.map((a) => (a.startsWith('--leader-elect=') ? '--leader-elect=false' : a)))
    try {
      const twoActive = await selfhost(cluster!.kubeconfig, 'scale', 'scheduler', '--replicas', '2')
      assert.equal(twoActive.exitCode, 1)
      assert.match(
        twoActive.stderr,
        /^error: kube-scheduler runs with --leader-elect=false: 2 replicas would be 2 active schedulers racing to bind the same pods; turn leader election on in self-hosted-kube-scheduler before scaling above 1$/,
      )
    } finally {
      await setCommand(container.command!)
    }
  })

  it('scales the controller-manager 1 -> 2 -> 1 as well', async () => {
    await selfHost('kube-controller-manager', pivotObjects.get('kube-controller-manager')!, cluster!, client, movedManifests)
    const up = await scaleTo(2, 'kube-controller-manager')
    assert.equal(up.plan.leaderElection.lease.name, 'kube-controller-manager')
    assert.deepEqual(up.rollout, {desired: 2, ready: 2, updated: 2, current: 2})
    await assertLeadership(up, 2, 'kube-controller-manager')
    const down = await scaleTo(1, 'kube-controller-manager')
    await assertLeadership(down, 1, 'kube-controller-manager')
  })
})

/** pivot's own planner over the cluster's static manifests: the objects each component becomes. */
async function planSelfHosting(cluster: TestCluster, client: KubeClient): Promise<Map<ScaledComponent, SelfHostedObject[]>> {
  const controlPlane = cluster.nodes.filter((n) => n.role === 'control-plane')
  const manifests = controlPlane.flatMap((node) =>
    PIVOTED_COMPONENTS.map((component) => ({
      node: node.name,
      component,
      bytes: readFileSync(join(node.root, 'etc/kubernetes/manifests', manifestFileName(component)), 'utf8'),
    })),
  )
  const nodes = (await client.listNodes()).items
    .filter((n) => controlPlane.some((c) => c.name === n.metadata?.name))
    .map((n) => ({
      name: n.metadata!.name!,
      internalIP: n.status?.addresses?.find((a) => a.type === 'InternalIP')?.address,
      labels: n.metadata?.labels ?? {},
      taints: (n.spec?.taints ?? []).map((t) => ({key: t.key, effect: t.effect, ...(t.value ? {value: t.value} : {})})),
    }))
  const plan = planPivot({manifests, nodes})
  return new Map(plan.components.filter((c) => c.component !== 'kube-apiserver').map((c) => [c.component as ScaledComponent, c.objects]))
}

/**
 * Makes a component self-hosted the way pivot does: its Deployment and PodDisruptionBudget
 * from pivot's planner (started at 1 replica for this test), then its static manifests moved
 * off every control-plane node so the mirror pods go.
 */
async function selfHost(
  component: ScaledComponent,
  objects: SelfHostedObject[],
  cluster: TestCluster,
  client: KubeClient,
  moved: Array<{from: string; to: string}>,
): Promise<void> {
  for (const object of objects) {
    if (object.kind === 'Deployment') {
      const spec = (object as V1Deployment).spec!
      spec.replicas = 1
      // The harness's kwok stages skip every pod labelled managed-by=kubectl-selfhost (meant
      // for node tasks, which also carry selfhost.kubectl.io/node-task), so pivot's pods would
      // stay Pending; the label is bookkeeping that scale does not read.
      delete spec.template.metadata?.labels?.[MANAGED_BY_LABEL]
      await client.apply('apps/v1', 'deployments', object)
    } else {
      await client.apply(object.apiVersion, 'poddisruptionbudgets', object)
    }
  }

  await waitForRollout(client, {kind: 'Deployment', namespace: SYSTEM_NAMESPACE, name: `self-hosted-${component}`}, {timeoutMs: 120_000})
  for (const node of cluster.nodes.filter((n) => n.role === 'control-plane')) {
    const from = join(node.root, 'etc/kubernetes/manifests', manifestFileName(component))
    const to = join(MANIFEST_BACKUP, node.name, manifestFileName(component))
    mkdirSync(dirname(to), {recursive: true})
    renameSync(from, to)
    moved.push({from, to})
  }

  await pollUntil(
    async () => {
      const mirrors = (await client.listPods(SYSTEM_NAMESPACE, {labelSelector: `component=${component}`})).items.filter(
        (p) => p.metadata?.annotations?.['kubernetes.io/config.mirror'],
      )
      return {done: mirrors.length === 0, value: undefined, progress: `${mirrors.length} static ${component} mirror pods left`}
    },
    {timeoutMs: 60_000, what: `the static ${component} mirror pods to go`},
  )
}
