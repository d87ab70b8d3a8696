import {isDeepStrictEqual} from 'node:util'

import semver from 'semver'

import type {V1Container, V1DaemonSet, V1Deployment, V1EnvVar, V1LifecycleHandler, V1PodSpec, V1Probe, V1Toleration} from '../kube/types.js'
import {componentContainer, containerArgv, flagValue, versionFromImage} from '../controlplane/container.js'
import {
  BACKUP_ROOT,
  CONTROL_PLANE_ROLE_LABELS,
  MANAGED_BY_LABEL,
  MANAGED_BY_VALUE,
  MANIFESTS_DIR,
  OUTSIDE_ROLLOUTS_ANNOTATION,
  PIVOTED_COMPONENTS,
  PivotedComponent,
  SELF_HOSTED_APP_LABEL,
  SOURCE_MANIFEST_HASH_ANNOTATION,
  SYSTEM_NAMESPACE,
  selfHostedName,
} from '../controlplane/model.js'
import {CliError} from '../errors.js'
import {supportsDaemonSetSurge} from '../upgrade/versions.js'
import {DEFAULT_TIMINGS} from '../checkpoint/checkpoint.js'
import {CHECKPOINTER_FILE, CHECKPOINT_DIR} from '../checkpoint/scripts.js'
import {StaticManifest, parseStaticPod, sha256} from './manifest.js'

export const MIN_SUPPORTED_VERSION = '1.14.0'
/** kube-apiserver, -controller-manager and -scheduler accept --permit-port-sharing (SO_REUSEPORT) from here. */
export const PORT_SHARING_VERSION = '1.19.0'
/** Per-node sha256 of every static manifest a workload came from: `node=sha,node=sha`. */
export const SOURCE_MANIFESTS_ANNOTATION = 'selfhost.kubectl.io/source-manifests'
/** kubeadm writes each node's own endpoint here; a pod template cannot hold a per-node value. */
export const ADVERTISE_ENDPOINT_ANNOTATION = 'kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint'
export const HOST_IP_ENV = 'HOST_IP'
/**
 * Without port sharing the new instance crash-loops until the static one frees the port, and
 * the kubelet's back-off grows to 5 minutes: a blind hand-off waits at least this long.
 */
export const BLIND_HANDOFF_MIN_SECONDS = 360

export type ControlPlaneRole = 'control-plane' | 'master'

export interface PlanNodeInfo {
  name: string
  /** The node's InternalIP: what status.hostIP (the downward API) gives its pods. */
  internalIP?: string
  labels: Record<string, string>
  taints: Array<{key: string; effect: string; value?: string}>
}

/** An existing DaemonSet/Deployment that already runs a pivoted component. */
export interface ExistingWorkload {
  component: PivotedComponent
  kind: 'DaemonSet' | 'Deployment'
  name: string
  managedByUs: boolean
  /** A Deployment's live spec.replicas: a re-run keeps it (`scale` may have changed it). */
  replicas?: number
  /** The image its pod template runs for the component's container: `upgrade` may have changed it, revert keeps it. */
  image?: string
}

export interface PivotInputs {
  /** One per component per control-plane node: the live file, or its backup once it was moved. */
  manifests: StaticManifest[]
  /** Control-plane nodes as the cluster describes them; absent when planning from a directory. */
  nodes?: PlanNodeInfo[]
  existingWorkloads?: ExistingWorkload[]
  /** Node currently holding each leader-elected component's lease: handed off last. */
  leaders?: Partial<Record<PivotedComponent, string>>
  /** How long the apiserver hand-off waits for the new instance before restoring the static one. */
  handoffDeadlineSeconds?: number
  /** Install node-local checkpoints and the checkpointer (default true; --no-checkpoint says false). */
  checkpoint?: boolean
  /**
   * Plan as on a cluster before 1.19, whatever the version: no port sharing anywhere, every
   * hand-off blind (hidden --force-blind-handoff, so that path is proven on today's releases).
   */
  forceBlindHandoff?: boolean
}

/** What differs per control-plane node and the executor needs: read from that node's own manifest. */
export interface PlanNode {
  /** The IP $(HOST_IP) stands for on this node (its advertise address, else its InternalIP). */
  ip?: string
}

export type HandoffMode = 'port-sharing' | 'blind'

/** How long the new instance must have listened beside the static one (port sharing) before the static one goes. */
export const HANDOFF_SETTLE_SECONDS = 5

function handoffDeadlineSeconds(mode: HandoffMode, requested: number): number {
  return mode === 'blind' ? Math.max(requested, BLIND_HANDOFF_MIN_SECONDS) : requested
}

export type PivotAction = 'backup' | 'enable-port-sharing' | 'apply' | 'wait-ready' | 'handoff' | 'wait-mirror-gone' | 'wait-healthy' | 'checkpoint'

export interface PivotStep {
  /** Absent for the checkpoint steps, which cover every component of a node. */
  component?: PivotedComponent
  node?: string
  action: PivotAction
  description: string
}

export type SelfHostedObject = (V1DaemonSet | V1Deployment | PodDisruptionBudget) & {apiVersion: string; kind: string}

export interface PodDisruptionBudget {
  apiVersion: string
  kind: 'PodDisruptionBudget'
  metadata: {name: string; namespace: string; labels: Record<string, string>}
  spec: {minAvailable: number; selector: {matchLabels: Record<string, string>}}
}

export interface ComponentPlan {
  component: PivotedComponent
  version: string
  kind: 'DaemonSet' | 'Deployment'
  name: string
  handoff: HandoffMode
  /** Nodes in hand-off order. */
  nodeOrder: string[]
  /** sha256 of each node's static manifest bytes. */
  sourceHashes: Record<string, string>
  objects: SelfHostedObject[]
  /** What was changed from the static manifest, and why (one line each). */
  changes: string[]
  rollout: RolloutPlan
}

/**
 * How the workload's own rolling update replaces a pod, and whether that keeps the component
 * serving when someone else starts it (`kubectl rollout restart`, `kubectl edit`, GitOps).
 * The same verdict is on the workload as the OUTSIDE_ROLLOUTS_ANNOTATION, for `status`.
 */
