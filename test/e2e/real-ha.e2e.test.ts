import assert from 'node:assert/strict'

import {REAL_VERSION, type RealCluster, startRealCluster} from './cluster/real-cluster.js'
import {NO_OUTAGE_MS, startApiPoller} from './real/api-poller.js'
import {type Pod, clusterQueries, checkpointCopies, containerPid, describeReport, figureLog, listenerPids, ready, selfhost} from './real/cli.js'
import {eventually, orSkip} from './support.js'

/**
 * Three real control-plane nodes made by `kubeadm init` and `kubeadm join --control-plane`
 * (stacked etcd), behind haproxy as kubeadm's HA guide sets it up: the load balancer is the
 * cluster's controlPlaneEndpoint, so every client here (the poller, kubectl, the CLI, the
 * kubelets, kube-proxy) measures the cluster, not one node. Pivoted node by node, a leader
 * killed, then all three nodes lose power at once and must come back with no human action.
 */

const {note, print: printFigures} = figureLog('real HA figures')
const SELF_HOSTED_APISERVER = 'self-hosted-kube-apiserver'
const CHECKPOINT_OF = 'selfhost.kubectl.io/checkpoint-of'

describe(`real HA: three kubeadm ${REAL_VERSION} control-plane nodes behind haproxy`, function () {
  this.timeout(45 * 60_000)
  let cluster: RealCluster
  const {kubectlJson, systemPods, leftoverTasks} = clusterQueries(() => cluster)
  /** True when each node's one listener on :6443 is the container of its self-hosted apiserver pod. */
  const onlySelfHostedListens = async (pods: Pod[]) => {
    for (const node of cluster.nodes) {
      const pod = pods.find((p) => p.spec.nodeName === node.name && p.metadata.labels?.['k8s-app'] === SELF_HOSTED_APISERVER)
      if (!pod?.status.containerStatuses?.[0]?.containerID) return false
      const pid = await containerPid(node, pod)
      const listeners = await listenerPids(node, 6443)
      if (!pid || listeners.size !== 1 || !listeners.has(`kube-apiserver:${pid}`)) return false
    }

    return true
  }

  before(async function () {
    cluster = await orSkip(this, 'the real HA suite', () => startRealCluster({controlPlanes: 3}))

    assert.ok(cluster.loadBalancer, 'three control-plane nodes come with a load balancer')
    // Resident memory of every process of each node (its own PID namespace): kubelet, containerd, shims, containers.
    const rss = await Promise.all(
      cluster.nodes.map(
        async (node) =>
          Number((await node.exec(['sh', '-c', "cat /proc/[0-9]*/status 2>/dev/null | awk '/^VmRSS:/ {s += $2} END {print s}'"])).stdout.trim()) / 1024,
      ),
    )
    note(
      `real 3-node ${REAL_VERSION} cluster behind haproxy up in ${(cluster.startupMs / 1000).toFixed(1)}s (kubeadm init + 2 joins, stacked etcd); resident memory per node ${rss.map((m) => `${m.toFixed(0)} MiB`).join(', ')}`,
    )
  })

  after(async () => {
    printFigures()
    await cluster?.stop()
  })

  it('pivot of three nodes through the load balancer: the API keeps serving, each node runs its own self-hosted apiserver container', async () => {
    const poller = startApiPoller(cluster.kubeconfig)
    const result = await selfhost(cluster.kubeconfig, ['pivot'])
    const report = await poller.stop()
    assert.equal(result.exitCode, 0, result.stderr.split('\n').slice(-20).join('\n'))
    note(`pivot of 3 real nodes: ${result.seconds.toFixed(0)}s; API clients through haproxy saw ${describeReport(report)}`)
    // Through the balancer a restarting node is taken out after two failed checks a second apart:
    // what clients see is those seconds, never the node's whole restart.
    assert.ok(report.longestGapMs < NO_OUTAGE_MS, `through the load balancer the API stays (gap ${report.longestGapMs}ms)`)

    const pods = await systemPods()
    const apiservers = pods.filter((p) => p.metadata.labels?.['k8s-app'] === SELF_HOSTED_APISERVER)
    assert.deepEqual(apiservers.map((p) => p.spec.nodeName).sort(), ['cp-1', 'cp-2', 'cp-3'])
    for (const pod of apiservers) {
      assert.ok(ready(pod), `${pod.metadata.name} Ready`)
      assert.equal(pod.status.containerStatuses![0].restartCount, 0, `${pod.metadata.name} never restarted`)
    }

    assert.ok(await onlySelfHostedListens(pods), 'on each node the only listener on :6443 is its self-hosted apiserver container')
    assert.equal(
      pods.filter((p) => /^kube-(apiserver|controller-manager|scheduler)-cp-\d$/.test(p.metadata.name)).length,
      0,
      'no static control-plane mirror pods left',
    )
    const status = await selfhost(cluster.kubeconfig, ['status', '-o', 'json'])
    assert.equal(status.exitCode, 0, status.stderr)
    const model = JSON.parse(status.stdout) as {
      components: Array<{name: string; mode: string}>
      checkpoints: Array<{node: string; checkpointer: string; checkpoints: Array<{component: string; current: boolean}>}>
    }
    for (const c of ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler'])
      assert.equal(model.components.find((x) => x.name === c)?.mode, 'self-hosted', c)
    assert.deepEqual(
      model.checkpoints.map((c) => `${c.node} ${c.checkpointer} ${c.checkpoints.some((x) => x.component === 'kube-apiserver' && x.current)}`),
      ['cp-1 ready true', 'cp-2 ready true', 'cp-3 ready true'],
    )
    assert.deepEqual(await leftoverTasks(), [], 'no node-task pod left behind')
  })

  it('logs come from each real apiserver container, one stream per instance, and they differ', async () => {
    const logs = await selfhost(cluster.kubeconfig, ['logs', 'kube-apiserver', '--tail', '3'])
    assert.equal(logs.exitCode, 0, logs.stderr)
    const byNode = new Map<string, string[]>()
    for (const m of logs.stdout.matchAll(/^\[(cp-\d)\/self-hosted-kube-apiserver-\S+\] (.*)$/gm)) byNode.set(m[1], [...(byNode.get(m[1]) ?? []), m[2]])
    assert.deepEqual([...byNode.keys()].sort(), ['cp-1', 'cp-2', 'cp-3'], logs.stdout)
    const texts = [...byNode.values()].map((lines) => lines.join('\n'))
    assert.equal(new Set(texts).size, 3, `three different logs: ${logs.stdout}`)
  })

  it("the kube-scheduler leader's pod is deleted: a standby replica on another node takes the lease, and the Deployment replaces the pod", async () => {
    const lease = async () =>
      (await kubectlJson<{spec: {holderIdentity: string; acquireTime: string}}>(['get', 'lease', '-n', 'kube-system', 'kube-scheduler'])).spec
    const schedulers = async () => (await systemPods()).filter((p) => p.metadata.labels?.['k8s-app'] === 'self-hosted-kube-scheduler')
    const before = await lease()
    const leaderNode = before.holderIdentity.split('_')[0]
    const replicas = await schedulers()
    assert.equal(replicas.filter(ready).length, 3, `one Ready scheduler replica per node: ${replicas.map((p) => p.spec.nodeName)}`)
    const leaderPod = replicas.find((p) => p.spec.nodeName === leaderNode)
    assert.ok(leaderPod, `the leader ${before.holderIdentity} is one of the replicas`)
    // A deleted pod's scheduler stops gracefully and gives the lease up; its replacement needs
    // scheduling and a container start, so a running standby elsewhere is the one to take it.
    const deleted = Date.now()
    await cluster.kubectl(['delete', 'pod', '-n', 'kube-system', leaderPod.metadata.name, '--wait=false'])
    const after = await eventually(
      'a standby on another node to take the kube-scheduler lease',
      120_000,
      async () => {
        // A released lease has an empty holder first: wait for the one who takes it.
        const now = await lease()
        return now.holderIdentity && now.holderIdentity !== before.holderIdentity ? now : undefined
      },
      250,
    )
    const newLeaderNode = after.holderIdentity.split('_')[0]
    note(`kube-scheduler leader's pod on ${leaderNode} deleted: ${newLeaderNode} took the lease ${((Date.now() - deleted) / 1000).toFixed(1)}s later`)
    assert.notEqual(newLeaderNode, leaderNode, `a standby elsewhere leads, not the replacement on ${leaderNode}`)
    await eventually(
      'the Deployment to replace the deleted pod',
      180_000,
      async () => {
        const now = await schedulers()
        return now.length === 3 && now.every(ready) && !now.some((p) => p.metadata.uid === leaderPod.metadata.uid) ? true : undefined
      },
      1000,
    )
  })

  it('all three nodes lose power at once: the checkpoints bring the API back through the balancer, the self-hosted pods take over on every node', async () => {
    const powerCycled = Date.now()
    await Promise.all(cluster.nodes.map((node) => node.powerOff()))
    note(`all 3 nodes hard-stopped in ${((Date.now() - powerCycled) / 1000).toFixed(1)}s`)
    const poller = startApiPoller(cluster.kubeconfig)
    await Promise.all(cluster.nodes.map((node) => node.boot()))
    await eventually('the API back through the balancer with no human action', 300_000, async () => ((await poller.peek()).firstOkAt ? true : undefined), 500)
    const backAt = (await poller.peek()).firstOkAt!
    note(
      `after all 3 nodes lost power, the first successful API request through haproxy came ${((backAt - powerCycled) / 1000).toFixed(1)}s after the hard stop`,
    )
    let last = ''
    await eventually(
      'the self-hosted apiservers to take over on all three nodes and every copy to step aside',
      420_000,
      async () => {
        try {
          const pods = await systemPods()
          const copies = await Promise.all(cluster.nodes.map(checkpointCopies))
          const selfHosted = pods.filter((p) => p.metadata.labels?.['k8s-app'] === SELF_HOSTED_APISERVER && ready(p))
          const mirrors = pods.filter((p) => p.metadata.labels?.[CHECKPOINT_OF])
          last = `copies ${copies.join('/')}, self-hosted Ready on ${selfHosted.map((p) => p.spec.nodeName).join(',')}, checkpoint pods ${mirrors.map((p) => p.metadata.name).join(',')}`
          return copies.every((c) => c === 0) && selfHosted.length === 3 && mirrors.length === 0 && (await onlySelfHostedListens(pods)) ? true : undefined
        } catch {
          return undefined
        }
      },
      2000,
    ).catch(() => assert.fail(`take-over incomplete: ${last}`))
    const tookOver = Date.now()
    await new Promise((r) => setTimeout(r, 5000))
    const report = await poller.stop()
    const afterBack = report.events.filter((e) => e.at > backAt)
    note(
      `take-over on all 3 nodes complete ${((tookOver - powerCycled) / 1000).toFixed(0)}s after the hard stop; from the first success on, clients through haproxy saw ${afterBack.length} failed of ${report.requests} requests (${[...new Set(afterBack.map((e) => e.kind))].join(', ') || 'none'})`,
    )
    for (const node of cluster.nodes) {
      // This boot's checkpointer log: what it started and what stepped aside, in order.
      const log = (
        await node.exec([
          'sh',
          '-c',
          'grep -h "checkpointer: " /var/log/pods/kube-system_selfhost-checkpointer-*/checkpointer/*.log | cut -d" " -f4- | grep -E "started the|removed the" || true',
        ])
      ).stdout
      const events = log
        .trim()
        .split('\n')
        .map((line) => /(started|removed) the checkpoint of (\S+?):? /.exec(line))
        .filter((m) => m !== null)
        .map((m) => `${m[1]} ${m[2]}`)
      note(`${node.name} checkpointer after the power loss: ${events.join(', ')}`)
      assert.ok(events.includes('started kube-apiserver'), `${node.name}: ${log}`)
      assert.ok(events.includes('removed kube-apiserver'), `${node.name}: ${log}`)
    }

    const status = await selfhost(cluster.kubeconfig, ['status', '-o', 'json'])
    assert.equal(status.exitCode, 0, status.stderr)
    const model = JSON.parse(status.stdout) as {components: Array<{name: string; mode: string}>}
    for (const c of ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler'])
      assert.equal(model.components.find((x) => x.name === c)?.mode, 'self-hosted', c)
  })

  it('teardown leaves no process, mount, namespace, cgroup, veth or container behind (three nodes and haproxy)', async () => {
    assert.deepEqual(await cluster.stopAndListLeftovers(), [])
  })
})
