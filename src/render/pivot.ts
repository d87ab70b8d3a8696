import chalk from 'chalk'
import {stringify as toYaml} from 'yaml'

import type {RevertResult} from '../pivot/revert.js'
import type {PivotPlan, SelfHostedObject} from '../pivot/plan.js'

/** The objects alone, as multi-document YAML: what GitOps users commit and apply their own way. */
export function renderObjectsYaml(objects: SelfHostedObject[]): string {
  return objects.map((o) => `---\n${toYaml(o, {aliasDuplicateObjects: false}).trimEnd()}`).join('\n')
}

/** The plan for a person: costs first, then the steps in order, per node, then the objects. */
export function renderPivotPlan(plan: PivotPlan, alreadyDone: string[], withObjects: boolean): string {
  const out: string[] = []
  out.push(
    chalk.bold(`Pivot plan: Kubernetes ${plan.version}, ${plan.nodes.length} control-plane node(s): ${plan.nodes.join(', ')} (role label: ${plan.role})`),
  )
  out.push('', chalk.bold('What self-hosting costs:'))
  for (const cost of plan.costs) out.push(`  ! ${cost}`)
  out.push('', chalk.bold('Notes:'))
  for (const note of plan.notes) out.push(`  - ${note}`)
  for (const warning of plan.warnings) out.push(chalk.yellow(`  warning: ${warning}`))
  if (alreadyDone.length > 0) {
    out.push('', chalk.bold('Already done by an earlier run (read from the cluster and the nodes):'))
    for (const line of alreadyDone) out.push(`  = ${line}`)
  }

  for (const c of plan.components) {
    out.push(
      '',
      chalk.bold(`${c.component} ${c.version} -> ${c.kind} kube-system/${c.name}`) + ` (hand-off: ${c.handoff}; node order: ${c.nodeOrder.join(' -> ')})`,
    )
    for (const change of c.changes) out.push(`  * ${change}`)
    let n = 0
    for (const step of plan.steps.filter((s) => s.component === c.component))
      out.push(`  ${String(++n).padStart(2)}. ${step.node ? `[${step.node}] ` : ''}${step.description}`)
  }

  const checkpointSteps = plan.steps.filter((s) => s.action === 'checkpoint')
  if (checkpointSteps.length > 0) {
    out.push('', chalk.bold('Checkpoints (after every hand-off):'))
    for (const [i, step] of checkpointSteps.entries()) out.push(`  ${String(i + 1).padStart(2)}. [${step.node}] ${step.description}`)
  }

  if (withObjects) out.push('', chalk.bold('Objects:'), renderObjectsYaml(plan.objects))
  return out.join('\n')
}

export function renderRevertPlan(result: RevertResult): string {
  const out = [chalk.bold('Revert plan:'), '  first, on every control-plane node: remove the checkpointer, any copy it started, and the checkpoints']
  for (const c of result.components) {
    out.push(`  ${c.component}:`)
    for (const r of c.restores) {
      const how = r.imageTo ? `with only its image changed: ${r.imageTo} kept (the version that runs now), not the backup's ${r.imageFrom}` : 'byte for byte'
      out.push(
        `    - [${r.node}] put back /etc/kubernetes/manifests/${c.component}.yaml from selfhost/backup/${r.stamp}/ ${how}${c.portSharing && c.workloads.length > 0 ? ' (first with --permit-port-sharing, so it can serve next to the self-hosted one)' : ''}`,
      )
    }

    out.push(`    - wait until the static ${c.component} mirror pods are Ready`)
    for (const w of c.workloads) out.push(`    - delete ${w.kind} kube-system/${w.name}${w.kind === 'Deployment' ? ' and its PodDisruptionBudget' : ''}`)
    if (c.portSharing && c.workloads.length > 0 && c.restores.length > 0) {
      // Measured on a real single node: the API was away 47 s while the static apiserver restarted.
      const alone =
        c.component === 'kube-apiserver' && c.restores.length === 1 ? ': with one control-plane node the API is away for that restart' : ', one node at a time'
      out.push(
        `    - [${c.restores.map((r) => r.node).join(', ')}] the manifest as restored, without --permit-port-sharing: the static ${c.component} restarts once${alone}`,
      )
    }
  }

  out.push('  - keep the backups on the nodes, each directory marked with a REVERTED file')
  return out.join('\n')
}