export interface RolloutPlan {
  maxSurge: number
  maxUnavailable: number
  outsideRollouts: 'safe' | 'unsafe'
  why: string
}

export interface PivotPlan {
  version: string
  role: ControlPlaneRole
  nodes: string[]
  /** Per node, by name: what differs between the control-plane nodes. */
  perNode: Record<string, PlanNode>
  components: ComponentPlan[]
  /** Every object to apply, in order: what `-o yaml` prints. */
  objects: SelfHostedObject[]
  steps: PivotStep[]
  /** What self-hosting costs; printed before anything changes. */
  costs: string[]
  notes: string[]
  warnings: string[]
}

type Container = V1Container & {command?: string[]; args?: string[]}

const byName = (a: string, b: string) => a.localeCompare(b)

function minorVersion(version: string): string {
  const v = semver.parse(version)!
  return `${v.major}.${v.minor}`
}

const atLeast = (version: string, min: string) => semver.gte(semver.coerce(version)!, min)

/** Replaces an IP only where it stands alone (10.0.0.1 must not match inside 10.0.0.10). */
function ipPattern(ip: string): RegExp {
  const escaped = ip.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
  return new RegExp(`(?<![\\w.:])${escaped}(?![\\w])`, 'g')
}

/** The node's own IP as its apiserver manifest states it: --advertise-address, else kubeadm's annotation. */
function advertisedIP(manifests: StaticManifest[], node: string): string | undefined {
  const apiserver = manifests.find((m) => m.node === node && m.component === 'kube-apiserver')
  if (!apiserver) return undefined
  const pod = parseStaticPod(apiserver.bytes, `kube-apiserver manifest of node ${node}`)
  const flag = flagValue(containerArgv(pod.spec!.containers[0]), 'advertise-address')
  if (flag) return flag
  const endpoint = pod.metadata?.annotations?.[ADVERTISE_ENDPOINT_ANNOTATION]
  return endpoint ? endpoint.replace(/:\d+$/, '').replace(/^\[|\]$/g, '') : undefined
}

interface NormalisedManifest {
  node: string
  pod: ReturnType<typeof parseStaticPod>
  /** Node-specific values found and replaced, for the plan's change list. */
  replaced: Set<string>
}

/** Flags whose value is this node's own address wherever it names the node's IP. */
const NODE_ADDRESS_FLAGS = ['advertise-address', 'bind-address']

/**
 * --etcd-servers names the node's own IP only for an etcd local to each node (each apiserver
 * its own member). A list that also names other control-plane nodes is the same cluster list on
 * every node: it stays as it is.
 */
function localEtcdServers(value: string, nodeIP: string, otherIPs: string[]): boolean {
  const own = ipPattern(nodeIP)
  return own.test(value) && !otherIPs.some((ip) => ipPattern(ip).test(value))
}

/**
 * Turns one node's static pod into its node-independent form: the node's IP in node-specific
 * flags (advertise and bind address, a local etcd's URL) becomes $(HOST_IP) (filled from
 * status.hostIP); other flags keep it, so a value that really differs between nodes is refused
 * rather than guessed. Probe hosts equal to the node IP go (on hostNetwork the kubelet then probes
 * the pod IP, which is the host IP), and kubeadm's per-node endpoint annotation goes. Loopback
 * hosts stay: they are the same on every node.
 */
function normalise(manifest: StaticManifest, nodeIP: string | undefined, otherIPs: string[]): NormalisedManifest {
  const pod = parseStaticPod(manifest.bytes, `${manifest.component} manifest of node ${manifest.node}`)
  const replaced = new Set<string>()
  delete pod.status
  if (pod.metadata) {
    delete pod.metadata.creationTimestamp
    if (pod.metadata.annotations?.[ADVERTISE_ENDPOINT_ANNOTATION] !== undefined) {
      delete pod.metadata.annotations[ADVERTISE_ENDPOINT_ANNOTATION]
      replaced.add(`annotation ${ADVERTISE_ENDPOINT_ANNOTATION} dropped (kubeadm's per-node endpoint; a pod template cannot hold one)`)
      if (Object.keys(pod.metadata.annotations).length === 0) delete pod.metadata.annotations
    }
  }

  if (!nodeIP) return {node: manifest.node, pod, replaced}
  const substitute = (arg: string): string => {
    const match = /^--([^=]+)=(.*)$/.exec(arg)
    if (!match) return arg
    const [, name, value] = match
    const nodeSpecific = NODE_ADDRESS_FLAGS.includes(name) ? value === nodeIP : name === 'etcd-servers' && localEtcdServers(value, nodeIP, otherIPs)
    if (!nodeSpecific) return arg
    replaced.add(`--${name}: node IP replaced by $(${HOST_IP_ENV}) from the downward API (status.hostIP)`)
    return `--${name}=${value.replace(ipPattern(nodeIP), `$(${HOST_IP_ENV})`)}`
  }

  const droppedHosts: string[] = []
  for (const container of [...(pod.spec!.initContainers ?? []), ...pod.spec!.containers] as Container[]) {
    if (container.command) container.command = container.command.map((a) => substitute(a))
    if (container.args) container.args = container.args.map((a) => substitute(a))
    for (const [kind, probe] of probesOf(container)) {
      const action = probe.httpGet ?? probe.tcpSocket
      if (action?.host === nodeIP) {
        delete action.host
        if (!droppedHosts.includes(kind)) droppedHosts.push(kind)
      }
    }
  }

  // One line for every probe and node: the IP differs per node, the change does not.
  if (droppedHosts.length > 0) {
    replaced.add(`probe host (the node's IP) dropped from ${droppedHosts.join(', ')}: on hostNetwork the kubelet probes the pod IP, which is the node's own`)
  }

  return {node: manifest.node, pod, replaced}
}

