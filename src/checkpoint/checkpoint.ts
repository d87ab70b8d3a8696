import semver from 'semver'
import {stringify as stringifyYaml} from 'yaml'

import type {V1Container, V1PodSpec, V1PodTemplateSpec} from '../kube/types.js'
import {MANAGED_BY_LABEL, MANAGED_BY_VALUE, type PivotedComponent, SYSTEM_NAMESPACE} from '../controlplane/model.js'
import {CliError} from '../errors.js'
import {boolFlag, containerArgv, securePort, versionFromImage} from '../controlplane/container.js'
import {hexPort} from '../node/listeners.js'
import {
  CHECKPOINTER_NAME,
  CHECKPOINTER_ROLE,
  CHECKPOINTER_ROLE_LABEL,
  CHECKPOINTS_ANNOTATION,
  CHECKPOINT_OF_LABEL,
  CLUSTER_ANNOTATION,
  checkpointPodName,
} from './status.js'
import {CHECKPOINT_DIR, CHECKPOINT_END, CHECKPOINT_RUN_DIR, CHECKPOINTER_SCRIPT, PROBLEMS_FILE} from './scripts.js'

/**
 * Checkpoints: what a control-plane node needs to start its self-hosted control plane with no
 * API (after a power loss), rendered by the CLI from the live workloads once they passed their
 * gates there, and the static pod (the checkpointer) that starts and retires them. Pure.
 */

/** When the checkpointer acts, in seconds (see CHECKPOINTER_SCRIPT). */
export interface CheckpointTimings {
  /** No kube-apiserver listening this long (the node did not reboot): start the checkpoints. */
  grace: number
  /** The same on the checkpointer's first start since the node booted. */
  bootGrace: number
  /** The self-hosted scheduler or controller-manager listened beside the copy this long: the copy steps aside. */
  settle: number
  /**
   * The same for the kube-apiserver. A starting kube-apiserver exits if its post-start hooks do
   * not finish within a minute (the service IP repair check), and beside other listeners on a
   * shared port its loopback requests can reach another process, whose loopback certificate it
   * refuses: seen after a power loss mid-upgrade, where it died 64 s after it bound the port.
   * Listening for longer than that is the proof of life a shell can get.
   */
  apiserverSettle: number
  /** Without port sharing: the copy serves this long, then steps aside. */
  noSharingHold: number
  /** The scheduler's and controller-manager's copies go this long after the apiserver's. */
  linger: number
}

export const DEFAULT_TIMINGS: CheckpointTimings = {grace: 60, bootGrace: 10, settle: 10, apiserverSettle: 90, noSharingHold: 90, linger: 120}

/**
 * The checkpointer's requests. Measured on a real node while watching: 1.7% of a CPU (a grep
 * and a sleep forked every second), 1.7 MiB for its shell (README, "Checkpoints").
 */
export const CHECKPOINTER_RESOURCES = {requests: {cpu: '20m', memory: '8Mi'}, limits: {memory: '32Mi'}}

/** 1037002 for v1.37.2: a number dash can compare. */
export function versionNumber(version: string): number {
  const v = semver.parse(semver.coerce(version))
  if (!v) throw new CliError(`cannot read the version "${version}"`)
  return v.major * 1_000_000 + v.minor * 1000 + v.patch
}

type Container = V1Container & {command?: string[]; args?: string[]}

const allContainers = (spec: V1PodSpec) => [...(spec.initContainers ?? []), ...spec.containers] as Container[]

/** The flags of a container with one replaced or added (last occurrence wins for the components). */
function setFlag(container: Container, name: string, value: string): void {
  const list = container.args?.some((a) => a.startsWith('--')) || !container.command ? (container.args ??= []) : container.command
  const kept = list.filter((a) => a !== `--${name}` && !a.startsWith(`--${name}=`))
  list.splice(0, list.length, ...kept, `--${name}=${value}`)
}

