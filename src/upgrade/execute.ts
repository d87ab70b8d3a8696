import {mkdirSync, writeFileSync} from 'node:fs'
import {homedir} from 'node:os'
import {join} from 'node:path'

import {stringify as toYaml} from 'yaml'

import type {V1DaemonSet, V1Deployment, V1Pod} from '../kube/types.js'
import {CHECKPOINT_OF_LABEL} from '../checkpoint/status.js'
import {DiscoveryApi, discoverControlPlane} from '../controlplane/discover.js'
import {holderElsewhere, matchHolder, readLeaderLock} from '../controlplane/leader.js'
import {Instance, MANAGED_BY_LABEL, MANAGED_BY_VALUE, SELF_HOSTED_APP_LABEL, SYSTEM_NAMESPACE} from '../controlplane/model.js'
import {CliError, ExitCode} from '../errors.js'
import {ApiStatusError, ApiUnreachableError, isConflict} from '../kube/errors.js'
import type {KubeClient} from '../kube/client.js'
import {isReady} from '../kube/objects.js'
import {type OutageMemory, WaitOptions, WorkloadRef, callThroughOutage, pollUntil, waitForRollout} from '../kube/wait.js'
import {ComponentPlan, UpgradeOptions, UpgradePlan, WorkloadObject, planUpgrade} from './plan.js'
import {UPGRADE_ORDER, UpgradeComponent} from './skew.js'
import {parseReportedVersion, sameVersion} from './versions.js'

export type UpgradeApi = DiscoveryApi & Pick<KubeClient, 'getDaemonSet' | 'getDeployment' | 'patch' | 'apply' | 'delete' | 'getLease'>

const TEMPORARY_PREFIX = 'selfhost-upgrade-temp-'

export interface ExecuteOptions {
  /** Budget for each component: its rollout and its health gates (and again for a rollback). */
  timeoutMs: number
  intervalMs?: number
  /** Where the workloads are saved before the first change. */
  backupDir: string
  onProgress: (line: string) => void
  /** Aborting (Ctrl-C) stops waiting and rolls the current component back. */
  signal?: AbortSignal
  sleep?: (ms: number) => Promise<void>
  now?: () => number
  /**
   * Rewrites the nodes' checkpoints once a component passed its gates (the command wires
   * src/checkpoint's writeCheckpoints when the cluster has checkpointers); never on a rollback,
   * so a rolled-back component keeps its last good checkpoint.
   */
  refreshCheckpoints?: (component: UpgradeComponent) => Promise<string | undefined>
}

/** What the steps of one run share beyond the caller's options. */
type RunOptions = ExecuteOptions & {outage: OutageMemory}

export type ComponentResult = 'upgraded' | 'skipped' | 'rolled-back' | 'rollback-failed' | 'not-started'

export interface ComponentOutcome {
  component: UpgradeComponent
  imageBefore: string
  imageAfter: string
  /** The image the workload runs now. */
  imageNow: string
  result: ComponentResult
  detail?: string
  seconds?: number
}

export interface UpgradeResult {
  outcome: 'upgraded' | 'nothing-to-do' | 'rolled-back' | 'rollback-failed'
  target: string
  components: ComponentOutcome[]
  /** Why a component failed, one line. */
  failure?: string
  backup?: string
  warnings: string[]
}

/** Reads the cluster and plans; nothing changes. */
export async function prepareUpgrade(api: UpgradeApi, options: UpgradeOptions): Promise<UpgradePlan> {
  const plane = await discoverControlPlane(api)
  const workloads: Partial<Record<UpgradeComponent, WorkloadObject>> = {}
  for (const component of UPGRADE_ORDER) {
    const found = plane.components.find((c) => c.name === component)?.workloads ?? []
    // pivot's workload (or kubeadm's kube-proxy DaemonSet) when there are several.
    const workload = found.find((w) => w.name === `self-hosted-${component}` || w.name === component) ?? found[0]
    if (!workload) continue
    workloads[component] =
      workload.kind === 'DaemonSet'
        ? {kind: 'DaemonSet', object: await api.getDaemonSet(workload.namespace, workload.name)}
        : {kind: 'Deployment', object: await api.getDeployment(workload.namespace, workload.name)}
  }

  return planUpgrade({plane, workloads}, options)
}

