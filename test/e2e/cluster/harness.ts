import {execFile} from 'node:child_process'
import {createServer} from 'node:net'
import {mkdirSync, rmSync, writeFileSync, copyFileSync} from 'node:fs'
import {mkdtemp, writeFile} from 'node:fs/promises'
import {release, tmpdir} from 'node:os'
import {join} from 'node:path'
import {promisify} from 'node:util'

import semver from 'semver'
import {stringify} from 'yaml'

import {inCI} from '../../helpers/ci.js'
import {MIRROR_ANNOTATION} from '../../../src/controlplane/model.js'
import {KubeClient, resourcePath} from '../../../src/kube/client.js'
import {addonObjects, kubeProxyConfiguration} from './addons.js'
import {MissingPrerequisiteError, ensureBinaries, hasCommand, isRoot} from './binaries.js'
import {Kubelet, type KubeletNode} from './kubelet.js'
import {KWOK_NODE_ANNOTATION, KWOK_NODE_ANNOTATION_VALUE, LOGS_CRD, kwokConfigYaml} from './kwok.js'
import {staticManifests} from './manifests.js'
import {type NodeNetwork, createNodeNetwork, deleteNodeNetworkSync, pickAddressBlock} from './netns.js'
import {type ClusterPki, kubeconfigYaml, makeClusterPki} from './pki.js'
import {ProcessGroup, type Supervised, reapAbandoned} from './processes.js'

/** The version of the real binaries build.sh pins; the default version of the manifests. */
export const BINARY_VERSION = 'v1.37.2'
const SERVICE_CIDR = '10.96.0.0/12'
const SERVICE_IP = '10.96.0.1'
const DNS_SERVICE_IP = '10.96.0.10'
const POD_CIDR = '10.244.0.0/16'
const run = promisify(execFile)
const STATE_ROOT = join(tmpdir(), 'kubectl-selfhost-clusters')

export interface TestNode {
  name: string
  role: 'control-plane' | 'worker'
  /** The node's fake "/" on this machine; its manifests live in root/etc/kubernetes/manifests. */
  root: string
  /** The node's InternalIP. */
  ip: string
  /**
   * The node's own network namespace (where root allows), where its node tasks execute: a
   * worker's kube-proxy runs there; a control-plane node's apiserver port there leads to the
   * one real kube-apiserver.
   */
  netns?: string
}

export interface TestCluster {
  kubeconfig: string
  binDir: string
  nodes: TestNode[]
  stop(): Promise<void>
  /** Everything the cluster wrote (logs/, pki/, nodes/); removed by stop(). */
  workDir: string
  /** Log files of the real processes, by component (kube-proxy-<node> for each worker). */
  logs: Record<string, string>
  /** How long start took, in milliseconds. */
  startupMs: number
  /** Process ids of everything the cluster runs (each leads its own process group). */
  processIds(): number[]
  /**
   * Makes "the apiserver on this control-plane node" stop or start answering: its address and
   * secure port lead to the one real kube-apiserver, or nowhere. Needs node network namespaces.
   */
  setNodeApiserverServing(node: string, serving: boolean): Promise<void>
}

export interface TestClusterOptions {
  controlPlaneNodes?: number
  workers?: number
  /** The version the static manifests and node objects claim (the binaries stay v1.37.2). */
  kubeadmVersion?: string
  /** Build output goes to the terminal (the sandbox) rather than a file (tests). */
  buildProgress?: 'inherit' | 'quiet'
  /**
   * Stop the cluster on SIGINT/SIGTERM/SIGHUP and exit (default). The sandbox handles
   * signals itself; either way a process 'exit' handler kills whatever is left.
   */
  handleSignals?: boolean
}

interface ClusterState {
  harnessPid: number
  processGroups: number[]
  networks: Array<Pick<NodeNetwork, 'netns' | 'hostInterface'>>
}

function reapAbandonedClusters(): void {
  reapAbandoned<ClusterState>(STATE_ROOT, (dir, state) => {
    for (const pid of state.processGroups) {
      try {
        process.kill(-pid, 'SIGKILL')
      } catch {
        // Already gone.
      }
    }

    for (const network of state.networks) deleteNodeNetworkSync(network)
    rmSync(dir, {recursive: true, force: true})
  })
}

