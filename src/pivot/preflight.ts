import type {V1Pod} from '../kube/types.js'

import {PIVOTED_COMPONENTS, type PivotedComponent, SYSTEM_NAMESPACE} from '../controlplane/model.js'
import {CliError} from '../errors.js'
import {isReady} from '../kube/objects.js'
import {type PivotCluster, podComponent} from './cluster.js'
import {type PivotState, readState} from './state.js'

/** How long preflight gives an unready control-plane pod (e.g. a static pod just put back) to get Ready. */
const PREFLIGHT_READY_WAIT_MS = 120_000
/** How long preflight waits for a scheduler or controller-manager to lead again (a restart loses the lease). */
const LEASE_WAIT_MS = 120_000

/**
 * A preflight refusal, by kind: revert goes on through the kinds a half-done pivot causes
 * (pods not Ready, a leader that lost its lease), never through missing permissions or a sick API.
 */
export class PreflightError extends CliError {
  constructor(
    message: string,
    readonly kind: 'permissions' | 'nodes' | 'api' | 'pods' | 'leader',
  ) {
    super(message)
    this.name = 'PreflightError'
  }
}

/** [verb, resource, group] in kube-system, beyond what pivot itself needs (revert deletes). */
export type ExtraVerb = [verb: string, resource: string, group: string]

/**
 * Checks, in this order, before anything changes: the rights pivot (and revert) need, Ready
 * control-plane nodes, a healthy API, Ready control-plane pods and a live leader of the
 * controller-manager and scheduler. The last two are waited for, bounded: a restart the tool
 * itself caused takes them away for a while.
 */
export async function preflight(cluster: PivotCluster, state: PivotState, extraVerbs: ExtraVerb[] = []): Promise<void> {
  const missing = await missingRights(cluster, state, extraVerbs)
  if (missing.length > 0) throw new PreflightError(`not allowed to ${missing}: pivot needs cluster-admin-like rights`, 'permissions')
  const notReady = Object.entries(state.ready)
    .filter(([, ready]) => !ready)
    .map(([n]) => n)
  if (notReady.length > 0) throw new PreflightError(`control-plane node(s) ${notReady.join(', ')} not Ready: fix them before moving the control plane`, 'nodes')
  if (!(await cluster.apiHealthy())) throw new PreflightError('the API server is not healthy (/readyz): fix it before moving the control plane', 'api')
  await waitForReadyPods(cluster, state)
  for (const component of ['kube-controller-manager', 'kube-scheduler']) await waitForLeader(cluster, component)
}

/** What is not allowed, by namespace ("verb resource, ... in namespace; ..."), or '' when everything is. */
async function missingRights(cluster: PivotCluster, state: PivotState, extraVerbs: ExtraVerb[]): Promise<string> {
  const tasks = cluster.taskNamespace
  // [verb, resource, group, subresource, namespace]: node tasks run in --namespace, the rest in kube-system.
  const needed: Array<[verb: string, resource: string, group: string, subresource: string | undefined, namespace: string | undefined]> = [
    ['list', 'nodes', '', undefined, undefined],
    ['list', 'pods', '', undefined, SYSTEM_NAMESPACE],
    ['create', 'pods', '', undefined, tasks],
    ['delete', 'pods', '', undefined, tasks],
    ['get', 'pods', '', undefined, tasks],
    // A node task's output (its manifests, the watchdog's verdict) is read from its pod's log.
    ['get', 'pods', '', 'log', tasks],
    // With several control-plane nodes, a node's new apiserver is asked through the API's proxy.
    ...(state.nodes.length > 1 ? [['get', 'pods', '', 'proxy', SYSTEM_NAMESPACE] as [string, string, string, string, string]] : []),
    ...(
      [
        ['list', 'daemonsets', 'apps'],
        ['list', 'deployments', 'apps'],
        ['create', 'daemonsets', 'apps'],
        ['patch', 'daemonsets', 'apps'],
        ['create', 'deployments', 'apps'],
        ['patch', 'deployments', 'apps'],
        ['create', 'poddisruptionbudgets', 'policy'],
        ['patch', 'poddisruptionbudgets', 'policy'],
        ['get', 'leases', 'coordination.k8s.io'],
        ['get', 'namespaces', ''],
        ...extraVerbs,
      ] as ExtraVerb[]
    ).map(([verb, resource, group]) => [verb, resource, group, undefined, SYSTEM_NAMESPACE] as [string, string, string, undefined, string]),
  ]
  const missing = new Map<string, string[]>()
  for (const [verb, resource, group, subresource, namespace] of needed) {
    const what = `${group ? `${resource}.${group}` : resource}${subresource ? `/${subresource}` : ''}`
    if (!(await cluster.api.canI(verb, resource, namespace, group, subresource))) {
      const where = namespace ?? SYSTEM_NAMESPACE
      missing.set(where, [...(missing.get(where) ?? []), `${verb} ${what}`])
    }
  }

  return [...missing].map(([namespace, verbs]) => `${verbs.join(', ')} in ${namespace}`).join('; ')
}

