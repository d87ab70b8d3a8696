import semver, {SemVer} from 'semver'

import type {V1Container, V1DaemonSet, V1Deployment} from '../kube/types.js'
import {ComponentState, ControlPlane} from '../controlplane/model.js'
import {boolFlag, componentContainer, containerArgv, splitImage} from '../controlplane/container.js'
import {CheckResult, UPGRADE_ORDER, UpgradeComponent, checkSkew, refusalLine} from './skew.js'
import {
  LEGACY_REGISTRY,
  formatVersion,
  isNewer,
  legacyRegistryLacks,
  parseReportedVersion,
  sameVersion,
  supportsDaemonSetSurge,
  supportsPortSharing,
} from './versions.js'

export interface UpgradeOptions {
  target: SemVer
  /** Limits the run to these (--components); all of UPGRADE_ORDER otherwise. */
  components?: UpgradeComponent[]
  /** Replaces the registry part of every image (--image-registry). */
  imageRegistry?: string
  force: boolean
  allowDowngrade: boolean
}

/** A component's workload exactly as read, so the plan can see its containers and strategy. */
export interface WorkloadObject {
  kind: 'DaemonSet' | 'Deployment'
  object: V1DaemonSet | V1Deployment
}

export interface UpgradeInputs {
  plane: ControlPlane
  /** The workloads of the components in scope, keyed by component. */
  workloads: Partial<Record<UpgradeComponent, WorkloadObject>>
}

/**
 * rolling: the workload's own rolling update; another instance keeps serving meanwhile.
 * surge: one control-plane node: a new apiserver starts beside the old one on the same port
 *   (--permit-port-sharing) and the old one stops only once the new one is Ready.
 * temporary-instance: one node and no port sharing: a temporary copy of the old apiserver
 *   stands by to take the port over while the workload's pod is replaced, as kubeadm's
 *   self-hosted upgrade did.
 */
export type UpdateStrategy = 'rolling' | 'surge' | 'temporary-instance'

export interface ComponentPlan {
  component: UpgradeComponent
  workload: {kind: 'DaemonSet' | 'Deployment'; namespace: string; name: string}
  container: string
  currentVersions: string[]
  targetVersion: string
  imageBefore: string
  imageAfter: string
  /** upgrade: change it; skip: already at the target. */
  action: 'upgrade' | 'skip'
  strategy: UpdateStrategy
  /** Why this strategy, and what it falls back from when the version lacks a safety feature. */
  strategyNote: string
  /** A DaemonSet updateStrategy to set with the image (surge), and the one to restore on rollback. */
  updateStrategy?: {during: object; before: object}
  /** What must hold before the component counts as upgraded. */
  gates: string[]
}

export interface UpgradePlan {
  target: string
  direction: 'upgrade' | 'downgrade' | 'none'
  order: UpgradeComponent[]
  components: ComponentPlan[]
  checks: CheckResult[]
  notes: string[]
  /** Nothing blocks: the executor may run. */
  allowed: boolean
  /** The one line a refusal prints (the first blocking check). */
  refusal?: string
}

const PIVOTED = new Set<UpgradeComponent>(['kube-apiserver', 'kube-controller-manager', 'kube-scheduler'])

function precondition(id: string, violations: string[]): CheckResult {
  const passed = violations.length === 0
  return {id, severity: 'mandatory', passed, message: passed ? 'ok' : violations.join('; '), overridden: false, blocking: !passed}
}

function advisory(id: string, violations: string[]): CheckResult {
  const passed = violations.length === 0
  return {id, severity: 'warning', passed, message: passed ? 'ok' : violations.join('; '), overridden: false, blocking: false}
}

/**
 * The same image at the target version: the registry and path stay (k8s.gcr.io stays
 * k8s.gcr.io) unless a new registry is given; a digest goes, since it pins the old image.
 */
export function retagImage(image: string, target: SemVer, registry?: string): string {
  const {prefix, name} = splitImage(image)
  const newPrefix = registry === undefined ? prefix : registry.replace(/\/+$/, '')
  return `${newPrefix ? `${newPrefix}/` : ''}${name}:${formatVersion(target)}`
}

function versionsOf(state: ComponentState | undefined): SemVer[] {
  return (state?.instances ?? []).map((i) => parseReportedVersion(i.version)).filter((v): v is SemVer => v !== undefined)
}

/** Hosting-mode refusals: only self-hosted workloads can be upgraded by changing an image. */
function hostingViolations(component: UpgradeComponent, state: ComponentState | undefined, explicit: boolean): string[] {
  switch (state?.mode) {
    case 'self-hosted':
      return []
    case 'static':
      return [`${component} runs as static pods: run "kubectl selfhost pivot" first, or upgrade it with kubeadm`]
    case 'mixed':
      return [`${component} runs both static and self-hosted instances: a pivot is unfinished; complete it ("kubectl selfhost pivot") or revert it first`]
    default:
      // A cluster without kube-proxy (a CNI replaces it) simply has nothing to upgrade there.
      return component === 'kube-proxy' && !explicit ? [] : [`${component} has no pods in the cluster (managed or external?): nothing to upgrade here`]
  }
}

