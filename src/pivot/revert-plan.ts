import semver from 'semver'

import type {V1Pod} from '../kube/types.js'
import {PIVOTED_COMPONENTS, SYSTEM_NAMESPACE, type PivotedComponent, selfHostedComponentOf} from '../controlplane/model.js'
import {CliError} from '../errors.js'
import {componentContainer, versionFromImage} from '../controlplane/container.js'
import {parseStaticPod} from './manifest.js'
import {type NodeFiles, activeBackup} from './node-scripts.js'
import {type ExistingWorkload, PORT_SHARING_VERSION} from './plan.js'

export interface RevertRestore {
  node: string
  stamp: string
  /** The backup's bytes, as pivot saved them. */
  original: string
  live?: string
  /**
   * What to write instead of the backup: the backup with only its component container's image
   * changed to the one that runs now (after `upgrade`). Absent: the backup goes back byte for byte.
   */
  content?: string
  /** With content: the image in the backup and the one kept. */
  imageFrom?: string
  imageTo?: string
}

export interface RevertComponent {
  component: PivotedComponent
  workloads: ExistingWorkload[]
  restores: RevertRestore[]
  portSharing: boolean
}

export interface RevertPlan {
  /** What to put back and delete, component by component (scheduler first, apiserver last). */
  components: RevertComponent[]
  /** Nothing of a pivot anywhere and every static manifest in place: a finished revert re-run. */
  alreadyStatic: boolean
}

/** The bytes a restore writes on its node. */
export const restoredBytes = (r: RevertRestore): string => r.content ?? r.original

/**
 * What revert does, decided from what the nodes and the cluster show: every backed-up manifest
 * that differs from what goes back goes back, every workload of ours goes. What goes back is the
 * backup, with the image the component runs now when `upgrade` changed it since the pivot: revert
 * never downgrades. Refuses, before anything changes, a component that would be left with neither
 * a backup nor a static manifest, and one whose self-hosted pods run different images.
 */
export function planRevert(state: {files: NodeFiles[]; existing: ExistingWorkload[]; workloadPods?: V1Pod[]}): RevertPlan {
  const ours = state.existing.filter((w) => w.managedByUs)
  const plans: RevertComponent[] = []
  for (const component of [...PIVOTED_COMPONENTS].reverse()) {
    const workloads = ours.filter((w) => w.component === component)
    const running = workloads.length > 0 ? runningImage(component, workloads, state.workloadPods ?? []) : undefined
    const restores: RevertRestore[] = []
    for (const files of state.files) {
      const backup = activeBackup(files)
      const original = backup?.files[component]
      const live = files.manifests[component]
      if (original === undefined) {
        if (workloads.length > 0 && live === undefined) {
          throw new CliError(
            `no backup of ${component} on ${files.node} and no static manifest there: revert would leave it without ${component}; nothing changed`,
          )
        }

        continue
      }

      // With the workloads gone (a re-run after an interruption) the live manifest tells what ran: its image stays.
      const keep = workloads.length > 0 ? running : liveImage(live, component)
      const restore: RevertRestore = {node: files.node, stamp: backup!.stamp, original, live, ...withImage(original, keep, component, files.node)}
      if (live !== restoredBytes(restore)) restores.push(restore)
    }

    if (workloads.length > 0 || restores.length > 0)
      plans.push({component, workloads, restores, portSharing: restores.some((r) => portSharingVersion(restoredBytes(r), component))})
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

/**
 * The one image a component's workloads of ours and their pods run. Two (a rollout in
 * progress) are refused: the static pods would get one of them and the cluster the other.
 */
function runningImage(component: PivotedComponent, workloads: ExistingWorkload[], pods: V1Pod[]): string | undefined {
  const images = new Set(workloads.flatMap((w) => (w.image ? [w.image] : [])))
  for (const pod of pods) {
    const image = selfHostedComponentOf(pod) === component ? componentContainer(pod.spec?.containers, component)?.image : undefined
    if (image) images.add(image)
  }

  if (images.size > 1) {
    const ref = workloads.map((w) => `${w.kind.toLowerCase()}/${w.name}`).join(' ')
    throw new CliError(
      `${component}: the self-hosted pods run different images (${[...images].join(', ')}), a rollout in progress: let it finish ` +
        `(kubectl -n ${SYSTEM_NAMESPACE} rollout status ${ref}) or run kubectl selfhost upgrade again, then revert; nothing changed`,
    )
  }

  return [...images][0]
}

function liveImage(live: string | undefined, component: PivotedComponent): string | undefined {
  if (live === undefined) return undefined
  try {
    return componentImage(live, component, 'the live manifest')
  } catch {
    // A live file that is no static pod gives no image to keep: the backup goes back as it is.
    return undefined
  }
}

function componentImage(bytes: string, component: PivotedComponent, what: string): string | undefined {
  return componentContainer(parseStaticPod(bytes, `${what} of ${component}`).spec!.containers, component)?.image
}

/**
 * The backup with its component container's image value changed to `image`, every other byte
 * as it is; nothing when the backup already has that image. The change is textual (one
 * `image:` line) and checked by parsing: anything short of exactly that change is refused.
 */
function withImage(
  original: string,
  image: string | undefined,
  component: PivotedComponent,
  node: string,
): Pick<RevertRestore, 'content' | 'imageFrom' | 'imageTo'> {
  const from = componentImage(original, component, `the backup on ${node}`)
  if (image === undefined || from === undefined || image === from) return {}
  const refuse = (why: string) =>
    new CliError(`cannot keep ${component} at ${image} on ${node}: in its backup ${why}, so revert cannot change the image alone; nothing changed`)
  const escaped = from.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
  // `image: X`, `- image: "X"`, `"image": "X",` (JSON), with an optional trailing comment or CR.
  const line = new RegExp(`^([ \\t]*(?:-[ \\t]+)?(["']?)image\\2[ \\t]*:[ \\t]*)(["']?)${escaped}\\3([ \\t]*,?[ \\t]*(?:#.*)?\\r?)$`, 'gm')
  const matches = [...original.matchAll(line)].length
  if (matches !== 1) throw refuse(matches === 0 ? `no line reads \`image: ${from}\`` : `${matches} lines name ${from}`)
  const content = original.replace(line, (_all, key: string, _q: string, quote: string, rest: string) => `${key}${quote}${image}${quote}${rest}`)
  const expected = parseStaticPod(original, `the backup on ${node} of ${component}`)
  componentContainer(expected.spec!.containers, component)!.image = image
  let written: unknown
  try {
    written = parseStaticPod(content, `the ${component} manifest to write on ${node}`)
  } catch {
    throw refuse('the changed line does not parse')
  }

  if (JSON.stringify(written) !== JSON.stringify(expected)) throw refuse(`the line naming ${from} is not the ${component} container's image`)
  return {content, imageFrom: from, imageTo: image}
}

export function portSharingIn(bytes: string): boolean {
  return /--permit-port-sharing/.test(bytes)
}

export function imageVersion(bytes: string, component: PivotedComponent): string | undefined {
  return versionFromImage(componentImage(bytes, component, 'the manifest'))
}

function portSharingVersion(bytes: string, component: PivotedComponent): boolean {
  const version = imageVersion(bytes, component)
  return version !== undefined && semver.gte(semver.coerce(version)!, PORT_SHARING_VERSION)
}
