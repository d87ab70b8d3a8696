import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'
import {dirname, join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'

import {parse as parseYaml} from 'yaml'

import {DiscoveryApi, DiscoveryInputs, buildControlPlane, discoverControlPlane, parseHealthChecks} from '../../../src/controlplane/discover.js'
import type {V1Pod} from '../../../src/kube/types.js'
import {versionFromImage} from '../../../src/controlplane/container.js'
import type {ComponentName, ControlPlane} from '../../../src/controlplane/model.js'
import {
  NOW,
  coreDns,
  failing,
  healthy,
  kubeProxy,
  kubeadmCluster,
  lease,
  leaderEndpoints,
  loadManifests,
  node,
  selfHosted,
  sharedKubeadmFixtures,
} from '../../helpers/cluster-objects.js'

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
const fixtures = join(repoRoot, 'test', 'fixtures', 'kubeadm')
const OLD = join(fixtures, 'v1.14.10')
const NEW = join(fixtures, 'v1.32.4')

const component = (plane: ControlPlane, name: ComponentName) => plane.components.find((c) => c.name === name)!

describe('control-plane discovery', () => {
  describe('an old kubeadm cluster (1.14: master role, Endpoints leader records, k8s.gcr.io, /healthz)', () => {
    const inputs = kubeadmCluster({version: 'v1.14.10', manifestsDir: OLD, controlPlaneNodes: ['master-1'], workers: ['node-1']})
    const plane = buildControlPlane(inputs, NOW)

    it('finds every component static from its mirror pods, with versions from the image tags', () => {
      for (const name of ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'etcd'] as const) {
        const c = component(plane, name)
        assert.equal(c.mode, 'static', name)
        assert.deepEqual(
          c.instances.map((i) => [i.pod, i.node, i.source, i.ready]),
          [[`${name}-master-1`, 'master-1', 'static', true]],
        )
      }

      assert.deepEqual(component(plane, 'kube-apiserver').versions, ['v1.14.10'])
      assert.equal(component(plane, 'kube-apiserver').instances[0].image, 'k8s.gcr.io/kube-apiserver:v1.14.10')
      assert.deepEqual(component(plane, 'etcd').versions, ['3.3.10'])
    })

    it('sees kube-proxy and CoreDNS as workloads', () => {
      const proxy = component(plane, 'kube-proxy')
      assert.equal(proxy.mode, 'self-hosted')
      assert.deepEqual(
        proxy.instances.map((i) => i.node),
        ['master-1', 'node-1'],
      )
      assert.deepEqual(
        proxy.workloads.map((w) => [w.kind, w.name, w.desired, w.ready]),
        [['DaemonSet', 'kube-proxy', 2, 2]],
      )
      const dns = component(plane, 'coredns')
      assert.equal(dns.mode, 'self-hosted')
      assert.deepEqual(dns.versions, ['1.3.1'])
      assert.deepEqual(
        dns.workloads.map((w) => [w.kind, w.name]),
        [['Deployment', 'coredns']],
      )
    })

    it('reads leaders from the Endpoints annotation and matches them to the mirror pod', () => {
      for (const name of ['kube-controller-manager', 'kube-scheduler'] as const) {
        const leader = component(plane, name).leader!
        assert.equal(leader.source, 'Endpoints')
        assert.equal(leader.holder, 'master-1')
        assert.equal(leader.pod, `${name}-master-1`)
        assert.equal(leader.stale, false)
      }
    })

    it('labels nodes with the master role, takes health from /healthz and is healthy', () => {
      assert.deepEqual(
        plane.nodes.map((n) => [n.name, n.role, n.controlPlane]),
        [
          ['master-1', 'master', true],
          ['node-1', undefined, false],
        ],
      )
      assert.equal(plane.apiserver.readyz.endpoint, '/healthz')
      assert.equal(plane.healthy, true, JSON.stringify(plane.components.flatMap((c) => c.problems)))
    })
  })

  describe('a new HA kubeadm cluster (1.32: Leases, control-plane role, registry.k8s.io)', () => {
    const inputs = kubeadmCluster({
      version: 'v1.32.4',
      manifestsDir: NEW,
      controlPlaneNodes: ['cp-1', 'cp-2', 'cp-3'],
      workers: ['w-1', 'w-2'],
      leaderNode: 'cp-2',
    })
    const plane = buildControlPlane(inputs, NOW)

    it('finds three static instances per component and one kube-proxy per node', () => {
      for (const name of ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'etcd'] as const) {
        assert.equal(component(plane, name).mode, 'static')
        assert.deepEqual(
          component(plane, name).instances.map((i) => i.node),
          ['cp-1', 'cp-2', 'cp-3'],
        )
      }

      assert.equal(component(plane, 'kube-proxy').instances.length, 5)
      assert.deepEqual(component(plane, 'etcd').versions, ['3.5.16-0'])
    })

    it('reads leaders from Leases and matches the holder to the pod on its node', () => {
      const leader = component(plane, 'kube-scheduler').leader!
      assert.equal(leader.source, 'Lease')
      assert.equal(leader.pod, 'kube-scheduler-cp-2')
      assert.equal(leader.node, 'cp-2')
      assert.match(leader.holderIdentity, /^cp-2_/)
      assert.equal(leader.leaseDurationSeconds, 15)
    })

    it('labels nodes control-plane and is healthy', () => {
      assert.deepEqual(
        plane.nodes.filter((n) => n.controlPlane).map((n) => n.role),
        ['control-plane', 'control-plane', 'control-plane'],
      )
      assert.equal(plane.apiserver.readyz.endpoint, '/readyz')
      assert.equal(plane.healthy, true, JSON.stringify(plane.components.flatMap((c) => c.problems)))
    })
  })

  describe('health verdicts', () => {
    const base = () => kubeadmCluster({version: 'v1.32.4', manifestsDir: NEW, controlPlaneNodes: ['cp-1', 'cp-2']})

    it('flags a stale leader as a problem and the control plane unhealthy', () => {
      const inputs = base()
      inputs.leases = [lease('kube-scheduler', {holderNode: 'cp-1', renewedAgo: 40}), lease('kube-controller-manager', {holderNode: 'cp-2'})]
      const plane = buildControlPlane(inputs, NOW)
      const scheduler = component(plane, 'kube-scheduler')
      assert.equal(scheduler.leader?.stale, true)
      assert.equal(scheduler.healthy, false)
      assert.match(scheduler.problems.join('\n'), /leader cp-1 is stale: last renewed 40s ago \(lease 15s\)/)
      assert.equal(component(plane, 'kube-controller-manager').healthy, true)
      assert.equal(plane.healthy, false)
    })

    it('a Lease released by a leader shutting down is a hand-over in progress, not "leader election may be off"', () => {
      const inputs = base()
      const released = lease('kube-scheduler', {holderNode: 'cp-1'})
      released.spec!.holderIdentity = ''
      inputs.leases = [released, lease('kube-controller-manager', {holderNode: 'cp-1'})]
      const scheduler = component(buildControlPlane(inputs, NOW), 'kube-scheduler')
      assert.equal(scheduler.leader, undefined)
      assert.match(scheduler.warnings.join('\n'), /no leader at the moment: the last one released its Lease/)
      assert.doesNotMatch(scheduler.warnings.join('\n'), /may be off/)
      inputs.leases = [lease('kube-controller-manager', {holderNode: 'cp-1'})]
      assert.match(component(buildControlPlane(inputs, NOW), 'kube-scheduler').warnings.join('\n'), /leader election may be off/)
    })

    it('a lease renewed exactly leaseDurationSeconds ago is not yet stale', () => {
      const inputs = base()
      inputs.leases = [lease('kube-scheduler', {holderNode: 'cp-1', renewedAgo: 15})]
      assert.equal(component(buildControlPlane(inputs, NOW), 'kube-scheduler').leader?.stale, false)
    })

    it('names a crash-looping instance and its reason', () => {
      const inputs = kubeadmCluster({
        version: 'v1.32.4',
        manifestsDir: NEW,
        controlPlaneNodes: ['cp-1', 'cp-2'],
        podState: (c, n) => (c === 'kube-controller-manager' && n === 'cp-2' ? {ready: false, restarts: 7, waiting: 'CrashLoopBackOff'} : {}),
      })
      const plane = buildControlPlane(inputs, NOW)
      const kcm = component(plane, 'kube-controller-manager')
      assert.equal(kcm.healthy, false)
      assert.deepEqual(kcm.problems, ['kube-controller-manager-cp-2 on cp-2 is not ready (CrashLoopBackOff)'])
      assert.match(kcm.warnings.join('\n'), /restarts: kube-controller-manager-cp-2 7/)
    })

    it('turns a failing /readyz check into an apiserver problem naming the check', () => {
      const inputs = base()
      inputs.readyz = failing('/readyz', 'etcd')
      const plane = buildControlPlane(inputs, NOW)
      const apiserver = component(plane, 'kube-apiserver')
      assert.deepEqual(apiserver.problems, ['/readyz answered 500: failed etcd'])
      assert.equal(plane.apiserver.readyz.ok, false)
      assert.deepEqual(
        plane.apiserver.readyz.checks.filter((c) => !c.ok),
        [{name: 'etcd', ok: false, message: 'reason withheld'}],
      )
      assert.equal(plane.healthy, false)
    })

    it('reports a DaemonSet that wants more pods than exist', () => {
      const inputs = base()
      const ds = inputs.daemonSets.find((d) => d.metadata?.name === 'kube-proxy')!
      ds.status!.desiredNumberScheduled = 3
      const proxy = component(buildControlPlane(inputs, NOW), 'kube-proxy')
      assert.deepEqual(proxy.problems, ['DaemonSet/kube-proxy wants 3 pods but 2 exist'])
    })

    it('does not judge a DaemonSet its controller has not processed yet (a cluster just started)', () => {
      const inputs = base()
      const ds = inputs.daemonSets.find((d) => d.metadata?.name === 'kube-proxy')!
      inputs.pods = inputs.pods.filter((p) => p.metadata?.labels?.['k8s-app'] !== 'kube-proxy')
      ds.status = {currentNumberScheduled: 0, desiredNumberScheduled: 0, numberMisscheduled: 0, numberReady: 0}
      const proxy = component(buildControlPlane(inputs, NOW), 'kube-proxy')
      assert.equal(proxy.healthy, true)
      assert.deepEqual(proxy.warnings, ['DaemonSet/kube-proxy is not yet processed by its controller'])
      ds.status = {...ds.status, observedGeneration: 1}
      assert.deepEqual(component(buildControlPlane(inputs, NOW), 'kube-proxy').problems, ['DaemonSet/kube-proxy runs no pods'])
    })

    it('warns (does not fail) when two versions run, as mid-upgrade', () => {
      const inputs = base()
      const pod = inputs.pods.find((p) => p.metadata?.name === 'kube-apiserver-cp-2')!
      pod.spec!.containers[0].image = 'registry.k8s.io/kube-apiserver:v1.33.1'
      const apiserver = component(buildControlPlane(inputs, NOW), 'kube-apiserver')
      assert.deepEqual(apiserver.versions, ['v1.32.4', 'v1.33.1'])
      assert.deepEqual(apiserver.warnings, ['2 versions running: v1.32.4, v1.33.1'])
      assert.equal(apiserver.healthy, true)
    })

    it('fails a scheduler newer than the API server (skew policy)', () => {
      const inputs = base()
      for (const p of inputs.pods.filter((x) => x.metadata?.name?.startsWith('kube-scheduler-'))) {
        p.spec!.containers[0].image = 'registry.k8s.io/kube-scheduler:v1.33.0'
      }

      const scheduler = component(buildControlPlane(inputs, NOW), 'kube-scheduler')
      assert.equal(scheduler.healthy, false)
      assert.match(scheduler.problems[0], /v1.33.0 is newer than the API server \(v1.32.4\)/)
    })

    it('ignores evicted pods of a workload but mentions them', () => {
      const inputs = base()
      const evicted = structuredClone(inputs.pods.find((p) => p.metadata?.labels?.['k8s-app'] === 'kube-proxy')!)
      evicted.metadata!.name = 'kube-proxy-evict'
      evicted.status = {phase: 'Failed', reason: 'Evicted'}
      inputs.pods.push(evicted)
      const proxy = component(buildControlPlane(inputs, NOW), 'kube-proxy')
      assert.equal(
        proxy.instances.some((i) => i.pod === 'kube-proxy-evict'),
        false,
      )
      assert.equal(proxy.healthy, true)
      assert.deepEqual(proxy.warnings, ['1 finished or evicted pod(s) left over'])
    })
  })

  describe('pods on their way out', () => {
    it('leaves a terminating workload pod out of the instances, with a warning', () => {
      const inputs = kubeadmCluster({version: 'v1.32.4', manifestsDir: NEW, controlPlaneNodes: ['cp-1']})
      const leaving = structuredClone(inputs.pods.find((p) => p.metadata?.labels?.['k8s-app'] === 'kube-dns')!)
      leaving.metadata!.name = 'coredns-old-abcde'
      leaving.metadata!.deletionTimestamp = NOW.toISOString()
      leaving.status!.conditions = [{type: 'Ready', status: 'False'}] as never
      inputs.pods.push(leaving)
      const dns = component(buildControlPlane(inputs, NOW), 'coredns')
      assert.equal(
        dns.instances.some((i) => i.pod === 'coredns-old-abcde'),
        false,
      )
      assert.equal(dns.healthy, true)
      assert.deepEqual(dns.warnings, ['1 pod(s) terminating'])
    })
  })

  describe('leaders on 1.17–1.19, which write both a Lease and the Endpoints annotation', () => {
    it('takes the fresher record when they disagree', () => {
      const inputs = kubeadmCluster({version: 'v1.18.20', manifestsDir: OLD, controlPlaneNodes: ['m-1', 'm-2']})
      inputs.leases = [lease('kube-scheduler', {holderNode: 'm-1', renewedAgo: 300})]
      inputs.endpoints = [leaderEndpoints('kube-scheduler', {holderNode: 'm-2', renewedAgo: 1})]
      const leader = component(buildControlPlane(inputs, NOW), 'kube-scheduler').leader!
      assert.equal(leader.source, 'Endpoints')
      assert.equal(leader.pod, 'kube-scheduler-m-2')
      assert.equal(leader.stale, false)
    })
  })

  describe('a cluster mid-pivot and after it', () => {
    it('mid-pivot: static and self-hosted instances side by side make the mode mixed', () => {
      const inputs = kubeadmCluster({
        version: 'v1.32.4',
        manifestsDir: NEW,
        controlPlaneNodes: ['cp-1', 'cp-2'],
        selfHosted: ['kube-apiserver', 'kube-scheduler'],
        alsoStatic: ['kube-apiserver', 'kube-scheduler'],
        // The new scheduler pods wait for the old ones' port on one node.
        podState: (c, n, source) => (c === 'kube-scheduler' && source === 'workload' && n === 'cp-1' ? {ready: false} : {}),
      })
      const plane = buildControlPlane(inputs, NOW)
      const apiserver = component(plane, 'kube-apiserver')
      assert.equal(apiserver.mode, 'mixed')
      assert.deepEqual(
        apiserver.instances.map((i) => [i.node, i.source]),
        [
          ['cp-1', 'static'],
          ['cp-1', 'workload'],
          ['cp-2', 'static'],
          ['cp-2', 'workload'],
        ],
      )
      assert.deepEqual(
        apiserver.workloads.map((w) => [w.kind, w.name]),
        [['DaemonSet', 'self-hosted-kube-apiserver']],
      )
      assert.equal(component(plane, 'kube-controller-manager').mode, 'static')
      // Two pods on the leader's node: the ready (static) one is taken as the holder.
      const leader = component(plane, 'kube-scheduler').leader!
      assert.equal(leader.pod, 'kube-scheduler-cp-1')
      assert.equal(component(plane, 'kube-scheduler').healthy, false)
    })

    it('after the pivot: workloads only (self-hosted), etcd still static', () => {
      const inputs = kubeadmCluster({
        version: 'v1.32.4',
        manifestsDir: NEW,
        controlPlaneNodes: ['cp-1'],
        selfHosted: ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler'],
      })
      const plane = buildControlPlane(inputs, NOW)
      for (const name of ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler'] as const) {
        const c = component(plane, name)
        assert.equal(c.mode, 'self-hosted', name)
        assert.equal(c.instances.length, 1)
        assert.equal(c.instances[0].source, 'workload')
        assert.match(c.instances[0].pod, new RegExp(`^self-hosted-${name}-`))
      }

      assert.equal(component(plane, 'etcd').mode, 'static')
      const leader = component(plane, 'kube-controller-manager').leader!
      assert.match(leader.pod!, /^self-hosted-kube-controller-manager-/)
      assert.equal(plane.healthy, true, JSON.stringify(plane.components.flatMap((c) => c.problems)))
    })

    describe('what self-hosting the apiserver costs: a warning, never a problem', () => {
      const costOf = (plane: ControlPlane) => component(plane, 'kube-apiserver').warnings.filter((w) => /no checkpointing/.test(w))

      it('self-hosted on several nodes: a full control-plane restart cannot bring it back; how to recover', () => {
        const plane = buildControlPlane(
          kubeadmCluster({
            version: 'v1.32.4',
            manifestsDir: NEW,
            controlPlaneNodes: ['cp-1', 'cp-2', 'cp-3'],
            selfHosted: ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler'],
          }),
          NOW,
        )
        assert.deepEqual(costOf(plane), [
          'self-hosted, no checkpointing: if every control-plane node restarts at once (full reboot, power loss), no kubelet can start kube-apiserver again (its DaemonSet lives in the API it serves); ' +
            'recover on one node with cp /etc/kubernetes/selfhost/backup/<timestamp>/*.yaml /etc/kubernetes/manifests/, then `kubectl selfhost revert`; `kubectl selfhost pivot` installs checkpoints',
        ])
        assert.deepEqual(component(plane, 'kube-apiserver').problems, [])
        assert.equal(plane.healthy, true)
        for (const name of ['kube-controller-manager', 'kube-scheduler', 'etcd'] as const) {
          assert.deepEqual(
            component(plane, name).warnings.filter((w) => /checkpointing/.test(w)),
            [],
            `${name}: they restart through the API once it is back`,
          )
        }
      })

      describe('with checkpoints (the checkpointer mirror pods say what each node holds)', () => {
        const nodes = ['cp-1', 'cp-2', 'cp-3']
        const checkpointer = (node: string, versions: Record<string, string>, ready = true) => ({
          metadata: {
            name: `selfhost-checkpointer-${node}`,
            namespace: 'kube-system',
            labels: {'selfhost.kubectl.io/role': 'checkpointer'},
            annotations: {
              'kubernetes.io/config.mirror': 'x',
              'selfhost.kubectl.io/checkpoints': JSON.stringify(
                Object.fromEntries(Object.entries(versions).map(([c, v]) => [c, {version: v, written: new Date(NOW.getTime() - 3_600_000).toISOString()}])),
              ),
            },
          },
          spec: {nodeName: node, containers: []},
          status: {phase: 'Running', conditions: [{type: 'Ready', status: ready ? 'True' : 'False'}]},
        })
        const all = {'kube-apiserver': 'v1.32.4', 'kube-controller-manager': 'v1.32.4', 'kube-scheduler': 'v1.32.4'}
        const cluster = (extra: object[]) => {
          const inputs = kubeadmCluster({
            version: 'v1.32.4',
            manifestsDir: NEW,
            controlPlaneNodes: nodes,
            selfHosted: ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler'],
          })
          inputs.pods = [...inputs.pods, ...(extra as typeof inputs.pods)]
          return buildControlPlane(inputs, NOW)
        }

        const costs = (plane: ControlPlane) => component(plane, 'kube-apiserver').warnings.filter((w) => /checkpoint/.test(w))

        it('every node holds a current checkpoint: no warning; status lists each node with version and age', () => {
          const plane = cluster(nodes.map((n) => checkpointer(n, all)))
          assert.deepEqual(costs(plane), [])
          assert.deepEqual(
            plane.checkpoints.map((c) => [c.node, c.checkpointer, c.gap, c.checkpoints.map((k) => `${k.component} ${k.version} ${k.current}`).join(',')]),
            nodes.map((n) => [
              n,
              'ready',
              undefined,
              Object.keys(all)
                .map((c) => `${c} v1.32.4 true`)
                .join(','),
            ]),
          )
          assert.equal(plane.checkpoints[0].checkpoints[0].ageSeconds, 3600)
          assert.equal(plane.healthy, true)
        })

        it('one node stale, one with a problem: the warning names both, and how to rewrite them', () => {
          const plane = cluster([checkpointer('cp-1', all), checkpointer('cp-2', {...all, 'kube-apiserver': 'v1.32.3'}), checkpointer('cp-3', all, false)])
          assert.equal(costs(plane).length, 1)
          assert.match(
            costs(plane)[0],
            /^checkpoints incomplete \(cp-2: kube-apiserver checkpoint is v1\.32\.3, the node runs v1\.32\.4; cp-3: the checkpointer reports a problem \(kubectl logs -n kube-system selfhost-checkpointer-cp-3\)\)/,
          )
        })

        it('no node covered: the manual recovery, with what is wrong', () => {
          const plane = cluster(nodes.map((n) => checkpointer(n, all, false)))
          assert.match(costs(plane)[0], /^self-hosted, no usable checkpoint \(cp-1: the checkpointer reports a problem/)
          assert.match(costs(plane)[0], /recover on one node with cp /)
        })

        it('a node running from its checkpoint says so', () => {
          const copy = {
            metadata: {
              name: 'kube-apiserver-checkpoint-cp-2',
              namespace: 'kube-system',
              labels: {'selfhost.kubectl.io/checkpoint-of': 'kube-apiserver'},
              annotations: {'kubernetes.io/config.mirror': 'x'},
            },
            spec: {nodeName: 'cp-2', containers: [{name: 'kube-apiserver', image: 'registry.k8s.io/kube-apiserver:v1.32.4'}]},
            status: {phase: 'Running', conditions: [{type: 'Ready', status: 'True'}]},
          }
          const plane = cluster([...nodes.map((n) => checkpointer(n, all)), copy])
          assert.deepEqual(plane.checkpoints.find((c) => c.node === 'cp-2')!.serving, ['kube-apiserver'])
          assert.match(costs(plane).join('\n'), /cp-2 runs kube-apiserver from its checkpoint/)
          assert.equal(
            component(plane, 'kube-apiserver').instances.some((i) => i.pod === copy.metadata.name),
            false,
            'a copy is not an instance of the workload',
          )
        })
      })

      it('one control-plane node: any reboot of it is that restart', () => {
        const plane = buildControlPlane(
          kubeadmCluster({version: 'v1.32.4', manifestsDir: NEW, controlPlaneNodes: ['cp-1'], selfHosted: ['kube-apiserver']}),
          NOW,
        )
        assert.match(costOf(plane)[0], /^self-hosted, no checkpointing: if the only control-plane node reboots, no kubelet can start kube-apiserver again/)
      })

      it('mixed (mid-pivot): names the nodes whose static manifest can still start it', () => {
        const inputs = kubeadmCluster({
          version: 'v1.32.4',
          manifestsDir: NEW,
          controlPlaneNodes: ['cp-1', 'cp-2', 'cp-3'],
          selfHosted: ['kube-apiserver'],
          alsoStatic: ['kube-apiserver'],
        })
        // cp-1 already handed off: its mirror pod is gone.
        inputs.pods = inputs.pods.filter((p) => p.metadata?.name !== 'kube-apiserver-cp-1')
        const plane = buildControlPlane(inputs, NOW)
        assert.equal(component(plane, 'kube-apiserver').mode, 'mixed')
        assert.deepEqual(costOf(plane), [
          'partly self-hosted, no checkpointing: after a full control-plane restart only cp-2, cp-3 (static manifest) can start kube-apiserver by itself; the self-hosted instances need a running API',
        ])
        assert.equal(plane.healthy, true)
      })

      it('static, or self-hosted components other than the apiserver: no such warning', () => {
        for (const selfHosted of [[], ['kube-controller-manager', 'kube-scheduler']]) {
          const plane = buildControlPlane(kubeadmCluster({version: 'v1.32.4', manifestsDir: NEW, controlPlaneNodes: ['cp-1', 'cp-2'], selfHosted}), NOW)
          assert.deepEqual(
            plane.components.flatMap((c) => c.warnings.filter((w) => /checkpointing/.test(w))),
            [],
            selfHosted.join(','),
          )
        }
      })
    })

    it('a self-hosted Deployment scaled to zero is a problem, not "absent"', () => {
      const manifests = loadManifests(NEW)
      const scheduler = selfHosted(manifests.get('kube-scheduler')!, {kind: 'Deployment', nodes: {}, replicas: 0})
      const inputs = kubeadmCluster({version: 'v1.32.4', manifestsDir: NEW, controlPlaneNodes: ['cp-1']})
      inputs.pods = inputs.pods.filter((p) => p.metadata?.labels?.component !== 'kube-scheduler')
      inputs.deployments.push(scheduler.workload as never)
      const c = component(buildControlPlane(inputs, NOW), 'kube-scheduler')
      assert.equal(c.mode, 'self-hosted')
      assert.deepEqual(c.problems, ['Deployment/self-hosted-kube-scheduler runs no pods'])
    })
  })

  describe('a managed cluster (control plane outside, only kube-proxy and CoreDNS visible)', () => {
    const nodes = [node({name: 'gke-pool-1', version: 'v1.31.5'}), node({name: 'gke-pool-2', version: 'v1.31.5'})]
    const proxy = kubeProxy('v1.31.5-gke.100', 'gke.gcr.io', {nodes: {'gke-pool-1': {}, 'gke-pool-2': {}}})
    const dns = coreDns('registry.k8s.io/coredns/coredns:v1.11.1', {nodes: {'gke-pool-1': {}}})
    const inputs: DiscoveryInputs = {
      context: 'gke',
      server: 'https://34.1.2.3',
      version: {gitVersion: 'v1.31.5-gke.1023000'},
      pods: [...proxy.pods, ...dns.pods],
      nodes,
      daemonSets: [proxy.daemonSet],
      deployments: [dns.deployment],
      leases: [],
      endpoints: [],
      readyz: healthy('/readyz'),
      livez: healthy('/livez'),
    }
    const plane = buildControlPlane(inputs, NOW)

    it('reports the control plane absent, with a reason, and still healthy', () => {
      for (const name of ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'etcd'] as const) {
        const c = component(plane, name)
        assert.equal(c.mode, 'absent', name)
        assert.equal(c.healthy, true)
        assert.equal(c.warnings.length, 1)
        assert.equal(c.leader, undefined)
      }

      assert.match(component(plane, 'etcd').warnings[0], /external etcd or a managed control plane/)
      assert.deepEqual(component(plane, 'kube-proxy').versions, ['v1.31.5-gke.100'])
      assert.equal(
        plane.nodes.some((n) => n.controlPlane),
        false,
      )
      assert.equal(plane.healthy, true)
    })
  })

  describe('matching leader holders', () => {
    it('matches a holder that is the node FQDN while the node is registered by short name', () => {
      const inputs = kubeadmCluster({version: 'v1.32.4', manifestsDir: NEW, controlPlaneNodes: ['cp-1', 'cp-2']})
      inputs.leases = [lease('kube-scheduler', {holderNode: 'cp-2.example.internal'})]
      assert.equal(component(buildControlPlane(inputs, NOW), 'kube-scheduler').leader?.pod, 'kube-scheduler-cp-2')
    })

    it('matches a holder to a node whose Hostname address differs from its name', () => {
      const inputs = kubeadmCluster({version: 'v1.32.4', manifestsDir: NEW, controlPlaneNodes: ['cp-1']})
      inputs.nodes = [node({name: 'cp-1', version: 'v1.32.4', controlPlane: true, hostname: 'ip-10-0-0-10'})]
      inputs.leases = [lease('kube-scheduler', {holderNode: 'ip-10-0-0-10'})]
      assert.equal(component(buildControlPlane(inputs, NOW), 'kube-scheduler').leader?.pod, 'kube-scheduler-cp-1')
    })

    it("does not credit a pod on the holder's node that started after the lease was taken", () => {
      const inputs = kubeadmCluster({version: 'v1.32.4', manifestsDir: NEW, controlPlaneNodes: ['cp-1']})
      const held = lease('kube-scheduler', {holderNode: 'cp-1'})
      held.spec!.acquireTime = new Date(Date.parse(inputs.pods[0].status!.startTime!) - 3_600_000).toISOString()
      inputs.leases = [held]
      const c = component(buildControlPlane(inputs, NOW), 'kube-scheduler')
      assert.equal(c.leader?.pod, undefined)
      assert.match(
        c.warnings[0],
        /^the lease holder cp-1 runs on cp-1 but took the lease at \S+, before pod kube-scheduler-cp-1 started \(\S+\): another process on that node leads$/,
      )
    })

    it('warns when the holder is none of the instances', () => {
      const inputs = kubeadmCluster({version: 'v1.32.4', manifestsDir: NEW, controlPlaneNodes: ['cp-1']})
      inputs.leases = [lease('kube-scheduler', {holderNode: 'old-master'})]
      const c = component(buildControlPlane(inputs, NOW), 'kube-scheduler')
      assert.equal(c.leader?.pod, undefined)
      assert.deepEqual(c.warnings, ['leader old-master is none of the instances seen'])
    })
  })

  describe('helpers', () => {
    it('parses verbose health answers', () => {
      assert.deepEqual(parseHealthChecks('[+]ping ok\n[+]etcd excluded: ok\n[-]poststarthook/rbac failed: not finished\nreadyz check failed\n'), [
        {name: 'ping', ok: true},
        {name: 'etcd', ok: true},
        {name: 'poststarthook/rbac', ok: false, message: 'not finished'},
      ])
    })
  })

  describe('real-world kubeadm manifests (../shared/fixtures, when present)', () => {
    const shared = sharedKubeadmFixtures()
    if (shared.length === 0) {
      it('skipped: ../shared/fixtures/kubeadm is not next to this checkout')
      return
    }

    for (const fixture of shared) {
      it(`${fixture.name}: mirror pods make a static, healthy control plane with the manifests' versions and leaders`, () => {
        const apiserverManifest = parseYaml(readFileSync(join(fixture.dir, 'kube-apiserver.yaml'), 'utf8')) as V1Pod
        const version = versionFromImage(apiserverManifest.spec!.containers[0].image!)!
        const inputs = kubeadmCluster({version, manifestsDir: fixture.dir, controlPlaneNodes: ['cp-a', 'cp-b'], workers: ['w-a'], leaderNode: 'cp-b'})
        const plane = buildControlPlane(inputs, NOW)
        for (const name of ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'etcd'] as const) {
          const c = component(plane, name)
          assert.equal(c.mode, 'static', name)
          assert.deepEqual(
            c.instances.map((i) => i.pod),
            [`${name}-cp-a`, `${name}-cp-b`],
          )
        }

        assert.deepEqual(component(plane, 'kube-apiserver').versions, [version])
        assert.equal(component(plane, 'kube-scheduler').leader?.pod, 'kube-scheduler-cp-b')
        assert.equal(plane.healthy, true, JSON.stringify(plane.components.flatMap((c) => c.problems)))
      })
    }
  })
})

