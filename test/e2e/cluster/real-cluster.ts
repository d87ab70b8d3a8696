import {execFile, spawnSync} from 'node:child_process'
import {existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync} from 'node:fs'
import {mkdtemp} from 'node:fs/promises'
import {homedir, tmpdir} from 'node:os'
import {basename, dirname, join} from 'node:path'
import {fileURLToPath} from 'node:url'
import {promisify} from 'node:util'

import {stringify} from 'yaml'

import {MissingPrerequisiteError, ensureBinaries, hasCommand, isRoot} from './binaries.js'
import {ETCD_IMAGE_TAG} from './manifests.js'
import {pickAddressBlock} from './netns.js'
import {reapAbandoned} from './processes.js'

/**
 * Real nodes: each node is a set of namespaces on this machine (network, mount, UTS, PID) with
 * its own containerd (Debian's), runc and kubelet (built from the Go module), made into a
 * cluster by kubeadm itself (`kubeadm init`, `kubeadm join --control-plane`). Containers really
 * start from images built here (real/images.sh). See README, "Real nodes".
 */

const here = dirname(fileURLToPath(import.meta.url))
const NODE_SH = join(here, 'real', 'node.sh')
const IMAGES_SH = join(here, 'real', 'images.sh')
const run = promisify(execFile)
const STATE_ROOT = join(tmpdir(), 'kubectl-selfhost-real')
const CACHE = process.env.SELFHOST_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'kubectl-selfhost')

export const REAL_VERSION = 'v1.37.2'
/** The release the upgrade suite starts from: kubeadm, kubelet and control plane of v1.36 (install-deps.sh builds it too). */
export const PREVIOUS_REAL_VERSION = 'v1.36.3'
/** Where an upgrade target's deliberately broken apiserver image lives (`upgrade --image-registry`). */
export const BROKEN_REGISTRY = 'selfhost.test/broken'
/** Where an upgrade target's apiserver image that runs but never listens lives. */
export const HANGING_REGISTRY = 'selfhost.test/hanging'
/** The etcd build.sh builds; kubeadm is told to use it (etcd.local.imageTag). */
export {ETCD_IMAGE_TAG}
const PAUSE_IMAGE = 'registry.k8s.io/pause:3.10.2'
/** build.sh's COREDNS_VERSION: the CoreDNS kubeadm v1.37 deploys, told to older kubeadm releases too (one build for all). */
const COREDNS_TAG = 'v1.14.6'
export const POD_SUBNET = '10.244.0.0/16'
export const SERVICE_SUBNET = '10.96.0.0/12'
/** An image for ordinary workloads (Debian's busybox-static): sh, httpd, nc, wget. */
export const BUSYBOX_IMAGE = 'selfhost.test/busybox:1.35'
/**
 * Preflight checks that cannot pass in a node made of namespaces, and why:
 * - SystemVerification: reads the kernel config and finds cgroup v1, which kubeadm reports;
 * - FileExisting-crictl: cri-tools is not packaged in Debian bookworm.
 */
export const IGNORED_PREFLIGHT_CHECKS = ['SystemVerification', 'FileExisting-crictl']

export interface RealNode {
  name: string
  role: 'control-plane' | 'worker'
  ip: string
  /** The node's state on this machine: disk/ (its /etc, /var/lib, … overlays), data/, log/. */
  dir: string
  /** A hard stop of the node (kill -9 of every process in it), then a boot. */
  powerCycle(): Promise<void>
  powerOff(): Promise<void>
  boot(): Promise<void>
  /** Runs a command inside the node (its mount, network, UTS and PID namespaces). */
  exec(args: string[], input?: string): Promise<{stdout: string; stderr: string}>
  /** Reads a file of the node's own file system. */
  readFile(path: string): Promise<string>
}

