import {dirname, join} from 'node:path'
import {fileURLToPath} from 'node:url'

import nock from 'nock'

import type {V1Deployment, V1Lease, V1Pod} from '../../src/kube/types.js'
import {deployment, kubeadmCluster, lease} from './cluster-objects.js'
import {FAKE_SERVER} from './fake-cluster.js'

const here = dirname(fileURLToPath(import.meta.url))
const CONTROL_PLANE = ['cp-1', 'cp-2', 'cp-3']
const NAME = 'self-hosted-kube-scheduler'
const DEPLOYMENT_PATH = `/apis/apps/v1/namespaces/kube-system/deployments/${NAME}`

export interface FakeCluster {
  patches: Array<Record<string, unknown>>
  /** Pods the fake controller makes from now on stay not Ready (a broken rollout). */
  newPodsNeverReady: boolean
}

/**
 * A kubeadm v1.32 cluster whose scheduler was pivoted into a Deployment. The fake plays the
 * controllers: a patched replica count is seen one read later, pods appear or go on the
 * control-plane nodes in order, and the leader renews its Lease a second later on every read.
 */
export function serveCluster(startReplicas: number, opts: {leaseName?: string} = {}): FakeCluster {
  const leaseName = opts.leaseName ?? 'kube-scheduler'
  const inputs = kubeadmCluster({
    version: 'v1.32.4',
    manifestsDir: join(here, '../fixtures/kubeadm/v1.32.4'),
    controlPlaneNodes: CONTROL_PLANE,
    workers: ['worker-1'],
  })
  const schedulerManifest = inputs.pods.find((p) => p.metadata?.labels?.component === 'kube-scheduler')!
  const template: V1Pod = {
    spec: {
      ...structuredClone(schedulerManifest.spec!),
      nodeName: undefined,
      dnsPolicy: 'ClusterFirstWithHostNet',
      nodeSelector: {'node-role.kubernetes.io/control-plane': ''},
      tolerations: [{key: 'node-role.kubernetes.io/control-plane', operator: 'Exists', effect: 'NoSchedule'}],
    },
  }
  const labels = {'k8s-app': NAME, component: 'kube-scheduler', tier: 'control-plane'}
  const otherPods = inputs.pods.filter((p) => p.metadata?.labels?.component !== 'kube-scheduler')
  const fake: FakeCluster = {patches: [], newPodsNeverReady: false}
  let replicas = startReplicas
  let generation = 1
  let observed = 1
  let readyCount = startReplicas
  let resourceVersion = 100
  const lockLease: V1Lease = lease(leaseName, {holderNode: 'cp-1'})
  // Renewed just now by the wall clock, which is what the command compares against, and
  // taken by the oldest replica once it had started (4h ago).
  lockLease.spec!.renewTime = new Date().toISOString()
  lockLease.spec!.acquireTime = new Date(Date.now() - 4 * 3_600_000 + 30_000).toISOString()
  // With --leader-elect-resource-name, the default lock is a stale leftover held by cp-3.
  const leases = [
    ...inputs.leases!.map((l) => (l.metadata?.name === 'kube-scheduler' && leaseName === 'kube-scheduler' ? lockLease : l)),
    ...(leaseName === 'kube-scheduler' ? [] : [lockLease]),
  ]
  if (leaseName !== 'kube-scheduler') {
    const leftover = leases.find((l) => l.metadata?.name === 'kube-scheduler')!
    Object.assign(leftover, lease('kube-scheduler', {holderNode: 'cp-3', renewedAgo: 3600}))
    template.spec!.containers[0].command = [...template.spec!.containers[0].command!, `--leader-elect-resource-name=${leaseName}`]
  }

  const current = (): {deployment: V1Deployment; pods: V1Pod[]} => {
    // The controller acts on the read after the write, as a real one lags a little.
    if (observed < generation) {
      observed = generation
      return render(Math.min(readyCount, replicas), true)
    }

    if (!fake.newPodsNeverReady) readyCount = replicas
    else readyCount = Math.min(readyCount, replicas)
    return render(readyCount, false)
  }

  const render = (ready: number, stale: boolean) => {
    const nodes = Object.fromEntries(CONTROL_PLANE.slice(0, replicas).map((n, i) => [n, {ready: i < ready}]))
    const made = deployment(NAME, template, labels, {nodes, replicas})
    made.deployment.metadata!.generation = generation
    made.deployment.metadata!.labels = {...labels, 'app.kubernetes.io/managed-by': 'kubectl-selfhost'}
    made.deployment.metadata!.resourceVersion = String(resourceVersion)
    made.deployment.status!.observedGeneration = stale ? generation - 1 : generation
    // Up 4h, 2h, 1h: each a power of two apart, so the ReplicaSet ranking tells them apart.
    made.pods.forEach((p, i) => {
      p.status!.startTime = new Date(Date.now() - (4 * 3_600_000) / 2 ** i).toISOString().replace(/\.\d+Z$/, 'Z')
    })
    return made
  }

  const renew = () => {
    lockLease.spec!.renewTime = new Date(Date.parse(lockLease.spec!.renewTime!) + 1000).toISOString()
    return lockLease
  }

  nock(FAKE_SERVER)
    .persist()
    .get('/version')
    .reply(200, {gitVersion: 'v1.32.4', major: '1', minor: '32'})
    .get('/api/v1/namespaces/kube-system/pods')
    .reply(200, () => ({items: [...otherPods, ...current().pods]}))
    .get('/api/v1/nodes')
    .reply(200, {items: inputs.nodes})
    .get('/apis/apps/v1/namespaces/kube-system/daemonsets')
    .reply(200, {items: inputs.daemonSets})
    .get('/apis/apps/v1/namespaces/kube-system/deployments')
    .reply(200, () => ({items: [...inputs.deployments, current().deployment]}))
    .get(DEPLOYMENT_PATH)
    .reply(200, () => current().deployment)
    .get('/apis/coordination.k8s.io/v1/namespaces/kube-system/leases')
    .reply(200, () => ({items: leases}))
    .get(`/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/${leaseName}`)
    .reply(200, () => renew())
    .get('/readyz')
    .query(true)
    .reply(200, inputs.readyz.body)
    .get('/livez')
    .query(true)
    .reply(200, inputs.livez.body)
    .patch(DEPLOYMENT_PATH)
    .query({fieldManager: 'kubectl-selfhost'})
    .reply(function (_uri, body) {
      // nock parses only application/json bodies; a merge patch arrives as text.
      const patch = (typeof body === 'string' ? JSON.parse(body) : body) as {metadata?: {resourceVersion?: string}; spec: {replicas: number}}
      if (this.req.headers['content-type'] !== 'application/merge-patch+json') return [415, {kind: 'Status', message: 'expected a JSON merge patch'}]
      fake.patches.push(patch as Record<string, unknown>)
      if (patch.metadata?.resourceVersion && patch.metadata.resourceVersion !== String(resourceVersion)) {
        return [409, {kind: 'Status', reason: 'Conflict', message: 'the object has been modified'}]
      }

      replicas = patch.spec.replicas
      generation++
      resourceVersion++
      return [200, render(Math.min(readyCount, replicas), true).deployment]
    })
  return fake
}
