/**
 * API objects shaped like the ones real clusters serve, built the way the cluster builds
 * them: mirror pods the way the kubelet mirrors a static manifest, workload pods the way the
 * DaemonSet/ReplicaSet controllers stamp them, leader records the way client-go writes them.
 */
import {createHash} from 'node:crypto'
import {existsSync, readFileSync, readdirSync} from 'node:fs'
import {join} from 'node:path'

import {parse as parseYaml} from 'yaml'

import type {V1DaemonSet, V1Deployment, V1Endpoints, V1Lease, V1Node, V1Pod, V1Taint} from '../../src/kube/types.js'
import type {DiscoveryInputs, HealthResponse} from '../../src/controlplane/discover.js'
import {sharedFixturesDir} from './ci.js'

export const NOW = new Date('2026-03-01T12:00:00Z')

const ago = (seconds: number, now = NOW) => new Date(now.getTime() - seconds * 1000).toISOString()
const shortHash = (text: string) => createHash('sha256').update(text).digest('hex').slice(0, 10)

/** Reads every `*.yaml` static pod manifest in a kubeadm manifests folder, keyed by pod name. */
export function loadManifests(dir: string): Map<string, V1Pod> {
  const manifests = new Map<string, V1Pod>()
  for (const file of readdirSync(dir)
    .filter((f) => f.endsWith('.yaml'))
    .sort()) {
    const pod = parseYaml(readFileSync(join(dir, file), 'utf8')) as V1Pod
    manifests.set(pod.metadata!.name!, pod)
  }

  return manifests
}

/** Kubernetes minor version from a `vX.Y.Z` string. */
export const minorOf = (version: string): number => Number(/^v?\d+\.(\d+)/.exec(version)![1])

export interface NodeOptions {
  name: string
  version: string
  controlPlane?: boolean
  ip?: string
  ready?: boolean
  /** The OS hostname when it differs from the node name (e.g. an FQDN). */
  hostname?: string
}

/** A Node labelled and tainted the way kubeadm of that version did it. */
export function node(opts: NodeOptions): V1Node {
  const minor = minorOf(opts.version)
  const labels: Record<string, string> = {'kubernetes.io/hostname': opts.hostname ?? opts.name, 'kubernetes.io/os': 'linux'}
  const taints: V1Taint[] = []
  if (opts.controlPlane) {
    // kubeadm used "master" until 1.20, both 1.20–1.23, then "control-plane" only.
    if (minor < 24) labels['node-role.kubernetes.io/master'] = ''
    if (minor >= 20) labels['node-role.kubernetes.io/control-plane'] = ''
    taints.push({key: minor < 25 ? 'node-role.kubernetes.io/master' : 'node-role.kubernetes.io/control-plane', effect: 'NoSchedule'})
  }

  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {name: opts.name, labels, uid: `uid-${opts.name}`},
    spec: {taints},
    status: {
      addresses: [
        {type: 'InternalIP', address: opts.ip ?? '10.0.0.10'},
        {type: 'Hostname', address: opts.hostname ?? opts.name},
      ],
      conditions: [{type: 'Ready', status: opts.ready === false ? 'False' : 'True'} as never],
      nodeInfo: {kubeletVersion: opts.version} as never,
    },
  }
}

export interface PodState {
  ready?: boolean
  restarts?: number
  /** A container waiting reason such as CrashLoopBackOff. */
  waiting?: string
  phase?: string
}

function podStatus(pod: V1Pod, state: PodState): V1Pod['status'] {
  const ready = state.ready !== false
  return {
    phase: state.phase ?? 'Running',
    startTime: ago(3600),
    conditions: [
      {type: 'Initialized', status: 'True'},
      {type: 'Ready', status: ready ? 'True' : 'False'},
      {type: 'ContainersReady', status: ready ? 'True' : 'False'},
      {type: 'PodScheduled', status: 'True'},
    ] as never,
    containerStatuses: (pod.spec?.containers ?? []).map((c) => ({
      name: c.name,
      image: c.image!,
      imageID: '',
      ready,
      restartCount: state.restarts ?? 0,
      started: ready,
      state: state.waiting ? {waiting: {reason: state.waiting}} : {running: {startedAt: ago(3000)}},
    })),
  }
}

