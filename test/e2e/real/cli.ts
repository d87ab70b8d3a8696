import {join} from 'node:path'

import {execa} from 'execa'

import {repoRoot} from '../../helpers/build.js'
import type {RealCluster, RealNode} from '../cluster/real-cluster.js'
import type {PollerReport} from './api-poller.js'

/** What the real-node suites read of a pod (kubectl's JSON). */
export interface Pod {
  metadata: {name: string; labels?: Record<string, string>; uid: string}
  spec: {nodeName?: string}
  status: {
    phase?: string
    startTime?: string
    podIP?: string
    conditions?: Array<{type: string; status: string}>
    containerStatuses?: Array<{containerID?: string; restartCount: number; ready: boolean; state?: {running?: {startedAt: string}}}>
  }
}

export const ready = (p: Pod) => p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false

/**
 * What every real suite reads through kubectl: any object as JSON, the kube-system pods, and the
 * node-task pods left in any namespace. `cluster` is asked at each call (suites start theirs in `before`).
 */
export function clusterQueries(cluster: () => Pick<RealCluster, 'kubectl'>) {
  const kubectlJson = async <T>(args: string[]) => JSON.parse(await cluster().kubectl([...args, '-o', 'json'])) as T
  return {
    kubectlJson,
    systemPods: async () => (await kubectlJson<{items: Pod[]}>(['get', 'pods', '-n', 'kube-system'])).items,
    leftoverTasks: async () =>
      (await kubectlJson<{items: Pod[]}>(['get', 'pods', '-A', '-l', 'selfhost.kubectl.io/node-task'])).items.map((p) => p.metadata.name),
  }
}

/** The pid containerd reports for the container of the pod's first container on its node, if it runs. */
export async function containerPid(node: RealNode, pod: Pod): Promise<string | undefined> {
  const id = pod.status.containerStatuses![0].containerID!.replace('containerd://', '')
  return new RegExp(`^${id}\\s+(\\d+)\\s+RUNNING`, 'm').exec((await node.exec(['ctr', '-n', 'k8s.io', 'tasks', 'ls'])).stdout)?.[1]
}

/** The processes listening on a TCP port of the node, as "comm:pid" (the kernel cuts comm to 15 characters: "kube-controller"). */
export async function listenerPids(node: RealNode, port: number): Promise<Set<string>> {
  const listeners = (await node.exec(['ss', '-Hltnp', `sport = :${port}`])).stdout
  return new Set([...listeners.matchAll(/"([^"]+)",pid=(\d+)/g)].map((m) => `${m[1]}:${m[2]}`))
}

/** How many checkpoint copies the node's kubelet has in its manifest directory (the checkpointer started them). */
export async function checkpointCopies(node: RealNode): Promise<number> {
  return Number((await node.exec(['sh', '-c', 'ls /etc/kubernetes/manifests/ | grep -c "^selfhost-checkpoint-" || true'])).stdout.trim())
}

/** Runs the built CLI; stderr lines are stamped with the time they arrived. */
export async function selfhost(kubeconfig: string, args: string[], opts: {onLine?: (line: string) => void} = {}) {
  const started = Date.now()
  const child = execa(process.execPath, [join(repoRoot, 'bin', 'run.js'), ...args], {
    env: {...process.env, KUBECONFIG: kubeconfig, NO_COLOR: '1'},
    reject: false,
  })
  const lines: Array<{atMs: number; line: string}> = []
  child.stderr?.on('data', (chunk: Buffer) => {
    for (const line of chunk.toString().split('\n').filter(Boolean)) {
      lines.push({atMs: Date.now() - started, line})
      opts.onLine?.(line)
    }
  })
  const result = await child
  return {exitCode: result.exitCode, stdout: String(result.stdout), stderr: String(result.stderr), lines, seconds: (Date.now() - started) / 1000, child}
}

export function describeReport(r: PollerReport): string {
  return `${r.failures} failed of ${r.requests} requests (${
    Object.entries(r.byKind)
      .map(([k, n]) => `${n} ${k}`)
      .join(', ') || 'none'
  }), longest gap ${(r.longestGapMs / 1000).toFixed(1)}s`
}

/** Figures a suite prints as it goes and once more at the end, for README and the notes. */
export function figureLog(title: string) {
  const figures: string[] = []
  return {
    note(line: string) {
      figures.push(line)
      console.log(`      figure: ${line}`)
    },
    print() {
      if (figures.length > 0) console.log(`\n      ${title}:\n${figures.map((f) => `        - ${f}`).join('\n')}\n`)
    },
  }
}
