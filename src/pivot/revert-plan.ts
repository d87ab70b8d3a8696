import semver from 'semver'

import {PIVOTED_COMPONENTS, type PivotedComponent} from '../controlplane/model.js'
import {CliError} from '../errors.js'
import {versionFromImage} from '../controlplane/container.js'
import {parseStaticPod} from './manifest.js'
import {type NodeFiles, activeBackup} from './node-scripts.js'
import {type ExistingWorkload, PORT_SHARING_VERSION} from './plan.js'

export interface RevertComponent {
  component: PivotedComponent
  workloads: ExistingWorkload[]
  restores: Array<{node: string; stamp: string; original: string; live?: string}>
  portSharing: boolean
}

export interface RevertPlan {
  /** What to put back and delete, component by component (scheduler first, apiserver last). */
  components: RevertComponent[]
  /** Nothing of a pivot anywhere and every static manifest in place: a finished revert re-run. */
  alreadyStatic: boolean
}

/**
 * What revert does, decided from what the nodes and the cluster show: every backed-up manifest
 * that differs from the live one goes back, every workload of ours goes. Refuses, before
 * anything changes, a component that would be left with neither a backup nor a static manifest.
 */
export function planRevert(state: {files: NodeFiles[]; existing: ExistingWorkload[]}): RevertPlan {
  const ours = state.existing.filter((w) => w.managedByUs)
  const plans: RevertComponent[] = []
  for (const component of [...PIVOTED_COMPONENTS].reverse()) {
    const workloads = ours.filter((w) => w.component === component)
    const restores: RevertComponent['restores'] = []
    for (const files of state.files) {
      const backup = activeBackup(files)
      const original = backup?.files[component]
      if (original === undefined) {
        if (workloads.length > 0 && files.manifests[component] === undefined) {
          throw new CliError(`no backup of ${component} on ${files.node} and no static manifest there: revert would leave it without ${component}; nothing changed`)
        }

        continue
      }

      if (files.manifests[component] !== original) restores.push({node: files.node, stamp: backup!.stamp, original, live: files.manifests[component]})
    }

    if (workloads.length > 0 || restores.length > 0) plans.push({component, workloads, restores, portSharing: restores.some((r) => portSharingVersion(r.original, component))})
  }

  const stamps = [...new Set(state.files.flatMap((f) => (activeBackup(f) ? [`${f.node}:${activeBackup(f)!.stamp}`] : [])))]
  if (plans.length === 0 && stamps.length === 0) {
    const allStatic = state.files.every((f) => PIVOTED_COMPONENTS.every((c) => f.manifests[c] !== undefined))
    // Re-running a finished revert is not an error; finding no control plane at all is.
    if (allStatic) return {components: [], alreadyStatic: true}
    throw new CliError('nothing to revert: no self-hosted workloads of kubectl-selfhost and no pivot backups on the control-plane nodes')
  }

  return {components: plans, alreadyStatic: false}
}

export function portSharingIn(bytes: string): boolean {
  return /--permit-port-sharing/.test(bytes)
}

export function imageVersion(bytes: string, component: PivotedComponent): string | undefined {
  return versionFromImage(parseStaticPod(bytes, `the ${component} backup`).spec!.containers[0].image)
}

function portSharingVersion(bytes: string, component: PivotedComponent): boolean {
  const version = imageVersion(bytes, component)
  return version !== undefined && semver.gte(semver.coerce(version)!, PORT_SHARING_VERSION)
}