export interface CheckpointInput {
  component: PivotedComponent
  /** The live workload's pod template (it ran Ready on this node). */
  template: V1PodTemplateSpec
  node: string
  /** What $(HOST_IP) stands for on this node. */
  nodeIP?: string
  clusterId: string
  writtenAt: Date
}

export interface RenderedCheckpoint {
  component: PivotedComponent
  version: string
  /** The checkpoint file: header comments the checkpointer checks, the static pod, the end line. */
  text: string
  /** The port the copy listens on (0: it does not serve), and whether it shares it. */
  port: number
  sharing: boolean
}

/**
 * The static pod a node starts when its API is gone: the workload's pod as it ran here, under
 * its own name and labels (the workload's selector must never match it, or its controller would
 * adopt or fight it), with $(HOST_IP) written out (the downward API needs the node's status) and
 * nothing that needs the API to start. A scheduler or controller-manager copy that cannot share
 * its port does not serve at all, so it never keeps its self-hosted pod from binding.
 */
export function renderCheckpoint(input: CheckpointInput): RenderedCheckpoint {
  const {component, node} = input
  const spec = structuredClone(input.template.spec)
  if (!spec?.containers?.length) throw new CliError(`the ${component} workload has no containers to checkpoint`)
  const main = spec.containers[0] as Container
  const version = versionFromImage(main.image)
  if (!version) throw new CliError(`cannot checkpoint ${component}: no version tag in its image "${main.image}"`)
  const needsApi = (spec.volumes ?? []).filter((v) => v.secret || v.configMap || v.projected || v.persistentVolumeClaim || v.downwardAPI).map((v) => v.name)
  for (const c of allContainers(spec)) {
    for (const e of c.env ?? []) if (e.valueFrom?.configMapKeyRef || e.valueFrom?.secretKeyRef) needsApi.push(`env ${e.name}`)
    for (const e of c.envFrom ?? []) needsApi.push(`envFrom ${e.configMapRef?.name ?? e.secretRef?.name ?? ''}`)
  }

  if (needsApi.length > 0) throw new CliError(`cannot checkpoint ${component}: ${needsApi.join(', ')} need the API to start (checkpoints hold host paths only)`)

  for (const c of allContainers(spec)) {
    const hostIP = (c.env ?? []).find((e) => e.name === 'HOST_IP' && e.valueFrom?.fieldRef?.fieldPath === 'status.hostIP')
    if (hostIP) {
      if (!input.nodeIP) throw new CliError(`cannot checkpoint ${component} on ${node}: its pod uses $(HOST_IP) and the node's IP is unknown`)
      const fill = (a: string) => a.replaceAll('$(HOST_IP)', input.nodeIP!)
      if (c.command) c.command = c.command.map(fill)
      if (c.args) c.args = c.args.map(fill)
      c.env = (c.env ?? []).filter((e) => e !== hostIP).map((e) => (e.value === undefined ? e : {...e, value: fill(e.value)}))
      if (c.env.length === 0) delete c.env
    }
  }

  const sharing = boolFlag(containerArgv(main), 'permit-port-sharing', false)
  let port = securePort(component, main)
  if (component !== 'kube-apiserver' && !sharing) {
    // No SO_REUSEPORT before 1.19: the copy serves nothing, so the self-hosted pod can bind.
    setFlag(main, 'secure-port', '0')
    if (semver.lt(version, '1.24.0')) setFlag(main, 'port', '0')
    delete main.livenessProbe
    delete main.readinessProbe
    delete main.startupProbe
    port = 0
  }

  delete spec.nodeSelector
  delete spec.affinity
  delete (spec as {topologySpreadConstraints?: unknown}).topologySpreadConstraints
  delete spec.nodeName
  // The API refuses a mirror pod that names a service account (admission), and none is needed.
  delete spec.serviceAccountName
  delete (spec as {serviceAccount?: string}).serviceAccount
  const pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: checkpointPodName(component),
      namespace: SYSTEM_NAMESPACE,
      labels: {[CHECKPOINT_OF_LABEL]: component, [MANAGED_BY_LABEL]: MANAGED_BY_VALUE},
      annotations: {[CLUSTER_ANNOTATION]: input.clusterId},
    },
    spec,
  }
  const header = [
    `# kubectl-selfhost checkpoint of ${component} on ${node}: started by the checkpointer when no kube-apiserver serves here`,
    `# cluster ${input.clusterId}`,
    `# version ${version} ${versionNumber(version)}`,
    `# written ${input.writtenAt.toISOString()}`,
  ]
  return {component, version, port, sharing, text: `${header.join('\n')}\n${stringifyYaml(pod)}${CHECKPOINT_END}\n`}
}

