import {randomBytes} from 'node:crypto'

import type {V1Deployment} from '../kube/types.js'

import {writeCheckpoints} from '../checkpoint/install.js'
import {nodeCheckpoints, selfHostedVersions} from '../checkpoint/status.js'
import {securePort} from '../controlplane/container.js'
import {MANIFESTS_DIR, PIVOTED_COMPONENTS, type PivotedComponent, SELF_HOSTED_APP_LABEL, SYSTEM_NAMESPACE, isMirrorPod} from '../controlplane/model.js'
import {CliError, ExitCode} from '../errors.js'
import type {KubeClient} from '../kube/client.js'
import {isReady} from '../kube/objects.js'
import {hexPort} from '../node/listeners.js'
import type {NodeTaskResult} from '../node/runner.js'
import {type ClusterOptions, PivotCluster, type PivotDeps, mirrorOf, workloadPodOf} from './cluster.js'
import {manifestFileName, manifestFromMirrorPod, withPortSharing} from './manifest.js'
import {BACKUP_DIR, CONFIRM_SCRIPT, HANDOFF_RESTORED_EXIT, HANDOFF_SCRIPT, PREPARE_SCRIPT, activeBackup, backupStamp} from './node-scripts.js'
import {BLIND_HANDOFF_MIN_SECONDS, ComponentPlan, HANDOFF_SETTLE_SECONDS, PivotPlan, SelfHostedObject, planPivot} from './plan.js'
import {preflight} from './preflight.js'
import {type RevertResult, revertPivot} from './revert.js'
import {type PivotState, describeProgress, originalManifests, readLeaders, readSettledState, readState} from './state.js'

export interface PivotOptions extends ClusterOptions {
  dryRun?: boolean
  /** Plan from the mirror pods alone (with dryRun): no node pods, hashes of the mirror pods, not the files. */
  fromMirrorPods?: boolean
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

const MANIFEST_PATH = (component: PivotedComponent) => `${MANIFESTS_DIR}/${manifestFileName(component)}`
const BACKUP_PATH = (stamp: string, component: PivotedComponent) => `${BACKUP_DIR}/${stamp}/${manifestFileName(component)}`
/** The watchdog of a controller-manager or scheduler hand-off: the API stays up, so this is plenty. */
const COMPONENT_HANDOFF_SECONDS = 180

/**
 * Runs pivot (and, through revert.ts, revert) against one cluster: every decision is taken from
 * what the cluster and nodes show now (state.ts), checked first by preflight.ts.
 */
export class PivotRunner {
  private readonly cluster: PivotCluster
  private readonly blindMinSeconds: number

  constructor(
    deps: PivotDeps,
    private readonly opts: PivotOptions,
  ) {
    this.cluster = new PivotCluster(deps, opts)
    this.blindMinSeconds = opts.blindHandoffMinSeconds ?? BLIND_HANDOFF_MIN_SECONDS
  }

  /** Undoes a pivot, finished or not (see revertPivot); also what a failed hand-off ends in. */
  revert(): Promise<RevertResult> {
    return revertPivot(this.cluster, {dryRun: this.opts.dryRun})
  }

