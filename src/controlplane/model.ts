/**
 * The component model every command shares: what runs the control plane, where, at which
 * version, who leads, and whether it is healthy. Discovery fills it from the cluster;
 * planners read it.
 */

export const CONTROL_PLANE_COMPONENTS = ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'etcd', 'kube-proxy', 'coredns'] as const
export type ComponentName = (typeof CONTROL_PLANE_COMPONENTS)[number]

/** The components `pivot` moves into workloads (etcd stays static; see pivot's plan). */
export const PIVOTED_COMPONENTS = ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler'] as const
export type PivotedComponent = (typeof PIVOTED_COMPONENTS)[number]

/** Components that elect a leader; the others are active-active or not ours to judge. */
export const LEADER_ELECTED_COMPONENTS = ['kube-controller-manager', 'kube-scheduler'] as const

export const SYSTEM_NAMESPACE = 'kube-system'
/** Where kubeadm's kubelets read static pod manifests. */
export const MANIFESTS_DIR = '/etc/kubernetes/manifests'
/** Where pivot keeps each node's original manifests, one directory per run. */
export const BACKUP_ROOT = '/etc/kubernetes/selfhost/backup'
/** kubeadm's control-plane node label (and NoSchedule taint key): from 1.20, then the older one. */
export const CONTROL_PLANE_ROLE_LABEL = 'node-role.kubernetes.io/control-plane'
export const MASTER_ROLE_LABEL = 'node-role.kubernetes.io/master'
export const CONTROL_PLANE_ROLE_LABELS = [CONTROL_PLANE_ROLE_LABEL, MASTER_ROLE_LABEL] as const
/** A node kubeadm made a control-plane node: it carries either role label. */
export const isControlPlaneNode = (node: {metadata?: {labels?: Record<string, string>}}): boolean =>
  CONTROL_PLANE_ROLE_LABELS.some((l) => l in (node.metadata?.labels ?? {}))
export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by'
export const MANAGED_BY_VALUE = 'kubectl-selfhost'
/** kubeadm's own pivot used this label and the name `self-hosted-<component>`; so do we. */
export const SELF_HOSTED_APP_LABEL = 'k8s-app'
export const selfHostedName = (component: PivotedComponent): string => `self-hosted-${component}`
/** The pivoted component a pod of pivot's workloads runs, by its `k8s-app` label. */
export const selfHostedComponentOf = (pod: {metadata?: {labels?: Record<string, string>}}): PivotedComponent | undefined =>
  PIVOTED_COMPONENTS.find((c) => pod.metadata?.labels?.[SELF_HOSTED_APP_LABEL] === selfHostedName(c))
/** The sha256 of the static manifest a self-hosted workload was generated from. */
export const SOURCE_MANIFEST_HASH_ANNOTATION = 'selfhost.kubectl.io/source-manifest-sha256'
/**
 * On a self-hosted workload: whether a rollout started outside kubectl-selfhost (`kubectl rollout
 * restart`, `kubectl edit`, a GitOps re-apply with a changed template) keeps the component
 * serving: `safe: <why>` or `unsafe: <why>`, as pivot planned its update strategy.
 */
export const OUTSIDE_ROLLOUTS_ANNOTATION = 'selfhost.kubectl.io/outside-rollouts'
export const MIRROR_ANNOTATION = 'kubernetes.io/config.mirror'
/** A static pod as the API shows it: the kubelet's mirror of a manifest file. */
export const isMirrorPod = (pod: {metadata?: {annotations?: Record<string, string>}}): boolean => Boolean(pod.metadata?.annotations?.[MIRROR_ANNOTATION])
export const LEGACY_LEADER_ANNOTATION = 'control-plane.alpha.kubernetes.io/leader'

/**
 * static: only kubelet-managed static pods (mirror pods in the API).
 * self-hosted: only DaemonSet/Deployment pods.
 * mixed: both at once, as while a pivot is under way.
 * absent: nothing visible, as on managed clusters where the provider runs it.
 */
export type HostingMode = 'static' | 'self-hosted' | 'mixed' | 'absent'

export interface Instance {
  pod: string
  namespace: string
  node: string
  /** mirror pod of a static manifest, or a pod of a workload */
  source: 'static' | 'workload'
  phase: string
  ready: boolean
  restarts: number
  image: string
  /** Version from the image tag, e.g. v1.15.0; undefined when the tag is not a version. */
  version?: string
  startedAt?: string
  /** The instance's hostname as it appears in a leader record's holderIdentity. */
  hostname?: string
  /** The component's own container in the pod (logs read it unless told otherwise). */
  container?: string
}

export interface Workload {
  kind: 'DaemonSet' | 'Deployment'
  namespace: string
  name: string
  desired: number
  ready: number
  updated: number
  available: number
  image: string
  generation: number
  observedGeneration: number
  managedByUs: boolean
}

export interface LeaderRecord {
  /** Where the record was read: a Lease (1.14+ optional, 1.20+ only) or the legacy annotation. */
  source: 'Lease' | 'Endpoints' | 'ConfigMap'
  holderIdentity: string
  /** holderIdentity up to the first "_": the leader's hostname. */
  holder: string
  leaseDurationSeconds?: number
  renewTime?: string
  acquireTime?: string
  transitions?: number
  /** renewTime + leaseDurationSeconds is in the past. */
  stale: boolean
  /** The pod whose node/hostname matches the holder, when one does. */
  pod?: string
  node?: string
}

export interface HealthCheck {
  name: string
  ok: boolean
  message?: string
}

export interface ApiserverHealth {
  /** Which endpoint answered: /readyz, /livez, or /healthz on servers older than 1.16. */
  readyz: {ok: boolean; status: number; checks: HealthCheck[]; endpoint: string}
  livez: {ok: boolean; status: number; checks: HealthCheck[]; endpoint: string}
}

export interface ComponentState {
  name: ComponentName
  mode: HostingMode
  instances: Instance[]
  workloads: Workload[]
  /** Distinct versions across instances, sorted. */
  versions: string[]
  leader?: LeaderRecord
  healthy: boolean
  /** One line each: why the component is unhealthy or what deserves attention. */
  problems: string[]
  warnings: string[]
}

export interface NodeSummary {
  name: string
  ready: boolean
  controlPlane: boolean
  /** `control-plane` (1.20+) or `master` (older), as the cluster labels its nodes. */
  role?: 'control-plane' | 'master'
  kubeletVersion: string
  internalIP?: string
  taints: Array<{key: string; effect: string; value?: string}>
}

/** What one control-plane node holds to restart its self-hosted control plane with no API (see src/checkpoint). */
export interface NodeCheckpoint {
  node: string
  checkpointer: 'ready' | 'not-ready' | 'absent'
  checkpoints: Array<{component: PivotedComponent; version: string; written: string; ageSeconds: number; current: boolean}>
  /** Components this node runs from their checkpoint right now (a recovery in progress). */
  serving: PivotedComponent[]
  /** Why the node is not covered: no checkpointer, a stale or missing apiserver checkpoint, a problem the checkpointer reports. */
  gap?: string
}

export interface ControlPlane {
  serverVersion: string
  context: string
  server: string
  nodes: NodeSummary[]
  components: ComponentState[]
  apiserver: ApiserverHealth
  /** One per control-plane node once anything on the cluster is self-hosted; empty otherwise. */
  checkpoints: NodeCheckpoint[]
  healthy: boolean
  observedAt: string
}