export interface RealCluster {
  kubeconfig: string
  binDir: string
  nodes: RealNode[]
  workDir: string
  /** The API address clients use: the load balancer when there is one, else the first control-plane node. */
  apiUrl: string
  /** haproxy in front of the control-plane nodes (kubeadm's controlPlaneEndpoint), when asked for. */
  loadBalancer?: {ip: string; log: string}
  startupMs: number
  version: string
  kubectl(args: string[], input?: string): Promise<string>
  stop(): Promise<void>
  /**
   * Stops the cluster and lists what it left on this machine: processes of its nodes (by the
   * PID namespaces they booted in, or by their cgroups), cgroups, mounts, links, haproxy, its
   * directory. Empty when the teardown was complete.
   */
  stopAndListLeftovers(): Promise<string[]>
}

export interface RealClusterOptions {
  controlPlanes?: number
  workers?: number
  /** The release kubeadm, the kubelet and the control plane start at (REAL_VERSION unless given). */
  version?: string
  /**
   * Releases to upgrade to: their control-plane and kube-proxy images are imported into every
   * node beforehand (the nodes pull nothing), with a broken apiserver under BROKEN_REGISTRY.
   */
  upgradeTargets?: string[]
  /**
   * haproxy in front of the control-plane nodes, as kubeadm's HA guide sets one up: the
   * cluster's controlPlaneEndpoint, so clients, kubelets and kube-proxy reach the cluster rather
   * than one node. Default: when there is more than one control-plane node.
   */
  loadBalancer?: boolean
  buildProgress?: 'inherit' | 'quiet'
}

