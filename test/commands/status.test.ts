import assert from 'node:assert/strict'
import {dirname, join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'

import nock from 'nock'
import {parse as parseYaml} from 'yaml'

import type {ControlPlane} from '../../src/controlplane/model.js'
import {kubeadmCluster, lease, withLeasesRenewedNow} from '../helpers/cluster-objects.js'
import {countRequests, fakeApiServerSuite, serveDiscovery} from '../helpers/fake-api.js'
import {FAKE_SERVER, writeFakeKubeconfig} from '../helpers/fake-cluster.js'
import {runCommand} from '../helpers/run-command.js'

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
const NEW = join(repoRoot, 'test', 'fixtures', 'kubeadm', 'v1.32.4')
const OLD = join(repoRoot, 'test', 'fixtures', 'kubeadm', 'v1.14.10')

function freshCluster(workers: number, leaderNode = 'cp-1') {
  return withLeasesRenewedNow(
    kubeadmCluster({
      version: 'v1.32.4',
      manifestsDir: NEW,
      controlPlaneNodes: ['cp-1', 'cp-2', 'cp-3'],
      workers: Array.from({length: workers}, (_, i) => `worker-${i}`),
      leaderNode,
    }),
  )
}

function assertOneLineError(stderr: string, pattern: RegExp) {
  const lines = stderr.trimEnd().split('\n')
  assert.equal(lines.length, 1, `expected one line, got:\n${stderr}`)
  assert.match(lines[0], /^error: /)
  assert.match(lines[0], pattern)
  assert.doesNotMatch(stderr, /\n\s+at /, 'no stack trace')
}

describe('status command', () => {
  const kubeconfig = fakeApiServerSuite()

  it('prints one row per component and exits 0 on a healthy kubeadm cluster', async () => {
    const scope = serveDiscovery(freshCluster(2, 'cp-2'))
    const {stdout, stderr, exitCode} = await runCommand(['status', '--kubeconfig', kubeconfig])
    assert.equal(stderr, '')
    assert.equal(exitCode, 0)
    assert.ok(scope.isDone(), `requests not made: ${scope.pendingMocks().join(', ')}`)
    const lines = stdout.split('\n')
    assert.match(lines[0], /^context fake · https:\/\/fake-cluster\.test:6443 · v1\.32\.4 · 5 nodes \(3 control-plane\)$/)
    assert.match(lines[2], /^COMPONENT\s+MODE\s+READY\s+VERSIONS\s+LEADER\s+HEALTH\s+PROBLEMS$/)
    const row = (name: string) => lines.find((l) => l.startsWith(`${name} `))!.split(/\s{2,}/)
    assert.deepEqual(row('kube-apiserver'), ['kube-apiserver', 'static', '3/3', 'v1.32.4', '-', 'ok'])
    assert.deepEqual(row('kube-scheduler'), ['kube-scheduler', 'static', '3/3', 'v1.32.4', 'cp-2', 'ok'])
    assert.deepEqual(row('kube-proxy'), ['kube-proxy', 'self-hosted', '5/5', 'v1.32.4', '-', 'ok'])
    assert.match(stdout, /Control plane healthy\.$/m)
    assert.doesNotMatch(stdout, /\u001B\[/, 'no colour when stdout is not a terminal')
  })

  it('is also reachable as `health`', async () => {
    serveDiscovery(freshCluster(0))
    const {exitCode, stdout} = await runCommand(['health', '--kubeconfig', kubeconfig])
    assert.equal(exitCode, 0)
    assert.match(stdout, /^kube-controller-manager\s+static\s+3\/3/m)
  })

  it('makes the same number of requests for 5 nodes as for 400 (list calls only)', async () => {
    const counts: number[] = []
    for (const workers of [2, 397]) {
      const scope = serveDiscovery(freshCluster(workers))
      const counter = countRequests(scope)
      const {exitCode, stdout} = await runCommand(['status', '--kubeconfig', kubeconfig, '-o', 'json'])
      counter.stop()
      assert.equal(exitCode, 0)
      assert.deepEqual(counter.unmatched(), [])
      assert.ok(scope.isDone())
      const plane = JSON.parse(stdout) as ControlPlane
      assert.equal(plane.nodes.length, workers + 3)
      counts.push(counter.answered())
    }

    assert.deepEqual(counts, [8, 8])
  })

  it('-o json and -o yaml print the same data, the model itself', async () => {
    const cluster = freshCluster(1)
    serveDiscovery(cluster)
    const json = JSON.parse((await runCommand(['status', '--kubeconfig', kubeconfig, '-o', 'json'])).stdout) as ControlPlane
    serveDiscovery(cluster)
    const yaml = parseYaml((await runCommand(['status', '--kubeconfig', kubeconfig, '-o', 'yaml'])).stdout) as ControlPlane
    const strip = (p: ControlPlane) => ({...p, observedAt: ''})
    assert.deepEqual(strip(yaml), strip(json))
    assert.deepEqual(
      json.components.map((c) => [c.name, c.mode, c.healthy]),
      [
        ['kube-apiserver', 'static', true],
        ['kube-controller-manager', 'static', true],
        ['kube-scheduler', 'static', true],
        ['etcd', 'static', true],
        ['kube-proxy', 'self-hosted', true],
        ['coredns', 'self-hosted', true],
      ],
    )
  })

  it('-o wide adds the instance breakdown and a row per instance', async () => {
    serveDiscovery(freshCluster(0, 'cp-3'))
    const {stdout, exitCode} = await runCommand(['status', '--kubeconfig', kubeconfig, '-o', 'wide'])
    assert.equal(exitCode, 0)
    assert.match(stdout, /^kube-proxy\s+self-hosted\s+3\/3\s+v1\.32\.4\s+-\s+ok\s+workload 3\/3\s+DaemonSet\/kube-proxy 3\/3$/m)
    assert.match(stdout, /^kube-scheduler\s+kube-scheduler-cp-3\s+cp-3\s+static\s+true\s+0\s+registry\.k8s\.io\/kube-scheduler:v1\.32\.4\s+yes$/m)
  })

  it('after a pivot: healthy (exit 0), with the cost of a self-hosted apiserver among the warnings, table and wide', async () => {
    const inputs = withLeasesRenewedNow(
      kubeadmCluster({
        version: 'v1.32.4',
        manifestsDir: NEW,
        controlPlaneNodes: ['cp-1', 'cp-2', 'cp-3'],
        selfHosted: ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler'],
      }),
    )
    for (const wide of [false, true]) {
      serveDiscovery(inputs)
      const {stdout, exitCode} = await runCommand(['status', '--kubeconfig', kubeconfig, ...(wide ? ['-o', 'wide'] : [])])
      assert.equal(exitCode, 0, stdout)
      assert.match(stdout, /^kube-apiserver\s+self-hosted\s+3\/3\s+v1\.32\.4\s+-\s+ok/m)
      const warnings = stdout.slice(stdout.indexOf('\nWarnings:\n'))
      // Piped output keeps one line per warning, so scripts can grep it.
      assert.match(
        warnings,
        /^ {2}kube-apiserver: self-hosted, no checkpointing: if every control-plane node restarts at once .* then `kubectl selfhost revert`; `kubectl selfhost pivot` installs checkpoints$/m,
      )
      assert.match(stdout, /Control plane healthy\.$/m)
    }
  })

  it('exits 2 and says why when a leader is stale', async () => {
    const inputs = freshCluster(0)
    inputs.leases = [lease('kube-scheduler', {holderNode: 'cp-1', renewedAgo: 120}), ...inputs.leases!.filter((l) => l.metadata?.name !== 'kube-scheduler')]
    inputs.leases[0].spec!.renewTime = new Date(Date.now() - 120_000).toISOString()
    serveDiscovery(inputs)
    const {stdout, exitCode} = await runCommand(['status', '--kubeconfig', kubeconfig])
    assert.equal(exitCode, 2)
    assert.match(
      stdout,
      /^kube-scheduler\s+static\s+3\/3\s+v1\.32\.4\s+cp-1 \(stale\)\s+UNHEALTHY\s+leader cp-1 is stale: last renewed 1[12]\ds ago \(lease 15s\)$/m,
    )
    assert.match(stdout, /Control plane UNHEALTHY: 1 problem\(s\)\.$/m)
  })

  it('exits 2 when the API server fails a readiness check', async () => {
    const inputs = freshCluster(0)
    inputs.readyz = {endpoint: '/readyz', status: 500, body: '[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed\n'}
    serveDiscovery(inputs)
    const {stdout, exitCode} = await runCommand(['status', '--kubeconfig', kubeconfig])
    assert.equal(exitCode, 2)
    assert.match(stdout, /^kube-apiserver\s+static\s+3\/3\s+v1\.32\.4\s+-\s+UNHEALTHY\s+\/readyz answered 500: failed etcd$/m)
  })

  it('reads an old (1.14) cluster: /healthz and Endpoints leader records', async () => {
    const inputs = kubeadmCluster({version: 'v1.14.10', manifestsDir: OLD, controlPlaneNodes: ['master-1'], workers: ['node-1']})
    inputs.endpoints = inputs.endpoints!.map((e) => {
      const record = JSON.parse(e.metadata!.annotations!['control-plane.alpha.kubernetes.io/leader'])
      record.renewTime = new Date().toISOString().replace(/\.\d+Z$/, 'Z')
      return {...e, metadata: {...e.metadata, annotations: {'control-plane.alpha.kubernetes.io/leader': JSON.stringify(record)}}}
    })
    const scope = serveDiscovery(inputs)
    const {stdout, exitCode} = await runCommand(['status', '--kubeconfig', kubeconfig])
    assert.equal(exitCode, 0, stdout)
    assert.ok(scope.isDone())
    assert.match(stdout, /^kube-controller-manager\s+static\s+1\/1\s+v1\.14\.10\s+master-1\s+ok$/m)
    assert.match(stdout, /^etcd\s+static\s+1\/1\s+3\.3\.10\s+-\s+ok$/m)
  })

  describe('failures: one line, exit 1, no stack trace', () => {
    it('a context that does not exist lists the known ones', async () => {
      const {stderr, exitCode} = await runCommand(['status', '--kubeconfig', kubeconfig, '--context', 'prod'])
      assert.equal(exitCode, 1)
      assertOneLineError(stderr, /context "prod" not found in .*; known contexts: fake/)
    })

    it('an unreachable server (connection refused)', async () => {
      nock.enableNetConnect('127.0.0.1')
      try {
        const refusing = writeFakeKubeconfig('https://127.0.0.1:1')
        const {stderr, exitCode} = await runCommand(['status', '--kubeconfig', refusing])
        assert.equal(exitCode, 1)
        assertOneLineError(stderr, /cannot reach the API server at https:\/\/127\.0\.0\.1:1: connection refused/)
      } finally {
        nock.disableNetConnect()
      }
    })

    it('rejected credentials (401)', async () => {
      nock(FAKE_SERVER).get('/version').reply(401, {kind: 'Status', reason: 'Unauthorized', message: 'Unauthorized', code: 401}).persist()
      nock(FAKE_SERVER).get(/.*/).reply(401, {kind: 'Status', reason: 'Unauthorized', code: 401}).persist()
      const {stderr, exitCode} = await runCommand(['status', '--kubeconfig', kubeconfig])
      assert.equal(exitCode, 1)
      assertOneLineError(stderr, /unauthorized \(401\).*credentials were rejected/)
    })

    it('a missing permission (403) names the verb and the resource', async () => {
      const inputs = freshCluster(0)
      const forbidden = {
        kind: 'Status',
        reason: 'Forbidden',
        code: 403,
        message:
          'leases.coordination.k8s.io is forbidden: User "dev" cannot list resource "leases" in API group "coordination.k8s.io" in the namespace "kube-system"',
      }
      nock(FAKE_SERVER)
        .get('/version')
        .reply(200, inputs.version)
        .get('/api/v1/namespaces/kube-system/pods')
        .reply(200, {items: inputs.pods})
        .get('/api/v1/nodes')
        .reply(200, {items: inputs.nodes})
        .get('/apis/apps/v1/namespaces/kube-system/daemonsets')
        .reply(200, {items: []})
        .get('/apis/apps/v1/namespaces/kube-system/deployments')
        .reply(200, {items: []})
        .get('/apis/coordination.k8s.io/v1/namespaces/kube-system/leases')
        .reply(403, forbidden)
        .get(/\/(readyz|livez)/)
        .times(2)
        .reply(200, 'ok')
      const {stderr, exitCode} = await runCommand(['status', '--kubeconfig', kubeconfig])
      assert.equal(exitCode, 1)
      assertOneLineError(stderr, /forbidden \(403\): you may not list leases\.coordination\.k8s\.io in namespace "kube-system"/)
    })

    it('a 403 on /version, which every user may read, is an apiserver still starting (as right after a power loss), not a missing permission', async () => {
      // What a real kube-apiserver answered kubeadm's admin a few seconds after its node came back.
      const message = 'forbidden: User "kubernetes-admin" cannot get path "/version"'
      nock(FAKE_SERVER).get('/version').reply(403, {kind: 'Status', reason: 'Forbidden', code: 403, message})
      nock(FAKE_SERVER).get(/.*/).reply(200, {items: []}).persist()
      const {stderr, exitCode} = await runCommand(['status', '--kubeconfig', kubeconfig])
      assert.equal(exitCode, 1)
      assertOneLineError(
        stderr,
        /^error: https:\/\/fake-cluster\.test:6443 refuses even \/version, which every user may read \(forbidden: User "kubernetes-admin" cannot get path "\/version"\): the API server is most likely still starting; try again in a minute$/,
      )
    })

    it('a server that does not answer in --request-timeout', async () => {
      nock(FAKE_SERVER).get('/version').delay(3000).reply(200, {gitVersion: 'v1.32.4'})
      nock(FAKE_SERVER).get(/.*/).delay(3000).reply(200, {items: []}).persist()
      const started = Date.now()
      const {stderr, exitCode} = await runCommand(['status', '--kubeconfig', kubeconfig, '--request-timeout', '300ms'])
      assert.equal(exitCode, 1)
      assertOneLineError(stderr, /request to https:\/\/fake-cluster\.test:6443 timed out after 0\.3s; raise --request-timeout/)
      assert.ok(Date.now() - started < 2500, 'gave up at the timeout, not when the server answered')
    })

    it('an unknown output format', async () => {
      const {stderr, exitCode} = await runCommand(['status', '--kubeconfig', kubeconfig, '-o', 'xml'])
      assert.equal(exitCode, 1)
      assert.match(stderr, /xml/)
      assert.doesNotMatch(stderr, /\n\s+at /)
    })
  })
})