function probesOf(container: Container): Array<[string, V1Probe]> {
  return (
    [
      ['livenessProbe', container.livenessProbe],
      ['readinessProbe', container.readinessProbe],
      ['startupProbe', container.startupProbe],
    ] as Array<[string, V1Probe | undefined]>
  ).filter((entry): entry is [string, V1Probe] => entry[1] !== undefined)
}

/**
 * On hostNetwork every declared container port is a host-port claim: the scheduler will not put
 * a second pod claiming it on the node, so the new instance could never start beside the one it
 * replaces (kubeadm declares `probe-port` since v1.34). The ports go, and whatever named them
 * (probes, lifecycle hooks) gets the number instead. Nothing is lost: on hostNetwork the process
 * binds the host's port whether or not it is declared.
 */
function releaseHostPorts(container: Container, where: string): string[] {
  const ports = container.ports ?? []
  if (ports.length === 0) return []
  const numbers = new Map(ports.filter((p) => p.name).map((p) => [p.name!, p.containerPort]))
  const renamed = new Set<string>()
  const resolve = (action: {port: number | string} | undefined, what: string) => {
    if (!action || typeof action.port === 'number') return
    const port = numbers.get(action.port)
    if (port === undefined) throw new CliError(`${where}: ${what} uses port "${action.port}", which no port of the container names`)
    renamed.add(`${action.port} → ${port}`)
    action.port = port
  }

  for (const [kind, probe] of probesOf(container)) {
    resolve(probe.httpGet, kind)
    resolve(probe.tcpSocket, kind)
  }

  for (const [hook, handler] of Object.entries(container.lifecycle ?? {}) as Array<[string, V1LifecycleHandler | undefined]>) {
    resolve(handler?.httpGet, hook)
    resolve(handler?.tcpSocket, hook)
  }

  delete container.ports
  const list = ports.map((p) => `${p.containerPort}${p.name ? ` (${p.name})` : ''}`).join(', ')
  return [
    `ports ${list} dropped: on hostNetwork a declared port is a hostPort claim, and the scheduler would not place the new pod beside the instance it replaces` +
      (renamed.size > 0 ? `; probes use the number instead of the name (${[...renamed].join(', ')})` : ''),
  ]
}

/** The first path at which two values differ, for a one-line refusal. */
function firstDifference(a: unknown, b: unknown, path = ''): string | undefined {
  if (isDeepStrictEqual(a, b)) return undefined
  if (Array.isArray(a) && Array.isArray(b)) {
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
      const d = firstDifference(a[i], b[i], `${path}[${i}]`)
      if (d) return d
    }
  }

  if (a && b && typeof a === 'object' && typeof b === 'object' && !Array.isArray(a)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()
    for (const key of keys) {
      const d = firstDifference((a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key], path ? `${path}.${key}` : key)
      if (d) return d
    }
  }

  return `${path || '(root)'} (${JSON.stringify(a)} vs ${JSON.stringify(b)})`
}

/** Sets a flag where it takes effect: its last occurrence (pflag), or appended where kubeadm keeps flags. */
function upsertFlag(container: Container, name: string, value: string): 'added' | 'changed' | 'kept' {
  // args come after command on the command line: search them first, each from its end.
  for (const list of [container.args, container.command]) {
    if (!list) continue
    let index = -1
    for (let i = list.length - 1; i >= 0 && index < 0; i--) if (list[i] === `--${name}` || list[i].startsWith(`--${name}=`)) index = i
    if (index >= 0) {
      if (list[index] === `--${name}=${value}` || (value === 'true' && list[index] === `--${name}`)) return 'kept'
      list[index] = `--${name}=${value}`
      return 'changed'
    }
  }

  // Flags go where kubeadm keeps them: after the binary in `command`, unless args hold the flags.
  if (container.args?.some((a) => a.startsWith('--')) || !container.command) container.args = [...(container.args ?? []), `--${name}=${value}`]
  else container.command = [...container.command, `--${name}=${value}`]
  return 'added'
}

/** Insecure HTTP ports bypass SO_REUSEPORT: a component still serving one cannot share its ports. */
function servesInsecurePort(component: PivotedComponent, container: Container, version: string): boolean {
  if (component === 'kube-apiserver') {
    if (atLeast(version, '1.20.0')) return false
    const port = flagValue(containerArgv(container), 'insecure-port')
    return port === undefined || port !== '0'
  }

  if (atLeast(version, '1.23.0')) return false
  const port = flagValue(containerArgv(container), 'port')
  return port === undefined || port !== '0'
}

interface RoleChoice {
  role: ControlPlaneRole
  label: string
  tolerations: V1Toleration[]
  note: string
}

const OTHER_TOLERATIONS_NOTE =
  "like the static pods, every NoExecute taint without a time limit (a NotReady node never evicts them), and every NoSchedule taint a control-plane node may carry (node conditions, a cloud provider's start-up taint, any other the nodes carry) except a cordon"

/** The label and taints the control-plane nodes really carry (or, from files, what kubeadm of that version sets). */
function chooseRole(nodes: PlanNodeInfo[] | undefined, version: string): RoleChoice {
  if (nodes && nodes.length > 0) {
    const label = CONTROL_PLANE_ROLE_LABELS.find((l) => nodes.every((n) => l in n.labels))
    if (!label) {
      throw new CliError(
        `control-plane nodes ${nodes.map((n) => n.name).join(', ')} do not share a node-role.kubernetes.io/control-plane or /master label to select them by`,
      )
    }

    const taintKeys = [
      ...new Set(nodes.flatMap((n) => n.taints.map((t) => t.key)).filter((k) => (CONTROL_PLANE_ROLE_LABELS as readonly string[]).includes(k))),
    ].sort()
    return {
      role: label.endsWith('master') ? 'master' : 'control-plane',
      label,
      tolerations: taintKeys.map((key) => ({key, operator: 'Exists', effect: 'NoSchedule'})),
      note: `selects nodes by ${label} and tolerates ${taintKeys.length > 0 ? taintKeys.join(', ') : 'no role taint (the nodes have none)'}, as the nodes carry them; ${OTHER_TOLERATIONS_NOTE}`,
    }
  }

  // kubeadm labels control-plane from 1.20; its taint moved from master to control-plane in 1.24-1.25.
  const label = atLeast(version, '1.20.0') ? CONTROL_PLANE_ROLE_LABELS[0] : CONTROL_PLANE_ROLE_LABELS[1]
  return {
    role: label.endsWith('master') ? 'master' : 'control-plane',
    label,
    tolerations: [...CONTROL_PLANE_ROLE_LABELS].sort().map((key) => ({key, operator: 'Exists', effect: 'NoSchedule'})),
    note: `no cluster to read: selects nodes by ${label} (kubeadm's label for ${minorVersion(version)}) and tolerates both the master and control-plane taints; ${OTHER_TOLERATIONS_NOTE}`,
  }
}

