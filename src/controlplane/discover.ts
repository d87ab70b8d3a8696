import semver from 'semver'

import type {V1ConfigMap, V1DaemonSet, V1Deployment, V1Endpoints, V1LabelSelector, V1Lease, V1Node, V1Pod} from '../kube/types.js'
import type {KubeClient, VersionInfo} from '../kube/client.js'
import {isReady} from '../kube/objects.js'
import {nodeCheckpoints, selfHostedVersions} from '../checkpoint/status.js'
import {componentContainer, versionFromImage} from './container.js'
import {holderElsewhere, isLockOf, leaderFromAnnotation, leaderFromLease, matchHolder} from './leader.js'
import {
  ApiserverHealth,
  BACKUP_ROOT,
  CONTROL_PLANE_COMPONENTS,
  ComponentName,
  CONTROL_PLANE_ROLE_LABEL,
  ComponentState,
  ControlPlane,
  HealthCheck,
  HostingMode,
  Instance,
  LEADER_ELECTED_COMPONENTS,
  LeaderRecord,
  MANAGED_BY_LABEL,
  MANIFESTS_DIR,
  MANAGED_BY_VALUE,
  MASTER_ROLE_LABEL,
  NodeCheckpoint,
  NodeSummary,
  SELF_HOSTED_APP_LABEL,
  SYSTEM_NAMESPACE,
  Workload,
  isMirrorPod,
} from './model.js'

/** The few calls discovery makes; the real KubeClient satisfies it, tests pass fakes. */
export type DiscoveryApi = Pick<
  KubeClient,
  | 'server'
  | 'contextName'
  | 'version'
  | 'listPods'
  | 'listNodes'
  | 'listDaemonSets'
  | 'listDeployments'
  | 'listLeases'
  | 'listEndpoints'
  | 'listConfigMaps'
  | 'raw'
>

/** One answer of a health endpoint, as read: the HTTP status is the verdict, the body the detail. */
export interface HealthResponse {
  endpoint: '/readyz' | '/livez' | '/healthz'
  status: number
  body: string
}

/** Everything discovery reads from the cluster; buildControlPlane turns it into the model. */
export interface DiscoveryInputs {
  context: string
  server: string
  version: VersionInfo
  pods: V1Pod[]
  nodes: V1Node[]
  daemonSets: V1DaemonSet[]
  deployments: V1Deployment[]
  /** Undefined when the cluster serves no coordination.k8s.io/v1 Leases. */
  leases?: V1Lease[]
  /** Read only when a leader-elected component has no Lease, or the cluster is 1.19 or older. */
  endpoints?: V1Endpoints[]
  /** Read only when neither Leases nor Endpoints name a leader (--leader-elect-resource-lock=configmaps). */
  configMaps?: V1ConfigMap[]
  readyz: HealthResponse
  livez: HealthResponse
}

/**
 * How each component shows up when it runs as a workload: the `k8s-app` label its pods and
 * workloads carry, and the workload names kubeadm and kubectl-selfhost give it. etcd has none:
 * it stays static (or external).
 */
const WORKLOAD_IDENTITY: Record<ComponentName, {appLabels: string[]; names: string[]}> = {
  'kube-apiserver': {appLabels: ['self-hosted-kube-apiserver'], names: ['self-hosted-kube-apiserver']},
  'kube-controller-manager': {appLabels: ['self-hosted-kube-controller-manager'], names: ['self-hosted-kube-controller-manager']},
  'kube-scheduler': {appLabels: ['self-hosted-kube-scheduler'], names: ['self-hosted-kube-scheduler']},
  etcd: {appLabels: [], names: []},
  'kube-proxy': {appLabels: ['kube-proxy'], names: ['kube-proxy']},
  // CoreDNS kept kube-dns's label so the kube-dns Service keeps selecting it.
  coredns: {appLabels: ['kube-dns'], names: ['coredns', 'kube-dns']},
}

