import type {V1Pod} from '../kube/types.js'

import type {CheckpointTimings} from '../checkpoint/checkpoint.js'
import type {CheckpointDeps} from '../checkpoint/install.js'
import {type PivotedComponent, SELF_HOSTED_APP_LABEL, SYSTEM_NAMESPACE, isMirrorPod, selfHostedName} from '../controlplane/model.js'
import {CliError} from '../errors.js'
import type {KubeClient} from '../kube/client.js'
import {ApiStatusError, isNotFound} from '../kube/errors.js'
import {pollUntil} from '../kube/wait.js'
import {NODE_TASK_LABEL, type NodeTask, type NodeTaskResult} from '../node/runner.js'
import {type NodeFiles, READ_STATE_SCRIPT, nodeDirs} from './node-scripts.js'

/** The API calls pivot and revert make; KubeClient satisfies it, tests pass a fake. */
export type PivotClusterApi = Pick<
  KubeClient,
  'listNodes' | 'listPods' | 'getPod' | 'listDaemonSets' | 'listDeployments' | 'apply' | 'delete' | 'deletePod' | 'canI' | 'raw' | 'getLease' | 'version'
>

export interface PivotDeps {
  api: PivotClusterApi
  /** Runs a command on a node to completion (src/node's runNodeTask in real use); aborting deletes its pod. */
  runTask: (task: NodeTask, opts?: {signal?: AbortSignal}) => Promise<NodeTaskResult>
  log: (line: string) => void
  /** Deletes the node-task pods that earlier runs left behind finished in a namespace (src/node's deleteFinishedNodeTasks). */
  cleanupTasks?: (namespace: string) => Promise<string[]>
  now?: () => Date
  sleep?: (ms: number) => Promise<void>
}

/** What pivot and revert alike need to act on a cluster and its nodes. */
export interface ClusterOptions {
  /** Image for the node tasks: sh, cat, ln, rm, sleep, wc (the cluster's kube-proxy image has them). */
  image: string
  /** Where the node-task pods run (default kube-system). */
  namespace?: string
  /** How long each wait (pod Ready, mirror pod gone, API healthy) may take. */
  timeoutMs?: number
  pollMs?: number
  /** The checkpointer's timings (tests shorten them). */
  checkpointTimings?: CheckpointTimings
}

const DEFAULT_TIMEOUT_MS = 5 * 60_000
const TASK_DEADLINE_SECONDS = 120

export const podComponent = (pod: V1Pod) => pod.metadata?.labels?.component
export const mirrorOf = (pods: V1Pod[], component: PivotedComponent) => pods.find((p) => isMirrorPod(p) && podComponent(p) === component)
export const workloadPodOf = (pods: V1Pod[], component: PivotedComponent) =>
  pods.find((p) => !isMirrorPod(p) && p.metadata?.labels?.[SELF_HOSTED_APP_LABEL] === selfHostedName(component))

/**
 * One cluster and its control-plane nodes as pivot and revert act on them: node tasks, the
 * waits both share, the API's health, and what earlier runs left behind.
 */
export class PivotCluster {
  readonly api: PivotClusterApi
  readonly log: (line: string) => void
  readonly now: () => Date
  readonly sleep: (ms: number) => Promise<void>
  readonly timeoutMs: number
  readonly pollMs: number
  /** The node-task pods' namespace. */
  readonly taskNamespace: string