  async pivot(): Promise<PivotResult> {
    if (this.opts.fromMirrorPods && !this.opts.dryRun) {
      throw new CliError('--from-mirror-pods only plans: add --dry-run (pivot itself reads the files on the nodes, to back them up byte for byte)')
    }

    const state = this.opts.dryRun
      ? await readState(this.cluster.api, this.opts.fromMirrorPods ? undefined : this.cluster.readNodeFiles)
      : await readSettledState(this.cluster)
    const checkpoint = this.opts.checkpoint ?? true
    const leaders = await readLeaders(this.cluster.api, state.nodes)

    // Backups count as manifests: a re-run after any interruption (even after the last move)
    // plans the same objects and only finishes what is left. With no backups and no live
    // manifests the planner refuses (already self-hosted, or no static control plane).
    const plan = planPivot({
      manifests: this.opts.fromMirrorPods ? state.mirrorPods.flatMap((p) => manifestFromMirrorPod(p) ?? []) : originalManifests(state),
      nodes: state.nodes,
      existingWorkloads: state.existing,
      leaders,
      handoffDeadlineSeconds: this.opts.handoffDeadlineSeconds,
      checkpoint,
      forceBlindHandoff: this.opts.forceBlindHandoff,
    })

    if (this.opts.fromMirrorPods) {
      plan.notes.push(
        'Planned from the mirror pods, without node pods: the objects match what pivot applies up to API defaults, but the source hashes are of the mirror pods; pivot takes them from the files.',
      )
    }

    const alreadyDone = describeProgress(plan, state)
    if (this.opts.dryRun) return {plan, alreadyDone, dryRun: true, outcome: 'planned', summary: [], exitCode: ExitCode.ok}

    await preflight(this.cluster, state)
    for (const cost of plan.costs) this.cluster.log(`note: ${cost}`)
    const stamps = new Map(state.files.map((f) => [f.node, activeBackup(f)?.stamp ?? backupStamp(this.cluster.now())]))
    const summary: string[] = []
    for (const component of plan.components) {
      const outcome = await this.pivotComponent(component, state, stamps)
      if (outcome === 'rolled-back') {
        this.cluster.log(`${component.component}: hand-off failed and the static manifest was put back; reverting the whole pivot`)
        await this.revert()
        return {
          plan,
          alreadyDone,
          dryRun: false,
          outcome: 'rolled-back',
          summary: [`${component.component} hand-off failed; the static control plane was restored`],
          exitCode: ExitCode.rolledBack,
        }
      }

      summary.push(`${component.component}: ${component.kind} ${SYSTEM_NAMESPACE}/${component.name} serving on ${component.nodeOrder.join(', ')}`)
    }

    summary.push(`backups: ${[...new Set(stamps.values())].map((s) => `${BACKUP_DIR}/${s}/`).join(', ')} on every control-plane node`)
    if (checkpoint && (await this.checkpointsCurrent(plan.nodes))) {
      summary.push('checkpoints: already current on every control-plane node')
    } else if (checkpoint) {
      try {
        const written = await writeCheckpoints(this.cluster.checkpointDeps(), plan.nodes, Object.fromEntries(plan.nodes.map((n) => [n, plan.perNode[n]?.ip])))
        summary.push(
          `checkpoints: ${written.map((w) => `${w.node} (${w.checkpoints.map((c) => c.component.replace(/^kube-/, '')).join(', ')})`).join(', ')}, each with a checkpointer`,
        )
      } catch (error) {
        if (!(error instanceof CliError)) throw error
        throw new CliError(
          `the control plane is self-hosted, but its checkpoints could not be installed: ${(error as Error).message}; run \`kubectl selfhost pivot\` again to retry`,
        )
      }
    }

    return {plan, alreadyDone, dryRun: false, outcome: 'completed', summary, exitCode: ExitCode.ok}
  }

  private async pivotComponent(plan: ComponentPlan, state: PivotState, stamps: Map<string, string>): Promise<'done' | 'rolled-back'> {
    const {component} = plan
    const log = (node: string | undefined, line: string) => this.cluster.log(`[${component}]${node ? ` ${node}:` : ''} ${line}`)
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
        await this.cluster.taskOk(node, 'pivot-backup', PREPARE_SCRIPT, env)
        log(node, `backed up${env.NEW_CONTENT === undefined ? '' : ' and restarted the static pod with --permit-port-sharing'}`)
      }

