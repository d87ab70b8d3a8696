import semver from 'semver'

import {removeCheckpoints, servingFromCheckpoint} from '../checkpoint/install.js'
import {versionFromImage} from '../controlplane/container.js'
import {SELF_HOSTED_APP_LABEL, SYSTEM_NAMESPACE, selfHostedName} from '../controlplane/model.js'
import {CliError, ExitCode} from '../errors.js'
import {isReady} from '../kube/objects.js'
import type {PivotCluster} from './cluster.js'
import {withPortSharing} from './manifest.js'
import {RESTORE_SCRIPT, RETIRE_BACKUP_SCRIPT, activeBackup} from './node-scripts.js'
import {PreflightError, preflight} from './preflight.js'
import {type RevertComponent, type RevertRestore, imageVersion, planRevert, portSharingIn, restoredBytes} from './revert-plan.js'
import {readSettledState, readState} from './state.js'

export interface RevertResult {
  components: RevertComponent[]
  dryRun: boolean
  summary: string[]
  exitCode: number
}

/**
 * Puts every backed-up manifest back (byte for byte, or with only the image the component runs
 * now after an upgrade), waits for the static pods, then deletes the self-hosted workloads.
 * Refuses before touching anything when a backup is missing or a rollout is in progress.
 * What to do comes from planRevert; this only carries it out.
 */
export async function revertPivot(cluster: PivotCluster, opts: {dryRun?: boolean}): Promise<RevertResult> {
  const state = opts.dryRun ? await readState(cluster.api, cluster.readNodeFiles) : await readSettledState(cluster)
  const {components: plans, alreadyStatic} = planRevert(state)
  if (alreadyStatic)
    return {
      components: [],
      dryRun: Boolean(opts.dryRun),
      summary: ['nothing to revert: the control plane already runs from static manifests'],
      exitCode: ExitCode.ok,
    }
  if (opts.dryRun) return {components: plans, dryRun: true, summary: [], exitCode: ExitCode.ok}
  await preflight(cluster, state, [
    ['delete', 'daemonsets', 'apps'],
    ['delete', 'deployments', 'apps'],
    ['delete', 'poddisruptionbudgets', 'policy'],
  ]).catch((error: Error) => {
    // A half-done pivot is exactly when revert is wanted: only permissions and the API must hold.
    if (error instanceof PreflightError && ['nodes', 'pods', 'leader'].includes(error.kind)) cluster.log(`warning: ${error.message}`)
    else throw error
  })

  const summary: string[] = []
  // The checkpointer goes first: it must not start a copy while the static pods restart.
  const serving = servingFromCheckpoint(state.mirrorPods)
  if (serving.length > 0) {
    throw new CliError(
      `${serving.join(', ')} runs from its checkpoint (a recovery in progress): wait until the self-hosted pods took over (kubectl selfhost status), then revert; nothing changed`,
    )
  }

  await removeCheckpoints(
    cluster.checkpointDeps(),
    state.nodes.map((n) => n.name),
  )
  summary.push('checkpointer and checkpoints removed from every control-plane node')
  for (const plan of plans) {
    await revertComponent(cluster, plan)
    summary.push(
      `${plan.component}: ${restoredSummary(plan.restores)}${plan.workloads.length > 0 ? `; ${plan.workloads.map((w) => `${w.kind} ${w.name}`).join(', ')} deleted` : ''}`,
    )
  }

  for (const files of state.files) {
    const backup = activeBackup(files)
    if (backup) await cluster.taskOk(files.node, 'pivot-retire', RETIRE_BACKUP_SCRIPT, {STAMP: backup.stamp})
  }

  summary.push('backups kept on the nodes, each marked with a REVERTED file')
  return {components: plans, dryRun: false, summary, exitCode: ExitCode.ok}
}

