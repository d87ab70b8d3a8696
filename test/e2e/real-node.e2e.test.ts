import assert from 'node:assert/strict'

import {BROKEN_REGISTRY, HANGING_REGISTRY, PREVIOUS_REAL_VERSION, REAL_VERSION, type RealCluster, startRealCluster} from './cluster/real-cluster.js'
import {NO_OUTAGE_MS, RECOVERY_NO_OUTAGE_MS, longestGapWithin, startApiPoller} from './real/api-poller.js'
import {type Pod, clusterQueries, checkpointCopies, containerPid, describeReport, figureLog, listenerPids, ready, selfhost} from './real/cli.js'
import {eventually, orSkip} from './support.js'

/**
 * One real control-plane node made by `kubeadm init` v1.36.3 (kubeadm and kubelet of that
 * release): a real kubelet, containerd and runc, containers started from images built here, the
 * node in its own namespaces. Pivoted, then upgraded to v1.37.2 (whose images the node holds).
 * Everything here happens to real processes: the hand-off replaces a running kube-apiserver,
 * the upgrade replaces the binaries, the power cycle kills every process of the node. Figures
 * are printed for the README and the notes. Trace and the hand-offs that fail or go blind run
 * on a node of their own (real-node-handoff.e2e.test.ts).
 */

const {note, print: printFigures} = figureLog('real-node figures')