      if (target !== undefined) {
        await this.cluster.waitMirror(
          component,
          node,
          (p) => Boolean(p && isReady(p) && JSON.stringify(p.spec?.containers?.[0]?.command ?? []).includes('--permit-port-sharing')),
          `the static ${component} on ${node} to run with port sharing and be Ready`,
        )
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

    for (const object of plan.objects) await this.cluster.api.apply(object.apiVersion, resourceOf(object), object)
    log(undefined, `applied ${plan.objects.map((o) => `${o.kind}/${o.metadata!.name}`).join(', ')}`)

    for (const node of plan.nodeOrder) {
      if (replicas < plan.nodeOrder.length) {
        // Handed off on an earlier run and scaled since: the node may rightly have no pod; the replicas are checked together below.
        await this.cluster.waitMirror(component, node, (p) => p === undefined, `the mirror pod ${component}-${node} to go away`)
        continue
      }

      if (pending(node) !== undefined) {
        await this.cluster.waitFor(
          portSharing ? `the self-hosted ${component} pod on ${node} to be Ready` : `a self-hosted ${component} pod on ${node}`,
          async () => {
            const pod = workloadPodOf(await this.cluster.podsOn(node), component)
            return Boolean(pod && (!portSharing || isReady(pod)))
          },
        )
        const result = await this.handoff(plan, node, stamps.get(node)!, state)
        if (result === 'restored') return 'rolled-back'
        log(node, 'hand-off confirmed: the static manifest is gone from the node (its original stays in the backup)')
      }

      await this.cluster.waitMirror(component, node, (p) => p === undefined, `the mirror pod ${component}-${node} to go away`)
      await this.cluster.waitFor(`the self-hosted ${component} on ${node} to be Ready`, async () => {
        const pod = workloadPodOf(await this.cluster.podsOn(node), component)
        return Boolean(pod && isReady(pod))
      })
      await this.cluster.waitApiHealthy(`after the ${component} hand-off on ${node}`)
      filesOf(node).manifests[component] = undefined
      filesOf(node).held[component] = undefined
      log(node, 'self-hosted instance Ready, mirror pod gone, API healthy')
    }

    if (replicas < plan.nodeOrder.length) {
      await this.cluster.waitFor(`${replicas} Ready pod(s) of ${plan.kind} ${SYSTEM_NAMESPACE}/${plan.name}`, async () => {
        const pods = (await this.cluster.api.listPods(SYSTEM_NAMESPACE, {labelSelector: `${SELF_HOSTED_APP_LABEL}=${plan.name}`})).items
        return pods.filter((p) => !p.metadata?.deletionTimestamp && !isMirrorPod(p) && isReady(p)).length >= replicas
      })
      await this.cluster.waitApiHealthy(`with ${component} at ${replicas} replica(s)`)
      log(undefined, `${replicas} replica(s) Ready (scaled below one per node), mirror pods gone, API healthy`)
    }

    return 'done'
  }

  /** The port the component's self-hosted instance serves HTTPS (and its health) on. */
  private workloadSecurePort(plan: ComponentPlan): number {
    const container = (plan.objects[0] as {spec: {template: {spec: {containers: Array<{command?: string[]; args?: string[]}>}}}}).spec.template.spec
      .containers[0]
    return securePort(plan.component, container)
  }

