import {randomBytes} from 'node:crypto'

import type {V1Deployment, V1Node, V1Pod} from '../kube/types.js'
import semver from 'semver'

import {componentContainer, securePort, versionFromImage} from '../controlplane/container.js'
import {
  isControlPlaneNode,
  selfHostedComponentOf,
  MANAGED_BY_LABEL,
  MANAGED_BY_VALUE,
  MANIFESTS_DIR,
  PIVOTED_COMPONENTS,
  PivotedComponent,
  SELF_HOSTED_APP_LABEL,
  SYSTEM_NAMESPACE,
  isMirrorPod,
  selfHostedName,
} from '../controlplane/model.js'
import {CliError, ExitCode} from '../errors.js'
import type {KubeClient} from '../kube/client.js'
import {isReady} from '../kube/objects.js'
import {pollUntil} from '../kube/wait.js'
import type {CheckpointTimings} from '../checkpoint/checkpoint.js'
import {type CheckpointDeps, removeCheckpoints, servingFromCheckpoint, writeCheckpoints} from '../checkpoint/install.js'
import {nodeCheckpoints, selfHostedVersions} from '../checkpoint/status.js'
import {hexPort} from '../node/listeners.js'
import {NODE_TASK_LABEL, type NodeTask, type NodeTaskResult} from '../node/runner.js'
import {
  StaticManifest,
  manifestFileName,
  manifestFromMirrorPod,
  withPortSharing,
} from './manifest.js'
import {
  BACKUP_DIR,
  CONFIRM_SCRIPT,
  HANDOFF_RESTORED_EXIT,
  HANDOFF_SCRIPT,
  NodeFiles,
  PREPARE_SCRIPT,
  READ_STATE_SCRIPT,
  RESTORE_SCRIPT,
  RETIRE_BACKUP_SCRIPT,
  activeBackup,
  backupStamp,
  nodeDirs,
  parseNodeState,
} from './node-scripts.js'
import {type RevertComponent, type RevertRestore, imageVersion, planRevert, portSharingIn, restoredBytes} from './revert-plan.js'
import {
  BLIND_HANDOFF_MIN_SECONDS,
  HANDOFF_SETTLE_SECONDS,
  ComponentPlan,
  ExistingWorkload,
  PivotPlan,
  PlanNodeInfo,
  SelfHostedObject,
  planPivot,
} from './plan.js'

/** The API calls pivot and revert make; KubeClient satisfies it, tests pass a fake. */
export type PivotClusterApi = Pick<KubeClient, 'listNodes' | 'listPods' | 'listDaemonSets' | 'listDeployments' | 'apply' | 'delete' | 'deletePod' | 'canI' | 'raw' | 'getLease' | 'version'>

export interface PivotDeps {
  api: PivotClusterApi
  /** Runs a command on a node to completion (src/node's runNodeTask in real use); aborting deletes its pod. */
  runTask: (task: NodeTask, opts?: {signal?: AbortSignal}) => Promise<NodeTaskResult>
  log: (line: string) => void
  /** Deletes node-task pods that earlier runs left behind finished (src/node's deleteFinishedNodeTasks). */
  cleanupTasks?: () => Promise<string[]>
  now?: () => Date
  sleep?: (ms: number) => Promise<void>
}

export interface PivotOptions {
  dryRun?: boolean
  /** Plan from the mirror pods alone (with dryRun): no node pods, hashes of the mirror pods, not the files. */
  fromMirrorPods?: boolean
  /** Image for the node tasks: sh, cat, ln, rm, sleep, wc (the cluster's kube-proxy image has them). */
  image: string
  namespace?: string
  /** How long each wait (pod Ready, mirror pod gone, API healthy) may take. */
  timeoutMs?: number
  /** The apiserver hand-off: how long the node-side watchdog waits before restoring. */
  handoffDeadlineSeconds?: number
  /** How long a second listener must be seen on the port before a port-sharing hand-off moves the static manifest (tests: 0, one check). */
  handoffSettleSeconds?: number
  /** Floor of a blind hand-off's waits (default BLIND_HANDOFF_MIN_SECONDS: the kubelet's longest back-off). */
  blindHandoffMinSeconds?: number
  /** Hand off without port sharing even where the version has it (tests the path of clusters before 1.19). */
  forceBlindHandoff?: boolean
  /** Install checkpoints and the checkpointer after the hand-offs (default true). */
  checkpoint?: boolean
  /** The checkpointer's timings (tests shorten them). */
  checkpointTimings?: CheckpointTimings
  pollMs?: number
}

export interface PivotState {
  nodes: PlanNodeInfo[]
  ready: Record<string, boolean>
  files: NodeFiles[]
  mirrorPods: V1Pod[]
  workloadPods: V1Pod[]
  existing: ExistingWorkload[]
}

export interface PivotResult {
  plan: PivotPlan
  /** Steps already done by an earlier run, found on the cluster and the nodes. */
  alreadyDone: string[]
  dryRun: boolean
  outcome: 'planned' | 'completed' | 'rolled-back'
  summary: string[]
  exitCode: number
}

const DEFAULT_TIMEOUT_MS = 5 * 60_000
const TASK_DEADLINE_SECONDS = 120
/** How long preflight gives an unready control-plane pod (e.g. a static pod just put back) to get Ready. */
const PREFLIGHT_READY_WAIT_MS = 120_000
const MANIFEST_PATH = (component: PivotedComponent) => `${MANIFESTS_DIR}/${manifestFileName(component)}`
const BACKUP_PATH = (stamp: string, component: PivotedComponent) => `${BACKUP_DIR}/${stamp}/${manifestFileName(component)}`
/** The watchdog of a controller-manager or scheduler hand-off: the API stays up, so this is plenty. */
const COMPONENT_HANDOFF_SECONDS = 180
/** How long preflight waits for a scheduler or controller-manager to lead again (a restart loses the lease). */
const LEASE_WAIT_MS = 120_000

