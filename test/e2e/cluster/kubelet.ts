import {createHash} from 'node:crypto'
import {appendFileSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync} from 'node:fs'
import {constants} from 'node:os'
import {join, posix, relative} from 'node:path'

import type {V1Pod} from '../../../src/kube/types.js'
import {parse as parseYaml} from 'yaml'

import {MIRROR_ANNOTATION} from '../../../src/controlplane/model.js'
import {KubeClient, resourcePath} from '../../../src/kube/client.js'
import {isConflict, isNotFound} from '../../../src/kube/errors.js'
import {NODE_TASK_LABEL} from '../../../src/node/runner.js'
import {simulatedProcNetTcp} from '../../helpers/sockets.js'
import {ProcessGroup, criLogLine, type Supervised} from './processes.js'

/**
 * What the kubelets of the test cluster's nodes would do that kwok does not:
 * - keep mirror pods in sync with each node's root/etc/kubernetes/manifests (static pods);
 * - run node-task pods for real on this machine (in the node's network namespace, if any),
 *   with HOST_ROOT pointing at the node's root, and report their status and exit code: their
 *   hostPath volumes are set up first (DirectoryOrCreate makes the directory under the node's
 *   root, Directory must exist), and deleting the pod sends SIGTERM to the command and SIGKILL
 *   once the pod's grace period is over, as a kubelet does;
 * - tell kwok where each pod's log is (a kwok Logs object per pod), so `GET pods/x/log`
 *   through the real API server returns real output: a node task's, or the log of the real
 *   process behind a control-plane or kube-proxy pod.
 * One loop lists all pods every tick and does the three jobs from that one list.
 */

export const CONFIG_HASH_ANNOTATION = 'kubernetes.io/config.hash'
export const CONFIG_SOURCE_ANNOTATION = 'kubernetes.io/config.source'
export const CONFIG_SEEN_ANNOTATION = 'kubernetes.io/config.seen'

export interface KubeletNode {
  name: string
  uid: string
  ip: string
  root: string
  netns?: string
}

export interface KubeletOptions {
  client: KubeClient
  nodes: KubeletNode[]
  processes: ProcessGroup
  /** Directory for node-task output files. */
  taskDir: string
  /** Log file of the real process behind pods of this image name on this node (or any node: '*'). */
  processLogFor: (imageName: string, node: string) => string | undefined
  /** The harness's own diagnostics. */
  logFile: string
  tickMs?: number
}

/**
 * Node-task pods (contract 2) carry NODE_TASK_LABEL besides managed-by=kubectl-selfhost: they
 * are run by this harness, not simulated by kwok. The label alone decides, because pivot's
 * self-hosted workloads may carry managed-by=kubectl-selfhost as well.
 */
export function isNodeTask(pod: V1Pod): boolean {
  return pod.metadata?.labels?.[NODE_TASK_LABEL] !== undefined
}

/** "registry.k8s.io/kube-apiserver:v1.37.2" → "kube-apiserver". */
export function imageName(image: string): string {
  const withoutDigest = image.split('@')[0]
  const last = withoutDigest.slice(withoutDigest.lastIndexOf('/') + 1)
  return last.split(':')[0]
}

/** The static pods a manifest directory asks for, as the kubelet reads it (hidden files skipped). */
export function readStaticPods(dir: string, nodeName: string, onError: (message: string) => void): Map<string, {pod: V1Pod; hash: string; file: string}> {
  const pods = new Map<string, {pod: V1Pod; hash: string; file: string}>()
  let files: string[]
  try {
    files = readdirSync(dir)
      .filter((f) => !f.startsWith('.'))
      .sort()
  } catch {
    return pods
  }

  for (const file of files) {
    const path = join(dir, file)
    let text: string
    try {
      text = readFileSync(path, 'utf8')
    } catch {
      continue
    }

    let pod: V1Pod
    try {
      pod = parseYaml(text) as V1Pod
    } catch (error) {
      onError(`${path}: not YAML (${(error as Error).message.split('\n')[0]}); skipped, as the kubelet would`)
      continue
    }

    if (pod?.kind !== 'Pod' || !pod.metadata?.name) {
      onError(`${path}: not a Pod with a name; skipped`)
      continue
    }

    const name = `${pod.metadata.name}-${nodeName}`
    // Like the kubelet's config hash: it changes whenever the file (or the node) does.
    const hash = createHash('md5').update(nodeName).update('\n').update(text).digest('hex')
    pods.set(`${pod.metadata.namespace ?? 'default'}/${name}`, {pod, hash, file: path})
  }

  return pods
}