/** The minor version of a server version string like v1.32.2 or v1.29.1-eks-abc. */
export function minorVersion(gitVersion: string): number | undefined {
  const parsed = semver.coerce(gitVersion)
  return parsed && parsed.major === 1 ? parsed.minor : undefined
}

/** Parses `[+]name ok` / `[-]name failed: reason` lines of a verbose health answer. */
export function parseHealthChecks(body: string): HealthCheck[] {
  const checks: HealthCheck[] = []
  for (const line of body.split('\n')) {
    const m = /^\[([+-])\](\S+)\s+(.*)$/.exec(line.trim())
    if (!m) continue
    const [, sign, name, rest] = m
    checks.push(sign === '+' ? {name, ok: true} : {name, ok: false, message: rest.replace(/^failed:?\s*/, '') || 'failed'})
  }

  return checks
}

function healthOf(response: HealthResponse): ApiserverHealth['readyz'] {
  return {ok: response.status === 200, status: response.status, checks: parseHealthChecks(response.body), endpoint: response.endpoint}
}

function selectorMatches(selector: V1LabelSelector | undefined, labels: Record<string, string>): boolean {
  if (!selector) return false
  const matchLabels = Object.entries(selector.matchLabels ?? {})
  const expressions = selector.matchExpressions ?? []
  // An empty selector selects nothing for workloads (the API refuses one); never let it claim every pod.
  if (matchLabels.length === 0 && expressions.length === 0) return false
  if (!matchLabels.every(([k, v]) => labels[k] === v)) return false
  return expressions.every((e) => {
    const has = e.key in labels
    switch (e.operator) {
      case 'In':
        return has && (e.values ?? []).includes(labels[e.key])
      case 'NotIn':
        return !has || !(e.values ?? []).includes(labels[e.key])
      case 'Exists':
        return has
      case 'DoesNotExist':
        return !has
      default:
        return false
    }
  })
}

/** A mirror pod's component: its `component` label (kubeadm), else its name `<component>-<node>`. */
function staticComponentOf(pod: V1Pod): ComponentName | undefined {
  const label = pod.metadata?.labels?.component
  if (label && (CONTROL_PLANE_COMPONENTS as readonly string[]).includes(label)) return label as ComponentName
  const name = pod.metadata?.name ?? ''
  const node = pod.spec?.nodeName ?? ''
  return CONTROL_PLANE_COMPONENTS.find((c) => node && name === `${c}-${node}`)
}

function summarizeNode(node: V1Node): NodeSummary {
  const labels = node.metadata?.labels ?? {}
  const role =
    CONTROL_PLANE_ROLE_LABEL in labels ? 'control-plane' : MASTER_ROLE_LABEL in labels || labels['kubernetes.io/role'] === 'master' ? 'master' : undefined
  return {
    name: node.metadata?.name ?? '',
    ready: isReady(node),
    controlPlane: role !== undefined,
    role,
    kubeletVersion: node.status?.nodeInfo?.kubeletVersion ?? '',
    internalIP: node.status?.addresses?.find((a) => a.type === 'InternalIP')?.address,
    taints: (node.spec?.taints ?? []).map((t) => ({key: t.key, effect: t.effect, ...(t.value ? {value: t.value} : {})})),
  }
}

/** Why a pod is not ready, in kubelet words: a stuck container's reason, else the phase. */
function notReadyReason(pod: V1Pod): string {
  for (const status of pod.status?.containerStatuses ?? []) {
    const waiting = status.state?.waiting?.reason
    if (waiting) return waiting
    const terminated = status.state?.terminated?.reason
    if (terminated) return terminated
  }

  return pod.status?.phase ?? 'Unknown'
}

