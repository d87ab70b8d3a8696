import chalk from 'chalk'

import type {ScaleResult} from '../scale/execute.js'
import {plural} from '../scale/plan.js'
import {renderTable} from './table.js'

function describeLeader(result: Pick<ScaleResult, 'plan'>): string {
  const {leader, leaderPod} = result.plan.leadership
  if (!leader) return 'none recorded'
  const where = leaderPod ? `pod ${leaderPod} on ${leader.node}` : 'no pod of this workload'
  return `${leader.holder} (${where}), ${leader.source} renewed ${leader.renewTime ?? 'never'}${leader.stale ? chalk.red(' STALE') : ''}`
}

const field = (label: string, value: string) => `  ${`${label}:`.padEnd(21)}${value}`

/** The plan: printed before anything changes, so its warnings show even if the change fails. */
export function renderPlan(result: Pick<ScaleResult, 'plan' | 'dryRun'>): string {
  const {plan} = result
  const ref = `${plan.workload.kind} ${plan.workload.namespace}/${plan.workload.name}`
  const head = plan.change === 'none' ? `${ref} already has ${plural(plan.to, 'replica')}` : `scale ${ref} from ${plan.from} to ${plural(plan.to, 'replica')}`
  const lines = [result.dryRun ? `${head} (dry run: nothing changed)` : head]
  lines.push(
    field(
      'nodes it can run on',
      `${plan.placement.eligibleNodes.join(', ') || 'none'}${plan.placement.onePerNodeBecause ? ` (one per node: ${plan.placement.onePerNodeBecause})` : ''}`,
    ),
  )
  lines.push(
    field('leader election', `${plan.leaderElection.enabled ? 'on' : 'off'}, lock ${plan.leaderElection.lease.namespace}/${plan.leaderElection.lease.name}`),
  )
  if (result.dryRun) {
    lines.push(field('leader now', describeLeader(result)))
    lines.push(field('standbys now', plan.leadership.standbys.join(', ') || 'none'))
    const {expectedRemovals, possibleRemovals} = plan.leadership
    if (expectedRemovals.length > 0) lines.push(field('expected to go', expectedRemovals.join(', ')))
    if (possibleRemovals) lines.push(field(`then ${possibleRemovals.count} of`, `${possibleRemovals.among.join(', ')} (a tie the controller breaks by UID)`))
  }

  lines.push(field('effect', plan.leadership.effect))
  for (const warning of plan.warnings) lines.push(chalk.yellow(`warning: ${warning}`))
  for (const note of plan.notes) lines.push(`note: ${note}`)
  return lines.join('\n')
}

/** What happened: readiness, who leads and stands by, the lease check. */
export function renderOutcome(result: ScaleResult): string {
  const lines: string[] = []
  const {rollout, leadership, renewal} = result
  if (rollout) lines.push(`${rollout.ready}/${rollout.desired} replicas ready`)
  if (leadership) {
    const rows: string[][] = []
    if (leadership.leaderPod) {
      rows.push(['leader', leadership.leaderPod, leadership.leader?.node ?? '', 'true'])
    } else if (leadership.leader) {
      rows.push(['leader', `(none of these pods: holder ${leadership.leader.holder})`, '', ''])
    }

    for (const standby of leadership.standbys) rows.push(['standby', standby.pod, standby.node, 'true'])
    for (const pod of leadership.notReady) rows.push(['not ready', pod.pod, pod.node || '<unscheduled>', pod.phase])
    if (rows.length > 0) lines.push(renderTable(['role', 'pod', 'node', 'ready'], rows))
  }

  if (renewal) {
    lines.push(
      renewal.renewed
        ? `lease ${renewal.lease} renewed by ${renewal.holderAfter} ${((renewal.observedWithinMs ?? 0) / 1000).toFixed(1)}s after the change (allowed: ${renewal.windowMs / 1000}s)${renewal.holderAfter !== renewal.holderBefore ? `; leadership moved from ${renewal.holderBefore ?? 'nobody'}` : ''}`
        : chalk.red(`lease ${renewal.lease} was not renewed within ${renewal.windowMs / 1000}s`),
    )
  }

  for (const caveat of result.caveats) lines.push(`note: ${caveat}`)
  return lines.join('\n')
}
