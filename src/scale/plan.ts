import type {V1DaemonSet, V1Deployment, V1Node, V1PodSpec} from '../kube/types.js'
import {CliError} from '../errors.js'
import {type ComponentState, type Instance, type LeaderRecord, type PivotedComponent, SYSTEM_NAMESPACE, selfHostedName} from '../controlplane/model.js'
import {boolFlag, containerArgv, flagValue} from '../controlplane/container.js'
import {holderElsewhere, matchHolder} from '../controlplane/leader.js'
import {placementOf} from './placement.js'

/**
 * The rules of `scale`, pure: from what discovery saw and the workload's own spec, decide
 * whether a replica count is safe and what it does to leadership. Every refusal is a
 * CliError with one line saying why.
 */

export const plural = (n: number, noun: string): string => `${n} ${noun}${n === 1 ? '' : 's'}`

export type ScalableComponent = 'kube-scheduler' | 'kube-controller-manager'

const COMPONENT_ALIASES: Record<string, PivotedComponent> = {
  'kube-scheduler': 'kube-scheduler',
  scheduler: 'kube-scheduler',
  'kube-controller-manager': 'kube-controller-manager',
  'controller-manager': 'kube-controller-manager',
  'kube-apiserver': 'kube-apiserver',
  apiserver: 'kube-apiserver',
}

/** Components that exist but are not this command's to scale, with where to go instead. */
const NOT_SCALED_HERE: Record<string, string> = {
  etcd: 'etcd is not scaled by replicas: its members are changed with `etcdctl member add/remove`, and it stays static',
  'kube-proxy': 'kube-proxy is a DaemonSet with one instance per node: it follows the nodes, not a replica count',
  coredns: 'CoreDNS is an ordinary Deployment: use `kubectl -n kube-system scale deployment coredns --replicas N`',
}

export function resolveComponent(name: string): PivotedComponent {
  const resolved = COMPONENT_ALIASES[name]
  if (resolved) return resolved
  if (NOT_SCALED_HERE[name]) throw new CliError(NOT_SCALED_HERE[name])
  throw new CliError(`unknown component "${name}"; known: ${Object.keys(COMPONENT_ALIASES).join(', ')}`)
}

export function parseReplicas(text: string): number {
  const trimmed = text.trim()
  if (/^-\d+$/.test(trimmed)) throw new CliError(`--replicas ${text}: a replica count cannot be negative; use 0 or more`)
  // Accept "3" and "+3" as Kubernetes would; refuse "1.5", "3x", "" and friends.
  if (!/^\+?\d+$/.test(trimmed)) throw new CliError(`--replicas "${text}" is not a whole number; use 0, 1, 2, ...`)
  const value = Number(trimmed)
  if (!Number.isSafeInteger(value) || value > 2_147_483_647) throw new CliError(`--replicas ${text} is too large`)
  return value
}

export interface LeaderElectionSettings {
  /** --leader-elect as the process sees it; true is the default of both components. */
  enabled: boolean
  /** Where the lock lives: --leader-elect-resource-namespace/-name, defaulting as the components do. */
  lease: {namespace: string; name: string}
  /** Set when a --config file may override what the flags say; the API cannot show its contents. */
  configFile?: string
}

/** Reads leader election from a component's command line (command + args of its container). */
export function leaderElectionFromArgs(component: ScalableComponent, argv: string[]): LeaderElectionSettings {
  // On by default in both components; `--leader-elect false` is not how pflag reads booleans.
  const enabled = boolFlag(argv, 'leader-elect', true)
  return {
    enabled,
    lease: {
      namespace: flagValue(argv, 'leader-elect-resource-namespace') ?? SYSTEM_NAMESPACE,
      name: flagValue(argv, 'leader-elect-resource-name') ?? component,
    },
    configFile: flagValue(argv, 'config') || undefined,
  }
}

/** The command line of the component's container: the one named after it, else the first. */
export function componentArgv(component: PivotedComponent, spec: V1PodSpec): string[] {
  const container =
    spec.containers.find((c) => c.name === component) ??
    spec.containers.find((c) => [...(c.command ?? []), ...(c.args ?? [])].some((a) => a.endsWith(component))) ??
    spec.containers[0]
  return container ? containerArgv(container) : []
}

export interface ScaleRequest {
  component: PivotedComponent
  replicas: number
  force: boolean
}

export interface ScaleInputs {
  /** Discovery's view of the component: hosting mode, instances, workloads, leader. */
  state: ComponentState
  /** The raw self-hosted workload named in state.workloads (its spec holds args and placement). */
  workload?: V1Deployment | V1DaemonSet
  nodes: V1Node[]
  /** When the inputs were read: pod ages decide which pods a scale-down removes. */
  now: Date
}

