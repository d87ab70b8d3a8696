import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'
import {join} from 'node:path'

import semver from 'semver'

import type {V1Container, V1DaemonSet, V1Deployment} from '../../../src/kube/types.js'
import {PIVOTED_COMPONENTS, type PivotedComponent, SOURCE_MANIFEST_HASH_ANNOTATION} from '../../../src/controlplane/model.js'
import {CliError} from '../../../src/errors.js'
import {readManifestDir} from '../../../src/pivot/from-dir.js'
import {versionFromImage} from '../../../src/controlplane/container.js'
import {manifestFromMirrorPod, parseStaticPod, sha256, withPortSharing} from '../../../src/pivot/manifest.js'
import {PivotPlan, SOURCE_MANIFESTS_ANNOTATION, planPivot} from '../../../src/pivot/plan.js'
import {NODES, fixtureSets, liveNodes, ownFixtures, threeNodes, versionDirs} from './fixture-sets.js'

const container = (obj: V1DaemonSet | V1Deployment): V1Container => obj.spec!.template.spec!.containers[0]
const argv = (c: V1Container) => [...(c.command ?? []), ...(c.args ?? [])]

function workload(plan: PivotPlan, component: string): V1DaemonSet | V1Deployment {
  return plan.components.find((c) => c.component === component)!.objects[0] as V1DaemonSet | V1Deployment
}