async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      {length: count},
      () =>
        new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
          const server = createServer()
          server.once('error', reject)
          server.listen(0, '127.0.0.1', () => resolve(server))
        }),
    ),
  )
  const ports = servers.map((s) => (s.address() as {port: number}).port)
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))))
  return ports
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>, explain?: () => string): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let lastError = ''
  for (;;) {
    try {
      const value = await probe()
      if (value !== undefined) return value
    } catch (error) {
      lastError = (error as Error).message
    }

    if (Date.now() > deadline) {
      throw new Error(
        `test cluster: timed out after ${timeoutMs / 1000}s waiting for ${what}${lastError ? ` (last error: ${lastError})` : ''}${explain ? `\n${explain()}` : ''}`,
      )
    }

    await sleep(250)
  }
}

/** How kubeadm of a version marks control-plane nodes (label and taint moved from "master"). */
export function controlPlaneMarks(version: string): {labels: Record<string, string>; taints: Array<{key: string; effect: string}>} {
  const labels: Record<string, string> = {}
  const taints: Array<{key: string; effect: string}> = []
  if (semver.lt(version, '1.24.0')) labels['node-role.kubernetes.io/master'] = ''
  if (semver.gte(version, '1.20.0')) labels['node-role.kubernetes.io/control-plane'] = ''
  if (semver.lt(version, '1.25.0')) taints.push({key: 'node-role.kubernetes.io/master', effect: 'NoSchedule'})
  if (semver.gte(version, '1.24.0')) taints.push({key: 'node-role.kubernetes.io/control-plane', effect: 'NoSchedule'})
  if (semver.gte(version, '1.20.0')) labels['node.kubernetes.io/exclude-from-external-load-balancers'] = ''
  return {labels, taints}
}

async function checkPrerequisites(workers: number): Promise<{netns: boolean}> {
  const missing: string[] = []
  for (const command of ['openssl', 'bash']) if (!(await hasCommand(command))) missing.push(`command "${command}" not found`)
  let netns = true
  const netnsMissing: string[] = []
  if (!isRoot()) netnsMissing.push('node network namespaces need root')
  // Every node's namespace needs ip and socat; a worker's kube-proxy needs iptables and conntrack too.
  for (const command of ['ip', 'socat', ...(workers > 0 ? ['iptables', 'iptables-save', 'conntrack'] : [])]) {
    if (!(await hasCommand(command))) netnsMissing.push(`command "${command}" not found (test/e2e/cluster/install-deps.sh installs it)`)
  }

  if (netnsMissing.length > 0) {
    // In CI every part must run; on a laptop the cluster still starts, without them.
    if (inCI()) missing.push(...netnsMissing)
    else {
      process.stderr.write(
        `test cluster: nodes run without network namespaces: workers have no kube-proxy, and the API server refuses to proxy to control-plane pods (loopback addresses): ${netnsMissing.join('; ')}\n`,
      )
      netns = false
    }
  }

  if (missing.length > 0) throw new MissingPrerequisiteError(missing)
  return {netns}
}

interface NodePlan extends TestNode {
  network?: NodeNetwork
  uid?: string
}

/**
 * Starts a real control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler
 * built from the pinned release) on loopback, kwok as the kubelet of every node, and on each
 * worker a real kube-proxy in the node's own network namespace. See README, "Sandbox and
 * e2e tests", for what is real and what is simulated.
 */
