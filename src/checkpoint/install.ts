import type {V1Pod} from '../kube/types.js'
import {PIVOTED_COMPONENTS, type PivotedComponent, SYSTEM_NAMESPACE, isControlPlaneNode, isMirrorPod, selfHostedComponentOf} from '../controlplane/model.js'
import {CliError} from '../errors.js'
import type {KubeClient} from '../kube/client.js'
import {isReady} from '../kube/objects.js'
import {pollUntil} from '../kube/wait.js'
import type {NodeTask, NodeTaskResult} from '../node/runner.js'
import {type CheckpointTimings, type RenderedCheckpoint, renderCheckpoint, renderCheckpointer, versionNumber} from './checkpoint.js'
import {CHECKPOINT_DIR, REMOVE_CHECKPOINTS_SCRIPT, WRITE_CHECKPOINTS_SCRIPT} from './scripts.js'
import {CHECKPOINTER_ROLE, CHECKPOINTER_ROLE_LABEL, CHECKPOINTS_ANNOTATION, CHECKPOINT_OF_LABEL, isCheckpointerPod} from './status.js'

export type CheckpointApi = Pick<KubeClient, 'raw' | 'listPods' | 'version'>

export interface CheckpointDeps {
  api: CheckpointApi
  runTask: (task: NodeTask) => Promise<NodeTaskResult>
  log: (line: string) => void
  /** The node-task image; the checkpointer runs on it too (the cluster's kube-proxy image by default). */
  image: string
  namespace?: string
  now?: () => Date
  timeoutMs?: number
  pollMs?: number
  sleep?: (ms: number) => Promise<void>
  timings?: CheckpointTimings
}

const TASK_DEADLINE_SECONDS = 120

/** The kube-system namespace's uid: the same for the life of the cluster, different in any other. */
export async function clusterId(api: Pick<KubeClient, 'raw'>): Promise<string> {
  const res = await api.raw('GET', `/api/v1/namespaces/${SYSTEM_NAMESPACE}`, {intent: {verb: 'get', resource: 'namespaces'}})
  const uid = res.status === 200 ? (JSON.parse(res.body) as {metadata?: {uid?: string}}).metadata?.uid : undefined
  if (!uid) throw new CliError(`cannot read namespace ${SYSTEM_NAMESPACE} (HTTP ${res.status}) to tell checkpoints of this cluster from others`)
  return uid
}

async function runOk(deps: CheckpointDeps, node: string, purpose: string, script: string, env: Record<string, string>, hostDirs?: string[]): Promise<string> {
  const result = await deps.runTask({
    node,
    image: deps.image,
    command: ['sh', '-c', script],
    purpose,
    namespace: deps.namespace,
    deadlineSeconds: TASK_DEADLINE_SECONDS,
    env,
    mountHostRoot: true,
    hostDirs,
  })
  if (result.exitCode !== 0)
    throw new CliError(`the ${purpose} task on ${node} failed (exit ${result.exitCode}): ${result.output.trim().split('\n').pop() ?? ''}`)
  return result.output
}

function wait(deps: CheckpointDeps, what: string, check: () => Promise<boolean>): Promise<void> {
  return pollUntil(async () => ({done: await check().catch(() => false), value: undefined, progress: ''}), {
    what,
    timeoutMs: deps.timeoutMs ?? 120_000,
    intervalMs: deps.pollMs ?? 2000,
    sleep: deps.sleep,
  })
}

const checkpointerOn = (pods: V1Pod[], node: string) => pods.find((p) => p.spec?.nodeName === node && isCheckpointerPod(p))

export interface CheckpointWrite {
  node: string
  checkpoints: Array<{component: PivotedComponent; version: string}>
}

/**
 * Writes, on each given control-plane node, a checkpoint of every self-hosted control-plane pod
 * that runs Ready there (its own spec: what really ran), then the checkpointer; waits until each
 * node's checkpointer runs with them. Called only after the version passed its gates.
 */