/** The mirror pod the kubelet on `nodeName` creates for a static manifest. */
export function mirrorPod(manifest: V1Pod, nodeName: string, version: string, state: PodState = {}): V1Pod {
  const hash = shortHash(JSON.stringify(manifest) + nodeName)
  const pod: V1Pod = structuredClone(manifest)
  pod.metadata = {
    ...pod.metadata,
    name: `${manifest.metadata!.name}-${nodeName}`,
    namespace: 'kube-system',
    uid: `uid-${hash}`,
    annotations: {
      ...manifest.metadata?.annotations,
      'kubernetes.io/config.hash': hash,
      'kubernetes.io/config.mirror': hash,
      'kubernetes.io/config.seen': ago(3600),
      'kubernetes.io/config.source': 'file',
    },
    // Mirror pods are owned by their Node from 1.17 on.
    ...(minorOf(version) >= 17 ? {ownerReferences: [{apiVersion: 'v1', kind: 'Node', name: nodeName, uid: `uid-${nodeName}`, controller: true}]} : {}),
  }
  delete (pod.metadata as {creationTimestamp?: unknown}).creationTimestamp
  pod.spec = {...pod.spec!, nodeName}
  pod.status = podStatus(pod, state)
  return pod
}

export interface WorkloadPodsOptions {
  /** Per node: the pod's state. Nodes absent from the map run no pod. */
  nodes: Record<string, PodState>
}

/** A DaemonSet and its pods, one per listed node, as the DaemonSet controller makes them. */
export function daemonSet(
  name: string,
  template: V1Pod,
  labels: Record<string, string>,
  opts: WorkloadPodsOptions & {desired?: number},
): {daemonSet: V1DaemonSet; pods: V1Pod[]} {
  const nodes = Object.entries(opts.nodes)
  const pods = nodes.map(([nodeName, state]) => {
    const pod: V1Pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: `${name}-${shortHash(name + nodeName).slice(0, 5)}`,
        namespace: 'kube-system',
        labels: {...labels, 'controller-revision-hash': '5d8f7c9b6', 'pod-template-generation': '1'},
        ownerReferences: [{apiVersion: 'apps/v1', kind: 'DaemonSet', name, uid: `uid-${name}`, controller: true}],
      },
      spec: {...structuredClone(template.spec!), nodeName},
    }
    pod.status = podStatus(pod, state)
    return pod
  })
  const ready = nodes.filter(([, s]) => s.ready !== false).length
  const desired = opts.desired ?? nodes.length
  return {
    pods,
    daemonSet: {
      apiVersion: 'apps/v1',
      kind: 'DaemonSet',
      metadata: {name, namespace: 'kube-system', labels, generation: 1, uid: `uid-${name}`},
      spec: {selector: {matchLabels: labels}, template: {metadata: {labels}, spec: template.spec!}},
      status: {
        currentNumberScheduled: nodes.length,
        desiredNumberScheduled: desired,
        numberMisscheduled: 0,
        numberReady: ready,
        numberAvailable: ready,
        updatedNumberScheduled: nodes.length,
        observedGeneration: 1,
      },
    },
  }
}

/** A Deployment and its pods (placed on the given nodes), as the ReplicaSet controller makes them. */
export function deployment(
  name: string,
  template: V1Pod,
  labels: Record<string, string>,
  opts: WorkloadPodsOptions & {replicas?: number},
): {deployment: V1Deployment; pods: V1Pod[]} {
  const nodes = Object.entries(opts.nodes)
  const templateHash = shortHash(name).slice(0, 10)
  const pods = nodes.map(([nodeName, state], i) => {
    const pod: V1Pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: `${name}-${templateHash}-${shortHash(`${name}${i}`).slice(0, 5)}`,
        namespace: 'kube-system',
        labels: {...labels, 'pod-template-hash': templateHash},
        ownerReferences: [{apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `${name}-${templateHash}`, uid: `uid-rs-${name}`, controller: true}],
      },
      spec: {...structuredClone(template.spec!), nodeName},
    }
    pod.status = podStatus(pod, state)
    return pod
  })
  const ready = nodes.filter(([, s]) => s.ready !== false).length
  const replicas = opts.replicas ?? nodes.length
  return {
    pods,
    deployment: {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: {name, namespace: 'kube-system', labels, generation: 1, uid: `uid-${name}`},
      spec: {replicas, selector: {matchLabels: labels}, template: {metadata: {labels}, spec: template.spec!}},
      status: {replicas: nodes.length, readyReplicas: ready, availableReplicas: ready, updatedReplicas: nodes.length, observedGeneration: 1},
    },
  }
}