/** The mirror pod the kubelet would create in the API for a static pod. */
export function mirrorPodFor(staticPod: V1Pod, hash: string, node: KubeletNode, now = new Date()): V1Pod {
  const spec = structuredClone(staticPod.spec ?? {containers: []})
  spec.nodeName = node.name
  // The kubelet lets every static pod tolerate all NoExecute taints.
  spec.tolerations = [...(spec.tolerations ?? []), {operator: 'Exists', effect: 'NoExecute'}]
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: `${staticPod.metadata!.name}-${node.name}`,
      namespace: staticPod.metadata!.namespace ?? 'default',
      labels: staticPod.metadata!.labels,
      annotations: {
        ...staticPod.metadata!.annotations,
        [MIRROR_ANNOTATION]: hash,
        [CONFIG_HASH_ANNOTATION]: hash,
        [CONFIG_SOURCE_ANNOTATION]: 'file',
        [CONFIG_SEEN_ANNOTATION]: now.toISOString(),
      },
      ownerReferences: [{apiVersion: 'v1', kind: 'Node', name: node.name, uid: node.uid, controller: true}],
    },
    spec,
  }
}

interface RunningTask {
  uid: string
  namespace: string
  name: string
  node: KubeletNode
  process?: Supervised
  logFile: string
  deadlineTimer?: NodeJS.Timeout
  deadlineExceeded: boolean
  finished: boolean
  /** Set once the pod is gone from the API: nothing more to report. */
  gone: boolean
  /** Set once a graceful deletion has started stopping the command. */
  terminating?: Promise<void>
  /** Settles once the command's exit is reported in the pod's status. */
  reported?: Promise<void>
}

/**
 * Where a hostPath volume's path lies on this machine: under the node's root. A path that
 * would leave the root is refused (the fake node has nothing outside it).
 */
export function hostPathOnNode(root: string, path: string): string {
  const normal = posix.normalize(`/${path}`)
  const local = join(root, normal)
  if (relative(root, local).startsWith('..')) throw new Error(`hostPath ${path} leaves the node's root`)
  return local
}

/**
 * Sets up a task pod's hostPath volumes on the node as the kubelet does before it starts the
 * container: DirectoryOrCreate makes the directory (and its parents, mode 0755) when missing,
 * Directory must already be one. Returns why a volume cannot be set up, if one cannot.
 */
