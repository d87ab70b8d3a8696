import {execFile} from 'node:child_process'
import {existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {parse as parseYaml} from 'yaml'

import type {V1DaemonSet, V1Deployment, V1Lease, V1Node, V1Pod} from '../../../src/kube/types.js'
import {isMirrorPod, selfHostedComponentOf} from '../../../src/controlplane/model.js'
import {ApiStatusError} from '../../../src/kube/errors.js'
import {NODE_TASK_LABEL, NODE_TASK_POD_ENV, type NodeTask, type NodeTaskResult} from '../../../src/node/runner.js'
import type {PivotClusterApi} from '../../../src/pivot/cluster.js'
import {distrolessPath} from '../../helpers/distroless-tools.js'
import {simulatedProcNetTcp} from '../../helpers/sockets.js'

/**
 * A control plane as pivot sees it, small enough to reason about: each node has a real
 * directory as its "/", the node tasks' shell scripts run for real against it, and mirror pods
 * are derived from the manifest files the way a kubelet derives them. Workloads applied through
 * the fake get one Ready pod per node (DaemonSet) or per replica, spread (Deployment).
 */
export const FAKE_CLUSTER_UID = '5d7c1f0a-0000-4000-8000-00000000f4ce'

export class FakeControlPlane {
  readonly roots = new Map<string, string>()
  readonly workloads = new Map<string, {kind: string; object: V1DaemonSet | V1Deployment | Record<string, unknown>}>()
  /** Components whose self-hosted pods never become Ready (a broken image). */
  readonly brokenComponents = new Set<string>()
  /** Components whose self-hosted pods get Ready but never listen on their port (the probes reach the static one). */
  readonly silentComponents = new Set<string>()
  /** Every mutating call, in order, for assertions about what was (not) done. */
  readonly calls: string[] = []
  apiHealthy = true
  denied = new Set<string>()
  /** Namespaces where this CLI may not get, list or delete pods (403), as with RBAC bound elsewhere. */
  readonly podsForbiddenIn = new Set<string>()
  /** The self-hosted apiserver never serves: the API stops answering while a node's static one is gone. */
  newApiserverBroken = false
  private taskCount = 0
  /** Node tasks still running, by pod name. */
  readonly running = new Map<string, {task: NodeTask; kill: () => void}>()
  /** Tools the node-task image lacks (it always lacks everything but the distroless-iptables set). */
  missingTools: string[] = []

  constructor(
    readonly nodes: string[],
    private readonly role: 'control-plane' | 'master' = 'control-plane',
  ) {}

  /** Writes each node's static manifests from a fixture directory, rendering the node's own IP. */
  install(fixtureDir: string, fixtureIP: string): Map<string, Map<string, string>> {
    const originals = new Map<string, Map<string, string>>()
    const base = mkdtempSync(join(tmpdir(), 'pivot-nodes-'))
    this.nodes.forEach((node, i) => {
      const root = join(base, node)
      mkdirSync(join(root, 'etc/kubernetes/manifests'), {recursive: true})
      this.roots.set(node, root)
      const files = new Map<string, string>()
      for (const name of readdirSync(fixtureDir).filter((f) => f.endsWith('.yaml'))) {
        const bytes = readFileSync(join(fixtureDir, name), 'utf8').replaceAll(fixtureIP, this.ip(i))
        writeFileSync(join(root, 'etc/kubernetes/manifests', name), bytes)
        files.set(name, bytes)
      }

      originals.set(node, files)
    })
    return originals
  }

  ip(index: number): string {
    return `10.0.0.${10 + index}`
  }

  manifestFiles(node: string): Map<string, string> {
    const dir = join(this.roots.get(node)!, 'etc/kubernetes/manifests')
    return new Map(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f), 'utf8')]))
  }

  backupDirs(node: string): string[] {
    try {
      return readdirSync(join(this.roots.get(node)!, 'etc/kubernetes/selfhost/backup')).sort()
    } catch {
      return []
    }
  }

  /** Backup directories that revert marked as put back. */
  retiredBackups(node: string): string[] {
    return this.backupDirs(node).filter((d) => existsSync(join(this.roots.get(node)!, 'etc/kubernetes/selfhost/backup', d, 'REVERTED')))
  }

  backupFile(node: string, stamp: string, name: string): string {
    return readFileSync(join(this.roots.get(node)!, 'etc/kubernetes/selfhost/backup', stamp, name), 'utf8')
  }

  /** The version /version reports: the running kube-apiserver's image tag. */
  private servedVersion(): string {
    const images = [...this.workloads.values()].flatMap((w) => ((w.object as V1DaemonSet).spec?.template?.spec?.containers ?? []).map((c) => c.image ?? ''))
    for (const node of this.nodes) {
      const bytes = this.manifestFiles(node).get('kube-apiserver.yaml')
      if (bytes) images.push((parseYaml(bytes) as V1Pod).spec!.containers[0].image ?? '')
    }

    const tag = images
      .find((i) => i.includes('kube-apiserver:'))
      ?.split(':')
      .pop()
    return tag ?? 'v0.0.0'
  }

  /** Whether some node's static apiserver is gone (handed off, or held by a watchdog). */
  private apiserverHandedOff(): boolean {
    return this.nodes.some((n) => !this.manifestFiles(n).has('kube-apiserver.yaml'))
  }

  private nodeObject(name: string, index: number): V1Node {
    const key = `node-role.kubernetes.io/${this.role}`
    return {
      metadata: {name, labels: {[key]: '', 'kubernetes.io/hostname': name}},
      spec: {taints: [{key, effect: 'NoSchedule'}]},
      status: {addresses: [{type: 'InternalIP', address: this.ip(index)}], conditions: [{type: 'Ready', status: 'True'}]},
    }
  }

  /** Mirror pods (by name) that report not Ready for this many more pod lists. */
  readonly mirrorUnreadyFor = new Map<string, number>()

  private stillUnready(name: string): boolean {
    const left = this.mirrorUnreadyFor.get(name) ?? 0
    if (left > 0) this.mirrorUnreadyFor.set(name, left - 1)
    return left > 0
  }

  private mirrorPods(): V1Pod[] {
    const pods: V1Pod[] = []
    for (const node of this.nodes) {
      for (const [name, bytes] of this.manifestFiles(node)) {
        if (!name.endsWith('.yaml')) continue
        const pod = parseYaml(bytes) as V1Pod
        pods.push({
          metadata: {
            name: `${pod.metadata!.name}-${node}`,
            namespace: 'kube-system',
            labels: pod.metadata!.labels,
            annotations: {...pod.metadata!.annotations, 'kubernetes.io/config.mirror': 'hash', 'kubernetes.io/config.source': 'file'},
          },
          spec: {...pod.spec!, nodeName: node},
          status: {phase: 'Running', conditions: [{type: 'Ready', status: this.stillUnready(`${pod.metadata!.name}-${node}`) ? 'False' : 'True'}]},
        })
      }
    }

    return pods
  }

  private taskPods(): V1Pod[] {
    return [...this.running].map(([name, {task}]) => ({
      metadata: {name, namespace: task.namespace ?? 'kube-system', labels: {[NODE_TASK_LABEL]: task.purpose}},
      spec: {nodeName: task.node, containers: []},
      status: {phase: 'Running'},
    }))
  }

  private workloadPods(): V1Pod[] {
    const pods: V1Pod[] = []
    for (const {kind, object} of this.workloads.values()) {
      if (kind !== 'DaemonSet' && kind !== 'Deployment') continue
      const w = object as V1DaemonSet
      const labels = w.spec!.template.metadata!.labels!
      const placements =
        kind === 'DaemonSet' ? this.nodes : Array.from({length: (object as V1Deployment).spec!.replicas ?? 1}, (_, i) => this.nodes[i % this.nodes.length])
      const ready = !this.brokenComponents.has(labels.component)
      placements.forEach((node, i) =>
        pods.push({
          metadata: {name: `${w.metadata!.name}-${i}`, namespace: 'kube-system', labels},
          spec: {...w.spec!.template.spec!, nodeName: node},
          status: {phase: 'Running', conditions: [{type: 'Ready', status: ready ? 'True' : 'False'}]},
        }),
      )
    }

    return pods
  }

  /** The API calls pivot makes, answered from the files and the applied objects. */
  readonly api: PivotClusterApi = {
    listNodes: async () => ({items: this.nodes.map((n, i) => this.nodeObject(n, i))}),
    listPods: async (namespace, selectors = {}) => {
      this.mayTouchPodsIn(namespace)
      let pods = [...this.mirrorPods(), ...this.workloadPods(), ...this.taskPods()].filter((p) => !namespace || p.metadata?.namespace === namespace)
      const node = /^spec\.nodeName=(.+)$/.exec(selectors.fieldSelector ?? '')?.[1]
      if (node) pods = pods.filter((p) => p.spec?.nodeName === node)
      const [key, value] = (selectors.labelSelector ?? '').split('=')
      if (key) pods = pods.filter((p) => p.metadata?.labels?.[key] === value)
      return {items: pods}
    },
    listDaemonSets: async () => ({items: [...this.workloads.values()].filter((w) => w.kind === 'DaemonSet').map((w) => w.object as V1DaemonSet)}),
    listDeployments: async () => ({items: [...this.workloads.values()].filter((w) => w.kind === 'Deployment').map((w) => w.object as V1Deployment)}),
    apply: async (groupVersion, resource, object) => {
      this.calls.push(`apply ${resource}/${object.metadata!.name}`)
      this.workloads.set(`${resource}/${object.metadata!.name}`, {kind: object.kind!, object: structuredClone(object) as Record<string, unknown>})
      return object
    },
    delete: async (_groupVersion, resource, _namespace, name) => {
      this.calls.push(`delete ${resource}/${name}`)
      this.workloads.delete(`${resource}/${name}`)
    },
    canI: async (verb, resource, _namespace, _group, subresource) => !this.denied.has(`${verb} ${resource}${subresource ? `/${subresource}` : ''}`),
    raw: async (_method, path) => {
      const status = this.apiHealthy && !(this.newApiserverBroken && this.apiserverHandedOff()) ? 200 : 503
      return path === '/api/v1/namespaces/kube-system' && status === 200
        ? {status, body: JSON.stringify({metadata: {name: 'kube-system', uid: FAKE_CLUSTER_UID}})}
        : {status, body: ''}
    },
    version: async () => ({gitVersion: this.servedVersion()}) as Awaited<ReturnType<PivotClusterApi['version']>>,
    getPod: async (namespace, name) => {
      this.mayTouchPodsIn(namespace)
      const pod = [...this.mirrorPods(), ...this.workloadPods(), ...this.taskPods()].find(
        (p) => p.metadata?.namespace === namespace && p.metadata?.name === name,
      )
      if (!pod) throw new ApiStatusError(`pods "${name}" not found`, 404)
      return pod
    },
    deletePod: async (namespace, name) => {
      this.mayTouchPodsIn(namespace)
      this.calls.push(`deletePod ${name}`)
      const task = this.running.get(name)
      if (task && (task.task.namespace ?? 'kube-system') === namespace) task.kill()
    },
    getLease: async (_namespace, name) =>
      ({spec: {holderIdentity: `${this.nodes[0]}_0a1b`, leaseDurationSeconds: 15, renewTime: new Date().toISOString()}, metadata: {name}}) as V1Lease,
  }

  private mayTouchPodsIn(namespace: string | undefined): void {
    if (namespace && this.podsForbiddenIn.has(namespace))
      throw new ApiStatusError(`forbidden (403): you may not touch pods in namespace "${namespace}"`, 403, 'Forbidden')
  }

  /**
   * Runs a node task's shell script for real, with the node's directory as HOST_ROOT, the
   * directories the task asks the kubelet for made first, and only the tools of the cluster's
   * kube-proxy image on PATH.
   */
  runTask = (task: NodeTask, opts: {signal?: AbortSignal} = {}): Promise<NodeTaskResult> => {
    this.calls.push(`task ${task.purpose} ${task.node}`)
    const root = this.roots.get(task.node)
    if (!root) return Promise.reject(new Error(`no node ${task.node}`))
    for (const dir of task.hostDirs ?? []) mkdirSync(join(root, dir), {recursive: true})
    const path = distrolessPath(this.missingTools)
    const pod = `fake-${task.purpose}-${task.node}-${++this.taskCount}`
    // Sockets as at the task's start: its pods are Ready at once and stay so while it runs.
    const netFile = join(root, 'proc-net-tcp')
    writeFileSync(
      netFile,
      simulatedProcNetTcp(
        [...this.mirrorPods(), ...this.workloadPods()].filter((p) => isMirrorPod(p) || !this.silentComponents.has(selfHostedComponentOf(p) ?? '')),
        task.node,
      ),
    )
    return new Promise((resolve) => {
      const child = execFile(
        join(path, task.command[0]),
        task.command.slice(1),
        // As src/node's runner tells every task its own pod.
        {env: {PATH: path, ...task.env, [NODE_TASK_POD_ENV]: `${task.namespace ?? 'kube-system'}/${pod}`, HOST_ROOT: root, NET_FILES: netFile}},
        (error, stdout, stderr) => {
          this.running.delete(pod)
          const exitCode = error ? (typeof error.code === 'number' ? error.code : 1) : 0
          resolve({exitCode, output: stdout + stderr, pod})
        },
      )
      // A pod while it runs: listed by node-task label, stopped (SIGTERM) by its deletion.
      this.running.set(pod, {task, kill: () => child.kill('SIGTERM')})
      opts.signal?.addEventListener('abort', () => child.kill('SIGTERM'), {once: true})
    })
  }
}