/**
 * NoSchedule taints a healthy or struggling control-plane node may carry besides its role taint:
 * node conditions (TaintNodesByCondition) and an external cloud provider's start-up taint. Left
 * out on purpose: a cordon (node.kubernetes.io/unschedulable), so a drained node takes no
 * replacement (the DaemonSet controller tolerates it for the apiserver by itself).
 */
const CONDITION_TAINTS = [
  'node.cloudprovider.kubernetes.io/uninitialized',
  'node.kubernetes.io/disk-pressure',
  'node.kubernetes.io/memory-pressure',
  'node.kubernetes.io/network-unavailable',
  'node.kubernetes.io/not-ready',
  'node.kubernetes.io/pid-pressure',
  'node.kubernetes.io/unreachable',
]
const CORDON_TAINT = 'node.kubernetes.io/unschedulable'
/** What the kubelet gives every static pod: no NoExecute taint evicts it, ever. */
const EVERY_NO_EXECUTE: V1Toleration = {operator: 'Exists', effect: 'NoExecute'}

/**
 * Tolerations of every control-plane pod: the role taints first, then every NoExecute taint
 * without a time limit (admission would otherwise give a Deployment's pods not-ready/unreachable
 * for 300s, and a replacement evicted from a NotReady node has no scheduler or controller-manager
 * left to place or create it), then the NoSchedule taints a control-plane node may carry (the
 * condition taints above and any other the nodes carry now), then the static pod's own.
 */
function controlPlaneTolerations(role: RoleChoice, nodes: PlanNodeInfo[] | undefined, own: V1Toleration[]): V1Toleration[] {
  const roleKeys = new Set(role.tolerations.map((t) => t.key))
  const carried = (nodes ?? []).flatMap((n) => n.taints.filter((t) => t.effect === 'NoSchedule').map((t) => t.key))
  const keys = [...new Set([...CONDITION_TAINTS, ...[...carried].sort()])].filter((k) => !roleKeys.has(k) && k !== CORDON_TAINT)
  const tolerations = [...role.tolerations, EVERY_NO_EXECUTE, ...keys.map((key) => ({key, operator: 'Exists', effect: 'NoSchedule'}))]
  for (const t of own) if (!tolerations.some((e) => isDeepStrictEqual(e, t))) tolerations.push(t)
  return tolerations
}

/**
 * The DNS the static pod really had. A hostNetwork pod left at ClusterFirst (the default) gets the
 * host's resolver, and so does `Default`: keeping that (`Default`) keeps kube-apiserver's cloud
 * provider, OIDC issuer, webhooks and etcd-by-hostname off CoreDNS, which itself needs the API.
 * ClusterFirstWithHostNet and None are the manifest's own choice and stay.
 */
function effectiveDnsPolicy(spec: V1PodSpec): string {
  const policy = spec.dnsPolicy ?? 'ClusterFirst'
  if (policy === 'ClusterFirst') return spec.hostNetwork ? 'Default' : 'ClusterFirstWithHostNet'
  return policy
}

function ensureHostIPEnv(container: Container): void {
  const env: V1EnvVar[] = (container.env ?? []).filter((e) => e.name !== HOST_IP_ENV)
  container.env = [{name: HOST_IP_ENV, valueFrom: {fieldRef: {apiVersion: 'v1', fieldPath: 'status.hostIP'}}}, ...env]
}

const usesHostIP = (container: Container) =>
  [...(container.command ?? []), ...(container.args ?? []), ...(container.env ?? []).map((e) => e.value ?? '')].some((a) => a.includes(`$(${HOST_IP_ENV})`))

/** Workload pod spec from the node-independent static pod spec. */
function workloadPodSpec(spec: V1PodSpec, role: RoleChoice, nodes: PlanNodeInfo[] | undefined): V1PodSpec {
  const out: V1PodSpec = {...spec}
  delete out.nodeName
  // Priority admission fills these from the class; a copied number could disagree with it.
  delete out.priority
  delete out.preemptionPolicy
  out.hostNetwork = true
  out.dnsPolicy = effectiveDnsPolicy(spec)
  // Control-plane components talk to the API with their own kubeconfig files, never a token.
  out.automountServiceAccountToken = false
  out.priorityClassName = spec.priorityClassName ?? 'system-node-critical'
  out.nodeSelector = {...spec.nodeSelector, [role.label]: ''}
  out.tolerations = controlPlaneTolerations(role, nodes, spec.tolerations ?? [])
  return out
}

function componentVersion(component: PivotedComponent, container: Container): string {
  const version = versionFromImage(container.image)
  if (!version) throw new CliError(`cannot tell the version of ${component} from its image "${container.image}"; pivot needs a version tag (e.g. :v1.29.4)`)
  if (!atLeast(version, MIN_SUPPORTED_VERSION)) {
    throw new CliError(`${component} is ${version}; pivot supports Kubernetes ${MIN_SUPPORTED_VERSION.replace(/\.0$/, '')} and newer`)
  }

  return version
}

/** Nodes sorted by name, the current leader last so the lease moves once. */
function handoffOrder(nodes: string[], leader: string | undefined): string[] {
  const sorted = [...nodes].sort(byName)
  if (!leader || !sorted.includes(leader)) return sorted
  return [...sorted.filter((n) => n !== leader), leader]
}