export interface CheckpointerInput {
  image: string
  clusterId: string
  checkpoints: RenderedCheckpoint[]
  writtenAt: Date
  timings?: CheckpointTimings
}

/** The checkpointer's static pod manifest for one node; its annotation tells `status` what it guards. */
export function renderCheckpointer(input: CheckpointerInput): string {
  const t = input.timings ?? DEFAULT_TIMINGS
  const apiserver = input.checkpoints.find((c) => c.component === 'kube-apiserver')
  if (!apiserver) throw new CliError('a checkpointer needs a kube-apiserver checkpoint')
  const others = input.checkpoints.filter((c) => c.component !== 'kube-apiserver')
  const env = {
    CLUSTER: input.clusterId,
    APISERVER_PORT: hexPort(apiserver.port),
    OTHERS: others.map((c) => `${c.component}:${c.port === 0 ? 0 : hexPort(c.port)}`).join(' '),
    SHARING: apiserver.sharing ? '1' : '0',
    GRACE: String(t.grace),
    BOOT_GRACE: String(t.bootGrace),
    SETTLE: String(t.settle),
    APISERVER_SETTLE: String(t.apiserverSettle),
    NO_SHARING_HOLD: String(t.noSharingHold),
    LINGER: String(t.linger),
  }
  const guarded = Object.fromEntries(input.checkpoints.map((c) => [c.component, {version: c.version, written: input.writtenAt.toISOString()}]))
  const pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: CHECKPOINTER_NAME,
      namespace: SYSTEM_NAMESPACE,
      labels: {[CHECKPOINTER_ROLE_LABEL]: CHECKPOINTER_ROLE, [MANAGED_BY_LABEL]: MANAGED_BY_VALUE},
      annotations: {[CLUSTER_ANNOTATION]: input.clusterId, [CHECKPOINTS_ANNOTATION]: JSON.stringify(guarded)},
    },
    spec: {
      // The node's own sockets: /proc/net/tcp is the reader's network namespace.
      hostNetwork: true,
      priorityClassName: 'system-node-critical',
      tolerations: [{operator: 'Exists'}],
      terminationGracePeriodSeconds: 1,
      containers: [
        {
          name: 'checkpointer',
          image: input.image,
          imagePullPolicy: 'IfNotPresent',
          command: ['sh', '-c', CHECKPOINTER_SCRIPT],
          env: Object.entries(env).map(([name, value]) => ({name, value})),
          resources: CHECKPOINTER_RESOURCES,
          readinessProbe: {exec: {command: ['sh', '-c', `test ! -s ${PROBLEMS_FILE}`]}, periodSeconds: 10, initialDelaySeconds: 2},
          volumeMounts: [
            {name: 'kubernetes', mountPath: '/host/etc/kubernetes'},
            {name: 'run', mountPath: CHECKPOINT_RUN_DIR},
          ],
        },
      ],
      volumes: [
        {name: 'kubernetes', hostPath: {path: '/etc/kubernetes', type: 'Directory'}},
        {name: 'run', hostPath: {path: CHECKPOINT_RUN_DIR, type: 'DirectoryOrCreate'}},
      ],
    },
  }
  return `# kubectl-selfhost checkpointer: keeps ${CHECKPOINT_DIR} ready to start when no kube-apiserver serves on this node\n${stringifyYaml(pod)}`
}
