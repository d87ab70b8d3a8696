import assert from 'node:assert/strict'

import nock from 'nock'

import type {V1Pod} from '../../../src/kube/types.js'
import {CliError} from '../../../src/errors.js'
import type {KubeClient} from '../../../src/kube/client.js'
import {NODE_TASK_LABEL, NodeTask, buildNodeTaskPod, nodeTaskPodName, runNodeTask} from '../../../src/node/runner.js'
import {FAKE_SERVER, fakeClient} from '../../helpers/fake-cluster.js'

const task: NodeTask = {
  node: 'worker-1',
  image: 'registry.k8s.io/kube-proxy:v1.37.2',
  command: ['sh', '-c', 'iptables-save'],
  purpose: 'trace',
  deadlineSeconds: 60,
}

const podsPath = '/api/v1/namespaces/kube-system/pods'
const podPathRe = /^\/api\/v1\/namespaces\/kube-system\/pods\/selfhost-trace-worker-1-[0-9a-f]{6}$/
const logPathRe = /^\/api\/v1\/namespaces\/kube-system\/pods\/selfhost-trace-worker-1-[0-9a-f]{6}\/log\?container=task$/

const withPhase = (phase: string, containerState?: Record<string, unknown>, extra: Record<string, unknown> = {}): V1Pod =>
  ({status: {phase, ...extra, containerStatuses: containerState ? [{name: 'task', state: containerState}] : undefined}}) as V1Pod

