import chalk from 'chalk'

import type {UpgradeResult} from '../upgrade/execute.js'
import type {UpgradePlan} from '../upgrade/plan.js'
import {renderTable} from './table.js'

function checkLine(check: UpgradePlan['checks'][number]): string {
  if (check.passed) return `  ${chalk.green('ok')}    ${check.id}`
  const mark = check.blocking ? chalk.red('FAIL') : check.overridden ? chalk.yellow('FORCE') : chalk.yellow('WARN')
  const override = check.overrideFlag
    ? check.overridden
      ? ` (overridden by ${check.overrideFlag}; risk: ${check.risk})`
      : ` (${check.overrideFlag} overrides; risk: ${check.risk})`
    : ''
  return `  ${mark}  ${check.id}: ${check.message}${override}`
}

/** The plan as a person reads it: what changes, in which order, how, and every check. */
export function renderUpgradePlan(plan: UpgradePlan): string {
  const lines: string[] = []
  const from = [...new Set(plan.components.flatMap((c) => c.currentVersions))].join(', ') || '?'
  lines.push(`Upgrade plan: ${from} -> ${plan.target} (${plan.direction === 'none' ? 'nothing to change' : plan.direction})`)
  lines.push('')
  if (plan.components.length > 0) {
    lines.push(
      renderTable(
        ['#', 'component', 'workload', 'current', 'target', 'image before', 'image after', 'strategy', 'action'],
        plan.components.map((c) => [
          c.action === 'skip' ? '-' : String(plan.order.indexOf(c.component) + 1),
          c.component,
          `${c.workload.kind}/${c.workload.name}`,
          c.currentVersions.join(', ') || '?',
          c.targetVersion,
          c.imageBefore,
          c.imageAfter,
          c.strategy,
          c.action,
        ]),
      ),
    )
    lines.push('')
    lines.push('How:')
    for (const c of plan.components.filter((x) => x.action === 'upgrade')) {
      lines.push(`  ${c.component}: ${c.strategyNote}`)
      lines.push(`    gates: ${c.gates.join('; ')}`)
    }
    lines.push('')
  }

  lines.push('Checks:')
  lines.push(...plan.checks.map(checkLine))
  if (plan.notes.length > 0) {
    lines.push('')
    lines.push('Notes:')
    lines.push(...plan.notes.map((n) => `  - ${n}`))
  }

  lines.push('')
  lines.push(plan.allowed ? 'The plan can run.' : chalk.red(plan.refusal ?? 'refused'))
  return lines.join('\n')
}

const RESULT_COLOUR: Record<string, (s: string) => string> = {
  upgraded: chalk.green,
  skipped: chalk.dim,
  'rolled-back': chalk.yellow,
  'rollback-failed': chalk.red,
  'not-started': chalk.dim,
}

/** The final before/after table and the one-line verdict. */
export function renderUpgradeResult(result: UpgradeResult): string {
  const lines = [
    renderTable(
      ['component', 'before', 'after', 'now', 'result', 'time', 'detail'],
      result.components.map((c) => [
        c.component,
        c.imageBefore,
        c.imageAfter,
        c.imageNow,
        (RESULT_COLOUR[c.result] ?? ((s: string) => s))(c.result),
        c.seconds === undefined ? '-' : `${c.seconds}s`,
        c.detail ?? '',
      ]),
    ),
    '',
  ]
  for (const w of result.warnings) lines.push(`warning: ${w}`)
  if (result.backup) lines.push(`backup: ${result.backup}`)
  switch (result.outcome) {
    case 'upgraded':
      lines.push(chalk.green(`Upgraded to ${result.target}.`))
      break
    case 'nothing-to-do':
      lines.push(`Everything already runs ${result.target}.`)
      break
    case 'rolled-back': {
      const kept = result.components.filter((c) => c.result === 'upgraded').map((c) => c.component)
      const back = result.components.find((c) => c.result === 'rolled-back')?.component
      lines.push(
        chalk.yellow(
          `Stopped and rolled back: ${result.failure}. ${back} is back on its previous image and healthy` +
            (kept.length > 0 ? `; ${kept.join(', ')} keep ${result.target} (the skew policy allows it)` : '') +
            '. Fix the cause and run the upgrade again: it continues where it stopped.',
        ),
      )
      break
    }
    default:
      lines.push(chalk.red(`Rollback failed: ${result.failure}`))
  }

  return lines.join('\n')
}