export interface ScalePlan {
  component: ScalableComponent
  workload: {kind: 'Deployment'; namespace: string; name: string; managedByUs: boolean; resourceVersion?: string}
  from: number
  to: number
  change: 'up' | 'down' | 'none'
  leaderElection: LeaderElectionSettings
  placement: {
    eligibleNodes: string[]
    onePerNodeBecause?: string
    /** How many replicas can become Ready; less than `to` when the nodes cannot hold them all. */
    readyTarget: number
  }
  leadership: {
    leader?: LeaderRecord
    /** The leader's pod when the lease holder matches a pod of this workload. */
    leaderPod?: string
    /** Why the holder is none of the workload's pods, when it is not. */
    holderElsewhere?: string
    /** Ready pods of the workload that do not hold the lease. */
    standbys: string[]
    /** Scale-down: pods the ReplicaSet controller is expected to remove. */
    expectedRemovals: string[]
    /** Scale-down: where its ranking ties, it removes `count` more of `among`. */
    possibleRemovals?: {count: number; among: string[]}
    added: number
    /** One sentence: what the change does to who leads. */
    effect: string
  }
  warnings: string[]
  notes: string[]
}

const CONSEQUENCE_OF_ZERO: Record<ScalableComponent, string> = {
  'kube-scheduler':
    'with 0 kube-scheduler replicas nothing schedules pods: every new pod, including the scheduler pod you would scale back up to, stays Pending until you bind it by hand or restore a static scheduler',
  'kube-controller-manager':
    "with 0 kube-controller-manager replicas no controller runs (Deployments, ReplicaSets, nodes, garbage collection), and scaling back up creates no pod because creating it is the controller-manager's own job: you would need a static manifest again (`kubectl selfhost revert`)",
}

function workloadRef(state: ComponentState) {
  return state.workloads.map((w) => `${w.kind} ${w.namespace}/${w.name}`).join(', ')
}

function nodesOf(instances: Instance[]): string {
  const nodes = [...new Set(instances.map((i) => i.node).filter(Boolean))].sort()
  return nodes.length > 0 ? ` on ${nodes.join(', ')}` : ''
}

function refuseUnscalableHosting(request: ScaleRequest, state: ComponentState): void {
  const c = request.component
  switch (state.mode) {
    case 'absent':
      throw new CliError(`${c} was not found in the cluster (no static or self-hosted pods): a managed control plane is not this tool's to scale`)
    case 'static':
      throw new CliError(
        `${c} runs as static pods${nodesOf(state.instances)} from /etc/kubernetes/manifests, which have no replica count; run \`kubectl selfhost pivot\` first to make it a self-hosted workload`,
      )
    case 'mixed':
      throw new CliError(
        `${c} runs both as static pods and as ${workloadRef(state)}: a pivot is under way; finish it with \`kubectl selfhost pivot\` (or undo it with \`revert\`) before scaling`,
      )
    case 'self-hosted':
      break
  }
}

function explainDaemonSet(component: PivotedComponent, daemonSet: V1DaemonSet | undefined, state: ComponentState, nodes: V1Node[]): never {
  const ref = state.workloads.find((w) => w.kind === 'DaemonSet')
  const name = `${ref?.namespace ?? SYSTEM_NAMESPACE}/${ref?.name ?? selfHostedName(component)}`
  const spec = daemonSet?.spec?.template?.spec
  const selector = Object.entries(spec?.nodeSelector ?? {}).map(([k, v]) => (v ? `${k}=${v}` : k))
  const eligible = spec ? placementOf(spec, daemonSet?.spec?.template?.metadata?.labels ?? {}, nodes).eligibleNodes : []
  const where = selector.length > 0 ? `every node labelled ${selector.join(',')}` : 'every node whose taints it tolerates'
  const activeActive = component === 'kube-apiserver' ? 'its instances all serve at once (active-active), and ' : ''
  throw new CliError(
    `${component} is not scaled by a replica count: ${activeActive}DaemonSet ${name} runs one instance on ${where} (${eligible.length} now${eligible.length > 0 ? `: ${eligible.join(', ')}` : ''}); to add one, join another control-plane node (kubeadm join --control-plane) or label and taint a node as one; to remove one, drain and remove that node`,
  )
}

/** The instances that are pods of the component's workload (not static pods). */
export function workloadPods(state: ComponentState): Instance[] {
  return state.instances.filter((i) => i.source === 'workload')
}

export interface RemovalPrediction {
  /** Pods the ReplicaSet controller will remove, as far as its ranking tells them apart. */
  certain: string[]
  /** Where its ranking ties, it removes `count` of `among` in UID order: a coin toss. */
  tied?: {count: number; among: string[]}
}