describe('node task runner', function () {
  // The first connect loads @kubernetes/client-node.
  this.timeout(20_000)
  let client: KubeClient
  const warnings: string[] = []
  const opts = {pollIntervalMs: 5, onWarning: (m: string) => warnings.push(m)}

  before(async () => {
    nock.disableNetConnect()
    client = await fakeClient()
  })
  afterEach(() => {
    nock.cleanAll()
    warnings.length = 0
  })
  after(() => nock.enableNetConnect())

  describe('the pod', () => {
    it('is pinned, privileged, host-network, run-once, deadline-bound, tolerant of every taint, labelled, and knows its own name', () => {
      const pod = buildNodeTaskPod({...task, env: {A: '1'}}, 'selfhost-trace-worker-1-abcdef')
      assert.equal(pod.metadata?.namespace, 'kube-system')
      assert.deepEqual(pod.metadata?.labels, {'app.kubernetes.io/managed-by': 'kubectl-selfhost', [NODE_TASK_LABEL]: 'trace'})
      const spec = pod.spec!
      assert.equal(spec.nodeName, 'worker-1')
      assert.equal(spec.restartPolicy, 'Never')
      assert.equal(spec.activeDeadlineSeconds, 60)
      assert.equal(spec.hostNetwork, true)
      assert.deepEqual(spec.tolerations, [{operator: 'Exists'}])
      assert.equal(spec.containers.length, 1)
      const [container] = spec.containers
      assert.equal(container.securityContext?.privileged, true)
      assert.deepEqual(container.command, ['sh', '-c', 'iptables-save'])
      assert.equal(container.image, task.image)
      assert.deepEqual(container.env, [
        {name: 'A', value: '1'},
        {name: 'NODE_TASK_POD', value: 'kube-system/selfhost-trace-worker-1-abcdef'},
      ])
      assert.equal(spec.volumes, undefined, 'no host mount unless asked')
    })

    it('mounts the host root at /host and says so in HOST_ROOT when asked', () => {
      const pod = buildNodeTaskPod({...task, mountHostRoot: true, namespace: 'ops'}, 'p')
      assert.equal(pod.metadata?.namespace, 'ops')
      assert.deepEqual(pod.spec?.volumes, [{name: 'host-root', hostPath: {path: '/', type: 'Directory'}}])
      assert.deepEqual(pod.spec?.containers[0].volumeMounts, [{name: 'host-root', mountPath: '/host'}])
      assert.deepEqual(pod.spec?.containers[0].env, [
        {name: 'NODE_TASK_POD', value: 'ops/p'},
        {name: 'HOST_ROOT', value: '/host'},
      ])
    })

    it('has a valid, bounded name even for long node names', () => {
      const name = nodeTaskPodName('pivot backup', 'Ip-10-0-0-1.EU-West-1.Compute.Internal.very-long-node-name-indeed', 'abc123')
      assert.ok(name.length <= 63, name)
      assert.match(name, /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/)
      assert.ok(name.startsWith('selfhost-pivot-backup-ip-10-0-0-1-eu-west-1'))
      assert.ok(name.endsWith('-abc123'))
    })
  })

  it('creates the pod, waits for it to finish, returns exit code and log, then deletes it', async () => {
    let sent: V1Pod | undefined
    const scope = nock(FAKE_SERVER)
      .post(podsPath, (body: V1Pod) => {
        sent = body
        return true
      })
      .reply(201, (_uri, body) => body as V1Pod)
      .get(podPathRe)
      .reply(200, withPhase('Pending'))
      .get(podPathRe)
      .reply(200, withPhase('Running', {running: {}}))
      .get(podPathRe)
      .reply(200, withPhase('Failed', {terminated: {exitCode: 3}}))
      .get(logPathRe)
      .reply(200, '*nat\nCOMMIT\n')
      .delete(podPathRe)
      .reply(200, {})

    const result = await runNodeTask(client, task, opts)
    assert.equal(result.exitCode, 3)
    assert.equal(result.output, '*nat\nCOMMIT\n')
    assert.equal(result.pod, sent?.metadata?.name)
    assert.equal(sent?.spec?.activeDeadlineSeconds, 60)
    assert.ok(scope.isDone(), `pending: ${scope.pendingMocks().join(', ')}`)
  })

  it('waits through an API that does not answer while the task runs (a hand-off restarts it), and reads the result once it is back', async () => {
    const progress: string[] = []
    const scope = nock(FAKE_SERVER)
      .post(podsPath)
      .reply(201, {})
      .get(podPathRe)
      .times(3)
      .replyWithError(Object.assign(new Error('connect ECONNREFUSED'), {code: 'ECONNREFUSED'}))
      .get(podPathRe)
      .reply(500, {message: 'etcd is sad'})
      .get(podPathRe)
      .reply(200, withPhase('Succeeded', {terminated: {exitCode: 0}}))
      .get(logPathRe)
      .reply(200, 'done\n')
      .delete(podPathRe)
      .reply(200, {})
    const result = await runNodeTask(client, task, {...opts, onProgress: (m) => progress.push(m)})
    assert.deepEqual([result.exitCode, result.output], [0, 'done\n'])
    assert.ok(scope.isDone(), `pending: ${scope.pendingMocks().join(', ')}`)
    assert.match(progress[0], /the API does not answer .*waiting for it, up to the task's deadline/)
    assert.match(progress.at(-1)!, /the API answers again after \d+s/)
  })

  it("gives up on an API that stays away past the task's deadline, and still deletes the pod", async () => {
    nock(FAKE_SERVER).post(podsPath).reply(201, {}).get(podPathRe).times(1000).reply(500, {message: 'etcd is sad'})
    const deletion = nock(FAKE_SERVER).delete(podPathRe).reply(200, {})
    await assert.rejects(runNodeTask(client, {...task, deadlineSeconds: 0}, {...opts, graceMs: 100}), /the API did not answer within 0s .*etcd is sad/)
    assert.ok(deletion.isDone(), 'the pod was deleted')
    nock.cleanAll()
  })

  it('waits for a kubelet that has not read the Services yet (just booted), instead of calling the image broken', async () => {
    const scope = nock(FAKE_SERVER)
      .post(podsPath)
      .reply(201, {})
      .get(podPathRe)
      .times(2)
      .reply(
        200,
        withPhase('Pending', {
          waiting: {reason: 'CreateContainerConfigError', message: 'services have not yet been read at least once, cannot construct envvars'},
        }),
      )
      .get(podPathRe)
      .reply(200, withPhase('Succeeded', {terminated: {exitCode: 0}}))
      .get(logPathRe)
      .reply(200, 'ok')
      .delete(podPathRe)
      .reply(200, {})
    assert.equal((await runNodeTask(client, task, opts)).exitCode, 0)
    assert.ok(scope.isDone(), `pending: ${scope.pendingMocks().join(', ')}`)
  })

  it('deletes the pod when the create answer is lost (the pod may exist)', async () => {
    const scope = nock(FAKE_SERVER)
      .post(podsPath)
      .replyWithError(Object.assign(new Error('socket hang up'), {code: 'ECONNRESET'}))
      .delete(podPathRe)
      .reply(404, {})
    await assert.rejects(runNodeTask(client, task, opts), /closed the connection/)
    assert.ok(scope.isDone(), `pending: ${scope.pendingMocks().join(', ')}`)
  })

  it('explains a PodSecurity refusal and deletes nothing', async () => {
    nock(FAKE_SERVER).post('/api/v1/namespaces/apps/pods').reply(403, {
      kind: 'Status',
      status: 'Failure',
      reason: 'Forbidden',
      message:
        'pods "selfhost-trace-worker-1-abc" is forbidden: violates PodSecurity "baseline:latest": host namespaces (hostNetwork=true), privileged (container "task" must not set securityContext.privileged=true)',
    })
    const error = await runNodeTask(client, {...task, namespace: 'apps'}, opts).then(
      () => assert.fail('expected a refusal'),
      (e: unknown) => e,
    )
    assert.ok(error instanceof CliError)
    assert.match(error.message, /namespace "apps" refuses privileged pods \(PodSecurity "baseline:latest"\)/)
    assert.match(error.message, /privileged/)
    assert.doesNotMatch(error.message, /\n/)
    assert.equal(nock.pendingMocks().length, 0)
  })

  it('says when the pod ran past its activeDeadlineSeconds', async () => {
    const scope = nock(FAKE_SERVER)
      .post(podsPath)
      .reply(201, {})
      .get(podPathRe)
      .reply(200, withPhase('Failed', {waiting: {reason: 'ContainerCreating'}}, {reason: 'DeadlineExceeded'}))
      .delete(podPathRe)
      .reply(200, {})
    await assert.rejects(runNodeTask(client, task, opts), /ran past its deadline of 60s/)
    assert.ok(scope.isDone())
  })

  it('gives up after the deadline plus grace when the pod never finishes, and deletes it', async () => {
    const scope = nock(FAKE_SERVER).post(podsPath).reply(201, {}).get(podPathRe).times(1000).reply(200, withPhase('Pending')).delete(podPathRe).reply(200, {})
    const started = Date.now()
    await assert.rejects(runNodeTask(client, {...task, deadlineSeconds: 0}, {...opts, graceMs: 100}), /did not finish within 0s \(pod phase Pending\)/)
    assert.ok(Date.now() - started < 5000)
    assert.equal(scope.pendingMocks().filter((m) => m.startsWith('DELETE')).length, 0, 'pod deleted')
  })

  it('fails fast on an image that cannot be pulled', async () => {
    const scope = nock(FAKE_SERVER)
      .post(podsPath)
      .reply(201, {})
      .get(podPathRe)
      .reply(200, withPhase('Pending', {waiting: {reason: 'ImagePullBackOff', message: 'Back-off pulling image'}}))
      .delete(podPathRe)
      .reply(200, {})
    await assert.rejects(runNodeTask(client, task, opts), /cannot start on node worker-1 with image registry\.k8s\.io\/kube-proxy:v1\.37\.2 \(ImagePullBackOff/)
    assert.ok(scope.isDone())
  })

  it('warns with the kubectl command when the pod cannot be deleted', async () => {
    nock(FAKE_SERVER)
      .post(podsPath)
      .reply(201, {})
      .get(podPathRe)
      .reply(200, withPhase('Succeeded', {terminated: {exitCode: 0}}))
      .get(logPathRe)
      .reply(200, 'ok')
      .delete(podPathRe)
      .times(1000)
      .reply(500, {message: 'boom'})
    const result = await runNodeTask(client, task, {...opts, deleteRetryMs: 300})
    assert.equal(result.exitCode, 0)
    assert.equal(warnings.length, 1)
    assert.match(warnings[0], /kubectl delete pod -n kube-system selfhost-trace-worker-1-[0-9a-f]{6}/)
    nock.cleanAll()
  })

  it('keeps trying to delete the pod while the API is away, within bounds (no pod left behind)', async () => {
    nock(FAKE_SERVER)
      .post(podsPath)
      .reply(201, {})
      .get(podPathRe)
      .reply(200, withPhase('Succeeded', {terminated: {exitCode: 0}}))
      .get(logPathRe)
      .reply(200, 'ok')
    const deletion = nock(FAKE_SERVER)
      .delete(podPathRe)
      .replyWithError(Object.assign(new Error('connect ECONNREFUSED'), {code: 'ECONNREFUSED'}))
      .delete(podPathRe)
      .reply(503, {message: 'starting'})
      .delete(podPathRe)
      .reply(200, {})
    const result = await runNodeTask(client, task, opts)
    assert.equal(result.exitCode, 0)
    assert.ok(deletion.isDone(), `pending: ${deletion.pendingMocks().join(', ')}`)
    assert.deepEqual(warnings, [])
  })

  it('deletes the pods of every task running at once before exiting, and exits once', async () => {
    const deleted: string[] = []
    nock(FAKE_SERVER)
      .post(podsPath)
      .times(2)
      .reply(201, {})
      .get(/\/api\/v1\/namespaces\/kube-system\/pods\/selfhost-trace-worker-[12]-[0-9a-f]{6}$/)
      .times(1000)
      .reply(200, withPhase('Running', {running: {}}))
      .delete(/\/api\/v1\/namespaces\/kube-system\/pods\/selfhost-trace-worker-[12]-[0-9a-f]{6}$/)
      .times(2)
      .delay(50)
      .reply(200, (uri) => {
        deleted.push(uri)
        return {}
      })
    const exits: number[] = []
    let exited: () => void
    const done = new Promise<void>((resolve) => (exited = resolve))
    const exit = (code: number) => {
      exits.push(code)
      // Every pod must be gone by the time the process would exit.
      assert.equal(deleted.length, 2, 'both pods deleted before exit')
      exited()
    }

    const running = [task, {...task, node: 'worker-2'}].map((t) => runNodeTask(client, t, {...opts, exitOnSignal: exit}).catch((e: Error) => e))
    await new Promise((resolve) => setTimeout(resolve, 100))
    process.emit('SIGINT', 'SIGINT')
    await done
    await Promise.all(running)
    assert.deepEqual(exits, [130])
    assert.equal(process.listenerCount('SIGINT'), 0)
  })

  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    it(`deletes the pod on ${signal} and exits ${code}`, async () => {
      let deleted = false
      nock(FAKE_SERVER)
        .post(podsPath)
        .reply(201, {})
        .get(podPathRe)
        .times(1000)
        .reply(200, () => {
          // The task is running: the user presses Ctrl-C (or the CLI is told to stop).
          setImmediate(() => process.emit(signal, signal))
          return withPhase('Running', {running: {}})
        })
        .delete(podPathRe)
        .reply(200, () => {
          deleted = true
          return {}
        })
      let running: Promise<unknown> = Promise.resolve()
      const exited = new Promise<number>((resolve) => {
        running = runNodeTask(client, task, {...opts, exitOnSignal: resolve}).catch((e: Error) => e)
      })
      assert.equal(await exited, code)
      assert.ok(deleted, 'pod deleted before exiting')
      assert.match(String(await running), /the trace task on node worker-1 was interrupted/)
      assert.equal(process.listenerCount(signal), 0, 'signal handler removed')
    })
  }
})
