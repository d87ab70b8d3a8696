import type {V1DaemonSet, V1Deployment} from '../kube/types.js'
import {CliError, ExitCode} from '../errors.js'
import {type DiscoveryApi, discoverControlPlane} from '../controlplane/discover.js'
import {readLeader} from '../controlplane/leader.js'
import {type ComponentState, type Instance, type LeaderRecord, type PivotedComponent, SYSTEM_NAMESPACE} from '../controlplane/model.js'
import type {KubeClient} from '../kube/client.js'
import {isConflict} from '../kube/errors.js'
import {type RolloutStatus, TimeoutError, pollUntil, waitForRollout} from '../kube/wait.js'
import {type ScalePlan, planScale, plural, workloadHolder, workloadPods} from './plan.js'

/** Where scale records the count it changed, so a person can see (and restore) what was there. */
export const PREVIOUS_REPLICAS_ANNOTATION = 'selfhost.kubectl.io/previous-replicas'

/** client-go's default retry period: a live elector renews, or a standby tries to acquire, this often. */
const ELECTION_RETRY_SECONDS = 2

export type ScaleApi = DiscoveryApi & Pick<KubeClient, 'getDeployment' | 'getDaemonSet' | 'patch' | 'getLease'>

export interface ScaleOptions {
  component: PivotedComponent
  replicas: number
  force: boolean
  dryRun: boolean
  /** How long the new replicas may take to become Ready before the change is rolled back. */
  timeoutMs: number
  onProgress?: (line: string) => void
  /** Called with the plan before anything changes (also on dry runs). */
  onPlan?: (plan: ScalePlan, dryRun: boolean) => void
  /** Injected by tests. */
  sleep?: (ms: number) => Promise<void>
  now?: () => number
}

export interface Leadership {
  leader?: LeaderRecord
  /** The workload's pod holding the lease, when the holder matches one. */
  leaderPod?: string
  standbys: Array<{pod: string; node: string}>
  /** Pods of the workload that are not Ready (Pending, starting, failing). */
  notReady: Array<{pod: string; node: string; phase: string}>
  /** Why the holder is none of the workload's pods, when it is not. */
  holderElsewhere?: string
}

export interface LeaseRenewal {
  lease: string
  /** The lease was renewed (or taken over) after the change. */
  renewed: boolean
  before?: string
  after?: string
  holderBefore?: string
  holderAfter?: string
  /** Time from our first read to the first advance of renewTime. */
  observedWithinMs?: number
  /** How long we were willing to wait: leaseDurationSeconds plus one retry period. */
  windowMs: number
}

export interface ScaleResult {
  plan: ScalePlan
  dryRun: boolean
  /** The replica count was written (false on dry runs and when it already matched). */
  patched: boolean
  rollout?: Pick<RolloutStatus, 'desired' | 'ready' | 'updated' | 'current'>
  leadership?: Leadership
  renewal?: LeaseRenewal
  /** What the sandbox or the cluster could not prove, in a line each. */
  caveats: string[]
}

function requireComponent(components: ComponentState[], name: PivotedComponent): ComponentState {
  const state = components.find((c) => c.name === name)
  if (!state) throw new CliError(`discovery returned no ${name}; this is a bug in kubectl-selfhost`)
  return state
}

async function readWorkload(api: ScaleApi, state: ComponentState): Promise<V1Deployment | V1DaemonSet | undefined> {
  const deployment = state.workloads.find((w) => w.kind === 'Deployment')
  if (deployment) return api.getDeployment(deployment.namespace, deployment.name)
  const daemonSet = state.workloads.find((w) => w.kind === 'DaemonSet')
  return daemonSet ? api.getDaemonSet(daemonSet.namespace, daemonSet.name) : undefined
}

function leadershipOf(leader: LeaderRecord | undefined, pods: Instance[]): Leadership {
  const holder = workloadHolder(leader, pods)
  const leaderPod = holder.pod
  const leaderNode = pods.find((p) => p.pod === leaderPod)?.node
  return {
    leader: leader ? {...leader, pod: leaderPod, node: leaderNode} : undefined,
    leaderPod,
    standbys: pods.filter((p) => p.ready && p.pod !== leaderPod).map((p) => ({pod: p.pod, node: p.node})),
    notReady: pods.filter((p) => !p.ready).map((p) => ({pod: p.pod, node: p.node, phase: p.phase})),
    holderElsewhere: holder.elsewhere,
  }
}

