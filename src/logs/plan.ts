import {CliError} from '../errors.js'
import {CONTROL_PLANE_COMPONENTS, ComponentName, ControlPlane, LEADER_ELECTED_COMPONENTS} from '../controlplane/model.js'

/** One log stream to read: a container of one instance, and the prefix its lines get. */
export interface LogTarget {
  namespace: string
  pod: string
  node: string
  /** Undefined lets the API pick the pod's only container. */
  container?: string
  /** `[node/pod]`, as every line is prefixed. */
  prefix: string
}

export interface LogSelection {
  component: ComponentName
  /** Only the instance that holds the leader lock. */
  leader?: boolean
  /** A container name instead of the component's own. */
  container?: string
}

/** Accepts the names people type: `kube-scheduler`, `scheduler`, `dns`. */
const SHORT_NAMES: Record<string, ComponentName> = {
  apiserver: 'kube-apiserver',
  'controller-manager': 'kube-controller-manager',
  kcm: 'kube-controller-manager',
  scheduler: 'kube-scheduler',
  proxy: 'kube-proxy',
  dns: 'coredns',
  'kube-dns': 'coredns',
}

/** Resolves what the user typed to a component, or fails with the list of known ones. */
export function parseComponentName(text: string): ComponentName {
  const name = text.trim().toLowerCase()
  if ((CONTROL_PLANE_COMPONENTS as readonly string[]).includes(name)) return name as ComponentName
  if (name in SHORT_NAMES) return SHORT_NAMES[name]
  throw new CliError(`unknown component "${text}"; known components: ${CONTROL_PLANE_COMPONENTS.join(', ')}`)
}

/**
 * Which containers to read for a component: every instance (static and self-hosted alike),
 * or only the leader's. Fails with one line when there is nothing to read.
 */
export function planLogTargets(plane: ControlPlane, selection: LogSelection): LogTarget[] {
  const component = plane.components.find((c) => c.name === selection.component)
  if (!component || component.instances.length === 0) {
    throw new CliError(`${selection.component} has no pods in this cluster (it runs outside it, or is missing); there are no logs to read`)
  }

  let instances = component.instances
  if (selection.leader) {
    if (!(LEADER_ELECTED_COMPONENTS as readonly string[]).includes(component.name)) {
      throw new CliError(`--leader: ${component.name} does not elect a leader (only ${LEADER_ELECTED_COMPONENTS.join(', ')} do)`)
    }

    const leader = component.leader
    if (!leader) throw new CliError(`--leader: ${component.name} has no leader record (Lease, Endpoints or ConfigMap)`)
    if (!leader.pod) throw new CliError(`--leader: the leader ${leader.holder} is none of the ${component.name} pods seen`)
    instances = instances.filter((i) => i.pod === leader.pod)
  }

  return instances.map((i) => ({
    namespace: i.namespace,
    pod: i.pod,
    node: i.node,
    container: selection.container ?? i.container,
    prefix: `[${i.node || '<none>'}/${i.pod}]`,
  }))
}