/**
 * Which pods a scale-down removes, by the ReplicaSet controller's ranking, in the parts an
 * Instance shows: unscheduled first, then not Ready, then those sharing a node with more
 * replicas, then the shortest time up in powers of two (its logarithmic scale-down buckets;
 * start time stands in for Ready time), then more restarts. Pods equal on all of those are
 * ordered by UID, which predicts nothing, so they are reported as a tie.
 */
export function predictRemovals(instances: Instance[], count: number, now: Date): RemovalPrediction {
  if (count <= 0) return {certain: []}
  const perNode = new Map<string, number>()
  for (const i of instances) if (i.node) perNode.set(i.node, (perNode.get(i.node) ?? 0) + 1)
  const upBucket = (i: Instance) => {
    const upMs = i.startedAt ? now.getTime() - Date.parse(i.startedAt) : Number.NaN
    return upMs > 0 ? Math.floor(Math.log2(upMs * 1e6)) : -1
  }

  const rank = (i: Instance): number[] => [i.node ? 1 : 0, i.ready ? 1 : 0, -(perNode.get(i.node) ?? 0), upBucket(i), -i.restarts]
  const groups = new Map<string, Instance[]>()
  for (const i of instances) {
    const key = JSON.stringify(rank(i))
    groups.set(key, [...(groups.get(key) ?? []), i])
  }

  const ordered = [...groups.entries()].sort(([a], [b]) => {
    const ra = JSON.parse(a) as number[]
    const rb = JSON.parse(b) as number[]
    for (let k = 0; k < ra.length; k++) if (ra[k] !== rb[k]) return ra[k] - rb[k]
    return 0
  })
  const certain: string[] = []
  for (const [, group] of ordered) {
    const left = count - certain.length
    if (left <= 0) break
    const names = group.map((i) => i.pod).sort()
    if (group.length <= left) certain.push(...names)
    else return {certain, tied: {count: left, among: names}}
  }

  return {certain}
}

/** The workload's pod holding the lock, or why none does, by the one attribution rule of leader.ts. */
export function workloadHolder(leader: LeaderRecord | undefined, pods: Instance[]): {pod?: string; elsewhere?: string} {
  if (!leader) return {}
  const match = matchHolder(leader, pods)
  return {pod: match.holder?.pod, elsewhere: holderElsewhere(leader, match, 'pod of this workload')}
}

function describeEffect(
  component: ScalableComponent,
  from: number,
  to: number,
  leader: LeaderRecord | undefined,
  holder: {pod?: string; elsewhere?: string},
  removals: RemovalPrediction,
): string {
  const leaderPod = holder.pod
  const duration = leader?.leaseDurationSeconds ?? 15
  if (to === 0) {
    return `no instance remains: nobody renews the lease, it goes stale ${duration}s after the last renewal, and no ${component} work happens until you scale up again`
  }

  if (!leader) return `no leader is recorded yet: one of the ${to} replicas takes the lease when it starts, the others stand by`
  if (leader.stale) return `the lease held by ${leader.holder} is stale: one of the ${to} replicas should take it over, the others stand by`
  if (!leaderPod) {
    return `${holder.elsewhere}; the ${plural(to, 'replica')} of the workload stand by while it renews`
  }

  if (to > from)
    return `${leaderPod} keeps leading; the ${plural(to - from, 'new replica')} join${to - from === 1 ? 's' : ''} as ${to - from === 1 ? 'a standby' : 'standbys'} and wait${to - from === 1 ? 's' : ''} for the lease`
  if (to === from) return `${leaderPod} keeps leading; nothing changes`
  const takeover = `a standby takes the lease within about ${duration}s, during which no ${component} work happens`
  if (removals.certain.includes(leaderPod)) return `the leader's pod ${leaderPod} is expected to be removed: ${takeover}`
  if (removals.tied?.among.includes(leaderPod)) {
    return `the leader's pod ${leaderPod} may be removed (the controller removes ${removals.tied.count} of ${removals.tied.among.join(', ')}, which its ranking cannot tell apart); if it is, ${takeover}`
  }

  return `${leaderPod} keeps leading; the standbys go`
}