/** Each node's IP ($(HOST_IP) on that node). */
function planNodes(nodeNames: string[], nodeIPs: Map<string, string | undefined>): Record<string, PlanNode> {
  const perNode: Record<string, PlanNode> = {}
  for (const node of nodeNames) {
    const ip = nodeIPs.get(node)
    perNode[node] = ip ? {ip} : {}
  }

  return perNode
}

/**
 * The apiserver DaemonSet surges where it can: the new instance starts beside the old one on
 * the same port (--permit-port-sharing) and the old one goes only once the new one is Ready, so
 * `kubectl rollout restart` on one node keeps the API. That needs port sharing and DaemonSet
 * maxSurge (beta and on by default from 1.22; an older server drops the field and then refuses
 * maxUnavailable 0).
 */
function daemonSetRollout(handoff: HandoffMode, version: string, nodeCount: number): RolloutPlan {
  const surgeVersion = supportsDaemonSetSurge(semver.parse(version)!)
  if (handoff === 'port-sharing' && surgeVersion) {
    return {
      maxSurge: 1,
      maxUnavailable: 0,
      outsideRollouts: 'safe',
      why: "each node's new apiserver starts beside the old one on the same port (--permit-port-sharing, maxSurge 1) and the old one stops only once the new one is Ready",
    }
  }

  const lacks =
    handoff === 'port-sharing' ? `DaemonSet maxSurge needs 1.22, this is ${version}` : `no port sharing (${version} < 1.19, or an insecure port still open)`
  if (nodeCount > 1) {
    return {
      maxSurge: 0,
      maxUnavailable: 1,
      outsideRollouts: 'safe',
      why: `${lacks}: a rollout stops one node's apiserver before its replacement starts, one node at a time, while the other nodes' apiservers keep the API`,
    }
  }

  return {
    maxSurge: 0,
    maxUnavailable: 1,
    outsideRollouts: 'unsafe',
    why:
      `${lacks}: a rollout stops the only apiserver before its replacement starts, and creating, placing and starting the replacement needs that very API; ` +
      'change it with `kubectl selfhost upgrade`, which keeps a temporary apiserver on the port meanwhile',
  }
}

/**
 * Deployments keep maxSurge 0 wherever another replica serves meanwhile: spread is checked only
 * when a pod is scheduled, so a surge pod created while the old pods still hold every node would
 * double up on one of them and the rollout might then free a different node, leaving two
 * replicas on one node and none on another; a replacement created after its predecessor left can
 * only take the node that one freed (the PodDisruptionBudget does not slow this down: rollouts
 * delete pods, they don't evict). One replica has nobody to serve meanwhile, and the scheduler's
 * (or the controller-manager's) replacement needs the very instance being deleted: it surges.
 * On several nodes the surge pod goes to another node; on one node it must share the old one's
 * ports, which needs port sharing.
 */
export function deploymentRollout(component: PivotedComponent, handoff: HandoffMode, replicas: number, nodeCount: number): RolloutPlan {
  if (replicas > 1) {
    return {
      maxSurge: 0,
      maxUnavailable: 1,
      outsideRollouts: 'safe',
      why: `${replicas} replicas: a rollout replaces one at a time while the others serve, and each replacement takes the node its predecessor freed (spread is checked only at scheduling, so a surge pod could double up on one node)`,
    }
  }

  if (nodeCount > 1 || handoff === 'port-sharing') {
    return {
      maxSurge: 1,
      maxUnavailable: 0,
      outsideRollouts: 'safe',
      why:
        nodeCount > 1
          ? 'one replica: the new pod starts on another control-plane node (maxSurge 1) and the old one stops only once the new one is Ready'
          : 'one replica on one node: the new pod starts beside the old one on the same ports (--permit-port-sharing, maxSurge 1) and the old one stops only once the new one is Ready',
    }
  }

  const needs = component === 'kube-scheduler' ? 'a scheduler to place it' : 'a controller-manager to create it'
  return {
    maxSurge: 0,
    maxUnavailable: 1,
    outsideRollouts: 'unsafe',
    why: `one replica on one node and no port sharing: a rollout deletes the only ${component} before its replacement can bind the ports, and the replacement needs ${needs}`,
  }
}

/**
 * A re-run renders from the backups, which hold the version from before any `upgrade`: the
 * workload keeps the image it runs now, as it keeps its replica count, so a re-run never
 * downgrades what an upgrade put in place.
 */
function keepLiveImage(plan: ComponentPlan, liveImage: string | undefined): void {
  if (!liveImage) return
  for (const object of plan.objects) {
    if (object.kind !== 'DaemonSet' && object.kind !== 'Deployment') continue
    const container = componentContainer((object as V1DaemonSet | V1Deployment).spec?.template?.spec?.containers, plan.component)
    if (!container || container.image === liveImage) continue
    plan.changes.push(`image kept at ${liveImage}, which the ${object.kind} runs now (the backup has ${container.image}, from before an upgrade)`)
    container.image = liveImage
  }
}

/**
 * Plans the move of kube-apiserver, kube-controller-manager and kube-scheduler from static
 * pods into self-hosted workloads. Pure: inputs are the static manifests (from the nodes or a
 * directory) and what the cluster says about its nodes; output is every object and step.
 * Refuses, in one line, what it cannot do safely.
 */
