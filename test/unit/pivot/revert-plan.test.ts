import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'
import {dirname, join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'

import type {NodeFiles} from '../../../src/pivot/node-scripts.js'
import type {ExistingWorkload} from '../../../src/pivot/plan.js'
import {planRevert} from '../../../src/pivot/revert-plan.js'

const fixtures = resolve(dirname(fileURLToPath(import.meta.url)), '../../fixtures/kubeadm')
const manifest = (version: string, component: string) => readFileSync(join(fixtures, version, `${component}.yaml`), 'utf8')
const COMPONENTS = ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler'] as const
const ours = (component: (typeof COMPONENTS)[number], kind: 'DaemonSet' | 'Deployment'): ExistingWorkload => ({component, kind, name: `self-hosted-${component}`, managedByUs: true})
const workloads = [ours('kube-apiserver', 'DaemonSet'), ours('kube-controller-manager', 'Deployment'), ours('kube-scheduler', 'Deployment')]

function node(name: string, version: string, opts: {live?: string[]; backedUp?: string[]; reverted?: boolean} = {}): NodeFiles {
  const files: NodeFiles = {node: name, manifests: {}, held: {}, backups: []}
  for (const c of opts.live ?? []) files.manifests[c as (typeof COMPONENTS)[number]] = manifest(version, c)
  if (opts.backedUp) files.backups.push({stamp: '20260101T000000Z', reverted: Boolean(opts.reverted), files: Object.fromEntries(opts.backedUp.map((c) => [c, manifest(version, c)]))})
  return files
}

describe('planRevert (pure: what revert does, from what the nodes and the cluster show)', () => {
  it('a finished pivot: every component restored on every node, port sharing first from 1.19, scheduler first and apiserver last', () => {
    const plan = planRevert({files: [node('cp-1', 'v1.29.4', {backedUp: [...COMPONENTS]}), node('cp-2', 'v1.29.4', {backedUp: [...COMPONENTS]})], existing: workloads})
    assert.equal(plan.alreadyStatic, false)
    assert.deepEqual(plan.components.map((c) => c.component), ['kube-scheduler', 'kube-controller-manager', 'kube-apiserver'])
    for (const c of plan.components) {
      assert.deepEqual(c.restores.map((r) => r.node), ['cp-1', 'cp-2'])
      assert.equal(c.portSharing, true)
      assert.equal(c.workloads.length, 1)
    }
  })

  it('before 1.19 no port-sharing step', () => {
    const plan = planRevert({files: [node('cp-1', 'v1.14.10', {backedUp: [...COMPONENTS]})], existing: workloads})
    assert.ok(plan.components.every((c) => !c.portSharing))
  })

  it('a half-done pivot: only what differs is restored, and the workloads still go', () => {
    const plan = planRevert({files: [node('cp-1', 'v1.29.4', {live: ['kube-scheduler', 'kube-controller-manager'], backedUp: [...COMPONENTS]})], existing: [workloads[0]]})
    assert.deepEqual(plan.components.map((c) => [c.component, c.restores.length, c.workloads.length]), [['kube-apiserver', 1, 1]])
  })

  it('a re-run after a finished revert has nothing to do; no control plane at all is refused', () => {
    assert.deepEqual(planRevert({files: [node('cp-1', 'v1.29.4', {live: [...COMPONENTS], backedUp: [...COMPONENTS], reverted: true})], existing: []}), {components: [], alreadyStatic: true})
    assert.throws(() => planRevert({files: [node('cp-1', 'v1.29.4')], existing: []}), /nothing to revert/)
  })

  it('refuses, changing nothing, a component left with neither a backup nor a static manifest', () => {
    assert.throws(() => planRevert({files: [node('cp-1', 'v1.29.4', {backedUp: ['kube-apiserver', 'kube-controller-manager']})], existing: workloads}), /no backup of kube-scheduler on cp-1 .*nothing changed/)
  })
})