interface RealClusterState {
  harnessPid: number
  nodeDirs: string[]
  hostInterface: string
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

async function sh(args: string[], input?: string, env?: NodeJS.ProcessEnv): Promise<{stdout: string; stderr: string}> {
  const child = run(args[0], args.slice(1), {maxBuffer: 64 * 1024 * 1024, env: env ?? process.env})
  if (input !== undefined) {
    child.child.stdin?.end(input)
  }
  try {
    return await child
  } catch (error) {
    const e = error as {stderr?: string; stdout?: string; message: string}
    throw new Error(`${args.join(' ')} failed: ${(e.stderr || e.stdout || e.message).trim().split('\n').slice(-15).join('\n')}`)
  }
}

function tearDownSync(workDir: string, state: RealClusterState): void {
  for (const dir of state.nodeDirs) spawnSync('bash', [NODE_SH, 'destroy', dir], {stdio: 'ignore'})
  spawnSync('bash', [NODE_SH, 'net-down', workDir, state.hostInterface], {stdio: 'ignore'})
  if (!process.env.SELFHOST_KEEP_CLUSTER) rmSync(workDir, {recursive: true, force: true})
}

/** A file's text, or '' when it is not there (or went away: a process that ended). */
export function readIfThere(file: string): string {
  try {
    return readFileSync(file, 'utf8')
  } catch {
    return ''
  }
}

/** A PID namespace a node booted in, with the start time of its init (boot.sh) in clock ticks since the machine booted. */
export interface BootNamespace {
  namespace: string
  initStartTicks: number
}

/** boot.sh's record: one line per boot, "pid:[NUMBER] INIT_START_TICKS". */
export function parseBootNamespaces(text: string): BootNamespace[] {
  return text
    .split('\n')
    .map((line) => line.trim().split(/\s+/))
    .filter(([namespace, ticks]) => namespace && /^\d+$/.test(ticks ?? ''))
    .map(([namespace, ticks]) => ({namespace, initStartTicks: Number(ticks)}))
}

interface LiveProcess {
  pid: string
  pidNamespace: string
  cgroups: string
  comm: string
  startTicks: number
  /** PID 1 of its own PID namespace. */
  isNamespaceInit: boolean
}

/** The fields of /proc/PID/stat after the command name (which may hold spaces and parentheses): state first. */
function statFields(stat: string): string[] {
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')
}

/** When a process started, in clock ticks since the machine booted (field 22 of /proc/PID/stat). */
export function startTicksOf(stat: string): number {
  return Number(statFields(stat)[19])
}

/** A process as the teardown check sees it; undefined when it is gone or a zombie (dead, not yet reaped). */
function readProcess(pid: string): LiveProcess | undefined {
  try {
    const pidNamespace = readlinkSync(`/proc/${pid}/ns/pid`)
    const cgroups = readFileSync(`/proc/${pid}/cgroup`, 'utf8')
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    if (statFields(stat)[0] === 'Z') return undefined
    const nsPids = /^NSpid:\s*(.*)$/m.exec(status)?.[1].trim().split(/\s+/) ?? []
    return {
      pid,
      pidNamespace,
      cgroups,
      comm: readIfThere(`/proc/${pid}/comm`).trim(),
      startTicks: startTicksOf(stat),
      isNamespaceInit: nsPids.at(-1) === '1',
    }
  } catch {
    return undefined // gone meanwhile
  }
}

/** What outlived a real cluster's teardown on this machine (see RealCluster.stopAndListLeftovers). */
export function leftoversAfterTeardown(cluster: {
  workDir: string
  hostInterface: string
  nodes: Array<{dir: string; cgroupRoot: string; namespaces: BootNamespace[]}>
  haproxyPid?: number
}): string[] {
  const left: string[] = []
  const processes = readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .map(readProcess)
    .filter((p): p is LiveProcess => p !== undefined)
  // The kernel reuses a dead namespace's number (a pod's sandbox elsewhere got one of a node's
  // old numbers): a namespace is the node's only while the init it booted with still runs it.
  const initStartOf = new Map(processes.filter((p) => p.isNamespaceInit).map((p) => [p.pidNamespace, p.startTicks]))
  const nodeOfNamespace = new Map(
    cluster.nodes.flatMap((n) => n.namespaces.filter((ns) => initStartOf.get(ns.namespace) === ns.initStartTicks).map((ns) => [ns.namespace, n.dir] as const)),
  )
  for (const {pid, pidNamespace, cgroups, comm} of processes) {
    const node =
      nodeOfNamespace.get(pidNamespace) ?? cluster.nodes.find((n) => cgroups.includes(`${n.cgroupRoot}/`) || cgroups.includes(`${n.cgroupRoot}\n`))?.dir
    if (node) left.push(`process ${pid} (${comm}) of node ${basename(node)}`)
    else if (pid === String(cluster.haproxyPid) && comm === 'haproxy') left.push(`haproxy (pid ${pid})`)
  }

  for (const hierarchy of readdirSync('/sys/fs/cgroup').map((h) => join('/sys/fs/cgroup', h))) {
    for (const {cgroupRoot} of cluster.nodes) if (existsSync(join(hierarchy, cgroupRoot))) left.push(`cgroup ${join(hierarchy, cgroupRoot)}`)
  }

  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) if (line.includes(cluster.workDir)) left.push(`mount: ${line}`)
  if (spawnSync('ip', ['link', 'show', cluster.hostInterface], {stdio: 'ignore'}).status === 0) left.push(`link ${cluster.hostInterface}`)
  if (!process.env.SELFHOST_KEEP_CLUSTER && existsSync(cluster.workDir)) left.push(`directory ${cluster.workDir}`)
  return left
}

/** Clusters whose harness died (killed test runs) leave nodes behind; the next start removes them. */
export function reapAbandonedRealClusters(): void {
  reapAbandoned(STATE_ROOT, tearDownSync)
}

async function checkRealPrerequisites(): Promise<void> {
  const missing: string[] = []
  if (!isRoot()) missing.push('real nodes need root (namespaces, mounts, cgroups)')
  for (const command of ['containerd', 'runc', 'ctr', 'umoci', 'nsenter', 'unshare', 'ip', 'iptables', 'gcc', 'haproxy']) {
    if (!(await hasCommand(command))) missing.push(`command "${command}" not found (test/e2e/cluster/install-deps.sh installs it)`)
  }
  if (!existsSync('/usr/lib/cni/bridge')) missing.push('CNI plugins not found in /usr/lib/cni (Debian package containernetworking-plugins)')
  if (missing.length > 0) throw new MissingPrerequisiteError(missing)
}

