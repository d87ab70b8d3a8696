import {strict as assert} from 'node:assert'
import {mkdtempSync, readFileSync, readdirSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import type {V1DaemonSet, V1Deployment} from '../../src/kube/types.js'

import {CHECKPOINT_DIR} from '../../src/checkpoint/scripts.js'
import {discoverControlPlane} from '../../src/controlplane/discover.js'
import {SYSTEM_NAMESPACE} from '../../src/controlplane/model.js'
import {KubeClient} from '../../src/kube/client.js'
import {pollUntil} from '../../src/kube/wait.js'
import type {UpgradeResult} from '../../src/upgrade/execute.js'
import type {UpgradePlan} from '../../src/upgrade/plan.js'
import {BINARY_VERSION, type TestCluster} from './cluster/harness.js'
import {runCommand} from '../helpers/run-command.js'
import {startTestClusterOrSkip} from './support.js'

/**
 * `upgrade` against the real control plane of the test cluster: real kube-apiserver, etcd,
 * kube-controller-manager (its DaemonSet and Deployment controllers carry out every rollout
 * and rollback) and kube-scheduler (it places the new pods); kwok plays the kubelets: pods
 * become Ready, except those whose image tag ends in "-broken", which crash-loop forever.
 *
 * The cluster starts as kubeadm v1.36.4 (the manifests, images and kubelets say so) while the
 * real binaries are v1.37.2, and the real `pivot` command makes it self-hosted. So an upgrade
 * to v1.37.2 is one the /version gate can truly check: after it, the apiserver answering is a
 * v1.37.2. What the sandbox cannot prove: the
 * self-hosted pods are simulated, so changing their image does not change the process that
 * serves the API, and the leader leases are held by the harness's own processes (running
 * under the node's hostname). The last test shows the /version gate doing its job where the
 * sandbox cannot follow: a v1.37.3 apiserver image comes up Ready, /version still says
 * v1.37.2, and the tool rolls it back rather than believe the image tag.
 */

const FROM = 'v1.36.4'
const APISERVER_DS = 'self-hosted-kube-apiserver'

/**
 * Runs the command through oclif in this process (test/helpers/run-command.ts), from the
 * TypeScript sources: nothing here depends on a build in dist/.
 */
/**
 * The gate's verdict on a lease the harness's own process holds: renewed, by none of the pods
 * (the holder took it before the pod on its node started), and a warning that says so.
 */
function assertLeaderIsHarnessProcess(stderr: string, warnings: string[], component: string): void {
  assert.match(stderr, /gate: leader control-plane-1 \(none of the pods\), renewed/)
  const said = new RegExp(
    `^${component}: the lease holder control-plane-1 runs on control-plane-1 but took the lease at \\S+, before pod self-hosted-${component}-\\S+ started \\(\\S+\\): another process on that node leads; it renewed the lease, but its version could not be checked$`,
  )
  assert.ok(
    warnings.some((w) => said.test(w)),
    `${component}: no warning about the holder in\n${warnings.join('\n')}`,
  )
}

async function selfhost(kubeconfig: string, ...args: string[]) {
  return runCommand([
    ...args,
    '--kubeconfig',
    kubeconfig,
    ...(args[0] === 'upgrade' ? ['--backup-dir', mkdtempSync(join(tmpdir(), 'selfhost-upgrade-e2e-'))] : []),
  ])
}

/**
 * A test cluster at kubeadm v1.36.4 made self-hosted by the real pivot command. On a laptop
 * without root or Go the suite says why and skips; in CI it must fail.
 */
async function selfHostedCluster(context: Mocha.Context, controlPlaneNodes: number, workers: number): Promise<{cluster: TestCluster; client: KubeClient}> {
  const cluster = await startTestClusterOrSkip(context, 'upgrade', {controlPlaneNodes, workers, kubeadmVersion: FROM})

  const client = await KubeClient.connect({kubeconfig: cluster.kubeconfig})
  // Pods (pivot's node tasks and workloads) are refused until kube-system's default service account exists.
  await pollUntil(
    async () => {
      const res = await client.raw('GET', '/api/v1/namespaces/kube-system/serviceaccounts/default', {intent: {verb: 'get', resource: 'serviceaccounts'}})
      return {done: res.status === 200, value: undefined, progress: `service account: ${res.status}`}
    },
    {timeoutMs: 60_000, what: 'the kube-system default service account'},
  )
  // The real pivot command, as a user runs it: node tasks in the cluster's kube-proxy image,
  // each hand-off confirmed once the new apiserver answers on its own (on one node: the API;
  // on three: through pods/proxy to each node's address, which the harness leads to the one
  // real apiserver).
  const pivot = await selfhost(cluster.kubeconfig, 'pivot', '--timeout', '3m')
  assert.equal(pivot.exitCode, 0, `pivot failed:\n${pivot.stderr}`)
  for (const node of cluster.nodes.filter((n) => n.role === 'control-plane')) {
    assert.deepEqual(readdirSync(join(node.root, 'etc/kubernetes/manifests')), ['etcd.yaml', 'selfhost-checkpointer.yaml'])
  }

  return {cluster, client}
}

/**
 * The version in each checkpoint file on each control-plane node (written by real node tasks on
 * the node's root; kwok only simulates the checkpointer itself).
 */
function checkpointVersions(cluster: TestCluster): Record<string, string> {
  const out: Record<string, string> = {}
  for (const node of cluster.nodes.filter((n) => n.role === 'control-plane')) {
    for (const c of ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler']) {
      out[`${node.name}/${c}`] = /^# version (\S+) /m.exec(readFileSync(join(node.root, CHECKPOINT_DIR, `${c}.yaml`), 'utf8'))?.[1] ?? 'none'
    }
  }

  return out
}

/**
 * Counts the apiserver workload's Ready pods (not terminating) every 200ms until stopped, and
 * returns the fewest seen: on one node surge must never leave it at zero; on three, a rolling
 * update takes one at a time.
 */
function watchReadyApiservers(client: KubeClient): () => Promise<{fewest: number; samples: number}> {
  let fewest = Number.POSITIVE_INFINITY
  let samples = 0
  let running = true
  const loop = (async () => {
    while (running) {
      const pods = await client.listPods(SYSTEM_NAMESPACE, {labelSelector: `k8s-app=${APISERVER_DS}`})
      const ready = pods.items.filter((p) => !p.metadata?.deletionTimestamp && p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'))
      fewest = Math.min(fewest, ready.length)
      samples++
      await new Promise((r) => setTimeout(r, 200))
    }
  })()
  return async () => {
    running = false
    await loop
    return {fewest, samples}
  }
}

describe('upgrade (e2e, real control plane)', function () {
  this.timeout(900_000)
  let cluster: TestCluster | undefined
  let client: KubeClient

  before(async function () {
    ;({cluster, client} = await selfHostedCluster(this, 1, 1))
  })

  after(async () => {
    await cluster?.stop()
  })

  /** The image each component's workload runs, read from the cluster. */
  async function workloadImages(): Promise<Record<string, string>> {
    const [apiserver, kcm, scheduler, proxy] = await Promise.all([
      client.getDaemonSet(SYSTEM_NAMESPACE, APISERVER_DS),
      client.getDeployment(SYSTEM_NAMESPACE, 'self-hosted-kube-controller-manager'),
      client.getDeployment(SYSTEM_NAMESPACE, 'self-hosted-kube-scheduler'),
      client.getDaemonSet(SYSTEM_NAMESPACE, 'kube-proxy'),
    ])
    const image = (w: V1DaemonSet | V1Deployment) => w.spec!.template.spec!.containers[0].image!
    return {'kube-apiserver': image(apiserver), 'kube-controller-manager': image(kcm), 'kube-scheduler': image(scheduler), 'kube-proxy': image(proxy)}
  }

  async function assertHealthyAt(version: string): Promise<void> {
    const plane = await discoverControlPlane(client)
    for (const name of ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kube-proxy']) {
      const component = plane.components.find((c) => c.name === name)!
      assert.equal(component.mode, 'self-hosted', name)
      assert.ok(component.healthy, `${name}: ${component.problems.join('; ')}`)
      assert.deepEqual(component.versions, [version], name)
      assert.ok(
        component.instances.every((i) => i.ready),
        name,
      )
    }
  }

  it('dry-run shows the plan (order, images in the same registry, surge on one node) and changes nothing', async () => {
    const before = await client.getDaemonSet(SYSTEM_NAMESPACE, APISERVER_DS)
    const run = await selfhost(cluster!.kubeconfig, 'upgrade', '--version', BINARY_VERSION, '--dry-run', '-o', 'json')
    assert.equal(run.exitCode, 0, run.stderr)
    const {plan} = JSON.parse(run.stdout) as {plan: UpgradePlan}
    assert.equal(plan.allowed, true)
    assert.deepEqual(plan.order, ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kube-proxy'])
    for (const c of plan.components) {
      assert.equal(c.imageBefore, `registry.k8s.io/${c.component}:${FROM}`)
      assert.equal(c.imageAfter, `registry.k8s.io/${c.component}:${BINARY_VERSION}`)
    }

    assert.equal(plan.components[0].strategy, 'surge')
    const table = await selfhost(cluster!.kubeconfig, 'upgrade', '--version', BINARY_VERSION, '--plan')
    assert.equal(table.exitCode, 0, table.stderr)
    assert.match(table.stdout, /^Upgrade plan: v1\.36\.4 -> v1\.37\.2 \(upgrade\)$/m)
    assert.match(table.stdout, /The plan can run\.$/m)
    const after = await client.getDaemonSet(SYSTEM_NAMESPACE, APISERVER_DS)
    assert.equal(after.metadata?.resourceVersion, before.metadata?.resourceVersion)
  })

  it('refuses in one line: a skipped minor, a bad version', async () => {
    const skip = await selfhost(cluster!.kubeconfig, 'upgrade', '--version', 'v1.38.0')
    assert.equal(skip.exitCode, 1)
    assert.match(
      skip.stderr,
      /^error: refused by no-skipped-minor: .*at v1\.36\.4: v1\.38\.0 would skip 1 minor release\(s\); upgrade to the newest 1\.37\.x first\n$/,
    )
    const bad = await selfhost(cluster!.kubeconfig, 'upgrade', '--version', '1.37')
    assert.equal(bad.exitCode, 1)
    assert.equal(bad.stderr, 'error: --version "1.37" is not a Kubernetes version; use the form v1.15.0 (or 1.15.0, v1.16.0-rc.1)\n')
  })

  it(`upgrades ${FROM} -> ${BINARY_VERSION} in order, gated on health`, async () => {
    assert.deepEqual(new Set(Object.values(checkpointVersions(cluster!))), new Set([FROM]), 'pivot checkpointed the running version')
    const started = Date.now()
    const stopWatching = watchReadyApiservers(client)
    const run = await selfhost(cluster!.kubeconfig, 'upgrade', '--version', BINARY_VERSION, '--timeout', '3m', '-o', 'json')
    const seconds = Math.round((Date.now() - started) / 1000)
    const apiservers = await stopWatching()
    // Surge on the only control-plane node: the old apiserver pod went only once the new one was Ready.
    assert.ok(apiservers.samples > 5 && apiservers.fewest >= 1, `apiserver pods Ready: at least ${apiservers.fewest} over ${apiservers.samples} samples`)
    assert.equal(run.exitCode, 0, `${run.stderr}\n${run.stdout}`)
    const {result} = JSON.parse(run.stdout) as {result: UpgradeResult}
    assert.equal(result.outcome, 'upgraded')
    assert.deepEqual(
      result.components.map((c) => [c.component, c.result]),
      [
        ['kube-apiserver', 'upgraded'],
        ['kube-controller-manager', 'upgraded'],
        ['kube-scheduler', 'upgraded'],
        ['kube-proxy', 'upgraded'],
      ],
    )
    // Progress came in order, each gate passed before the next component started.
    const at = (pattern: RegExp) => run.stderr.search(pattern)
    const marks = [
      at(/\[1\/4\] kube-apiserver/),
      at(/gate: \/version v1\.37\.2/),
      at(/kube-apiserver upgraded in/),
      at(/\[2\/4\] kube-controller-manager/),
      at(/kube-controller-manager upgraded in/),
      at(/\[3\/4\] kube-scheduler/),
      at(/kube-scheduler upgraded in/),
      at(/\[4\/4\] kube-proxy/),
      at(/kube-proxy upgraded in/),
    ]
    assert.ok(
      marks.every((m, i) => m >= 0 && (i === 0 || m > marks[i - 1])),
      `progress out of order:\n${run.stderr}`,
    )
    // The harness runs kcm and scheduler itself under the node's hostname and they hold the
    // leases since the cluster started: the new pods on that node started later, so the gate
    // credits none of them and says the renewals could not show the leader's version.
    for (const component of ['kube-controller-manager', 'kube-scheduler']) {
      assertLeaderIsHarnessProcess(run.stderr, result.warnings, component)
    }

    assert.deepEqual(await workloadImages(), {
      'kube-apiserver': `registry.k8s.io/kube-apiserver:${BINARY_VERSION}`,
      'kube-controller-manager': `registry.k8s.io/kube-controller-manager:${BINARY_VERSION}`,
      'kube-scheduler': `registry.k8s.io/kube-scheduler:${BINARY_VERSION}`,
      'kube-proxy': `registry.k8s.io/kube-proxy:${BINARY_VERSION}`,
    })
    // The DaemonSet is left as pivot made it: on one 1.22+ node with port sharing, pivot's own strategy surges too.
    const ds = await client.getDaemonSet(SYSTEM_NAMESPACE, APISERVER_DS)
    assert.deepEqual([ds.spec?.updateStrategy?.rollingUpdate?.maxSurge, ds.spec?.updateStrategy?.rollingUpdate?.maxUnavailable], [1, 0])
    await assertHealthyAt(BINARY_VERSION)
    // Each component's checkpoints were rewritten after its gates passed, in the order of the run.
    assert.deepEqual(new Set(Object.values(checkpointVersions(cluster!))), new Set([BINARY_VERSION]), JSON.stringify(checkpointVersions(cluster!)))
    assert.equal((run.stderr.match(/checkpoints refreshed on control-plane-1/g) ?? []).length, 4, run.stderr)
    assert.ok(at(/kube-apiserver upgraded in/) < at(/checkpoints refreshed/), 'refreshed only after the gates')
    console.log(
      `      one-minor upgrade of 4 components took ${seconds}s; Ready apiserver pods never below ${apiservers.fewest} (${apiservers.samples} samples)`,
    )

    const again = await selfhost(cluster!.kubeconfig, 'upgrade', '--version', BINARY_VERSION, '-o', 'json')
    assert.equal(again.exitCode, 0, again.stderr)
    assert.equal((JSON.parse(again.stdout) as {result: UpgradeResult}).result.outcome, 'nothing-to-do')
  })

  it('a target whose pods crash-loop is caught at once and rolls back by itself, healthy and at the original version (exit 3)', async () => {
    const started = Date.now()
    const stopWatching = watchReadyApiservers(client)
    const run = await selfhost(cluster!.kubeconfig, 'upgrade', '--version', 'v1.38.0-broken', '--timeout', '30s')
    const seconds = Math.round((Date.now() - started) / 1000)
    const apiservers = await stopWatching()
    // The broken surge pod never got Ready, so the old one was never taken away.
    assert.ok(apiservers.samples > 5 && apiservers.fewest >= 1, `apiserver pods Ready: at least ${apiservers.fewest} over ${apiservers.samples} samples`)
    assert.equal(run.exitCode, 3, `${run.stderr}\n${run.stdout}`)
    // kwok's -broken stage is a CrashLoopBackOff: the rollout wait ends on it, well before --timeout.
    assert.match(
      run.stderr,
      /FAILED kube-apiserver: DaemonSet kube-system\/self-hosted-kube-apiserver cannot roll out: pod self-hosted-kube-apiserver-\S+ on control-plane-1: its kube-apiserver container keeps crashing \(\d+ restarts, last exit code 1 Error\)/,
    )
    assert.match(run.stderr, /rolling kube-apiserver back to registry\.k8s\.io\/kube-apiserver:v1\.37\.2/)
    assert.match(run.stdout, /^kube-apiserver\s+\S+:v1\.37\.2\s+\S+:v1\.38\.0-broken\s+\S+:v1\.37\.2\s+rolled-back/m)
    assert.match(run.stdout, /^kube-controller-manager\s.*not-started/m)
    assert.match(run.stdout, /Stopped and rolled back: kube-apiserver: DaemonSet kube-system\/self-hosted-kube-apiserver cannot roll out/)
    assert.doesNotMatch(run.stderr, /checkpoints refreshed/)
    assert.deepEqual(new Set(Object.values(checkpointVersions(cluster!))), new Set([BINARY_VERSION]), 'a rolled-back upgrade leaves the last good checkpoints')
    assert.deepEqual(
      Object.values(await workloadImages()),
      ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kube-proxy'].map((c) => `registry.k8s.io/${c}:${BINARY_VERSION}`),
    )
    const ds = await client.getDaemonSet(SYSTEM_NAMESPACE, APISERVER_DS)
    assert.deepEqual([ds.spec?.updateStrategy?.rollingUpdate?.maxSurge, ds.spec?.updateStrategy?.rollingUpdate?.maxUnavailable], [1, 0], 'as pivot made it')
    await assertHealthyAt(BINARY_VERSION)
    // No broken pod is left behind.
    const pods = await client.listPods(SYSTEM_NAMESPACE)
    assert.deepEqual(
      pods.items.filter((p) => !p.metadata?.deletionTimestamp && p.spec?.containers.some((c) => c.image?.endsWith('-broken'))).map((p) => p.metadata?.name),
      [],
    )
    console.log(
      `      broken target detected and rolled back in ${seconds}s; Ready apiserver pods never below ${apiservers.fewest} (${apiservers.samples} samples)`,
    )
  })

  it('the /version gate rolls back an apiserver that comes up Ready but serves another version', async () => {
    const run = await selfhost(cluster!.kubeconfig, 'upgrade', '--version', 'v1.37.3', '--components', 'apiserver', '--timeout', '20s', '-o', 'json')
    assert.equal(run.exitCode, 3, `${run.stderr}\n${run.stdout}`)
    const {result} = JSON.parse(run.stdout) as {result: UpgradeResult}
    assert.equal(result.outcome, 'rolled-back')
    assert.match(result.failure!, /timed out after 20s waiting for \/version to report v1\.37\.3 \(\/version v1\.37\.2\)/)
    assert.equal((await workloadImages())['kube-apiserver'], `registry.k8s.io/kube-apiserver:${BINARY_VERSION}`)
    await assertHealthyAt(BINARY_VERSION)
  })
})

describe('upgrade on three control-plane nodes (e2e, real control plane)', function () {
  this.timeout(900_000)
  let cluster: TestCluster | undefined
  let client: KubeClient

  before(async function () {
    ;({cluster, client} = await selfHostedCluster(this, 3, 0))
  })

  after(async () => {
    await cluster?.stop()
  })

  it(`rolls ${FROM} -> ${BINARY_VERSION} one apiserver at a time, leaders on new pods`, async () => {
    const stopWatching = watchReadyApiservers(client)
    const started = Date.now()
    const run = await selfhost(cluster!.kubeconfig, 'upgrade', '--version', BINARY_VERSION, '--timeout', '3m', '-o', 'json')
    const seconds = Math.round((Date.now() - started) / 1000)
    const apiservers = await stopWatching()
    assert.equal(run.exitCode, 0, `${run.stderr}\n${run.stdout}`)
    const {plan, result} = JSON.parse(run.stdout) as {plan: UpgradePlan; result: UpgradeResult}
    assert.equal(plan.components[0].strategy, 'rolling')
    assert.match(plan.components[0].strategyNote, /^3 apiservers: one is replaced at a time/)
    assert.equal(result.outcome, 'upgraded')
    assert.ok(apiservers.samples > 5 && apiservers.fewest >= 2, `apiserver pods Ready: at least ${apiservers.fewest} of 3 over ${apiservers.samples} samples`)
    // The leases are held by the harness's processes under the hostname control-plane-1, since
    // before any new pod started. The Deployments roll out without surge, so each new pod takes
    // the node its predecessor freed: every node keeps exactly one.
    const plane = await discoverControlPlane(client)
    for (const name of ['kube-controller-manager', 'kube-scheduler']) {
      const nodes = plane.components
        .find((c) => c.name === name)!
        .instances.map((i) => i.node)
        .sort()
      assert.deepEqual(nodes, ['control-plane-1', 'control-plane-2', 'control-plane-3'], `${name}: one pod per control-plane node`)
      assertLeaderIsHarnessProcess(run.stderr, result.warnings, name)
    }

    for (const name of ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler']) {
      const component = plane.components.find((c) => c.name === name)!
      assert.ok(component.healthy, `${name}: ${component.problems.join('; ')}`)
      assert.deepEqual(component.versions, [BINARY_VERSION], name)
      assert.equal(component.instances.length, 3, name)
      assert.ok(
        component.instances.every((i) => i.node.startsWith('control-plane-')),
        name,
      )
    }

    assert.deepEqual(
      plane.components
        .find((c) => c.name === 'kube-apiserver')!
        .instances.map((i) => i.node)
        .sort(),
      ['control-plane-1', 'control-plane-2', 'control-plane-3'],
    )

    console.log(`      HA upgrade took ${seconds}s; Ready apiserver pods never below ${apiservers.fewest} of 3 (${apiservers.samples} samples)`)
  })
})