export async function startTestCluster(opts: TestClusterOptions = {}): Promise<TestCluster> {
  const started = Date.now()
  const controlPlaneCount = opts.controlPlaneNodes ?? 3
  const workerCount = opts.workers ?? 1
  const kubeadmVersion = opts.kubeadmVersion ?? BINARY_VERSION
  if (!semver.valid(kubeadmVersion)) throw new Error(`kubeadmVersion "${kubeadmVersion}" is not a version like v1.37.2`)
  if (controlPlaneCount < 1) throw new Error('a test cluster needs at least one control-plane node')

  const {netns} = await checkPrerequisites(workerCount)
  const binDir = await ensureBinaries(opts.buildProgress)
  reapAbandonedClusters()

  mkdirSync(STATE_ROOT, {recursive: true})
  const workDir = await mkdtemp(join(STATE_ROOT, 'cluster-'))
  const id = workDir
    .slice(-6)
    .toLowerCase()
    .replace(/[^a-z0-9]/g, 'x')
  const logDir = join(workDir, 'logs')
  const pkiDir = join(workDir, 'pki')
  for (const dir of [logDir, pkiDir, join(workDir, 'tasks'), join(workDir, 'etcd')]) mkdirSync(dir, {recursive: true})

  const processes = new ProcessGroup()
  const state: ClusterState = {harnessPid: process.pid, processGroups: [], networks: []}
  const saveState = () => {
    state.processGroups = processes.pids()
    writeFileSync(join(workDir, 'state.json'), JSON.stringify(state))
  }

  saveState()
  let kubelet: Kubelet | undefined
  let stopped = false
  let stopping = false

  const cleanupSync = () => {
    if (stopped) return
    stopped = true
    processes.killAllSync()
    for (const network of state.networks) deleteNodeNetworkSync(network)
    if (!process.env.SELFHOST_KEEP_CLUSTER) rmSync(workDir, {recursive: true, force: true})
  }

  let signalCount = 0
  const onSignal = (signal: NodeJS.Signals) => {
    signalCount++
    if (signalCount > 1) {
      cleanupSync()
      process.exit(128 + 2)
    }

    const code = signal === 'SIGINT' ? 130 : signal === 'SIGTERM' ? 143 : 129
    void stop().finally(() => process.exit(code))
  }

  const detach = () => {
    process.removeListener('exit', cleanupSync)
    for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.removeListener(s, onSignal)
  }

  async function stop(): Promise<void> {
    if (stopped || stopping) return
    stopping = true
    detach()
    try {
      await kubelet?.stop()
    } finally {
      await processes.stopAll()
      cleanupSync()
    }
  }

  process.on('exit', cleanupSync)
  const handleSignals = opts.handleSignals ?? true
  if (handleSignals) for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, onSignal)

  try {
    // --- addresses and ports ---------------------------------------------------------------
    const [etcdPort, etcdPeerPort, apiPort, kcmPort, schedulerPort, kwokPort] = await freePorts(6)
    const loopbackPrefix = `127.${100 + Math.floor(Math.random() * 150)}.${Math.floor(Math.random() * 256)}`
    const nodes: NodePlan[] = []
    for (let i = 1; i <= controlPlaneCount; i++) {
      nodes.push({name: `control-plane-${i}`, role: 'control-plane', root: join(workDir, 'nodes', `control-plane-${i}`), ip: `${loopbackPrefix}.${10 + i}`})
    }

    for (let i = 1; i <= workerCount; i++) {
      const name = `worker-${i}`
      nodes.push({name, role: 'worker', root: join(workDir, 'nodes', name), ip: `${loopbackPrefix}.${100 + i}`})
    }

    // Every node gets a network namespace of its own where root allows: a worker for its
    // kube-proxy, a control-plane node for an address the API server agrees to proxy to (it
    // refuses loopback pod IPs: "address not allowed"), where its apiserver port answers.
    const block = netns ? await pickAddressBlock() : undefined
    if (block) {
      for (const [index, node] of nodes.entries()) {
        node.network = await createNodeNetwork({
          netns: `selfhost-${id}-${node.name}`,
          interfacePrefix: `sh${id.slice(-4)}`,
          block,
          index,
          serviceCidr: SERVICE_CIDR,
        })
        state.networks.push(node.network)
        saveState()
        node.ip = node.network.nodeIp
        node.netns = node.network.netns
      }
    }

    const hostEnds = nodes.flatMap((n) => (n.network ? [n.network.hostIp] : []))
    const pki = await makeClusterPki({
      dir: pkiDir,
      apiserverIps: [SERVICE_IP, ...nodes.filter((n) => n.role === 'control-plane').map((n) => n.ip), ...hostEnds],
    })
    const apiUrl = `https://127.0.0.1:${apiPort}`
    const kubeconfigs = await writeKubeconfigs(workDir, pki, apiUrl)

    // --- the real control plane -------------------------------------------------------------
    const logs: Record<string, string> = {}
    const firstControlPlane = nodes[0].name
    const hostnameWrap = isRoot() && (await hasCommand('unshare'))
    const start = (component: string, args: string[], hostname?: string): Supervised => {
      const logFile = join(logDir, `${component}.log`)
      logs[component] = logFile
      const binary = join(binDir, component.startsWith('kube-proxy') ? 'kube-proxy' : component)
      // Leader-election identities are "<hostname>_<uuid>": run under the node's hostname so
      // a Lease's holder names a node, as on a real cluster.
      const [command, ...rest] =
        hostname && hostnameWrap ? ['unshare', '--uts', '--', 'sh', '-c', 'hostname "$0" && exec "$@"', hostname, binary, ...args] : [binary, ...args]
      const member = processes.spawn(component, command, rest, {logFile, cwd: workDir})
      saveState()
      return member
    }

    const watchExit = (member: Supervised) =>
      member.exited.then(({code, signal}) => {
        if (!stopping && !stopped)
          process.stderr.write(`test cluster: ${member.name} exited unexpectedly (code ${code}, signal ${signal}); log: ${member.logFile}\n`)
      })

    const etcd = start(
      'etcd',
      [
        '--name=default',
        `--data-dir=${join(workDir, 'etcd')}`,
        `--listen-client-urls=http://127.0.0.1:${etcdPort}`,
        `--advertise-client-urls=http://127.0.0.1:${etcdPort}`,
        `--listen-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
        `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
        `--initial-cluster=default=http://127.0.0.1:${etcdPeerPort}`,
        // A throwaway cluster: durability is not worth the fsync cost on a shared 2-core machine.
        '--unsafe-no-fsync',
      ],
      firstControlPlane,
    )
    void watchExit(etcd)

    // The "kubernetes" Service needs a non-loopback endpoint; the host end of the first
    // worker's link is one, and kube-proxy in that worker's namespace really reaches it.
    const advertise = nodes.find((n) => n.role === 'worker' && n.network)?.network?.hostIp
    const apiserver = start(
      'kube-apiserver',
      [
        `--etcd-servers=http://127.0.0.1:${etcdPort}`,
        '--bind-address=127.0.0.1',
        `--secure-port=${apiPort}`,
        ...(advertise ? [`--advertise-address=${advertise}`] : ['--advertise-address=127.0.0.1', '--endpoint-reconciler-type=none']),
        '--allow-privileged=true',
        '--authorization-mode=Node,RBAC',
        '--enable-admission-plugins=NodeRestriction',
        `--client-ca-file=${pki.ca.cert}`,
        `--tls-cert-file=${pki.apiserver.cert}`,
        `--tls-private-key-file=${pki.apiserver.key}`,
        `--requestheader-client-ca-file=${pki.frontProxyCa.cert}`,
        '--requestheader-allowed-names=front-proxy-client',
        '--requestheader-extra-headers-prefix=X-Remote-Extra-',
        '--requestheader-group-headers=X-Remote-Group',
        '--requestheader-username-headers=X-Remote-User',
        `--proxy-client-cert-file=${pki.frontProxyClient.cert}`,
        `--proxy-client-key-file=${pki.frontProxyClient.key}`,
        `--kubelet-client-certificate=${pki.kubelet.cert}`,
        `--kubelet-client-key=${pki.kubelet.key}`,
        '--kubelet-preferred-address-types=InternalIP',
        '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
        `--service-account-key-file=${pki.serviceAccountPub}`,
        `--service-account-signing-key-file=${pki.serviceAccountKey}`,
        `--service-cluster-ip-range=${SERVICE_CIDR}`,
        '--profiling=false',
      ],
      firstControlPlane,
    )
    void watchExit(apiserver)

    const client = await KubeClient.connect({kubeconfig: kubeconfigs.admin, requestTimeoutMs: 10_000})
    await waitFor('kube-apiserver /readyz', 90_000, async () => {
      if (!apiserver.running()) throw new Error(`kube-apiserver exited; see ${apiserver.logFile}`)
      const res = await client.raw('GET', '/readyz', {intent: {verb: 'get', resource: 'readyz'}})
      return res.status === 200 ? true : undefined
    })

    // --- kwok and the nodes ---------------------------------------------------------------
    await client.request('POST', resourcePath('apiextensions.k8s.io/v1', 'customresourcedefinitions'), {
      body: LOGS_CRD,
      intent: {verb: 'create', resource: 'customresourcedefinitions'},
    })
    await waitFor('the kwok Logs resource to be served', 30_000, async () => {
      const res = await client.raw('GET', resourcePath('kwok.x-k8s.io/v1alpha1', 'logs'), {intent: {verb: 'list', resource: 'logs'}})
      return res.status === 200 ? true : undefined
    })

    const kwokConfig = join(workDir, 'kwok.yaml')
    await writeFile(
      kwokConfig,
      kwokConfigYaml({
        nodePort: kwokPort,
        serverAddress: `127.0.0.1:${kwokPort}`,
        tlsCertFile: pki.kubelet.cert,
        tlsPrivateKeyFile: pki.kubelet.key,
        podCidr: POD_CIDR,
      }),
    )
    const kwok = start('kwok', [`--kubeconfig=${kubeconfigs.admin}`, `--config=${kwokConfig}`])
    void watchExit(kwok)

    // The API server reaches a node's "kubelet" (kwok) at the node's IP: forward each one.
    for (const node of nodes) {
      if (node.network) {
        const {hostIp, nodeIp, netns: ns} = node.network
        processes.spawn(`forward ${hostIp}:${kwokPort}`, 'socat', [`TCP-LISTEN:${kwokPort},bind=${hostIp},reuseaddr,fork`, `TCP:127.0.0.1:${kwokPort}`], {
          logFile: join(logDir, `forward-${node.name}.log`),
        })
        processes.spawn(
          `forward ${nodeIp}:${kwokPort}`,
          'ip',
          ['netns', 'exec', ns, 'socat', `TCP-LISTEN:${kwokPort},bind=${nodeIp},reuseaddr,fork`, `TCP:${hostIp}:${kwokPort}`],
          {logFile: join(logDir, `forward-${node.name}.log`)},
        )
        // And the node's kube-proxy (a worker's) or apiserver port (a control-plane node's) reaches the API server at the host end of its link.
        processes.spawn(`forward ${hostIp}:${apiPort}`, 'socat', [`TCP-LISTEN:${apiPort},bind=${hostIp},reuseaddr,fork`, `TCP:127.0.0.1:${apiPort}`], {
          logFile: join(logDir, `forward-${node.name}.log`),
        })
      } else {
        processes.spawn(`forward ${node.ip}:${kwokPort}`, 'socat', [`TCP-LISTEN:${kwokPort},bind=${node.ip},reuseaddr,fork`, `TCP:127.0.0.1:${kwokPort}`], {
          logFile: join(logDir, `forward-${node.name}.log`),
        })
      }

      saveState()
    }

    const nodeApiserverStarters = new Map<string, () => Supervised>()
    const nodeApiservers = new Map<string, Supervised>()
    const controlPlaneMembers = nodes.filter((n) => n.role === 'control-plane').map((n) => ({name: n.name, ip: n.ip}))
    for (const node of nodes) {
      const manifests =
        node.role === 'control-plane'
          ? staticManifests({
              kubeadmVersion,
              nodeName: node.name,
              nodeIp: node.ip,
              etcdMembers: controlPlaneMembers,
              serviceCidr: SERVICE_CIDR,
              podCidr: POD_CIDR,
            })
          : {}
      writeNodeRoot(node, pki, kubeconfigs, manifests)
      if (node.role === 'control-plane') {
        // "The apiserver on this node": its address and secure port lead to the one real
        // apiserver (the API server's pods/proxy to a hostNetwork pod here gets a real answer).
        const securePort = /--secure-port=(\d+)/.exec(manifests['kube-apiserver.yaml'] ?? '')?.[1] ?? '6443'
        // The host end of the node's link already leads to the API server (see the forwards above).
        if (node.network) {
          const {hostIp, nodeIp, netns: ns} = node.network
          const logFile = join(logDir, `forward-${node.name}.log`)
          nodeApiserverStarters.set(node.name, () =>
            processes.spawn(
              `forward ${nodeIp}:${securePort}`,
              'ip',
              ['netns', 'exec', ns, 'socat', `TCP-LISTEN:${securePort},bind=${nodeIp},reuseaddr,fork`, `TCP:${hostIp}:${apiPort}`],
              {logFile},
            ),
          )
          nodeApiservers.set(node.name, nodeApiserverStarters.get(node.name)!())
          saveState()
        }
      }

      const created = await client.request<{metadata: {uid: string}}>('POST', resourcePath('v1', 'nodes'), {
        body: nodeObject(node, kubeadmVersion),
        intent: {verb: 'create', resource: 'nodes', name: node.name},
      })
      node.uid = created.metadata.uid
    }

    // --- kube-proxy in each worker's namespace ------------------------------------------------
    for (const node of nodes) {
      if (!node.network || node.role !== 'worker') continue
      const kubeconfig = join(workDir, `kube-proxy-${node.name}.conf`)
      await writeFile(
        kubeconfig,
        kubeconfigYaml({
          server: `https://${node.network.hostIp}:${apiPort}`,
          ca: pki.ca.cert,
          client: pki.kubeProxy,
          user: 'system:kube-proxy',
          tlsServerName: 'localhost',
        }),
      )
      const config = join(workDir, `kube-proxy-${node.name}.yaml`)
      await writeFile(config, stringify(kubeProxyConfiguration({podCidr: POD_CIDR, kubeconfig, hostnameOverride: node.name})))
      const logFile = join(logDir, `kube-proxy-${node.name}.log`)
      logs[`kube-proxy-${node.name}`] = logFile
      const proxy = processes.spawn(`kube-proxy ${node.name}`, 'ip', ['netns', 'exec', node.network.netns, join(binDir, 'kube-proxy'), `--config=${config}`], {
        logFile,
      })
      void watchExit(proxy)
      saveState()
    }

    // --- cluster objects kubeadm creates ---------------------------------------------------------
    for (const addon of addonObjects({
      kubeadmVersion,
      serviceCidr: SERVICE_CIDR,
      podCidr: POD_CIDR,
      dnsServiceIp: DNS_SERVICE_IP,
      controlPlaneEndpoint: `${nodes[0].ip}:6443`,
    })) {
      const {metadata} = addon.object as {metadata: {namespace?: string; name: string}}
      await client.request('POST', resourcePath(addon.groupVersion, addon.resource, metadata.namespace), {
        body: addon.object,
        intent: {verb: 'create', resource: addon.resource, namespace: metadata.namespace, name: metadata.name},
      })
    }

    // --- the kubelets' part kwok does not play ----------------------------------------------
    const nodeByName = new Map(nodes.map((n) => [n.name, n]))
    // The controller-manager's and scheduler's mirror pods serve their logs (through kwok) before
    // the processes start (below, once those pods run): their files exist from now on.
    for (const component of ['kube-controller-manager', 'kube-scheduler']) {
      logs[component] = join(logDir, `${component}.log`)
      await writeFile(logs[component], '', {flag: 'a'})
    }

    const sharedLogs: Record<string, string> = {
      'kube-apiserver': logs['kube-apiserver'],
      'kube-controller-manager': logs['kube-controller-manager'],
      'kube-scheduler': logs['kube-scheduler'],
      etcd: logs.etcd,
    }
    kubelet = new Kubelet({
      client,
      nodes: nodes.map((n): KubeletNode => ({name: n.name, uid: n.uid!, ip: n.ip, root: n.root, netns: n.netns})),
      processes,
      taskDir: join(workDir, 'tasks'),
      logFile: join(logDir, 'harness.log'),
      processLogFor: (image, nodeName) => {
        if (image === 'kube-proxy') return logs[`kube-proxy-${nodeName}`] && nodeByName.get(nodeName)?.netns ? logs[`kube-proxy-${nodeName}`] : undefined
        return sharedLogs[image]
      },
    })
    kubelet.start()

    // The two leader-elected components start only once their mirror pods run: a real process takes
    // its lease after its pod started, and status/logs credit a lease holder only to a pod that
    // started before it (started first, on a loaded machine, they took their leases before kwok
    // marked their pods started).
    await waitForMirrorPods(client, nodes)
    // What both take alike: who they are, where they serve, that they elect a leader.
    const common = (kubeconfig: string, port: number) => [
      `--kubeconfig=${kubeconfig}`,
      `--authentication-kubeconfig=${kubeconfig}`,
      `--authorization-kubeconfig=${kubeconfig}`,
      '--bind-address=127.0.0.1',
      `--secure-port=${port}`,
      '--leader-elect=true',
      '--profiling=false',
    ]
    const controllerManager = start(
      'kube-controller-manager',
      [
        ...common(kubeconfigs.controllerManager, kcmPort),
        '--allocate-node-cidrs=true',
        `--cluster-cidr=${POD_CIDR}`,
        `--service-cluster-ip-range=${SERVICE_CIDR}`,
        `--cluster-signing-cert-file=${pki.ca.cert}`,
        `--cluster-signing-key-file=${pki.ca.key}`,
        `--root-ca-file=${pki.ca.cert}`,
        `--service-account-private-key-file=${pki.serviceAccountKey}`,
        '--use-service-account-credentials=true',
        '--controllers=*,bootstrapsigner,tokencleaner',
      ],
      firstControlPlane,
    )
    void watchExit(controllerManager)
    const scheduler = start('kube-scheduler', common(kubeconfigs.scheduler, schedulerPort), firstControlPlane)
    void watchExit(scheduler)

    await waitUntilSettled(client, nodes, logs)
    const startupMs = Date.now() - started
    return {
      kubeconfig: kubeconfigs.admin,
      binDir,
      nodes: nodes.map(({name, role, root, ip, netns: ns}) => ({name, role, root, ip, ...(ns ? {netns: ns} : {})})),
      stop,
      workDir,
      logs,
      startupMs,
      processIds: () => processes.pids(),
      async setNodeApiserverServing(name: string, serving: boolean): Promise<void> {
        const startForward = nodeApiserverStarters.get(name)
        if (!startForward) throw new Error(`test cluster: ${name} is not a control-plane node with a network namespace`)
        const running = nodeApiservers.get(name)
        if (!serving && running?.running()) await processes.stop(running, 1000)
        if (serving && !running?.running()) {
          nodeApiservers.set(name, startForward())
          saveState()
        }
      },
    }
  } catch (error) {
    await stop().catch(() => undefined)
    throw error
  }
}