function containerdConfig(): string {
  return `version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${PAUSE_IMAGE}"
  # These machines withhold CAP_SYS_RESOURCE: lowering oom_score_adj would fail in runc.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
`
}

/** kubeadm's configuration for a node: what a careful operator would write, plus this machine's needs. */
export function kubeadmConfig(opts: {
  node: string
  ip: string
  cgroupRoot: string
  version: string
  controlPlaneEndpoint: string
  join?: {token: string; caCertHash: string; certificateKey: string}
}): string {
  const nodeRegistration = {
    name: opts.node,
    criSocket: 'unix:///run/containerd/containerd.sock',
    imagePullPolicy: 'Never',
    ignorePreflightErrors: IGNORED_PREFLIGHT_CHECKS,
    kubeletExtraArgs: [
      {name: 'cgroup-root', value: opts.cgroupRoot},
      {name: 'node-ip', value: opts.ip},
    ],
  }
  const docs: object[] = []
  if (opts.join) {
    docs.push({
      apiVersion: 'kubeadm.k8s.io/v1beta4',
      kind: 'JoinConfiguration',
      nodeRegistration,
      discovery: {bootstrapToken: {apiServerEndpoint: opts.controlPlaneEndpoint, token: opts.join.token, caCertHashes: [opts.join.caCertHash]}},
      ...(opts.join.certificateKey
        ? {controlPlane: {localAPIEndpoint: {advertiseAddress: opts.ip, bindPort: 6443}, certificateKey: opts.join.certificateKey}}
        : {}),
    })
  } else {
    docs.push(
      {
        apiVersion: 'kubeadm.k8s.io/v1beta4',
        kind: 'InitConfiguration',
        localAPIEndpoint: {advertiseAddress: opts.ip, bindPort: 6443},
        nodeRegistration,
      },
      {
        apiVersion: 'kubeadm.k8s.io/v1beta4',
        kind: 'ClusterConfiguration',
        kubernetesVersion: opts.version,
        controlPlaneEndpoint: opts.controlPlaneEndpoint,
        networking: {podSubnet: POD_SUBNET, serviceSubnet: SERVICE_SUBNET},
        etcd: {local: {imageTag: ETCD_IMAGE_TAG}},
        dns: {imageTag: COREDNS_TAG},
        apiServer: {certSANs: ['127.0.0.1', 'localhost']},
      },
      {
        apiVersion: 'kubelet.config.k8s.io/v1beta1',
        kind: 'KubeletConfiguration',
        // This machine runs cgroup v1; kubelet 1.35+ refuses it unless told.
        failCgroupV1: false,
        cgroupDriver: 'cgroupfs',
        failSwapOn: false,
        // The machine's disk is shared with everything else: never evict for it.
        evictionHard: {'memory.available': '1Mi', 'nodefs.available': '1%', 'imagefs.available': '1%', 'nodefs.inodesFree': '1%'},
        imageGCHighThresholdPercent: 100,
        imageGCLowThresholdPercent: 99,
      },
      {
        apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
        kind: 'KubeProxyConfiguration',
        mode: 'iptables',
        // nf_conntrack_max is global to the machine: leave it alone.
        conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: '0s', tcpCloseWaitTimeout: '0s'},
      },
    )
  }
  return docs.map((d) => stringify(d)).join('---\n')
}

/**
 * haproxy's configuration for the control-plane endpoint: TCP passthrough (the apiservers'
 * own TLS reaches clients), a backend taken out after 2 failed /readyz checks a second apart
 * and back after 2 good ones, as kubeadm's HA guide does it with /healthz. /readyz also turns
 * 500 while an apiserver drains on shutdown, so the balancer stops sending it new connections.
 */
