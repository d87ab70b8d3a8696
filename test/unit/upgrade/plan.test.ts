import {strict as assert} from 'node:assert'
import {existsSync, readFileSync, readdirSync} from 'node:fs'
import {join} from 'node:path'

import {parse as parseYaml} from 'yaml'

import type {V1DaemonSet, V1Deployment} from '../../../src/kube/types.js'
import {splitImage} from '../../../src/controlplane/container.js'
import {UpgradeOptions, planUpgrade, retagImage} from '../../../src/upgrade/plan.js'
import {UpgradeComponent} from '../../../src/upgrade/skew.js'
import {parseTargetVersion} from '../../../src/upgrade/versions.js'
import {ClusterShape, clusterInputs} from '../../fixtures/upgrade/cluster.js'

function plan(shape: ClusterShape, version: string, options: Partial<UpgradeOptions> = {}) {
  const {plane, workloads} = clusterInputs(shape)
  return planUpgrade({plane, workloads}, {target: parseTargetVersion(version), force: false, allowDowngrade: false, ...options})
}

const failed = (p: ReturnType<typeof plan>) => p.checks.filter((c) => !c.passed).map((c) => c.id)
const byName = (p: ReturnType<typeof plan>, c: UpgradeComponent) => p.components.find((x) => x.component === c)!

