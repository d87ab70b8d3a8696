import assert from 'node:assert/strict'
import {existsSync, readFileSync} from 'node:fs'
import {dirname, join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'

import {parse as parseYaml} from 'yaml'

import type {V1Deployment} from '../../../src/kube/types.js'
import {CliError, ExitCode} from '../../../src/errors.js'
import type {NodeTask} from '../../../src/node/runner.js'
import type {PivotClusterApi} from '../../../src/pivot/cluster.js'
import {PivotOptions, PivotRunner} from '../../../src/pivot/execute.js'
import {renderRevertPlan} from '../../../src/render/pivot.js'
import {FAKE_CLUSTER_UID, FakeControlPlane} from './fake-control-plane.js'

const fixtures = resolve(dirname(fileURLToPath(import.meta.url)), '../../fixtures/kubeadm')
const PIVOTED = ['kube-apiserver.yaml', 'kube-controller-manager.yaml', 'kube-scheduler.yaml']

class Interrupted extends Error {}

/**
 * Counts every step that changes something (apply, delete, a node task) and dies at the
 * k-th: before it reaches the cluster or node, or after it took effect but before the CLI
 * heard back (a lost connection, a kill at the worst moment).
 */
function interrupting(fake: FakeControlPlane, at: number, when: 'before' | 'after') {
  let count = 0
  const step = async <T>(run: () => Promise<T>): Promise<T> => {
    // Steps overlap (a hand-off's watchdog runs while its confirmation runs): each knows its own number.
    const mine = ++count
    if (mine === at && when === 'before') throw new Interrupted(`interrupted before step ${at}`)
    const result = await run()
    if (mine === at) throw new Interrupted(`interrupted after step ${at}`)
    return result
  }

  const api: PivotClusterApi = {
    ...fake.api,
    apply: (gv, resource, object) => step(() => fake.api.apply(gv, resource, object)),
    delete: (gv, resource, ns, name) => step(() => fake.api.delete(gv, resource, ns, name)),
  }
  const runTask = (task: NodeTask, opts?: {signal?: AbortSignal}) =>
    task.purpose === 'pivot-read' ? fake.runTask(task, opts) : step(() => fake.runTask(task, opts))
  return {api, runTask, steps: () => count}
}

function runner(
  fake: FakeControlPlane,
  overrides: Partial<{api: PivotClusterApi; runTask: FakeControlPlane['runTask']; cleanupTasks: (namespace: string) => Promise<string[]>}> = {},
  opts: Partial<PivotOptions> = {},
  log: string[] = [],
) {
  return new PivotRunner(
    {
      api: overrides.api ?? fake.api,
      runTask: overrides.runTask ?? fake.runTask,
      cleanupTasks: overrides.cleanupTasks,
      log: (l) => log.push(l),
      sleep: () => new Promise((r) => setImmediate(r)),
    },
    {image: 'alpine', pollMs: 1, timeoutMs: 1500, handoffDeadlineSeconds: 3, handoffSettleSeconds: 0, ...opts},
  )
}

/** The nodes hold exactly their original manifests again, byte for byte, and nothing self-hosted is left. */
function assertStatic(fake: FakeControlPlane, originals: Map<string, Map<string, string>>) {
  for (const node of fake.nodes) {
    assert.deepEqual(fake.manifestFiles(node), originals.get(node), `manifests of ${node}`)
    assert.ok(!existsSync(join(fake.roots.get(node)!, 'etc/kubernetes/selfhost/checkpoint')), `no checkpoints left on ${node}`)
  }

  assert.deepEqual([...fake.workloads.keys()], [])
}

/** Every pivoted manifest moved into one backup directory per node, byte for byte; etcd untouched. */
function assertSelfHosted(fake: FakeControlPlane, originals: Map<string, Map<string, string>>) {
  for (const node of fake.nodes) {
    assert.deepEqual([...fake.manifestFiles(node).keys()], ['etcd.yaml', 'selfhost-checkpointer.yaml'], `only etcd and the checkpointer are static on ${node}`)
    assert.equal(parseYaml(fake.manifestFiles(node).get('selfhost-checkpointer.yaml')!).metadata.annotations['selfhost.kubectl.io/cluster'], FAKE_CLUSTER_UID)
    for (const name of PIVOTED) {
      const checkpoint = readFileSync(join(fake.roots.get(node)!, 'etc/kubernetes/selfhost/checkpoint', name), 'utf8')
      assert.match(checkpoint, /# kubectl-selfhost checkpoint end\n$/, `${node}: checkpoint ${name} whole`)
      assert.doesNotMatch(checkpoint, /\$\(HOST_IP\)/, `${node}: checkpoint ${name} names the node's IP`)
    }

    assert.equal(fake.manifestFiles(node).get('etcd.yaml'), originals.get(node)!.get('etcd.yaml'))
    const active = fake.backupDirs(node).filter((d) => !fake.retiredBackups(node).includes(d))
    assert.equal(active.length, 1, `one backup directory on ${node}`)
    for (const name of PIVOTED) assert.equal(fake.backupFile(node, active[0], name), originals.get(node)!.get(name), `${node} backup of ${name}`)
  }

  assert.deepEqual([...fake.workloads.keys()].sort(), [
    'daemonsets/self-hosted-kube-apiserver',
    'deployments/self-hosted-kube-controller-manager',
    'deployments/self-hosted-kube-scheduler',
    'poddisruptionbudgets/self-hosted-kube-controller-manager',
    'poddisruptionbudgets/self-hosted-kube-scheduler',
  ])
}

describe('pivot executor (fake API, node scripts run for real on node directories)', function () {
  this.timeout(120_000)
  let fake: FakeControlPlane
  let originals: Map<string, Map<string, string>>

  for (const [version, handoff] of [
    ['v1.29.4', 'port-sharing'],
    ['v1.14.10', 'blind'],
  ] as const) {
    describe(`kubeadm ${version} (${handoff} hand-off)`, () => {
      beforeEach(async () => {
        fake = new FakeControlPlane(['cp-1', 'cp-2', 'cp-3'], version === 'v1.14.10' ? 'master' : 'control-plane')
        originals = fake.install(join(fixtures, version), '10.0.0.10')
      })

      it('pivots every component node by node, keeps byte-identical backups, and revert restores them', async () => {
        const log: string[] = []
        const result = await runner(fake, {}, {}, log).pivot()
        assert.equal(result.outcome, 'completed', log.join('\n'))
        assert.equal(result.exitCode, ExitCode.ok)
        assertSelfHosted(fake, originals)
        const handoffs = fake.calls.filter((c) => c.startsWith('task pivot-handoff'))
        assert.deepEqual(
          handoffs,
          ['cp-1', 'cp-2', 'cp-3', 'cp-2', 'cp-3', 'cp-1', 'cp-2', 'cp-3', 'cp-1'].map((n) => `task pivot-handoff ${n}`),
          'apiserver by name, kcm/scheduler with the leader (cp-1) last',
        )
        assert.ok(log.some((l) => l.includes('node-side watchdog')))
        const prepared = fake.calls.filter((c) => c.startsWith('task pivot-backup')).length
        assert.equal(prepared, 9)

        const reverted = await runner(fake).revert()
        assert.equal(reverted.exitCode, ExitCode.ok)
        assertStatic(fake, originals)
        for (const node of fake.nodes) assert.deepEqual(fake.retiredBackups(node), fake.backupDirs(node), 'backups kept, retired')
      })

      it('revert after `upgrade` keeps the version that runs: the newer image in each manifest, every other byte as backed up', async () => {
        assert.equal((await runner(fake).pivot()).outcome, 'completed')
        const [registry, newer] = version === 'v1.14.10' ? ['k8s.gcr.io', 'v1.15.12'] : ['registry.k8s.io', 'v1.30.2']
        // What `kubectl selfhost upgrade --version` leaves: each workload's template runs the newer image.
        for (const name of [
          'daemonsets/self-hosted-kube-apiserver',
          'deployments/self-hosted-kube-controller-manager',
          'deployments/self-hosted-kube-scheduler',
        ]) {
          const container = (fake.workloads.get(name)!.object as V1Deployment).spec!.template.spec!.containers[0]
          container.image = container.image!.replace(`:${version}`, `:${newer}`)
        }

        const planned = await runner(fake, {}, {dryRun: true}).revert()
        const restores = planned.components.flatMap((c) => c.restores.map((r) => [c.component, r.node, r.imageFrom, r.imageTo]))
        assert.match(
          renderRevertPlan(planned),
          new RegExp(
            `\\[cp-2\\] put back /etc/kubernetes/manifests/kube-apiserver\\.yaml from selfhost/backup/\\S+/ with only its image changed: ${registry}/kube-apiserver:${newer} kept \\(the version that runs now\\), not the backup's ${registry}/kube-apiserver:${version}`,
          ),
        )
        if (version !== 'v1.14.10')
          assert.match(
            renderRevertPlan(planned),
            /\[cp-1, cp-2, cp-3\] the manifest as restored, without --permit-port-sharing: the static kube-apiserver restarts once, one node at a time/,
          )
        assert.equal(restores.length, 9)
        for (const [component, , from, to] of restores)
          assert.deepEqual([from, to], [`${registry}/${component}:${version}`, `${registry}/${component}:${newer}`])

        const reverted = await runner(fake).revert()
        assert.equal(reverted.exitCode, ExitCode.ok)
        for (const component of ['kube-scheduler', 'kube-controller-manager', 'kube-apiserver']) {
          assert.ok(
            reverted.summary.includes(
              `${component}: static manifest restored (image kept at ${newer}, the backup had ${version}) on cp-1, cp-2, cp-3; ${component === 'kube-apiserver' ? 'DaemonSet' : 'Deployment'} self-hosted-${component} deleted`,
            ),
            reverted.summary.join('\n'),
          )
        }

        for (const node of fake.nodes) {
          const files = fake.manifestFiles(node)
          for (const [name, bytes] of originals.get(node)!) {
            const component = name.replace('.yaml', '')
            const expected = PIVOTED.includes(name)
              ? bytes.replace(`image: ${registry}/${component}:${version}`, `image: ${registry}/${component}:${newer}`)
              : bytes
            if (PIVOTED.includes(name)) assert.notEqual(expected, bytes)
            assert.equal(files.get(name), expected, `${node}: ${name}`)
          }

          assert.deepEqual([...files.keys()].sort(), [...originals.get(node)!.keys()].sort())
          for (const name of PIVOTED)
            assert.equal(
              fake.backupFile(node, fake.backupDirs(node)[0], name),
              originals.get(node)!.get(name),
              `${node}: the backup of ${name} stays as it was`,
            )
        }

        assert.deepEqual([...fake.workloads.keys()], [])
        assert.deepEqual(
          await runner(fake)
            .revert()
            .then((r) => r.summary),
          ['nothing to revert: the control plane already runs from static manifests'],
        )
      })

      it('--dry-run --from-mirror-pods plans from the API alone: no node pod at all', async () => {
        const result = await runner(fake, {}, {dryRun: true, fromMirrorPods: true}).pivot()
        assert.equal(result.plan.objects.length, 5)
        assert.deepEqual(fake.calls, [])
        await assert.rejects(runner(fake, {}, {fromMirrorPods: true}).pivot(), /--from-mirror-pods only plans/)
      })

      it('--dry-run reads the nodes and changes nothing', async () => {
        const result = await runner(fake, {}, {dryRun: true}).pivot()
        assert.equal(result.outcome, 'planned')
        assert.equal(result.plan.objects.length, 5)
        assert.deepEqual(fake.calls, ['task pivot-read cp-1', 'task pivot-read cp-2', 'task pivot-read cp-3'], 'dry-run runs no watchdog check either')
        assertStatic(fake, originals)
      })
    })
  }

  describe('failures', () => {
    beforeEach(async () => {
      fake = new FakeControlPlane(['cp-1', 'cp-2'])
      originals = fake.install(join(fixtures, 'v1.29.4'), '10.0.0.10')
    })

    it('the node-side watchdog puts the apiserver manifest back when the new apiserver never serves (no confirmation); pivot then reverts (exit 3)', async () => {
      fake.newApiserverBroken = true
      const log: string[] = []
      const result = await runner(fake, {}, {}, log).pivot()
      assert.equal(result.outcome, 'rolled-back')
      assert.equal(result.exitCode, ExitCode.rolledBack)
      assertStatic(fake, originals)
      assert.ok(log.some((l) => l.includes('hand-off failed')))
      // Only the first node was tried: the watchdog restored it, nothing else was moved.
      assert.deepEqual(
        fake.calls.filter((c) => c.startsWith('task pivot-handoff')),
        ['task pivot-handoff cp-1'],
      )
    })

    it('never takes the static apiserver away while its self-hosted pod is Ready but no second process listens on the port (probes answered by the static one)', async () => {
      fake.silentComponents.add('kube-apiserver')
      const log: string[] = []
      const result = await runner(fake, {}, {}, log).pivot()
      assert.equal(result.outcome, 'rolled-back', log.join('\n'))
      assertStatic(fake, originals)
      assert.ok(
        log.some((l) => /cp-1: the watchdog's last word: waiting for a second process to listen on port 6443 beside the static kube-apiserver/.test(l)),
        log.join('\n'),
      )
      assert.deepEqual(
        fake.calls.filter((c) => c.startsWith('task pivot-handoff')),
        ['task pivot-handoff cp-1'],
      )
    })

    it('refuses before changing anything when the node-task image lacks a tool the scripts use', async () => {
      fake.missingTools = ['ln']
      await assert.rejects(
        runner(fake).pivot(),
        (e: Error) => e instanceof CliError && /pivot-read task on cp-1 failed .*the node-task image has no ln/.test(e.message),
      )
      assert.deepEqual(
        fake.calls.filter((c) => !/task pivot-read/.test(c)),
        [],
      )
      assertStatic(fake, originals)
    })

    it('refuses before changing anything without the permissions it needs', async () => {
      fake.denied.add('patch daemonsets')
      await assert.rejects(runner(fake).pivot(), (e: Error) => e instanceof CliError && /not allowed to patch daemonsets\.apps in kube-system/.test(e.message))
      assert.deepEqual(
        fake.calls.filter((c) => !c.startsWith('task pivot-read')),
        [],
      )
    })

    it('refuses before changing anything when it could create node pods but not read their logs (pods/log)', async () => {
      fake.denied.add('get pods/log')
      await assert.rejects(runner(fake).pivot(), (e: Error) => e instanceof CliError && /^not allowed to get pods\/log in kube-system:/.test(e.message))
      assert.deepEqual(
        fake.calls.filter((c) => !c.startsWith('task pivot-read')),
        [],
      )
    })

    it('asks for the node-task rights in --namespace, the rest in kube-system, and names the namespace of what is missing', async () => {
      const asked: string[] = []
      const api: PivotClusterApi = {
        ...fake.api,
        canI: async (verb, resource, namespace, group, subresource) => {
          asked.push(`${verb} ${resource}${subresource ? `/${subresource}` : ''} ${namespace ?? '-'}`)
          return !(namespace === 'node-tasks' && verb === 'create')
        },
      }
      await assert.rejects(
        runner(fake, {api}, {namespace: 'node-tasks'}).pivot(),
        (e: Error) => e instanceof CliError && /^not allowed to create pods in node-tasks: /.test(e.message),
      )
      for (const line of [
        'create pods node-tasks',
        'delete pods node-tasks',
        'get pods/log node-tasks',
        'get pods/proxy kube-system',
        'patch daemonsets kube-system',
      ])
        assert.ok(asked.includes(line), `${line} in ${asked.join(', ')}`)
      assert.deepEqual(
        fake.calls.filter((c) => !c.startsWith('task pivot-read')),
        [],
      )
    })

    it('waits for a control-plane pod that is getting Ready (a static pod just put back), then pivots', async () => {
      fake.mirrorUnreadyFor.set('kube-apiserver-cp-1', 3)
      const log: string[] = []
      const result = await runner(fake, {}, {}, log).pivot()
      assert.equal(result.outcome, 'completed')
      assert.ok(log.includes('waiting for control-plane pod(s) kube-apiserver-cp-1 to become Ready'), log.join('\n'))
      assertSelfHosted(fake, originals)
    })

    it('refuses before changing anything when a control-plane pod stays unready', async () => {
      fake.mirrorUnreadyFor.set('kube-scheduler-cp-2', Number.POSITIVE_INFINITY)
      await assert.rejects(
        runner(fake).pivot(),
        (e: Error) => e instanceof CliError && /^control-plane pod\(s\) kube-scheduler-cp-2 not Ready: fix them first$/.test(e.message),
      )
      assert.deepEqual(
        fake.calls.filter((c) => !/task pivot-(read|check)/.test(c)),
        [],
      )
      assertStatic(fake, originals)
    })

    it('refuses when the API is unhealthy and when a re-run finds the job done it only verifies', async () => {
      fake.apiHealthy = false
      await assert.rejects(runner(fake).pivot(), /API server is not healthy/)
      fake.apiHealthy = true
      await runner(fake).pivot()
      const before = fake.calls.length
      const again = await runner(fake).pivot()
      assert.equal(again.outcome, 'completed')
      assert.deepEqual(
        fake.calls.slice(before).filter((c) => c.startsWith('task') && !c.startsWith('task pivot-read')),
        [],
        'no node changes on a re-run',
      )
    })

    it('refuses to resume over a manifest edited by hand since the backup', async () => {
      await assert.rejects(runner(fake, interrupting(fake, 1, 'after')).pivot(), Interrupted)
      const {appendFileSync} = await import('node:fs')
      appendFileSync(join(fake.roots.get('cp-1')!, 'etc/kubernetes/manifests/kube-apiserver.yaml'), '# edited by hand\n')
      await assert.rejects(runner(fake).pivot(), /kube-apiserver\.yaml on cp-1 changed since pivot backed it up/)
    })

    // The CLI dies (kill -9) as it would confirm the first hand-off: nothing reaches the watchdog's pod, which keeps waiting.
    const dying = (task: NodeTask, opts?: {signal?: AbortSignal}) => {
      if (task.purpose === 'pivot-confirm') return Promise.reject(new Interrupted('the CLI died before confirming'))
      if (task.purpose !== 'pivot-handoff') return fake.runTask(task, opts)
      void fake.runTask(task)
      return new Promise<never>((_, reject) => opts?.signal?.addEventListener('abort', () => reject(new Interrupted('the CLI is gone')), {once: true}))
    }

    it('10: a re-run finds the hand-off watchdog of a CLI that died, stops it (the manifest comes back) before reading the nodes, and finishes', async () => {
      await assert.rejects(runner(fake, {runTask: dying}, {handoffDeadlineSeconds: 120}).pivot(), Interrupted)
      try {
        assert.deepEqual(
          [...fake.running.values()].map((r) => `${r.task.purpose} ${r.task.node}`),
          ['pivot-handoff cp-1'],
          'the watchdog outlived its CLI',
        )
        assert.ok(!fake.manifestFiles('cp-1').has('kube-apiserver.yaml'), 'it holds the static manifest')

        const log: string[] = []
        const resumed = await runner(fake, {}, {}, log).pivot()
        assert.ok(
          log.some((l) => /^stopping the hand-off watchdog fake-pivot-handoff-cp-1-\d+ of an earlier run on cp-1/.test(l)),
          log.join('\n'),
        )
        assert.ok(
          !resumed.alreadyDone.some((l) => l.includes('manifest held')),
          `the stopped watchdog put the manifest back before the nodes were read: ${resumed.alreadyDone.join('; ')}`,
        )
        assert.equal(resumed.outcome, 'completed', log.join('\n'))
        assert.deepEqual([...fake.running.keys()], [], 'no watchdog left running')
      } finally {
        for (const {kill} of fake.running.values()) kill()
      }

      assertSelfHosted(fake, originals)
    })

    it('10: a re-run finds, through the node, a watchdog an earlier run started with another --namespace, stops it there before planning, and finishes', async () => {
      await assert.rejects(runner(fake, {runTask: dying}, {handoffDeadlineSeconds: 120, namespace: 'other-tasks'}).pivot(), Interrupted)
      try {
        assert.deepEqual(
          [...fake.running.values()].map((r) => `${r.task.purpose} ${r.task.namespace} ${r.task.node}`),
          ['pivot-handoff other-tasks cp-1'],
        )
        assert.ok(!fake.manifestFiles('cp-1').has('kube-apiserver.yaml'), 'it holds the static manifest')

        const log: string[] = []
        const cleaned: string[] = []
        const cleanupTasks = async (namespace: string) => {
          cleaned.push(namespace)
          return namespace === 'other-tasks' ? ['selfhost-pivot-backup-cp-2-left'] : []
        }

        const resumed = await runner(fake, {cleanupTasks}, {}, log).pivot()
        assert.ok(
          log.some((l) => /^stopping the hand-off watchdog fake-pivot-handoff-cp-1-\d+ in namespace other-tasks of an earlier run on cp-1/.test(l)),
          log.join('\n'),
        )
        assert.ok(
          !resumed.alreadyDone.some((l) => l.includes('manifest held')),
          `the stopped watchdog put the manifest back before the plan was made: ${resumed.alreadyDone.join('; ')}`,
        )
        assert.deepEqual(cleaned, ['kube-system', 'other-tasks'], "the earlier run's namespace is cleaned of finished node-task pods too")
        assert.ok(
          log.includes('removed 1 finished node-task pod(s) left by earlier runs in namespace other-tasks: selfhost-pivot-backup-cp-2-left'),
          log.join('\n'),
        )
        assert.equal(resumed.outcome, 'completed', log.join('\n'))
        assert.deepEqual([...fake.running.keys()], [], 'no watchdog left running')
      } finally {
        for (const {kill} of fake.running.values()) kill()
      }

      assertSelfHosted(fake, originals)
    })

    it('10: revert too stops a watchdog an earlier pivot started with another --namespace before it reads the nodes', async () => {
      await assert.rejects(runner(fake, {runTask: dying}, {handoffDeadlineSeconds: 120, namespace: 'other-tasks'}).pivot(), Interrupted)
      try {
        const log: string[] = []
        const reverted = await runner(fake, {}, {}, log).revert()
        assert.equal(reverted.exitCode, ExitCode.ok, log.join('\n'))
        assert.ok(
          log.some((l) => /^stopping the hand-off watchdog fake-pivot-handoff-cp-1-\d+ in namespace other-tasks/.test(l)),
          log.join('\n'),
        )
        assert.deepEqual([...fake.running.keys()], [], 'no watchdog left running')
      } finally {
        for (const {kill} of fake.running.values()) kill()
      }

      assertStatic(fake, originals)
    })

    it("10: without rights in the namespace of an earlier run's watchdog, a re-run stops before changing anything, in one line that says what to do", async () => {
      await assert.rejects(runner(fake, {runTask: dying}, {handoffDeadlineSeconds: 120, namespace: 'other-tasks'}).pivot(), Interrupted)
      try {
        fake.podsForbiddenIn.add('other-tasks')
        const before = fake.calls.length
        await assert.rejects(
          runner(fake).pivot(),
          (e: Error) =>
            e instanceof CliError &&
            !e.message.includes('\n') &&
            /^an earlier run's hand-off watchdog on cp-1, pod fake-pivot-handoff-cp-1-\d+ in namespace other-tasks, may still move a static manifest there, and this run may not stop it \(forbidden \(403\): .*\): re-run with --namespace other-tasks, or delete that pod \(it puts the manifest back first\), then re-run$/.test(
              e.message,
            ),
        )
        assert.deepEqual(
          fake.calls.slice(before).filter((c) => !c.startsWith('task pivot-read')),
          [],
        )
        assert.equal(fake.running.size, 1, 'the watchdog runs on; nothing was changed behind its back')

        // With the rights it needs (the earlier run's --namespace), the re-run finishes.
        fake.podsForbiddenIn.clear()
        const log: string[] = []
        assert.equal((await runner(fake, {}, {namespace: 'other-tasks'}, log).pivot()).outcome, 'completed', log.join('\n'))
      } finally {
        for (const {kill} of fake.running.values()) kill()
      }

      assertSelfHosted(fake, originals)
    })

    it('revert refuses, changing nothing, when a node lacks the backup of a moved manifest', async () => {
      await runner(fake).pivot()
      const {rmSync} = await import('node:fs')
      rmSync(join(fake.roots.get('cp-2')!, 'etc/kubernetes/selfhost/backup'), {recursive: true})
      const before = fake.calls.length
      await assert.rejects(runner(fake).revert(), /no backup of kube-scheduler on cp-2 .* nothing changed/)
      assert.deepEqual(
        fake.calls.slice(before).filter((c) => !c.startsWith('task pivot-read')),
        [],
      )
    })
  })

  describe('a re-run after `scale`', () => {
    beforeEach(async () => {
      fake = new FakeControlPlane(['cp-1', 'cp-2', 'cp-3'])
      originals = fake.install(join(fixtures, 'v1.29.4'), '10.0.0.10')
    })

    const deployment = (component: string) => fake.workloads.get(`deployments/self-hosted-${component}`)!.object as V1Deployment
    /** What `scale` does: a merge patch of spec.replicas, which the fake's pods follow. */
    const scaleTo = (component: string, replicas: number) => {
      deployment(component).spec!.replicas = replicas
    }

    it('keeps the scaled replica counts (below and above one per node), verifies them, and says so in the plan', async () => {
      await runner(fake).pivot()
      assert.equal(deployment('kube-scheduler').spec!.replicas, 3, 'one per control-plane node at first')
      scaleTo('kube-scheduler', 1)
      scaleTo('kube-controller-manager', 5)
      const before = fake.calls.length
      const log: string[] = []
      const again = await runner(fake, {}, {}, log).pivot()
      assert.equal(again.outcome, 'completed')
      assert.ok(fake.calls.slice(before).includes('apply deployments/self-hosted-kube-scheduler'), 'the re-run did apply the Deployment again')
      assert.equal(deployment('kube-scheduler').spec!.replicas, 1)
      assert.equal(deployment('kube-controller-manager').spec!.replicas, 5)
      assert.deepEqual(
        again.plan.warnings.filter((w) => /keeps its/.test(w)),
        [
          'kube-controller-manager: Deployment kube-system/self-hosted-kube-controller-manager keeps its 5 replica(s), scaled since it was applied, rather than one per node (3)',
          'kube-scheduler: Deployment kube-system/self-hosted-kube-scheduler keeps its 1 replica(s), scaled since it was applied, rather than one per node (3)',
        ],
      )
      assert.ok(log.includes('[kube-scheduler] 1 replica(s) Ready (scaled below one per node), mirror pods gone, API healthy'), log.join('\n'))
      assertSelfHosted(fake, originals)
    })

    it('refuses, before applying it, a Deployment scaled below one per node while nodes still have to hand it over', async () => {
      // Steps on 3 nodes: apiserver 10 (3 backups, the DaemonSet, 3 x hand-off and confirmation),
      // controller-manager 11, then the scheduler's 3 backups and its Deployment: stop there.
      await assert.rejects(runner(fake, interrupting(fake, 25, 'after')).pivot(), Interrupted)
      scaleTo('kube-scheduler', 1)
      const before = fake.calls.length
      await assert.rejects(
        runner(fake).pivot(),
        (e: Error) =>
          e instanceof CliError &&
          e.message ===
            'Deployment kube-system/self-hosted-kube-scheduler was scaled to 1 replica(s), but cp-2, cp-3, cp-1 still hand kube-scheduler over and each needs a pod of its own: ' +
              'run `kubectl scale deployment -n kube-system self-hosted-kube-scheduler --replicas=3` and re-run pivot, or `kubectl selfhost revert`',
      )
      assert.deepEqual(
        fake.calls.slice(before).filter((c) => c.includes('kube-scheduler') || c.startsWith('task pivot-handoff')),
        [],
        'the scheduler untouched',
      )
      assert.equal(deployment('kube-scheduler').spec!.replicas, 1)
      scaleTo('kube-scheduler', 3)
      assert.equal((await runner(fake).pivot()).outcome, 'completed')
      assertSelfHosted(fake, originals)
    })
  })

  describe('blind hand-off failure (before 1.19)', () => {
    beforeEach(async () => {
      fake = new FakeControlPlane(['cp-1', 'cp-2'], 'master')
      originals = fake.install(join(fixtures, 'v1.14.10'), '10.0.0.10')
    })

    it('puts a controller-manager whose self-hosted pod never gets Ready back from the API side, then reverts (exit 3)', async () => {
      fake.brokenComponents.add('kube-controller-manager')
      const log: string[] = []
      const result = await runner(fake, {}, {blindHandoffMinSeconds: 1}, log).pivot()
      assert.equal(result.exitCode, ExitCode.rolledBack)
      assert.ok(
        log.includes('[kube-controller-manager] cp-2: the API serves, so the watchdog is stopped now (it puts the static manifest back if it took it away)'),
        log.join('\n'),
      )
      assertStatic(fake, originals)
    })
  })

  describe('resume after an interruption at every step', () => {
    this.timeout(900_000)

    /**
     * Runs `attempt(at)` for at = 1, 2, ... until one finds no step `at` to interrupt (it returns
     * false), and returns the number of steps. The attempts are independent (a fake of their own
     * each) and mostly wait on the node scripts' naps, so a batch of them runs at once.
     */
    async function everyStep(attempt: (at: number) => Promise<boolean>): Promise<number> {
      const batch = 6
      for (let first = 1; ; first += batch) {
        const ats = Array.from({length: batch}, (_, i) => first + i)
        const interrupted = await Promise.all(ats.map((at) => attempt(at)))
        const last = interrupted.indexOf(false)
        if (last < 0) continue
        assert.ok(
          interrupted.slice(last).every((i) => !i),
          `step ${ats[last]} could not be interrupted, but a later one could: ${interrupted}`,
        )
        return ats[last] - 1
      }
    }

    const interruptedBy = (error: unknown) => {
      if (!(error instanceof Interrupted)) throw error
      return true
    }

    for (const when of ['before', 'after'] as const) {
      it(`pivot interrupted ${when} any change finishes on re-run; revert interrupted likewise finishes too`, async () => {
        const total = await everyStep(async (at) => {
          const fake2 = new FakeControlPlane(['cp-1', 'cp-2'])
          const originals2 = fake2.install(join(fixtures, 'v1.29.4'), '10.0.0.10')
          const interrupted = await runner(fake2, interrupting(fake2, at, when))
            .pivot()
            .then(() => false, interruptedBy)
          if (!interrupted) return false
          const resumed = await runner(fake2).pivot()
          assert.equal(resumed.outcome, 'completed', `resume after step ${at}`)
          assertSelfHosted(fake2, originals2)
          return true
        })

        // 3 components x 2 nodes x (backup + hand-off + confirmation) node tasks, 5 applied objects,
        // and a checkpoint write on each node.
        assert.equal(total, 25)

        await everyStep(async (at) => {
          const fake2 = new FakeControlPlane(['cp-1', 'cp-2'])
          const originals2 = fake2.install(join(fixtures, 'v1.29.4'), '10.0.0.10')
          await runner(fake2).pivot()
          const interrupted = await runner(fake2, interrupting(fake2, at, when))
            .revert()
            .then(() => false, interruptedBy)
          if (interrupted)
            await runner(fake2)
              .revert()
              .catch((e) => {
                throw new Error(`revert resume after step ${at}: ${e.message}`)
              })
          assertStatic(fake2, originals2)
          return interrupted
        })
      })
    }

    it('revert after `upgrade`, interrupted after any change, finishes on re-run with the newer version on every node', async () => {
      const newer = (bytes: string, name: string) =>
        PIVOTED.includes(name) ? bytes.replace(`${name.replace('.yaml', '')}:v1.29.4`, `${name.replace('.yaml', '')}:v1.30.2`) : bytes
      await everyStep(async (at) => {
        const fake2 = new FakeControlPlane(['cp-1', 'cp-2'])
        const originals2 = fake2.install(join(fixtures, 'v1.29.4'), '10.0.0.10')
        await runner(fake2).pivot()
        for (const {object} of fake2.workloads.values()) {
          const container = (object as V1Deployment).spec?.template?.spec?.containers[0]
          if (container) container.image = container.image!.replace(':v1.29.4', ':v1.30.2')
        }

        const interrupted = await runner(fake2, interrupting(fake2, at, 'after'))
          .revert()
          .then(() => false, interruptedBy)
        if (interrupted)
          await runner(fake2)
            .revert()
            .catch((e) => {
              throw new Error(`revert resume after step ${at}: ${e.message}`)
            })
        for (const node of fake2.nodes) {
          assert.deepEqual(
            fake2.manifestFiles(node),
            new Map([...originals2.get(node)!].map(([name, bytes]) => [name, newer(bytes, name)])),
            `${node} after an interruption at step ${at}`,
          )
        }

        assert.deepEqual([...fake2.workloads.keys()], [])
        return interrupted
      })
    })

    it('revert in the middle of a pivot puts everything back', async () => {
      for (const at of [3, 9, 18]) {
        const fake2 = new FakeControlPlane(['cp-1', 'cp-2'])
        const originals2 = fake2.install(join(fixtures, 'v1.29.4'), '10.0.0.10')
        await assert.rejects(runner(fake2, interrupting(fake2, at, 'after')).pivot(), Interrupted)
        await runner(fake2).revert()
        assertStatic(fake2, originals2)
      }
    })
  })
})