/** A fake API serving a cluster's objects and counting every call by name. */
function countingApi(inputs: DiscoveryInputs, opts: {noLeaseApi?: boolean; configMaps?: DiscoveryInputs['configMaps']} = {}) {
  const calls: string[] = []
  const api: DiscoveryApi = {
    server: inputs.server,
    contextName: inputs.context,
    version: async () => (calls.push('version'), inputs.version),
    listPods: async () => (calls.push('pods'), {items: inputs.pods}),
    listNodes: async () => (calls.push('nodes'), {items: inputs.nodes}),
    listDaemonSets: async () => (calls.push('daemonsets'), {items: inputs.daemonSets}),
    listDeployments: async () => (calls.push('deployments'), {items: inputs.deployments}),
    listLeases: async () => (calls.push('leases'), opts.noLeaseApi ? undefined : {items: inputs.leases ?? []}),
    listEndpoints: async () => (calls.push('endpoints'), {items: inputs.endpoints ?? []}),
    listConfigMaps: async () => (calls.push('configmaps'), {items: opts.configMaps ?? []}),
    raw: async (_method: string, path: string) => {
      calls.push(path)
      const res = path === '/readyz' ? inputs.readyz : path === '/livez' ? inputs.livez : inputs.readyz
      return {status: res.status, body: res.body}
    },
  } as unknown as DiscoveryApi
  return {api, calls}
}

