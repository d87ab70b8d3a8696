import assert from 'node:assert/strict'
import {dirname, join, resolve} from 'node:path'
import {PassThrough} from 'node:stream'
import {fileURLToPath} from 'node:url'

import nock from 'nock'

import {kubeadmCluster, withLeasesRenewedNow} from '../helpers/cluster-objects.js'
import {fakeApiServerSuite, serveDiscovery} from '../helpers/fake-api.js'
import {FAKE_SERVER, writeFakeKubeconfig} from '../helpers/fake-cluster.js'
import {runCommand} from '../helpers/run-command.js'

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
const NEW = join(repoRoot, 'test', 'fixtures', 'kubeadm', 'v1.32.4')
const logPath = (pod: string) => `/api/v1/namespaces/kube-system/pods/${pod}/log`

function cluster(opts: {selfHosted?: string[]; leaderNode?: string} = {}) {
  return withLeasesRenewedNow(
    kubeadmCluster({
      version: 'v1.32.4',
      manifestsDir: NEW,
      controlPlaneNodes: ['cp-1', 'cp-2'],
      selfHosted: opts.selfHosted,
      leaderNode: opts.leaderNode,
    }),
  )
}

const podOf = (inputs: ReturnType<typeof cluster>, prefix: string, node: string) =>
  inputs.pods.find((p) => p.metadata!.name!.startsWith(prefix) && p.spec!.nodeName === node)!.metadata!.name!

