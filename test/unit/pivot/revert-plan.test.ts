import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'
import {dirname, join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'

import type {V1Pod} from '../../../src/kube/types.js'
import {parseStaticPod} from '../../../src/pivot/manifest.js'
import type {NodeFiles} from '../../../src/pivot/node-scripts.js'
import type {ExistingWorkload} from '../../../src/pivot/plan.js'
import {planRevert, restoredBytes} from '../../../src/pivot/revert-plan.js'

const fixtures = resolve(dirname(fileURLToPath(import.meta.url)), '../../fixtures/kubeadm')
const manifest = (version: string, component: string) => readFileSync(join(fixtures, version, `${component}.yaml`), 'utf8')
const COMPONENTS = ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler'] as const
const ours = (component: (typeof COMPONENTS)[number], kind: 'DaemonSet' | 'Deployment', image?: string): ExistingWorkload => ({
  component,
  kind,
  name: `self-hosted-${component}`,
  managedByUs: true,
  ...(image ? {image} : {}),
})
const workloads = [ours('kube-apiserver', 'DaemonSet'), ours('kube-controller-manager', 'Deployment'), ours('kube-scheduler', 'Deployment')]
/** The workloads after `kubectl selfhost upgrade`: each runs `registry/component:version`. */
const upgraded = (registry: string, version: string) => [
  ours('kube-apiserver', 'DaemonSet', `${registry}/kube-apiserver:${version}`),
  ours('kube-controller-manager', 'Deployment', `${registry}/kube-controller-manager:${version}`),
  ours('kube-scheduler', 'Deployment', `${registry}/kube-scheduler:${version}`),
]
/** The lines that differ between two texts of the same line count, as [before, after]. */
function changedLines(before: string, after: string): Array<[string, string]> {
  const a = before.split('\n')
  const b = after.split('\n')
  assert.equal(a.length, b.length, 'same number of lines')
  return a.flatMap((line, i) => (line === b[i] ? [] : [[line, b[i]] as [string, string]]))
}

/** A pod of a self-hosted workload, as the API lists it. */
const workloadPod = (component: string, image: string, node: string): V1Pod => ({
  metadata: {name: `self-hosted-${component}-${node}`, namespace: 'kube-system', labels: {'k8s-app': `self-hosted-${component}`, component}},
  spec: {nodeName: node, containers: [{name: component, image}]},
})

/** cp-1 with nothing live and only a kube-scheduler backup: these bytes. */
const schedulerBackupOnly = (backup: string): NodeFiles => ({
  node: 'cp-1',
  manifests: {},
  held: {},
  watchdogs: {},
  backups: [{stamp: 's', reverted: false, files: {'kube-scheduler': backup}}],
})

function node(name: string, version: string, opts: {live?: string[]; backedUp?: string[]; reverted?: boolean} = {}): NodeFiles {
  const files: NodeFiles = {node: name, manifests: {}, held: {}, watchdogs: {}, backups: []}
  for (const c of opts.live ?? []) files.manifests[c as (typeof COMPONENTS)[number]] = manifest(version, c)
  if (opts.backedUp)
    files.backups.push({
      stamp: '20260101T000000Z',
      reverted: Boolean(opts.reverted),
      files: Object.fromEntries(opts.backedUp.map((c) => [c, manifest(version, c)])),
    })
  return files
}

describe('planRevert (pure: what revert does, from what the nodes and the cluster show)', () => {
  it('a finished pivot: every component restored on every node, port sharing first from 1.19, scheduler first and apiserver last', () => {
    const plan = planRevert({
      files: [node('cp-1', 'v1.29.4', {backedUp: [...COMPONENTS]}), node('cp-2', 'v1.29.4', {backedUp: [...COMPONENTS]})],
      existing: workloads,
    })
    assert.equal(plan.alreadyStatic, false)
    assert.deepEqual(
      plan.components.map((c) => c.component),
      ['kube-scheduler', 'kube-controller-manager', 'kube-apiserver'],
    )
    for (const c of plan.components) {
      assert.deepEqual(
        c.restores.map((r) => r.node),
        ['cp-1', 'cp-2'],
      )
      assert.equal(c.portSharing, true)
      assert.equal(c.workloads.length, 1)
    }
  })

  it('before 1.19 no port-sharing step', () => {
    const plan = planRevert({files: [node('cp-1', 'v1.14.10', {backedUp: [...COMPONENTS]})], existing: workloads})
    assert.ok(plan.components.every((c) => !c.portSharing))
  })

  it('a half-done pivot: only what differs is restored, and the workloads still go', () => {
    const plan = planRevert({
      files: [node('cp-1', 'v1.29.4', {live: ['kube-scheduler', 'kube-controller-manager'], backedUp: [...COMPONENTS]})],
      existing: [workloads[0]],
    })
    assert.deepEqual(
      plan.components.map((c) => [c.component, c.restores.length, c.workloads.length]),
      [['kube-apiserver', 1, 1]],
    )
  })

  it('a re-run after a finished revert has nothing to do; no control plane at all is refused', () => {
    assert.deepEqual(planRevert({files: [node('cp-1', 'v1.29.4', {live: [...COMPONENTS], backedUp: [...COMPONENTS], reverted: true})], existing: []}), {
      components: [],
      alreadyStatic: true,
    })
    assert.throws(() => planRevert({files: [node('cp-1', 'v1.29.4')], existing: []}), /nothing to revert/)
  })

  it('refuses, changing nothing, a component left with neither a backup nor a static manifest', () => {
    assert.throws(
      () => planRevert({files: [node('cp-1', 'v1.29.4', {backedUp: ['kube-apiserver', 'kube-controller-manager']})], existing: workloads}),
      /no backup of kube-scheduler on cp-1 .*nothing changed/,
    )
  })

  describe('after `upgrade`: the version that runs now stays', () => {
    for (const [version, registry, newer] of [
      ['v1.29.4', 'registry.k8s.io', 'v1.30.2'],
      ['v1.14.10', 'k8s.gcr.io', 'v1.15.0'],
    ] as const) {
      it(`${version} backups, workloads upgraded to ${registry} ${newer}: each restore writes the backup with only its image line changed`, () => {
        const files = [node('cp-1', version, {backedUp: [...COMPONENTS]}), node('cp-2', version, {backedUp: [...COMPONENTS]})]
        const plan = planRevert({files, existing: upgraded(registry, newer)})
        assert.deepEqual(
          plan.components.map((c) => c.component),
          ['kube-scheduler', 'kube-controller-manager', 'kube-apiserver'],
        )
        for (const c of plan.components) {
          assert.deepEqual(
            c.restores.map((r) => r.node),
            ['cp-1', 'cp-2'],
          )
          for (const r of c.restores) {
            assert.equal(r.original, manifest(version, c.component), 'the backup itself is untouched')
            assert.equal(r.imageFrom, `${registry}/${c.component}:${version}`)
            assert.equal(r.imageTo, `${registry}/${c.component}:${newer}`)
            assert.deepEqual(changedLines(r.original, r.content!), [[`    image: ${r.imageFrom}`, `    image: ${r.imageTo}`]])
            assert.equal(parseStaticPod(r.content!, 'content').spec!.containers[0].image, r.imageTo)
          }
        }

        // Port sharing is decided by the version written: 1.15 has none, 1.30 has it.
        assert.ok(plan.components.every((c) => c.portSharing === (version === 'v1.29.4')))
      })
    }

    it("workloads that run the backup's image: the backup goes back byte for byte", () => {
      const plan = planRevert({files: [node('cp-1', 'v1.29.4', {backedUp: [...COMPONENTS]})], existing: upgraded('registry.k8s.io', 'v1.29.4')})
      for (const c of plan.components) {
        for (const r of c.restores) {
          assert.equal(r.content, undefined)
          assert.equal(r.imageTo, undefined)
          assert.equal(restoredBytes(r), r.original)
        }
      }
    })

    it('the port-sharing step follows the version written: a 1.18 backup kept at 1.19 gets it', () => {
      const backup = manifest('v1.19.16', 'kube-scheduler').replaceAll('v1.19.16', 'v1.18.20')
      const files = schedulerBackupOnly(backup)
      const [plan] = planRevert({files: [files], existing: [ours('kube-scheduler', 'Deployment', 'k8s.gcr.io/kube-scheduler:v1.19.16')]}).components
      assert.equal(plan.portSharing, true)
      assert.equal(plan.restores[0].content, manifest('v1.19.16', 'kube-scheduler'))
    })

    it('refuses, changing nothing, while the workloads or their pods disagree on the image (a rollout in progress)', () => {
      const files = [node('cp-1', 'v1.29.4', {backedUp: [...COMPONENTS]}), node('cp-2', 'v1.29.4', {backedUp: [...COMPONENTS]})]
      const two = [
        ours('kube-scheduler', 'Deployment', 'registry.k8s.io/kube-scheduler:v1.30.2'),
        {...ours('kube-scheduler', 'DaemonSet', 'registry.k8s.io/kube-scheduler:v1.29.4'), name: 'other'},
      ]
      assert.throws(
        () => planRevert({files, existing: two}),
        (error: Error) => {
          assert.match(
            error.message,
            /^kube-scheduler: the self-hosted pods run different images \(registry\.k8s\.io\/kube-scheduler:v1\.30\.2, registry\.k8s\.io\/kube-scheduler:v1\.29\.4\).*let it finish \(kubectl -n kube-system rollout status deployment\/self-hosted-kube-scheduler daemonset\/other\) or run kubectl selfhost upgrade again.*nothing changed$/,
          )
          assert.doesNotMatch(error.message, /\n/)
          return true
        },
      )
      const pods = [
        workloadPod('kube-apiserver', 'registry.k8s.io/kube-apiserver:v1.30.2', 'cp-1'),
        workloadPod('kube-apiserver', 'registry.k8s.io/kube-apiserver:v1.29.4', 'cp-2'),
      ]
      assert.throws(
        () => planRevert({files, existing: upgraded('registry.k8s.io', 'v1.30.2'), workloadPods: pods}),
        /kube-apiserver: the self-hosted pods run different images .*rollout status daemonset\/self-hosted-kube-apiserver\).*nothing changed$/,
      )
      // Pods that agree with their workload change nothing.
      const agreeing = [workloadPod('kube-apiserver', 'registry.k8s.io/kube-apiserver:v1.30.2', 'cp-1')]
      assert.equal(planRevert({files, existing: upgraded('registry.k8s.io', 'v1.30.2'), workloadPods: agreeing}).components.length, 3)
    })

    it('a JSON backup and one with CRLF line ends: only the image value changes there too', () => {
      const json = JSON.stringify(parseStaticPod(manifest('v1.29.4', 'kube-scheduler'), 'fixture'), null, 2) + '\n'
      const crlf = manifest('v1.29.4', 'kube-scheduler').replaceAll('\n', '\r\n')
      for (const [backup, before, after] of [
        [json, '        "image": "registry.k8s.io/kube-scheduler:v1.29.4",', '        "image": "registry.k8s.io/kube-scheduler:v1.30.2",'],
        [crlf, '    image: registry.k8s.io/kube-scheduler:v1.29.4\r', '    image: registry.k8s.io/kube-scheduler:v1.30.2\r'],
      ]) {
        const files = schedulerBackupOnly(backup)
        const [plan] = planRevert({files: [files], existing: [ours('kube-scheduler', 'Deployment', 'registry.k8s.io/kube-scheduler:v1.30.2')]}).components
        assert.deepEqual(changedLines(backup, plan.restores[0].content!), [[before, after]])
      }
    })

    it('refuses, changing nothing, a backup whose image line cannot be changed alone', () => {
      const backup = manifest('v1.29.4', 'kube-scheduler').replace(
        '  containers:\n',
        '  initContainers:\n  - name: copy\n    image: registry.k8s.io/kube-scheduler:v1.29.4\n  containers:\n',
      )
      const files = schedulerBackupOnly(backup)
      assert.throws(
        () => planRevert({files: [files], existing: [ours('kube-scheduler', 'Deployment', 'registry.k8s.io/kube-scheduler:v1.30.2')]}),
        /cannot keep kube-scheduler at registry\.k8s\.io\/kube-scheduler:v1\.30\.2 on cp-1: in its backup 2 lines name .*; nothing changed$/,
      )
    })

    it('a re-run with the workloads still there: a node whose manifest already is the computed content needs no restore', () => {
      const files = [node('cp-1', 'v1.29.4', {backedUp: [...COMPONENTS]}), node('cp-2', 'v1.29.4', {backedUp: [...COMPONENTS]})]
      const first = planRevert({files, existing: upgraded('registry.k8s.io', 'v1.30.2')})
      const scheduler = first.components.find((c) => c.component === 'kube-scheduler')!
      files[0].manifests['kube-scheduler'] = scheduler.restores[0].content
      const again = planRevert({files, existing: upgraded('registry.k8s.io', 'v1.30.2')}).components.find((c) => c.component === 'kube-scheduler')!
      assert.deepEqual(
        again.restores.map((r) => r.node),
        ['cp-2'],
      )
      assert.equal(again.workloads.length, 1, 'the workload still goes')
    })

    it('a re-run after the workloads were deleted: a live manifest upgraded in its image only counts as restored, never the older backup back', () => {
      const newer = (c: string) => manifest('v1.29.4', c).replace(`${c}:v1.29.4`, `${c}:v1.30.2`)
      const files = [node('cp-1', 'v1.29.4', {backedUp: [...COMPONENTS]}), node('cp-2', 'v1.29.4', {backedUp: [...COMPONENTS]})]
      for (const c of COMPONENTS) files[0].manifests[c] = newer(c)
      // cp-2 was cut off after the port-sharing step: the newer image with the flag the final write removes.
      for (const c of COMPONENTS) files[1].manifests[c] = newer(c).replace(`    - ${c}\n`, `    - ${c}\n    - --permit-port-sharing=true\n`)
      const plan = planRevert({files, existing: []})
      assert.equal(plan.alreadyStatic, false)
      for (const c of plan.components) {
        assert.deepEqual(
          c.restores.map((r) => r.node),
          ['cp-2'],
          `${c.component}: cp-1 is done`,
        )
        assert.equal(c.restores[0].content, newer(c.component), `${c.component}: cp-2 keeps 1.30.2`)
        assert.equal(c.workloads.length, 0)
      }

      for (const c of COMPONENTS) files[1].manifests[c] = newer(c)
      assert.deepEqual(planRevert({files, existing: []}).components, [])
    })
  })
})