function toInstance(pod: V1Pod, component: ComponentName, source: Instance['source'], nodeHostnames: Map<string, string>): Instance {
  const container = componentContainer(pod.spec?.containers, component)
  const image = container?.image ?? ''
  const node = pod.spec?.nodeName ?? ''
  const ready = isReady(pod)
  // hostNetwork pods see the node's hostname; others their own (spec.hostname, else the pod name).
  const hostname = pod.spec?.hostNetwork ? (nodeHostnames.get(node) ?? node) : (pod.spec?.hostname ?? pod.metadata?.name)
  return {
    pod: pod.metadata?.name ?? '',
    namespace: pod.metadata?.namespace ?? SYSTEM_NAMESPACE,
    node,
    source,
    phase: pod.status?.phase ?? 'Unknown',
    ready,
    restarts: (pod.status?.containerStatuses ?? []).reduce((sum, s) => sum + (s.restartCount ?? 0), 0),
    image,
    version: versionFromImage(image),
    startedAt: pod.status?.startTime,
    hostname,
    container: container?.name,
  }
}

function toWorkload(kind: Workload['kind'], obj: V1DaemonSet | V1Deployment): Workload {
  const status = (obj.status ?? {}) as Record<string, number | undefined>
  const template = obj.spec?.template
  const desired = kind === 'DaemonSet' ? (status.desiredNumberScheduled ?? 0) : ((obj as V1Deployment).spec?.replicas ?? 1)
  return {
    kind,
    namespace: obj.metadata?.namespace ?? SYSTEM_NAMESPACE,
    name: obj.metadata?.name ?? '',
    desired,
    ready: kind === 'DaemonSet' ? (status.numberReady ?? 0) : (status.readyReplicas ?? 0),
    updated: kind === 'DaemonSet' ? (status.updatedNumberScheduled ?? 0) : (status.updatedReplicas ?? 0),
    available: kind === 'DaemonSet' ? (status.numberAvailable ?? 0) : (status.availableReplicas ?? 0),
    image: template?.spec?.containers?.[0]?.image ?? '',
    generation: obj.metadata?.generation ?? 0,
    observedGeneration: status.observedGeneration ?? 0,
    managedByUs: obj.metadata?.labels?.[MANAGED_BY_LABEL] === MANAGED_BY_VALUE,
  }
}

interface WorkloadObject {
  kind: Workload['kind']
  obj: V1DaemonSet | V1Deployment
}

function isComponentWorkload(component: ComponentName, obj: V1DaemonSet | V1Deployment): boolean {
  const identity = WORKLOAD_IDENTITY[component]
  if ((obj.metadata?.namespace ?? SYSTEM_NAMESPACE) !== SYSTEM_NAMESPACE) return false
  const app = obj.metadata?.labels?.[SELF_HOSTED_APP_LABEL]
  return (app !== undefined && identity.appLabels.includes(app)) || identity.names.includes(obj.metadata?.name ?? '')
}

/** Picks the freshest record when a cluster writes two locks (1.17–1.19 write Lease and Endpoints). */
function freshest(records: Array<LeaderRecord | undefined>): LeaderRecord | undefined {
  const present = records.filter((r): r is LeaderRecord => r !== undefined)
  const renewed = (r: LeaderRecord) => (r.renewTime ? Date.parse(r.renewTime) : 0) || 0
  return present.sort((a, b) => renewed(b) - renewed(a))[0]
}

function leaderFor(component: ComponentName, inputs: DiscoveryInputs, now: Date): LeaderRecord | undefined {
  if (!(LEADER_ELECTED_COMPONENTS as readonly string[]).includes(component)) return undefined
  const lease = inputs.leases?.find((l) => isLockOf(component, l))
  const endpoints = inputs.endpoints?.find((e) => isLockOf(component, e))
  const configMap = inputs.configMaps?.find((c) => isLockOf(component, c))
  return freshest([
    lease ? leaderFromLease(lease, now) : undefined,
    endpoints ? leaderFromAnnotation(endpoints, 'Endpoints', now) : undefined,
    configMap ? leaderFromAnnotation(configMap, 'ConfigMap', now) : undefined,
  ])
}