describe(`real node: kubeadm ${PREVIOUS_REAL_VERSION} control plane on a real kubelet, containerd and runc, upgraded to ${REAL_VERSION}`, function () {
  this.timeout(40 * 60_000)
  let cluster: RealCluster
  const {kubectlJson, systemPods, leftoverTasks} = clusterQueries(() => cluster)
  let backupStamp = ''
  const originals: Record<string, string> = {}

  before(async function () {
    cluster = await orSkip(this, 'the real-node suite', () =>
      startRealCluster({controlPlanes: 1, version: PREVIOUS_REAL_VERSION, upgradeTargets: [REAL_VERSION]}),
    )

    note(`real single-node ${PREVIOUS_REAL_VERSION} cluster up in ${(cluster.startupMs / 1000).toFixed(1)}s (kubeadm init, kube-proxy Ready)`)
    const node = cluster.nodes[0]
    for (const c of ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler']) originals[c] = await node.readFile(`/etc/kubernetes/manifests/${c}.yaml`)
  })

  after(async () => {
    printFigures()
    await cluster?.stop()
  })

  it('status sees the static control plane; logs come from the real containers', async () => {
    const status = await selfhost(cluster.kubeconfig, ['status', '-o', 'json'])
    assert.equal(status.exitCode, 0, status.stderr)
    const model = JSON.parse(status.stdout) as {components: Array<{name: string; mode: string; instances: unknown[]}>}
    for (const c of ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'etcd'])
      assert.equal(model.components.find((x) => x.name === c)?.mode, 'static', c)
    const logs = await selfhost(cluster.kubeconfig, ['logs', 'kube-apiserver', '--tail', '5'])
    assert.equal(logs.exitCode, 0, logs.stderr)
    assert.match(logs.stdout, /^\[cp-1\/kube-apiserver-cp-1\] /m)
  })

  it('pivot: the API keeps serving across the hand-off, and the new pods run the components for real', async () => {
    const poller = startApiPoller(cluster.kubeconfig)
    const marks: Record<string, number> = {}
    const result = await selfhost(cluster.kubeconfig, ['pivot'], {
      onLine: (line) => {
        if (/kube-apiserver\] cp-1: handing off/.test(line)) marks.handoff = Date.now()
        if (/kube-apiserver\] cp-1: self-hosted instance Ready/.test(line)) marks.handedOff = Date.now()
      },
    })
    const report = await poller.stop()
    assert.equal(result.exitCode, 0, result.stderr)
    note(`pivot on one real node: ${result.seconds.toFixed(0)}s; API clients saw ${describeReport(report)}`)
    const duringHandoff = report.events.filter((e) => e.at >= marks.handoff && e.at <= marks.handedOff)
    note(
      `apiserver hand-off itself (${((marks.handedOff - marks.handoff) / 1000).toFixed(0)}s): ${duringHandoff.length} failed requests (${[...new Set(duringHandoff.map((e) => e.kind))].join(', ') || 'none'}); the rest come from the one restart that adds --permit-port-sharing`,
    )
    assert.ok(duringHandoff.length <= 5, `the hand-off itself loses at most a handful of requests: ${JSON.stringify(duringHandoff)}`)

    const pods = await systemPods()
    const apiserver = pods.find((p) => p.metadata.labels?.['k8s-app'] === 'self-hosted-kube-apiserver')!
    assert.ok(apiserver && ready(apiserver))
    assert.equal(
      pods.filter((p) => p.metadata.name.endsWith('-cp-1') && /kube-(apiserver|controller-manager|scheduler)/.test(p.metadata.name)).length,
      0,
      'no mirror pods left',
    )
    const status = apiserver.status.containerStatuses![0]
    assert.equal(status.restartCount, 0)
    assert.match(status.containerID ?? '', /^containerd:\/\//)
    // The process that listens on :6443 on the node is the container of the DaemonSet's pod.
    const containerId = status.containerID!.replace('containerd://', '')
    const tasks = (await cluster.nodes[0].exec(['ctr', '-n', 'k8s.io', 'tasks', 'ls'])).stdout
    const taskPid = new RegExp(`^${containerId}\\s+(\\d+)\\s+RUNNING`, 'm').exec(tasks)?.[1]
    assert.ok(taskPid, `containerd runs the pod's container: ${tasks}`)
    assert.deepEqual([...(await listenerPids(cluster.nodes[0], 6443))], [`kube-apiserver:${taskPid}`], 'only the new instance listens on :6443')

    // The Leases are held by the new pods' processes: acquired after those pods started.
    for (const component of ['kube-controller-manager', 'kube-scheduler']) {
      const pod = pods.find((p) => p.metadata.labels?.['k8s-app'] === `self-hosted-${component}`)!
      await eventually(
        `the ${component} lease held by the new pod`,
        120_000,
        async () => {
          const lease = await kubectlJson<{spec: {holderIdentity: string; acquireTime: string}}>(['get', 'lease', '-n', 'kube-system', component])
          const startedAt = Date.parse(pod.status.containerStatuses![0].state!.running!.startedAt)
          return lease.spec.holderIdentity.startsWith('cp-1_') && Date.parse(lease.spec.acquireTime) >= startedAt - 1000 ? true : undefined
        },
        2000,
      )
    }

    const after = await selfhost(cluster.kubeconfig, ['status', '-o', 'json'])
    assert.equal(after.exitCode, 0, after.stderr)
    const model = JSON.parse(after.stdout) as {components: Array<{name: string; mode: string}>}
    for (const c of ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler'])
      assert.equal(model.components.find((x) => x.name === c)?.mode, 'self-hosted', c)
    backupStamp = /backup\/(\d{8}T\d{6}Z)\//.exec(result.stdout)?.[1] ?? ''
    assert.ok(backupStamp, result.stdout)
    assert.deepEqual(await leftoverTasks(), [], 'no node-task pod left behind')
  })

  for (const [component, short, port] of [
    ['kube-scheduler', 'scheduler', 10259],
    ['kube-controller-manager', 'controller-manager', 10257],
  ] as const) {
    it(`scale: a second ${component} on the one node shares the port as a real standby process; back to one, the leader keeps its lease`, async () => {
      const processes = async () => [...(await listenerPids(cluster.nodes[0], port))].filter((p) => p.startsWith(`${component.slice(0, 15)}:`)).length
      const holder = async () => (await kubectlJson<{spec: {holderIdentity: string}}>(['get', 'lease', '-n', 'kube-system', component])).spec.holderIdentity
      const leader = await holder()
      const up = await selfhost(cluster.kubeconfig, ['scale', short, '--replicas', '2'])
      assert.equal(up.exitCode, 0, up.stderr)
      assert.match(up.stdout, new RegExp(`^leader\\s+self-hosted-${component}-\\S+\\s+cp-1\\s+true\\s*$`, 'm'), up.stdout)
      assert.match(up.stdout, new RegExp(`^standby\\s+self-hosted-${component}-\\S+\\s+cp-1\\s+true\\s*$`, 'm'), up.stdout)
      // Ready could be the other process answering the probe on the shared port: count the processes.
      assert.equal(await processes(), 2, `two ${component} processes listen on :${port}`)
      assert.equal(await holder(), leader, 'the leader kept its lease while the standby joined')
      const down = await selfhost(cluster.kubeconfig, ['scale', short, '--replicas', '1'])
      assert.equal(down.exitCode, 0, down.stderr)
      assert.match(down.stdout, new RegExp(`^lease kube-system/${component} renewed by cp-1 `, 'm'), down.stdout)
      await eventually(`one ${component} process left`, 60_000, async () => ((await processes()) === 1 ? true : undefined), 1000)
      // Which replica goes is the ReplicaSet controller's choice (the more recently Ready one, by default).
      const kept = (await holder()) === leader ? 'the same process kept the lease' : 'the lease moved to the other process'
      note(`scale ${component} 1 -> 2 -> 1 on one real node: ${up.seconds.toFixed(1)}s up, ${down.seconds.toFixed(1)}s down; ${kept}`)
    })
  }

  it('kubectl rollout restart of the self-hosted apiserver keeps the API (surge with port sharing)', async () => {
    const poller = startApiPoller(cluster.kubeconfig)
    const before = (await systemPods()).find((p) => p.metadata.labels?.['k8s-app'] === 'self-hosted-kube-apiserver')!.metadata.name
    await cluster.kubectl(['rollout', 'restart', '-n', 'kube-system', 'daemonset/self-hosted-kube-apiserver'])
    await eventually(
      'a new apiserver pod Ready and the old one gone',
      300_000,
      async () => {
        try {
          const pods = (await systemPods()).filter((p) => p.metadata.labels?.['k8s-app'] === 'self-hosted-kube-apiserver')
          return pods.length === 1 && pods[0].metadata.name !== before && ready(pods[0]) ? true : undefined
        } catch {
          return undefined
        }
      },
      1000,
    )
    await new Promise((r) => setTimeout(r, 3000))
    const report = await poller.stop()
    note(`kubectl rollout restart of the apiserver DaemonSet on one node: ${describeReport(report)}`)
    assert.ok(report.longestGapMs < NO_OUTAGE_MS, `the API stays (gap ${report.longestGapMs}ms)`)
  })

  /** containerPid on the suite's one node. */
  const nodePid = (pod: Pod) => containerPid(cluster.nodes[0], pod)
  const servedVersion = async () => (JSON.parse(await cluster.kubectl(['get', '--raw', '/version'])) as {gitVersion: string}).gitVersion
  const selfHosted = async (component: string) => (await systemPods()).filter((p) => p.metadata.labels?.['k8s-app'] === `self-hosted-${component}`)

  it(`upgrade ${PREVIOUS_REAL_VERSION} -> ${REAL_VERSION}: a broken image is caught and rolled back; one that never serves is rolled back once the checkpoint brings the API back; then the real upgrade, through power losses before and after the apiserver's gate, replaces the running binaries`, async () => {
    const [apiserverBefore] = await selfHosted('kube-apiserver')
    assert.equal(await servedVersion(), PREVIOUS_REAL_VERSION)

    // An apiserver image whose binary exits 1: the new pod crash-loops beside the old one.
    let poller = startApiPoller(cluster.kubeconfig)
    const broken = await selfhost(cluster.kubeconfig, [
      'upgrade',
      '--version',
      REAL_VERSION,
      '--image-registry',
      BROKEN_REGISTRY,
      '--timeout',
      '4m',
      '-o',
      'json',
    ])
    let report = await poller.stop()
    note(
      `upgrade to a broken apiserver image on the real node: exit ${broken.exitCode} after ${broken.seconds.toFixed(0)}s; API clients saw ${describeReport(report)}`,
    )
    assert.equal(broken.exitCode, 3, broken.stderr.split('\n').slice(-15).join('\n'))
    const failed = JSON.parse(broken.stdout) as {result: {failure: string; components: Array<{component: string; result: string}>}}
    assert.match(
      failed.result.failure,
      /^kube-apiserver: DaemonSet kube-system\/self-hosted-kube-apiserver cannot roll out: pod self-hosted-kube-apiserver-\S+ on cp-1: its kube-apiserver container keeps crashing \(\d+ restarts, last exit code 1 Error\)/,
      failed.result.failure,
    )
    assert.deepEqual(
      failed.result.components.map((c) => c.result),
      ['rolled-back', 'not-started', 'not-started', 'not-started'],
    )
    assert.equal(await servedVersion(), PREVIOUS_REAL_VERSION, 'the API is back at the original version')
    const [apiserverAfterRollback] = await selfHosted('kube-apiserver')
    assert.equal(
      apiserverAfterRollback.status.containerStatuses![0].containerID,
      apiserverBefore.status.containerStatuses![0].containerID,
      'the old apiserver served throughout: the same container',
    )
    assert.ok(report.longestGapMs < NO_OUTAGE_MS, `the API stays (gap ${report.longestGapMs}ms)`)
    // A rolled-back upgrade leaves the last good checkpoint: the node's file still holds the old version.
    const checkpointVersion = async () =>
      /^# version (\S+) /m.exec(await cluster.nodes[0].readFile('/etc/kubernetes/selfhost/checkpoint/kube-apiserver.yaml'))?.[1]
    assert.equal(await checkpointVersion(), PREVIOUS_REAL_VERSION, 'the checkpoint stays at the version that passed its gates')

    // An apiserver image whose binary runs and never listens: its pod looks Ready (the old process
    // answers the probes on the shared port), the DaemonSet removes the old pod, and the API is
    // gone until the node's checkpoint (still the pre-upgrade version) serves again.
    poller = startApiPoller(cluster.kubeconfig)
    const hanging = await selfhost(cluster.kubeconfig, [
      'upgrade',
      '--version',
      REAL_VERSION,
      '--image-registry',
      HANGING_REGISTRY,
      '--timeout',
      '2m',
      '-o',
      'json',
    ])
    report = await poller.stop()
    note(
      `upgrade to an apiserver image that never listens on the real node: exit ${hanging.exitCode} after ${hanging.seconds.toFixed(0)}s; API clients saw ${describeReport(report)}`,
    )
    assert.equal(hanging.exitCode, 3, hanging.stderr.split('\n').slice(-15).join('\n'))
    assert.match(hanging.stderr, /the API does not answer/, 'the API really went away')
    assert.match(
      (JSON.parse(hanging.stdout) as {result: {failure: string}}).result.failure,
      // Served by the checkpoint copy of v1.36.3: either gate sees it first.
      /^kube-apiserver: timed out after 120s waiting for (\/version to report v1\.37\.2 \(\/version v1\.36\.3\)|the checkpoint copies of kube-apiserver to step aside \(the checkpoint copy of kube-apiserver still runs on cp-1\))/,
    )
    assert.equal(await servedVersion(), PREVIOUS_REAL_VERSION, 'back at the original version')
    assert.equal(await checkpointVersion(), PREVIOUS_REAL_VERSION, 'the checkpoint that brought the API back is still the last good one')
    await eventually(
      'the checkpoint copy to step aside for the rolled-back pod',
      180_000,
      async () => {
        const copies = await checkpointCopies(cluster.nodes[0])
        const all = await systemPods().catch(() => [])
        const pods = all.filter((p) => p.metadata.labels?.['k8s-app'] === 'self-hosted-kube-apiserver')
        const mirrors = all.filter((p) => p.metadata.labels?.['selfhost.kubectl.io/checkpoint-of'])
        return copies === 0 && mirrors.length === 0 && pods.length === 1 && ready(pods[0]) ? true : undefined
      },
      2000,
    )

    // The real upgrade, through two power losses of the node: one right after the apiserver's
    // DaemonSet took the new image (its gate not passed, the checkpoint holds the old version),
    // one once its gate passed and its checkpoint was rewritten (the controller-manager next).
    const node = cluster.nodes[0]
    // `deadAt` is when every process of the node is dead: answers before that came from before the loss.
    const cycles: Array<{when: string; triggeredAt: number; deadAt: number; expected: string; done: Promise<void>}> = []
    const powerLoss = (when: string, expected: string) => {
      const cycle = {when, expected, triggeredAt: Date.now(), deadAt: Infinity, done: Promise.resolve()}
      cycle.done = (async () => {
        await node.powerOff()
        cycle.deadAt = Date.now()
        await node.boot()
      })()
      cycles.push(cycle)
    }
    poller = startApiPoller(cluster.kubeconfig)
    const upgraded = await selfhost(cluster.kubeconfig, ['upgrade', '--version', REAL_VERSION], {
      onLine: (line) => {
        if (cycles.length === 0 && line.includes('patched DaemonSet kube-system/self-hosted-kube-apiserver:'))
          powerLoss('before its gate', PREVIOUS_REAL_VERSION)
        else if (cycles.length === 1 && line.includes('checkpoints refreshed on cp-1')) powerLoss('after its gate and checkpoint', REAL_VERSION)
      },
    })
    await Promise.all(cycles.map((c) => c.done))
    note(
      `upgrade ${PREVIOUS_REAL_VERSION} -> ${REAL_VERSION} on the real node, with ${cycles.length} power losses on the way: exit ${upgraded.exitCode} after ${upgraded.seconds.toFixed(0)}s (${upgraded.stderr.trim().split('\n').pop()})`,
    )
    assert.equal(cycles.length, 2, `both power losses happened: ${upgraded.stderr.split('\n').slice(-20).join('\n')}`)
    // The run waits for the API the second power loss took between two components, instead of
    // giving up with "nothing was changed"; however it ends, a re-run once the API is back completes.
    assert.doesNotMatch(upgraded.stderr, /cannot reach the API server[^\n]*nothing was changed/, 'the run waited for the API between components')
    await eventually(
      'the API back after the second power loss',
      300_000,
      async () => ((await poller.peek()).versions.some((v) => v.at > cycles[1].deadAt) ? true : undefined),
      1000,
    )
    // Until the apiserver's post-start hooks ran and the leaders renewed, the re-run refuses ("unhealthy
    // before any change ... fix it first", or a 403 on /version: "still starting"); an operator tries
    // again a little later.
    let rerun = await selfhost(cluster.kubeconfig, ['upgrade', '--version', REAL_VERSION])
    await eventually(
      'a re-run that the healthy-before check lets through',
      300_000,
      async () => {
        if (!/refused by healthy-before|most likely still starting/.test(rerun.stderr)) return true
        rerun = await selfhost(cluster.kubeconfig, ['upgrade', '--version', REAL_VERSION])
        return undefined
      },
      5000,
    )
    report = await poller.stop()
    note(`upgrade re-run: exit ${rerun.exitCode} after ${rerun.seconds.toFixed(0)}s; over both runs API clients saw ${describeReport(report)}`)
    assert.equal(rerun.exitCode, 0, rerun.stderr.split('\n').slice(-20).join('\n'))
    const output = upgraded.stdout + upgraded.stderr + rerun.stdout + rerun.stderr
    assert.doesNotMatch(output, /no leader record|MaxListeners|Warning/)
    assert.match(output, /gate: leader cp-1 \(self-hosted-kube-scheduler-\S+, registry\.k8s\.io\/kube-scheduler:v1\.37\.2\), renewed/)
    assert.equal(report.events.filter((e) => e.at < cycles[0].triggeredAt).length, 0, 'no failure before the first power loss')
    for (const [i, cycle] of cycles.entries()) {
      // The API comes back on its own, first served by the node's checkpoint: the version it holds.
      const first = report.versions.find((v) => v.at > cycle.deadAt)
      assert.ok(first, `the API came back after the power loss ${cycle.when}`)
      const until = cycles[i + 1]?.triggeredAt ?? Infinity
      const gapAfter = longestGapWithin(report, first.at, until)
      note(
        `power loss ${cycle.when} (apiserver): the API served ${first.version} ${((first.at - cycle.deadAt) / 1000).toFixed(1)}s after the hard stop; from then on the longest gap was ${(gapAfter / 1000).toFixed(1)}s`,
      )
      assert.equal(first.version, cycle.expected, `the node came back at the version its checkpoint holds (${cycle.when})`)
      assert.ok(gapAfter < RECOVERY_NO_OUTAGE_MS, `no outage once the checkpoint served (${cycle.when}): ${gapAfter}ms`)
    }

    assert.equal(await servedVersion(), REAL_VERSION)

    // Each component's pod runs the new image, and the process in its container is the new binary.
    for (const component of ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler']) {
      const pods = await selfHosted(component)
      assert.equal(pods.length, 1, component)
      assert.match((pods[0].spec as {containers?: Array<{image: string}>}).containers![0].image, new RegExp(`:${REAL_VERSION}$`))
      const pid = await nodePid(pods[0])
      assert.ok(pid, `${component}'s container runs`)
      const reported = (await cluster.nodes[0].exec([`/proc/${pid}/exe`, '--version'])).stdout.trim()
      assert.equal(reported, `Kubernetes ${REAL_VERSION}`, `${component}'s running binary`)
    }

    // The copy the second power loss started steps aside once the self-hosted apiserver has listened
    // beside it for 90 s; then the one listener is the upgraded pod's container.
    const apiserverPid = await nodePid((await selfHosted('kube-apiserver'))[0])
    let listening: string[] = []
    await eventually(
      'the checkpoint copy to step aside, leaving the upgraded apiserver the one listener on :6443',
      240_000,
      async () => {
        listening = [...(await listenerPids(cluster.nodes[0], 6443))]
        const copies = await checkpointCopies(cluster.nodes[0])
        return copies === 0 && listening.join() === `kube-apiserver:${apiserverPid}` ? true : undefined
      },
      2000,
    ).catch(() => assert.fail(`listening on :6443: ${listening.join(', ')}; the upgraded apiserver is pid ${apiserverPid}`))
    const proxy = (await systemPods()).find((p) => p.metadata.labels?.['k8s-app'] === 'kube-proxy')!
    assert.match((proxy.spec as {containers?: Array<{image: string}>}).containers![0].image, new RegExp(`kube-proxy:${REAL_VERSION}$`))
    await eventually(
      'the kube-proxy pod Ready on the new image',
      60_000,
      async () => ((await systemPods()).some((p) => p.metadata.labels?.['k8s-app'] === 'kube-proxy' && ready(p)) ? true : undefined),
      1000,
    )
  })

  it('power loss of the self-hosted node: the checkpoint brings the API back with no human action, the self-hosted pods take over, the copy steps aside; revert leaves no checkpoint', async () => {
    const node = cluster.nodes[0]
    const statusBefore = await selfhost(cluster.kubeconfig, ['status', '-o', 'json'])
    const before = JSON.parse(statusBefore.stdout) as {
      checkpoints: Array<{node: string; checkpointer: string; gap?: string; checkpoints: Array<{component: string; version: string; current: boolean}>}>
      components: Array<{name: string; warnings: string[]}>
    }
    assert.equal(before.checkpoints.length, 1, statusBefore.stdout)
    assert.equal(before.checkpoints[0].checkpointer, 'ready', JSON.stringify(before.checkpoints))
    assert.equal(before.checkpoints[0].gap, undefined, JSON.stringify(before.checkpoints))
    assert.deepEqual(
      before.checkpoints[0].checkpoints.map((c) => `${c.component} ${c.version} ${c.current}`),
      ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler'].map((c) => `${c} v1.37.2 true`),
    )
    assert.doesNotMatch(
      before.components.flatMap((c) => c.warnings).join('\n'),
      /no checkpointing|recover on one node/,
      'no manual recovery where checkpoints exist',
    )

    // The test's premise: the self-hosted pods serve and no copy runs (a copy whose manifest is
    // still there at the power loss is started by the kubelet itself, not by the checkpointer).
    await eventually(
      'no checkpoint copy on the node before the power loss',
      240_000,
      async () => ((await checkpointCopies(node)) === 0 ? true : undefined),
      2000,
    )
    const powerCycled = Date.now()
    await node.powerCycle()
    // Started once every process of the node is dead (the boot has begun): any success is the recovery's.
    const poller = startApiPoller(cluster.kubeconfig)
    note(`power-cycle of the node (kill -9 of everything, boot): containerd answered ${((Date.now() - powerCycled) / 1000).toFixed(1)}s after the hard stop`)
    const apiserverPods = async () =>
      (await systemPods()).filter(
        (p) => p.metadata.labels?.['k8s-app'] === 'self-hosted-kube-apiserver' || p.metadata.labels?.['selfhost.kubectl.io/checkpoint-of'],
      )
    await eventually('the API back with no human action', 300_000, async () => ((await poller.peek()).firstOkAt ? true : undefined), 500)
    const backAt = (await poller.peek()).firstOkAt!
    note(
      `after the power cycle, the first successful API request came ${((backAt - powerCycled) / 1000).toFixed(1)}s after the hard stop, served by the checkpoint`,
    )
    // The take-over: the DaemonSet's pod Ready, every checkpoint copy gone from the node and the API.
    await eventually(
      'the self-hosted pods to take over and the copies to step aside',
      300_000,
      async () => {
        try {
          const pods = await apiserverPods()
          const copies = await checkpointCopies(node)
          return copies === 0 && pods.length === 1 && pods[0].metadata.labels?.['k8s-app'] && ready(pods[0]) ? true : undefined
        } catch {
          return undefined
        }
      },
      1000,
    )
    const tookOver = Date.now()
    await new Promise((r) => setTimeout(r, 5000))
    const report = await poller.stop()
    const afterBack = report.events.filter((e) => e.at > backAt)
    note(
      `take-over by the self-hosted pods complete ${((tookOver - powerCycled) / 1000).toFixed(0)}s after the hard stop; from the first success on, API clients saw ${afterBack.length} failed requests of ${report.requests} (${[...new Set(afterBack.map((e) => e.kind))].join(', ') || 'none'})`,
    )
    // The checkpointer's own account, with the kubelet's timestamps (the log of this boot's container).
    const log = (
      await node.exec([
        'sh',
        '-c',
        'grep -h "checkpointer: " /var/log/pods/kube-system_selfhost-checkpointer-*/checkpointer/*.log | cut -d" " -f1,4- | tail -8',
      ])
    ).stdout
    for (const line of log.trim().split('\n')) note(`checkpointer log: ${line}`)
    assert.match(log, /started the checkpoint of kube-apiserver/, log)
    assert.match(log, /removed the checkpoint of kube-apiserver: the self-hosted kube-apiserver has listened beside it/, log)
    // The one listener on :6443 is the DaemonSet pod's container again.
    const apiserver = (await apiserverPods())[0]
    const taskPid = await containerPid(node, apiserver)
    await eventually(
      'only the self-hosted apiserver listening on :6443',
      60_000,
      async () => {
        const listeners = [...(await listenerPids(node, 6443))]
        return taskPid && listeners.length === 1 && listeners[0] === `kube-apiserver:${taskPid}` ? true : undefined
      },
      1000,
    )

    // A crashed checkpointer: the kubelet restarts it, and it comes back Ready with nothing to do.
    const checkpointerPid = (
      await node.exec(['sh', '-c', 'for p in $(pgrep -x sh); do grep -qa APISERVER_PORT= /proc/$p/environ 2>/dev/null && echo $p; done; true'])
    ).stdout
      .trim()
      .split('\n')[0]
    assert.ok(checkpointerPid, 'the checkpointer process runs on the node')
    // What it costs, watching: CPU of the loop and the tools it runs (children waited for), and its memory.
    const cpuTicks = async () => {
      const fields = (await node.readFile(`/proc/${checkpointerPid}/stat`)).split(') ')[1].split(' ')
      return [11, 12, 13, 14].reduce((sum, i) => sum + Number(fields[i]), 0)
    }
    const ticksBefore = await cpuTicks()
    await new Promise((r) => setTimeout(r, 20_000))
    const cpuShare = (await cpuTicks()) - ticksBefore
    const rss = /VmRSS:\s+(\d+) kB/.exec(await node.readFile(`/proc/${checkpointerPid}/status`))?.[1]
    note(`the checkpointer watching: ${cpuShare} CPU ticks (1/100 s) in 20 s, ${(cpuShare / 20).toFixed(1)}% of a CPU; its shell's RSS ${rss} kB`)
    await node.exec(['kill', '-9', checkpointerPid])
    await eventually(
      'the kubelet to restart the checkpointer',
      120_000,
      async () => {
        const pod = (await systemPods()).find((p) => p.metadata.labels?.['selfhost.kubectl.io/role'] === 'checkpointer')
        return pod && ready(pod) && (pod.status.containerStatuses?.[0]?.restartCount ?? 0) >= 1 ? true : undefined
      },
      2000,
    )
    // A restarted container is NotReady until its first readiness probe: status follows the pod.
    let statusAfter = before
    await eventually(
      'status to show the node covered again',
      60_000,
      async () => {
        try {
          statusAfter = JSON.parse((await selfhost(cluster.kubeconfig, ['status', '-o', 'json'])).stdout) as typeof before
        } catch {
          return undefined
        }

        return statusAfter.checkpoints[0]?.gap === undefined ? true : undefined
      },
      2000,
    ).catch(() => assert.fail(`status after the checkpointer's restart: ${JSON.stringify(statusAfter.checkpoints)}`))

    const revertPoller = startApiPoller(cluster.kubeconfig)
    const revert = await selfhost(cluster.kubeconfig, ['revert'])
    const revertReport = await revertPoller.stop()
    assert.equal(revert.exitCode, 0, revert.stderr)
    note(
      `revert on the real node after all that: ${revert.seconds.toFixed(0)}s; API clients saw ${describeReport(revertReport)} (one node: the static apiserver restarts once to drop --permit-port-sharing)`,
    )
    // The version the upgrade put in place stays: only the image line differs from kubeadm's manifest.
    for (const c of Object.keys(originals)) {
      const restored = await node.readFile(`/etc/kubernetes/manifests/${c}.yaml`)
      assert.equal(
        restored,
        originals[c].replace(`/${c}:${PREVIOUS_REAL_VERSION}\n`, `/${c}:${REAL_VERSION}\n`),
        `${c}: kubeadm's manifest with the upgraded image`,
      )
      assert.notEqual(restored, originals[c])
      originals[c] = restored
    }

    assert.match(revert.stdout, /kube-apiserver: static manifest restored \(image kept at v1\.37\.2, the backup had v1\.36\.3\) on cp-1/)
    assert.equal(await servedVersion(), REAL_VERSION)
    const left = (
      await node.exec([
        'sh',
        '-c',
        'ls /etc/kubernetes/manifests /etc/kubernetes/selfhost; test -e /etc/kubernetes/selfhost/checkpoint && echo CHECKPOINTS-LEFT; true',
      ])
    ).stdout
    assert.doesNotMatch(left, /selfhost-checkpoint|CHECKPOINTS-LEFT/, left)
    const pods = await systemPods()
    assert.equal(pods.filter((p) => p.metadata.labels?.['k8s-app']?.startsWith('self-hosted-') || p.metadata.labels?.['selfhost.kubectl.io/role']).length, 0)
    assert.deepEqual(await leftoverTasks(), [])
  })
})