export function planPivot(inputs: PivotInputs): PivotPlan {
  const deadline = inputs.handoffDeadlineSeconds ?? 180
  const existing = inputs.existingWorkloads ?? []
  const foreign = existing.find((w) => !w.managedByUs)
  if (foreign) {
    throw new CliError(
      `${foreign.component} already runs as ${foreign.kind} ${SYSTEM_NAMESPACE}/${foreign.name}, not managed by kubectl-selfhost: already self-hosted`,
    )
  }

  if (inputs.manifests.length === 0) {
    if (existing.length > 0)
      throw new CliError(
        'the control plane is already self-hosted by kubectl-selfhost (no static manifests left to pivot); use `kubectl selfhost revert` to go back',
      )
    throw new CliError('no static control plane found: no kube-apiserver, kube-controller-manager or kube-scheduler static manifests on any control-plane node')
  }

  const nodeNames = [...new Set(inputs.manifests.map((m) => m.node))].sort(byName)
  if (inputs.nodes) {
    const unknown = nodeNames.filter((n) => !inputs.nodes!.some((node) => node.name === n))
    if (unknown.length > 0) throw new CliError(`static manifests found on ${unknown.join(', ')}, which the cluster does not list as control-plane nodes`)
    const bare = inputs.nodes.map((n) => n.name).filter((n) => !nodeNames.includes(n))
    if (bare.length > 0)
      throw new CliError(`control-plane node(s) ${bare.join(', ')} have no static control plane, but the self-hosted workloads would run there too`)
  }

  const nodeIPs = new Map<string, string | undefined>()
  for (const node of nodeNames) {
    const advertised = advertisedIP(inputs.manifests, node)
    const internal = inputs.nodes?.find((n) => n.name === node)?.internalIP
    if (advertised && internal && advertised !== internal) {
      throw new CliError(
        `kube-apiserver on ${node} advertises ${advertised} but the node's IP is ${internal}; a DaemonSet can only advertise status.hostIP, so pivot would change the advertised address`,
      )
    }

    nodeIPs.set(node, advertised ?? internal)
  }

  const apiserverManifest = inputs.manifests.find((m) => m.component === 'kube-apiserver')
  const referenceVersion = componentVersion(
    apiserverManifest?.component ?? inputs.manifests[0].component,
    parseStaticPod((apiserverManifest ?? inputs.manifests[0]).bytes, 'the reference manifest').spec!.containers[0],
  )
  const role = chooseRole(inputs.nodes, referenceVersion)

  const components: ComponentPlan[] = []
  const warnings: string[] = []
  for (const component of PIVOTED_COMPONENTS) {
    const mine = inputs.manifests.filter((m) => m.component === component)
    if (mine.length === 0) {
      if (existing.some((w) => w.component === component)) continue
      throw new CliError(`${component} has no static manifest on any control-plane node; pivot moves the whole control plane or nothing`)
    }

    const missing = nodeNames.filter((n) => !mine.some((m) => m.node === n))
    if (missing.length > 0)
      throw new CliError(
        `${component} has no static manifest on ${missing.join(', ')} (but ${mine[0].node} has one); pivot needs the same control plane on every node`,
      )
    if (mine.length > nodeNames.length) throw new CliError(`${component} has more than one static manifest on a node; pivot cannot tell which one runs`)

    const ipsOf = (node: string) => nodeNames.filter((n) => n !== node).flatMap((n) => nodeIPs.get(n) ?? [])
    const normalised = mine.sort((a, b) => byName(a.node, b.node)).map((m) => normalise(m, nodeIPs.get(m.node), ipsOf(m.node)))
    const reference = normalised[0]
    for (const other of normalised.slice(1)) {
      const difference = firstDifference(reference.pod, other.pod)
      if (difference) {
        throw new CliError(
          `${component} differs between control-plane nodes ${reference.node} and ${other.node} beyond node-specific values, at ${difference}; make them equal first`,
        )
      }
    }

    const liveReplicas = existing.find((w) => w.component === component && w.kind === 'Deployment')?.replicas
    const built = buildComponentPlan(
      component,
      normalised,
      mine,
      role,
      inputs.nodes,
      nodeNames,
      inputs.leaders?.[component],
      liveReplicas,
      warnings,
      !inputs.forceBlindHandoff,
    )
    keepLiveImage(built, existing.find((w) => w.component === component && w.managedByUs)?.image)
    components.push(built)
  }

  const perNode = planNodes(nodeNames, nodeIPs)

  const version = components.find((c) => c.component === 'kube-apiserver')?.version ?? referenceVersion
  const steps = components.flatMap((c) => componentSteps(c, deadline))
  const blind = components.filter((c) => c.handoff === 'blind').map((c) => c.component)
  const checkpoint = inputs.checkpoint ?? true
  const apiserverPlan = components.find((c) => c.component === 'kube-apiserver')
  const sharingCheckpoint = apiserverPlan?.handoff === 'port-sharing'
  if (checkpoint) {
    for (const node of nodeNames) {
      steps.push({
        node,
        action: 'checkpoint',
        description: `write checkpoints of the self-hosted pods Ready on ${node} into ${CHECKPOINT_DIR}/, and the checkpointer's static pod into ${MANIFESTS_DIR}/${CHECKPOINTER_FILE}; wait until it runs`,
      })
    }
  }

  const costs = [
    checkpoint
      ? `Checkpoints: each control-plane node keeps its self-hosted pods' last Ready spec on its disk (${CHECKPOINT_DIR}/), and a static pod, the checkpointer, starts them as static pods when no kube-apiserver listens there for ${DEFAULT_TIMINGS.grace}s (${DEFAULT_TIMINGS.bootGrace}s after a boot), so a full control-plane restart recovers with no human action; ` +
        (sharingCheckpoint
          ? `once the self-hosted kube-apiserver listens beside its copy for ${DEFAULT_TIMINGS.apiserverSettle}s (port sharing), the copy steps aside.`
          : `without port sharing (${version} < 1.19) the copy serves ${DEFAULT_TIMINGS.noSharingHold}s and then steps aside: the API is away until the self-hosted kube-apiserver binds at its next restart (up to the kubelet's 5-minute back-off).`)
      : 'No checkpointing (--no-checkpoint): if every control-plane node restarts at once (power loss, a full reboot), no kubelet can start the self-hosted kube-apiserver again, because its DaemonSet lives in the API it serves. ' +
        `Recovery by hand on one node: cp ${BACKUP_ROOT}/<timestamp>/*.yaml ${MANIFESTS_DIR}/ (the backups pivot keeps), then \`kubectl selfhost revert\`.`,
    'kube-controller-manager and kube-scheduler cannot recreate themselves from zero replicas: a PodDisruptionBudget (minAvailable 1) keeps drains from evicting the last one.',
  ]
  if (nodeNames.length === 1)
    costs.push(`A single control-plane node: rebooting it is the full-control-plane restart above${checkpoint ? ', recovered from its checkpoint' : ''}.`)
  if (components.some((c) => c.component === 'kube-apiserver' && c.handoff === 'port-sharing')) {
    costs.push(
      `Each static kube-apiserver restarts once to take --permit-port-sharing (a socket can only be shared if the first one allowed it)${nodeNames.length === 1 ? ': with one node, the API is away for that restart' : ', one node at a time'}; after that, hand-offs keep the API serving.`,
    )
  }
  if (blind.length > 0) {
    costs.push(
      `${blind.join(', ')} cannot share ports (${version} < 1.19, or an insecure port still open): blind hand-off, as kubeadm did. The new instance binds only once the static one stopped; ` +
        `the API is away from that stop until the new kube-apiserver serves (on one node; with several, the others serve), and the node-side task puts the static manifest back unless the CLI confirms within ${handoffDeadlineSeconds('blind', deadline)}s that the new instance serves; for the others pivot stops that task at once when their pod is not Ready in time, and it puts the manifest back.`,
    )
  }

  return {
    version,
    role: role.role,
    nodes: nodeNames,
    perNode,
    components,
    objects: components.flatMap((c) => c.objects),
    steps,
    costs,
    notes: [
      "etcd stays static: a self-hosted etcd needs the API it stores to schedule itself (bootkube and kubeadm both abandoned it); each kube-apiserver keeps using its node's static etcd.",
      `${role.note}.`,
      `Backups: each node's original manifests are moved, byte for byte, into ${BACKUP_ROOT}/<timestamp>/ on that node; \`kubectl selfhost revert\` puts them back.`,
      ...(inputs.forceBlindHandoff
        ? [
            '--force-blind-handoff: planned as on clusters before 1.19, with no port sharing: every hand-off stops the static instance before the self-hosted one can bind its port.',
          ]
        : []),
      "The hand-off is a dead man's switch: a node task (needing no API, and no HTTP client in its image) takes the static manifest away and puts it back unless the CLI confirms, through a second node task on that node, that the self-hosted instance serves on its own; a Ctrl-C or a CLI that dies leaves the confirmation unwritten, so the static pod comes back.",
      ...components.map((c) => `${c.component}: rollouts started outside kubectl selfhost are ${c.rollout.outsideRollouts}: ${c.rollout.why}.`),
    ],
    warnings,
  }
}