describe('logs command', () => {
  const kubeconfig = fakeApiServerSuite()

  it("prints every static instance's log, each line prefixed [node/pod], 10 lines each by default", async () => {
    const inputs = cluster()
    serveDiscovery(inputs)
    const logs = nock(FAKE_SERVER)
      .get(logPath('kube-scheduler-cp-1'))
      .query({container: 'kube-scheduler', tailLines: '10'})
      .reply(200, 'I0301 started\nI0301 leading\n')
      .get(logPath('kube-scheduler-cp-2'))
      .query({container: 'kube-scheduler', tailLines: '10'})
      .reply(200, 'I0301 standby\n')
    const {stdout, stderr, exitCode} = await runCommand(['logs', 'kube-scheduler', '--kubeconfig', kubeconfig])
    assert.equal(stderr, '')
    assert.equal(exitCode, 0)
    assert.ok(logs.isDone())
    assert.equal(stdout, '[cp-1/kube-scheduler-cp-1] I0301 started\n[cp-1/kube-scheduler-cp-1] I0301 leading\n[cp-2/kube-scheduler-cp-2] I0301 standby\n')
  })

  it('reads self-hosted instances the same way, and passes --previous/--since/--timestamps/--tail -1/-c', async () => {
    const inputs = cluster({selfHosted: ['kube-controller-manager']})
    serveDiscovery(inputs)
    const pod1 = podOf(inputs, 'self-hosted-kube-controller-manager-', 'cp-1')
    const pod2 = podOf(inputs, 'self-hosted-kube-controller-manager-', 'cp-2')
    const query = {container: 'sidecar', previous: 'true', sinceSeconds: '300', timestamps: 'true'}
    const logs = nock(FAKE_SERVER)
      .get(logPath(pod1))
      .query(query)
      .reply(200, '2026-03-01T12:00:00Z crashed\n')
      .get(logPath(pod2))
      .query(query)
      .reply(200, '2026-03-01T12:00:01Z fine\n')
    const {stdout, exitCode} = await runCommand([
      'logs',
      'controller-manager',
      '--kubeconfig',
      kubeconfig,
      '--previous',
      '--since',
      '5m',
      '--timestamps',
      '--tail',
      '-1',
      '-c',
      'sidecar',
    ])
    assert.equal(exitCode, 0)
    assert.ok(logs.isDone(), `not requested: ${logs.pendingMocks().join(', ')}`)
    assert.equal(stdout, `[cp-1/${pod1}] 2026-03-01T12:00:00Z crashed\n[cp-2/${pod2}] 2026-03-01T12:00:01Z fine\n`)
  })

  it("--leader reads only the leader's instance", async () => {
    serveDiscovery(cluster({leaderNode: 'cp-2'}))
    const logs = nock(FAKE_SERVER).get(logPath('kube-scheduler-cp-2')).query(true).reply(200, 'leading\n')
    const {stdout, exitCode} = await runCommand(['logs', 'kube-scheduler', '--leader', '--kubeconfig', kubeconfig])
    assert.equal(exitCode, 0)
    assert.ok(logs.isDone())
    assert.equal(stdout, '[cp-2/kube-scheduler-cp-2] leading\n')
  })

  it('-f streams all instances at once and Ctrl-C ends it cleanly (exit 0)', async () => {
    serveDiscovery(cluster())
    const streams = [new PassThrough(), new PassThrough()]
    nock(FAKE_SERVER)
      .get(logPath('kube-apiserver-cp-1'))
      .query({container: 'kube-apiserver', follow: 'true', tailLines: '10'})
      .reply(200, () => streams[0])
      .get(logPath('kube-apiserver-cp-2'))
      .query({container: 'kube-apiserver', follow: 'true', tailLines: '10'})
      .reply(200, () => streams[1])
    const running = runCommand(['logs', 'kube-apiserver', '-f', '--kubeconfig', kubeconfig])
    await new Promise((r) => setTimeout(r, 300))
    streams[1].write('from two\n')
    await new Promise((r) => setTimeout(r, 50))
    streams[0].write('from one, part')
    streams[0].write(' two\nand more\n')
    await new Promise((r) => setTimeout(r, 100))
    assert.ok(process.listenerCount('SIGINT') > 0, 'logs -f listens for Ctrl-C')
    process.emit('SIGINT')
    const {stdout, stderr, exitCode} = await running
    assert.equal(exitCode, 0, stderr)
    assert.equal(stderr, '')
    assert.equal(stdout, '[cp-2/kube-apiserver-cp-2] from two\n[cp-1/kube-apiserver-cp-1] from one, part two\n[cp-1/kube-apiserver-cp-1] and more\n')
  })

  it('-f reports a stream the server ends and keeps the others', async () => {
    serveDiscovery(cluster())
    const open = new PassThrough()
    nock(FAKE_SERVER)
      .get(logPath('etcd-cp-1'))
      .query(true)
      .reply(200, 'last words\n')
      .get(logPath('etcd-cp-2'))
      .query(true)
      .reply(200, () => open)
    const running = runCommand(['logs', 'etcd', '-f', '--kubeconfig', kubeconfig])
    await new Promise((r) => setTimeout(r, 300))
    open.write('still here\n')
    await new Promise((r) => setTimeout(r, 50))
    process.emit('SIGINT')
    const {stdout, stderr, exitCode} = await running
    assert.equal(exitCode, 0)
    assert.equal(stdout, '[cp-1/etcd-cp-1] last words\n[cp-2/etcd-cp-2] still here\n')
    assert.equal(stderr, '[cp-1/etcd-cp-1] log stream ended (container stopped or pod deleted)\n')
  })

  it('an instance without a previous container is reported, the others still print', async () => {
    serveDiscovery(cluster())
    nock(FAKE_SERVER)
      .get(logPath('kube-scheduler-cp-1'))
      .query(true)
      .reply(400, {
        kind: 'Status',
        code: 400,
        reason: 'BadRequest',
        message: 'previous terminated container "kube-scheduler" in pod "kube-scheduler-cp-1" not found',
      })
      .get(logPath('kube-scheduler-cp-2'))
      .query(true)
      .reply(200, 'panic: lost lease\n')
    const {stdout, stderr, exitCode} = await runCommand(['logs', 'kube-scheduler', '-p', '--kubeconfig', kubeconfig])
    assert.equal(exitCode, 0)
    assert.equal(stdout, '[cp-2/kube-scheduler-cp-2] panic: lost lease\n')
    assert.match(
      stderr,
      /^\[cp-1\/kube-scheduler-cp-1\] get pods\/log "kube-scheduler-cp-1" in namespace "kube-system" failed \(400 BadRequest\): previous terminated container/,
    )
    assert.equal(stderr.trimEnd().split('\n').length, 1)
  })

  describe('failures: clear lines, exit 1, no stack trace', () => {
    it('an unknown component lists the known ones, without touching the cluster', async () => {
      const {stdout, stderr, exitCode} = await runCommand(['logs', 'kubelet', '--kubeconfig', kubeconfig])
      assert.equal(exitCode, 1)
      assert.equal(stdout, '')
      assert.equal(
        stderr,
        'error: unknown component "kubelet"; known components: kube-apiserver, kube-controller-manager, kube-scheduler, etcd, kube-proxy, coredns\n',
      )
    })

    it('no component named at all', async () => {
      const {stderr, exitCode} = await runCommand(['logs', '--kubeconfig', kubeconfig])
      assert.equal(exitCode, 1)
      assert.equal(stderr, 'error: name a component; known components: kube-apiserver, kube-controller-manager, kube-scheduler, etcd, kube-proxy, coredns\n')
    })

    it('--leader on a component that elects none', async () => {
      serveDiscovery(cluster())
      const {stderr, exitCode} = await runCommand(['logs', 'etcd', '--leader', '--kubeconfig', kubeconfig])
      assert.equal(exitCode, 1)
      assert.equal(stderr, 'error: --leader: etcd does not elect a leader (only kube-controller-manager, kube-scheduler do)\n')
    })

    it('no permission to read logs (403) names pods/log, one line per instance, then exit 1', async () => {
      serveDiscovery(cluster())
      const forbidden = (pod: string) => ({
        kind: 'Status',
        code: 403,
        reason: 'Forbidden',
        message: `pods "${pod}" is forbidden: User "dev" cannot get resource "pods/log" in API group "" in the namespace "kube-system"`,
      })
      nock(FAKE_SERVER)
        .get(logPath('kube-scheduler-cp-1'))
        .query(true)
        .reply(403, forbidden('kube-scheduler-cp-1'))
        .get(logPath('kube-scheduler-cp-2'))
        .query(true)
        .reply(403, forbidden('kube-scheduler-cp-2'))
      const {stderr, exitCode} = await runCommand(['logs', 'kube-scheduler', '--kubeconfig', kubeconfig])
      assert.equal(exitCode, 1)
      const lines = stderr.trimEnd().split('\n')
      assert.equal(lines.length, 3)
      assert.match(lines[0], /^\[cp-1\/kube-scheduler-cp-1\] forbidden \(403\): you may not get pods\/log "kube-scheduler-cp-1" in namespace "kube-system"/)
      assert.equal(lines[2], 'error: could not read the log of any kube-scheduler instance')
      assert.doesNotMatch(stderr, /\n\s+at /)
    })

    it('a bad --since', async () => {
      const {stderr, exitCode} = await runCommand(['logs', 'etcd', '--since', 'yesterday', '--kubeconfig', kubeconfig])
      assert.equal(exitCode, 1)
      assert.equal(stderr, 'error: --since "yesterday" is not a duration; use a form like 30s, 5m or 1h\n')
    })

    it('an unreachable server', async () => {
      nock.enableNetConnect('127.0.0.1')
      try {
        const {stderr, exitCode} = await runCommand(['logs', 'etcd', '--kubeconfig', writeFakeKubeconfig('https://127.0.0.1:1')])
        assert.equal(exitCode, 1)
        assert.equal(
          stderr,
          'error: cannot reach the API server at https://127.0.0.1:1: connection refused; is the cluster running and is the context right?\n',
        )
      } finally {
        nock.disableNetConnect()
      }
    })
  })
})
