import type {V1DaemonSet, V1Deployment} from './types.js'
import {CliError} from '../errors.js'
import {ApiStatusError, ApiUnreachableError, isNotFound} from './errors.js'
import type {KubeClient} from './client.js'

/**
 * The one wait helper: poll a probe until it says done, with a deadline that becomes one
 * clear line. Polling (not a watch) because a watch needs reconnect handling and a rollout
 * of a handful of control-plane pods is cheap to re-read once a second.
 */

export interface WaitOptions {
  timeoutMs: number
  intervalMs?: number
  /** Named in the timeout message: "timed out after 2m waiting for <what>". */
  what: string
  /** Called with the probe's progress line whenever it changes. */
  onProgress?: (line: string) => void
  signal?: AbortSignal
  /**
   * An API server that does not answer (ApiUnreachableError) is waited for, up to the deadline,
   * instead of ending the wait, and so is a 403 or 5xx shortly after such an outage (an apiserver
   * starting): for waits that span an apiserver's own restart. Waits that share the object share
   * what was seen.
   */
  throughApiOutage?: OutageMemory
  /**
   * With throughApiOutage, every error the probe throws but a 404 (an answer) is waited for, not
   * only an API that does not answer or one still starting. For probes that only call the API
   * while the work goes on without it: a node task runs to its own deadline whatever the API
   * does, so giving up on it early would only lose its result.
   */
  everyFailureIsOutage?: boolean
  /** Injected by tests; defaults to a real timer. */
  sleep?: (ms: number) => Promise<void>
  now?: () => number
}

export interface ProbeResult<T> {
  done: boolean
  value: T
  /** One line on where things stand, shown as progress and in the timeout message. */
  progress: string
}

const realSleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    // Aborted while the probe ran: an abort event will not come again.
    if (signal?.aborted) {
      reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'))
      return
    }

    const onAbort = () => {
      clearTimeout(timer)
      reject(signal!.reason instanceof Error ? signal!.reason : new Error('aborted'))
    }
    // The listener goes with the timer: a long wait adds one per poll otherwise (node warns past 10).
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal?.addEventListener('abort', onAbort, {once: true})
  })

/** A wait that ran out of time: callers tell it from other failures by its type, not its text. */
export class TimeoutError extends CliError {
  /** lastFailure: what the API said last, when time ran out while waiting through its failures. */
  constructor(
    message: string,
    readonly lastFailure?: unknown,
  ) {
    super(message)
    this.name = 'TimeoutError'
  }
}

/** When an API outage was last seen: an apiserver that comes back answers 403 and 5xx until its post-start hooks ran. */
export interface OutageMemory {
  lastOutageAt?: number
}

/** How long after an outage a 403 or 5xx is taken as an apiserver still starting (seen on a real node: about 10 s). */
const STARTING_APISERVER_MS = 120_000

/** What to wait for instead of failing: an API that does not answer, or one still starting after an outage (or, if asked, failing at all). */
function apiStillComing(error: unknown, at: number, memory: OutageMemory, everyFailure: boolean): string | undefined {
  if (error instanceof ApiUnreachableError) {
    memory.lastOutageAt = at
    return `the API does not answer (${error.message}); waiting for it`
  }

  // An apiserver on its way out answers 503 "apiserver is shutting down" before it stops listening
  // (seen on a real node, when a DaemonSet rollout deleted the old pod): the outage begins.
  if (error instanceof ApiStatusError && error.status === 503 && /shutting down/i.test(error.message)) {
    memory.lastOutageAt = at
    return `the API answers 503 (an apiserver shutting down); waiting for it`
  }

  const starting =
    error instanceof ApiStatusError &&
    (error.status === 403 || error.status >= 500) &&
    memory.lastOutageAt !== undefined &&
    at - memory.lastOutageAt < STARTING_APISERVER_MS
  if (starting) return `the API answers ${error.status} after an outage (a starting apiserver); waiting for it`
  return everyFailure && !isNotFound(error) ? `the API fails (${error instanceof Error ? error.message : String(error)}); waiting for it` : undefined
}

/** One API call, sent again for as long as `opts.throughApiOutage` waits through its failures (an API away or still starting). */
export function callThroughOutage<T>(call: () => Promise<T>, opts: WaitOptions): Promise<T> {
  return pollUntil(async () => ({done: true, value: await call(), progress: ''}), opts)
}

