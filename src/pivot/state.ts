import type {V1Deployment, V1Node, V1Pod} from '../kube/types.js'

import {componentContainer} from '../controlplane/container.js'
import {
  MANAGED_BY_LABEL,
  MANAGED_BY_VALUE,
  PIVOTED_COMPONENTS,
  type PivotedComponent,
  SELF_HOSTED_APP_LABEL,
  SYSTEM_NAMESPACE,
  isControlPlaneNode,
  isMirrorPod,
  selfHostedComponentOf,
  selfHostedName,
} from '../controlplane/model.js'
import {CliError} from '../errors.js'
import {isReady} from '../kube/objects.js'
import type {PivotCluster, PivotClusterApi} from './cluster.js'
import type {StaticManifest} from './manifest.js'
import {type NodeFiles, activeBackup, parseNodeState} from './node-scripts.js'
import type {ExistingWorkload, PivotPlan, PlanNodeInfo} from './plan.js'

/** What is static, what is self-hosted, and how far a hand-off got: the cluster and its nodes as they are now. */
export interface PivotState {
  nodes: PlanNodeInfo[]
  ready: Record<string, boolean>
  files: NodeFiles[]
  mirrorPods: V1Pod[]
  workloadPods: V1Pod[]
  existing: ExistingWorkload[]
}

export type StateApi = Pick<PivotClusterApi, 'listNodes' | 'listPods' | 'listDaemonSets' | 'listDeployments'>

function nodeInfo(node: V1Node): PlanNodeInfo {
  return {
    name: node.metadata!.name!,
    internalIP: node.status?.addresses?.find((a) => a.type === 'InternalIP')?.address,
    labels: node.metadata?.labels ?? {},
    taints: (node.spec?.taints ?? []).map((t) => ({key: t.key, effect: t.effect, value: t.value})),
  }
}

/**
 * Reads the cluster and, given readNodeFiles (the raw output of READ_STATE_SCRIPT on a node),
 * every control-plane node's manifests and backups. Without it, files stays empty.
 */
export async function readState(api: StateApi, readNodeFiles?: (node: string) => Promise<string>): Promise<PivotState> {
  const all = (await api.listNodes()).items
  const cp = all.filter(isControlPlaneNode)
  if (cp.length === 0) throw new CliError('no control-plane nodes (labelled node-role.kubernetes.io/control-plane or /master) in this cluster')
  const names = cp.map((n) => n.metadata!.name!).sort()
  const pods = (await api.listPods(SYSTEM_NAMESPACE)).items.filter((p) => names.includes(p.spec?.nodeName ?? '') && !p.metadata?.deletionTimestamp)
  const files: NodeFiles[] = []
  // One read per node: the files are the truth a resumed run starts from.
  if (readNodeFiles) for (const node of names) files.push(parseNodeState(node, await readNodeFiles(node)))
  return {
    nodes: cp.map(nodeInfo),
    ready: Object.fromEntries(cp.map((n) => [n.metadata!.name!, isReady(n)])),
    files,
    mirrorPods: pods.filter(isMirrorPod),
    workloadPods: pods.filter((p) => !isMirrorPod(p) && selfHostedComponentOf(p) !== undefined),
    existing: await existingWorkloads(api),
  }
}

/**
 * The state a run that changes things starts from, read once no hand-off watchdog of an earlier
 * run can still move a manifest behind its back. Those in this run's task namespace are found by
 * their label before reading; those started with another --namespace only by the nodes naming
 * them, so the nodes are read again after stopping those (each puts its manifest back).
 */
export async function readSettledState(cluster: PivotCluster): Promise<PivotState> {
  await cluster.clearLeftovers()
  const state = await readState(cluster.api, cluster.readNodeFiles)
  return (await cluster.stopRecordedWatchdogs(state.files)) ? readState(cluster.api, cluster.readNodeFiles) : state
}

/** The DaemonSets and Deployments in kube-system that run a pivoted component, ours or not. */
async function existingWorkloads(api: StateApi): Promise<ExistingWorkload[]> {
  const existing: ExistingWorkload[] = []
  const ds = (await api.listDaemonSets(SYSTEM_NAMESPACE)).items
  const deploys = (await api.listDeployments(SYSTEM_NAMESPACE)).items
  for (const w of [...ds.map((d) => ({kind: 'DaemonSet' as const, w: d})), ...deploys.map((d) => ({kind: 'Deployment' as const, w: d}))]) {
    const labels = {...w.w.spec?.template?.metadata?.labels}
    const component = PIVOTED_COMPONENTS.find((c) => labels.component === c || labels[SELF_HOSTED_APP_LABEL] === selfHostedName(c))
    if (component) {
      const replicas = w.kind === 'Deployment' ? (w.w as V1Deployment).spec?.replicas : undefined
      const image = componentContainer(w.w.spec?.template?.spec?.containers, component)?.image
      existing.push({
        component,
        kind: w.kind,
        name: w.w.metadata!.name!,
        managedByUs: w.w.metadata?.labels?.[MANAGED_BY_LABEL] === MANAGED_BY_VALUE,
        ...(replicas === undefined ? {} : {replicas}),
        ...(image === undefined ? {} : {image}),
      })
    }
  }

  return existing
}

/** The control-plane node each leader-elected component's lease names, where it names one of them. */
export async function readLeaders(api: Pick<PivotClusterApi, 'getLease'>, nodes: PlanNodeInfo[]): Promise<Partial<Record<PivotedComponent, string>>> {
  const leaders: Partial<Record<PivotedComponent, string>> = {}
  for (const component of ['kube-controller-manager', 'kube-scheduler'] as const) {
    const holder = (await api.getLease(SYSTEM_NAMESPACE, component))?.spec?.holderIdentity?.split('_')[0]
    if (holder && nodes.some((n) => n.name === holder)) leaders[component] = holder
  }

  return leaders
}

/** The original bytes of each node's manifest: the backup once one exists, else the live file. */
export function originalManifests(state: PivotState): StaticManifest[] {
  const out: StaticManifest[] = []
  for (const files of state.files) {
    const backup = activeBackup(files)
    for (const component of PIVOTED_COMPONENTS) {
      const bytes = backup?.files[component] ?? files.manifests[component]
      if (bytes !== undefined) out.push({node: files.node, component, bytes})
    }
  }

  return out
}

/** What an earlier, interrupted run already did, as the nodes and the cluster show it. */
export function describeProgress(plan: PivotPlan, state: PivotState): string[] {
  const done: string[] = []
  for (const c of plan.components) {
    if (state.existing.some((w) => w.component === c.component && w.managedByUs)) done.push(`${c.component}: ${c.kind} ${c.name} already applied`)
    for (const files of state.files) {
      const backedUp = activeBackup(files)?.files[c.component] !== undefined
      if (files.held[c.component] !== undefined) done.push(`${c.component} on ${files.node}: hand-off started, not confirmed (manifest held)`)
      else if (backedUp && files.manifests[c.component] === undefined) done.push(`${c.component} on ${files.node}: handed off (manifest in backup)`)
      else if (backedUp) done.push(`${c.component} on ${files.node}: backed up`)
    }
  }

  return done
}