/**
 * Watches the lock after the change: a healthy election renews it every retry period, and
 * if the leader's pod went away a standby takes it over once it expires. Either way
 * renewTime must advance within leaseDurationSeconds plus one retry period of our first read.
 */
async function watchRenewal(api: ScaleApi, plan: ScalePlan, first: LeaderRecord | undefined, opts: ScaleOptions): Promise<LeaseRenewal> {
  const now = opts.now ?? Date.now
  const lease = `${plan.leaderElection.lease.namespace}/${plan.leaderElection.lease.name}`
  const windowMs = ((first?.leaseDurationSeconds ?? 15) + ELECTION_RETRY_SECONDS) * 1000
  const started = now()
  const base = {lease, before: first?.renewTime, holderBefore: first?.holder, windowMs}
  try {
    const advanced = await pollUntil(
      async () => {
        const current = await readLeader(api, plan.leaderElection.lease, new Date(now()))
        const moved = Boolean(current?.renewTime && (!first?.renewTime || Date.parse(current.renewTime) > Date.parse(first.renewTime)))
        return {done: moved, value: current, progress: `lease ${lease} renewed at ${current?.renewTime ?? 'never'} by ${current?.holder ?? 'nobody'}`}
      },
      {timeoutMs: windowMs, intervalMs: 500, what: `lease ${lease} to be renewed`, onProgress: undefined, sleep: opts.sleep, now},
    )
    return {...base, renewed: true, after: advanced?.renewTime, holderAfter: advanced?.holder, observedWithinMs: now() - started}
  } catch (error) {
    if (!(error instanceof TimeoutError)) throw error
    return {...base, renewed: false}
  }
}

/** Writes the count with the resourceVersion we planned from, recording the previous one. */
async function patchReplicas(api: ScaleApi, plan: ScalePlan, replicas: number, previous: number, guardVersion: boolean): Promise<void> {
  const {namespace, name} = plan.workload
  try {
    await api.patch<V1Deployment>(
      'apps/v1',
      'deployments',
      namespace,
      name,
      {
        metadata: {
          ...(guardVersion ? {resourceVersion: plan.workload.resourceVersion} : {}),
          annotations: {[PREVIOUS_REPLICAS_ANNOTATION]: String(previous)},
        },
        spec: {replicas},
      },
      'application/merge-patch+json',
    )
  } catch (error) {
    if (isConflict(error)) {
      throw new CliError(
        `Deployment ${namespace}/${name} changed after it was read (someone else is editing it); run the command again to plan from its new state`,
      )
    }

    throw error
  }
}

async function observe(api: ScaleApi, opts: ScaleOptions, plan: ScalePlan): Promise<{leadership: Leadership; leader?: LeaderRecord}> {
  const plane = await discoverControlPlane(api, {now: new Date((opts.now ?? Date.now)())})
  const state = requireComponent(plane.components, opts.component)
  const pods = workloadPods(state)
  // No Lease or Endpoints of that name: discovery may have found the leader in a ConfigMap lock.
  const leader = (await readLeader(api, plan.leaderElection.lease, new Date((opts.now ?? Date.now)()))) ?? state.leader
  return {leadership: leadershipOf(leader, pods), leader}
}

/**
 * Plans and, unless dry-run, performs one scaling: patch the replica count, wait until the
 * replicas are Ready, then show who leads and check the lock keeps being renewed. A change
 * that does not get Ready in time, or after which nobody renews the lock, is rolled back.
 */