describe('upgrade plan', () => {
  it('the user example: a 1.14 cluster on k8s.gcr.io to v1.15.0', () => {
    const p = plan({version: 'v1.14.10', registry: 'k8s.gcr.io'}, 'v1.15.0')
    assert.equal(p.allowed, true, p.refusal)
    assert.equal(p.direction, 'upgrade')
    assert.deepEqual(p.order, ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kube-proxy'])
    assert.deepEqual(
      p.components.map((c) => [c.imageBefore, c.imageAfter]),
      ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kube-proxy'].map((c) => [`k8s.gcr.io/${c}:v1.14.10`, `k8s.gcr.io/${c}:v1.15.0`]),
    )
    const apiserver = byName(p, 'kube-apiserver')
    assert.equal(apiserver.strategy, 'temporary-instance')
    assert.match(apiserver.strategyNote, /--permit-port-sharing needs 1.19/)
    assert.match(apiserver.strategyNote, /DaemonSet maxSurge needs 1.22/)
    assert.deepEqual(apiserver.gates, [
      'rollout complete: observedGeneration current, every pod updated and Ready',
      '/readyz answers 200',
      '/version reports v1.15.0',
    ])
    assert.deepEqual(byName(p, 'kube-scheduler').gates.at(-1), 'leader lease renewed by a pod running v1.15.0')
    // kube-proxy 1.15 beside 1.14 kubelets is worth saying, not worth refusing.
    assert.deepEqual(failed(p), ['kube-proxy-matches-kubelets'])
  })

  it('--image-registry moves every image', () => {
    const p = plan({version: 'v1.24.17', registry: 'k8s.gcr.io'}, 'v1.25.0', {imageRegistry: 'registry.k8s.io/'})
    assert.deepEqual(new Set(p.components.map((c) => splitImage(c.imageAfter).prefix)), new Set(['registry.k8s.io']))
  })

  it('warns when k8s.gcr.io cannot have the target', () => {
    const p = plan({version: 'v1.26.3', registry: 'k8s.gcr.io', portSharing: true}, 'v1.27.0')
    assert.equal(p.allowed, true)
    assert.match(p.checks.find((c) => c.id === 'registry-has-images')!.message, /frozen in 2023.*--image-registry registry.k8s.io/)
  })

  it('one node, 1.36 with port sharing: surge', () => {
    const p = plan({version: 'v1.36.4', portSharing: true}, 'v1.37.2')
    const apiserver = byName(p, 'kube-apiserver')
    assert.equal(apiserver.strategy, 'surge')
    assert.deepEqual(apiserver.updateStrategy?.during, {type: 'RollingUpdate', rollingUpdate: {maxSurge: 1, maxUnavailable: 0}})
    assert.deepEqual(apiserver.updateStrategy?.before, {type: 'RollingUpdate', rollingUpdate: {maxUnavailable: 1, maxSurge: 0}})
    assert.match(byName(p, 'kube-controller-manager').strategyNote, /one instance/)
  })

  it('one node without the flag on the running apiserver: temporary instance, saying why', () => {
    const apiserver = byName(plan({version: 'v1.36.4'}, 'v1.37.2'), 'kube-apiserver')
    assert.equal(apiserver.strategy, 'temporary-instance')
    assert.match(apiserver.strategyNote, /started without --permit-port-sharing/)
  })

  it('one node on 1.20 with port sharing but no DaemonSet surge: temporary instance', () => {
    const apiserver = byName(plan({version: 'v1.20.15', portSharing: true}, 'v1.21.0'), 'kube-apiserver')
    assert.equal(apiserver.strategy, 'temporary-instance')
    assert.doesNotMatch(apiserver.strategyNote, /permit-port-sharing/)
    assert.match(apiserver.strategyNote, /maxSurge needs 1.22, the cluster runs v1.20.15/)
  })

  it('notes agree with the strategies pivot renders: surge where the workload surges, a stuck replacement where one instance cannot', () => {
    const withStrategies = (shape: ClusterShape, deploymentSurge: number, daemonSetSurge: number) => {
      const {plane, workloads} = clusterInputs(shape)
      for (const c of ['kube-controller-manager', 'kube-scheduler'] as const) {
        ;(workloads[c]!.object as V1Deployment).spec!.strategy = {
          type: 'RollingUpdate',
          rollingUpdate: {maxSurge: deploymentSurge, maxUnavailable: 1 - deploymentSurge},
        }
      }

      ;(workloads['kube-apiserver']!.object as V1DaemonSet).spec!.updateStrategy = {
        type: 'RollingUpdate',
        rollingUpdate: {maxSurge: daemonSetSurge, maxUnavailable: 1 - daemonSetSurge},
      }
      return planUpgrade({plane, workloads}, {target: parseTargetVersion('v1.37.2'), force: false, allowDowngrade: false})
    }

    const single = withStrategies({version: 'v1.36.4', portSharing: true}, 1, 1)
    assert.match(byName(single, 'kube-scheduler').strategyNote, /^one instance: the new kube-scheduler starts before the old one stops/)
    assert.equal(byName(single, 'kube-apiserver').strategy, 'surge')
    assert.deepEqual(
      byName(single, 'kube-apiserver').updateStrategy?.before,
      {type: 'RollingUpdate', rollingUpdate: {maxSurge: 1, maxUnavailable: 0}},
      "pivot's own surge is what is put back",
    )
    const stuck = withStrategies({version: 'v1.36.4', portSharing: true}, 0, 0)
    assert.match(byName(stuck, 'kube-scheduler').strategyNote, /^one instance and no surge: .*needs a scheduler to place it/)
    assert.match(byName(stuck, 'kube-controller-manager').strategyNote, /needs a controller-manager to create it/)
    const three = withStrategies({version: 'v1.36.4', portSharing: true, controlPlaneNodes: 3}, 0, 1)
    assert.match(
      byName(three, 'kube-apiserver').strategyNote,
      /^3 apiservers: one is replaced at a time while the others serve, its new pod starting beside the old one/,
    )
    assert.equal(byName(three, 'kube-scheduler').strategyNote, "the Deployment's own rolling update")
  })

  it('three control-plane nodes: a plain rolling update', () => {
    const p = plan({version: 'v1.30.2', controlPlaneNodes: 3}, 'v1.31.0')
    assert.equal(byName(p, 'kube-apiserver').strategy, 'rolling')
    assert.match(byName(p, 'kube-apiserver').strategyNote, /3 apiservers/)
  })

  it('refuses a static control plane with the hint to pivot', () => {
    const p = plan({version: 'v1.30.2', staticComponents: ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler']}, 'v1.31.0')
    assert.equal(p.allowed, false)
    assert.match(p.refusal!, /^refused by self-hosted: kube-apiserver runs as static pods: run "kubectl selfhost pivot" first/)
    assert.deepEqual(
      p.components.map((c) => c.component),
      ['kube-proxy'],
    )
  })

  it('refuses an unfinished pivot', () => {
    const p = plan({version: 'v1.30.2', mixedComponents: ['kube-scheduler']}, 'v1.31.0')
    assert.match(p.refusal!, /kube-scheduler runs both static and self-hosted instances: a pivot is unfinished/)
  })

  it('an unhealthy component stops everything before any change', () => {
    const p = plan({version: 'v1.30.2', notReady: ['kube-controller-manager']}, 'v1.31.0')
    assert.equal(p.allowed, false)
    assert.match(p.refusal!, /^refused by healthy-before: kube-controller-manager is unhealthy before any change \(.*not ready.*\): fix it first$/)
  })

  it('--components limits the run, and the skew policy still judges the rest', () => {
    const ok = plan({version: 'v1.30.2', versions: {'kube-apiserver': 'v1.31.0'}}, 'v1.31.0', {components: ['kube-scheduler']})
    assert.equal(ok.allowed, true, ok.refusal)
    assert.deepEqual(ok.order, ['kube-scheduler'])
    const ahead = plan({version: 'v1.30.2'}, 'v1.31.0', {components: ['kube-scheduler']})
    assert.match(ahead.refusal!, /controllers-not-newer-than-apiserver: kube-scheduler would run v1.31.0, newer than kube-apiserver v1.30.2/)
  })

  it('a downgrade runs in reverse order once both flags are given', () => {
    const refused = plan({version: 'v1.31.1', kubeletVersion: 'v1.30.0'}, 'v1.30.5')
    assert.match(refused.refusal!, /no-downgrade.*--allow-downgrade overrides this/)
    const p = plan({version: 'v1.31.1', kubeletVersion: 'v1.30.0'}, 'v1.30.5', {allowDowngrade: true, force: true})
    assert.equal(p.allowed, true, p.refusal)
    assert.equal(p.direction, 'downgrade')
    assert.deepEqual(p.order, ['kube-proxy', 'kube-scheduler', 'kube-controller-manager', 'kube-apiserver'])
  })

  it('a re-run at the target skips everything', () => {
    const p = plan({version: 'v1.31.0'}, 'v1.31.0')
    assert.equal(p.allowed, true)
    assert.equal(p.direction, 'none')
    assert.deepEqual(
      p.components.map((c) => c.action),
      ['skip', 'skip', 'skip', 'skip'],
    )
  })

  it('a run interrupted after the patch resumes: instances still old, template already new', () => {
    const {plane, workloads} = clusterInputs({version: 'v1.30.2', versions: {'kube-apiserver': 'v1.31.0'}})
    workloads['kube-apiserver']!.object.spec!.template.spec!.containers[0].image = 'registry.k8s.io/kube-apiserver:v1.31.0'
    plane.components.find((c) => c.name === 'kube-apiserver')!.instances[0].version = 'v1.30.2'
    const p = planUpgrade({plane, workloads}, {target: parseTargetVersion('v1.31.0'), force: false, allowDowngrade: false})
    assert.equal(byName(p, 'kube-apiserver').action, 'upgrade')
  })

  it('no kube-proxy: nothing to do there unless asked for it', () => {
    const p = plan({version: 'v1.30.2', noKubeProxy: true}, 'v1.31.0')
    assert.equal(p.allowed, true)
    assert.ok(p.notes.some((n) => /kube-proxy: no pods/.test(n)))
    const explicit = plan({version: 'v1.30.2', noKubeProxy: true}, 'v1.31.0', {components: ['kube-proxy']})
    assert.match(explicit.refusal!, /kube-proxy has no pods in the cluster/)
  })

  it('refuses images whose tag is not a version', () => {
    const p = plan({version: 'v1.30.2', imageOverride: {'kube-scheduler': 'example.com/sched:latest'}}, 'v1.31.0')
    assert.match(p.refusal!, /^refused by versions-known: kube-scheduler: the tag of image example.com\/sched:latest is not a version/)
  })

  it('drops a digest and says so', () => {
    const p = plan({version: 'v1.30.2', imageOverride: {'kube-proxy': 'registry.k8s.io/kube-proxy:v1.30.2@sha256:abc'}}, 'v1.31.0')
    assert.equal(byName(p, 'kube-proxy').imageAfter, 'registry.k8s.io/kube-proxy:v1.31.0')
    assert.ok(p.notes.some((n) => /pinned by digest/.test(n)))
  })

  describe('images', () => {
    const cases: Array<[string, string, string | undefined, string]> = [
      ['k8s.gcr.io/kube-apiserver:v1.14.10', 'v1.15.0', undefined, 'k8s.gcr.io/kube-apiserver:v1.15.0'],
      ['registry.k8s.io/kube-proxy:v1.36.4', 'v1.37.2', undefined, 'registry.k8s.io/kube-proxy:v1.37.2'],
      ['myregistry.local:5000/k8s/kube-scheduler:v1.16.2', 'v1.17.0', undefined, 'myregistry.local:5000/k8s/kube-scheduler:v1.17.0'],
      [
        'registry.aliyuncs.com/google_containers/kube-apiserver:v1.20.0',
        'v1.21.0',
        undefined,
        'registry.aliyuncs.com/google_containers/kube-apiserver:v1.21.0',
      ],
      ['kube-apiserver:v1.20.0', 'v1.21.0', undefined, 'kube-apiserver:v1.21.0'],
      ['k8s.gcr.io/kube-apiserver:v1.24.0', 'v1.25.0', 'registry.k8s.io', 'registry.k8s.io/kube-apiserver:v1.25.0'],
      ['k8s.gcr.io/kube-apiserver:v1.15.0', 'v1.16.0-rc.1', undefined, 'k8s.gcr.io/kube-apiserver:v1.16.0-rc.1'],
      ['registry.k8s.io/kube-apiserver:v1.30.0@sha256:0123', 'v1.30.1', undefined, 'registry.k8s.io/kube-apiserver:v1.30.1'],
    ]
    for (const [before, version, registry, after] of cases) {
      it(`${before} -> ${after}`, () => assert.equal(retagImage(before, parseTargetVersion(version), registry), after))
    }

    // Real kubeadm manifests of several releases: the registry (even a mirror) must survive.
    const dir = '../shared/fixtures/kubeadm'
    if (existsSync(dir)) {
      for (const cluster of readdirSync(dir)) {
        it(`keeps the registry of real manifests: ${cluster}`, () => {
          for (const file of ['kube-apiserver.yaml', 'kube-controller-manager.yaml', 'kube-scheduler.yaml']) {
            const pod = parseYaml(readFileSync(join(dir, cluster, file), 'utf8'))
            const image: string = pod.spec.containers[0].image
            const after = retagImage(image, parseTargetVersion('v1.38.0'))
            assert.equal(splitImage(after).prefix, splitImage(image).prefix, image)
            assert.equal(splitImage(after).name, splitImage(image).name)
            assert.equal(splitImage(after).tag, 'v1.38.0')
          }
        })
      }
    }
  })
})
