import type {V1Lease, V1ObjectMeta} from '@kubernetes/client-node'

import {Instance, LEGACY_LEADER_ANNOTATION, LeaderRecord} from './model.js'

/**
 * API timestamps arrive as strings in raw JSON, but client-node's types call them Date;
 * accept both so callers can pass either.
 */
export function timestampText(value: unknown): string | undefined {
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? undefined : value.toISOString()
  if (typeof value === 'string' && value) return value
  return undefined
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
  fields: {holderIdentity?: string; leaseDurationSeconds?: number; renewTime?: unknown; acquireTime?: unknown; transitions?: number},
  now: Date,
): LeaderRecord | undefined {
  // An empty holder means the last leader released the lock on shutdown: nobody leads.
  if (!fields.holderIdentity) return undefined
  const renewTime = timestampText(fields.renewTime)
  return {
    source,
    holderIdentity: fields.holderIdentity,
    holder: holderHostname(fields.holderIdentity),
    leaseDurationSeconds: fields.leaseDurationSeconds,
    renewTime,
    acquireTime: timestampText(fields.acquireTime),
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

interface LegacyLeaderAnnotation {
  holderIdentity?: string
  leaseDurationSeconds?: number
  renewTime?: string
  acquireTime?: string
  leaderTransitions?: number
}

/**
 * The leader recorded in the JSON annotation control-plane.alpha.kubernetes.io/leader on an
 * Endpoints or ConfigMap object (the lock of clusters up to 1.19). Undefined when the object
 * carries no readable record.
 */
export function leaderFromAnnotation(
  obj: {metadata?: V1ObjectMeta},
  source: 'Endpoints' | 'ConfigMap',
  now: Date,
): LeaderRecord | undefined {
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

/**
 * Finds the instance that holds the lock. The holder is the OS hostname of the leader's
 * process: for hostNetwork pods (every control-plane pod) that is the node's hostname, for
 * other pods the pod's own name.
 */
export function matchLeaderToPod(leader: LeaderRecord, instances: Instance[]): LeaderRecord {
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
    // Mid-pivot, a static and a self-hosted instance share a node; the ready one is the likelier holder.
    const best = found.find((i) => i.ready) ?? found[0]
    return {...leader, pod: best.pod, node: best.node}
  }

  return {...leader, pod: undefined, node: undefined}
}
