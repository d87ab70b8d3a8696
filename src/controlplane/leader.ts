import type {V1Lease, V1ObjectMeta} from '../kube/types.js'
import type {KubeClient} from '../kube/client.js'
import {Instance, LEGACY_LEADER_ANNOTATION, LeaderRecord, SYSTEM_NAMESPACE} from './model.js'

/** The object (Lease, Endpoints or ConfigMap) is the leader-election lock of `component`: named after it, in kube-system. */
export function isLockOf(component: string, object: {metadata?: {name?: string; namespace?: string}}): boolean {
  return object.metadata?.name === component && (object.metadata?.namespace ?? SYSTEM_NAMESPACE) === SYSTEM_NAMESPACE
}

/** holderIdentity is `<hostname>_<uuid>` (client-go's resourcelock); older builds used the bare hostname. */
export function holderHostname(holderIdentity: string): string {
  const cut = holderIdentity.indexOf('_')
  return cut >= 0 ? holderIdentity.slice(0, cut) : holderIdentity
}

/** A leader stops leading when it misses renewTime + leaseDurationSeconds; then others may take over. */
export function isStale(renewTime: string | undefined, leaseDurationSeconds: number | undefined, now: Date): boolean {
  if (!renewTime || leaseDurationSeconds === undefined) return true
  const renewed = Date.parse(renewTime)
  if (Number.isNaN(renewed)) return true
  return renewed + leaseDurationSeconds * 1000 < now.getTime()
}

function record(
  source: LeaderRecord['source'],
  fields: {holderIdentity?: string; leaseDurationSeconds?: number; renewTime?: string | null; acquireTime?: string | null; transitions?: number},
  now: Date,
): LeaderRecord | undefined {
  // An empty holder means the last leader released the lock on shutdown: nobody leads.
  if (!fields.holderIdentity) return undefined
  const renewTime = fields.renewTime || undefined
  return {
    source,
    holderIdentity: fields.holderIdentity,
    holder: holderHostname(fields.holderIdentity),
    leaseDurationSeconds: fields.leaseDurationSeconds,
    renewTime,
    acquireTime: fields.acquireTime || undefined,
    transitions: fields.transitions,
    stale: isStale(renewTime, fields.leaseDurationSeconds, now),
  }
}

/** The leader recorded in a coordination.k8s.io/v1 Lease (the only lock from 1.20 on). */
export function leaderFromLease(lease: V1Lease, now: Date): LeaderRecord | undefined {
  const spec = lease.spec ?? {}
  return record(
    'Lease',
    {
      holderIdentity: spec.holderIdentity,
      leaseDurationSeconds: spec.leaseDurationSeconds,
      renewTime: spec.renewTime,
      acquireTime: spec.acquireTime,
      transitions: spec.leaseTransitions,
    },
    now,
  )
}

/** client-go's LeaderElectionRecord: its times are not omitempty, so a zero time is written as null. */
interface LegacyLeaderAnnotation {
  holderIdentity?: string
  leaseDurationSeconds?: number
  renewTime?: string | null
  acquireTime?: string | null
  leaderTransitions?: number
}

/**
 * The leader recorded in the JSON annotation control-plane.alpha.kubernetes.io/leader on an
 * Endpoints or ConfigMap object (the lock of clusters up to 1.19). Undefined when the object
 * carries no readable record.
 */
export function leaderFromAnnotation(obj: {metadata?: V1ObjectMeta}, source: 'Endpoints' | 'ConfigMap', now: Date): LeaderRecord | undefined {
  const text = obj.metadata?.annotations?.[LEGACY_LEADER_ANNOTATION]
  if (!text) return undefined
  let parsed: LegacyLeaderAnnotation
  try {
    parsed = JSON.parse(text) as LegacyLeaderAnnotation
  } catch {
    return undefined
  }

  return record(
    source,
    {
      holderIdentity: parsed.holderIdentity,
      leaseDurationSeconds: parsed.leaseDurationSeconds,
      renewTime: parsed.renewTime,
      acquireTime: parsed.acquireTime,
      transitions: parsed.leaderTransitions,
    },
    now,
  )
}