export function haproxyConfig(lbIp: string, backends: Array<{name: string; ip: string}>): string {
  return [
    'global',
    '  maxconn 4096',
    'defaults',
    '  mode tcp',
    '  timeout connect 2s',
    // A handshake slowed by a busy machine is not an outage.
    '  timeout check 3s',
    // Watches stay open for long: never cut them here.
    '  timeout client 1h',
    '  timeout server 1h',
    'frontend apiserver',
    `  bind ${lbIp}:6443`,
    '  default_backend apiservers',
    'backend apiservers',
    '  balance roundrobin',
    '  option httpchk',
    '  http-check connect ssl',
    '  http-check send meth GET uri /readyz',
    '  http-check expect status 200',
    '  default-server inter 1s fall 2 rise 2 check verify none',
    ...backends.map((b) => `  server ${b.name} ${b.ip}:6443`),
    '',
  ].join('\n')
}

/** The images an upgrade to this version rolls out, and a broken apiserver of the same tag. */
function upgradeImageRefs(version: string): Record<string, string> {
  const all = imageRefs(version)
  return {
    'kube-apiserver': all['kube-apiserver'],
    'kube-controller-manager': all['kube-controller-manager'],
    'kube-scheduler': all['kube-scheduler'],
    'kube-proxy': all['kube-proxy'],
    'broken-kube-apiserver': `${BROKEN_REGISTRY}/kube-apiserver:${version}`,
    'hanging-kube-apiserver': `${HANGING_REGISTRY}/kube-apiserver:${version}`,
  }
}

/** The kinds and names of images a kubeadm node of this version runs. */
function imageRefs(version: string): Record<string, string> {
  return {
    'kube-apiserver': `registry.k8s.io/kube-apiserver:${version}`,
    'kube-controller-manager': `registry.k8s.io/kube-controller-manager:${version}`,
    'kube-scheduler': `registry.k8s.io/kube-scheduler:${version}`,
    'kube-proxy': `registry.k8s.io/kube-proxy:${version}`,
    etcd: `registry.k8s.io/etcd:${ETCD_IMAGE_TAG}`,
    pause: PAUSE_IMAGE,
    coredns: `registry.k8s.io/coredns/coredns:${COREDNS_TAG}`,
    busybox: BUSYBOX_IMAGE,
  }
}

export async function ensureImages(binDir: string, version: string, refs = imageRefs(version)): Promise<{dir: string; refs: Record<string, string>}> {
  const dir = join(CACHE, 'images', version)
  await sh(['bash', IMAGES_SH, binDir, dir, ...Object.entries(refs).map(([kind, ref]) => `${kind}=${ref}`)])
  return {dir, refs}
}

function initPid(nodeDir: string): number | undefined {
  try {
    const pid = readFileSync(join(nodeDir, 'boot.pid'), 'utf8').trim()
    const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim()
    const first = Number(children.split(/\s+/)[0])
    return Number.isInteger(first) && first > 0 ? first : undefined
  } catch {
    return undefined
  }
}

function makeNode(name: string, role: RealNode['role'], ip: string, dir: string, binDir: string): RealNode {
  const enter = () => {
    const pid = initPid(dir)
    if (!pid) throw new Error(`node ${name} is not running`)
    return ['nsenter', '-t', String(pid), '-m', '-n', '-u', '-p', '--']
  }
  const env = {...process.env, PATH: `${binDir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`}
  const node: RealNode = {
    name,
    role,
    ip,
    dir,
    exec: (args, input) => sh([...enter(), ...args], input, env),
    readFile: async (path) => (await node.exec(['cat', path])).stdout,
    async powerOff() {
      await sh(['bash', NODE_SH, 'power-off', dir])
    },
    async boot() {
      await sh(['bash', NODE_SH, 'boot', dir])
      await booted()
    },
    async powerCycle() {
      // The very script the sandbox hands to people (nodes/<node>/power-cycle), so it is proven too.
      await sh(['bash', join(dir, 'power-cycle')])
      await booted()
    },
  }
  /** The node's init has started containerd and is ready for the kubelet. */
  const booted = async () => {
    const deadline = Date.now() + 60_000
    for (;;) {
      try {
        await node.exec(['test', '-e', '/run/selfhost-node-booted'])
        return
      } catch (error) {
        if (Date.now() > deadline) throw new Error(`node ${name} did not boot within 60s: ${(error as Error).message}; log: ${join(dir, 'log')}`)
        await sleep(200)
      }
    }
  }

  return node
}