  /**
   * Whether the self-hosted instance on the node serves on its own, asked only once the static
   * one is gone (with port sharing, answers before that may come from the old process). One
   * control-plane node: the API itself is that instance. Several: the API server proxies to the
   * new pod's own address, so the answer comes from that node's instance, not a load balancer's choice.
   */
  private async servesAlone(plan: ComponentPlan, node: string, singleNode: boolean): Promise<boolean> {
    const pod = workloadPodOf(await this.cluster.podsOn(node), plan.component)
    if (!pod || !isReady(pod) || mirrorOf(await this.cluster.podsOn(node), plan.component)) return false
    if (plan.component !== 'kube-apiserver' || singleNode) return this.cluster.apiHealthy()
    const path = `/api/v1/namespaces/${SYSTEM_NAMESPACE}/pods/https:${pod.metadata!.name}:${this.workloadSecurePort(plan)}/proxy/readyz`
    const res = await this.cluster.api.raw('GET', path, {intent: {verb: 'get', resource: 'pods/proxy', namespace: SYSTEM_NAMESPACE}})
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
    const deadline =
      component === 'kube-apiserver' ? (plan.handoff === 'blind' ? Math.max(requested, this.blindMinSeconds) : requested) : COMPONENT_HANDOFF_SECONDS
    const env: Record<string, string> = {COMPONENT: component, STAMP: stamp, DEADLINE: String(deadline), TOKEN: token}
    // The old instance goes only once the new one listens beside it (node-side, in the watchdog).
    if (plan.handoff === 'port-sharing')
      Object.assign(env, {PORT: hexPort(this.workloadSecurePort(plan)), SETTLE: String(this.opts.handoffSettleSeconds ?? HANDOFF_SETTLE_SECONDS)})
    if (plan.handoff === 'blind') {
      // Its pod has crash-looped on the busy port, perhaps up to the kubelet's 5-minute back-off:
      // a fresh pod starts its back-off anew, so it binds soon after the static one stops.
      const stale = workloadPodOf(await this.cluster.podsOn(node), component)
      if (stale) await this.cluster.api.deletePod(SYSTEM_NAMESPACE, stale.metadata!.name!, 0).catch(() => undefined)
    }

    this.cluster.log(`[${component}] ${node}: handing off (a node-side watchdog puts the static manifest back unless confirmed within ${deadline}s)`)
    let verdict: NodeTaskResult | undefined
    let failure: unknown
    const stopWatchdog = new AbortController()
    const watchdog = this.cluster.task(node, 'pivot-handoff', HANDOFF_SCRIPT, env, deadline + 60, stopWatchdog.signal).then(
      (r) => (verdict = r),
      (error: unknown) => {
        failure = error
      },
    )
    const ended = () => verdict !== undefined || failure !== undefined
    const singleNode = state.nodes.length === 1
    // The API stays up through a controller-manager or scheduler hand-off: no reason to wait long.
    const verifyMs = component === 'kube-apiserver' ? deadline * 1000 : Math.min(this.cluster.timeoutMs, deadline * 1000)
    let confirmed = false
    try {
      await this.cluster
        .waitFor(
          `the self-hosted ${component} on ${node} to serve on its own`,
          async () => {
            if (ended()) throw new CliError('the watchdog ended')
            return this.servesAlone(plan, node, singleNode)
          },
          verifyMs,
        )
        .then(
          () => (confirmed = true),
          (error: Error) => this.cluster.log(`[${component}] ${node}: not confirmed (${error.message})`),
        )
      if (confirmed && !ended()) await this.cluster.taskOk(node, 'pivot-confirm', CONFIRM_SCRIPT, env)
    } catch (error) {
      // Anything unexpected: stop the watchdog now (it puts the manifest back), then report.
      stopWatchdog.abort()
      await watchdog
      throw error
    }

    if (!confirmed && !ended() && (await this.cluster.apiHealthy().catch(() => false))) {
      this.cluster.log(`[${component}] ${node}: the API serves, so the watchdog is stopped now (it puts the static manifest back if it took it away)`)
      stopWatchdog.abort()
    } else if (!confirmed && !ended()) {
      this.cluster.log(`[${component}] ${node}: the watchdog puts the static manifest back at its deadline`)
    }

    await watchdog
    if (stopWatchdog.signal.aborted) {
      const said = verdict?.output.trim().split('\n').filter(Boolean).pop()
      if (said) this.cluster.log(`[${component}] ${node}: the watchdog's last word: ${said}`)
      await this.cluster.waitMirror(component, node, (p) => Boolean(p && isReady(p)), `the static ${component} on ${node} to be back and Ready`)
      return 'restored'
    }

    // eslint-disable-next-line @typescript-eslint/only-throw-error -- rethrows what the hand-off threw, as it was caught
    if (failure) throw failure
    if (verdict!.exitCode === 0) return 'moved'
    if (verdict!.exitCode === HANDOFF_RESTORED_EXIT) {
      this.cluster.log(`[${component}] ${node}: ${verdict!.output.trim().split('\n').pop()}`)
      return 'restored'
    }

    throw new CliError(`the hand-off of ${component} on ${node} failed (exit ${verdict!.exitCode}): ${verdict!.output.trim().split('\n').pop() ?? ''}`)
  }

  /** Whether every node's checkpointer already guards the versions its self-hosted pods run (a re-run changes nothing then). */
  private async checkpointsCurrent(nodes: string[]): Promise<boolean> {
    const pods = (await this.cluster.api.listPods(SYSTEM_NAMESPACE)).items
    const running = selfHostedVersions(pods)
    const covered = nodeCheckpoints(pods, nodes, running, this.cluster.now())
    return covered.every(
      (c) => !c.gap && PIVOTED_COMPONENTS.every((component) => !running[c.node]?.[component] || c.checkpoints.some((k) => k.component === component)),
    )
  }
}

function resourceOf(object: SelfHostedObject): string {
  return {DaemonSet: 'daemonsets', Deployment: 'deployments', PodDisruptionBudget: 'poddisruptionbudgets'}[object.kind as 'DaemonSet']
}

/** Wires a PivotRunner to a real cluster: its API and src/node's task pods (image: the cluster's kube-proxy image unless given). */
export async function connectPivotRunner(
  client: KubeClient,
  opts: Omit<PivotOptions, 'image'> & {image?: string},
  log: (line: string) => void,
): Promise<PivotRunner> {
  const {deleteFinishedNodeTasks, runNodeTask} = await import('../node/runner.js')
  const {nodeTaskImage} = await import('../node/image.js')
  const image = opts.image ?? (await nodeTaskImage(client))
  return new PivotRunner(
    {
      api: client,
      runTask: (task, runOpts) =>
        runNodeTask(client, task, {signal: runOpts?.signal, onWarning: (m) => log(`warning: ${m}`), onProgress: (m) => log(`${task.node}: ${m}`)}),
      cleanupTasks: (namespace) => deleteFinishedNodeTasks(client, namespace),
      log,
    },
    {...opts, image},
  )
}
