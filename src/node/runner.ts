import {randomBytes} from 'node:crypto'

import type {V1Pod} from '../kube/types.js'
import {MANAGED_BY_LABEL, MANAGED_BY_VALUE, SYSTEM_NAMESPACE} from '../controlplane/model.js'
import {CliError} from '../errors.js'
import type {KubeClient} from '../kube/client.js'
import {ApiStatusError, isNotFound} from '../kube/errors.js'
import {type OutageMemory, TimeoutError, type WaitOptions, callThroughOutage, pollUntil} from '../kube/wait.js'

export const NODE_TASK_LABEL = 'selfhost.kubectl.io/node-task'
export const NODE_TASK_CONTAINER = 'task'
/** Where the node's "/" is mounted inside the pod when mountHostRoot is set. */
export const HOST_ROOT_MOUNT = '/host'
/** The env var that tells a task its own pod ("namespace/name"), so it can leave on the node who is at work there. */
export const NODE_TASK_POD_ENV = 'NODE_TASK_POD'

/** A command to run to completion on one node, in a short-lived privileged pod. */
export interface NodeTask {
  node: string
  image: string
  /** argv; use ['sh', '-c', script] for scripts. */
  command: string[]
  /** Short lowercase word(s) naming why the pod exists, e.g. "trace" or "pivot-backup". */
  purpose: string
  namespace?: string
  /** The pod's activeDeadlineSeconds: the kubelet kills it after this even if we are gone. */
  deadlineSeconds: number
  env?: Record<string, string>
  /** Mount the node's "/" at /host and set HOST_ROOT=/host. */
  mountHostRoot?: boolean
  /**
   * Directories the kubelet creates on the node (hostPath DirectoryOrCreate) before the task
   * starts: the node images have no mkdir. Reach them through HOST_ROOT, not these mounts
   * (hard links cannot cross mounts).
   */
  hostDirs?: string[]
  /** Seconds the container gets to act on SIGTERM when the pod is deleted (default 0: none needed). */
  terminationGraceSeconds?: number
}

export interface NodeTaskResult {
  exitCode: number
  /** The container's log (stdout and stderr interleaved, as the kubelet keeps it). */
  output: string
  /** The pod's name (already deleted when this returns). */
  pod: string
}

export type NodeTaskApi = Pick<KubeClient, 'createPod' | 'getPod' | 'deletePod' | 'readPodLog'>

type ExitFn = (code: number) => void

export interface NodeTaskOptions {
  /** How often to read the pod's status while it runs. */
  pollIntervalMs?: number
  /** Extra time, beyond the pod's own deadline, before we give up waiting for a status. */
  graceMs?: number
  /** Told about things worth a line on stderr (e.g. a pod we could not delete). */
  onWarning?: (message: string) => void
  /** Called after cleanup when SIGINT/SIGTERM arrives; defaults to process.exit. */
  exitOnSignal?: ExitFn
  /** Aborts the wait (the pod is still deleted). */
  signal?: AbortSignal
  /** Told when the API stops or starts answering while the task runs. */
  onProgress?: (message: string) => void
  /** How long to keep trying to delete the pod while the API does not answer (default 90 s). */
  deleteRetryMs?: number
}

/**
 * How a node task waits for the API: through any failure but a 404, up to a deadline. The task
 * runs on the node without the API (a hand-off restarts it, on purpose), so an API that is away
 * or failing is waited for, never taken as the task's end.
 */
function throughOutage(outage: OutageMemory, until: number, what: string, intervalMs = 1000): WaitOptions {
  return {timeoutMs: Math.max(0, until - Date.now()), intervalMs, what, throughApiOutage: outage, everyFailureIsOutage: true}
}

/** A finished task's log; the API may blink (its instances are being replaced), so read it through that. */
async function readLogThroughOutage(api: NodeTaskApi, namespace: string, name: string, giveUpAt: number, outage: OutageMemory): Promise<string> {
  try {
    return await callThroughOutage(
      () => api.readPodLog(namespace, name, NODE_TASK_CONTAINER),
      throughOutage(outage, giveUpAt, `the log of pod ${namespace}/${name}`),
    )
  } catch (error) {
    throw error instanceof TimeoutError && error.lastFailure ? error.lastFailure : error
  }
}

/**
 * Deletes node-task pods that finished but were left behind (their CLI was killed outright, or
 * the API was away when it tried): no run leaves garbage for the next. Running ones are kept:
 * a hand-off's watchdog may still be waiting.
 */