const ABSENT_EXPLANATION: Record<ComponentName, string> = {
  'kube-apiserver': 'no kube-apiserver pods: the control plane runs outside the cluster (managed or external); its health comes from /readyz',
  'kube-controller-manager': 'no kube-controller-manager pods: run outside the cluster (managed or external)',
  'kube-scheduler': 'no kube-scheduler pods: run outside the cluster (managed or external)',
  etcd: 'no etcd pods: external etcd or a managed control plane',
  'kube-proxy': 'no kube-proxy pods: the network plugin may replace it',
  coredns: 'no CoreDNS pods (k8s-app=kube-dns): cluster DNS is provided some other way, or missing',
}

function hostingMode(staticCount: number, workloadCount: number, workloads: Workload[]): HostingMode {
  if (staticCount > 0 && workloadCount > 0) return 'mixed'
  if (staticCount > 0) return 'static'
  if (workloadCount > 0 || workloads.length > 0) return 'self-hosted'
  return 'absent'
}

function describeLeaderAge(leader: LeaderRecord, now: Date): string {
  if (!leader.renewTime) return 'never renewed'
  const seconds = Math.round((now.getTime() - Date.parse(leader.renewTime)) / 1000)
  return `last renewed ${seconds}s ago (lease ${leader.leaseDurationSeconds ?? '?'}s)`
}