describe('planPivot over kubeadm manifest sets', () => {
  it('has own fixtures of old and new kubeadm versions', () => {
    const versions = versionDirs(ownFixtures)
    assert.ok(
      versions.some((v) => semver.lt(semver.coerce(v)!, '1.19.0')),
      'an old (pre-port-sharing) set',
    )
    assert.ok(
      versions.some((v) => semver.gte(semver.coerce(v)!, '1.25.0')),
      'a new (registry.k8s.io) set',
    )
  })

  for (const set of fixtureSets) {
    describe(set.name, () => {
      const {manifests, ips} = threeNodes(set.dir)
      const version = versionFromImage(parseStaticPod(manifests[0].bytes, 'x').spec!.containers[0].image)!
      const portSharing = semver.gte(version, '1.19.0')
      const role = semver.gte(version, '1.20.0') ? 'control-plane' : 'master'
      const plan = planPivot({manifests, nodes: liveNodes(ips, role)})
      const json = JSON.stringify(plan.objects)

      it('makes the apiserver a DaemonSet and the others Deployments with a PodDisruptionBudget', () => {
        assert.deepEqual(
          plan.objects.map((o) => `${o.kind}/${o.metadata!.name}`),
          [
            'DaemonSet/self-hosted-kube-apiserver',
            'Deployment/self-hosted-kube-controller-manager',
            'PodDisruptionBudget/self-hosted-kube-controller-manager',
            'Deployment/self-hosted-kube-scheduler',
            'PodDisruptionBudget/self-hosted-kube-scheduler',
          ],
        )
        const pdb = plan.objects.find((o) => o.kind === 'PodDisruptionBudget')!
        assert.equal(pdb.apiVersion, semver.gte(version, '1.21.0') ? 'policy/v1' : 'policy/v1beta1')
      })

      it('copies no node IP into any object', () => {
        for (const ip of ips) assert.ok(!json.includes(ip), `${ip} leaked into the objects`)
      })

      it('advertises $(HOST_IP) from status.hostIP and drops node-IP probe hosts', () => {
        const api = container(workload(plan, 'kube-apiserver'))
        assert.ok(argv(api).includes('--advertise-address=$(HOST_IP)'))
        assert.deepEqual(api.env?.[0], {name: 'HOST_IP', valueFrom: {fieldRef: {apiVersion: 'v1', fieldPath: 'status.hostIP'}}})
        for (const probe of [api.livenessProbe, api.readinessProbe, api.startupProbe]) if (probe) assert.equal(probe.httpGet?.host, undefined)
        const annotations = workload(plan, 'kube-apiserver').spec!.template.metadata!.annotations ?? {}
        assert.ok(!('kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint' in annotations))
      })

      it('keeps loopback probe hosts of the controller-manager and scheduler', () => {
        for (const component of ['kube-controller-manager', 'kube-scheduler']) {
          const source = parseStaticPod(manifests.find((m) => m.component === component)!.bytes, 'x').spec!.containers[0]
          assert.equal(container(workload(plan, component)).livenessProbe?.httpGet?.host, source.livenessProbe?.httpGet?.host)
        }
      })

      it('runs on the control-plane nodes the cluster labels, on hostNetwork, with the manifest priority class', () => {
        for (const component of PIVOTED_COMPONENTS) {
          const w = workload(plan, component)
          const spec = w.spec!.template.spec!
          const source = parseStaticPod(manifests.find((m) => m.component === component)!.bytes, 'x')
          assert.equal(spec.hostNetwork, true)
          assert.equal(spec.dnsPolicy, 'Default', 'the host resolver a hostNetwork static pod has (issue 11, item 8)')
          assert.equal(spec.priorityClassName, source.spec!.priorityClassName ?? 'system-node-critical')
          assert.equal(spec.priority, undefined)
          assert.deepEqual(spec.nodeSelector, {[`node-role.kubernetes.io/${role}`]: ''})
          assert.deepEqual(spec.tolerations![0], {key: `node-role.kubernetes.io/${role}`, operator: 'Exists', effect: 'NoSchedule'})
          assert.equal(spec.tolerations!.filter((t) => t.key?.startsWith('node-role.kubernetes.io/')).length, 1, 'only the role taint the nodes carry')
          assert.equal(w.metadata!.labels!['app.kubernetes.io/managed-by'], 'kubectl-selfhost')
          assert.equal(w.spec!.template.metadata!.labels!['k8s-app'], `self-hosted-${component}`)
          assert.equal(w.spec!.template.metadata!.labels!.component, component)
          assert.deepEqual(w.spec!.selector.matchLabels, {'k8s-app': `self-hosted-${component}`})
        }
      })

      it("records the sha256 of every node's manifest bytes", () => {
        for (const component of PIVOTED_COMPONENTS) {
          const annotations = workload(plan, component).metadata!.annotations!
          const bytes = (node: string) => manifests.find((m) => m.node === node && m.component === component)!.bytes
          assert.equal(annotations[SOURCE_MANIFEST_HASH_ANNOTATION], sha256(bytes('cp-1')))
          assert.equal(annotations[SOURCE_MANIFESTS_ANNOTATION], NODES.map((n) => `${n}=${sha256(bytes(n))}`).join(','))
        }
      })

      it('keeps leader election on and adds --permit-port-sharing only where the version has it', () => {
        for (const component of PIVOTED_COMPONENTS) {
          const args = argv(container(workload(plan, component)))
          if (component !== 'kube-apiserver') assert.ok(args.includes('--leader-elect=true'), `${component} leader-elect`)
          assert.equal(args.includes('--permit-port-sharing=true'), portSharing, `${component} port sharing`)
          assert.equal(args.filter((a) => a.startsWith('--leader-elect')).length <= 1, true)
        }
      })

      it('spreads the Deployments one per control-plane node', () => {
        for (const component of ['kube-controller-manager', 'kube-scheduler']) {
          const d = workload(plan, component) as V1Deployment
          assert.equal(d.spec!.replicas, 3)
          const spec = d.spec!.template.spec!
          if (portSharing) assert.equal(spec.topologySpreadConstraints?.[0]?.topologyKey, 'kubernetes.io/hostname')
          else assert.equal(spec.affinity?.podAntiAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.[0]?.topologyKey, 'kubernetes.io/hostname')
        }
      })

      it('rolls the Deployments out without surge, so each replacement lands on the node its predecessor freed', () => {
        for (const component of ['kube-controller-manager', 'kube-scheduler']) {
          const d = workload(plan, component) as V1Deployment
          assert.deepEqual(d.spec!.strategy, {type: 'RollingUpdate', rollingUpdate: {maxSurge: 0, maxUnavailable: 1}}, component)
          const spread = d.spec!.template.spec!.topologySpreadConstraints ?? []
          for (const constraint of spread) assert.equal(constraint.whenUnsatisfiable, 'DoNotSchedule', component)
        }
      })

      it('lists every step per node in order and says what it costs', () => {
        for (const c of plan.components) {
          const handoffs = plan.steps.filter((s) => s.component === c.component && s.action === 'handoff').map((s) => s.node)
          assert.deepEqual(handoffs, NODES)
          const sharing = plan.steps.filter((s) => s.component === c.component && s.action === 'enable-port-sharing')
          assert.equal(sharing.length, c.handoff === 'port-sharing' ? 3 : 0)
          const actions = plan.steps.filter((s) => s.component === c.component).map((s) => s.action)
          assert.ok(actions.lastIndexOf('backup') < actions.indexOf('apply') && actions.indexOf('apply') < actions.indexOf('handoff'))
        }

        assert.match(plan.costs[0], /checkpoint/i)
        assert.ok(plan.notes.some((n) => /etcd stays static/.test(n)))
        if (!portSharing)
          assert.ok(plan.costs.some((c) => /blind hand-off/.test(c) && /node-side task puts the static manifest back unless the CLI confirms/.test(c)))
      })
    })
  }
})