export async function deleteFinishedNodeTasks(api: Pick<KubeClient, 'listPods' | 'deletePod'>, namespace: string): Promise<string[]> {
  const pods = (await api.listPods(namespace, {labelSelector: NODE_TASK_LABEL})).items
  const finished = pods.filter((p) => p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed')
  for (const pod of finished) {
    try {
      await api.deletePod(namespace, pod.metadata!.name!, 0)
    } catch (error) {
      if (!isNotFound(error)) throw error
    }
  }

  return finished.map((p) => p.metadata!.name!)
}

/** Reasons a container stays waiting forever; waiting out the deadline would only hide them. */
const STUCK_WAITING_REASONS = new Set([
  'ErrImagePull',
  'ImagePullBackOff',
  'InvalidImageName',
  'ErrImageNeverPull',
  'CreateContainerConfigError',
  'CreateContainerError',
  'RunContainerError',
])

const SIGNAL_EXIT_CODES = {SIGINT: 130, SIGTERM: 143} as const

/** A DNS-1123 pod name: selfhost-<purpose>-<node>-<random>, at most 63 characters. */
export function nodeTaskPodName(purpose: string, node: string, suffix = randomBytes(3).toString('hex')): string {
  const clean = (s: string) =>
    s
      .toLowerCase()
      .replace(/[^a-z0-9-]+/g, '-')
      .replace(/^-+|-+$/g, '')
  const head = `selfhost-${clean(purpose)}-${clean(node)}`.slice(0, 63 - suffix.length - 1).replace(/-+$/, '')
  return `${head}-${suffix}`
}

/** The pod that runs a node task. Pure, so its safety properties are tested directly. */
export function buildNodeTaskPod(task: NodeTask, name: string): V1Pod {
  const namespace = task.namespace ?? SYSTEM_NAMESPACE
  const env = Object.entries(task.env ?? {}).map(([key, value]) => ({name: key, value}))
  env.push({name: NODE_TASK_POD_ENV, value: `${namespace}/${name}`})
  if (task.mountHostRoot) env.push({name: 'HOST_ROOT', value: HOST_ROOT_MOUNT})
  const volumes: Array<{name: string; hostPath: {path: string; type: string}}> = []
  const mounts: Array<{name: string; mountPath: string}> = []
  if (task.mountHostRoot) {
    volumes.push({name: 'host-root', hostPath: {path: '/', type: 'Directory'}})
    mounts.push({name: 'host-root', mountPath: HOST_ROOT_MOUNT})
  }

  for (const [i, path] of (task.hostDirs ?? []).entries()) {
    volumes.push({name: `made-dir-${i}`, hostPath: {path, type: 'DirectoryOrCreate'}})
    mounts.push({name: `made-dir-${i}`, mountPath: `/selfhost-made-dirs/${i}`})
  }

  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name,
      namespace,
      labels: {[MANAGED_BY_LABEL]: MANAGED_BY_VALUE, [NODE_TASK_LABEL]: task.purpose},
    },
    spec: {
      nodeName: task.node,
      restartPolicy: 'Never',
      activeDeadlineSeconds: task.deadlineSeconds,
      // iptables, nft and ipvs state belongs to a network namespace: the node's is the one wanted.
      hostNetwork: true,
      dnsPolicy: 'ClusterFirstWithHostNet',
      tolerations: [{operator: 'Exists'}],
      automountServiceAccountToken: false,
      enableServiceLinks: false,
      terminationGracePeriodSeconds: task.terminationGraceSeconds ?? 0,
      containers: [
        {
          name: NODE_TASK_CONTAINER,
          image: task.image,
          // The default image is the one kube-proxy already runs on the node: never pull it again.
          imagePullPolicy: 'IfNotPresent',
          command: task.command,
          env,
          securityContext: {privileged: true},
          volumeMounts: mounts.length > 0 ? mounts : undefined,
        },
      ],
      volumes: volumes.length > 0 ? volumes : undefined,
    },
  }
}

/** Turns a refused pod creation into a line that says what to do. */
function explainCreateFailure(error: unknown, task: NodeTask, namespace: string): unknown {
  if (!(error instanceof ApiStatusError)) return error
  if (error.status === 403 && /violates PodSecurity/i.test(error.message)) {
    const policy = /violates PodSecurity "([^"]+)"/.exec(error.message)?.[1]
    return new CliError(
      `namespace "${namespace}" refuses privileged pods (PodSecurity${policy ? ` "${policy}"` : ''}), and the ${task.purpose} task needs one on node ${task.node}: ` +
        `choose a namespace whose pod-security.kubernetes.io/enforce label is "privileged" (kube-system usually is)`,
    )
  }

  if (error.status === 403) {
    return new CliError(`the ${task.purpose} task needs to create a privileged pod in namespace "${namespace}": ${error.message}`)
  }

  return error
}

function terminatedExitCode(pod: V1Pod): number | undefined {
  return pod.status?.containerStatuses?.[0]?.state?.terminated?.exitCode
}