export function setUpHostPaths(pod: V1Pod, root: string): string | undefined {
  for (const volume of pod.spec?.volumes ?? []) {
    const hostPath = volume.hostPath
    if (!hostPath) continue
    const local = hostPathOnNode(root, hostPath.path)
    const isDirectory = () => {
      try {
        return statSync(local).isDirectory()
      } catch {
        return false
      }
    }

    if (hostPath.type === 'DirectoryOrCreate') {
      if (!isDirectory()) mkdirSync(local, {recursive: true, mode: 0o755})
    } else if (hostPath.type === 'Directory') {
      if (!isDirectory()) return `MountVolume.SetUp failed for volume "${volume.name}": hostPath type check failed: ${hostPath.path} is not a directory`
    } else if (hostPath.type) {
      return `volume "${volume.name}": hostPath type ${hostPath.type} is not simulated by the test cluster`
    }
  }

  return undefined
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

export class Kubelet {
  private readonly client: KubeClient
  private readonly nodes: Map<string, KubeletNode>
  /** What each node's simulated /proc/net/tcp last held: it is rewritten only when it changes. */
  private readonly socketsWritten = new Map<string, string>()
  private readonly tasks = new Map<string, RunningTask>()
  /** Pods whose log is mapped already: uid → log file. */
  private readonly mappedLogs = new Map<string, string>()
  private stopped = false
  private loop?: Promise<void>
  private readonly reportedErrors = new Set<string>()

  constructor(private readonly opts: KubeletOptions) {
    this.client = opts.client
    this.nodes = new Map(opts.nodes.map((n) => [n.name, n]))
  }

  start(): void {
    this.loop = this.run()
  }

  async stop(): Promise<void> {
    this.stopped = true
    await this.loop
    for (const task of this.tasks.values()) {
      clearTimeout(task.deadlineTimer)
      if (task.process) await this.opts.processes.stop(task.process, 1000)
    }
  }

  /** One pass of all three jobs over a single list of pods. */
  private async syncOnce(): Promise<void> {
    const pods = await this.client.listPods(undefined)
    const ours = pods.items.filter((p) => p.spec?.nodeName && this.nodes.has(p.spec.nodeName))
    await this.syncMirrorPods(ours)
    await this.syncNodeTasks(ours)
    await this.syncLogs(ours)
  }

  private log(message: string): void {
    appendFileSync(this.opts.logFile, `${new Date().toISOString()} ${message}\n`)
  }

  /** Logs an error once per distinct message, so a persistent fault does not flood the file. */
  private logOnce(message: string): void {
    if (this.reportedErrors.has(message)) return
    this.reportedErrors.add(message)
    this.log(message)
  }

  private async run(): Promise<void> {
    const tick = this.opts.tickMs ?? 500
    while (!this.stopped) {
      try {
        await this.syncOnce()
      } catch (error) {
        this.logOnce(`sync failed: ${(error as Error).message}`)
      }

      await sleep(tick)
    }
  }

  // --- static pods → mirror pods -------------------------------------------------------

  private async syncMirrorPods(pods: V1Pod[]): Promise<void> {
    for (const node of this.nodes.values()) {
      const wanted = readStaticPods(join(node.root, 'etc/kubernetes/manifests'), node.name, (m) => this.logOnce(m))
      const mirrors = pods.filter((p) => p.spec?.nodeName === node.name && p.metadata?.annotations?.[MIRROR_ANNOTATION] !== undefined)
      for (const mirror of mirrors) {
        const key = `${mirror.metadata!.namespace}/${mirror.metadata!.name}`
        const want = wanted.get(key)
        if (mirror.metadata?.deletionTimestamp) continue
        if (!want || want.hash !== mirror.metadata!.annotations![MIRROR_ANNOTATION]) {
          // Gone from disk, or outdated: the kubelet deletes it (and recreates the new one below).
          this.log(`${node.name}: deleting mirror pod ${key} (${want ? 'manifest changed' : 'manifest removed'})`)
          await this.client.deletePod(mirror.metadata!.namespace!, mirror.metadata!.name!, 0)
        }
      }

      for (const [key, want] of wanted) {
        const existing = mirrors.find((m) => `${m.metadata!.namespace}/${m.metadata!.name}` === key)
        // Up to date, or outdated and just deleted above: the new one comes on a later tick.
        if (existing) continue
        const pod = mirrorPodFor(want.pod, want.hash, node)
        try {
          await this.client.createPod(pod.metadata!.namespace!, pod)
          this.log(`${node.name}: created mirror pod ${key} from ${want.file}`)
        } catch (error) {
          if (!isConflict(error)) this.logOnce(`${node.name}: cannot create mirror pod ${key}: ${(error as Error).message}`)
        }
      }
    }
  }

  // --- node tasks -------------------------------------------------------------------------

  private async syncNodeTasks(pods: V1Pod[]): Promise<void> {
    // No pod here is a real process: a node task that reads the node's listening sockets reads
    // one per Ready control-plane pod on the node, as of this tick.
    for (const node of this.nodes.values()) {
      const sockets = simulatedProcNetTcp(pods, node.name)
      if (this.socketsWritten.get(node.name) === sockets) continue
      writeFileSync(this.socketsFile(node), sockets)
      this.socketsWritten.set(node.name, sockets)
    }
    const seen = new Set<string>()
    for (const pod of pods.filter(isNodeTask)) {
      const uid = pod.metadata!.uid!
      seen.add(uid)
      const task = this.tasks.get(uid)
      if (pod.metadata?.deletionTimestamp) {
        // Graceful deletion, as the kubelet does it: SIGTERM to the command, SIGKILL when the
        // grace period is over, then the pod is removed. In the background: other pods (mirror
        // pods put back by a trap, say) must not wait for it.
        if (task && !task.terminating) task.terminating = this.terminate(task, pod)
        else if (!task) await this.client.deletePod(pod.metadata.namespace!, pod.metadata.name!, 0)
        continue
      }

      const phase = pod.status?.phase
      if (!task && (phase === 'Succeeded' || phase === 'Failed')) continue
      if (!task) await this.startTask(pod)
    }

    for (const [uid, task] of this.tasks) {
      if (seen.has(uid)) continue
      // Deleted outright (grace period 0): kill whatever still runs.
      task.gone = true
      clearTimeout(task.deadlineTimer)
      if (task.process?.running()) await this.opts.processes.stop(task.process, 1000)
      if (task.finished || !task.process?.running()) this.tasks.delete(uid)
    }
  }

  /** Stops a task whose pod is being deleted within the pod's grace period, then removes the pod. */
  private async terminate(task: RunningTask, pod: V1Pod): Promise<void> {
    const graceSeconds = pod.metadata?.deletionGracePeriodSeconds ?? pod.spec?.terminationGracePeriodSeconds ?? 30
    try {
      if (task.process?.running()) {
        this.log(`${task.namespace}/${task.name}: pod deleted; SIGTERM, SIGKILL after ${graceSeconds}s`)
        // A container runtime signals the container's first process; the rest of it goes at the kill.
        await this.opts.processes.stop(task.process, graceSeconds * 1000, 'leader')
        await task.reported
      }

      await this.client.deletePod(task.namespace, task.name, 0)
    } catch (error) {
      if (!isNotFound(error)) this.logOnce(`${task.namespace}/${task.name}: cannot finish its deletion: ${(error as Error).message}`)
    }
  }

  private socketsFile(node: KubeletNode): string {
    return join(this.opts.taskDir, `${node.name}.proc-net-tcp`)
  }

  private async startTask(pod: V1Pod): Promise<void> {
    const node = this.nodes.get(pod.spec!.nodeName!)!
    const namespace = pod.metadata!.namespace!
    const name = pod.metadata!.name!
    const uid = pod.metadata!.uid!
    const container = pod.spec!.containers[0]
    const logFile = join(this.opts.taskDir, `${namespace}_${name}_${uid}.log`)
    const task: RunningTask = {uid, namespace, name, node, logFile, deadlineExceeded: false, finished: false, gone: false}
    this.tasks.set(uid, task)

    const argv = [...(container.command ?? []), ...(container.args ?? [])]
    if (argv.length === 0) {
      await this.finishTask(task, 128, 'ContainerCannotRun', 'the test cluster runs only pods whose container has a command')
      return
    }

    let volumeProblem: string | undefined
    try {
      volumeProblem = setUpHostPaths(pod, node.root)
    } catch (error) {
      volumeProblem = (error as Error).message
    }

    if (volumeProblem) {
      // The kubelet keeps the pod waiting and retries the mount: so does this loop, next tick.
      this.tasks.delete(uid)
      this.logOnce(`${namespace}/${name}: ${volumeProblem}`)
      return
    }

    const env: NodeJS.ProcessEnv = {PATH: process.env.PATH, HOME: '/root', HOSTNAME: node.name}
    for (const variable of container.env ?? []) if (variable.value !== undefined) env[variable.name] = variable.value
    // The node's "/" is a directory on this machine: the contract's HOST_ROOT points there.
    env.HOST_ROOT = node.root
    env.NET_FILES = this.socketsFile(node)
    const [command, ...args] = node.netns ? ['ip', 'netns', 'exec', node.netns, ...argv] : argv

    await this.mapLog(pod, logFile)
    const startedAt = new Date().toISOString()
    task.process = this.opts.processes.spawn(`task ${namespace}/${name}`, command, args, {
      env,
      cwd: node.root,
      logFile,
      onExit: (code, signal) => {
        const exitCode = code ?? 128 + (signal ? constants.signals[signal] : 9)
        task.reported = this.finishTask(task, exitCode, exitCode === 0 ? 'Completed' : 'Error', undefined, startedAt).catch((error) =>
          this.logOnce(`${namespace}/${name}: cannot report exit: ${(error as Error).message}`),
        )
      },
    })
    this.log(`${node.name}: running node task ${namespace}/${name}: ${argv.join(' ')}`)

    const deadline = pod.spec!.activeDeadlineSeconds
    if (deadline !== undefined) {
      task.deadlineTimer = setTimeout(() => {
        task.deadlineExceeded = true
        this.log(`${namespace}/${name}: active deadline of ${deadline}s exceeded; killing it`)
        if (task.process) void this.opts.processes.stop(task.process, 0)
      }, deadline * 1000)
    }

    await this.patchStatus(task, {
      phase: 'Running',
      hostIP: node.ip,
      podIP: node.ip,
      startTime: startedAt,
      conditions: conditions(startedAt, true),
      containerStatuses: [
        {name: container.name, image: container.image, imageID: '', ready: true, started: true, restartCount: 0, state: {running: {startedAt}}},
      ],
    })
  }

  private async finishTask(task: RunningTask, exitCode: number, reason: string, message?: string, startedAt = new Date().toISOString()): Promise<void> {
    clearTimeout(task.deadlineTimer)
    task.finished = true
    if (task.gone) {
      this.tasks.delete(task.uid)
      return
    }

    if (message) appendFileSync(task.logFile, criLogLine('stderr', message))
    const finishedAt = new Date().toISOString()
    const pod = await this.getPod(task)
    if (!pod) return
    // The runner reads the log as soon as it sees the exit code: make sure kwok serves it first.
    await this.waitForLog(task)
    const container = pod.spec!.containers[0]
    const status: Record<string, unknown> = {
      phase: exitCode === 0 && !task.deadlineExceeded ? 'Succeeded' : 'Failed',
      conditions: conditions(finishedAt, false),
      containerStatuses: [
        {
          name: container.name,
          image: container.image,
          imageID: '',
          ready: false,
          started: false,
          restartCount: 0,
          state: {terminated: {exitCode, reason, startedAt, finishedAt, ...(message ? {message} : {})}},
        },
      ],
    }
    if (task.deadlineExceeded) {
      status.reason = 'DeadlineExceeded'
      status.message = `Pod was active on the node longer than the specified deadline`
    }

    await this.patchStatus(task, status)
    this.log(`${task.node.name}: node task ${task.namespace}/${task.name} exited ${exitCode}${task.deadlineExceeded ? ' (deadline exceeded)' : ''}`)
  }

  private async getPod(task: RunningTask): Promise<V1Pod | undefined> {
    try {
      return await this.client.getPod(task.namespace, task.name)
    } catch (error) {
      if (isNotFound(error)) return undefined
      throw error
    }
  }

  private async waitForLog(task: RunningTask): Promise<void> {
    const path = resourcePath('v1', 'pods', task.namespace, task.name, 'log')
    for (let attempt = 0; attempt < 50; attempt++) {
      const res = await this.client.raw('GET', path, {query: {limitBytes: 1}, intent: {verb: 'get', resource: 'pods/log'}})
      if (res.status < 400) return
      await sleep(100)
    }

    this.logOnce(`${task.namespace}/${task.name}: kwok did not serve the log within 5s`)
  }

  private async patchStatus(task: RunningTask, status: Record<string, unknown>): Promise<void> {
    try {
      await this.client.request('PATCH', resourcePath('v1', 'pods', task.namespace, task.name, 'status'), {
        body: {status},
        contentType: 'application/strategic-merge-patch+json',
        intent: {verb: 'patch', resource: 'pods/status', namespace: task.namespace, name: task.name},
      })
    } catch (error) {
      if (!isNotFound(error)) throw error
    }
  }

  // --- logs ------------------------------------------------------------------------------

  private async syncLogs(pods: V1Pod[]): Promise<void> {
    for (const pod of pods) {
      if (isNodeTask(pod) || this.mappedLogs.has(pod.metadata!.uid!)) continue
      const container = pod.spec?.containers?.[0]
      if (!container?.image) continue
      const file = this.opts.processLogFor(imageName(container.image), pod.spec!.nodeName!)
      if (file) await this.mapLog(pod, file)
    }

    const live = new Set(pods.map((p) => p.metadata!.uid!))
    for (const uid of this.mappedLogs.keys()) if (!live.has(uid)) this.mappedLogs.delete(uid)
  }

  /**
   * A kwok Logs object named like the pod, owned by it (so it goes when the pod goes), that
   * points every container of the pod at one file.
   */
  private async mapLog(pod: V1Pod, file: string): Promise<void> {
    const namespace = pod.metadata!.namespace!
    const name = pod.metadata!.name!
    const body = {
      apiVersion: 'kwok.x-k8s.io/v1alpha1',
      kind: 'Logs',
      metadata: {
        name,
        namespace,
        ownerReferences: [{apiVersion: 'v1', kind: 'Pod', name, uid: pod.metadata!.uid!}],
      },
      spec: {logs: [{containers: pod.spec!.containers.map((c) => c.name), logsFile: file, follow: true}]},
    }
    const path = resourcePath('kwok.x-k8s.io/v1alpha1', 'logs', namespace)
    const intent = {verb: 'create', resource: 'logs.kwok.x-k8s.io', namespace, name}
    let res = await this.client.raw('POST', path, {body, intent})
    if (res.status === 409) {
      // A pod of the same name before this one (a recreated mirror pod): replace its mapping.
      await this.client.raw('DELETE', `${path}/${encodeURIComponent(name)}`, {intent: {...intent, verb: 'delete'}})
      res = await this.client.raw('POST', path, {body, intent})
    }

    if (res.status >= 400) {
      this.logOnce(`cannot map the log of ${namespace}/${name}: HTTP ${res.status} ${res.body.slice(0, 200)}`)
      return
    }

    this.mappedLogs.set(pod.metadata!.uid!, file)
  }
}

function conditions(at: string, ready: boolean) {
  const status = ready ? 'True' : 'False'
  return [
    {type: 'PodScheduled', status: 'True', lastTransitionTime: at},
    {type: 'Initialized', status: 'True', lastTransitionTime: at},
    {type: 'ContainersReady', status, lastTransitionTime: at},
    {type: 'Ready', status, lastTransitionTime: at},
  ]
}