/** kubeadm on a busy machine sometimes times out bootstrapping; a reset and a second try pass. */
async function kubeadmWithRetry(node: RealNode, args: string[]): Promise<string> {
  try {
    return (await node.exec(['kubeadm', ...args])).stdout
  } catch (error) {
    process.stderr.write(
      `real cluster: kubeadm ${args[0]} on ${node.name} failed once, resetting and retrying: ${(error as Error).message.split('\n').slice(-3).join(' | ')}\n`,
    )
    await node.exec(['kubeadm', 'reset', '--force', '--cri-socket', 'unix:///run/containerd/containerd.sock'])
    return (await node.exec(['kubeadm', ...args])).stdout
  }
}

async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let lastError = ''
  for (;;) {
    try {
      const value = await probe()
      if (value !== undefined) return value
    } catch (error) {
      lastError = (error as Error).message
    }
    if (Date.now() > deadline)
      throw new Error(`real cluster: timed out after ${timeoutMs / 1000}s waiting for ${what}${lastError ? ` (last error: ${lastError.slice(0, 500)})` : ''}`)
    await sleep(1000)
  }
}

function bridgeConflist(podCidr: string): string {
  return JSON.stringify({
    cniVersion: '0.4.0',
    name: 'selfhost-bridge',
    plugins: [
      {
        type: 'bridge',
        bridge: 'cni0',
        isGateway: true,
        ipMasq: false,
        hairpinMode: true,
        ipam: {type: 'host-local', ranges: [[{subnet: podCidr}]], routes: [{dst: '0.0.0.0/0'}]},
      },
      {type: 'portmap', capabilities: {portMappings: true}},
    ],
  })
}

/**
 * Starts a cluster of real nodes: control-plane nodes made by `kubeadm init` / `kubeadm join
 * --control-plane` (stacked etcd), workers by `kubeadm join`, kube-proxy from kubeadm's addon,
 * and a bridge CNI network on every node.
 */