function buildComponentPlan(
  component: PivotedComponent,
  normalised: NormalisedManifest[],
  sources: StaticManifest[],
  role: RoleChoice,
  nodes: PlanNodeInfo[] | undefined,
  nodeNames: string[],
  leader: string | undefined,
  liveReplicas: number | undefined,
  warnings: string[],
  portSharingAllowed: boolean,
): ComponentPlan {
  const pod = structuredClone(normalised[0].pod)
  const container = pod.spec!.containers[0] as Container
  const version = componentVersion(component, container)
  const changes = [...new Set(normalised.flatMap((n) => [...n.replaced]))]

  if (component !== 'kube-apiserver') {
    const leaderElect = upsertFlag(container, 'leader-elect', 'true')
    if (leaderElect === 'added') changes.push('--leader-elect=true added: several replicas must elect one active leader')
    if (leaderElect === 'changed') changes.push('--leader-elect=false changed to true: several replicas without leader election would all act at once')
  }

  let handoff: HandoffMode = 'blind'
  if (portSharingAllowed && atLeast(version, PORT_SHARING_VERSION)) {
    if (servesInsecurePort(component, container, version)) {
      warnings.push(
        `${component} still serves an insecure port, which SO_REUSEPORT does not cover: its hand-off is blind (set --${component === 'kube-apiserver' ? 'insecure-port' : 'port'}=0 to avoid it)`,
      )
    } else {
      handoff = 'port-sharing'
    }

    if (upsertFlag(container, 'permit-port-sharing', 'true') !== 'kept') {
      changes.push('--permit-port-sharing=true added: old and new instances can serve the same port during hand-offs and upgrades')
    }
  }

  for (const c of [...(pod.spec!.initContainers ?? []), ...pod.spec!.containers] as Container[]) {
    changes.push(...releaseHostPorts(c, `${component} container ${c.name}`))
  }

  for (const c of pod.spec!.containers as Container[]) if (usesHostIP(c)) ensureHostIPEnv(c)

  const name = selfHostedName(component)
  const selector = {[SELF_HOSTED_APP_LABEL]: name}
  const labels = {[SELF_HOSTED_APP_LABEL]: name, [MANAGED_BY_LABEL]: MANAGED_BY_VALUE}
  const sourceHashes = Object.fromEntries(sources.map((s) => [s.node, sha256(s.bytes)]))
  const annotations = {
    [SOURCE_MANIFEST_HASH_ANNOTATION]: sourceHashes[nodeNames[0]],
    [SOURCE_MANIFESTS_ANNOTATION]: Object.entries(sourceHashes)
      .map(([node, hash]) => `${node}=${hash}`)
      .join(','),
  }
  const template = {
    metadata: {
      labels: {...pod.metadata?.labels, ...labels},
      ...(pod.metadata?.annotations ? {annotations: pod.metadata.annotations} : {}),
    },
    spec: workloadPodSpec(pod.spec!, role, nodes),
  }
  const replicas = liveReplicas ?? nodeNames.length
  const rollout =
    component === 'kube-apiserver' ? daemonSetRollout(handoff, version, nodeNames.length) : deploymentRollout(component, handoff, replicas, nodeNames.length)
  const rollingUpdate = {maxSurge: rollout.maxSurge, maxUnavailable: rollout.maxUnavailable}
  const metadata = {
    name,
    namespace: SYSTEM_NAMESPACE,
    labels: {...labels, component},
    annotations: {...annotations, [OUTSIDE_ROLLOUTS_ANNOTATION]: `${rollout.outsideRollouts}: ${rollout.why}`},
  }
  if (rollout.outsideRollouts === 'unsafe') {
    warnings.push(
      `${component}: rollouts started outside kubectl selfhost (kubectl rollout restart, kubectl edit, re-applying these objects changed) are unsafe: ${rollout.why}`,
    )
  }

  const objects: SelfHostedObject[] = []
  let kind: ComponentPlan['kind']
  if (component === 'kube-apiserver') {
    // One per control-plane node, like the static pods it replaces: clients and load balancers keep their endpoints.
    kind = 'DaemonSet'
    objects.push({
      apiVersion: 'apps/v1',
      kind,
      metadata,
      // Without surge the field stays out, as before: servers older than 1.22 do not know it.
      spec: {
        selector: {matchLabels: selector},
        updateStrategy: {type: 'RollingUpdate', rollingUpdate: rollout.maxSurge > 0 ? rollingUpdate : {maxUnavailable: 1}},
        template,
      },
    } as SelfHostedObject)
  } else {
    // A Deployment, not a DaemonSet, so `scale` can set replicas apart from the node count; spread one
    // per node so losing a node loses one replica. Both kinds need the scheduler for new pods on
    // 1.12+, so a DaemonSet would buy nothing against a lost scheduler.
    kind = 'Deployment'
    const portSharing = handoff === 'port-sharing'
    const spread = portSharing
      ? {
          // 1.19+ (the scheduler has topology spread): hard, never a preference.
          topologySpreadConstraints: [
            {maxSkew: 1, topologyKey: 'kubernetes.io/hostname', whenUnsatisfiable: 'DoNotSchedule', labelSelector: {matchLabels: selector}},
          ],
        }
      : {
          // Before 1.19: strictly one per node (two instances could not share a node's port anyway).
          affinity: {
            podAntiAffinity: {
              requiredDuringSchedulingIgnoredDuringExecution: [{topologyKey: 'kubernetes.io/hostname', labelSelector: {matchLabels: selector}}],
            },
          },
        }
    objects.push({
      apiVersion: 'apps/v1',
      kind,
      metadata,
      spec: {
        // A re-run (resume, or after `scale`) applies the live count. Forcing the node count would
        // undo `scale`; leaving the field out would not help either: it drops our claim, and where no
        // other manager holds the field (nobody scaled since) SSA removes it and the API defaults it to 1.
        replicas,
        selector: {matchLabels: selector},
        // Surge only for a single replica (see deploymentRollout): with more, spread binds only at
        // scheduling and a surge pod could double up on one node.
        strategy: {type: 'RollingUpdate', rollingUpdate},
        template: {...template, spec: {...template.spec, ...spread}},
      },
    } as SelfHostedObject)
    objects.push({
      // policy/v1 from 1.21; v1beta1 (removed in 1.25) before.
      apiVersion: atLeast(version, '1.21.0') ? 'policy/v1' : 'policy/v1beta1',
      kind: 'PodDisruptionBudget',
      metadata: {name, namespace: SYSTEM_NAMESPACE, labels: {...labels, component}},
      spec: {minAvailable: 1, selector: {matchLabels: selector}},
    })
    if (liveReplicas !== undefined && liveReplicas !== nodeNames.length) {
      warnings.push(
        `${component}: Deployment ${SYSTEM_NAMESPACE}/${name} keeps its ${liveReplicas} replica(s), scaled since it was applied, rather than one per node (${nodeNames.length})`,
      )
    }
  }

  return {component, version, kind, name, handoff, nodeOrder: handoffOrder(nodeNames, leader), sourceHashes, objects, changes, rollout}
}

