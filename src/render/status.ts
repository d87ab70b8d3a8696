import chalk from 'chalk'

import type {ComponentState, ControlPlane, Instance, NodeCheckpoint} from '../controlplane/model.js'
import {renderTable} from './table.js'
import {wrapWords} from './wrap.js'

function readyCount(instances: Instance[]): string {
  return `${instances.filter((i) => i.ready).length}/${instances.length}`
}

function leaderCell(component: ComponentState): string {
  const leader = component.leader
  if (!leader) return '-'
  // Name the leader the way a person finds it: its node, else the raw holder (marked unmatched).
  const who = leader.node ?? `${leader.holder}?`
  return leader.stale ? `${who} ${chalk.red('(stale)')}` : who
}

function healthCell(component: ComponentState): string {
  if (!component.healthy) return chalk.red('UNHEALTHY')
  if (component.mode === 'absent') return chalk.dim('-')
  return chalk.green('ok')
}

function problemsCell(component: ComponentState): string {
  const [first, ...rest] = component.problems
  if (!first) return ''
  return rest.length > 0 ? `${first} (+${rest.length} more)` : first
}

function instancesBreakdown(component: ComponentState): string {
  const byStatic = component.instances.filter((i) => i.source === 'static')
  const byWorkload = component.instances.filter((i) => i.source === 'workload')
  const parts: string[] = []
  if (byStatic.length > 0) parts.push(`static ${readyCount(byStatic)}`)
  if (byWorkload.length > 0) parts.push(`workload ${readyCount(byWorkload)}`)
  return parts.join(', ') || '-'
}

function workloadsCell(component: ComponentState): string {
  return component.workloads.map((w) => `${w.kind}/${w.name} ${w.ready}/${w.desired}`).join(', ') || '-'
}

function instanceTable(plane: ControlPlane): string {
  const rows: string[][] = []
  for (const component of plane.components) {
    for (const instance of component.instances) {
      rows.push([
        component.name,
        instance.pod,
        instance.node || '<none>',
        instance.source,
        instance.ready ? 'true' : chalk.red('false'),
        String(instance.restarts),
        instance.image,
        component.leader?.pod === instance.pod ? (component.leader.stale ? 'stale' : 'yes') : '',
      ])
    }
  }

  return renderTable(['component', 'pod', 'node', 'source', 'ready', 'restarts', 'image', 'leader'], rows)
}

function ageText(seconds: number): string {
  if (seconds < 120) return `${seconds}s`
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`
  if (seconds < 172_800) return `${Math.round(seconds / 3600)}h`
  return `${Math.round(seconds / 86_400)}d`
}

/** One row per control-plane node: what it can restart with no API, and how old that is. */
function checkpointTable(checkpoints: NodeCheckpoint[]): string {
  const rows = checkpoints.map((c) => [
    c.node,
    c.checkpointer === 'ready' ? 'running' : c.checkpointer === 'not-ready' ? chalk.red('problem') : chalk.yellow('none'),
    c.checkpoints.map((k) => `${k.component.replace(/^kube-/, '')} ${k.version}${k.current ? '' : chalk.red(' (stale)')}`).join(', ') || '-',
    c.checkpoints.length > 0 ? ageText(Math.max(...c.checkpoints.map((k) => k.ageSeconds))) : '-',
    c.serving.length > 0 ? chalk.yellow(`serving ${c.serving.join(', ')}`) : c.gap ? chalk.yellow(c.gap) : 'covered',
  ])
  return renderTable(['node', 'checkpointer', 'checkpoints', 'age', 'state'], rows)
}

/**
 * One problem or warning under its component's name. Given a width (a terminal's), a long one
 * wraps at spaces and continues under its own text, so the component names stay in one column.
 */
function noteLines(component: string, note: string, width: number | undefined): string[] {
  const prefix = `  ${component}: `
  if (!width || prefix.length + note.length <= width) return [prefix + note]
  return wrapWords(note.split(' '), Math.max(width - prefix.length, 20)).map((l, i) => (i === 0 ? prefix : ' '.repeat(prefix.length)) + l)
}

/**
 * The at-a-glance view of `status`: one row per component, then every problem and warning in
 * full (wrapped to `width`, a terminal's columns, when given). Wide adds the instance
 * breakdown, workloads and one row per instance.
 */
export function renderStatus(plane: ControlPlane, wide: boolean, width?: number): string {
  const controlPlaneNodes = plane.nodes.filter((n) => n.controlPlane).length
  const header = `context ${plane.context} · ${plane.server} · ${plane.serverVersion} · ${plane.nodes.length} nodes (${controlPlaneNodes} control-plane)`

  const head = ['component', 'mode', 'ready', 'versions', 'leader', 'health']
  if (wide) head.push('instances', 'workloads')
  head.push('problems')
  const rows = plane.components.map((c) => {
    const row = [c.name, c.mode, c.mode === 'absent' ? '-' : readyCount(c.instances), c.versions.join(',') || '-', leaderCell(c), healthCell(c)]
    if (wide) row.push(instancesBreakdown(c), workloadsCell(c))
    row.push(problemsCell(c))
    return row
  })

  const sections = [header, '', renderTable(head, rows)]
  if (wide && plane.components.some((c) => c.instances.length > 0)) sections.push('', instanceTable(plane))
  if (plane.checkpoints.length > 0) sections.push('', 'Checkpoints (what each control-plane node restarts with no API):', checkpointTable(plane.checkpoints))

  const problems = plane.components.flatMap((c) => c.problems.map((p) => noteLines(c.name, p, width)))
  const warnings = plane.components.flatMap((c) => c.warnings.map((w) => noteLines(c.name, w, width)))
  if (problems.length > 0) sections.push('', chalk.red('Problems:'), ...problems.flat())
  if (warnings.length > 0) sections.push('', chalk.yellow('Warnings:'), ...warnings.flat())
  sections.push('', plane.healthy ? chalk.green('Control plane healthy.') : chalk.red(`Control plane UNHEALTHY: ${problems.length} problem(s).`))
  return sections.join('\n')
}