describe('planPivot decisions and refusals', () => {
  const v129 = join(ownFixtures, 'v1.29.4')
  const v114 = join(ownFixtures, 'v1.14.10')

  const refusal = (fn: () => unknown): string => {
    try {
      fn()
    } catch (error) {
      assert.ok(error instanceof CliError)
      assert.ok(!error.message.includes('\n'), 'one line')
      return error.message
    }

    assert.fail('expected a refusal')
  }

  it('refuses a cluster with no static control plane', () => {
    assert.match(
      refusal(() => planPivot({manifests: []})),
      /no static control plane/,
    )
  })

  it('refuses a control plane that is already self-hosted, by us or by someone else', () => {
    const ours = {component: 'kube-apiserver' as const, kind: 'DaemonSet' as const, name: 'self-hosted-kube-apiserver', managedByUs: true}
    assert.match(
      refusal(() => planPivot({manifests: [], existingWorkloads: [ours]})),
      /already self-hosted/,
    )
    const {manifests} = threeNodes(v129)
    assert.match(
      refusal(() => planPivot({manifests, existingWorkloads: [{...ours, name: 'apiserver', managedByUs: false}]})),
      /already self-hosted/,
    )
  })

  it('--force-blind-handoff plans a 1.19+ cluster as one before 1.19: no port sharing in the steps or the objects, every hand-off blind', () => {
    const {manifests, ips} = threeNodes(v129)
    const plan = planPivot({manifests, nodes: liveNodes(ips, 'control-plane'), forceBlindHandoff: true})
    assert.deepEqual(
      plan.components.map((c) => c.handoff),
      ['blind', 'blind', 'blind'],
    )
    assert.deepEqual(
      plan.steps.filter((s) => s.action === 'enable-port-sharing'),
      [],
    )
    for (const c of plan.components) assert.ok(!argv(container(workload(plan, c.component))).some((a) => a.startsWith('--permit-port-sharing')), c.component)
    assert.ok(plan.costs.some((c) => /blind hand-off/.test(c)))
    assert.ok(plan.notes.some((n) => n.startsWith('--force-blind-handoff: planned as on clusters before 1.19')))
    const normal = planPivot({manifests, nodes: liveNodes(ips, 'control-plane')})
    assert.deepEqual(
      normal.components.map((c) => c.handoff),
      ['port-sharing', 'port-sharing', 'port-sharing'],
      'without the flag the same cluster shares ports',
    )
  })

  it("a re-run keeps a Deployment's live replica count (set by `scale`), not one per node", () => {
    const {manifests, ips} = threeNodes(v129)
    const scaled = (component: 'kube-controller-manager' | 'kube-scheduler', replicas: number) => ({
      component,
      kind: 'Deployment' as const,
      name: `self-hosted-${component}`,
      managedByUs: true,
      replicas,
    })
    const plan = planPivot({
      manifests,
      nodes: liveNodes(ips, 'control-plane'),
      existingWorkloads: [scaled('kube-scheduler', 1), scaled('kube-controller-manager', 3)],
    })
    assert.equal((workload(plan, 'kube-scheduler') as V1Deployment).spec!.replicas, 1)
    assert.equal((workload(plan, 'kube-controller-manager') as V1Deployment).spec!.replicas, 3)
    assert.deepEqual(
      plan.warnings.filter((w) => /keeps its/.test(w)),
      ['kube-scheduler: Deployment kube-system/self-hosted-kube-scheduler keeps its 1 replica(s), scaled since it was applied, rather than one per node (3)'],
    )
  })

  it('a re-run after an upgrade keeps the image the workloads run, never the older one of the backups', () => {
    const {manifests, ips} = threeNodes(v129)
    const upgraded = [
      {
        component: 'kube-apiserver' as const,
        kind: 'DaemonSet' as const,
        name: 'self-hosted-kube-apiserver',
        managedByUs: true,
        image: 'registry.k8s.io/kube-apiserver:v1.30.1',
      },
      {
        component: 'kube-scheduler' as const,
        kind: 'Deployment' as const,
        name: 'self-hosted-kube-scheduler',
        managedByUs: true,
        replicas: 3,
        image: 'registry.k8s.io/kube-scheduler:v1.30.1',
      },
    ]
    const plan = planPivot({manifests, nodes: liveNodes(ips, 'control-plane'), existingWorkloads: upgraded})
    const imageOf = (component: PivotedComponent) => workload(plan, component).spec!.template!.spec!.containers.find((c) => c.name === component)!.image
    assert.equal(imageOf('kube-apiserver'), 'registry.k8s.io/kube-apiserver:v1.30.1')
    assert.equal(imageOf('kube-scheduler'), 'registry.k8s.io/kube-scheduler:v1.30.1')
    assert.equal(imageOf('kube-controller-manager'), 'registry.k8s.io/kube-controller-manager:v1.29.4', "no live workload: the backup's image")
    const apiserver = plan.components.find((c) => c.component === 'kube-apiserver')!
    assert.ok(
      apiserver.changes.includes(
        'image kept at registry.k8s.io/kube-apiserver:v1.30.1, which the DaemonSet runs now (the backup has registry.k8s.io/kube-apiserver:v1.29.4, from before an upgrade)',
      ),
      apiserver.changes.join('\n'),
    )
  })

  it('refuses components that differ between nodes beyond node-specific values, naming where', () => {
    const {manifests} = threeNodes(v129)
    const changed = manifests.map((m) => (m.node === 'cp-2' && m.component === 'kube-scheduler' ? {...m, bytes: m.bytes.replace('v1.29.4', 'v1.29.5')} : m))
    assert.match(
      refusal(() => planPivot({manifests: changed})),
      /kube-scheduler differs between control-plane nodes cp-1 and cp-2 .*image/,
    )
  })

  it('refuses versions older than 1.14', () => {
    const {manifests} = threeNodes(v114)
    const old = manifests.map((m) => ({...m, bytes: m.bytes.replaceAll('v1.14.10', 'v1.13.12')}))
    assert.match(
      refusal(() => planPivot({manifests: old})),
      /v1\.13\.12; pivot supports Kubernetes 1\.14 and newer/,
    )
  })

  it('refuses a node missing a component and an advertise address that is not the node IP', () => {
    const {manifests, ips} = threeNodes(v129)
    const missing = manifests.filter((m) => !(m.node === 'cp-3' && m.component === 'kube-scheduler'))
    assert.match(
      refusal(() => planPivot({manifests: missing})),
      /kube-scheduler has no static manifest on cp-3/,
    )
    const nodes = liveNodes(ips, 'control-plane').map((n) => (n.name === 'cp-2' ? {...n, internalIP: '192.168.9.9'} : n))
    assert.match(
      refusal(() => planPivot({manifests, nodes})),
      /advertises .* but the node's IP is 192\.168\.9\.9/,
    )
  })

  it('uses the master role label and taint an old cluster really has', () => {
    const {manifests, ips} = threeNodes(v114)
    const spec = workload(planPivot({manifests, nodes: liveNodes(ips, 'master')}), 'kube-scheduler').spec!.template.spec!
    assert.deepEqual(spec.nodeSelector, {'node-role.kubernetes.io/master': ''})
    assert.deepEqual(spec.tolerations![0], {key: 'node-role.kubernetes.io/master', operator: 'Exists', effect: 'NoSchedule'})
    assert.ok(!spec.tolerations!.some((t) => t.key === 'node-role.kubernetes.io/control-plane'))
  })

  it('falls back to a blind hand-off before 1.19 and says so', () => {
    const {manifests} = threeNodes(v114)
    const plan = planPivot({manifests})
    assert.deepEqual(
      plan.components.map((c) => c.handoff),
      ['blind', 'blind', 'blind'],
    )
    assert.ok(plan.costs.some((c) => c.includes('blind hand-off')))
    // With no cluster to ask, 1.14 means the master label and both taints tolerated.
    assert.equal(plan.role, 'master')
  })

  it('adds --leader-elect=true where missing and turns an explicit false on', () => {
    const {manifests: withFlag} = threeNodes(v114)
    const manifests = withFlag.map((m) => ({...m, bytes: m.bytes.replace('    - --leader-elect=true\n', '')}))
    const kcm = planPivot({manifests}).components.find((c) => c.component === 'kube-controller-manager')!
    assert.ok(kcm.changes.some((c) => c.startsWith('--leader-elect=true added')))
    const off = withFlag.map((m) => ({...m, bytes: m.bytes.replace('--leader-elect=true', '--leader-elect=false')}))
    const sched = planPivot({manifests: off}).components.find((c) => c.component === 'kube-scheduler')!
    assert.ok(argv(container(sched.objects[0] as V1Deployment)).includes('--leader-elect=true'))
    assert.ok(sched.changes.some((c) => c.startsWith('--leader-elect=false changed to true')))
    // Given twice, the last occurrence is the one the component takes (pflag): that one is set.
    const twice = withFlag.map((m) => ({
      ...m,
      bytes: m.bytes.replace('    - --leader-elect=true\n', '    - --leader-elect=true\n    - --leader-elect=false\n'),
    }))
    const twiceSched = planPivot({manifests: twice}).components.find((c) => c.component === 'kube-scheduler')!
    const flags = argv(container(twiceSched.objects[0] as V1Deployment)).filter((a) => a.startsWith('--leader-elect'))
    assert.deepEqual(flags, ['--leader-elect=true', '--leader-elect=true'])
    assert.ok(twiceSched.changes.some((c) => c.startsWith('--leader-elect=false changed to true')))
  })

  it("hands a leader-elected component off on its leader's node last", () => {
    const {manifests} = threeNodes(v129)
    const plan = planPivot({manifests, leaders: {'kube-scheduler': 'cp-1'}})
    assert.deepEqual(plan.components.find((c) => c.component === 'kube-scheduler')!.nodeOrder, ['cp-2', 'cp-3', 'cp-1'])
    assert.deepEqual(plan.components.find((c) => c.component === 'kube-apiserver')!.nodeOrder, NODES)
  })

  it('treats a 1.19-1.22 scheduler that still serves its insecure port as a blind hand-off', () => {
    const {manifests} = threeNodes(join(ownFixtures, 'v1.19.16'))
    const open = manifests.map((m) => (m.component === 'kube-scheduler' ? {...m, bytes: m.bytes.replace('    - --port=0\n', '')} : m))
    const plan = planPivot({manifests: open})
    assert.equal(plan.components.find((c) => c.component === 'kube-scheduler')!.handoff, 'blind')
    assert.equal(plan.components.find((c) => c.component === 'kube-apiserver')!.handoff, 'port-sharing')
    assert.ok(plan.warnings.some((w) => w.includes('insecure port')))
  })
})