const refOf = (p: ComponentPlan): WorkloadRef => ({kind: p.workload.kind, namespace: p.workload.namespace, name: p.workload.name})

async function readWorkload(api: UpgradeApi, ref: WorkloadRef): Promise<V1DaemonSet | V1Deployment> {
  return ref.kind === 'DaemonSet' ? api.getDaemonSet(ref.namespace, ref.name) : api.getDeployment(ref.namespace, ref.name)
}

const resourceOf = (ref: WorkloadRef) => (ref.kind === 'DaemonSet' ? 'daemonsets' : 'deployments')

function imageOf(object: V1DaemonSet | V1Deployment, container: string): string | undefined {
  return object.spec?.template?.spec?.containers?.find((c) => c.name === container)?.image
}

/** What a DaemonSet copy needs to run beside the original without being adopted by it. */
function temporaryCopy(original: V1DaemonSet, image: string, container: string): V1DaemonSet & {apiVersion: string; kind: string} {
  const name = `${TEMPORARY_PREFIX}${original.metadata?.name}`
  const selectorKeys = Object.keys(original.spec?.selector?.matchLabels ?? {})
  const templateLabels = {...original.spec?.template?.metadata?.labels}
  for (const key of selectorKeys) delete templateLabels[key]
  const labels = {[SELF_HOSTED_APP_LABEL]: name, [MANAGED_BY_LABEL]: MANAGED_BY_VALUE}
  const spec = structuredClone(original.spec!.template.spec!)
  for (const c of spec.containers) if (c.name === container) c.image = image
  return {
    apiVersion: 'apps/v1',
    kind: 'DaemonSet',
    metadata: {name, namespace: original.metadata?.namespace, labels},
    spec: {
      selector: {matchLabels: {[SELF_HOSTED_APP_LABEL]: name}},
      updateStrategy: {type: 'RollingUpdate', rollingUpdate: {maxUnavailable: 1}},
      template: {metadata: {labels: {...templateLabels, ...labels}, annotations: original.spec?.template?.metadata?.annotations}, spec},
    },
  }
}

function backup(dir: string, workloads: Array<V1DaemonSet | V1Deployment>): string {
  mkdirSync(dir, {recursive: true})
  for (const w of workloads) {
    const {managedFields: _managed, ...metadata} = w.metadata ?? {}
    writeFileSync(join(dir, `${w.metadata?.name}.yaml`), toYaml({...w, metadata}))
  }

  return dir
}

export function defaultBackupDir(context: string, now: Date): string {
  const stamp = now.toISOString().replace(/[:.]/g, '-')
  return join(
    process.env.KUBECTL_SELFHOST_STATE ?? join(homedir(), '.kube', 'selfhost'),
    'backups',
    `upgrade-${context.replace(/[^A-Za-z0-9_.-]/g, '_')}-${stamp}`,
  )
}

function instancesOf(pods: V1Pod[], container: string): Instance[] {
  return pods
    .filter((p) => !p.metadata?.deletionTimestamp)
    .map((p) => {
      const image = p.spec?.containers?.find((c) => c.name === container)?.image ?? p.spec?.containers?.[0]?.image ?? ''
      return {
        pod: p.metadata?.name ?? '',
        namespace: p.metadata?.namespace ?? SYSTEM_NAMESPACE,
        node: p.spec?.nodeName ?? '',
        source: 'workload' as const,
        phase: p.status?.phase ?? 'Unknown',
        ready: isReady(p),
        restarts: 0,
        image,
        startedAt: p.status?.startTime,
      }
    })
}

/**
 * Runs the plan component by component. A component that fails its rollout or a health gate
 * (or is interrupted) goes back to its previous image; the run then stops.
 */
