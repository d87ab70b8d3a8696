import assert from 'node:assert/strict'

import semver from 'semver'

import type {V1Container, V1DaemonSet, V1Deployment, V1PodSpec, V1Probe} from '../../../src/kube/types.js'
import {OUTSIDE_ROLLOUTS_ANNOTATION, PIVOTED_COMPONENTS} from '../../../src/controlplane/model.js'
import {CliError} from '../../../src/errors.js'
import {versionFromImage} from '../../../src/controlplane/container.js'
import {StaticManifest, manifestFromMirrorPod, parseStaticPod} from '../../../src/pivot/manifest.js'
import {ExistingWorkload, PivotPlan, planPivot} from '../../../src/pivot/plan.js'
import {tolerates} from '../../../src/scale/placement.js'
import {clusterOf, fixtureSets, liveNodes} from './fixture-sets.js'

/**
 * What pivot renders so the new instances can start beside the ones they replace and survive
 * what a control-plane node goes through (issue 11: A, 1, 2, 7, 8, 10), over every kubeadm
 * manifest set, with one control-plane node and with three.
 */

type Workload = V1DaemonSet | V1Deployment
const workload = (plan: PivotPlan, component: string): Workload => plan.components.find((c) => c.component === component)!.objects[0] as Workload
const podSpec = (w: Workload): V1PodSpec => w.spec!.template.spec!
const argv = (c: V1Container) => [...(c.command ?? []), ...(c.args ?? [])]
const sourcePod = (manifests: StaticManifest[], component: string) => parseStaticPod(manifests.find((m) => m.component === component)!.bytes, 'fixture')
const probes = (c: V1Container): Array<[string, V1Probe]> =>
  (['livenessProbe', 'readinessProbe', 'startupProbe'] as const).flatMap((k) => (c[k] ? [[k, c[k]!] as [string, V1Probe]] : []))

/** Adds a flag right after the binary in each node's manifest of one component. */
function withFlag(manifests: StaticManifest[], component: string, flag: (node: string, i: number) => string): StaticManifest[] {
  const nodes = [...new Set(manifests.map((m) => m.node))].sort()
  return manifests.map((m) =>
    m.component === component ? {...m, bytes: m.bytes.replace(`- ${component}\n`, `- ${component}\n    - ${flag(m.node, nodes.indexOf(m.node))}\n`)} : m,
  )
}

/** Every taint a control-plane node may carry while the control plane must stay on it. */
const NODE_TAINTS = [
  {key: 'node.kubernetes.io/not-ready', effect: 'NoExecute'},
  {key: 'node.kubernetes.io/unreachable', effect: 'NoExecute'},
  {key: 'node.kubernetes.io/not-ready', effect: 'NoSchedule'},
  {key: 'node.kubernetes.io/unreachable', effect: 'NoSchedule'},
  {key: 'node.kubernetes.io/disk-pressure', effect: 'NoSchedule'},
  {key: 'node.kubernetes.io/memory-pressure', effect: 'NoSchedule'},
  {key: 'node.kubernetes.io/pid-pressure', effect: 'NoSchedule'},
  {key: 'node.kubernetes.io/network-unavailable', effect: 'NoSchedule'},
  {key: 'node.cloudprovider.kubernetes.io/uninitialized', value: 'true', effect: 'NoSchedule'},
  {key: 'node.kubernetes.io/out-of-service', value: 'nodeshutdown', effect: 'NoExecute'},
  {key: 'example.com/anything', value: 'x', effect: 'NoExecute'},
]