/** What kubeadm's pivot made of a static manifest: the same pod spec, labelled k8s-app=self-hosted-<c>. */
export function selfHosted(manifest: V1Pod, opts: WorkloadPodsOptions & {kind?: 'DaemonSet' | 'Deployment'; replicas?: number}) {
  const component = manifest.metadata!.name!
  const name = `self-hosted-${component}`
  const labels = {'k8s-app': name, component, tier: 'control-plane'}
  const template: V1Pod = {
    spec: {...structuredClone(manifest.spec!), dnsPolicy: 'ClusterFirstWithHostNet', nodeSelector: {'node-role.kubernetes.io/control-plane': ''}},
  }
  if (opts.kind === 'Deployment') {
    const made = deployment(name, template, labels, opts)
    return {workload: made.deployment, kind: 'Deployment' as const, pods: made.pods}
  }

  const made = daemonSet(name, template, labels, opts)
  return {workload: made.daemonSet, kind: 'DaemonSet' as const, pods: made.pods}
}

/** kubeadm's kube-proxy DaemonSet at a version, with its pods. */
export function kubeProxy(version: string, registry: string, opts: WorkloadPodsOptions) {
  return daemonSet(
    'kube-proxy',
    {
      spec: {
        hostNetwork: true,
        containers: [
          {name: 'kube-proxy', image: `${registry}/kube-proxy:${version}`, command: ['/usr/local/bin/kube-proxy', '--config=/var/lib/kube-proxy/config.conf']},
        ],
      },
    },
    {'k8s-app': 'kube-proxy'},
    opts,
  )
}

/** kubeadm's CoreDNS Deployment (still labelled k8s-app=kube-dns), with its pods. */
export function coreDns(image: string, opts: WorkloadPodsOptions & {replicas?: number}) {
  return deployment('coredns', {spec: {containers: [{name: 'coredns', image, args: ['-conf', '/etc/coredns/Corefile']}]}}, {'k8s-app': 'kube-dns'}, opts)
}

export interface LeaderOptions {
  holderNode: string
  /** Seconds since the last renewal. */
  renewedAgo?: number
  leaseDurationSeconds?: number
  transitions?: number
}

/**
 * When the holder took the lock: after its pod started (pods start an hour ago here), as a
 * process in that pod must have; the attribution rule refuses a holder older than the pod.
 */
const ACQUIRED_AGO = 1800

const holderIdentity = (node: string) => `${node}_${shortHash(node).slice(0, 8)}-7a1e-4c1f-9a51-2b1e0c3d4e5f`

/** The Lease client-go's leaselock writes (coordination.k8s.io/v1). */
export function lease(component: string, opts: LeaderOptions): V1Lease {
  return {
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata: {name: component, namespace: 'kube-system'},
    spec: {
      holderIdentity: holderIdentity(opts.holderNode),
      leaseDurationSeconds: opts.leaseDurationSeconds ?? 15,
      acquireTime: ago(ACQUIRED_AGO),
      renewTime: ago(opts.renewedAgo ?? 2).replace('Z', '000Z'),
      leaseTransitions: opts.transitions ?? 1,
    },
  }
}

/** The Endpoints object carrying the legacy leader annotation (clusters up to 1.19). */
export function leaderEndpoints(component: string, opts: LeaderOptions): V1Endpoints {
  return {
    apiVersion: 'v1',
    kind: 'Endpoints',
    metadata: {
      name: component,
      namespace: 'kube-system',
      annotations: {
        'control-plane.alpha.kubernetes.io/leader': JSON.stringify({
          holderIdentity: holderIdentity(opts.holderNode),
          leaseDurationSeconds: opts.leaseDurationSeconds ?? 15,
          acquireTime: ago(ACQUIRED_AGO).replace(/\.\d+Z$/, 'Z'),
          renewTime: ago(opts.renewedAgo ?? 2).replace(/\.\d+Z$/, 'Z'),
          leaderTransitions: opts.transitions ?? 1,
        }),
      },
    },
  }
}

export function healthy(endpoint: HealthResponse['endpoint'], checks = ['ping', 'log', 'etcd']): HealthResponse {
  const name = endpoint.slice(1)
  return {endpoint, status: 200, body: `${checks.map((c) => `[+]${c} ok`).join('\n')}\n${name} check passed\n`}
}

export function failing(endpoint: HealthResponse['endpoint'], failed: string, checks = ['ping', 'log']): HealthResponse {
  const name = endpoint.slice(1)
  return {
    endpoint,
    status: 500,
    body: `${checks.map((c) => `[+]${c} ok`).join('\n')}\n[-]${failed} failed: reason withheld\n${name} check failed\n`,
  }
}