export function planScale(request: ScaleRequest, inputs: ScaleInputs): ScalePlan {
  const {state, nodes} = inputs
  const component = request.component
  refuseUnscalableHosting(request, state)

  const deploymentRefs = state.workloads.filter((w) => w.kind === 'Deployment')
  if (component === 'kube-apiserver' || deploymentRefs.length === 0) {
    explainDaemonSet(component, inputs.workload as V1DaemonSet | undefined, state, nodes)
  }

  if (deploymentRefs.length > 1) {
    throw new CliError(`${component} has several Deployments (${workloadRef(state)}); scale the one you mean with kubectl, then remove the others`)
  }

  const ref = deploymentRefs[0]
  const deployment = inputs.workload as V1Deployment | undefined
  const spec = deployment?.spec?.template?.spec
  if (!deployment || !spec) throw new CliError(`Deployment ${ref.namespace}/${ref.name} could not be read; check that it still exists`)

  const scalable = component as ScalableComponent
  const from = deployment.spec?.replicas ?? 1
  const to = request.replicas
  const leaderElection = leaderElectionFromArgs(scalable, componentArgv(component, spec))
  const warnings: string[] = []
  const notes: string[] = []

  if (to > 1 && !leaderElection.enabled) {
    throw new CliError(
      `${component} runs with --leader-elect=false: ${to} replicas would be ${to} active ${component === 'kube-scheduler' ? 'schedulers racing to bind the same pods' : 'controller-managers fighting over the same objects'}; turn leader election on in ${ref.name} before scaling above 1`,
    )
  }

  if (to === 0 && !request.force) throw new CliError(`refusing to scale ${component} to 0: ${CONSEQUENCE_OF_ZERO[scalable]}; add --force if you mean it`)
  if (to === 0) warnings.push(CONSEQUENCE_OF_ZERO[scalable])

  if (!leaderElection.enabled) notes.push('leader election is off (--leader-elect=false): fine for a single replica, required before running more')
  if (leaderElection.configFile && to > 1) {
    notes.push(
      `leader election may also be set in ${leaderElection.configFile}, which the API cannot show; the flags say it is ${leaderElection.enabled ? 'on' : 'off'}`,
    )
  }

  const placement = placementOf(spec, deployment.spec?.template?.metadata?.labels ?? {}, nodes)
  const capacity = placement.onePerNodeBecause ? placement.eligibleNodes.length : Number.POSITIVE_INFINITY
  const readyTarget = Math.min(to, capacity)
  const eligibleCount = placement.eligibleNodes.length
  if (to > 0 && eligibleCount === 0) {
    warnings.push(`no node can take a ${component} pod now (nodeSelector, taints, readiness): new replicas will stay Pending`)
  } else if (to > eligibleCount) {
    const over = `${to} replicas but only ${eligibleCount} node${eligibleCount === 1 ? '' : 's'} they can run on (${placement.eligibleNodes.join(', ')})`
    if (placement.onePerNodeBecause) warnings.push(`${over}: ${placement.onePerNodeBecause}, so ${to - readyTarget} will stay Pending`)
    else if (placement.hostNetwork && !boolFlag(componentArgv(component, spec), 'permit-port-sharing', false)) {
      warnings.push(`${over}: two hostNetwork instances on one node fight for the same port and the second fails unless --permit-port-sharing is set`)
    } else warnings.push(`${over}: some nodes run two, so losing one node takes out more than one replica`)
  }

  if (to > 1) notes.push(`extra replicas add standbys, not throughput: only the lease holder does ${component} work, the others wait to take over`)

  const pods = workloadPods(state)
  const holder = workloadHolder(state.leader, pods)
  const leaderPod = holder.pod
  const removals = predictRemovals(pods, to < from ? pods.length - to : 0, inputs.now)
  if (removals.certain.length > 0 || removals.tied) {
    notes.push(
      "which pods go is the ReplicaSet controller's choice: the removals shown follow its ranking (unscheduled, not Ready, crowded node, shortest up in powers of two, restarts)",
    )
  }
  if (!ref.managedByUs) notes.push(`${ref.namespace}/${ref.name} was not created by kubectl-selfhost; scaling it all the same`)
  if (from === to) notes.push(`${ref.namespace}/${ref.name} already asks for ${plural(to, 'replica')}; this run only checks readiness and leadership`)

  return {
    component: scalable,
    workload: {
      kind: 'Deployment',
      namespace: ref.namespace,
      name: ref.name,
      managedByUs: ref.managedByUs,
      resourceVersion: deployment.metadata?.resourceVersion,
    },
    from,
    to,
    change: to > from ? 'up' : to < from ? 'down' : 'none',
    leaderElection,
    placement: {eligibleNodes: placement.eligibleNodes, onePerNodeBecause: placement.onePerNodeBecause, readyTarget},
    leadership: {
      leader: state.leader && {...state.leader, pod: leaderPod, node: pods.find((p) => p.pod === leaderPod)?.node},
      leaderPod,
      standbys: pods.filter((p) => p.ready && p.pod !== leaderPod).map((p) => p.pod),
      expectedRemovals: removals.certain,
      possibleRemovals: removals.tied,
      added: Math.max(0, to - from),
      holderElsewhere: holder.elsewhere,
      effect: describeEffect(scalable, from, to, state.leader, holder, removals),
    },
    warnings,
    notes,
  }
}