export async function executeUpgrade(api: UpgradeApi, plan: UpgradePlan, given: ExecuteOptions): Promise<UpgradeResult> {
  if (!plan.allowed) throw new CliError(plan.refusal ?? 'the upgrade plan is refused')
  // One memory of API outages for the whole run: the rollback after a failed gate sees the outage the gate saw.
  const opts: RunOptions = {...given, outage: {}}
  const now = opts.now ?? Date.now
  const say = opts.onProgress
  const warnings: string[] = []
  const outcomes: ComponentOutcome[] = plan.components.map((p) => ({
    component: p.component,
    imageBefore: p.imageBefore,
    imageAfter: p.imageAfter,
    imageNow: p.imageBefore,
    result: p.action === 'skip' ? 'skipped' : 'not-started',
    detail: p.action === 'skip' ? `already ${p.targetVersion}` : undefined,
  }))
  const work = plan.components.filter((p) => p.action === 'upgrade')
  if (work.length === 0) return {outcome: 'nothing-to-do', target: plan.target, components: outcomes, warnings}

  const originals = await Promise.all(work.map((p) => readWorkload(api, refOf(p))))
  const backupDir = backup(opts.backupDir, originals)
  say(`backed up ${originals.length} workload(s) to ${backupDir}`)
  // What the apiserver reported before any change: a rollback must bring that back.
  const servedBefore = (await api.version()).gitVersion
  // Checkpoint refreshes that failed since the last one that worked: warnings in every result.
  const unrefreshed: string[] = []
  const warningsNow = () => [...warnings, ...unrefreshed]

  for (const [i, p] of work.entries()) {
    const outcome = outcomes.find((o) => o.component === p.component)!
    const started = now()
    say(`[${i + 1}/${work.length}] ${p.component}: ${p.currentVersions.join(', ') || '?'} -> ${p.targetVersion} (${p.strategy})`)
    // Read again right before the change: the patch is guarded by this resourceVersion. A power
    // loss between two components takes the API away here until the node's checkpoint serves.
    const fresh = await throughOutage(opts, `the API to read ${p.workload.kind} ${p.workload.namespace}/${p.workload.name}`, () => readWorkload(api, refOf(p)))
    const image = imageOf(fresh, p.container)
    const done = outcomes.filter((o) => o.result === 'upgraded').map((o) => o.component)
    const sofar = done.length > 0 ? ` (${done.join(', ')} already upgraded)` : ''
    if (image !== p.imageBefore && image !== p.imageAfter) {
      throw new CliError(`${p.workload.kind} ${p.workload.name} changed since it was planned (image now ${image}); run the upgrade again${sofar}`)
    }

    let changed = false
    try {
      await replacePods(api, p, p.imageAfter, fresh, opts, 'during', () => (changed = true))
      outcome.imageNow = p.imageAfter
      await healthGates(api, p, {kind: 'target', version: p.targetVersion}, opts, warnings)
      if (p.updateStrategy) await restoreStrategy(api, p)
      outcome.result = 'upgraded'
      outcome.seconds = Math.round((now() - started) / 1000)
      say(`  ${p.component} upgraded in ${outcome.seconds}s`)
      if (opts.refreshCheckpoints) {
        // The upgrade stands either way; a checkpoint left behind is what `status` then reports.
        const refreshed = await opts.refreshCheckpoints(p.component).catch((error: Error) => {
          unrefreshed.push(`${p.component} upgraded, but its checkpoints were not refreshed (${error.message}); run \`kubectl selfhost pivot\` to rewrite them`)
          return undefined
        })
        if (refreshed) {
          say(`  ${refreshed}`)
          // A refresh rewrites every component's checkpoint: an earlier one that failed is made good.
          unrefreshed.length = 0
        }
      }
    } catch (error) {
      const failure = `${p.component}: ${(error as Error).message}`
      // Nothing of ours to undo (e.g. a 409: someone else changed it); never overwrite their change.
      if (!changed) {
        const outcome =
          error instanceof PatchOutcomeUnknownError
            ? `its patch may have applied before the API went away (the answer was lost): check with \`kubectl selfhost status\`, then run the upgrade again`
            : `nothing was changed on ${p.component}`
        throw new CliError(`${failure}; ${outcome}${sofar}`)
      }

      say(`  FAILED ${failure}`)
      say(`  rolling ${p.component} back to ${p.imageBefore}`)
      try {
        // Ctrl-C must not interrupt the rollback itself.
        const calm = {...opts, signal: undefined}
        await replacePods(api, p, p.imageBefore, fresh, calm, 'before', () => undefined)
        outcome.imageNow = p.imageBefore
        await healthGates(api, p, {kind: 'served-before', version: servedBefore}, calm, warnings)
        outcome.result = 'rolled-back'
        outcome.detail = (error as Error).message
        outcome.seconds = Math.round((now() - started) / 1000)
        say(`  ${p.component} is back on ${p.imageBefore} and healthy`)
        return {outcome: 'rolled-back', target: plan.target, components: outcomes, failure, backup: backupDir, warnings: warningsNow()}
      } catch (rollbackError) {
        outcome.result = 'rollback-failed'
        outcome.detail = `${(error as Error).message}; rollback: ${(rollbackError as Error).message}`
        return {
          outcome: 'rollback-failed',
          target: plan.target,
          components: outcomes,
          failure: `${failure}; the rollback failed too (${(rollbackError as Error).message}); restore it with: kubectl -n ${p.workload.namespace} set image ${p.workload.kind.toLowerCase()}/${p.workload.name} ${p.container}=${p.imageBefore} (backup in ${backupDir})`,
          backup: backupDir,
          warnings: warningsNow(),
        }
      }
    }
  }

  return {outcome: 'upgraded', target: plan.target, components: outcomes, backup: backupDir, warnings: warningsNow()}
}