function buildComponent(
  component: ComponentName,
  inputs: DiscoveryInputs,
  workloadObjects: WorkloadObject[],
  nodeHostnames: Map<string, string>,
  now: Date,
): ComponentState {
  const problems: string[] = []
  const warnings: string[] = []
  const identity = WORKLOAD_IDENTITY[component]
  const ownWorkloads = workloadObjects.filter((w) => isComponentWorkload(component, w.obj))
  const podsByWorkload = new Map<WorkloadObject, V1Pod[]>(ownWorkloads.map((w) => [w, []]))
  const instances: Instance[] = []
  /** Why each not-ready instance is not ready, keyed by pod name. */
  const notReady = new Map<string, string>()
  let finishedPods = 0
  let terminatingPods = 0
  const add = (pod: V1Pod, source: Instance['source']) => {
    const instance = toInstance(pod, component, source, nodeHostnames)
    instances.push(instance)
    if (!instance.ready) notReady.set(instance.pod, notReadyReason(pod))
  }

  for (const pod of inputs.pods) {
    if ((pod.metadata?.namespace ?? SYSTEM_NAMESPACE) !== SYSTEM_NAMESPACE) continue
    if (isMirrorPod(pod)) {
      if (staticComponentOf(pod) === component) add(pod, 'static')
      continue
    }

    const labels = pod.metadata?.labels ?? {}
    const owners = ownWorkloads.filter((w) => selectorMatches(w.obj.spec?.selector, labels))
    const app = labels[SELF_HOSTED_APP_LABEL]
    if (owners.length === 0 && !(app && identity.appLabels.includes(app))) continue
    // Evicted or completed pods linger until garbage-collected; they are history, not instances.
    if (pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') {
      finishedPods++
      continue
    }

    // A pod on its way out (a rollout replacing it) is not an instance to judge.
    if (pod.metadata?.deletionTimestamp) {
      terminatingPods++
      continue
    }

    for (const owner of owners) podsByWorkload.get(owner)!.push(pod)
    add(pod, 'workload')
  }

  instances.sort((a, b) => a.node.localeCompare(b.node) || a.source.localeCompare(b.source) || a.pod.localeCompare(b.pod))
  const workloads = ownWorkloads.map((w) => toWorkload(w.kind, w.obj))
  const staticCount = instances.filter((i) => i.source === 'static').length
  const workloadCount = instances.length - staticCount
  const mode = hostingMode(staticCount, workloadCount, workloads)
  const versions = [...new Set(instances.map((i) => i.version).filter((v): v is string => Boolean(v)))].sort((a, b) =>
    semver.compare(semver.coerce(a) ?? '0.0.0', semver.coerce(b) ?? '0.0.0'),
  )

  if (mode === 'absent') warnings.push(ABSENT_EXPLANATION[component])
  for (const instance of instances) {
    const reason = notReady.get(instance.pod)
    if (reason) problems.push(`${instance.pod} on ${instance.node || '<unscheduled>'} is not ready (${reason})`)
  }

  for (const [owner, pods] of podsByWorkload) {
    const workload = toWorkload(owner.kind, owner.obj)
    if (workload.desired > pods.length) {
      problems.push(`${workload.kind}/${workload.name} wants ${workload.desired} pods but ${pods.length} exist`)
    }

    // A workload its controller has not seen yet has no status to judge (just created or changed).
    const unobserved = workload.observedGeneration < workload.generation
    if (unobserved && pods.length === 0) {
      warnings.push(`${workload.kind}/${workload.name} is not yet processed by its controller`)
    } else if (workload.desired === 0 && workloadCount === 0 && staticCount === 0) {
      problems.push(`${workload.kind}/${workload.name} runs no pods`)
    } else if (unobserved || workload.updated < workload.desired) {
      warnings.push(`${workload.kind}/${workload.name} is rolling out (${workload.updated}/${workload.desired} updated)`)
    }
  }

  if (finishedPods > 0) warnings.push(`${finishedPods} finished or evicted pod(s) left over`)
  if (terminatingPods > 0) warnings.push(`${terminatingPods} pod(s) terminating`)
  if (versions.length > 1) warnings.push(`${versions.length} versions running: ${versions.join(', ')}`)
  const restarting = instances.filter((i) => i.restarts > 0)
  if (restarting.length > 0) warnings.push(`restarts: ${restarting.map((i) => `${i.pod} ${i.restarts}`).join(', ')}`)

  const serverMinor = minorVersion(inputs.version.gitVersion)
  if ((component === 'kube-controller-manager' || component === 'kube-scheduler') && serverMinor !== undefined) {
    const newer = versions.filter((v) => (minorVersion(v) ?? 0) > serverMinor)
    if (newer.length > 0) problems.push(`${newer.join(', ')} is newer than the API server (${inputs.version.gitVersion}): the skew policy forbids it`)
  }

  let leader = leaderFor(component, inputs, now)
  if (leader) {
    const match = matchHolder(leader, instances)
    leader = {...leader, pod: match.holder?.pod, node: match.holder?.node}
    if (leader.stale) problems.push(`leader ${leader.holder} is stale: ${describeLeaderAge(leader, now)}`)
    else if (match.startedLater) warnings.push(holderElsewhere(leader, match, 'instance')!)
    else if (!leader.pod && instances.length > 0) warnings.push(`leader ${leader.holder} is none of the instances seen`)
  } else if ((LEADER_ELECTED_COMPONENTS as readonly string[]).includes(component) && instances.length > 0) {
    // A Lease with no holder was released by a leader shutting down: a hand-over, not "no election".
    const released = inputs.leases?.some((l) => isLockOf(component, l) && !l.spec?.holderIdentity)
    warnings.push(
      released
        ? 'no leader at the moment: the last one released its Lease (a hand-over; check again in a few seconds)'
        : 'no leader record (Lease, Endpoints or ConfigMap): leader election may be off',
    )
  }

  return {name: component, mode, instances, workloads, versions, leader, healthy: problems.length === 0, problems, warnings}
}

/**
 * What a self-hosted apiserver costs, said after the pivot as pivot said it before: a kubelet
 * can only restart a DaemonSet's pod through a running API server, unless the node holds a
 * current checkpoint (src/checkpoint). A warning, not a problem: the cluster is healthy, just
 * less able to recover by itself. Silent only when every control-plane node is covered.
 */