describe('manifest helpers', () => {
  it('adds --permit-port-sharing after the binary and leaves every other byte alone', () => {
    const bytes = readFileSync(join(ownFixtures, 'v1.29.4/kube-apiserver.yaml'), 'utf8')
    const shared = withPortSharing(bytes, 'kube-apiserver')
    assert.equal(shared.replace('    - --permit-port-sharing=true\n', ''), bytes)
    assert.ok(shared.includes('    - kube-apiserver\n    - --permit-port-sharing=true\n'))
    assert.equal(withPortSharing(shared, 'kube-apiserver'), shared)
  })

  it("reads one node's directory or one subdirectory per node, skipping etcd", () => {
    const flat = readManifestDir(join(ownFixtures, 'v1.29.4'), 'cp-9')
    assert.deepEqual(flat.map((m) => `${m.node}/${m.component}`).sort(), ['cp-9/kube-apiserver', 'cp-9/kube-controller-manager', 'cp-9/kube-scheduler'])
    const perNode = readManifestDir(ownFixtures)
    assert.deepEqual([...new Set(perNode.map((m) => m.node))].sort(), versionDirs(ownFixtures).sort())
  })
})

describe('planning from mirror pods', () => {
  it("plans the same workloads as the files, without the kubelet's and API server's per-pod additions", () => {
    const {manifests, ips} = threeNodes(join(ownFixtures, 'v1.29.4'))
    // What the API shows for each static pod: kubelet additions plus a few API server defaults.
    const mirrors = manifests.map((m) => {
      const pod = parseStaticPod(m.bytes, 'fixture')
      const spec = {
        ...pod.spec!,
        nodeName: m.node,
        schedulerName: 'default-scheduler',
        restartPolicy: 'Always',
        tolerations: [{operator: 'Exists', effect: 'NoExecute'}],
      }
      return {
        metadata: {
          name: `${pod.metadata!.name}-${m.node}`,
          namespace: 'kube-system',
          uid: `uid-${m.node}`,
          labels: pod.metadata!.labels,
          annotations: {
            ...pod.metadata!.annotations,
            'kubernetes.io/config.mirror': 'abc',
            'kubernetes.io/config.hash': 'abc',
            'kubernetes.io/config.source': 'file',
            'kubernetes.io/config.seen': 'now',
          },
          ownerReferences: [{apiVersion: 'v1', kind: 'Node', name: m.node, uid: 'n'}],
        },
        spec,
        status: {phase: 'Running'},
      }
    })
    const fromMirrors = mirrors.map((p) => manifestFromMirrorPod(p as never)!)
    assert.deepEqual(fromMirrors.map((m) => `${m.node}/${m.component}`).sort(), manifests.map((m) => `${m.node}/${m.component}`).sort())
    const nodes = liveNodes(ips, 'control-plane')
    const viaFiles = planPivot({manifests, nodes})
    const viaMirrors = planPivot({manifests: fromMirrors, nodes})
    for (const component of PIVOTED_COMPONENTS) {
      const a = workload(viaFiles, component).spec!.template
      const b = workload(viaMirrors, component).spec!.template
      assert.deepEqual(b.metadata, a.metadata)
      assert.deepEqual(b.spec!.containers, a.spec!.containers)
      assert.deepEqual(b.spec!.tolerations, a.spec!.tolerations, "the kubelet's catch-all NoExecute toleration is kept once, where the files get it too")
      assert.equal(b.spec!.nodeName, undefined)
    }

    assert.ok(!JSON.stringify(viaMirrors.objects).includes('10.0.0.'), 'no node IP')
  })
})