async function revertComponent(cluster: PivotCluster, plan: RevertComponent): Promise<void> {
  const {component} = plan
  const log = (node: string | undefined, line: string) => cluster.log(`[${component}]${node ? ` ${node}:` : ''} revert: ${line}`)
  // Without a content of its own the script copies the backup file itself.
  const restore = (r: RevertRestore, content = r.content) =>
    cluster.taskOk(r.node, 'pivot-restore', RESTORE_SCRIPT, {COMPONENT: component, STAMP: r.stamp, ...(content === undefined ? {} : {CONTENT: content})})
  const mirrorReady = (node: string, sharing: boolean) =>
    cluster.waitMirror(
      component,
      node,
      (p) => Boolean(p && isReady(p) && JSON.stringify(p.spec?.containers?.[0]?.command ?? []).includes('--permit-port-sharing') === sharing),
      `the static ${component} on ${node} to be Ready`,
    )

  if (plan.portSharing && plan.workloads.length > 0) {
    // The self-hosted instances hold their ports with SO_REUSEPORT: a static one can join only with it too.
    for (const r of plan.restores) {
      const sharing = withPortSharing(restoredBytes(r), component)
      if (r.live !== sharing) await restore(r, sharing)
      await mirrorReady(r.node, true)
      log(r.node, 'static pod back, sharing the port with the self-hosted one')
    }
  } else {
    for (const r of plan.restores) {
      await restore(r)
      log(r.node, `original manifest back${keptImage(r)}`)
    }
  }

  for (const w of plan.workloads) {
    // The budget first: a re-run finds the Deployment and deletes both, never an orphaned budget.
    if (w.kind === 'Deployment') await cluster.api.delete(pdbGroupVersion(plan), 'poddisruptionbudgets', SYSTEM_NAMESPACE, w.name)
    await cluster.api.delete('apps/v1', w.kind === 'DaemonSet' ? 'daemonsets' : 'deployments', SYSTEM_NAMESPACE, w.name)
    log(undefined, `deleted ${w.kind} ${w.name}`)
  }

  await cluster.waitFor(
    `the self-hosted ${component} pods to go away`,
    async () => (await cluster.api.listPods(SYSTEM_NAMESPACE, {labelSelector: `${SELF_HOSTED_APP_LABEL}=${selfHostedName(component)}`})).items.length === 0,
  )
  for (const r of plan.restores) {
    if (plan.portSharing && plan.workloads.length > 0) {
      await restore(r)
      log(r.node, `original manifest back${keptImage(r) || ', byte for byte'}`)
    }

    await mirrorReady(r.node, portSharingIn(restoredBytes(r)))
  }

  await cluster.waitApiHealthy(`after reverting ${component}`)
}

/** policy/v1 from 1.21, v1beta1 before (gone in 1.25): the version that runs now, which an upgrade may have moved past 1.25. */
function pdbGroupVersion(plan: RevertComponent): string {
  const version = plan.restores[0]
    ? imageVersion(restoredBytes(plan.restores[0]), plan.component)
    : versionFromImage(plan.workloads.find((w) => w.image)?.image)
  const parsed = version ? semver.coerce(version) : null
  return parsed && semver.lt(parsed, '1.21.0') ? 'policy/v1beta1' : 'policy/v1'
}

/** How a restore differs from the backup, for the log: nothing, or the image it keeps. */
function keptImage(r: RevertRestore): string {
  return r.imageTo ? `, image kept at ${shortImage(r.imageTo)} (the backup had ${shortImage(r.imageFrom!)})` : ''
}

const shortImage = (image: string) => versionFromImage(image) ?? image

/** The summary of a component's restores, nodes grouped by whether the image was kept over the backup's. */
function restoredSummary(restores: RevertRestore[]): string {
  if (restores.length === 0) return 'static manifest restored on no node (already there)'
  const groups = new Map<string, string[]>()
  for (const r of restores) {
    const how = r.imageTo ? `(image kept at ${shortImage(r.imageTo)}, the backup had ${shortImage(r.imageFrom!)})` : 'byte for byte'
    groups.set(how, [...(groups.get(how) ?? []), r.node])
  }

  return [...groups].map(([how, nodes]) => `static manifest restored ${how} on ${nodes.join(', ')}`).join('; ')
}