export async function writeCheckpoints(deps: CheckpointDeps, nodes: string[], nodeIPs: Record<string, string | undefined>): Promise<CheckpointWrite[]> {
  const cluster = await clusterId(deps.api)
  const floor = versionNumber((await deps.api.version()).gitVersion)
  const pods = (await deps.api.listPods(SYSTEM_NAMESPACE)).items.filter(
    (p) => !p.metadata?.deletionTimestamp && !isMirrorPod(p) && selfHostedComponentOf(p) && isReady(p),
  )
  const now = (deps.now ?? (() => new Date()))()
  const written: CheckpointWrite[] = []
  for (const node of nodes) {
    const here = PIVOTED_COMPONENTS.flatMap((component) => {
      const pod = pods.find((p) => p.spec?.nodeName === node && selfHostedComponentOf(p) === component)
      return pod ? [{component, pod}] : []
    })
    if (!here.some((h) => h.component === 'kube-apiserver'))
      throw new CliError(`no self-hosted kube-apiserver runs Ready on ${node}: nothing to checkpoint there`)
    const checkpoints: RenderedCheckpoint[] = here.map(({component, pod}) =>
      renderCheckpoint({
        component,
        template: {metadata: {}, spec: pod.spec!},
        node,
        nodeIP: nodeIPs[node] ?? pod.status?.hostIP,
        clusterId: cluster,
        writtenAt: now,
      }),
    )
    const checkpointer = renderCheckpointer({image: deps.image, clusterId: cluster, checkpoints, writtenAt: now, timings: deps.timings})
    const env: Record<string, string> = {COMPONENTS: checkpoints.map((c) => c.component).join(' '), FLOOR: String(floor), CHECKPOINTER: checkpointer}
    for (const [i, c] of checkpoints.entries()) env[`CHECKPOINT_${i + 1}`] = c.text
    await runOk(deps, node, 'checkpoint-write', WRITE_CHECKPOINTS_SCRIPT, env, [CHECKPOINT_DIR])
    const expected = JSON.stringify(Object.fromEntries(checkpoints.map((c) => [c.component, {version: c.version, written: now.toISOString()}])))
    await wait(deps, `the checkpointer on ${node} to run with its new checkpoints`, async () => {
      const mirror = checkpointerOn((await deps.api.listPods(SYSTEM_NAMESPACE, {fieldSelector: `spec.nodeName=${node}`})).items, node)
      return Boolean(mirror && isReady(mirror) && mirror.metadata?.annotations?.[CHECKPOINTS_ANNOTATION] === expected)
    })
    const list = checkpoints.map((c) => ({component: c.component, version: c.version}))
    deps.log(`${node}: checkpointed ${list.map((c) => `${c.component} ${c.version}`).join(', ')}; checkpointer running`)
    written.push({node, checkpoints: list})
  }

  return written
}

/** Nodes that run a component from its checkpoint right now (a recovery the self-hosted pods have not taken over yet). */
export function servingFromCheckpoint(pods: V1Pod[]): string[] {
  return pods
    .filter((p) => isMirrorPod(p) && p.metadata?.labels?.[CHECKPOINT_OF_LABEL])
    .map((p) => `${p.metadata!.labels![CHECKPOINT_OF_LABEL]} on ${p.spec?.nodeName}`)
}

export const CHECKPOINTER_SELECTOR = `${CHECKPOINTER_ROLE_LABEL}=${CHECKPOINTER_ROLE}`

/** True when any control-plane node has a checkpointer (then upgrades refresh its checkpoints). */
export function hasCheckpointer(pods: V1Pod[]): boolean {
  return pods.some(isCheckpointerPod)
}

/**
 * Wires writeCheckpoints to a real cluster for `upgrade`: after a component passed its gates it
 * rewrites every control-plane node's checkpoints, when the cluster has checkpointers (asked
 * then, not before: a dry run or a failed upgrade never asks).
 */
export function checkpointRefresher(client: KubeClient, log: (line: string) => void): () => Promise<string | undefined> {
  return async () => {
    if (!hasCheckpointer((await client.listPods(SYSTEM_NAMESPACE, {labelSelector: CHECKPOINTER_SELECTOR})).items)) return undefined
    const {runNodeTask} = await import('../node/runner.js')
    const {nodeTaskImage} = await import('../node/image.js')
    const nodes = (await client.listNodes()).items.filter(isControlPlaneNode)
    const ips = Object.fromEntries(nodes.map((n) => [n.metadata!.name!, n.status?.addresses?.find((a) => a.type === 'InternalIP')?.address]))
    const written = await writeCheckpoints(
      {api: client, image: await nodeTaskImage(client), log, runTask: (task) => runNodeTask(client, task, {onWarning: (m) => log(`warning: ${m}`)})},
      Object.keys(ips).sort(),
      ips,
    )
    return `checkpoints refreshed on ${written.map((w) => w.node).join(', ')}`
  }
}

/** Removes the checkpointer, any copy it started, and the checkpoints, on each node; waits for its pod to go. */
export async function removeCheckpoints(deps: CheckpointDeps, nodes: string[]): Promise<void> {
  for (const node of nodes) {
    const out = await runOk(deps, node, 'checkpoint-remove', REMOVE_CHECKPOINTS_SCRIPT, {})
    for (const line of out.trim().split('\n').filter(Boolean)) deps.log(`${node}: ${line}`)
  }

  await wait(
    deps,
    'the checkpointers to stop',
    async () => !hasCheckpointer((await deps.api.listPods(SYSTEM_NAMESPACE, {labelSelector: CHECKPOINTER_SELECTOR})).items),
  )
  // A copy the checkpointer started just before it stopped: the task again removes it.
  const left = servingFromCheckpoint((await deps.api.listPods(SYSTEM_NAMESPACE)).items)
  if (left.length > 0) {
    for (const node of nodes) await runOk(deps, node, 'checkpoint-remove', REMOVE_CHECKPOINTS_SCRIPT, {})
  }
}
