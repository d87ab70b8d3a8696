import assert from 'node:assert/strict'

import {REAL_VERSION, type RealCluster, startRealCluster, BUSYBOX_IMAGE} from './cluster/real-cluster.js'
import {startApiPoller} from './real/api-poller.js'
import {type Pod, clusterQueries, containerPid, describeReport, figureLog, listenerPids, ready, selfhost} from './real/cli.js'
import {eventually, orSkip} from './support.js'
import {generateServices, iptablesSaveOf} from '../helpers/kube-proxy-dump.js'

/** A node label no node has: a DaemonSet selecting it runs nowhere. */
const NOWHERE = 'kubectl-selfhost.test/nowhere'

/**
 * One real control-plane node made by `kubeadm init` v1.37.2, as in real-node.e2e.test.ts, for
 * what needs a fresh static control plane rather than the pivot -> upgrade -> power loss ->
 * revert story told there: trace through the real kube-proxy (and on a big node), a hand-off
 * whose new apiserver never serves, and the blind hand-off of clusters before 1.19. A file of
 * its own, with a cluster of its own, so the two run side by side (npm test runs files in
 * parallel).
 */

const {note, print: printFigures} = figureLog('real-node trace and hand-off figures')

describe(`real node: kubeadm ${REAL_VERSION} control plane on a real kubelet, containerd and runc: trace, failed and blind hand-offs`, function () {
  this.timeout(30 * 60_000)
  let cluster: RealCluster
  const {kubectlJson, systemPods, leftoverTasks} = clusterQueries(() => cluster)
  const originals: Record<string, string> = {}

  before(async function () {
    cluster = await orSkip(this, 'the real-node trace and hand-off suite', () => startRealCluster({controlPlanes: 1, version: REAL_VERSION}))
    note(`real single-node ${REAL_VERSION} cluster up in ${(cluster.startupMs / 1000).toFixed(1)}s (kubeadm init, kube-proxy Ready)`)
    const node = cluster.nodes[0]
    for (const c of ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler']) originals[c] = await node.readFile(`/etc/kubernetes/manifests/${c}.yaml`)
  })

  after(async () => {
    printFigures()
    await cluster?.stop()
  })

  const nodePid = (pod: Pod) => containerPid(cluster.nodes[0], pod)

  it('trace follows the real kube-proxy rules on the node, and real connections land as it says', async () => {
    // Three web pods on the bridge network, a Service in front of them.
    await cluster.kubectl(
      ['apply', '-f', '-'],
      JSON.stringify({
        apiVersion: 'apps/v1',
        kind: 'Deployment',
        metadata: {name: 'web', namespace: 'default'},
        spec: {
          replicas: 3,
          selector: {matchLabels: {app: 'web'}},
          template: {
            metadata: {labels: {app: 'web'}},
            spec: {
              tolerations: [{operator: 'Exists'}],
              containers: [
                {
                  name: 'web',
                  image: BUSYBOX_IMAGE,
                  imagePullPolicy: 'Never',
                  command: ['sh', '-c', 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www'],
                  readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1},
                },
              ],
            },
          },
        },
      }),
    )
    await cluster.kubectl(
      ['apply', '-f', '-'],
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Service',
        metadata: {name: 'web', namespace: 'default'},
        spec: {selector: {app: 'web'}, ports: [{name: 'http', port: 80, targetPort: 8080}]},
      }),
    )
    await eventually(
      '3 Ready web pods',
      120_000,
      async () => {
        const pods = (await kubectlJson<{items: Pod[]}>(['get', 'pods', '-n', 'default', '-l', 'app=web'])).items
        return pods.filter(ready).length === 3 ? true : undefined
      },
      1000,
    )
    // Cluster DNS is kubeadm's CoreDNS addon (built from its Go module): a pod resolves the Service's name.
    const clusterIp = (await kubectlJson<{spec: {clusterIP: string}}>(['get', 'svc', '-n', 'default', 'web'])).spec.clusterIP
    // busybox's nslookup asks for AAAA too and may exit 1 on its empty answer: the A record decides.
    const lookup = await cluster.kubectl(['exec', '-n', 'default', 'deploy/web', '--', 'sh', '-c', 'nslookup web.default.svc.cluster.local 2>&1; true'])
    assert.match(lookup, new RegExp(`Address:\\s*${clusterIp.replaceAll('.', '\\.')}\\b`), lookup)
    const started = Date.now()
    const traced = await selfhost(cluster.kubeconfig, ['trace', 'svc/web', '-n', 'default', '-o', 'json'])
    note(`trace svc/web through a node task with the kube-proxy image: ${((Date.now() - started) / 1000).toFixed(1)}s`)
    assert.ok([0, 2].includes(traced.exitCode ?? -1), traced.stderr)
    const endpointIps = (await kubectlJson<{items: Pod[]}>(['get', 'pods', '-n', 'default', '-l', 'app=web'])).items.map(
      (p) => (p.status as {podIP?: string}).podIP!,
    )
    for (const ip of endpointIps) assert.ok(traced.stdout.includes(`${ip}:8080`), `trace names endpoint ${ip}:8080`)
    // The kernel decides: 300 connections from the node to the ClusterIP.
    const {stdout} = await cluster.nodes[0].exec(['sh', '-c', `for i in $(seq 300); do curl -s -m 2 http://${clusterIp}/ || echo failed; done`])
    const counts = new Map<string, number>()
    for (const line of stdout.split('\n').filter(Boolean)) counts.set(line, (counts.get(line) ?? 0) + 1)
    note(`300 connections from the node to svc/web landed ${[...counts.values()].join('/')} on its 3 pods`)
    assert.equal(counts.get('failed'), undefined, stdout.slice(0, 300))
    assert.equal(counts.size, 3)
    for (const n of counts.values()) assert.ok(n > 60 && n < 140, `each endpoint gets about a third: ${[...counts.values()]}`)
    assert.deepEqual(await leftoverTasks(), [])
  })

  it('trace on a big node: 10,000 Services x 10 endpoints in the nat table; the node task reads only what svc/web reaches', async () => {
    const node = cluster.nodes[0]
    const kubeProxyPods = async () => (await systemPods()).filter((p) => p.metadata.labels?.['k8s-app'] === 'kube-proxy')
    const backend = /KUBE-SERVICES/.test((await node.exec(['sh', '-c', 'iptables-legacy-save -t nat 2>/dev/null || true'])).stdout) ? 'legacy' : 'nft'
    const kubeServicesLines = async () => Number((await node.exec(['sh', '-c', `iptables-${backend} -t nat -S KUBE-SERVICES | wc -l`])).stdout.trim())
    // kube-proxy would rewrite KUBE-SERVICES at its next sync: it stops while the big table is read.
    const patchKubeProxy = (...args: string[]) => cluster.kubectl(['-n', 'kube-system', 'patch', 'ds', 'kube-proxy', ...args])
    await patchKubeProxy('-p', JSON.stringify({spec: {template: {spec: {nodeSelector: {[NOWHERE]: 'true'}}}}}))
    let original: string | undefined
    try {
      await eventually('kube-proxy to stop', 120_000, async () => ((await kubeProxyPods()).length === 0 ? true : undefined), 1000)
      // The node's nat table as kube-proxy and the CNI left it, with the generated Services' chains
      // added and their jumps before kube-proxy's last KUBE-SERVICES rule (the NodePorts jump),
      // replaces the table in one restore (appending with --noflush took minutes with nft).
      original = (await node.exec([`iptables-${backend}-save`, '-t', 'nat'])).stdout
      const generated = iptablesSaveOf(generateServices(10_000, 10))
        .split('\n')
        .map((l) => l.replace(' -d 10.96.', ' -d 10.250.'))
      const chains = generated.filter((l) => /^:KUBE-(SVC|SEP)-/.test(l))
      const rules = generated.filter((l) => /^-A KUBE-(SVC|SEP)-/.test(l))
      const jumps = generated.filter((l) => /^-A KUBE-SERVICES /.test(l) && !/nodeports/.test(l))
      const lines = original.split('\n')
      const nodePortsJump = lines.findIndex((l) => /^-A KUBE-SERVICES .*-j KUBE-NODEPORTS/.test(l))
      assert.ok(nodePortsJump > 0, `kube-proxy's KUBE-SERVICES ends with its NodePorts jump: ${original}`)
      const firstRule = lines.findIndex((l) => l.startsWith('-A '))
      const big = [...lines.slice(0, firstRule), ...chains, ...lines.slice(firstRule, nodePortsJump), ...jumps, ...lines.slice(nodePortsJump), ...rules]
      // COMMIT must stay last.
      const commit = big.indexOf('COMMIT')
      big.splice(commit, 1)
      const loadStarted = Date.now()
      await node.exec([`iptables-${backend}-restore`, '-T', 'nat'], [...big.filter(Boolean), 'COMMIT', ''].join('\n'))
      note(
        `big node: ${chains.length + rules.length + jumps.length} nat lines added (10,000 Services x 10 endpoints, iptables ${backend}), restored in ${((Date.now() - loadStarted) / 1000).toFixed(1)}s`,
      )
      const services = await kubeServicesLines()
      assert.ok(services > 10_000, `KUBE-SERVICES holds the 10,000 Services: ${services} lines`)

      const started = Date.now()
      const traced = await selfhost(cluster.kubeconfig, ['trace', 'svc/web', '-n', 'default', '-o', 'json'])
      const seconds = (Date.now() - started) / 1000
      note(`live trace of svc/web on the big real node, end to end (CLI start, node task pod, read, trace): ${seconds.toFixed(1)}s (goal 5 s)`)
      assert.ok([0, 2].includes(traced.exitCode ?? -1), traced.stderr)
      const endpointIps = (await kubectlJson<{items: Pod[]}>(['get', 'pods', '-n', 'default', '-l', 'app=web'])).items.map((p) => p.status.podIP!)
      for (const ip of endpointIps) assert.ok(traced.stdout.includes(`${ip}:8080`), `trace names endpoint ${ip}:8080`)
      assert.ok(!traced.stdout.includes('svc-9999'), 'only the traced Service travels from the node')
      // The whole-table path took 77 s here (and crashed libnftnl without an unlimited stack).
      assert.ok(seconds < 20, `the node reads only what the Service reaches: ${seconds}s`)
      assert.deepEqual(await leftoverTasks(), [])
    } finally {
      if (original) await node.exec([`iptables-${backend}-restore`, '-T', 'nat'], original)
      await patchKubeProxy('--type', 'json', '-p', JSON.stringify([{op: 'remove', path: `/spec/template/spec/nodeSelector/${NOWHERE.replace('/', '~1')}`}]))
    }

    assert.ok((await kubeServicesLines()) < 100, 'the node is back to its own nat table')
    await eventually('kube-proxy back', 120_000, async () => ((await kubeProxyPods()).some(ready) ? true : undefined), 1000)
  })

  it('a hand-off whose new apiserver never serves: the node-side watchdog puts the static one back, pivot reverts and exits 3', async () => {
    const node = cluster.nodes[0]
    // Fault injection on the node: once the hand-off has begun, kill the self-hosted apiserver's
    // process whenever it runs (a candidate that starts but never serves).
    let injecting = false
    let stopKiller = false
    let kills = 0
    // The DaemonSet's apiserver is the one whose environment has HOST_IP (the static one has none).
    const killScript = 'for p in $(pgrep -x kube-apiserver); do if grep -qa HOST_IP= /proc/$p/environ; then kill -9 $p && echo killed; fi; done; true'
    const killer = (async () => {
      while (!stopKiller) {
        if (injecting) kills += ((await node.exec(['sh', '-c', killScript]).catch(() => ({stdout: ''}))).stdout.match(/killed/g) ?? []).length
        await new Promise((r) => setTimeout(r, 300))
      }
    })()
    const result = await selfhost(cluster.kubeconfig, ['pivot', '--handoff-deadline', '60s'], {
      onLine: (line) => {
        if (/kube-apiserver\] cp-1: handing off/.test(line)) injecting = true
      },
    })
    stopKiller = true
    await killer
    note(`failed hand-off on a real node (the new apiserver killed ${kills} times): pivot exit ${result.exitCode} after ${result.seconds.toFixed(0)}s`)
    assert.equal(result.exitCode, 3, result.stderr.split('\n').slice(-15).join('\n'))
    assert.ok(kills > 0, 'the fault was injected')
    for (const c of Object.keys(originals)) assert.equal(await node.readFile(`/etc/kubernetes/manifests/${c}.yaml`), originals[c], `${c} byte for byte`)
    await eventually(
      'the static control plane Ready',
      120_000,
      async () => {
        const pods = await systemPods()
        return ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler'].every((c) => pods.some((p) => p.metadata.name === `${c}-cp-1` && ready(p)))
          ? true
          : undefined
      },
      2000,
    )
    assert.deepEqual(await leftoverTasks(), [])
  })

  it('a forced blind hand-off (as on clusters before 1.19): the CLI waits through the API going away and finishes the pivot', async () => {
    const planned = await selfhost(cluster.kubeconfig, ['pivot', '--force-blind-handoff', '--dry-run'])
    assert.equal(planned.exitCode, 0, planned.stderr)
    assert.equal(planned.stdout.match(/\(hand-off: blind;/g)?.length, 3, planned.stdout)
    // No port sharing anywhere: the static apiserver keeps the port to itself until it stops.
    assert.doesNotMatch(planned.stdout, /permit-port-sharing/)
    const poller = startApiPoller(cluster.kubeconfig)
    const result = await selfhost(cluster.kubeconfig, ['pivot', '--force-blind-handoff'])
    const report = await poller.stop()
    note(`forced blind pivot on the real node: exit ${result.exitCode} after ${result.seconds.toFixed(0)}s; API clients saw ${describeReport(report)}`)
    assert.equal(result.exitCode, 0, result.stderr.split('\n').slice(-20).join('\n'))
    const pods = await systemPods()
    const apiserver = pods.find((p) => p.metadata.labels?.['k8s-app'] === 'self-hosted-kube-apiserver')
    assert.ok(apiserver && ready(apiserver), 'the self-hosted apiserver serves')
    const pid = await nodePid(apiserver)
    assert.deepEqual([...(await listenerPids(cluster.nodes[0], 6443))], [`kube-apiserver:${pid}`], 'only the self-hosted apiserver listens on :6443')
    assert.deepEqual(await leftoverTasks(), [])
  })

  it('teardown leaves no process, mount, namespace, cgroup, veth or container behind (its node)', async () => {
    assert.deepEqual(await cluster.stopAndListLeftovers(), [])
  })
})