const podComponent = (pod: V1Pod) => pod.metadata?.labels?.component

function nodeInfo(node: V1Node): PlanNodeInfo {
  return {
    name: node.metadata!.name!,
    internalIP: node.status?.addresses?.find((a) => a.type === 'InternalIP')?.address,
    labels: node.metadata?.labels ?? {},
    taints: (node.spec?.taints ?? []).map((t) => ({key: t.key, effect: t.effect, value: t.value})),
  }
}

/**
 * A preflight refusal, by kind: revert goes on through the kinds a half-done pivot causes
 * (pods not Ready, a leader that lost its lease), never through missing permissions or a sick API.
 */
export class PreflightError extends CliError {
  constructor(
    message: string,
    readonly kind: 'permissions' | 'nodes' | 'api' | 'pods' | 'leader',
  ) {
    super(message)
    this.name = 'PreflightError'
  }
}

/** Runs pivot and revert against one cluster: every decision is taken from what the cluster and nodes show now. */
export class PivotRunner {
  private readonly now: () => Date
  private readonly sleep: (ms: number) => Promise<void>
  private readonly timeoutMs: number
  private readonly pollMs: number
  private readonly blindMinSeconds: number

  constructor(
    private readonly deps: PivotDeps,
    private readonly opts: PivotOptions,
  ) {
    this.now = deps.now ?? (() => new Date())
    this.sleep = deps.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)))
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS
    this.pollMs = opts.pollMs ?? 2000
    this.blindMinSeconds = opts.blindHandoffMinSeconds ?? BLIND_HANDOFF_MIN_SECONDS
  }

  // ---- reading state ----------------------------------------------------------------------

  /** Reads the cluster and (unless withFiles is false) every control-plane node's manifests and backups. */
  async readState(withFiles = true): Promise<PivotState> {
    const {api} = this.deps
    const all = (await api.listNodes()).items
    const cp = all.filter(isControlPlaneNode)
    if (cp.length === 0) throw new CliError('no control-plane nodes (labelled node-role.kubernetes.io/control-plane or /master) in this cluster')
    const names = cp.map((n) => n.metadata!.name!).sort()
    const pods = (await api.listPods(SYSTEM_NAMESPACE)).items.filter((p) => names.includes(p.spec?.nodeName ?? '') && !p.metadata?.deletionTimestamp)
    const files: NodeFiles[] = []
    // One read per node: the files are the truth a resumed run starts from.
    if (withFiles) for (const node of names) files.push(parseNodeState(node, await this.taskOk(node, 'pivot-read', READ_STATE_SCRIPT, {})))
    const existing: ExistingWorkload[] = []
    const ds = (await api.listDaemonSets(SYSTEM_NAMESPACE)).items
    const deploys = (await api.listDeployments(SYSTEM_NAMESPACE)).items
    for (const w of [...ds.map((d) => ({kind: 'DaemonSet' as const, w: d})), ...deploys.map((d) => ({kind: 'Deployment' as const, w: d}))]) {
      const labels = {...w.w.spec?.template?.metadata?.labels}
      const component = PIVOTED_COMPONENTS.find((c) => labels.component === c || labels[SELF_HOSTED_APP_LABEL] === selfHostedName(c))
      if (component) {
        const replicas = w.kind === 'Deployment' ? (w.w as V1Deployment).spec?.replicas : undefined
        const image = componentContainer(w.w.spec?.template?.spec?.containers, component)?.image
        existing.push({
          component,
          kind: w.kind,
          name: w.w.metadata!.name!,
          managedByUs: w.w.metadata?.labels?.[MANAGED_BY_LABEL] === MANAGED_BY_VALUE,
          ...(replicas === undefined ? {} : {replicas}),
          ...(image === undefined ? {} : {image}),
        })
      }
    }

    return {
      nodes: cp.map(nodeInfo),
      ready: Object.fromEntries(cp.map((n) => [n.metadata!.name!, isReady(n)])),
      files,
      mirrorPods: pods.filter(isMirrorPod),
      workloadPods: pods.filter((p) => !isMirrorPod(p) && selfHostedComponentOf(p) !== undefined),
      existing,
    }
  }

  /** The original bytes of each node's manifest: the backup once one exists, else the live file. */
  static originals(state: PivotState): StaticManifest[] {
    const out: StaticManifest[] = []
    for (const files of state.files) {
      const backup = activeBackup(files)
      for (const component of PIVOTED_COMPONENTS) {
        const bytes = backup?.files[component] ?? files.manifests[component]
        if (bytes !== undefined) out.push({node: files.node, component, bytes})
      }
    }

    return out
  }

  private task(node: string, purpose: string, script: string, env: Record<string, string>, deadlineSeconds = TASK_DEADLINE_SECONDS, signal?: AbortSignal): Promise<NodeTaskResult> {
    return this.deps.runTask({
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
    }, {signal})
  }

  private async taskOk(node: string, purpose: string, script: string, env: Record<string, string>): Promise<string> {
    const result = await this.task(node, purpose, script, env)
    if (result.exitCode !== 0) throw new CliError(`the ${purpose} task on ${node} failed (exit ${result.exitCode}): ${result.output.trim().split('\n').pop() ?? ''}`)
    return result.output
  }

  // ---- waiting -----------------------------------------------------------------------------

  /** A failed check counts as "not yet": during a hand-off the API may briefly not answer. */
  private waitFor(what: string, check: () => Promise<boolean>, timeoutMs = this.timeoutMs): Promise<void> {
    return pollUntil(
      async () => ({done: await check().catch(() => false), value: undefined, progress: ''}),
      {what, timeoutMs, intervalMs: this.pollMs, sleep: this.sleep, now: () => this.now().getTime()},
    )
  }

  private async podsOn(node: string): Promise<V1Pod[]> {
    return (await this.deps.api.listPods(SYSTEM_NAMESPACE, {fieldSelector: `spec.nodeName=${node}`})).items.filter((p) => !p.metadata?.deletionTimestamp)
  }

  private mirrorOf = (pods: V1Pod[], component: PivotedComponent) => pods.find((p) => isMirrorPod(p) && podComponent(p) === component)
  private workloadPodOf = (pods: V1Pod[], component: PivotedComponent) =>
    pods.find((p) => !isMirrorPod(p) && p.metadata?.labels?.[SELF_HOSTED_APP_LABEL] === selfHostedName(component))

  private async apiHealthy(): Promise<boolean> {
    const res = await this.deps.api.raw('GET', '/readyz', {intent: {verb: 'get', resource: '/readyz'}})
    if (res.status === 404) return (await this.deps.api.raw('GET', '/healthz', {intent: {verb: 'get', resource: '/healthz'}})).status === 200
    return res.status === 200
  }

  private waitApiHealthy(what: string) {
    return this.waitFor(`the API to be healthy ${what}`, () => this.apiHealthy())
  }

  private waitMirror(component: PivotedComponent, node: string, want: (pod: V1Pod | undefined) => boolean, what: string) {
    return this.waitFor(what, async () => want(this.mirrorOf(await this.podsOn(node), component)))
  }

  // ---- preflight ---------------------------------------------------------------------------

  private async preflight(state: PivotState, extraVerbs: Array<[string, string, string]> = []): Promise<void> {
    const tasks = this.opts.namespace ?? SYSTEM_NAMESPACE
    // [verb, resource, group, subresource, namespace]: node tasks run in --namespace, the rest in kube-system.
    const needed: Array<[verb: string, resource: string, group: string, subresource: string | undefined, namespace: string | undefined]> = [
      ['list', 'nodes', '', undefined, undefined],
      ['list', 'pods', '', undefined, SYSTEM_NAMESPACE],
      ['create', 'pods', '', undefined, tasks],
      ['delete', 'pods', '', undefined, tasks],
      ['get', 'pods', '', undefined, tasks],
      // A node task's output (its manifests, the watchdog's verdict) is read from its pod's log.
      ['get', 'pods', '', 'log', tasks],
      // With several control-plane nodes, a node's new apiserver is asked through the API's proxy.
      ...(state.nodes.length > 1 ? [['get', 'pods', '', 'proxy', SYSTEM_NAMESPACE] as [string, string, string, string, string]] : []),
      ...(
        [
          ['list', 'daemonsets', 'apps'],
          ['list', 'deployments', 'apps'],
          ['create', 'daemonsets', 'apps'],
          ['patch', 'daemonsets', 'apps'],
          ['create', 'deployments', 'apps'],
          ['patch', 'deployments', 'apps'],
          ['create', 'poddisruptionbudgets', 'policy'],
          ['patch', 'poddisruptionbudgets', 'policy'],
          ['get', 'leases', 'coordination.k8s.io'],
          ['get', 'namespaces', ''],
          ...extraVerbs,
        ] as Array<[string, string, string]>
      ).map(([verb, resource, group]) => [verb, resource, group, undefined, SYSTEM_NAMESPACE] as [string, string, string, undefined, string]),
    ]
    const missing = new Map<string, string[]>()
    for (const [verb, resource, group, subresource, namespace] of needed) {
      const what = `${group ? `${resource}.${group}` : resource}${subresource ? `/${subresource}` : ''}`
      if (!(await this.deps.api.canI(verb, resource, namespace, group, subresource))) {
        const where = namespace ?? SYSTEM_NAMESPACE
        missing.set(where, [...(missing.get(where) ?? []), `${verb} ${what}`])
      }
    }

    if (missing.size > 0) {
      const list = [...missing].map(([namespace, verbs]) => `${verbs.join(', ')} in ${namespace}`).join('; ')
      throw new PreflightError(`not allowed to ${list}: pivot needs cluster-admin-like rights`, 'permissions')
    }

    const notReady = Object.entries(state.ready).filter(([, ready]) => !ready).map(([n]) => n)
    if (notReady.length > 0) throw new PreflightError(`control-plane node(s) ${notReady.join(', ')} not Ready: fix them before moving the control plane`, 'nodes')
    if (!(await this.apiHealthy())) throw new PreflightError('the API server is not healthy (/readyz): fix it before moving the control plane', 'api')
    // A self-hosted pod counts once its node's static one is gone: before that, without port
    // sharing, it is expected to wait (crash-loop) for the port.
    const handedOff = (p: V1Pod) => state.files.find((f) => f.node === p.spec?.nodeName)?.manifests[podComponent(p) as PivotedComponent] === undefined
    const unreadyOf = (mirrorPods: V1Pod[], workloadPods: V1Pod[]) =>
      [...mirrorPods, ...workloadPods.filter(handedOff)]
        .filter((p) => PIVOTED_COMPONENTS.includes(podComponent(p) as PivotedComponent) && !isReady(p))
        .map((p) => p.metadata!.name!)
    let unready = unreadyOf(state.mirrorPods, state.workloadPods)
    if (unready.length > 0) {
      // A static pod just put back (by a watchdog after Ctrl-C, or by revert) or restarting
      // needs a moment to get Ready: wait for that before calling the control plane broken.
      this.deps.log(`waiting for control-plane pod(s) ${unready.join(', ')} to become Ready`)
      await this.waitFor(
        'control-plane pods to become Ready',
        async () => {
          const now = await this.readState(false)
          unready = unreadyOf(now.mirrorPods, now.workloadPods)
          return unready.length === 0
        },
        Math.min(this.timeoutMs, PREFLIGHT_READY_WAIT_MS),
      ).catch(() => {
        throw new PreflightError(`control-plane pod(s) ${unready.join(', ')} not Ready: fix them first`, 'pods')
      })
    }

    for (const component of ['kube-controller-manager', 'kube-scheduler']) {
      let staleSince: number | undefined
      const fresh = async () => {
        const lease = await this.deps.api.getLease(SYSTEM_NAMESPACE, component)
        const renew = lease?.spec?.renewTime ? new Date(lease.spec.renewTime as unknown as string).getTime() : undefined
        staleSince = lease && renew !== undefined && renew + (lease.spec?.leaseDurationSeconds ?? 15) * 1000 < this.now().getTime() ? renew : undefined
        return staleSince === undefined
      }

      if (await fresh()) continue
      // A restart of the control plane (one of ours, or a watchdog's restore) loses the lease for
      // a while: wait for a leader, bounded, before calling it gone.
      this.deps.log(`waiting for a ${component} leader (the lease was last renewed ${new Date(staleSince!).toISOString()})`)
      await this.waitFor(`a ${component} leader`, fresh, Math.min(this.timeoutMs, LEASE_WAIT_MS)).catch(() => {
        throw new PreflightError(`the ${component} lease has not been renewed since ${new Date(staleSince!).toISOString()}: its leader is gone; fix it first`, 'leader')
      })
    }
  }

  // ---- pivot -------------------------------------------------------------------------------

  async pivot(): Promise<PivotResult> {
    if (this.opts.fromMirrorPods && !this.opts.dryRun) {
      throw new CliError('--from-mirror-pods only plans: add --dry-run (pivot itself reads the files on the nodes, to back them up byte for byte)')
    }

    if (!this.opts.dryRun) await this.clearLeftovers()
    const state = await this.readState(!this.opts.fromMirrorPods)
    const checkpoint = this.opts.checkpoint ?? true
    const leaders: Partial<Record<PivotedComponent, string>> = {}
    for (const component of ['kube-controller-manager', 'kube-scheduler'] as const) {
      const holder = (await this.deps.api.getLease(SYSTEM_NAMESPACE, component))?.spec?.holderIdentity?.split('_')[0]
      if (holder && state.nodes.some((n) => n.name === holder)) leaders[component] = holder
    }

    // Backups count as manifests: a re-run after any interruption (even after the last move)
    // plans the same objects and only finishes what is left. With no backups and no live
    // manifests the planner refuses (already self-hosted, or no static control plane).
    const plan = planPivot({
      manifests: this.opts.fromMirrorPods ? state.mirrorPods.flatMap((p) => manifestFromMirrorPod(p) ?? []) : PivotRunner.originals(state),
      nodes: state.nodes,
      existingWorkloads: state.existing,
      leaders,
      handoffDeadlineSeconds: this.opts.handoffDeadlineSeconds,
      checkpoint,
    })
    if (this.opts.forceBlindHandoff) {
      for (const c of plan.components) c.handoff = 'blind'
      plan.notes.push('--force-blind-handoff: every hand-off stops the static instance before the self-hosted one can bind its port, as on clusters before 1.19.')
    }

    if (this.opts.fromMirrorPods) {
      plan.notes.push('Planned from the mirror pods, without node pods: the objects match what pivot applies up to API defaults, but the source hashes are of the mirror pods; pivot takes them from the files.')
    }

    const alreadyDone = this.describeProgress(plan, state)
    if (this.opts.dryRun) return {plan, alreadyDone, dryRun: true, outcome: 'planned', summary: [], exitCode: ExitCode.ok}

    await this.preflight(state)
    for (const cost of plan.costs) this.deps.log(`note: ${cost}`)
    const stamps = new Map(state.files.map((f) => [f.node, activeBackup(f)?.stamp ?? backupStamp(this.now())]))
    const summary: string[] = []
    for (const component of plan.components) {
      const outcome = await this.pivotComponent(component, state, stamps)
      if (outcome === 'rolled-back') {
        this.deps.log(`${component.component}: hand-off failed and the static manifest was put back; reverting the whole pivot`)
        await this.revert()
        return {plan, alreadyDone, dryRun: false, outcome: 'rolled-back', summary: [`${component.component} hand-off failed; the static control plane was restored`], exitCode: ExitCode.rolledBack}
      }

      summary.push(`${component.component}: ${component.kind} ${SYSTEM_NAMESPACE}/${component.name} serving on ${component.nodeOrder.join(', ')}`)
    }

    summary.push(`backups: ${[...new Set(stamps.values())].map((s) => `${BACKUP_DIR}/${s}/`).join(', ')} on every control-plane node`)
    if (checkpoint && (await this.checkpointsCurrent(plan.nodes))) {
      summary.push('checkpoints: already current on every control-plane node')
    } else if (checkpoint) {
      try {
        const written = await writeCheckpoints(this.checkpointDeps(), plan.nodes, Object.fromEntries(plan.nodes.map((n) => [n, plan.perNode[n]?.ip])))
        summary.push(`checkpoints: ${written.map((w) => `${w.node} (${w.checkpoints.map((c) => c.component.replace(/^kube-/, '')).join(', ')})`).join(', ')}, each with a checkpointer`)
      } catch (error) {
        if (!(error instanceof CliError)) throw error
        throw new CliError(`the control plane is self-hosted, but its checkpoints could not be installed: ${(error as Error).message}; run \`kubectl selfhost pivot\` again to retry`)
      }
    }

    return {plan, alreadyDone, dryRun: false, outcome: 'completed', summary, exitCode: ExitCode.ok}
  }

  /**
   * What earlier runs left: finished node-task pods (deleted), and hand-off watchdogs still
   * waiting for a confirmation that will never come (their CLI died). Deleting a watchdog puts
   * its manifest back (its TERM trap), so this run starts from files that say what is true.
   */
  private async clearLeftovers(): Promise<void> {
    const removed = (await this.deps.cleanupTasks?.()) ?? []
    if (removed.length > 0) this.deps.log(`removed ${removed.length} finished node-task pod(s) left by earlier runs: ${removed.join(', ')}`)
    const namespace = this.opts.namespace ?? SYSTEM_NAMESPACE
    const waiting = (await this.deps.api.listPods(namespace, {labelSelector: `${NODE_TASK_LABEL}=pivot-handoff`})).items.filter((p) => !p.metadata?.deletionTimestamp)
    for (const pod of waiting) {
      this.deps.log(`stopping the hand-off watchdog ${pod.metadata!.name} of an earlier run on ${pod.spec?.nodeName} (it puts its manifest back)`)
      await this.deps.api.deletePod(namespace, pod.metadata!.name!, 5).catch(() => undefined)
    }

    if (waiting.length > 0) {
      await this.waitFor('the earlier hand-off watchdogs to finish', async () =>
        (await this.deps.api.listPods(namespace, {labelSelector: `${NODE_TASK_LABEL}=pivot-handoff`})).items.length === 0,
      )
    }
  }

  /** What an earlier, interrupted run already did, as the nodes and the cluster show it. */
  private describeProgress(plan: PivotPlan, state: PivotState): string[] {
    const done: string[] = []
    for (const c of plan.components) {
      if (state.existing.some((w) => w.component === c.component && w.managedByUs)) done.push(`${c.component}: ${c.kind} ${c.name} already applied`)
      for (const files of state.files) {
        const backedUp = activeBackup(files)?.files[c.component] !== undefined
        if (files.held[c.component] !== undefined) done.push(`${c.component} on ${files.node}: hand-off started, not confirmed (manifest held)`)
        else if (backedUp && files.manifests[c.component] === undefined) done.push(`${c.component} on ${files.node}: handed off (manifest in backup)`)
        else if (backedUp) done.push(`${c.component} on ${files.node}: backed up`)
      }
    }

    return done
  }

  private async pivotComponent(plan: ComponentPlan, state: PivotState, stamps: Map<string, string>): Promise<'done' | 'rolled-back'> {
    const {component} = plan
    const log = (node: string | undefined, line: string) => this.deps.log(`[${component}]${node ? ` ${node}:` : ''} ${line}`)
    const filesOf = (node: string) => state.files.find((f) => f.node === node)!
    const portSharing = plan.handoff === 'port-sharing'
    /** The static manifest still to hand off: live, or held by a hand-off that was never confirmed. */
    const pending = (node: string) => filesOf(node).manifests[component] ?? filesOf(node).held[component]

    for (const node of plan.nodeOrder) {
      const files = filesOf(node)
      const liveBytes = files.manifests[component]
      if (liveBytes === undefined) continue
      const original = activeBackup(files)?.files[component] ?? liveBytes
      const target = portSharing ? withPortSharing(original, component) : undefined
      if (liveBytes !== original && liveBytes !== target) {
        throw new CliError(
          `${MANIFEST_PATH(component)} on ${node} changed since pivot backed it up (${BACKUP_PATH(stamps.get(node)!, component)}); put one of them back by hand or run \`kubectl selfhost revert\``,
        )
      }

      const env: Record<string, string> = {COMPONENT: component, STAMP: stamps.get(node)!}
      if (target !== undefined && target !== liveBytes) env.NEW_CONTENT = target
      if (activeBackup(files)?.files[component] === undefined || env.NEW_CONTENT !== undefined) {
        await this.taskOk(node, 'pivot-backup', PREPARE_SCRIPT, env)
        log(node, `backed up${env.NEW_CONTENT === undefined ? '' : ' and restarted the static pod with --permit-port-sharing'}`)
      }

      if (target !== undefined) {
        await this.waitMirror(component, node, (p) => Boolean(p && isReady(p) && JSON.stringify(p.spec?.containers?.[0]?.command ?? []).includes('--permit-port-sharing')), `the static ${component} on ${node} to run with port sharing and be Ready`)
      }
    }

    // The planner keeps a Deployment's live replica count; fewer replicas than nodes leave some without a pod.
    const replicas = plan.kind === 'Deployment' ? ((plan.objects[0] as V1Deployment).spec?.replicas ?? 1) : plan.nodeOrder.length
    const toHandOff = plan.nodeOrder.filter((node) => pending(node) !== undefined)
    if (toHandOff.length > 0 && replicas < plan.nodeOrder.length) {
      throw new CliError(
        `${plan.kind} ${SYSTEM_NAMESPACE}/${plan.name} was scaled to ${replicas} replica(s), but ${toHandOff.join(', ')} still hand ${component} over and each needs a pod of its own: ` +
          `run \`kubectl scale deployment -n ${SYSTEM_NAMESPACE} ${plan.name} --replicas=${plan.nodeOrder.length}\` and re-run pivot, or \`kubectl selfhost revert\``,
      )
    }

    for (const object of plan.objects) await this.deps.api.apply(object.apiVersion, resourceOf(object), object)
    log(undefined, `applied ${plan.objects.map((o) => `${o.kind}/${o.metadata!.name}`).join(', ')}`)

    for (const node of plan.nodeOrder) {
      if (replicas < plan.nodeOrder.length) {
        // Handed off on an earlier run and scaled since: the node may rightly have no pod; the replicas are checked together below.
        await this.waitMirror(component, node, (p) => p === undefined, `the mirror pod ${component}-${node} to go away`)
        continue
      }

      if (pending(node) !== undefined) {
        await this.waitFor(portSharing ? `the self-hosted ${component} pod on ${node} to be Ready` : `a self-hosted ${component} pod on ${node}`, async () => {
          const pod = this.workloadPodOf(await this.podsOn(node), component)
          return Boolean(pod && (!portSharing || isReady(pod)))
        })
        const result = await this.handoff(plan, node, stamps.get(node)!, state)
        if (result === 'restored') return 'rolled-back'
        log(node, 'hand-off confirmed: the static manifest is gone from the node (its original stays in the backup)')
      }

      await this.waitMirror(component, node, (p) => p === undefined, `the mirror pod ${component}-${node} to go away`)
      await this.waitFor(`the self-hosted ${component} on ${node} to be Ready`, async () => {
        const pod = this.workloadPodOf(await this.podsOn(node), component)
        return Boolean(pod && isReady(pod))
      })
      await this.waitApiHealthy(`after the ${component} hand-off on ${node}`)
      filesOf(node).manifests[component] = undefined
      filesOf(node).held[component] = undefined
      log(node, 'self-hosted instance Ready, mirror pod gone, API healthy')
    }

    if (replicas < plan.nodeOrder.length) {
      await this.waitFor(`${replicas} Ready pod(s) of ${plan.kind} ${SYSTEM_NAMESPACE}/${plan.name}`, async () => {
        const pods = (await this.deps.api.listPods(SYSTEM_NAMESPACE, {labelSelector: `${SELF_HOSTED_APP_LABEL}=${plan.name}`})).items
        return pods.filter((p) => !p.metadata?.deletionTimestamp && !isMirrorPod(p) && isReady(p)).length >= replicas
      })
      await this.waitApiHealthy(`with ${component} at ${replicas} replica(s)`)
      log(undefined, `${replicas} replica(s) Ready (scaled below one per node), mirror pods gone, API healthy`)
    }

    return 'done'
  }

  /** The port the component's self-hosted instance serves HTTPS (and its health) on. */
  private workloadSecurePort(plan: ComponentPlan): number {
    const container = (plan.objects[0] as {spec: {template: {spec: {containers: Array<{command?: string[]; args?: string[]}>}}}}).spec.template.spec.containers[0]
    return securePort(plan.component, container)
  }

  /**
   * Whether the self-hosted instance on the node serves on its own, asked only once the static
   * one is gone (with port sharing, answers before that may come from the old process). One
   * control-plane node: the API itself is that instance. Several: the API server proxies to the
   * new pod's own address, so the answer comes from that node's instance, not a load balancer's choice.
   */
  private async servesAlone(plan: ComponentPlan, node: string, singleNode: boolean): Promise<boolean> {
    const pod = this.workloadPodOf(await this.podsOn(node), plan.component)
    if (!pod || !isReady(pod) || this.mirrorOf(await this.podsOn(node), plan.component)) return false
    if (plan.component !== 'kube-apiserver' || singleNode) return this.apiHealthy()
    const path = `/api/v1/namespaces/${SYSTEM_NAMESPACE}/pods/https:${pod.metadata!.name}:${this.workloadSecurePort(plan)}/proxy/readyz`
    const res = await this.deps.api.raw('GET', path, {intent: {verb: 'get', resource: 'pods/proxy', namespace: SYSTEM_NAMESPACE}})
    return res.status === 200
  }

  /**
   * Hands one node's instance over: a node-side watchdog takes the static manifest away and
   * puts it back unless this CLI confirms in time that the self-hosted instance serves on its
   * own. The confirmation is itself a node task on that node, so it also proves that the
   * node's kubelet gets pods from the API again. Returns how the watchdog ended.
   */
  private async handoff(plan: ComponentPlan, node: string, stamp: string, state: PivotState): Promise<'moved' | 'restored'> {
    const {component} = plan
    const token = randomBytes(8).toString('hex')
    const requested = this.opts.handoffDeadlineSeconds ?? 180
    const deadline = component === 'kube-apiserver' ? (plan.handoff === 'blind' ? Math.max(requested, this.blindMinSeconds) : requested) : COMPONENT_HANDOFF_SECONDS
    const env: Record<string, string> = {COMPONENT: component, STAMP: stamp, DEADLINE: String(deadline), TOKEN: token}
    // The old instance goes only once the new one listens beside it (node-side, in the watchdog).
    if (plan.handoff === 'port-sharing') Object.assign(env, {PORT: hexPort(this.workloadSecurePort(plan)), SETTLE: String(this.opts.handoffSettleSeconds ?? HANDOFF_SETTLE_SECONDS)})
    if (plan.handoff === 'blind') {
      // Its pod has crash-looped on the busy port, perhaps up to the kubelet's 5-minute back-off:
      // a fresh pod starts its back-off anew, so it binds soon after the static one stops.
      const stale = this.workloadPodOf(await this.podsOn(node), component)
      if (stale) await this.deps.api.deletePod(SYSTEM_NAMESPACE, stale.metadata!.name!, 0).catch(() => undefined)
    }

    this.deps.log(`[${component}] ${node}: handing off (a node-side watchdog puts the static manifest back unless confirmed within ${deadline}s)`)
    let verdict: NodeTaskResult | undefined
    let failure: unknown
    const stopWatchdog = new AbortController()
    const watchdog = this.task(node, 'pivot-handoff', HANDOFF_SCRIPT, env, deadline + 60, stopWatchdog.signal).then(
      (r) => (verdict = r),
      (error: unknown) => {
        failure = error
      },
    )
    const ended = () => verdict !== undefined || failure !== undefined
    const singleNode = state.nodes.length === 1
    // The API stays up through a controller-manager or scheduler hand-off: no reason to wait long.
    const verifyMs = component === 'kube-apiserver' ? deadline * 1000 : Math.min(this.timeoutMs, deadline * 1000)
    let confirmed = false
    try {
      await this.waitFor(
        `the self-hosted ${component} on ${node} to serve on its own`,
        async () => {
          if (ended()) throw new CliError('the watchdog ended')
          return this.servesAlone(plan, node, singleNode)
        },
        verifyMs,
      ).then(
        () => (confirmed = true),
        (error: Error) => this.deps.log(`[${component}] ${node}: not confirmed (${error.message})`),
      )
      if (confirmed && !ended()) await this.taskOk(node, 'pivot-confirm', CONFIRM_SCRIPT, env)
    } catch (error) {
      // Anything unexpected: stop the watchdog now (it puts the manifest back), then report.
      stopWatchdog.abort()
      await watchdog
      throw error
    }

    if (!confirmed && !ended() && (await this.apiHealthy().catch(() => false))) {
      this.deps.log(`[${component}] ${node}: the API serves, so the watchdog is stopped now (it puts the static manifest back if it took it away)`)
      stopWatchdog.abort()
    } else if (!confirmed && !ended()) {
      this.deps.log(`[${component}] ${node}: the watchdog puts the static manifest back at its deadline`)
    }

    await watchdog
    if (stopWatchdog.signal.aborted) {
      const said = verdict?.output.trim().split('\n').filter(Boolean).pop()
      if (said) this.deps.log(`[${component}] ${node}: the watchdog's last word: ${said}`)
      await this.waitMirror(component, node, (p) => Boolean(p && isReady(p)), `the static ${component} on ${node} to be back and Ready`)
      return 'restored'
    }

    if (failure) throw failure
    if (verdict!.exitCode === 0) return 'moved'
    if (verdict!.exitCode === HANDOFF_RESTORED_EXIT) {
      this.deps.log(`[${component}] ${node}: ${verdict!.output.trim().split('\n').pop()}`)
      return 'restored'
    }

    throw new CliError(`the hand-off of ${component} on ${node} failed (exit ${verdict!.exitCode}): ${verdict!.output.trim().split('\n').pop() ?? ''}`)
  }

  /** Whether every node's checkpointer already guards the versions its self-hosted pods run (a re-run changes nothing then). */
  private async checkpointsCurrent(nodes: string[]): Promise<boolean> {
    const pods = (await this.deps.api.listPods(SYSTEM_NAMESPACE)).items
    const running = selfHostedVersions(pods)
    const covered = nodeCheckpoints(pods, nodes, running, this.now())
    return covered.every((c) => !c.gap && PIVOTED_COMPONENTS.every((component) => !running[c.node]?.[component] || c.checkpoints.some((k) => k.component === component)))
  }

  private checkpointDeps(): CheckpointDeps {
    return {
      api: this.deps.api,
      runTask: (task) => this.deps.runTask(task),
      log: (line) => this.deps.log(`[checkpoint] ${line}`),
      image: this.opts.image,
      namespace: this.opts.namespace,
      now: this.now,
      timeoutMs: this.timeoutMs,
      pollMs: this.pollMs,
      sleep: this.sleep,
      timings: this.opts.checkpointTimings,
    }
  }

  // ---- revert ------------------------------------------------------------------------------

  /**
   * Puts every backed-up manifest back (byte for byte, or with only the image the component runs
   * now after an upgrade), waits for the static pods, then deletes the self-hosted workloads.
   * Refuses before touching anything when a backup is missing or a rollout is in progress.
   */
  async revert(): Promise<RevertResult> {
    if (!this.opts.dryRun) await this.clearLeftovers()
    const state = await this.readState()
    const {components: plans, alreadyStatic} = planRevert(state)
    if (alreadyStatic) return {components: [], dryRun: Boolean(this.opts.dryRun), summary: ['nothing to revert: the control plane already runs from static manifests'], exitCode: ExitCode.ok}
    if (this.opts.dryRun) return {components: plans, dryRun: true, summary: [], exitCode: ExitCode.ok}
    await this.preflight(state, [
      ['delete', 'daemonsets', 'apps'],
      ['delete', 'deployments', 'apps'],
      ['delete', 'poddisruptionbudgets', 'policy'],
    ]).catch((error: Error) => {
      // A half-done pivot is exactly when revert is wanted: only permissions and the API must hold.
      if (error instanceof PreflightError && ['nodes', 'pods', 'leader'].includes(error.kind)) this.deps.log(`warning: ${error.message}`)
      else throw error
    })

    const summary: string[] = []
    // The checkpointer goes first: it must not start a copy while the static pods restart.
    const serving = servingFromCheckpoint(state.mirrorPods)
    if (serving.length > 0) {
      throw new CliError(`${serving.join(', ')} runs from its checkpoint (a recovery in progress): wait until the self-hosted pods took over (kubectl selfhost status), then revert; nothing changed`)
    }

    await removeCheckpoints(this.checkpointDeps(), state.nodes.map((n) => n.name))
    summary.push('checkpointer and checkpoints removed from every control-plane node')
    for (const plan of plans) {
      await this.revertComponent(plan)
      summary.push(`${plan.component}: ${restoredSummary(plan.restores)}${plan.workloads.length > 0 ? `; ${plan.workloads.map((w) => `${w.kind} ${w.name}`).join(', ')} deleted` : ''}`)
    }

    for (const files of state.files) {
      const backup = activeBackup(files)
      if (backup) await this.taskOk(files.node, 'pivot-retire', RETIRE_BACKUP_SCRIPT, {STAMP: backup.stamp})
    }

    summary.push('backups kept on the nodes, each marked with a REVERTED file')
    return {components: plans, dryRun: false, summary, exitCode: ExitCode.ok}
  }

  private async revertComponent(plan: RevertComponent): Promise<void> {
    const {component} = plan
    const log = (node: string | undefined, line: string) => this.deps.log(`[${component}]${node ? ` ${node}:` : ''} revert: ${line}`)
    // Without a content of its own the script copies the backup file itself.
    const restore = (r: RevertRestore, content = r.content) =>
      this.taskOk(r.node, 'pivot-restore', RESTORE_SCRIPT, {COMPONENT: component, STAMP: r.stamp, ...(content === undefined ? {} : {CONTENT: content})})
    const mirrorReady = (node: string, sharing: boolean) =>
      this.waitMirror(component, node, (p) => Boolean(p && isReady(p) && JSON.stringify(p.spec?.containers?.[0]?.command ?? []).includes('--permit-port-sharing') === sharing), `the static ${component} on ${node} to be Ready`)

    if (plan.portSharing && plan.workloads.length > 0) {
      // The self-hosted instances hold their ports with SO_REUSEPORT: a static one can join only with it too.
      for (const r of plan.restores) {
        const sharing = withPortSharing(restoredBytes(r), component)
        if (r.live !== sharing) await restore(r, sharing)
        await mirrorReady(r.node, true)
        log(r.node, 'static pod back, sharing the port with the self-hosted one')
      }
    } else {
      for (const r of plan.restores) {
        await restore(r)
        log(r.node, `original manifest back${keptImage(r)}`)
      }
    }

    for (const w of plan.workloads) {
      // The budget first: a re-run finds the Deployment and deletes both, never an orphaned budget.
      if (w.kind === 'Deployment') await this.deps.api.delete(pdbGroupVersion(plan), 'poddisruptionbudgets', SYSTEM_NAMESPACE, w.name)
      await this.deps.api.delete('apps/v1', w.kind === 'DaemonSet' ? 'daemonsets' : 'deployments', SYSTEM_NAMESPACE, w.name)
      log(undefined, `deleted ${w.kind} ${w.name}`)
    }

    await this.waitFor(`the self-hosted ${component} pods to go away`, async () =>
      (await this.deps.api.listPods(SYSTEM_NAMESPACE, {labelSelector: `${SELF_HOSTED_APP_LABEL}=${selfHostedName(component)}`})).items.length === 0,
    )
    for (const r of plan.restores) {
      if (plan.portSharing && plan.workloads.length > 0) {
        await restore(r)
        log(r.node, `original manifest back${keptImage(r) || ', byte for byte'}`)
      }

      await mirrorReady(r.node, portSharingIn(restoredBytes(r)))
    }

    await this.waitApiHealthy(`after reverting ${component}`)
  }
}