export async function startRealCluster(opts: RealClusterOptions = {}): Promise<RealCluster> {
  const started = Date.now()
  const controlPlanes = opts.controlPlanes ?? 1
  const workers = opts.workers ?? 0
  const version = opts.version ?? REAL_VERSION
  await checkRealPrerequisites()
  const binDir = await ensureBinaries(opts.buildProgress, version)
  for (const b of ['kubelet', 'kubeadm']) if (!existsSync(join(binDir, b))) throw new MissingPrerequisiteError([`${b} is missing from ${binDir}`])
  const imageSets = [await ensureImages(binDir, version)]
  for (const target of opts.upgradeTargets ?? [])
    imageSets.push(await ensureImages(await ensureBinaries(opts.buildProgress, target), target, upgradeImageRefs(target)))
  reapAbandonedRealClusters()

  mkdirSync(STATE_ROOT, {recursive: true})
  const workDir = await mkdtemp(join(STATE_ROOT, 'c-'))
  const id = workDir
    .slice(-6)
    .toLowerCase()
    .replace(/[^a-z0-9]/g, 'x')
  const block = await pickAddressBlock()
  const state: RealClusterState = {harnessPid: process.pid, nodeDirs: [], hostInterface: `shr${id.slice(-5)}`}
  const saveState = () => writeFileSync(join(workDir, 'state.json'), JSON.stringify(state))
  saveState()
  let stopped = false
  const cleanupSync = () => {
    if (stopped) return
    stopped = true
    tearDownSync(workDir, state)
  }
  process.on('exit', cleanupSync)
  const stop = async () => {
    process.removeListener('exit', cleanupSync)
    cleanupSync()
  }
  const stopAndListLeftovers = async () => {
    const nodes = state.nodeDirs.map((dir) => ({
      dir,
      cgroupRoot: cgroupRootOf(basename(dir)),
      namespaces: parseBootNamespaces(readIfThere(join(dir, 'pid-namespaces'))),
    }))
    const haproxyPid = Number(readIfThere(join(workDir, 'haproxy.pid')).trim()) || undefined
    await stop()
    // Every node booted at least once: without its record the check by namespace would see nothing.
    const unrecorded = nodes.filter((n) => n.namespaces.length === 0).map((n) => `node ${basename(n.dir)}: no PID namespace in boot.sh's record`)
    return [...unrecorded, ...leftoversAfterTeardown({workDir, hostInterface: state.hostInterface, nodes, haproxyPid})]
  }

  try {
    await sh(['bash', NODE_SH, 'net-up', workDir, block.prefix, state.hostInterface])
    const nodes: RealNode[] = []
    const specs = [
      ...Array.from({length: controlPlanes}, (_, i) => ({name: `cp-${i + 1}`, role: 'control-plane' as const})),
      ...Array.from({length: workers}, (_, i) => ({name: `worker-${i + 1}`, role: 'worker' as const})),
    ]
    const nodeIp = (i: number) => `${block.prefix}.${10 + i}`
    let loadBalancer: RealCluster['loadBalancer']
    if (opts.loadBalancer ?? controlPlanes > 1) {
      const lbIp = `${block.prefix}.2`
      const config = join(workDir, 'haproxy.cfg')
      writeFileSync(
        config,
        haproxyConfig(
          lbIp,
          specs.filter((s) => s.role === 'control-plane').map((s, i) => ({name: s.name, ip: nodeIp(i)})),
        ),
      )
      await sh(['bash', NODE_SH, 'lb-up', workDir, lbIp, config])
      loadBalancer = {ip: lbIp, log: join(workDir, 'haproxy.log')}
    }
    for (const [i, spec] of specs.entries()) {
      const dir = join(workDir, 'nodes', spec.name)
      const ip = nodeIp(i)
      const cgroupRoot = cgroupRootOf(spec.name)
      mkdirSync(dir, {recursive: true})
      writeFileSync(join(dir, 'node.env'), `NODE_NAME=${spec.name}\nBIN_DIR=${binDir}\nCGROUP_ROOT=${cgroupRoot}\nNODE_IP=${ip}\n`)
      writeFileSync(join(dir, 'containerd.toml'), containerdConfig())
      state.nodeDirs.push(dir)
      saveState()
      await sh(['bash', NODE_SH, 'create', dir, spec.name, ip, join(workDir, 'switch.netns'), `shr${id.slice(-4)}${i}`])
      const node = makeNode(spec.name, spec.role, ip, dir, binDir)
      // For people and suites rehearsing a power loss.
      writeFileSync(
        join(dir, 'power-cycle'),
        `#!/usr/bin/env bash\n# A hard stop of node ${spec.name} (kill -9 of its kubelet, containerd and every container), then a boot.\nexec bash ${NODE_SH} power-cycle ${dir}\n`,
        {mode: 0o755},
      )
      await node.boot()
      for (const images of imageSets) {
        for (const [kind, ref] of Object.entries(images.refs)) {
          const base = ref.slice(0, ref.lastIndexOf(':'))
          await node.exec(['ctr', '-n', 'k8s.io', 'images', 'import', '--base-name', base, join(images.dir, `${kind}.tar`)])
        }
      }
      nodes.push(node)
    }

    const first = nodes[0]
    const endpoint = `${loadBalancer?.ip ?? first.ip}:6443`
    const configFile = (node: RealNode) => join(node.dir, 'kubeadm.yaml')
    writeFileSync(
      configFile(first),
      kubeadmConfig({node: first.name, ip: first.ip, cgroupRoot: cgroupRootOf(first.name), version, controlPlaneEndpoint: endpoint}),
    )
    await kubeadmWithRetry(first, ['init', '--config', configFile(first), '--upload-certs'])
    const kubeconfig = join(workDir, 'admin.conf')
    writeFileSync(kubeconfig, await first.readFile('/etc/kubernetes/admin.conf'), {mode: 0o600})
    const kubectl = async (args: string[], input?: string) => (await sh([join(binDir, 'kubectl'), '--kubeconfig', kubeconfig, ...args], input)).stdout

    if (nodes.length > 1) {
      const certificateKey = (await first.exec(['kubeadm', 'init', 'phase', 'upload-certs', '--upload-certs'])).stdout.trim().split('\n').pop()!.trim()
      const joinLine = (await first.exec(['kubeadm', 'token', 'create', '--print-join-command'])).stdout
      const token = /--token (\S+)/.exec(joinLine)![1]
      const caCertHash = /--discovery-token-ca-cert-hash (\S+)/.exec(joinLine)![1]
      for (const node of nodes.slice(1)) {
        const join = node.role === 'control-plane' ? {token, caCertHash, certificateKey} : {token, caCertHash, certificateKey: ''}
        writeFileSync(
          configFile(node),
          kubeadmConfig({node: node.name, ip: node.ip, cgroupRoot: cgroupRootOf(node.name), version, controlPlaneEndpoint: endpoint, join}),
        )
        await kubeadmWithRetry(node, ['join', '--config', configFile(node)])
      }
    }

    // Pod networking: a bridge on each node with the pod CIDR the controller-manager gave it,
    // and routes to the other nodes' pod CIDRs through their node addresses.
    const podCidrs = await waitFor('a pod CIDR on every node', 120_000, async () => {
      const list = JSON.parse(await kubectl(['get', 'nodes', '-o', 'json'])) as {items: Array<{metadata: {name: string}; spec: {podCIDR?: string}}>}
      const cidrs = new Map(list.items.map((n) => [n.metadata.name, n.spec.podCIDR]))
      return nodes.every((n) => cidrs.get(n.name)) ? (cidrs as Map<string, string>) : undefined
    })
    for (const node of nodes) {
      await node.exec(['sh', '-c', 'mkdir -p /etc/cni/net.d && cat > /etc/cni/net.d/10-selfhost-bridge.conflist'], bridgeConflist(podCidrs.get(node.name)!))
      for (const other of nodes) {
        if (other !== node) await node.exec(['ip', 'route', 'replace', podCidrs.get(other.name)!, 'via', other.ip])
      }
    }

    await waitFor('every node Ready and every kube-system pod Ready', 300_000, async () => {
      const nodeList = JSON.parse(await kubectl(['get', 'nodes', '-o', 'json'])) as {
        items: Array<{status: {conditions: Array<{type: string; status: string}>}}>
      }
      const podList = JSON.parse(await kubectl(['get', 'pods', '-n', 'kube-system', '-o', 'json'])) as {
        items: Array<{status: {conditions?: Array<{type: string; status: string}>}}>
      }
      const ready = (c?: Array<{type: string; status: string}>) => c?.some((x) => x.type === 'Ready' && x.status === 'True')
      // Four static pods per control-plane node, kube-proxy on every node, kubeadm's two CoreDNS replicas.
      const expectedPods = controlPlanes * 4 + nodes.length + 2
      return nodeList.items.length === nodes.length &&
        nodeList.items.every((n) => ready(n.status.conditions)) &&
        podList.items.length >= expectedPods &&
        podList.items.every((p) => ready(p.status.conditions))
        ? true
        : undefined
    })

    return {
      kubeconfig,
      binDir,
      nodes,
      workDir,
      apiUrl: `https://${endpoint}`,
      loadBalancer,
      startupMs: Date.now() - started,
      version,
      kubectl,
      stop,
      stopAndListLeftovers,
    }
  } catch (error) {
    if (process.env.SELFHOST_KEEP_CLUSTER) process.stderr.write(`real cluster: kept for inspection in ${workDir}\n`)
    await stop()
    throw error
  }

  /** The node's own cgroup root (the kubelet's cgroupRoot, made in every v1 hierarchy by node.sh). */
  function cgroupRootOf(nodeName: string): string {
    return `/selfhost-${id}-${nodeName}`
  }
}
