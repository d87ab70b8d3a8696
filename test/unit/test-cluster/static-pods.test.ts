import {strict as assert} from 'node:assert'
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import type {V1Pod} from '../../../src/kube/types.js'
import {parse} from 'yaml'

import {controlPlaneMarks} from '../../e2e/cluster/harness.js'
import {imageName, isNodeTask, mirrorPodFor, readStaticPods} from '../../e2e/cluster/kubelet.js'
import {kwokConfigYaml} from '../../e2e/cluster/kwok.js'
import {staticManifests} from '../../e2e/cluster/manifests.js'

const members = [
  {name: 'cp-1', ip: '127.1.0.11'},
  {name: 'cp-2', ip: '127.1.0.12'},
]
const manifestsFor = (kubeadmVersion: string, nodeName = 'cp-2') =>
  Object.fromEntries(
    Object.entries(
      staticManifests({
        kubeadmVersion,
        nodeName,
        nodeIp: members.find((m) => m.name === nodeName)!.ip,
        etcdMembers: members,
        serviceCidr: '10.96.0.0/12',
        podCidr: '10.244.0.0/16',
      }),
    ).map(([file, text]) => [file, parse(text) as V1Pod]),
  )

describe('test cluster: kubeadm-style static manifests', () => {
  it('writes the four kubeadm files, each a kube-system Pod labelled component/tier', () => {
    const pods = manifestsFor('v1.37.2')
    assert.deepEqual(Object.keys(pods).sort(), ['etcd.yaml', 'kube-apiserver.yaml', 'kube-controller-manager.yaml', 'kube-scheduler.yaml'])
    for (const [file, pod] of Object.entries(pods)) {
      assert.equal(pod.kind, 'Pod')
      assert.equal(`${pod.metadata!.name}.yaml`, file)
      assert.equal(pod.metadata!.namespace, 'kube-system')
      assert.deepEqual(pod.metadata!.labels, {component: pod.metadata!.name, tier: 'control-plane'})
      assert.equal(pod.spec!.hostNetwork, true)
      assert.equal(pod.spec!.priorityClassName, 'system-node-critical')
    }
  })

  it("puts the node's own IP where kubeadm does (advertise address, probes, etcd URLs)", () => {
    const pods = manifestsFor('v1.37.2')
    const apiserver = pods['kube-apiserver.yaml']
    assert.ok(apiserver.spec!.containers[0].command!.includes('--advertise-address=127.1.0.12'))
    assert.equal(apiserver.spec!.containers[0].livenessProbe!.httpGet!.host, '127.1.0.12')
    assert.equal(apiserver.metadata!.annotations!['kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint'], '127.1.0.12:6443')
    const etcd = pods['etcd.yaml'].spec!.containers[0].command!
    // A joined member names the members before it and itself, and joins an existing cluster.
    assert.ok(etcd.includes('--initial-cluster=cp-1=https://127.1.0.11:2380,cp-2=https://127.1.0.12:2380'))
    assert.ok(etcd.includes('--initial-cluster-state=existing'))
    const first = manifestsFor('v1.37.2', 'cp-1')['etcd.yaml'].spec!.containers[0].command!
    assert.ok(first.includes('--initial-cluster=cp-1=https://127.1.0.11:2380'))
    assert.ok(!first.some((flag) => flag.startsWith('--initial-cluster-state')))
  })

  it('follows the version asked: registry, image tags, probe paths, insecure port', () => {
    const modern = manifestsFor('v1.37.2')
    assert.equal(modern['kube-apiserver.yaml'].spec!.containers[0].image, 'registry.k8s.io/kube-apiserver:v1.37.2')
    assert.equal(modern['kube-scheduler.yaml'].spec!.containers[0].livenessProbe!.httpGet!.path, '/livez')
    assert.equal(modern['kube-scheduler.yaml'].spec!.containers[0].livenessProbe!.httpGet!.port, 10259)
    const old = manifestsFor('v1.15.0')
    assert.equal(old['kube-apiserver.yaml'].spec!.containers[0].image, 'k8s.gcr.io/kube-apiserver:v1.15.0')
    assert.ok(old['kube-apiserver.yaml'].spec!.containers[0].command!.includes('--insecure-port=0'))
    assert.equal(old['kube-scheduler.yaml'].spec!.containers[0].livenessProbe!.httpGet!.port, 10251)
    assert.equal(old['kube-scheduler.yaml'].spec!.containers[0].livenessProbe!.httpGet!.path, '/healthz')
    assert.equal(old['kube-apiserver.yaml'].spec!.priority, undefined)
    assert.match(old['etcd.yaml'].spec!.containers[0].image!, /^k8s\.gcr\.io\/etcd:3\.3\./)
  })

  it('marks control-plane nodes as kubeadm of each era did', () => {
    assert.deepEqual(controlPlaneMarks('v1.15.0'), {
      labels: {'node-role.kubernetes.io/master': ''},
      taints: [{key: 'node-role.kubernetes.io/master', effect: 'NoSchedule'}],
    })
    const v122 = controlPlaneMarks('v1.22.0')
    assert.deepEqual(Object.keys(v122.labels).sort(), [
      'node-role.kubernetes.io/control-plane',
      'node-role.kubernetes.io/master',
      'node.kubernetes.io/exclude-from-external-load-balancers',
    ])
    assert.deepEqual(
      v122.taints.map((t) => t.key),
      ['node-role.kubernetes.io/master'],
    )
    assert.deepEqual(
      controlPlaneMarks('v1.24.3').taints.map((t) => t.key),
      ['node-role.kubernetes.io/master', 'node-role.kubernetes.io/control-plane'],
    )
    const v137 = controlPlaneMarks('v1.37.2')
    assert.deepEqual(v137.taints, [{key: 'node-role.kubernetes.io/control-plane', effect: 'NoSchedule'}])
    assert.equal(v137.labels['node-role.kubernetes.io/master'], undefined)
  })
})

