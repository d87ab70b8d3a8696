import {strict as assert} from 'node:assert'
import {execFile} from 'node:child_process'
import {existsSync, readFileSync} from 'node:fs'
import {join} from 'node:path'
import {promisify} from 'node:util'

import type {V1Pod} from '../../src/kube/types.js'

import {KubeClient} from '../../src/kube/client.js'
import {isNotFound} from '../../src/kube/errors.js'
import {type TestCluster, BINARY_VERSION} from './cluster/harness.js'
import {netnsExists} from './cluster/netns.js'
import {eventually, startTestClusterOrSkip} from './support.js'

const run = promisify(execFile)
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const isReady = (pod: V1Pod) => pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true

/** A node-task pod exactly as contract 2 describes it, made with plain API calls. */
function nodeTaskPod(name: string, node: string, script: string, deadlineSeconds = 60): V1Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {name, namespace: 'kube-system', labels: {'app.kubernetes.io/managed-by': 'kubectl-selfhost', 'selfhost.kubectl.io/node-task': 'e2e'}},
    spec: {
      nodeName: node,
      restartPolicy: 'Never',
      activeDeadlineSeconds: deadlineSeconds,
      hostNetwork: true,
      tolerations: [{operator: 'Exists'}],
      containers: [
        {
          name: 'task',
          image: `registry.k8s.io/kube-proxy:${BINARY_VERSION}`,
          command: ['sh', '-c', script],
          env: [{name: 'HOST_ROOT', value: '/host'}],
          securityContext: {privileged: true},
          volumeMounts: [{name: 'host-root', mountPath: '/host'}],
        },
      ],
      volumes: [{name: 'host-root', hostPath: {path: '/', type: 'Directory'}}],
    },
  }
}