function selfHostingCost(apiserver: ComponentState, nodes: NodeSummary[], checkpoints: NodeCheckpoint[]): string | undefined {
  if (apiserver.mode === 'mixed') {
    if (checkpoints.some((c) => c.checkpointer !== 'absent')) return undefined
    const staticNodes = [...new Set(apiserver.instances.filter((i) => i.source === 'static').map((i) => i.node))]
    return `partly self-hosted, no checkpointing: after a full control-plane restart only ${staticNodes.join(', ')} (static manifest) can start kube-apiserver by itself; the self-hosted instances need a running API`
  }

  if (apiserver.mode !== 'self-hosted') return undefined
  const gaps = checkpoints.filter((c) => c.gap)
  if (gaps.length === 0 && checkpoints.length > 0) return undefined
  const recovery = `recover on one node with cp ${BACKUP_ROOT}/<timestamp>/*.yaml ${MANIFESTS_DIR}/, then \`kubectl selfhost revert\``
  if (gaps.length > 0 && gaps.length < checkpoints.length) {
    return `checkpoints incomplete (${gaps.map((g) => `${g.node}: ${g.gap}`).join('; ')}): a full control-plane restart may need the others; run \`kubectl selfhost pivot\` again to rewrite them`
  }

  const when =
    nodes.filter((n) => n.controlPlane).length === 1
      ? 'if the only control-plane node reboots'
      : 'if every control-plane node restarts at once (full reboot, power loss)'
  const why = gaps.every((g) => g.gap === 'no checkpointer')
    ? 'no checkpointing'
    : `no usable checkpoint (${gaps.map((g) => `${g.node}: ${g.gap}`).join('; ')})`
  return `self-hosted, ${why}: ${when}, no kubelet can start kube-apiserver again (its DaemonSet lives in the API it serves); ${recovery}; \`kubectl selfhost pivot\` installs checkpoints`
}

function apiserverProblems(health: ApiserverHealth): string[] {
  const problems: string[] = []
  for (const probe of [health.readyz, health.livez]) {
    if (probe.ok) continue
    const failed = probe.checks.filter((c) => !c.ok).map((c) => (c.message && c.message !== 'reason withheld' ? `${c.name} (${c.message})` : c.name))
    problems.push(`${probe.endpoint} answered ${probe.status || 'nothing'}${failed.length > 0 ? `: failed ${failed.join(', ')}` : ''}`)
  }

  // /healthz serves both verdicts on old servers; say it once.
  return health.readyz.endpoint === health.livez.endpoint ? problems.slice(0, 1) : problems
}

/** Turns what the cluster said into the component model. Pure: no calls, time passed in. */
export function buildControlPlane(inputs: DiscoveryInputs, now: Date): ControlPlane {
  const nodes = inputs.nodes.map(summarizeNode).sort((a, b) => a.name.localeCompare(b.name))
  const nodeHostnames = new Map(
    inputs.nodes.map((n) => [n.metadata?.name ?? '', n.status?.addresses?.find((a) => a.type === 'Hostname')?.address ?? n.metadata?.name ?? '']),
  )
  const workloadObjects: WorkloadObject[] = [
    ...inputs.daemonSets.map((obj) => ({kind: 'DaemonSet' as const, obj})),
    ...inputs.deployments.map((obj) => ({kind: 'Deployment' as const, obj})),
  ]
  const apiserver: ApiserverHealth = {readyz: healthOf(inputs.readyz), livez: healthOf(inputs.livez)}
  const components = CONTROL_PLANE_COMPONENTS.map((c) => buildComponent(c, inputs, workloadObjects, nodeHostnames, now))
  const kubeApiserver = components.find((c) => c.name === 'kube-apiserver')!
  kubeApiserver.problems.push(...apiserverProblems(apiserver))
  kubeApiserver.healthy = kubeApiserver.problems.length === 0
  const selfHosted = kubeApiserver.mode === 'self-hosted' || kubeApiserver.mode === 'mixed'
  const checkpoints = selfHosted
    ? nodeCheckpoints(
        inputs.pods,
        nodes.filter((n) => n.controlPlane).map((n) => n.name),
        selfHostedVersions(inputs.pods),
        now,
      )
    : []
  for (const c of checkpoints) {
    if (c.serving.length > 0)
      kubeApiserver.warnings.push(
        `${c.node} runs ${c.serving.join(', ')} from its checkpoint: a recovery without the API; the self-hosted pods take over once the kubelet starts them`,
      )
  }

  const cost = selfHostingCost(kubeApiserver, nodes, checkpoints)
  if (cost) kubeApiserver.warnings.push(cost)

  return {
    serverVersion: inputs.version.gitVersion,
    context: inputs.context,
    server: inputs.server,
    nodes,
    components,
    apiserver,
    checkpoints,
    healthy: components.every((c) => c.healthy),
    observedAt: now.toISOString(),
  }
}