/** The workload's own rolling update starts a new pod before it stops an old one (maxSurge above 0). */
function surges(workload: WorkloadObject): boolean {
  const rolling =
    workload.kind === 'DaemonSet'
      ? (workload.object as V1DaemonSet).spec?.updateStrategy?.rollingUpdate
      : (workload.object as V1Deployment).spec?.strategy?.rollingUpdate
  const surge = rolling?.maxSurge
  // A Deployment without the field defaults to 25%; a DaemonSet to 0.
  if (surge === undefined) return workload.kind === 'Deployment' && (workload.object as V1Deployment).spec?.strategy?.type !== 'Recreate'
  return typeof surge === 'number' ? surge > 0 : !/^0+%?$/.test(surge)
}

function strategyFor(
  component: UpgradeComponent,
  plane: ControlPlane,
  workload: WorkloadObject,
  container: V1Container | undefined,
  from: SemVer | undefined,
  target: SemVer,
): Pick<ComponentPlan, 'strategy' | 'strategyNote' | 'updateStrategy'> {
  const state = plane.components.find((c) => c.name === component)
  const nodes = new Set((state?.instances ?? []).map((i) => i.node))
  if (component !== 'kube-apiserver') {
    const single = (state?.instances ?? []).length <= 1 && PIVOTED.has(component)
    let strategyNote = `the ${workload.kind}'s own rolling update`
    if (single && surges(workload)) {
      strategyNote = `one instance: the new ${component} starts before the old one stops (the ${workload.kind}'s maxSurge; on one node beside it, with --permit-port-sharing), so it never pauses`
    } else if (single) {
      const needs = component === 'kube-scheduler' ? 'a scheduler to place it' : 'a controller-manager to create it'
      strategyNote = `one instance and no surge: ${component} stops before its replacement exists, and the replacement needs ${needs}; the apiserver stays up`
    }

    return {strategy: 'rolling', strategyNote}
  }

  if (nodes.size > 1) {
    return {
      strategy: 'rolling',
      strategyNote: `${nodes.size} apiservers: one is replaced at a time while the others serve${surges(workload) ? ", its new pod starting beside the old one (the DaemonSet's maxSurge)" : ''}`,
    }
  }

  const server = parseReportedVersion(plane.serverVersion) ?? from
  const sharing = container !== undefined && boolFlag(containerArgv(container), 'permit-port-sharing', false)
  const lacks: string[] = []
  if (!from || !supportsPortSharing(from) || !supportsPortSharing(target)) lacks.push('--permit-port-sharing needs 1.19 on both the old and the new apiserver')
  else if (!sharing) lacks.push('the running apiserver was started without --permit-port-sharing, so a second one cannot bind its port')
  if (server && !supportsDaemonSetSurge(server)) lacks.push(`DaemonSet maxSurge needs 1.22, the cluster runs ${formatVersion(server)}`)
  if (workload.kind !== 'DaemonSet') lacks.push('the apiserver runs as a Deployment, not the DaemonSet pivot creates')

  if (lacks.length === 0) {
    const before = (workload.object as V1DaemonSet).spec?.updateStrategy ?? {type: 'RollingUpdate', rollingUpdate: {maxUnavailable: 1}}
    return {
      strategy: 'surge',
      strategyNote:
        'one control-plane node: the new apiserver starts beside the old one on the same port (--permit-port-sharing, DaemonSet maxSurge 1) and the old one stops only once the new one is Ready',
      updateStrategy: {during: {type: 'RollingUpdate', rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}, before},
    }
  }

  return {
    strategy: 'temporary-instance',
    strategyNote: `one control-plane node and no surge (${lacks.join('; ')}): fallback as kubeadm's self-hosted upgrade did: a temporary copy of the old apiserver stands by to take the port while the pod is replaced; expect a short API gap`,
  }
}

function gatesFor(component: UpgradeComponent, target: SemVer): string[] {
  const rollout = 'rollout complete: observedGeneration current, every pod updated and Ready'
  switch (component) {
    case 'kube-apiserver':
      return [rollout, '/readyz answers 200', `/version reports ${formatVersion(target)}`]
    case 'kube-controller-manager':
    case 'kube-scheduler':
      return [rollout, `leader lease renewed by a pod running ${formatVersion(target)}`]
    default:
      return [rollout]
  }
}

/**
 * Plans an upgrade from what discovery saw: per component the image before and after, the
 * order, the strategy and health gates, and every check with its verdict. Pure.
 */