describe('test cluster (e2e: real etcd, kube-apiserver, kcm, scheduler, kube-proxy; kwok nodes)', function () {
  this.timeout(300_000)
  let cluster: TestCluster | undefined
  let client: KubeClient
  let kubectl: (...args: string[]) => Promise<string>

  before(async function () {
    cluster = await startTestClusterOrSkip(this, 'test cluster', {controlPlaneNodes: 3, workers: 1})
    console.log(`      (cluster started in ${(cluster.startupMs / 1000).toFixed(1)}s)`)
    client = await KubeClient.connect({kubeconfig: cluster.kubeconfig})
    kubectl = async (...args: string[]) => (await run(join(cluster!.binDir, 'kubectl'), ['--kubeconfig', cluster!.kubeconfig, ...args])).stdout
  })

  after(async () => {
    await cluster?.stop()
  })

  async function runTask(name: string, node: string, script: string, deadlineSeconds = 60): Promise<{pod: V1Pod; log: string}> {
    await client.createPod('kube-system', nodeTaskPod(name, node, script, deadlineSeconds))
    try {
      const pod = await eventually(`node task ${name} to finish`, 90_000, async () => {
        const current = await client.getPod('kube-system', name)
        return current.status?.phase === 'Succeeded' || current.status?.phase === 'Failed' ? current : undefined
      })
      return {pod, log: await client.readPodLog('kube-system', name, 'task')}
    } finally {
      await client.deletePod('kube-system', name, 0)
    }
  }

  it('has control-plane nodes labelled and tainted as kubeadm does, and Ready workers', async () => {
    const nodes = (await client.listNodes()).items
    const controlPlane = nodes.filter((n) => n.metadata?.labels?.['node-role.kubernetes.io/control-plane'] === '')
    assert.deepEqual(controlPlane.map((n) => n.metadata!.name).sort(), ['control-plane-1', 'control-plane-2', 'control-plane-3'])
    for (const node of controlPlane) {
      assert.deepEqual(
        node.spec?.taints?.map((t) => `${t.key}:${t.effect}`),
        ['node-role.kubernetes.io/control-plane:NoSchedule'],
      )
    }

    assert.deepEqual(
      nodes.filter((n) => !controlPlane.includes(n)).map((n) => n.metadata!.name),
      ['worker-1'],
    )
    for (const node of nodes) {
      assert.ok(
        node.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'),
        `${node.metadata!.name} is Ready`,
      )
      assert.equal(node.status?.nodeInfo?.kubeletVersion, BINARY_VERSION)
    }

    const worker = cluster!.nodes.find((n) => n.role === 'worker')!
    assert.ok(worker.netns && netnsExists(worker.netns), 'the worker has its own network namespace')
    // kube-controller-manager (real) gave every node a pod CIDR.
    assert.ok(nodes.every((n) => n.spec?.podCIDR?.startsWith('10.244.')))
  })

  it("mirrors each control-plane node's static manifests as kubeadm's mirror pods, served by real processes", async () => {
    const pods = (await client.listPods('kube-system')).items
    for (const node of cluster!.nodes.filter((n) => n.role === 'control-plane')) {
      for (const component of ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler']) {
        const pod = pods.find((p) => p.metadata?.name === `${component}-${node.name}`)
        assert.ok(pod, `mirror pod ${component}-${node.name} exists`)
        const annotations = pod.metadata!.annotations!
        assert.match(annotations['kubernetes.io/config.mirror'], /^[0-9a-f]{32}$/)
        assert.equal(annotations['kubernetes.io/config.hash'], annotations['kubernetes.io/config.mirror'])
        assert.equal(annotations['kubernetes.io/config.source'], 'file')
        assert.deepEqual(
          pod.metadata!.ownerReferences?.map((o) => `${o.kind}/${o.name}`),
          [`Node/${node.name}`],
        )
        assert.equal(pod.spec!.nodeName, node.name)
        assert.equal(pod.metadata!.labels?.component, component)
        assert.ok(isReady(pod), `${pod.metadata!.name} is Ready`)
        const manifest = readFileSync(join(node.root, 'etc/kubernetes/manifests', `${component}.yaml`), 'utf8')
        assert.ok(manifest.includes(`image: ${pod.spec!.containers[0].image}`), "the mirror pod carries the manifest's image")
        if (component === 'kube-apiserver') assert.ok(manifest.includes(`--advertise-address=${node.ip}`))
      }
    }

    // `kubectl logs` of a mirror pod, through the real API server, is the real apiserver's log.
    const log = await kubectl('-n', 'kube-system', 'logs', 'kube-apiserver-control-plane-2', '--tail=200')
    assert.match(log, /^[IWE]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+\.go:\d+\]/m)
  })

  it('keeps the leader Leases of kube-controller-manager and kube-scheduler renewed, held by a control-plane node', async () => {
    const first = await Promise.all([client.getLease('kube-system', 'kube-controller-manager'), client.getLease('kube-system', 'kube-scheduler')])
    for (const lease of first) assert.match(lease?.spec?.holderIdentity ?? '', /^control-plane-1_/)
    const renewed = await eventually('both leases to be renewed', 30_000, async () => {
      const now = await Promise.all([client.getLease('kube-system', 'kube-controller-manager'), client.getLease('kube-system', 'kube-scheduler')])
      return now.every((lease, i) => Date.parse(String(lease!.spec!.renewTime)) > Date.parse(String(first[i]!.spec!.renewTime))) ? now : undefined
    })
    assert.equal(renewed.length, 2)
  })

  it("runs a node task for real: writes a static manifest into the node's manifests dir, which the kubelet loop mirrors", async () => {
    const node = cluster!.nodes.find((n) => n.name === 'control-plane-2')!
    const script = [
      'set -e',
      'cat > "$HOST_ROOT/etc/kubernetes/manifests/e2e-probe.yaml" <<EOF',
      'apiVersion: v1',
      'kind: Pod',
      'metadata: {name: e2e-probe, namespace: kube-system, labels: {component: e2e-probe}}',
      'spec: {hostNetwork: true, containers: [{name: probe, image: registry.k8s.io/pause:3.10}]}',
      'EOF',
      'echo "wrote $HOST_ROOT/etc/kubernetes/manifests/e2e-probe.yaml"',
      'ls "$HOST_ROOT/etc/kubernetes/manifests"',
    ].join('\n')
    const written = await runTask('e2e-write-manifest', node.name, script)
    assert.equal(written.pod.status?.phase, 'Succeeded')
    assert.equal(written.pod.status?.containerStatuses?.[0].state?.terminated?.exitCode, 0)
    assert.ok(written.log.includes(`wrote ${node.root}/etc/kubernetes/manifests/e2e-probe.yaml`), written.log)
    assert.ok(written.log.includes('kube-apiserver.yaml'), "the task listed the node's real manifests dir")
    assert.ok(existsSync(join(node.root, 'etc/kubernetes/manifests/e2e-probe.yaml')))
    const mirror = await eventually('the new static pod to be mirrored and Ready', 30_000, async () => {
      const pod = await client.getPod('kube-system', `e2e-probe-${node.name}`).catch(() => undefined)
      return pod && isReady(pod) ? pod : undefined
    })
    assert.equal(mirror.spec?.nodeName, node.name)

    // A failing task reports its exit code; removing the manifest removes the mirror pod.
    const removed = await runTask('e2e-remove-manifest', node.name, 'rm "$HOST_ROOT/etc/kubernetes/manifests/e2e-probe.yaml" && echo removed && exit 3')
    assert.equal(removed.pod.status?.phase, 'Failed')
    assert.equal(removed.pod.status?.containerStatuses?.[0].state?.terminated?.exitCode, 3)
    assert.equal(removed.log.trim(), 'removed')
    await eventually('the mirror pod to go', 30_000, async () => {
      try {
        await client.getPod('kube-system', `e2e-probe-${node.name}`)
        return undefined
      } catch (error) {
        if (isNotFound(error)) return true
        throw error
      }
    })
  })

  it('kills a node task at its activeDeadlineSeconds and reports DeadlineExceeded', async () => {
    const started = Date.now()
    const {pod, log} = await runTask('e2e-deadline', 'control-plane-1', 'echo started; sleep 120', 2)
    assert.equal(pod.status?.phase, 'Failed')
    assert.equal(pod.status?.reason, 'DeadlineExceeded')
    assert.ok(Date.now() - started < 30_000)
    assert.equal(log.trim(), 'started')
  })

  it("sets up a task's hostPath volumes as a kubelet does: DirectoryOrCreate made under the node's root before the task starts", async () => {
    const node = cluster!.nodes.find((n) => n.name === 'control-plane-2')!
    const made = join(node.root, 'etc/kubernetes/e2e-made/a/b')
    assert.equal(existsSync(made), false)
    const pod = nodeTaskPod('e2e-made-dirs', node.name, 'test -d "$HOST_ROOT/etc/kubernetes/e2e-made/a/b" && echo there')
    pod.spec!.volumes!.push({name: 'made-dir-0', hostPath: {path: '/etc/kubernetes/e2e-made/a/b', type: 'DirectoryOrCreate'}})
    pod.spec!.containers[0].volumeMounts!.push({name: 'made-dir-0', mountPath: '/selfhost-made-dirs/0'})
    await client.createPod('kube-system', pod)
    try {
      const done = await eventually('the task to finish', 60_000, async () => {
        const current = await client.getPod('kube-system', 'e2e-made-dirs')
        return current.status?.phase === 'Succeeded' || current.status?.phase === 'Failed' ? current : undefined
      })
      assert.equal(done.status?.containerStatuses?.[0].state?.terminated?.exitCode, 0, await client.readPodLog('kube-system', 'e2e-made-dirs', 'task'))
      assert.equal((await client.readPodLog('kube-system', 'e2e-made-dirs', 'task')).trim(), 'there')
    } finally {
      await client.deletePod('kube-system', 'e2e-made-dirs', 0)
    }
  })

  it("stops a deleted task as a kubelet does: SIGTERM, then SIGKILL once the pod's grace period is over", async () => {
    const node = cluster!.nodes.find((n) => n.name === 'control-plane-3')!
    // The trap writes into the node's root: the pod's log is gone with the pod.
    const script = (name: string, cleanupSeconds: number) =>
      `trap 'echo term > "$HOST_ROOT/${name}"; sleep ${cleanupSeconds}; echo cleaned >> "$HOST_ROOT/${name}"; exit 7' TERM; echo waiting; while :; do sleep 0.2 & wait $! || true; done`
    const cases = [
      {name: 'e2e-grace-kept', graceSeconds: 5, cleanupSeconds: 1, expected: 'term\ncleaned\n'},
      {name: 'e2e-grace-over', graceSeconds: 1, cleanupSeconds: 4, expected: 'term\n'},
    ]
    for (const c of cases) {
      const pod = nodeTaskPod(c.name, node.name, script(c.name, c.cleanupSeconds))
      pod.spec!.terminationGracePeriodSeconds = c.graceSeconds
      await client.createPod('kube-system', pod)
      await eventually(`${c.name} to run`, 60_000, async () => ((await client.getPod('kube-system', c.name)).status?.phase === 'Running' ? true : undefined))
      await eventually(`${c.name} to print`, 10_000, async () =>
        (await client.readPodLog('kube-system', c.name, 'task').catch(() => '')).includes('waiting') ? true : undefined,
      )
      await client.deletePod('kube-system', c.name, c.graceSeconds)
    }

    for (const c of cases) {
      await eventually(`${c.name} to be gone`, 30_000, async () => {
        try {
          await client.getPod('kube-system', c.name)
          return undefined
        } catch (error) {
          if (isNotFound(error)) return true
          throw error
        }
      })
      await sleep(c.cleanupSeconds * 1000)
      assert.equal(readFileSync(join(node.root, c.name), 'utf8'), c.expected, c.name)
    }
  })

  it("answers at each control-plane node's apiserver address with the one real apiserver, which pods/proxy reaches; one node's can be switched off", async () => {
    const node = cluster!.nodes.find((n) => n.name === 'control-plane-2')!
    assert.ok(node.netns && netnsExists(node.netns), 'control-plane nodes have a network namespace of their own too')
    await client.createPod('kube-system', {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {name: 'e2e-host-network', namespace: 'kube-system'},
      spec: {nodeName: node.name, hostNetwork: true, tolerations: [{operator: 'Exists'}], containers: [{name: 'main', image: 'registry.k8s.io/pause:3.10'}]},
    })
    try {
      const pod = await eventually('the hostNetwork pod to be Ready', 60_000, async () => {
        const current = await client.getPod('kube-system', 'e2e-host-network')
        return isReady(current) ? current : undefined
      })
      assert.equal(pod.status?.podIP, node.ip, "a hostNetwork pod has its node's address")
      const readyz = () =>
        client.raw('GET', '/api/v1/namespaces/kube-system/pods/https:e2e-host-network:6443/proxy/readyz', {intent: {verb: 'get', resource: 'pods/proxy'}})
      const served = await readyz()
      assert.deepEqual([served.status, served.body], [200, 'ok'])
      await cluster!.setNodeApiserverServing(node.name, false)
      try {
        assert.notEqual((await readyz()).status, 200, "nothing answers at the node's address")
        assert.equal((await client.raw('GET', '/readyz', {intent: {verb: 'get', resource: '/readyz'}})).status, 200, 'while the API itself serves')
      } finally {
        await cluster!.setNodeApiserverServing(node.name, true)
      }

      await eventually("the node's address to answer again", 10_000, async () => ((await readyz()).status === 200 ? true : undefined))
    } finally {
      await client.deletePod('kube-system', 'e2e-host-network', 0)
    }
  })

  it("programs a worker's own network namespace with the real kube-proxy's rules for the cluster's Services", async () => {
    await client.apply('apps/v1', 'deployments', {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: {name: 'web', namespace: 'default'},
      spec: {
        replicas: 3,
        selector: {matchLabels: {app: 'web'}},
        template: {metadata: {labels: {app: 'web'}}, spec: {containers: [{name: 'web', image: 'nginx:1.27', ports: [{containerPort: 80}]}]}},
      },
    })
    await client.apply('v1', 'services', {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: {name: 'web', namespace: 'default'},
      spec: {selector: {app: 'web'}, ports: [{name: 'http', port: 80, targetPort: 80}]},
    })
    const worker = cluster!.nodes.find((n) => n.role === 'worker')!
    // Read through a node task, as `trace` does: it runs inside the worker's namespace.
    const rules = await eventually('kube-proxy to program three endpoints for default/web', 60_000, async () => {
      const {log} = await runTask(`e2e-iptables-${Date.now() % 100000}`, worker.name, 'iptables-save -t nat')
      const endpoints = log.split('\n').filter((l) => l.includes('"default/web:http"') && l.includes('DNAT'))
      return endpoints.length === 3 ? log : undefined
    })
    assert.match(rules, /-A KUBE-SERVICES -d 10\.\d+\.\d+\.\d+\/32 -p tcp -m comment --comment "default\/web:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-/)
    assert.match(rules, /-m statistic --mode random --probability 0\.333\d+ -j KUBE-SEP-/)
    // The endpoints are the kwok pods' IPs, from the real EndpointSlice controller.
    const pods = (await client.listPods('default', {labelSelector: 'app=web'})).items
    for (const pod of pods) assert.ok(rules.includes(`--to-destination ${pod.status!.podIP}:80`), `endpoint ${pod.status!.podIP}`)
    // The kernel applies those rules: the kubernetes Service's ClusterIP, DNATed by them,
    // reaches the real API server from inside the worker's namespace.
    const {log: livez} = await runTask('e2e-clusterip', worker.name, 'curl -sk --max-time 10 https://10.96.0.1:443/livez')
    assert.equal(livez.trim(), 'ok')
    // The worker's own kube-proxy pod shows that real kube-proxy's log.
    const proxyPod = (await client.listPods('kube-system', {labelSelector: 'k8s-app=kube-proxy', fieldSelector: `spec.nodeName=${worker.name}`})).items[0]
    const proxyLog = await client.readPodLog('kube-system', proxyPod.metadata!.name!, 'kube-proxy')
    assert.match(proxyLog, /Using iptables Proxier/)
  })

  it('never makes pods of an image tagged "-broken" Ready; others become Ready', async () => {
    const deployment = (name: string, image: string) => ({
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: {name, namespace: 'default'},
      spec: {replicas: 1, selector: {matchLabels: {app: name}}, template: {metadata: {labels: {app: name}}, spec: {containers: [{name, image}]}}},
    })
    await client.apply('apps/v1', 'deployments', deployment('healthy', 'registry.k8s.io/pause:3.10'))
    await client.apply('apps/v1', 'deployments', deployment('broken', 'registry.k8s.io/pause:3.10-broken'))
    const healthy = await eventually('the healthy pod to be Ready', 30_000, async () =>
      (await client.listPods('default', {labelSelector: 'app=healthy'})).items.find(isReady),
    )
    assert.equal(healthy.status?.phase, 'Running')
    const broken = await eventually('the broken pod to run', 30_000, async () =>
      (await client.listPods('default', {labelSelector: 'app=broken'})).items.find((p) => p.status?.phase === 'Running'),
    )
    await sleep(3000)
    const later = await client.getPod('default', broken.metadata!.name!)
    assert.equal(isReady(later), false)
    assert.equal(later.status?.containerStatuses?.[0].state?.waiting?.reason, 'CrashLoopBackOff')
  })

  it('tears down completely: no process, network namespace or directory left', async () => {
    const pids = cluster!.processIds()
    const namespaces = cluster!.nodes.map((n) => n.netns)
    assert.ok(
      namespaces.every((ns) => ns && netnsExists(ns)),
      'every node has its network namespace',
    )
    assert.ok(pids.length >= 8, `the cluster runs its processes (${pids.length})`)
    await cluster!.stop()
    for (const pid of pids) {
      assert.throws(() => process.kill(pid, 0), `process ${pid} is gone`)
    }

    assert.deepEqual(
      namespaces.filter((ns) => netnsExists(ns!)),
      [],
      'no network namespace left',
    )
    assert.equal(existsSync(cluster!.workDir), false)
    cluster = undefined
  })
})