for (const set of fixtureSets) {
  describe(`planPivot rendering, ${set.name}`, () => {
    const probe = clusterOf(set.dir, 1)
    const version = versionFromImage(sourcePod(probe.manifests, 'kube-apiserver').spec!.containers[0].image)!
    const portSharing = semver.gte(version, '1.19.0')
    const daemonSetSurge = portSharing && semver.gte(version, '1.22.0')
    const role = semver.gte(version, '1.20.0') ? 'control-plane' : 'master'

    for (const count of [1, 3]) {
      describe(`${count} control-plane node(s)`, () => {
        const {manifests, ips, nodes} = clusterOf(set.dir, count)
        const plan = planPivot({manifests, nodes: liveNodes(ips, role)})

        it('A: declares no container ports and probes the numbers the manifest named', () => {
          for (const component of PIVOTED_COMPONENTS) {
            const source = sourcePod(manifests, component).spec!.containers[0]
            const rendered = podSpec(workload(plan, component)).containers[0]
            assert.equal(rendered.ports, undefined, `${component}: a hostNetwork port is a hostPort claim`)
            const byName = new Map((source.ports ?? []).map((p) => [p.name, p.containerPort]))
            for (const [kind, p] of probes(source)) {
              const want = typeof p.httpGet!.port === 'string' ? byName.get(p.httpGet!.port) : p.httpGet!.port
              assert.equal(typeof want, 'number', `${component} ${kind}: the fixture's port resolves`)
              const got = rendered[kind as 'livenessProbe']!.httpGet!.port
              assert.equal(got, want, `${component} ${kind}`)
            }

            const change = plan.components.find((c) => c.component === component)!.changes.filter((c) => c.startsWith('ports '))
            assert.equal(change.length, source.ports?.length ? 1 : 0, `${component}: the dropped ports are named once`)
          }
        })

        it('1: tolerates every NoExecute taint without a time limit and the NoSchedule taints of a struggling node, not a cordon', () => {
          for (const component of PIVOTED_COMPONENTS) {
            const tolerations = podSpec(workload(plan, component)).tolerations!
            assert.deepEqual(tolerations[0], {key: `node-role.kubernetes.io/${role}`, operator: 'Exists', effect: 'NoSchedule'})
            assert.ok(
              tolerations.some((t) => !t.key && t.operator === 'Exists' && t.effect === 'NoExecute' && t.tolerationSeconds === undefined),
              `${component}: catch-all NoExecute`,
            )
            assert.ok(
              tolerations.every((t) => t.tolerationSeconds === undefined),
              `${component}: no time limit anywhere`,
            )
            for (const taint of NODE_TAINTS) assert.ok(tolerates(tolerations, taint), `${component} tolerates ${taint.key}:${taint.effect}`)
            assert.ok(
              !tolerates(tolerations, {key: 'node.kubernetes.io/unschedulable', effect: 'NoSchedule'}),
              `${component}: a cordoned node takes no replacement`,
            )
            assert.equal(new Set(tolerations.map((t) => JSON.stringify(t))).size, tolerations.length, `${component}: no duplicates`)
          }
        })

        it('2: rolls with surge where the version and the node count allow it, and says whether outside rollouts are safe', () => {
          const ds = workload(plan, 'kube-apiserver') as V1DaemonSet
          const apiserver = plan.components.find((c) => c.component === 'kube-apiserver')!
          if (daemonSetSurge) {
            assert.deepEqual(ds.spec!.updateStrategy, {type: 'RollingUpdate', rollingUpdate: {maxSurge: 1, maxUnavailable: 0}})
          } else {
            assert.deepEqual(
              ds.spec!.updateStrategy,
              {type: 'RollingUpdate', rollingUpdate: {maxUnavailable: 1}},
              'no maxSurge field for a server that may not know it',
            )
          }

          assert.equal(apiserver.rollout.outsideRollouts, daemonSetSurge || count > 1 ? 'safe' : 'unsafe')
          for (const component of ['kube-controller-manager', 'kube-scheduler']) {
            const d = workload(plan, component) as V1Deployment
            const surge = count === 1 && portSharing
            assert.deepEqual(
              d.spec!.strategy,
              {type: 'RollingUpdate', rollingUpdate: surge ? {maxSurge: 1, maxUnavailable: 0} : {maxSurge: 0, maxUnavailable: 1}},
              component,
            )
            const c = plan.components.find((x) => x.component === component)!
            assert.equal(c.rollout.outsideRollouts, count > 1 || portSharing ? 'safe' : 'unsafe', component)
          }

          for (const c of plan.components) {
            const annotation = (c.objects[0].metadata as {annotations: Record<string, string>}).annotations[OUTSIDE_ROLLOUTS_ANNOTATION]
            assert.equal(annotation, `${c.rollout.outsideRollouts}: ${c.rollout.why}`, `${c.component}: status can read the verdict from the object`)
            assert.equal(
              plan.warnings.some((w) => w.startsWith(`${c.component}: rollouts started outside kubectl selfhost`) && w.includes('unsafe')),
              c.rollout.outsideRollouts === 'unsafe',
              `${c.component}: an unsafe verdict is a plan warning`,
            )
            assert.ok(plan.notes.some((n) => n.startsWith(`${c.component}: rollouts started outside kubectl selfhost are ${c.rollout.outsideRollouts}`)))
            assert.ok(
              !(OUTSIDE_ROLLOUTS_ANNOTATION in (workload(plan, c.component).spec!.template.metadata!.annotations ?? {})),
              'not on the pods: changing it must not roll them',
            )
          }
        })

        it('gives each node its IP, and a hand-off step per node that says the node task puts the manifest back unless confirmed', () => {
          assert.deepEqual(Object.keys(plan.perNode), nodes)
          for (const [i, node] of nodes.entries()) {
            assert.deepEqual(plan.perNode[node], {ip: ips[i]})
            assert.ok(
              plan.steps.some(
                (s) =>
                  s.node === node &&
                  s.action === 'handoff' &&
                  s.component === 'kube-apiserver' &&
                  /puts it back unless the CLI confirms within \d+s/.test(s.description),
              ),
            )
          }
        })

        it('8 and 10: keeps the host resolver, mounts no service account token, names the dropped probe host once', () => {
          for (const component of PIVOTED_COMPONENTS) {
            const spec = podSpec(workload(plan, component))
            assert.equal(spec.dnsPolicy, 'Default', `${component}: a hostNetwork static pod resolves through the host`)
            assert.equal(spec.automountServiceAccountToken, false, component)
          }

          const all = plan.components.flatMap((c) => c.changes)
          const hostLines = all.filter((c) => c.includes('probe host'))
          const sourceHosts = probes(sourcePod(manifests, 'kube-apiserver').spec!.containers[0]).filter(([, p]) => p.httpGet?.host === ips[0])
          assert.equal(hostLines.length, sourceHosts.length > 0 ? 1 : 0, hostLines.join('\n'))
          if (sourceHosts.length > 0) assert.ok(hostLines[0].includes(sourceHosts.map(([k]) => k).join(', ')))
          for (const ip of ips) assert.ok(!all.some((c) => c.includes(ip)), `no change line names ${ip}`)
        })
      })
    }

    describe('node-specific values (three nodes)', () => {
      const {manifests, ips} = clusterOf(set.dir, 3)
      const cluster = liveNodes(ips, role)

      it('7: keeps an --etcd-servers list that names every node (external etcd on the control-plane hosts) as it is', () => {
        const list = ips.map((ip) => `https://${ip}:2379`).join(',')
        const external = withFlag(manifests, 'kube-apiserver', () => `--etcd-servers=${list}`)
        const plan = planPivot({manifests: external, nodes: cluster})
        const args = argv(podSpec(workload(plan, 'kube-apiserver')).containers[0])
        assert.ok(args.includes(`--etcd-servers=${list}`), 'the same list on every node is not a difference')
        assert.ok(!args.some((a) => a.startsWith('--etcd-servers=') && a.includes('$(HOST_IP)')))
      })

      it("7: turns an --etcd-servers that names only the node's own IP (its local etcd) into $(HOST_IP)", () => {
        const local = withFlag(manifests, 'kube-apiserver', (_, i) => `--etcd-servers=https://${ips[i]}:2379`)
        const plan = planPivot({manifests: local, nodes: cluster})
        assert.ok(argv(podSpec(workload(plan, 'kube-apiserver')).containers[0]).includes('--etcd-servers=https://$(HOST_IP):2379'))
        assert.ok(!JSON.stringify(plan.objects).includes(ips[1]))
      })

      it('7: a specific --bind-address becomes $(HOST_IP)', () => {
        const bound = withFlag(manifests, 'kube-apiserver', (_, i) => `--bind-address=${ips[i]}`)
        const plan = planPivot({manifests: bound, nodes: cluster})
        assert.ok(argv(podSpec(workload(plan, 'kube-apiserver')).containers[0]).includes('--bind-address=$(HOST_IP)'))
      })

      it('7: other flags that name a node IP are not guessed at: a real per-node difference is refused', () => {
        const differing = withFlag(manifests, 'kube-apiserver', (_, i) => `--external-hostname=${ips[i]}`)
        assert.throws(
          () => planPivot({manifests: differing, nodes: cluster}),
          (e: unknown) => e instanceof CliError && /differs between control-plane nodes cp-1 and cp-2/.test(e.message),
        )
      })

      it('1: tolerates any other NoSchedule taint the control-plane nodes carry', () => {
        const tainted = liveNodes(ips, role, [{key: 'dedicated', value: 'control-plane', effect: 'NoSchedule'}])
        const plan = planPivot({manifests, nodes: tainted})
        for (const component of PIVOTED_COMPONENTS)
          assert.ok(tolerates(podSpec(workload(plan, component)).tolerations!, {key: 'dedicated', value: 'control-plane', effect: 'NoSchedule'}), component)
      })

      it('2: a Deployment scaled to one replica surges (the new pod starts on another node); more replicas keep maxSurge 0', () => {
        const scaled = (component: 'kube-controller-manager' | 'kube-scheduler', replicas: number): ExistingWorkload => ({
          component,
          kind: 'Deployment',
          name: `self-hosted-${component}`,
          managedByUs: true,
          replicas,
        })
        const plan = planPivot({manifests, nodes: cluster, existingWorkloads: [scaled('kube-scheduler', 1), scaled('kube-controller-manager', 2)]})
        assert.deepEqual((workload(plan, 'kube-scheduler') as V1Deployment).spec!.strategy!.rollingUpdate, {maxSurge: 1, maxUnavailable: 0})
        assert.deepEqual((workload(plan, 'kube-controller-manager') as V1Deployment).spec!.strategy!.rollingUpdate, {maxSurge: 0, maxUnavailable: 1})
        assert.ok(plan.components.every((c) => c.rollout.outsideRollouts === 'safe'))
      })

      it("1 and 8: a plan from the mirror pods keeps the kubelet's NoExecute toleration once and gets the same DNS", () => {
        const mirrors = manifests.map((m) => {
          const pod = parseStaticPod(m.bytes, 'fixture')
          const spec = {...pod.spec!, nodeName: m.node, dnsPolicy: 'ClusterFirst', tolerations: [{operator: 'Exists', effect: 'NoExecute'}]}
          return {
            metadata: {
              name: `${pod.metadata!.name}-${m.node}`,
              namespace: 'kube-system',
              labels: pod.metadata!.labels,
              annotations: {'kubernetes.io/config.mirror': 'x'},
            },
            spec,
          }
        })
        const fromMirrors = mirrors.map((p) => manifestFromMirrorPod(p as never)!)
        assert.ok(
          fromMirrors.every((m) => m.bytes.includes('NoExecute')),
          "the static pod's catch-all is not stripped",
        )
        const viaMirrors = planPivot({manifests: fromMirrors, nodes: cluster})
        const viaFiles = planPivot({manifests, nodes: cluster})
        for (const component of PIVOTED_COMPONENTS) {
          assert.deepEqual(podSpec(workload(viaMirrors, component)).tolerations, podSpec(workload(viaFiles, component)).tolerations, component)
          assert.equal(podSpec(workload(viaMirrors, component)).dnsPolicy, 'Default', component)
        }
      })

      it('8: a manifest that chose cluster DNS keeps it', () => {
        const chosen = manifests.map((m) => ({
          ...m,
          bytes: m.bytes.replace('  hostNetwork: true\n', '  dnsPolicy: ClusterFirstWithHostNet\n  hostNetwork: true\n'),
        }))
        const plan = planPivot({manifests: chosen, nodes: cluster})
        for (const component of PIVOTED_COMPONENTS) assert.equal(podSpec(workload(plan, component)).dnsPolicy, 'ClusterFirstWithHostNet', component)
      })
    })
  })
}

describe('planPivot rendering: refusals and parsing', () => {
  it('refuses a probe whose named port no container port names', () => {
    const set = fixtureSets.find((s) => s.name === 'own v1.37.2')!
    const {manifests, ips} = clusterOf(set.dir, 1)
    const broken = manifests.map((m) =>
      m.component === 'kube-scheduler' ? {...m, bytes: m.bytes.replace('      name: probe-port\n', '      name: other-port\n')} : m,
    )
    assert.throws(
      () => planPivot({manifests: broken, nodes: liveNodes(ips, 'control-plane')}),
      /kube-scheduler container kube-scheduler: livenessProbe uses port "probe-port", which no port of the container names/,
    )
  })
})