describe('discoverControlPlane request budget', () => {
  it('1.32 with Leases: eight requests, no Endpoints', async () => {
    const inputs = kubeadmCluster({version: 'v1.32.4', manifestsDir: NEW, controlPlaneNodes: ['cp-1']})
    const {api, calls} = countingApi(inputs)
    const plane = await discoverControlPlane(api, {now: NOW})
    assert.deepEqual([...calls].sort(), ['/livez', '/readyz', 'daemonsets', 'deployments', 'leases', 'nodes', 'pods', 'version'])
    assert.equal(component(plane, 'kube-scheduler').leader?.source, 'Lease')
  })

  it('1.14: /healthz once for both verdicts, and Endpoints once', async () => {
    const inputs = kubeadmCluster({version: 'v1.14.10', manifestsDir: OLD, controlPlaneNodes: ['master-1']})
    const {api, calls} = countingApi(inputs)
    const plane = await discoverControlPlane(api, {now: NOW})
    assert.deepEqual([...calls].sort(), ['/healthz', 'daemonsets', 'deployments', 'endpoints', 'leases', 'nodes', 'pods', 'version'])
    assert.equal(plane.apiserver.livez.endpoint, '/healthz')
    assert.equal(component(plane, 'kube-controller-manager').leader?.source, 'Endpoints')
  })

  it('falls back to ConfigMap locks only when neither Leases nor Endpoints name a leader', async () => {
    const inputs = kubeadmCluster({version: 'v1.18.20', manifestsDir: OLD, controlPlaneNodes: ['m-1'], leaderRecords: 'lease'})
    inputs.leases = []
    const configMaps = [{...leaderEndpoints('kube-scheduler', {holderNode: 'm-1'}), kind: 'ConfigMap'}]
    const {api, calls} = countingApi(inputs, {noLeaseApi: true, configMaps: configMaps as never})
    const plane = await discoverControlPlane(api, {now: NOW})
    assert.equal(calls.filter((c) => c === 'configmaps').length, 1)
    assert.equal(component(plane, 'kube-scheduler').leader?.source, 'ConfigMap')
    assert.equal(component(plane, 'kube-scheduler').leader?.pod, 'kube-scheduler-m-1')
  })

  it('does not grow with the cluster: 3 nodes and 300 nodes cost the same', async () => {
    const counts: number[] = []
    for (const workers of [2, 297]) {
      const inputs = kubeadmCluster({
        version: 'v1.32.4',
        manifestsDir: NEW,
        controlPlaneNodes: ['cp-1', 'cp-2', 'cp-3'],
        workers: Array.from({length: workers}, (_, i) => `w-${i}`),
      })
      const {api, calls} = countingApi(inputs)
      const plane = await discoverControlPlane(api, {now: NOW})
      assert.equal(component(plane, 'kube-proxy').instances.length, workers + 3)
      counts.push(calls.length)
    }

    assert.deepEqual(counts, [8, 8])
  })
})