async function readHealth(api: DiscoveryApi, endpoint: HealthResponse['endpoint']): Promise<HealthResponse> {
  const res = await api.raw('GET', endpoint, {query: {verbose: true}, intent: {verb: 'get', resource: endpoint}})
  return {endpoint, status: res.status, body: res.body}
}

/** Leader-elected components seen running whose leader no record read so far names. */
function missingLeaders(plane: ControlPlane): boolean {
  return plane.components.some((c) => (LEADER_ELECTED_COMPONENTS as readonly string[]).includes(c.name) && c.instances.length > 0 && !c.leader)
}

/**
 * Reads the control plane with a fixed number of requests however large the cluster:
 * /version, one list each of kube-system pods, nodes, DaemonSets, Deployments and Leases,
 * /readyz and /livez (one /healthz before 1.16); Endpoints once on 1.19 and older or when a
 * Lease is missing, ConfigMaps once only if still no leader is known.
 */
export async function discoverControlPlane(api: DiscoveryApi, opts: {now?: Date} = {}): Promise<ControlPlane> {
  // All requests share one connection and are answered in the order sent: /version goes first,
  // so the health requests that depend on it join the queue while the lists are still being
  // answered, instead of waiting behind them for a round trip of their own.
  const versionAnswer = api.version()
  const lists = Promise.all([
    api.listPods(SYSTEM_NAMESPACE),
    api.listNodes(),
    api.listDaemonSets(SYSTEM_NAMESPACE),
    api.listDeployments(SYSTEM_NAMESPACE),
    api.listLeases(SYSTEM_NAMESPACE),
  ])
  // Keep a failing list from becoming an unhandled rejection while /version is awaited.
  lists.catch(() => undefined)
  const version = await versionAnswer
  const minor = minorVersion(version.gitVersion)
  const legacyServer = minor !== undefined && minor < 16
  const health = legacyServer ? readHealth(api, '/healthz').then((h) => [h, h] as const) : Promise.all([readHealth(api, '/readyz'), readHealth(api, '/livez')])
  const [[pods, nodes, daemonSets, deployments, leases], [readyz, livez]] = await Promise.all([lists, health])

  const inputs: DiscoveryInputs = {
    context: api.contextName,
    server: api.server,
    version,
    pods: pods.items,
    nodes: nodes.items,
    daemonSets: daemonSets.items,
    deployments: deployments.items,
    leases: leases?.items,
    readyz,
    livez,
  }
  const now = opts.now ?? new Date()
  let plane = buildControlPlane(inputs, now)

  // Up to 1.19 the Endpoints lock may be the only one, or fresher than a left-over Lease.
  if ((minor !== undefined && minor <= 19) || missingLeaders(plane)) {
    inputs.endpoints = (await api.listEndpoints(SYSTEM_NAMESPACE)).items
    plane = buildControlPlane(inputs, now)
  }

  if (missingLeaders(plane)) {
    inputs.configMaps = (await api.listConfigMaps(SYSTEM_NAMESPACE)).items
    plane = buildControlPlane(inputs, now)
  }

  return plane
}