/** The calls readLeader makes. */
export type LeaderApi = Pick<KubeClient, 'getLease' | 'listEndpoints'>

/**
 * Reads the leader of the lock `namespace/name`: its Lease when one exists (the only lock from
 * 1.20 on, written beside the Endpoints from 1.17), else the legacy Endpoints annotation.
 * Undefined when neither names a holder.
 */
export async function readLeader(api: LeaderApi, lock: {namespace: string; name: string}, now: Date): Promise<LeaderRecord | undefined> {
  return (await readLeaderLock(api, lock, now)).leader
}

/**
 * The lock itself and its leader. A lock that exists but names no holder was released: the
 * leader of 1.20+ empties the Lease when it shuts down, so during a hand-over nobody leads for a
 * moment. That is not the same as a component without leader election (no lock at all).
 */
export async function readLeaderLock(api: LeaderApi, lock: {namespace: string; name: string}, now: Date): Promise<{exists: boolean; leader?: LeaderRecord}> {
  const lease = await api.getLease(lock.namespace, lock.name)
  if (lease) return {exists: true, leader: leaderFromLease(lease, now)}
  const endpoints = (await api.listEndpoints(lock.namespace)).items.find((e) => e.metadata?.name === lock.name)
  const annotated = Boolean(endpoints?.metadata?.annotations?.[LEGACY_LEADER_ANNOTATION])
  return {exists: annotated, leader: endpoints ? leaderFromAnnotation(endpoints, 'Endpoints', now) : undefined}
}

export interface HolderMatch {
  /** The instance that holds the lock. */
  holder?: Instance
  /** An instance on the holder's host that started only after the lock was taken, so does not hold it. */
  startedLater?: Instance
}

/** Pod start times have whole seconds; allow for that before calling a holder older than a pod. */
const START_TIME_PRECISION_MS = 1000

/** The lock was taken before the instance started, so some other process holds it. */
function startedAfterAcquire(leader: LeaderRecord, instance: Instance): boolean {
  const acquired = leader.acquireTime ? Date.parse(leader.acquireTime) : Number.NaN
  const started = instance.startedAt ? Date.parse(instance.startedAt) : Number.NaN
  return acquired + START_TIME_PRECISION_MS < started
}

/**
 * Finds the instance that holds the lock. The holder is the OS hostname of the leader's
 * process: for hostNetwork pods (every control-plane pod) that is the node's hostname, for
 * other pods the pod's own name. So a static pod, a pod of a workload and any other process
 * on that node look the same; a process that took the lock before a pod started cannot be
 * that pod (each process has its own identity, and taking the lock over sets acquireTime),
 * so such a pod is not credited.
 */
export function matchHolder(leader: LeaderRecord, instances: Instance[]): HolderMatch {
  const holder = leader.holder.toLowerCase()
  const candidates = [
    (i: Instance) => i.hostname?.toLowerCase() === holder,
    (i: Instance) => i.node.toLowerCase() === holder,
    (i: Instance) => i.pod.toLowerCase() === holder,
    // A hostname may be the node's FQDN while the node is registered under its short name.
    (i: Instance) => holder.startsWith(`${i.node.toLowerCase()}.`),
  ]
  for (const matches of candidates) {
    const found = instances.filter(matches)
    if (found.length === 0) continue
    const possible = found.filter((i) => !startedAfterAcquire(leader, i))
    // Mid-pivot, a static and a self-hosted instance share a node; the ready one is the likelier holder.
    if (possible.length > 0) return {holder: possible.find((i) => i.ready) ?? possible[0]}
    return {startedLater: found.find((i) => i.ready) ?? found[0]}
  }

  return {}
}

/** Why a holder matched to no instance is none of them, in one line; `what` names the instances. */
export function holderElsewhere(leader: LeaderRecord, match: HolderMatch, what: string): string | undefined {
  if (match.holder) return undefined
  const later = match.startedLater
  if (!later) return `the lease holder ${leader.holder} matches no ${what} (a static pod still running, or another process leads)`
  return `the lease holder ${leader.holder} runs on ${later.node} but took the lease at ${leader.acquireTime}, before pod ${later.pod} started (${later.startedAt}): another process on that node leads`
}
