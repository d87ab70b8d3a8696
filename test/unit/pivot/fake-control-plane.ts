import {execFile} from 'node:child_process'
import {mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync} from 'node:fs'
import http from 'node:http'
import type {AddressInfo} from 'node:net'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import type {V1DaemonSet, V1Deployment, V1Lease, V1Node, V1Pod} from '@kubernetes/client-node'
import {parse as parseYaml} from 'yaml'

import type {NodeTask, NodeTaskResult} from '../../../src/node/runner.js'
import type {PivotClusterApi} from '../../../src/pivot/execute.js'

/**
 * A control plane as pivot sees it, small enough to reason about: each node has a real
 * directory as its "/", the node tasks' shell scripts run for real against it, and mirror pods
 * are derived from the manifest files the way a kubelet derives them. Workloads applied through
 * the fake get one Ready pod per node (DaemonSet) or per replica, spread (Deployment).
 */
export class FakeControlPlane {
  readonly roots = new Map<string, string>()
  readonly workloads = new Map<string, {kind: string; object: V1DaemonSet | V1Deployment | Record<string, unknown>}>()
  /** Components whose self-hosted pods never become Ready (a broken image). */
  readonly brokenComponents = new Set<string>()
  /** Every mutating call, in order, for assertions about what was (not) done. */
  readonly calls: string[] = []
  apiHealthy = true
  denied = new Set<string>()
  /** Answer of the local apiserver the node-side watchdog asks. */
  localApiserverStatus = 200
  /** The self-hosted apiserver never serves: the local apiserver stops answering once a hand-off starts. */
  newApiserverBroken = false
  private server?: http.Server
  healthUrl = ''

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

  async startLocalApiserver(): Promise<void> {
    this.server = http.createServer((_req, res) => {
      res.statusCode = this.localApiserverStatus
      res.end(this.localApiserverStatus === 200 ? 'ok' : 'not ready')
    })
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r))
    this.healthUrl = `http://127.0.0.1:${(this.server!.address() as AddressInfo).port}/readyz`
  }

  async stop(): Promise<void> {
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()))
  }

  manifestFiles(node: string): Map<string, string> {
    const dir = join(this.roots.get(node)!, 'etc/kubernetes/manifests')
    return new Map(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f), 'utf8')]))
  }

  backupDirs(node: string): string[] {
    try {
      return readdirSync(join(this.roots.get(node)!, 'etc/kubernetes/selfhost-backup')).sort()
    } catch {
      return []
    }
  }

  backupFile(node: string, stamp: string, name: string): string {
    return readFileSync(join(this.roots.get(node)!, 'etc/kubernetes/selfhost-backup', stamp, name), 'utf8')
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
            annotations: {'kubernetes.io/config.mirror': 'hash', 'kubernetes.io/config.source': 'file'},
          },
          spec: {...pod.spec!, nodeName: node},
          status: {phase: 'Running', conditions: [{type: 'Ready', status: this.stillUnready(`${pod.metadata!.name}-${node}`) ? 'False' : 'True'}]},
        })
      }
    }

    return pods
  }

  private workloadPods(): V1Pod[] {
    const pods: V1Pod[] = []
    for (const {kind, object} of this.workloads.values()) {
      if (kind !== 'DaemonSet' && kind !== 'Deployment') continue
      const w = object as V1DaemonSet
      const labels = w.spec!.template.metadata!.labels!
      const placements = kind === 'DaemonSet' ? this.nodes : Array.from({length: (object as V1Deployment).spec!.replicas ?? 1}, (_, i) => this.nodes[i % this.nodes.length])
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
    listPods: async (_namespace, selectors = {}) => {
      let pods = [...this.mirrorPods(), ...this.workloadPods()]
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
    raw: async () => ({status: this.apiHealthy ? 200 : 500, body: ''}),
    getLease: async (_namespace, name) =>
      ({spec: {holderIdentity: `${this.nodes[0]}_0a1b`, leaseDurationSeconds: 15, renewTime: new Date().toISOString() as unknown as Date}, metadata: {name}}) as V1Lease,
  }

  /** Runs a node task's shell script for real, with the node's directory as HOST_ROOT. */
  runTask = (task: NodeTask): Promise<NodeTaskResult> => {
    this.calls.push(`task ${task.purpose} ${task.node}`)
    if (this.newApiserverBroken && task.purpose === 'pivot-handoff' && task.env?.COMPONENT === 'kube-apiserver') this.localApiserverStatus = 503
    const root = this.roots.get(task.node)
    if (!root) return Promise.reject(new Error(`no node ${task.node}`))
    return new Promise((resolve) => {
      execFile(task.command[0], task.command.slice(1), {env: {PATH: process.env.PATH, ...task.env, HOST_ROOT: root}}, (error, stdout, stderr) => {
        const exitCode = error ? (typeof error.code === 'number' ? error.code : 1) : 0
        resolve({exitCode, output: stdout + stderr, pod: `fake-${task.purpose}`})
      })
    })
  }
}