export function planUpgrade(inputs: UpgradeInputs, options: UpgradeOptions): UpgradePlan {
  const {plane} = inputs
  const target = options.target
  const explicit = options.components !== undefined
  const requested = UPGRADE_ORDER.filter((c) => (options.components ?? UPGRADE_ORDER).includes(c))
  const state = (c: UpgradeComponent) => plane.components.find((s) => s.name === c)
  const notes: string[] = []

  const hosting = requested.flatMap((c) => hostingViolations(c, state(c), explicit))
  // kube-proxy is optional: without pods there is nothing of it to change.
  const inScope = requested.filter((c) => {
    const absent = state(c)?.mode === 'absent' || state(c) === undefined
    if (absent && c === 'kube-proxy' && !explicit) notes.push('kube-proxy: no pods (replaced by the network plugin?); nothing to upgrade')
    return !(absent && c === 'kube-proxy' && !explicit)
  })

  const unhealthy = inScope.flatMap((c) =>
    state(c)?.healthy === false ? [`${c} is unhealthy before any change (${state(c)!.problems[0] ?? 'see status'}): fix it first`] : [],
  )

  const workloadProblems: string[] = []
  const unknownVersions: string[] = []
  for (const c of inScope) {
    const s = state(c)
    if (s?.mode !== 'self-hosted') continue
    if (!inputs.workloads[c]) workloadProblems.push(`${c}: no DaemonSet or Deployment found to change`)
    const unknown = (s.instances ?? []).filter((i) => !parseReportedVersion(i.version))
    if (unknown.length > 0) unknownVersions.push(`${c}: the tag of image ${unknown[0].image} is not a version, so the skew policy cannot be checked`)
  }

  const current = Object.fromEntries(UPGRADE_ORDER.map((c) => [c, versionsOf(state(c))])) as Record<UpgradeComponent, SemVer[]>
  const kubelets = plane.nodes
    .map((n) => ({node: n.name, version: parseReportedVersion(n.kubeletVersion)}))
    .filter((k): k is {node: string; version: SemVer} => k.version !== undefined)
  const skew = checkSkew({target, current, kubelets, upgrading: inScope}, options)

  const registryWarnings: string[] = []
  const components: ComponentPlan[] = []
  for (const c of inScope) {
    const workload = inputs.workloads[c]
    const s = state(c)
    if (!workload || s?.mode !== 'self-hosted') continue
    const container = componentContainer(workload.object.spec?.template?.spec?.containers, c)
    const imageBefore = container?.image ?? ''
    const imageAfter = retagImage(imageBefore, target, options.imageRegistry)
    const versions = versionsOf(s)
    const from = versions.sort(semver.compare)[0]
    const atTarget = versions.length > 0 && versions.every((v) => sameVersion(v, target)) && imageBefore === imageAfter
    if (splitImage(imageBefore).prefix === LEGACY_REGISTRY && options.imageRegistry === undefined && legacyRegistryLacks(target)) {
      registryWarnings.push(
        `${c}: ${LEGACY_REGISTRY} was frozen in 2023 and has no ${formatVersion(target)} images; pass --image-registry registry.k8s.io (or your mirror)`,
      )
    }

    if (splitImage(imageBefore).digest) notes.push(`${c}: the image was pinned by digest; the new one is referenced by tag ${formatVersion(target)}`)
    components.push({
      component: c,
      workload: {kind: workload.kind, namespace: workload.object.metadata?.namespace ?? 'kube-system', name: workload.object.metadata?.name ?? ''},
      container: container?.name ?? c,
      currentVersions: s.versions,
      targetVersion: formatVersion(target),
      imageBefore,
      imageAfter,
      action: atTarget ? 'skip' : 'upgrade',
      ...strategyFor(c, plane, workload, container, from, target),
      gates: gatesFor(c, target),
    })
  }

  const all = components.flatMap((p) => current[p.component])
  const direction = all.some((v) => isNewer(target, v)) ? 'upgrade' : all.some((v) => isNewer(v, target)) ? 'downgrade' : 'none'
  // Down, the controllers go first so they are never newer than the apiserver they talk to.
  const order = (direction === 'downgrade' ? [...inScope].reverse() : inScope).filter((c) => components.some((p) => p.component === c))
  components.sort((a, b) => order.indexOf(a.component) - order.indexOf(b.component))
  if (direction === 'downgrade')
    notes.push('a downgrade runs in reverse order (kube-proxy, scheduler, controller-manager, apiserver) so nothing is ever newer than the apiserver')
  for (const p of components) if (p.action === 'skip') notes.push(`${p.component} already runs ${p.targetVersion}: skipped`)

  const checks = [
    precondition('self-hosted', hosting),
    precondition('workloads-found', workloadProblems),
    precondition('healthy-before', unhealthy),
    precondition('versions-known', unknownVersions),
    ...skew,
    advisory('registry-has-images', registryWarnings),
  ]
  const blocking = checks.find((c) => c.blocking)
  return {
    target: formatVersion(target),
    direction,
    order,
    components,
    checks,
    notes,
    allowed: blocking === undefined,
    refusal: blocking ? refusalLine(blocking) : undefined,
  }
}