interface Kubeconfigs {
  admin: string
  controllerManager: string
  scheduler: string
}

async function writeKubeconfigs(workDir: string, pki: ClusterPki, server: string): Promise<Kubeconfigs> {
  const files = {
    admin: join(workDir, 'admin.conf'),
    controllerManager: join(workDir, 'controller-manager.conf'),
    scheduler: join(workDir, 'scheduler.conf'),
  }
  await writeFile(files.admin, kubeconfigYaml({server, ca: pki.ca.cert, client: pki.admin, user: 'kubernetes-admin'}))
  await writeFile(files.controllerManager, kubeconfigYaml({server, ca: pki.ca.cert, client: pki.controllerManager, user: 'system:kube-controller-manager'}))
  await writeFile(files.scheduler, kubeconfigYaml({server, ca: pki.ca.cert, client: pki.scheduler, user: 'system:kube-scheduler'}))
  return files
}

/** The node's "/": kubeadm's files under etc/kubernetes, and the directories static pods mount. */
function writeNodeRoot(node: TestNode, pki: ClusterPki, kubeconfigs: Kubeconfigs, manifests: Record<string, string>): void {
  const etc = join(node.root, 'etc/kubernetes')
  mkdirSync(join(etc, 'manifests'), {recursive: true})
  mkdirSync(join(etc, 'pki'), {recursive: true})
  copyFileSync(pki.ca.cert, join(etc, 'pki/ca.crt'))
  if (node.role === 'control-plane') {
    for (const [from, to] of [
      [pki.ca.key, 'pki/ca.key'],
      [pki.apiserver.cert, 'pki/apiserver.crt'],
      [pki.apiserver.key, 'pki/apiserver.key'],
      [pki.kubelet.cert, 'pki/apiserver-kubelet-client.crt'],
      [pki.kubelet.key, 'pki/apiserver-kubelet-client.key'],
      [pki.frontProxyCa.cert, 'pki/front-proxy-ca.crt'],
      [pki.frontProxyCa.key, 'pki/front-proxy-ca.key'],
      [pki.frontProxyClient.cert, 'pki/front-proxy-client.crt'],
      [pki.frontProxyClient.key, 'pki/front-proxy-client.key'],
      [pki.serviceAccountKey, 'pki/sa.key'],
      [pki.serviceAccountPub, 'pki/sa.pub'],
      [kubeconfigs.admin, 'admin.conf'],
      [kubeconfigs.controllerManager, 'controller-manager.conf'],
      [kubeconfigs.scheduler, 'scheduler.conf'],
    ])
      copyFileSync(from, join(etc, to))
    mkdirSync(join(node.root, 'var/lib/etcd'), {recursive: true})
  }

  for (const [file, text] of Object.entries(manifests)) writeFileSync(join(etc, 'manifests', file), text)
}

