import type {V1Node, V1NodeSelectorRequirement, V1PodSpec, V1Taint, V1Toleration} from '../kube/types.js'
import {isReady} from '../kube/objects.js'

/**
 * Where a pod template can run, judged the way the scheduler's node filters do for the
 * parts a control-plane workload uses: nodeSelector, required node affinity, taints with
 * NoSchedule/NoExecute effects, readiness and cordons. Pure: inputs are API objects.
 */

export interface Placement {
  /** Nodes a new replica could be scheduled to, sorted by name. */
  eligibleNodes: string[]
  /**
   * Why at most one replica fits per node (hostNetwork ports, required anti-affinity on the
   * hostname), or undefined when several replicas may share a node.
   */
  onePerNodeBecause?: string
  /** hostNetwork pods share the node's ports: two on one node collide unless they share ports. */
  hostNetwork: boolean
}

const HOSTNAME_TOPOLOGY = 'kubernetes.io/hostname'

export function tolerates(tolerations: V1Toleration[], taint: V1Taint): boolean {
  return tolerations.some((t) => {
    if (t.effect && t.effect !== taint.effect) return false
    if (!t.key) return t.operator === 'Exists'
    if (t.key !== taint.key) return false
    return t.operator === 'Exists' || (t.value ?? '') === (taint.value ?? '')
  })
}

function requirementHolds(labels: Record<string, string>, req: V1NodeSelectorRequirement): boolean {
  const has = Object.hasOwn(labels, req.key)
  const value = labels[req.key]
  switch (req.operator) {
    case 'In':
      return has && (req.values ?? []).includes(value)
    case 'NotIn':
      return !has || !(req.values ?? []).includes(value)
    case 'Exists':
      return has
    case 'DoesNotExist':
      return !has
    case 'Gt':
      return has && Number(value) > Number(req.values?.[0])
    case 'Lt':
      return has && Number(value) < Number(req.values?.[0])
    default:
      return false
  }
}

/** Why the node cannot take a new pod of this spec, or undefined when it can. */
export function unfitReason(node: V1Node, spec: V1PodSpec): string | undefined {
  const labels = node.metadata?.labels ?? {}
  for (const [key, value] of Object.entries(spec.nodeSelector ?? {})) {
    if (labels[key] !== value) return `no label ${key}=${value}`
  }

  const terms = spec.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms
  // Terms are ORed, the expressions within a term ANDed.
  if (terms && terms.length > 0 && !terms.some((term) => (term.matchExpressions ?? []).every((req) => requirementHolds(labels, req)))) {
    return 'required node affinity does not match'
  }

  if (node.spec?.unschedulable) return 'cordoned'
  if (!isReady(node)) return 'not Ready'
  const tolerations = spec.tolerations ?? []
  const blocking = (node.spec?.taints ?? []).find((taint) => taint.effect !== 'PreferNoSchedule' && !tolerates(tolerations, taint))
  if (blocking) return `taint ${blocking.key}${blocking.value ? `=${blocking.value}` : ''}:${blocking.effect} not tolerated`
  return undefined
}

/** Ports a pod takes on its node: every container port of a hostNetwork pod, else hostPorts. */
function nodePorts(spec: V1PodSpec): number[] {
  const ports = spec.containers.flatMap((c) => c.ports ?? [])
  return spec.hostNetwork ? ports.map((p) => p.hostPort ?? p.containerPort) : ports.flatMap((p) => (p.hostPort ? [p.hostPort] : []))
}

function antiAffinityOnHostname(spec: V1PodSpec, podLabels: Record<string, string>): boolean {
  const terms = spec.affinity?.podAntiAffinity?.requiredDuringSchedulingIgnoredDuringExecution ?? []
  return terms.some((term) => {
    if (term.topologyKey !== HOSTNAME_TOPOLOGY) return false
    const selector = term.labelSelector
    if (!selector) return false
    const matchLabels = Object.entries(selector.matchLabels ?? {}).every(([k, v]) => podLabels[k] === v)
    const matchExpressions = (selector.matchExpressions ?? []).every((req) =>
      requirementHolds(podLabels, {key: req.key, operator: req.operator, values: req.values}),
    )
    return matchLabels && matchExpressions
  })
}

export function placementOf(spec: V1PodSpec, podLabels: Record<string, string>, nodes: V1Node[]): Placement {
  const eligibleNodes = nodes
    .filter((node) => unfitReason(node, spec) === undefined)
    .map((node) => node.metadata?.name ?? '')
    .sort()
  const ports = nodePorts(spec)
  let onePerNodeBecause: string | undefined
  if (ports.length > 0) onePerNodeBecause = `each replica takes host port ${ports.join(', ')}`
  else if (antiAffinityOnHostname(spec, podLabels)) onePerNodeBecause = 'required pod anti-affinity keeps replicas on different nodes'
  return {eligibleNodes, onePerNodeBecause, hostNetwork: spec.hostNetwork === true}
}