  constructor(
    private readonly deps: PivotDeps,
    private readonly opts: ClusterOptions,
  ) {
    this.api = deps.api
    this.log = deps.log
    this.now = deps.now ?? (() => new Date())
    this.sleep = deps.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)))
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS
    this.pollMs = opts.pollMs ?? 2000
    this.taskNamespace = opts.namespace ?? SYSTEM_NAMESPACE
  }

  // ---- node tasks --------------------------------------------------------------------------

  task(
    node: string,
    purpose: string,
    script: string,
    env: Record<string, string>,
    deadlineSeconds = TASK_DEADLINE_SECONDS,
    signal?: AbortSignal,
  ): Promise<NodeTaskResult> {
    return this.deps.runTask(
      {
        node,
        image: this.opts.image,
        command: ['sh', '-c', script],
        purpose,
        namespace: this.opts.namespace,
        deadlineSeconds,
        env,
        mountHostRoot: true,
        // Reading makes nothing; every other task may need pivot's directories on the node.
        hostDirs: purpose === 'pivot-read' ? undefined : nodeDirs(env.STAMP),
        // A watchdog stopped by its pod's deletion puts its manifest back: give it time to.
        terminationGraceSeconds: purpose === 'pivot-handoff' ? 10 : 0,
      },
      {signal},
    )
  }

  async taskOk(node: string, purpose: string, script: string, env: Record<string, string>): Promise<string> {
    const result = await this.task(node, purpose, script, env)
    if (result.exitCode !== 0)
      throw new CliError(`the ${purpose} task on ${node} failed (exit ${result.exitCode}): ${result.output.trim().split('\n').pop() ?? ''}`)
    return result.output
  }

  /** The raw state of one node's manifests, held hand-offs and backups (parseNodeState reads it). */
  readNodeFiles = (node: string): Promise<string> => this.taskOk(node, 'pivot-read', READ_STATE_SCRIPT, {})

  // ---- waiting -----------------------------------------------------------------------------

  /** A failed check counts as "not yet": during a hand-off the API may briefly not answer. */
  waitFor(what: string, check: () => Promise<boolean>, timeoutMs = this.timeoutMs): Promise<void> {
    return pollUntil(async () => ({done: await check().catch(() => false), value: undefined, progress: ''}), {
      what,
      timeoutMs,
      intervalMs: this.pollMs,
      sleep: this.sleep,
      now: () => this.now().getTime(),
    })
  }

  async podsOn(node: string): Promise<V1Pod[]> {
    return (await this.api.listPods(SYSTEM_NAMESPACE, {fieldSelector: `spec.nodeName=${node}`})).items.filter((p) => !p.metadata?.deletionTimestamp)
  }

  async apiHealthy(): Promise<boolean> {
    const res = await this.api.raw('GET', '/readyz', {intent: {verb: 'get', resource: '/readyz'}})
    if (res.status === 404) return (await this.api.raw('GET', '/healthz', {intent: {verb: 'get', resource: '/healthz'}})).status === 200
    return res.status === 200
  }

  waitApiHealthy(what: string): Promise<void> {
    return this.waitFor(`the API to be healthy ${what}`, () => this.apiHealthy())
  }

  waitMirror(component: PivotedComponent, node: string, want: (pod: V1Pod | undefined) => boolean, what: string): Promise<void> {
    return this.waitFor(what, async () => want(mirrorOf(await this.podsOn(node), component)))
  }

  checkpointDeps(): CheckpointDeps {
    return {
      api: this.api,
      runTask: (task) => this.deps.runTask(task),
      log: (line) => this.log(`[checkpoint] ${line}`),
      image: this.opts.image,
      namespace: this.opts.namespace,
      now: this.now,
      timeoutMs: this.timeoutMs,
      pollMs: this.pollMs,
      sleep: this.sleep,
      timings: this.opts.checkpointTimings,
    }
  }

  // ---- what earlier runs left --------------------------------------------------------------

  /**
   * What earlier runs left in this run's task namespace: finished node-task pods (deleted), and
   * hand-off watchdogs still waiting for a confirmation that will never come (their CLI died).
   * Deleting a watchdog puts its manifest back (its TERM trap), so this run starts from files
   * that say what is true. Watchdogs started with another --namespace are named on their node:
   * see stopRecordedWatchdogs.
   */
  async clearLeftovers(): Promise<void> {
    const namespace = this.taskNamespace
    const removed = (await this.deps.cleanupTasks?.(namespace)) ?? []
    if (removed.length > 0) this.log(`removed ${removed.length} finished node-task pod(s) left by earlier runs: ${removed.join(', ')}`)
    const waiting = (await this.api.listPods(namespace, {labelSelector: `${NODE_TASK_LABEL}=pivot-handoff`})).items.filter(
      (p) => !p.metadata?.deletionTimestamp,
    )
    for (const pod of waiting) await this.stopWatchdog(namespace, pod.metadata!.name!, pod.spec?.nodeName ?? 'its node')
  }

  /**
   * Stops the hand-off watchdogs the nodes name (HANDOFF_DIR/<component>.watchdog) that are still
   * running, wherever they run: a run with another --namespace cannot list them, and one may yet
   * take a manifest away or put it back. Needs only get and delete on those pods, in their own
   * namespace. Returns whether it stopped any: the nodes' files have changed, read them again.
   */
  async stopRecordedWatchdogs(files: NodeFiles[]): Promise<boolean> {
    const stoppedIn = new Set<string>()
    for (const {node, watchdogs} of files) {
      for (const pod of Object.values(watchdogs)) {
        const [namespace, name] = pod.split('/')
        if (await this.stopWatchdog(namespace, name, node)) stoppedIn.add(namespace)
      }
    }

    for (const namespace of stoppedIn) {
      if (namespace === this.taskNamespace) continue
      // Its run may have left finished pods there too; this run's own cleanup never looks there.
      try {
        const removed = (await this.deps.cleanupTasks?.(namespace)) ?? []
        if (removed.length > 0)
          this.log(`removed ${removed.length} finished node-task pod(s) left by earlier runs in namespace ${namespace}: ${removed.join(', ')}`)
      } catch (error) {
        this.log(
          `warning: finished node-task pods of earlier runs may be left in namespace ${namespace} (${(error as Error).message}); ` +
            `see kubectl get pods -n ${namespace} -l ${NODE_TASK_LABEL}`,
        )
      }
    }

    return stoppedIn.size > 0
  }

  /**
   * Deletes one watchdog's pod (its TERM trap puts the manifest back) and waits until the pod is
   * gone, so its manifest is back by then. False when the pod was gone already (a record left by
   * a watchdog killed outright).
   */
  private async stopWatchdog(namespace: string, name: string, node: string): Promise<boolean> {
    const elsewhere = namespace === this.taskNamespace ? '' : ` in namespace ${namespace}`
    const refused = (error: unknown) =>
      error instanceof ApiStatusError && error.status === 403
        ? new CliError(
            `an earlier run's hand-off watchdog on ${node}, pod ${name}${elsewhere}, may still move a static manifest there, and this run may not stop it (${error.message}): ` +
              `${elsewhere ? `re-run with --namespace ${namespace}, or ` : ''}delete that pod (it puts the manifest back first), then re-run`,
          )
        : error
    try {
      await this.api.getPod(namespace, name)
    } catch (error) {
      if (isNotFound(error)) return false
      throw refused(error)
    }

    this.log(`stopping the hand-off watchdog ${name}${elsewhere} of an earlier run on ${node} (it puts its manifest back)`)
    await this.api.deletePod(namespace, name, 5).catch((error: unknown) => {
      throw refused(error)
    })
    await this.waitFor(`the hand-off watchdog ${namespace}/${name} to finish`, () =>
      this.api.getPod(namespace, name).then(
        () => false,
        (error: unknown) => isNotFound(error),
      ),
    )
    return true
  }
}