export async function scaleComponent(api: ScaleApi, opts: ScaleOptions): Promise<ScaleResult> {
  const progress = opts.onProgress ?? (() => undefined)
  const [plane, nodes] = await Promise.all([discoverControlPlane(api), api.listNodes()])
  const state = requireComponent(plane.components, opts.component)
  const workload = await readWorkload(api, state)
  const request = {component: opts.component, replicas: opts.replicas, force: opts.force}
  const now = new Date((opts.now ?? Date.now)())
  let plan = planScale(request, {state, workload, nodes: nodes.items, now})
  const {lease} = plan.leaderElection
  // Discovery reads the default lock; flags may name another one, which is the one that counts.
  if (lease.namespace !== SYSTEM_NAMESPACE || lease.name !== opts.component) {
    plan = planScale(request, {state: {...state, leader: await readLeader(api, lease, now)}, workload, nodes: nodes.items, now})
  }
  opts.onPlan?.(plan, opts.dryRun)
  if (opts.dryRun) return {plan, dryRun: true, patched: false, caveats: []}

  const ref = {kind: 'Deployment' as const, namespace: plan.workload.namespace, name: plan.workload.name}
  const patched = plan.change !== 'none'
  if (patched) {
    progress(`scaling ${ref.kind} ${ref.namespace}/${ref.name} from ${plan.from} to ${plural(plan.to, 'replica')}`)
    await patchReplicas(api, plan, plan.to, plan.from, true)
  }

  const rollout = await waitForRollout(api, ref, {
    timeoutMs: opts.timeoutMs,
    readyTarget: plan.placement.readyTarget,
    onProgress: progress,
    sleep: opts.sleep,
    now: opts.now,
  }).catch((error: Error) => {
    if (!patched) throw error
    return rollBack(api, opts, plan, `the ${plan.to} replicas did not get Ready: ${error.message}`)
  })

  const {leadership, leader} = await observe(api, opts, plan)
  const caveats: string[] = []
  let renewal: LeaseRenewal | undefined
  if (plan.to > 0 && plan.leaderElection.enabled) {
    progress(`checking that ${plan.leaderElection.lease.namespace}/${plan.leaderElection.lease.name} keeps being renewed`)
    renewal = await watchRenewal(api, plan, leader, opts)
    if (!renewal.renewed && patched) {
      await rollBack(api, opts, plan, `nobody renewed lease ${renewal.lease} within ${renewal.windowMs / 1000}s after scaling to ${plan.to}`)
    }

    if (!renewal.renewed)
      throw new CliError(
        `nobody renewed lease ${renewal.lease} within ${renewal.windowMs / 1000}s: ${opts.component} has no working leader`,
        ExitCode.unhealthy,
      )
  } else if (plan.to === 0) {
    caveats.push('no replicas remain, so no lease renewal is expected; the lease goes stale')
  } else {
    caveats.push('leader election is off: there is no lease to check')
  }

  if (leadership.holderElsewhere) {
    caveats.push(`${leadership.holderElsewhere}; so the renewals prove only that some ${opts.component} leads, not that a replica of ${ref.name} does`)
  }

  return {
    plan,
    dryRun: false,
    patched,
    rollout: {desired: rollout.desired, ready: rollout.ready, updated: rollout.updated, current: rollout.current},
    leadership,
    renewal,
    caveats,
  }
}

/** Puts the previous count back, waits for it, and stops with exit code 3 (or 1 if even that fails). */
async function rollBack(api: ScaleApi, opts: ScaleOptions, plan: ScalePlan, why: string): Promise<never> {
  const progress = opts.onProgress ?? (() => undefined)
  progress(`${why}; rolling back to ${plural(plan.from, 'replica')}`)
  await patchReplicas(api, plan, plan.from, plan.to, false)
  const ref = {kind: 'Deployment' as const, namespace: plan.workload.namespace, name: plan.workload.name}
  try {
    await waitForRollout(api, ref, {timeoutMs: opts.timeoutMs, onProgress: progress, sleep: opts.sleep, now: opts.now})
  } catch (error) {
    throw new CliError(`${why}; rolled back to ${plural(plan.from, 'replica')}, but that did not get Ready either: ${(error as Error).message}`)
  }

  throw new CliError(`${why}; rolled back to ${plural(plan.from, 'replica')}, Ready again`, ExitCode.rolledBack)
}