/**
 * A kubelet that started while the API was away (a node just booted, a control plane just
 * restored) cannot build any container's environment until it has read the Services once; it
 * says so as a CreateContainerConfigError and retries by itself. Seen on a real node right
 * after a power cycle: waited for, not taken as a broken image.
 */
const TRANSIENT_CONFIG_ERROR = /services have not yet been read at least once/

function stuckReason(pod: V1Pod): string | undefined {
  const waiting = pod.status?.containerStatuses?.[0]?.state?.waiting
  if (waiting?.reason === 'CreateContainerConfigError' && TRANSIENT_CONFIG_ERROR.test(waiting.message ?? '')) return undefined
  if (waiting?.reason && STUCK_WAITING_REASONS.has(waiting.reason)) return `${waiting.reason}${waiting.message ? `: ${waiting.message}` : ''}`
  return undefined
}

/**
 * Reads the task's pod until it has ended or cannot start, through any API failure up to the
 * wait's deadline, and tells onProgress when the API stops and starts answering.
 */
async function waitForTaskEnd(api: NodeTaskApi, task: NodeTask, name: string, wait: WaitOptions, onProgress?: (message: string) => void): Promise<V1Pod> {
  const namespace = task.namespace ?? SYSTEM_NAMESPACE
  let apiAwaySince: number | undefined
  let phase: string | undefined
  const readPod = async (): Promise<V1Pod> => {
    try {
      const pod = await api.getPod(namespace, name)
      if (apiAwaySince !== undefined) {
        onProgress?.(`the API answers again after ${Math.round((Date.now() - apiAwaySince) / 1000)}s`)
        apiAwaySince = undefined
      }

      return pod
    } catch (error) {
      if (apiAwaySince === undefined && !isNotFound(error)) {
        apiAwaySince = Date.now()
        onProgress?.(`the API does not answer (${(error as Error).message}); waiting for it, up to the task's deadline`)
      }

      throw error
    }
  }

  try {
    return await pollUntil(async () => {
      const pod = await readPod()
      phase = pod.status?.phase
      const ended = phase === 'Succeeded' || phase === 'Failed' || stuckReason(pod) !== undefined
      return {done: ended, value: pod, progress: `pod phase ${phase ?? 'unknown'}`}
    }, wait)
  } catch (error) {
    if (wait.signal?.aborted) throw new CliError(`the ${task.purpose} task on node ${task.node} was interrupted`)
    if (isNotFound(error)) throw new CliError(`pod ${namespace}/${name} for the ${task.purpose} task was deleted before it finished`)
    if (!(error instanceof TimeoutError)) throw error
    if (error.lastFailure) {
      throw new CliError(
        `the ${task.purpose} task on node ${task.node}: the API did not answer within ${task.deadlineSeconds}s (${(error.lastFailure as Error).message})`,
      )
    }

    throw new CliError(
      `the ${task.purpose} task on node ${task.node} did not finish within ${task.deadlineSeconds}s (pod phase ${phase ?? 'unknown'}); is the node Ready and the image available there?`,
    )
  }
}

interface ActiveTask {
  /** Stops waiting and deletes the pod. */
  interrupt(): Promise<void>
  exit: ExitFn
}

/**
 * Every task running in this process, so one SIGINT/SIGTERM deletes all their pods (pivot
 * runs tasks on several nodes at once) before the process exits, once.
 */
const activeTasks = new Set<ActiveTask>()
let exiting = false

function onSignal(signal: keyof typeof SIGNAL_EXIT_CODES): void {
  if (exiting) return
  exiting = true
  const tasks = [...activeTasks]
  // The handlers stay on meanwhile, so a second Ctrl-C cannot kill the process mid-cleanup.
  void Promise.allSettled(tasks.map((t) => t.interrupt())).then(() => {
    exiting = false
    if (activeTasks.size === 0) removeSignalHandlers()
    tasks[0]?.exit(SIGNAL_EXIT_CODES[signal])
  })
}

function removeSignalHandlers(): void {
  process.removeListener('SIGINT', onSigint)
  process.removeListener('SIGTERM', onSigterm)
}

const onSigint = () => onSignal('SIGINT')
const onSigterm = () => onSignal('SIGTERM')

function watchSignals(task: ActiveTask): void {
  if (activeTasks.size === 0) {
    process.on('SIGINT', onSigint)
    process.on('SIGTERM', onSigterm)
  }

  activeTasks.add(task)
}

function unwatchSignals(task: ActiveTask): void {
  activeTasks.delete(task)
  if (activeTasks.size === 0 && !exiting) removeSignalHandlers()
}