function nodeObject(node: TestNode, kubeadmVersion: string): Record<string, unknown> {
  const marks = node.role === 'control-plane' ? controlPlaneMarks(kubeadmVersion) : {labels: {}, taints: []}
  const resources = {cpu: '8', memory: '32Gi', pods: '110', 'ephemeral-storage': '100Gi'}
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name: node.name,
      labels: {
        'kubernetes.io/hostname': node.name,
        'kubernetes.io/os': 'linux',
        'kubernetes.io/arch': 'amd64',
        'beta.kubernetes.io/os': 'linux',
        'beta.kubernetes.io/arch': 'amd64',
        ...marks.labels,
      },
      annotations: {
        [KWOK_NODE_ANNOTATION]: KWOK_NODE_ANNOTATION_VALUE,
        'kubeadm.alpha.kubernetes.io/cri-socket': 'unix:///var/run/containerd/containerd.sock',
        'node.alpha.kubernetes.io/ttl': '0',
      },
    },
    spec: {taints: marks.taints},
    status: {
      addresses: [
        {type: 'InternalIP', address: node.ip},
        {type: 'Hostname', address: node.name},
      ],
      allocatable: resources,
      capacity: resources,
      nodeInfo: {
        architecture: 'amd64',
        bootID: '',
        containerRuntimeVersion: 'kwok://v0.8.0',
        kernelVersion: release(),
        kubeProxyVersion: '',
        kubeletVersion: kubeadmVersion,
        machineID: '',
        operatingSystem: 'linux',
        osImage: 'kubectl-selfhost test node (kwok)',
        systemUUID: '',
      },
    },
  }
}

