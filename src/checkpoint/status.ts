import type {V1Pod} from '../kube/types.js'
import {versionFromImage} from '../controlplane/container.js'
import {type NodeCheckpoint, PIVOTED_COMPONENTS, type PivotedComponent, SYSTEM_NAMESPACE, isMirrorPod, selfHostedComponentOf} from '../controlplane/model.js'
import {isReady} from '../kube/objects.js'

/** How checkpoints show in the API (kept apart from the rendering so `status` loads no YAML writer). */

/** On the checkpointer's pod: which checkpoints the CLI wrote there, as JSON {component: {version, written}}. */
export const CHECKPOINTS_ANNOTATION = 'selfhost.kubectl.io/checkpoints'
/** The kube-system namespace's uid: a checkpoint of another cluster is never started. */
export const CLUSTER_ANNOTATION = 'selfhost.kubectl.io/cluster'
/** Marks the checkpointer's pod. */
export const CHECKPOINTER_ROLE_LABEL = 'selfhost.kubectl.io/role'
export const CHECKPOINTER_ROLE = 'checkpointer'
/** Marks a running checkpoint copy, with the component it stands in for. */
export const CHECKPOINT_OF_LABEL = 'selfhost.kubectl.io/checkpoint-of'
export const CHECKPOINTER_NAME = 'selfhost-checkpointer'
export const checkpointPodName = (component: PivotedComponent): string => `${component}-checkpoint`

/** The checkpointer's mirror pod (what the API shows of its static pod). */
export const isCheckpointerPod = (pod: V1Pod): boolean => isMirrorPod(pod) && pod.metadata?.labels?.[CHECKPOINTER_ROLE_LABEL] === CHECKPOINTER_ROLE

export type RunningVersions = Record<string, Partial<Record<PivotedComponent, string>>>

/** The version each node's self-hosted control-plane pods run (pods of pivot's workloads, not on their way out). */
export function selfHostedVersions(pods: V1Pod[]): RunningVersions {
  const running: RunningVersions = {}
  for (const pod of pods) {
    if (isMirrorPod(pod) || pod.metadata?.deletionTimestamp || !pod.spec?.nodeName) continue
    const component = selfHostedComponentOf(pod)
    const version = versionFromImage(pod.spec.containers?.[0]?.image)
    if (component && version) (running[pod.spec.nodeName] ??= {})[component] = version
  }

  return running
}

/**
 * What each control-plane node holds, from the pods the API shows (no node access): the
 * checkpointer's mirror pod carries what it guards; its readiness says whether it found a
 * problem; a checkpoint copy's mirror pod means the node runs from it now. `running` gives the
 * self-hosted version of each component on each node (selfHostedVersions), to tell a current checkpoint from a stale one.
 */
export function nodeCheckpoints(pods: V1Pod[], controlPlaneNodes: string[], running: RunningVersions, now: Date): NodeCheckpoint[] {
  return controlPlaneNodes.map((node) => {
    const mine = pods.filter((p) => p.spec?.nodeName === node && isMirrorPod(p))
    const checkpointer = mine.find(isCheckpointerPod)
    const serving = PIVOTED_COMPONENTS.filter((c) => mine.some((p) => p.metadata?.labels?.[CHECKPOINT_OF_LABEL] === c))
    let guarded: Record<string, {version?: string; written?: string}> = {}
    try {
      guarded = JSON.parse(checkpointer?.metadata?.annotations?.[CHECKPOINTS_ANNOTATION] ?? '{}') as typeof guarded
    } catch {
      guarded = {}
    }

    const checkpoints = PIVOTED_COMPONENTS.flatMap((component) => {
      const entry = guarded[component]
      if (!entry?.version || !entry.written) return []
      const runs = running[node]?.[component]
      return [
        {
          component,
          version: entry.version,
          written: entry.written,
          ageSeconds: Math.max(0, Math.round((now.getTime() - Date.parse(entry.written)) / 1000)),
          current: runs === undefined || runs === entry.version,
        },
      ]
    })
    const state: NodeCheckpoint['checkpointer'] = checkpointer ? (isReady(checkpointer) ? 'ready' : 'not-ready') : 'absent'
    const apiserver = checkpoints.find((c) => c.component === 'kube-apiserver')
    const stale = checkpoints.filter((c) => !c.current).map((c) => `${c.component} checkpoint is ${c.version}, the node runs ${running[node]?.[c.component]}`)
    const gap =
      state === 'absent'
        ? 'no checkpointer'
        : state === 'not-ready'
          ? `the checkpointer reports a problem (kubectl logs -n ${SYSTEM_NAMESPACE} ${checkpointer!.metadata!.name})`
          : !apiserver
            ? 'no kube-apiserver checkpoint'
            : stale.length > 0
              ? stale.join('; ')
              : undefined
    return {node, checkpointer: state, checkpoints, serving, ...(gap ? {gap} : {})}
  })
}