/**
 * Runs a command on a node through a pod that runs to completion, then returns its exit code
 * and log. The pod is deleted whatever happens: in `finally`, and on SIGINT/SIGTERM before
 * the process exits. Its activeDeadlineSeconds stops it on the node even if this process is
 * killed outright. No exec or websockets: once started, the task does not need the API server.
 */
export async function runNodeTask(api: NodeTaskApi, task: NodeTask, opts: NodeTaskOptions = {}): Promise<NodeTaskResult> {
  const namespace = task.namespace ?? SYSTEM_NAMESPACE
  const name = nodeTaskPodName(task.purpose, task.node)
  const pod = buildNodeTaskPod(task, name)
  const pollIntervalMs = opts.pollIntervalMs ?? 1000
  const graceMs = opts.graceMs ?? 30_000
  const warn = opts.onWarning ?? ((m: string) => process.stderr.write(`warning: ${m}\n`))
  const stop = new AbortController()
  const outer = opts.signal
  const onOuterAbort = () => stop.abort()
  outer?.addEventListener('abort', onOuterAbort, {once: true})
  // The task's waits (its pod, its log, the deletion) are on one API: they share what was seen of it.
  const outage: OutageMemory = {}

  let createCall: Promise<unknown> | undefined
  let cleanup: Promise<void> | undefined
  const deletePodOnce = (): Promise<void> => {
    cleanup ??= (async () => {
      if (!createCall) return
      try {
        // A signal can arrive mid-create: wait for the answer so the delete cannot come first.
        await createCall
      } catch (error) {
        // An HTTP refusal means no pod of ours (a 409 would be someone else's); a lost answer
        // (timeout, reset) may still have made one.
        if (error instanceof ApiStatusError) return
      }

      // The API may be away for a while (a hand-off restarts it): keep trying, within bounds.
      const retryUntil = Date.now() + (opts.deleteRetryMs ?? 90_000)
      let refusal: ApiStatusError | undefined
      try {
        refusal = await pollUntil(
          async () => {
            try {
              await api.deletePod(namespace, name, task.terminationGraceSeconds ?? 0)
              return {done: true, value: undefined, progress: ''}
            } catch (error) {
              // A 4xx is the API's answer (404: gone already), not its absence: asking again will not change it.
              if (error instanceof ApiStatusError && error.status < 500) return {done: true, value: error, progress: ''}
              throw error
            }
          },
          throughOutage(outage, retryUntil, `pod ${namespace}/${name} to be deleted`),
        )
      } catch (error) {
        const failure = error instanceof TimeoutError && error.lastFailure ? error.lastFailure : error
        warn(
          `could not delete pod ${namespace}/${name} (${(failure as Error).message}); it stops by itself within ${task.deadlineSeconds}s; ` +
            `remove it with: kubectl delete pod -n ${namespace} ${name}`,
        )
        return
      }

      if (refusal && !isNotFound(refusal)) {
        warn(`could not delete pod ${namespace}/${name} (${refusal.message}); remove it with: kubectl delete pod -n ${namespace} ${name}`)
      }
    })()
    return cleanup
  }

  const active: ActiveTask = {
    interrupt: () => {
      stop.abort()
      return deletePodOnce()
    },
    exit: opts.exitOnSignal ?? ((code: number) => process.exit(code)),
  }
  watchSignals(active)
  try {
    createCall = api.createPod(namespace, pod)
    try {
      await createCall
    } catch (error) {
      throw explainCreateFailure(error, task, namespace)
    }

    const giveUpAt = Date.now() + task.deadlineSeconds * 1000 + graceMs
    const current = await waitForTaskEnd(
      api,
      task,
      name,
      {...throughOutage(outage, giveUpAt, `the ${task.purpose} task`, pollIntervalMs), signal: stop.signal},
      opts.onProgress,
    )
    const phase = current.status?.phase
    if (phase !== 'Succeeded' && phase !== 'Failed') {
      throw new CliError(`the ${task.purpose} task cannot start on node ${task.node} with image ${task.image} (${stuckReason(current)}); choose another image`)
    }

    const exitCode = terminatedExitCode(current)
    if (exitCode === undefined) {
      const why =
        current.status?.reason === 'DeadlineExceeded'
          ? `ran past its deadline of ${task.deadlineSeconds}s`
          : `failed (${current.status?.reason ?? 'no reason given'}${current.status?.message ? `: ${current.status.message}` : ''})`
      throw new CliError(`the ${task.purpose} task on node ${task.node} ${why} before its command could finish`)
    }

    const output = await readLogThroughOutage(api, namespace, name, giveUpAt, outage)
    return {exitCode, output, pod: name}
  } finally {
    unwatchSignals(active)
    outer?.removeEventListener('abort', onOuterAbort)
    await deletePodOnce()
  }
}