/** Sets the image and follows the rollout, by the component's strategy. */
async function replacePods(
  api: UpgradeApi,
  p: ComponentPlan,
  image: string,
  original: V1DaemonSet | V1Deployment,
  opts: RunOptions,
  strategy: 'during' | 'before',
  onChanged: () => void,
): Promise<void> {
  const ref = refOf(p)
  const wait = waitOptionsOf(opts)
  const containerPatch = {template: {spec: {containers: [{name: p.container, image}]}}}
  const spec = p.updateStrategy ? {...containerPatch, updateStrategy: p.updateStrategy[strategy]} : containerPatch
  // Going forward, the patch only applies to the object as planned (409 if someone changed it
  // since); a rollback must apply whatever happened meanwhile.
  const patch = strategy === 'during' ? {metadata: {resourceVersion: original.metadata?.resourceVersion}, spec} : {spec}

  // Both ways the patch waits for an API that is away: a rollback must get through while the API
  // comes back, and going forward the power loss of a node may have just taken it.
  let attempts = 0
  let answerLost = false
  const patchThroughOutage = () =>
    throughOutage(opts, `the API to take the ${strategy === 'during' ? 'patch' : 'rollback'} of ${ref.kind} ${ref.namespace}/${ref.name}`, async () => {
      attempts++
      try {
        await api.patch('apps/v1', resourceOf(ref), ref.namespace, ref.name, patch)
      } catch (error) {
        // A patch whose answer the outage swallowed may have applied: its retry then conflicts with
        // our own change, which the object shows.
        if (attempts > 1 && isConflict(error) && imageOf(await readWorkload(api, ref), p.container) === image) return
        answerLost ||= mayHaveApplied(error)
        throw error
      }
    }).catch((error: Error) => {
      throw answerLost && !isConflict(error) ? new PatchOutcomeUnknownError(error.message) : error
    })

  if (p.strategy !== 'temporary-instance') {
    await patchThroughOutage()
    onChanged()
    opts.onProgress(`  patched ${ref.kind} ${ref.namespace}/${ref.name}: ${p.container}=${image}`)
    // Going forward, a new pod that cannot run ends the wait early; a rollback waits its full time.
    const stuck = strategy === 'during' ? () => brokenNewPod(api, p, original, image) : undefined
    await waitForRollout(api, ref, {...wait, stuck, onProgress: (line) => opts.onProgress(`  rollout: ${line}`)})
    await waitForOnlyImage(api, p, original, image, wait, opts.onProgress)
    return
  }

  // kubeadm's self-hosted upgrade: a copy of the last good apiserver stands by on every node
  // so the port is served again as soon as the old pod goes, then steps aside for the new one.
  const temporary = temporaryCopy(original as V1DaemonSet, p.imageBefore, p.container)
  const tempRef: WorkloadRef = {kind: 'DaemonSet', namespace: ref.namespace, name: temporary.metadata!.name!}
  try {
    await throughOutage(opts, `the API to take temporary DaemonSet ${tempRef.name}`, () => api.apply('apps/v1', 'daemonsets', temporary))
    opts.onProgress(`  started temporary DaemonSet ${tempRef.name} (${p.imageBefore})`)
    await pollUntil(
      async () => {
        const ds = await api.getDaemonSet(tempRef.namespace, tempRef.name)
        const desired = ds.status?.desiredNumberScheduled ?? 0
        const current = ds.status?.currentNumberScheduled ?? 0
        return {done: desired > 0 && current >= desired, value: undefined, progress: `${current}/${desired} temporary pods scheduled`}
      },
      {...wait, what: `temporary DaemonSet ${tempRef.name}`, onProgress: (line) => opts.onProgress(`  temporary: ${line}`)},
    )
    await patchThroughOutage()
    onChanged()
    opts.onProgress(`  patched ${ref.kind} ${ref.namespace}/${ref.name}: ${p.container}=${image}`)
    await pollUntil(
      async () => {
        const ds = await api.getDaemonSet(ref.namespace, ref.name)
        const desired = ds.status?.desiredNumberScheduled ?? 0
        const updated = ds.status?.updatedNumberScheduled ?? 0
        const seen = (ds.status?.observedGeneration ?? 0) >= (ds.metadata?.generation ?? 0)
        return {done: seen && updated >= desired, value: undefined, progress: `${updated}/${desired} pods replaced`}
      },
      {...wait, what: `${ref.name} to replace its pods`, onProgress: (line) => opts.onProgress(`  rollout: ${line}`)},
    )
  } finally {
    // Ctrl-C must not leave the copy running: its removal waits for the API whatever the signal.
    await throughOutage({...opts, signal: undefined}, `the API to delete temporary DaemonSet ${tempRef.name}`, () =>
      api.delete('apps/v1', 'daemonsets', tempRef.namespace, tempRef.name),
    )
    opts.onProgress(`  removed temporary DaemonSet ${tempRef.name}`)
  }

  await waitForRollout(api, ref, {...wait, onProgress: (line) => opts.onProgress(`  rollout: ${line}`)})
  await waitForOnlyImage(api, p, original, image, wait, opts.onProgress)
}