function componentSteps(plan: ComponentPlan, deadline: number): PivotStep[] {
  const {component, kind, name} = plan
  const steps: PivotStep[] = []
  const backupStep = (node: string): PivotStep => ({
    component,
    node,
    action: 'backup',
    description: `copy ${MANIFESTS_DIR}/${component}.yaml byte for byte into ${BACKUP_ROOT}/<timestamp>/ on ${node}`,
  })
  if (plan.handoff === 'port-sharing') {
    for (const node of plan.nodeOrder) {
      steps.push(backupStep(node), {
        component,
        node,
        action: 'enable-port-sharing',
        description: `restart the static ${component} on ${node} with --permit-port-sharing (the old socket must allow sharing too); wait until its mirror pod is Ready`,
      })
    }
  } else {
    for (const node of plan.nodeOrder) steps.push(backupStep(node))
  }

  steps.push({
    component,
    action: 'apply',
    description: `server-side apply ${kind} ${SYSTEM_NAMESPACE}/${name}${kind === 'Deployment' ? ' and its PodDisruptionBudget' : ''} (field manager kubectl-selfhost)`,
  })
  for (const node of plan.nodeOrder) {
    steps.push(
      plan.handoff === 'port-sharing'
        ? {
            component,
            node,
            action: 'wait-ready',
            description: `wait until the self-hosted pod on ${node} is Ready and its process has listened next to the static one for ${HANDOFF_SETTLE_SECONDS}s (checked on the node: the pod's probes may be answered by the static one)`,
          }
        : {
            component,
            node,
            action: 'wait-ready',
            description: `wait until the self-hosted pod is placed on ${node} (it cannot bind its port before the static one stops)`,
          },
      {
        component,
        node,
        action: 'handoff',
        description:
          component === 'kube-apiserver'
            ? `take the static manifest out of the kubelet's sight on ${node} (its original stays in the backup); the node task puts it back unless the CLI confirms within ${handoffDeadlineSeconds(plan.handoff, deadline)}s that the self-hosted apiserver on ${node} serves on its own`
            : `take the static manifest out of the kubelet's sight on ${node}; the node task puts it back unless the CLI confirms that the self-hosted pod is Ready on its own (at once if it is not Ready in time)`,
      },
      {component, node, action: 'wait-mirror-gone', description: `wait until the mirror pod ${component}-${node} is gone`},
      {component, node, action: 'wait-healthy', description: `wait until the self-hosted ${component} on ${node} is Ready and the API is healthy`},
    )
  }

  return steps
}