/**
 * Waits, bounded, for every control-plane pod to be Ready: a static pod just put back (by a
 * watchdog after Ctrl-C, or by revert) or restarting needs a moment before it counts as broken.
 */
async function waitForReadyPods(cluster: PivotCluster, state: PivotState): Promise<void> {
  // A self-hosted pod counts once its node's static one is gone: before that, without port
  // sharing, it is expected to wait (crash-loop) for the port.
  const handedOff = (p: V1Pod) => state.files.find((f) => f.node === p.spec?.nodeName)?.manifests[podComponent(p) as PivotedComponent] === undefined
  const unreadyOf = (mirrorPods: V1Pod[], workloadPods: V1Pod[]) =>
    [...mirrorPods, ...workloadPods.filter(handedOff)]
      .filter((p) => PIVOTED_COMPONENTS.includes(podComponent(p) as PivotedComponent) && !isReady(p))
      .map((p) => p.metadata!.name!)
  let unready = unreadyOf(state.mirrorPods, state.workloadPods)
  if (unready.length === 0) return
  cluster.log(`waiting for control-plane pod(s) ${unready.join(', ')} to become Ready`)
  await cluster
    .waitFor(
      'control-plane pods to become Ready',
      async () => {
        const now = await readState(cluster.api)
        unready = unreadyOf(now.mirrorPods, now.workloadPods)
        return unready.length === 0
      },
      Math.min(cluster.timeoutMs, PREFLIGHT_READY_WAIT_MS),
    )
    .catch(() => {
      throw new PreflightError(`control-plane pod(s) ${unready.join(', ')} not Ready: fix them first`, 'pods')
    })
}

/**
 * Waits, bounded, for the component's lease to be renewed in time: a restart of the control
 * plane (one of ours, or a watchdog's restore) loses the lease for a while.
 */
async function waitForLeader(cluster: PivotCluster, component: string): Promise<void> {
  let staleSince: number | undefined
  const fresh = async () => {
    const lease = await cluster.api.getLease(SYSTEM_NAMESPACE, component)
    const renew = lease?.spec?.renewTime ? new Date(lease.spec.renewTime).getTime() : undefined
    staleSince = lease && renew !== undefined && renew + (lease.spec?.leaseDurationSeconds ?? 15) * 1000 < cluster.now().getTime() ? renew : undefined
    return staleSince === undefined
  }

  if (await fresh()) return
  cluster.log(`waiting for a ${component} leader (the lease was last renewed ${new Date(staleSince!).toISOString()})`)
  await cluster.waitFor(`a ${component} leader`, fresh, Math.min(cluster.timeoutMs, LEASE_WAIT_MS)).catch(() => {
    throw new PreflightError(
      `the ${component} lease has not been renewed since ${new Date(staleSince!).toISOString()}: its leader is gone; fix it first`,
      'leader',
    )
  })
}