export async function pollUntil<T>(probe: () => Promise<ProbeResult<T>>, opts: WaitOptions): Promise<T> {
  const now = opts.now ?? Date.now
  const sleep = opts.sleep ?? ((ms: number) => realSleep(ms, opts.signal))
  const deadline = now() + opts.timeoutMs
  let lastProgress = ''
  let lastFailure: unknown
  for (;;) {
    let result: ProbeResult<T>
    try {
      result = await probe()
      lastFailure = undefined
    } catch (error) {
      const waiting = opts.throughApiOutage ? apiStillComing(error, now(), opts.throughApiOutage, opts.everyFailureIsOutage ?? false) : undefined
      if (!waiting) throw error
      lastFailure = error
      result = {done: false, value: undefined as T, progress: waiting}
    }

    if (result.progress !== lastProgress) {
      lastProgress = result.progress
      opts.onProgress?.(result.progress)
    }

    if (result.done) return result.value
    if (now() >= deadline) {
      throw new TimeoutError(
        `timed out after ${Math.round(opts.timeoutMs / 1000)}s waiting for ${opts.what}${lastProgress ? ` (${lastProgress})` : ''}`,
        lastFailure,
      )
    }

    await sleep(Math.min(opts.intervalMs ?? 1000, Math.max(0, deadline - now())))
  }
}

export interface WorkloadRef {
  kind: 'Deployment' | 'DaemonSet'
  namespace: string
  name: string
}

/** Where a rollout stands, read from a workload's status the way `kubectl rollout status` does. */
export interface RolloutStatus {
  generation: number
  observedGeneration: number
  desired: number
  /** Pods of the workload that exist (not terminating), old and new. */
  current: number
  updated: number
  ready: number
  available: number
  done: boolean
  progress: string
}

export function deploymentRollout(deployment: V1Deployment, readyTarget?: number): RolloutStatus {
  const status = deployment.status ?? {}
  const desired = deployment.spec?.replicas ?? 1
  const target = readyTarget ?? desired
  const rollout = {
    generation: deployment.metadata?.generation ?? 0,
    observedGeneration: status.observedGeneration ?? 0,
    desired,
    current: status.replicas ?? 0,
    updated: status.updatedReplicas ?? 0,
    ready: status.readyReplicas ?? 0,
    available: status.availableReplicas ?? 0,
  }
  const stalled = status.conditions?.find((c) => c.type === 'Progressing' && c.reason === 'ProgressDeadlineExceeded')
  if (stalled) {
    throw new CliError(
      `Deployment ${deployment.metadata?.namespace}/${deployment.metadata?.name} stopped progressing: ${stalled.message ?? 'progress deadline exceeded'}`,
    )
  }

  const done = rollout.observedGeneration >= rollout.generation && rollout.updated >= desired && rollout.current === desired && rollout.ready >= target
  const progress =
    rollout.observedGeneration < rollout.generation
      ? `waiting for the controller to see generation ${rollout.generation}`
      : `${rollout.ready}/${desired} ready, ${rollout.updated} updated, ${rollout.current} existing${target < desired ? ` (${target} can be ready)` : ''}`
  return {...rollout, done, progress}
}

export function daemonSetRollout(daemonSet: V1DaemonSet): RolloutStatus {
  const status = daemonSet.status ?? {desiredNumberScheduled: 0, currentNumberScheduled: 0, numberMisscheduled: 0, numberReady: 0}
  const desired = status.desiredNumberScheduled ?? 0
  const rollout = {
    generation: daemonSet.metadata?.generation ?? 0,
    observedGeneration: status.observedGeneration ?? 0,
    desired,
    current: status.currentNumberScheduled ?? 0,
    updated: status.updatedNumberScheduled ?? 0,
    ready: status.numberReady ?? 0,
    available: status.numberAvailable ?? 0,
  }
  const done = rollout.observedGeneration >= rollout.generation && rollout.updated >= desired && rollout.ready >= desired && rollout.available >= desired
  const progress =
    rollout.observedGeneration < rollout.generation
      ? `waiting for the controller to see generation ${rollout.generation}`
      : `${rollout.ready}/${desired} ready, ${rollout.updated} updated, ${rollout.available} available`
  return {...rollout, done, progress}
}

export type RolloutApi = Pick<KubeClient, 'getDeployment' | 'getDaemonSet'>

/**
 * Waits until a Deployment or DaemonSet has rolled out: the controller saw the latest
 * generation, every pod runs the latest template, and enough pods are Ready. readyTarget
 * lowers the Ready count a Deployment must reach (e.g. when only that many fit the nodes).
 */
export function waitForRollout(
  api: RolloutApi,
  ref: WorkloadRef,
  opts: Omit<WaitOptions, 'what'> & {readyTarget?: number; stuck?: () => Promise<string | undefined>},
): Promise<RolloutStatus> {
  return pollUntil(
    async () => {
      const status =
        ref.kind === 'Deployment'
          ? deploymentRollout(await api.getDeployment(ref.namespace, ref.name), opts.readyTarget)
          : daemonSetRollout(await api.getDaemonSet(ref.namespace, ref.name))
      // A rollout that can never finish (a crash-looping binary) fails now, with its reason, not at the deadline.
      const stuck = status.done ? undefined : await opts.stuck?.()
      if (stuck) throw new CliError(`${ref.kind} ${ref.namespace}/${ref.name} cannot roll out: ${stuck}`)
      return {done: status.done, value: status, progress: status.progress}
    },
    {...opts, what: `${ref.kind} ${ref.namespace}/${ref.name} to roll out`},
  )
}