describe("test cluster: the kubelet loop's pure parts", () => {
  const node = {name: 'cp-1', uid: 'uid-1', ip: '127.1.0.11', root: '/nowhere'}

  it('reads a manifests dir as the kubelet does: hidden files and non-pods skipped, hash follows the content', () => {
    const dir = mkdtempSync(join(tmpdir(), 'static-pods-'))
    try {
      writeFileSync(
        join(dir, 'a.yaml'),
        'apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: kube-system}\nspec: {containers: [{name: a, image: x:1}]}\n',
      )
      writeFileSync(join(dir, '.a.yaml.swp'), 'garbage')
      writeFileSync(join(dir, 'b.yaml'), 'kind: ConfigMap\nmetadata: {name: b}\n')
      writeFileSync(join(dir, 'c.yaml'), ': not yaml: [')
      const errors: string[] = []
      const pods = readStaticPods(dir, 'cp-1', (m) => errors.push(m))
      assert.deepEqual([...pods.keys()], ['kube-system/a-cp-1'])
      assert.equal(errors.length, 2)
      const before = pods.get('kube-system/a-cp-1')!.hash
      assert.match(before, /^[0-9a-f]{32}$/)
      writeFileSync(
        join(dir, 'a.yaml'),
        'apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: kube-system}\nspec: {containers: [{name: a, image: x:2}]}\n',
      )
      assert.notEqual(readStaticPods(dir, 'cp-1', () => undefined).get('kube-system/a-cp-1')!.hash, before)
      assert.notEqual(readStaticPods(dir, 'cp-2', () => undefined).get('kube-system/a-cp-2')!.hash, before)
    } finally {
      rmSync(dir, {recursive: true, force: true})
    }
  })

  it('builds the mirror pod: name-node, mirror annotations, owned by the Node, pinned, tolerating NoExecute', () => {
    const staticPod = manifestsFor('v1.37.2', 'cp-1')['kube-scheduler.yaml']
    const mirror = mirrorPodFor(staticPod, 'abc', node, new Date('2026-01-01T00:00:00Z'))
    assert.equal(mirror.metadata!.name, 'kube-scheduler-cp-1')
    assert.deepEqual(mirror.metadata!.annotations, {
      'kubernetes.io/config.mirror': 'abc',
      'kubernetes.io/config.hash': 'abc',
      'kubernetes.io/config.source': 'file',
      'kubernetes.io/config.seen': '2026-01-01T00:00:00.000Z',
    })
    assert.deepEqual(mirror.metadata!.ownerReferences, [{apiVersion: 'v1', kind: 'Node', name: 'cp-1', uid: 'uid-1', controller: true}])
    assert.equal(mirror.spec!.nodeName, 'cp-1')
    assert.deepEqual(mirror.spec!.tolerations, [{operator: 'Exists', effect: 'NoExecute'}])
    assert.equal(staticPod.spec!.nodeName, undefined, 'the static pod itself is not changed')
  })

  it('tells node tasks by their node-task label only, and names images without registry or tag', () => {
    assert.equal(isNodeTask({metadata: {labels: {'app.kubernetes.io/managed-by': 'kubectl-selfhost', 'selfhost.kubectl.io/node-task': 'trace'}}}), true)
    assert.equal(isNodeTask({metadata: {labels: {'app.kubernetes.io/managed-by': 'kubectl-selfhost', 'k8s-app': 'self-hosted-kube-apiserver'}}}), false)
    assert.equal(imageName('registry.k8s.io/kube-apiserver:v1.37.2'), 'kube-apiserver')
    assert.equal(imageName('localhost:5000/etcd:3.6.5-0'), 'etcd')
    assert.equal(imageName('kube-proxy@sha256:00'), 'kube-proxy')
  })

  it('configures kwok with stages that skip node tasks and never ready a -broken image', () => {
    const docs = kwokConfigYaml({nodePort: 1, serverAddress: '127.0.0.1:1', tlsCertFile: 'c', tlsPrivateKeyFile: 'k', podCidr: '10.244.0.0/16'})
      .split('---\n')
      .map(
        (d) =>
          parse(d) as {
            kind: string
            metadata?: {name: string}
            spec?: {resourceRef: {kind: string}; selector: {matchExpressions: Array<{key: string; operator: string; values?: string[]}>}}
          },
      )
    assert.equal(docs[0].kind, 'KwokConfiguration')
    const podStages = docs.filter((d) => d.kind === 'Stage' && d.spec!.resourceRef.kind === 'Pod')
    assert.deepEqual(
      podStages.map((s) => s.metadata!.name),
      ['selfhost-pod-ready', 'selfhost-pod-broken', 'selfhost-pod-delete'],
    )
    for (const stage of podStages) {
      assert.ok(
        stage.spec!.selector.matchExpressions.some((e) => e.key.includes('selfhost.kubectl.io/node-task') && e.operator === 'DoesNotExist'),
        stage.metadata!.name,
      )
    }

    const brokenRule = (name: string) =>
      podStages.find((s) => s.metadata!.name === name)!.spec!.selector.matchExpressions.find((e) => e.key.includes('-broken'))!
    assert.deepEqual([brokenRule('selfhost-pod-ready').operator, brokenRule('selfhost-pod-broken').operator], ['NotIn', 'In'])
  })
})