export type {RevertComponent} from './revert-plan.js'

export interface RevertResult {
  components: RevertComponent[]
  dryRun: boolean
  summary: string[]
  exitCode: number
}

/** policy/v1 from 1.21, v1beta1 before (gone in 1.25): the version that runs now, which an upgrade may have moved past 1.25. */
function pdbGroupVersion(plan: RevertComponent): string {
  const version = plan.restores[0] ? imageVersion(restoredBytes(plan.restores[0]), plan.component) : versionFromImage(plan.workloads.find((w) => w.image)?.image)
  const parsed = version ? semver.coerce(version) : null
  return parsed && semver.lt(parsed, '1.21.0') ? 'policy/v1beta1' : 'policy/v1'
}

/** How a restore differs from the backup, for the log: nothing, or the image it keeps. */
function keptImage(r: RevertRestore): string {
  return r.imageTo ? `, image kept at ${shortImage(r.imageTo)} (the backup had ${shortImage(r.imageFrom!)})` : ''
}

const shortImage = (image: string) => versionFromImage(image) ?? image

/** The summary of a component's restores, nodes grouped by whether the image was kept over the backup's. */
function restoredSummary(restores: RevertRestore[]): string {
  if (restores.length === 0) return 'static manifest restored on no node (already there)'
  const groups = new Map<string, string[]>()
  for (const r of restores) {
    const how = r.imageTo ? `(image kept at ${shortImage(r.imageTo)}, the backup had ${shortImage(r.imageFrom!)})` : 'byte for byte'
    groups.set(how, [...(groups.get(how) ?? []), r.node])
  }

  return [...groups].map(([how, nodes]) => `static manifest restored ${how} on ${nodes.join(', ')}`).join('; ')
}

function resourceOf(object: SelfHostedObject): string {
  return {DaemonSet: 'daemonsets', Deployment: 'deployments', PodDisruptionBudget: 'poddisruptionbudgets'}[object.kind as 'DaemonSet']
}

/** Wires a PivotRunner to a real cluster: its API and src/node's task pods (image: the cluster's kube-proxy image unless given). */
export async function connectPivotRunner(client: KubeClient, opts: Omit<PivotOptions, 'image'> & {image?: string}, log: (line: string) => void): Promise<PivotRunner> {
  const {deleteFinishedNodeTasks, runNodeTask} = await import('../node/runner.js')
  const {nodeTaskImage} = await import('../node/image.js')
  const image = opts.image ?? (await nodeTaskImage(client))
  const namespace = opts.namespace ?? SYSTEM_NAMESPACE
  return new PivotRunner(
    {
      api: client,
      runTask: (task, runOpts) => runNodeTask(client, task, {signal: runOpts?.signal, onWarning: (m) => log(`warning: ${m}`), onProgress: (m) => log(`${task.node}: ${m}`)}),
      cleanupTasks: () => deleteFinishedNodeTasks(client, namespace),
      log,
    },
    {...opts, image},
  )
}