/**
 * The waits of one run: an apiserver upgrade takes the API away when it goes wrong (a new
 * instance that never serves replaced the old one) until the node's checkpoint serves again,
 * so every wait spans that.
 */
function waitOptionsOf(opts: RunOptions): Omit<WaitOptions, 'what'> {
  return {timeoutMs: opts.timeoutMs, intervalMs: opts.intervalMs, signal: opts.signal, sleep: opts.sleep, now: opts.now, throughApiOutage: opts.outage}
}

/** A patch whose answer was lost and that no retry settled: it may or may not have applied. */
class PatchOutcomeUnknownError extends Error {}

/** A failed write that the server may still have carried out: its answer was lost, or it failed inside the server. */
function mayHaveApplied(error: unknown): boolean {
  if (error instanceof ApiUnreachableError) return error.mayHaveArrived
  return error instanceof ApiStatusError && error.status >= 500 && error.status !== 503
}

/** One call, sent again while the API is away or still starting (within the run's timeout). */
function throughOutage<T>(opts: RunOptions, what: string, call: () => Promise<T>): Promise<T> {
  return callThroughOutage(call, {
    ...waitOptionsOf(opts),
    what,
    onProgress: (line) => line && opts.onProgress(`  waiting: ${line}`),
  })
}

/** The label selector of a workload's pods. */
function selectorOf(workload: V1DaemonSet | V1Deployment): string {
  return Object.entries(workload.spec?.selector?.matchLabels ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(',')
}

/** Restarts after which a crash-looping new pod is taken as broken, not as slow to start. */
export const CRASH_LOOP_RESTARTS = 3
/** Waiting reasons that never resolve by waiting: the image can never be had as named. */
const HOPELESS_WAITING = new Set(['ErrImageNeverPull', 'InvalidImageName'])

/** A pod of the new image that cannot run, described in a few words (undefined when none is). */
async function brokenNewPod(api: UpgradeApi, p: ComponentPlan, workload: V1DaemonSet | V1Deployment, image: string): Promise<string | undefined> {
  const labelSelector = selectorOf(workload)
  for (const pod of (await api.listPods(p.workload.namespace, {labelSelector})).items) {
    if (pod.spec?.containers?.find((c) => c.name === p.container)?.image !== image) continue
    const status = pod.status?.containerStatuses?.find((c) => c.name === p.container)
    const waiting = status?.state?.waiting?.reason
    const where = `pod ${pod.metadata?.name} on ${pod.spec?.nodeName ?? 'no node'}`
    if (waiting && HOPELESS_WAITING.has(waiting)) return `${where}: ${waiting}${status?.state?.waiting?.message ? ` (${status.state.waiting.message})` : ''}`
    if (waiting === 'CrashLoopBackOff' && (status?.restartCount ?? 0) >= CRASH_LOOP_RESTARTS) {
      const last = status?.lastState?.terminated
      return `${where}: its ${p.container} container keeps crashing (${status!.restartCount} restarts${last ? `, last exit code ${last.exitCode}${last.reason ? ` ${last.reason}` : ''}` : ''}); see kubectl -n ${p.workload.namespace} logs ${pod.metadata?.name} --previous`
    }
  }

  return undefined
}

/**
 * A rollout's counts are met while a surplus pod of the other template may still be there
 * (a surge pod after a rollback); wait until every pod of the workload runs `image`.
 */
async function waitForOnlyImage(
  api: UpgradeApi,
  p: ComponentPlan,
  workload: V1DaemonSet | V1Deployment,
  image: string,
  wait: Omit<WaitOptions, 'what'>,
  onProgress: (line: string) => void,
): Promise<void> {
  const labelSelector = selectorOf(workload)
  await pollUntil(
    async () => {
      const pods = (await api.listPods(p.workload.namespace, {labelSelector})).items
      const others = pods.filter((pod) => pod.metadata?.deletionTimestamp || pod.spec?.containers?.find((c) => c.name === p.container)?.image !== image)
      return {done: others.length === 0, value: undefined, progress: `${others.length} pod(s) of the other image left`}
    },
    {...wait, what: `every ${p.workload.name} pod to run ${image}`, onProgress: (line) => onProgress(`  pods: ${line}`)},
  )
}

async function restoreStrategy(api: UpgradeApi, p: ComponentPlan): Promise<void> {
  const ref = refOf(p)
  await api.patch('apps/v1', resourceOf(ref), ref.namespace, ref.name, {spec: {updateStrategy: p.updateStrategy!.before}})
}

type VersionExpectation = {kind: 'target' | 'served-before'; version: string}

/** The gates after a rollout: the apiserver ready and serving the version; a leader on the new pods. */
async function healthGates(api: UpgradeApi, p: ComponentPlan, expected: VersionExpectation, opts: RunOptions, warnings: string[]): Promise<void> {
  const wait = waitOptionsOf(opts)
  if (expected.kind === 'target') {
    // After a power loss a node runs from its checkpoint for a while: the copy (the version the
    // checkpoint holds) serves or leads beside the new pod, and no gate below could tell them apart.
    await pollUntil(
      async () => {
        const copies = (await api.listPods(SYSTEM_NAMESPACE, {labelSelector: `${CHECKPOINT_OF_LABEL}=${p.component}`})).items
        const nodes = copies.map((c) => c.spec?.nodeName ?? '?').join(', ')
        return {done: copies.length === 0, value: undefined, progress: copies.length ? `the checkpoint copy of ${p.component} still runs on ${nodes}` : ''}
      },
      {...wait, what: `the checkpoint copies of ${p.component} to step aside`, onProgress: (line) => line && opts.onProgress(`  gate: ${line}`)},
    )
  }

  if (p.component === 'kube-apiserver') {
    await pollUntil(
      async () => {
        const res = await api
          .raw('GET', '/readyz', {query: {verbose: true}, intent: {verb: 'get', resource: '/readyz'}})
          .catch((e: Error) => ({status: 0, body: e.message}))
        return {done: res.status === 200, value: undefined, progress: `/readyz ${res.status || 'unreachable'}`}
      },
      {...wait, what: '/readyz', onProgress: (line) => opts.onProgress(`  gate: ${line}`)},
    )
    const want = parseReportedVersion(expected.version)
    await pollUntil(
      async () => {
        const served = (await api.version()).gitVersion
        const got = parseReportedVersion(served)
        return {done: Boolean(want && got && sameVersion(want, got)), value: undefined, progress: `/version ${served}`}
      },
      {
        ...wait,
        what: `/version to report ${expected.version}${expected.kind === 'served-before' ? ' (as before the upgrade)' : ''}`,
        onProgress: (line) => opts.onProgress(`  gate: ${line}`),
      },
    )
    return
  }

  if (p.component === 'kube-controller-manager' || p.component === 'kube-scheduler') {
    // Renewal is judged by the record changing, not by clocks: ours and the leader's may differ.
    let firstRenewTime: string | undefined
    const leader = await pollUntil(
      async () => {
        const lock = await readLeaderLock(api, {namespace: SYSTEM_NAMESPACE, name: p.component}, new Date((opts.now ?? Date.now)()))
        if (!lock.exists) return {done: true, value: undefined, progress: 'no leader record'}
        // The old leader released the lock on its way out (seen on a real node): wait for the next one.
        if (!lock.leader) return {done: false, value: undefined, progress: 'lock released by the previous leader, no holder yet'}
        const record = lock.leader
        firstRenewTime ??= record.renewTime ?? ''
        const renewed = record.renewTime !== undefined && record.renewTime !== firstRenewTime
        const pods = await api.listPods(p.workload.namespace, {labelSelector: `${SELF_HOSTED_APP_LABEL}=${p.workload.name}`})
        const match = matchHolder(record, instancesOf(pods.items, p.container))
        const holderPod = match.holder
        const onNewPod = holderPod !== undefined && holderPod.image === imageNow(p, expected)
        // A holder that is none of the pods (another process, or a hostname that is no node name) can only be judged by renewal.
        const done = renewed && (onNewPod || holderPod === undefined)
        return {
          done,
          value: {record, holderPod, elsewhere: holderElsewhere(record, match, 'pod of the workload')},
          progress: `leader ${record.holder}${holderPod ? ` (${holderPod.pod}, ${holderPod.image})` : ' (none of the pods)'}, ${renewed ? 'renewed' : 'not renewed yet'}`,
        }
      },
      {
        ...wait,
        what: `${p.component}'s leader lease to be renewed by a pod running ${imageNow(p, expected)}`,
        onProgress: (line) => opts.onProgress(`  gate: ${line}`),
      },
    )
    if (!leader) warnings.push(`${p.component}: no leader record (Lease or Endpoints) to check; leader election may be off`)
    else if (leader.elsewhere) warnings.push(`${p.component}: ${leader.elsewhere}; it renewed the lease, but its version could not be checked`)
  }
}

const imageNow = (p: ComponentPlan, expected: VersionExpectation) => (expected.kind === 'target' ? p.imageAfter : p.imageBefore)

/** The exit code a result means: 0 done, 3 rolled back (cluster as before), 1 rollback failed. */
export function exitCodeOf(result: UpgradeResult): number {
  if (result.outcome === 'rolled-back') return ExitCode.rolledBack
  return result.outcome === 'rollback-failed' ? ExitCode.error : ExitCode.ok
}

export interface RunUpgradeOptions extends UpgradeOptions {
  /** --dry-run / --plan: plan and stop. */
  dryRun: boolean
  /** Called with the plan before anything changes. */
  onPlan?: (plan: UpgradePlan) => void
  execute: Omit<ExecuteOptions, 'backupDir'> & {backupDir?: string}
}

/** Plans, and unless this is a dry run, executes: the one core function of `upgrade`. */
export async function runUpgrade(api: UpgradeApi, options: RunUpgradeOptions): Promise<{plan: UpgradePlan; result?: UpgradeResult}> {
  const plan = await prepareUpgrade(api, options)
  if (options.dryRun) return {plan}
  if (!plan.allowed) throw new CliError(plan.refusal ?? 'the upgrade plan is refused')
  options.onPlan?.(plan)
  const backupDir = options.execute.backupDir ?? defaultBackupDir(api.contextName, new Date())
  return {plan, result: await executeUpgrade(api, plan, {...options.execute, backupDir})}
}