export interface KubeadmClusterOptions {
  version: string
  manifestsDir: string
  controlPlaneNodes: string[]
  workers?: string[]
  registry?: string
  /** Where leader records live: Leases (1.20+), the Endpoints annotation (<= 1.16), or both (1.17–1.19). */
  leaderRecords?: 'lease' | 'endpoints' | 'both'
  leaderNode?: string
  /** Components (manifest names) that run self-hosted instead of static, and which also stay static (mid-pivot). */
  selfHosted?: string[]
  alsoStatic?: string[]
  podState?: (component: string, node: string, source: 'static' | 'workload') => PodState
}

/** The objects a kubeadm cluster of a version serves, ready for buildControlPlane or a fake API. */
export function kubeadmCluster(opts: KubeadmClusterOptions): DiscoveryInputs {
  const manifests = loadManifests(opts.manifestsDir)
  const minor = minorOf(opts.version)
  const registry = opts.registry ?? (minor >= 25 ? 'registry.k8s.io' : 'k8s.gcr.io')
  const nodes = [
    ...opts.controlPlaneNodes.map((name, i) => node({name, version: opts.version, controlPlane: true, ip: `10.0.0.${10 + i}`})),
    ...(opts.workers ?? []).map((name, i) => node({name, version: opts.version, ip: `10.0.1.${10 + i}`})),
  ]
  const state = opts.podState ?? (() => ({}))
  const pods: V1Pod[] = []
  const daemonSets: V1DaemonSet[] = []
  const deployments: V1Deployment[] = []
  for (const [component, manifest] of manifests) {
    const pivoted = opts.selfHosted?.includes(component)
    if (!pivoted || opts.alsoStatic?.includes(component)) {
      for (const cp of opts.controlPlaneNodes) pods.push(mirrorPod(manifest, cp, opts.version, state(component, cp, 'static')))
    }

    if (pivoted) {
      const made = selfHosted(manifest, {nodes: Object.fromEntries(opts.controlPlaneNodes.map((cp) => [cp, state(component, cp, 'workload')]))})
      pods.push(...made.pods)
      daemonSets.push(made.workload as V1DaemonSet)
    }
  }

  const allNodes = [...opts.controlPlaneNodes, ...(opts.workers ?? [])]
  const proxy = kubeProxy(opts.version, registry, {nodes: Object.fromEntries(allNodes.map((n) => [n, state('kube-proxy', n, 'workload')]))})
  pods.push(...proxy.pods)
  daemonSets.push(proxy.daemonSet)
  const dnsImage = minor >= 25 ? `${registry}/coredns/coredns:v1.11.3` : `${registry}/coredns:1.3.1`
  const dnsNodes = [allNodes[allNodes.length - 1], allNodes[0]]
  const dns = coreDns(dnsImage, {nodes: Object.fromEntries(dnsNodes.map((n) => [n, state('coredns', n, 'workload')]))})
  pods.push(...dns.pods)
  deployments.push(dns.deployment)

  const leaderNode = opts.leaderNode ?? opts.controlPlaneNodes[0]
  const records = opts.leaderRecords ?? (minor >= 20 ? 'lease' : minor >= 17 ? 'both' : 'endpoints')
  const elected = ['kube-controller-manager', 'kube-scheduler']
  const legacyHealth = minor < 16
  return {
    context: 'test',
    server: 'https://10.0.0.10:6443',
    version: {gitVersion: opts.version},
    pods,
    nodes,
    daemonSets,
    deployments,
    leases: records === 'endpoints' ? [] : elected.map((c) => lease(c, {holderNode: leaderNode})),
    endpoints: records === 'lease' ? [] : elected.map((c) => leaderEndpoints(c, {holderNode: leaderNode})),
    readyz: healthy(legacyHealth ? '/healthz' : '/readyz'),
    livez: healthy(legacyHealth ? '/healthz' : '/livez'),
  }
}

/** Every Lease renewed just now, so the leader records are fresh whenever the test runs. */
export function withLeasesRenewedNow<T extends Pick<DiscoveryInputs, 'leases'>>(inputs: T): T {
  const now = new Date().toISOString()
  for (const l of inputs.leases ?? []) l.spec!.renewTime = now
  return inputs
}

/** The real-world kubeadm fixtures shared between projects, when this checkout sits next to them. */
export function sharedKubeadmFixtures(): Array<{name: string; dir: string}> {
  const root = sharedFixturesDir('kubeadm')
  if (!root) return []
  return readdirSync(root)
    .filter((d) => existsSync(join(root, d, 'kube-apiserver.yaml')))
    .sort()
    .map((name) => ({name, dir: join(root, name)}))
}
