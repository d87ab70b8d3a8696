import assert from 'node:assert/strict'
import {dirname, join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'

import {buildControlPlane} from '../../../src/controlplane/discover.js'
import {CliError} from '../../../src/errors.js'
import {parseComponentName, planLogTargets} from '../../../src/logs/plan.js'
import {NOW, kubeadmCluster, lease} from '../../helpers/cluster-objects.js'

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
const NEW = join(repoRoot, 'test', 'fixtures', 'kubeadm', 'v1.32.4')

const midPivot = () =>
  buildControlPlane(
    kubeadmCluster({
      version: 'v1.32.4',
      manifestsDir: NEW,
      controlPlaneNodes: ['cp-1', 'cp-2'],
      selfHosted: ['kube-scheduler'],
      alsoStatic: ['kube-scheduler'],
      leaderNode: 'cp-2',
    }),
    NOW,
  )

describe('logs planning', () => {
  describe('component names', () => {
    it('accepts full and short names', () => {
      const cases: Array<[string, string]> = [
        ['kube-apiserver', 'kube-apiserver'],
        ['apiserver', 'kube-apiserver'],
        ['Scheduler', 'kube-scheduler'],
        ['kcm', 'kube-controller-manager'],
        ['controller-manager', 'kube-controller-manager'],
        ['etcd', 'etcd'],
        ['proxy', 'kube-proxy'],
        ['dns', 'coredns'],
      ]
      for (const [typed, name] of cases) assert.equal(parseComponentName(typed), name, typed)
    })

    it('refuses an unknown name with the list of known ones, in one line', () => {
      assert.throws(
        () => parseComponentName('kubelet'),
        (e: unknown) =>
          e instanceof CliError &&
          e.message === 'unknown component "kubelet"; known components: kube-apiserver, kube-controller-manager, kube-scheduler, etcd, kube-proxy, coredns',
      )
    })
  })

  describe('targets', () => {
    it('every instance, static and self-hosted alike, prefixed [node/pod] with the component container', () => {
      const targets = planLogTargets(midPivot(), {component: 'kube-scheduler'})
      assert.equal(targets.length, 4)
      assert.deepEqual(
        targets.map((t) => [t.prefix, t.container]),
        [
          ['[cp-1/kube-scheduler-cp-1]', 'kube-scheduler'],
          [`[cp-1/${targets[1].pod}]`, 'kube-scheduler'],
          ['[cp-2/kube-scheduler-cp-2]', 'kube-scheduler'],
          [`[cp-2/${targets[3].pod}]`, 'kube-scheduler'],
        ],
      )
      assert.match(targets[1].pod, /^self-hosted-kube-scheduler-/)
    })

    it("--leader keeps only the leader's instance", () => {
      const targets = planLogTargets(midPivot(), {component: 'kube-controller-manager', leader: true})
      assert.deepEqual(
        targets.map((t) => t.pod),
        ['kube-controller-manager-cp-2'],
      )
    })

    it('-c replaces the container', () => {
      const targets = planLogTargets(midPivot(), {component: 'etcd', container: 'backup'})
      assert.deepEqual([...new Set(targets.map((t) => t.container))], ['backup'])
    })

    it('refuses --leader for a component that elects none, or without a leader record, or an unmatched one', () => {
      const plane = midPivot()
      assert.throws(() => planLogTargets(plane, {component: 'kube-apiserver', leader: true}), /--leader: kube-apiserver does not elect a leader/)
      const noLeases = kubeadmCluster({version: 'v1.32.4', manifestsDir: NEW, controlPlaneNodes: ['cp-1']})
      noLeases.leases = []
      assert.throws(() => planLogTargets(buildControlPlane(noLeases, NOW), {component: 'kube-scheduler', leader: true}), /has no leader record/)
      const stranger = kubeadmCluster({version: 'v1.32.4', manifestsDir: NEW, controlPlaneNodes: ['cp-1']})
      stranger.leases = [lease('kube-scheduler', {holderNode: 'elsewhere'})]
      assert.throws(
        () => planLogTargets(buildControlPlane(stranger, NOW), {component: 'kube-scheduler', leader: true}),
        /the leader elsewhere is none of the kube-scheduler pods/,
      )
    })

    it('says there is nothing to read for a component with no pods', () => {
      const inputs = kubeadmCluster({version: 'v1.32.4', manifestsDir: NEW, controlPlaneNodes: ['cp-1']})
      inputs.pods = inputs.pods.filter((p) => p.metadata?.labels?.component !== 'etcd')
      assert.throws(() => planLogTargets(buildControlPlane(inputs, NOW), {component: 'etcd'}), /etcd has no pods in this cluster/)
    })
  })
})