/** Every static pod mirrored and Ready, with its log served. */
async function waitForMirrorPods(client: KubeClient, nodes: NodePlan[]): Promise<void> {
  const expectedMirrors = nodes.filter((n) => n.role === 'control-plane').length * 4
  await waitFor('mirror pods of every static pod to be Ready, with their logs served', 60_000, async () => {
    const pods = await client.listPods('kube-system')
    const mirrors = pods.items.filter(
      (p) => p.metadata?.annotations?.[MIRROR_ANNOTATION] && p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'),
    )
    if (mirrors.length !== expectedMirrors) return undefined
    for (const pod of mirrors) {
      const res = await client.raw('GET', resourcePath('v1', 'pods', 'kube-system', pod.metadata!.name!, 'log'), {
        query: {limitBytes: 1},
        intent: {verb: 'get', resource: 'pods/log'},
      })
      if (res.status !== 200) return undefined
    }

    return true
  })
}

/** Nodes Ready, both leader Leases held, kube-proxy synced (the mirror pods are Ready before). */
async function waitUntilSettled(client: KubeClient, nodes: NodePlan[], logs: Record<string, string>): Promise<void> {
  await waitFor(
    'every node to be Ready and untainted by the node lifecycle controller',
    60_000,
    async () => {
      const list = await client.listNodes()
      const settled = list.items.filter(
        (n) =>
          n.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') && !n.spec?.taints?.some((t) => t.key.startsWith('node.kubernetes.io/')),
      )
      return settled.length === nodes.length ? true : undefined
    },
    () => `kwok log: ${logs.kwok}`,
  )
  // Pods cannot be created in a namespace before its "default" ServiceAccount exists.
  await waitFor('the default ServiceAccounts', 60_000, async () => {
    for (const namespace of ['default', 'kube-system']) {
      const res = await client.raw('GET', resourcePath('v1', 'serviceaccounts', namespace, 'default'), {intent: {verb: 'get', resource: 'serviceaccounts'}})
      if (res.status !== 200) return undefined
    }

    return true
  })
  await waitFor('leader Leases of kube-controller-manager and kube-scheduler', 90_000, async () => {
    const [kcm, scheduler] = await Promise.all([client.getLease('kube-system', 'kube-controller-manager'), client.getLease('kube-system', 'kube-scheduler')])
    return kcm?.spec?.holderIdentity && scheduler?.spec?.holderIdentity ? true : undefined
  })
  const withProxy = nodes.filter((n) => n.network && n.role === 'worker')
  if (withProxy.length > 0) {
    await waitFor(
      'kube-proxy to program the kubernetes Service on every worker',
      60_000,
      async () => {
        for (const node of withProxy) {
          const {stdout} = await run('ip', ['netns', 'exec', node.network!.netns, 'iptables-save', '-t', 'nat'])
          if (!stdout.includes('default/kubernetes:https')) return undefined
        }

        return true
      },
      () => withProxy.map((n) => `kube-proxy log: ${logs[`kube-proxy-${n.name}`]}`).join('\n'),
    )
  }
}
