import {strict as assert} from 'node:assert'
import {getEventListeners} from 'node:events'

import type {V1Deployment} from '../../../src/kube/types.js'
import {CliError} from '../../../src/errors.js'
import {ApiStatusError, ApiUnreachableError} from '../../../src/kube/errors.js'
import {TimeoutError, daemonSetRollout, deploymentRollout, pollUntil, waitForRollout} from '../../../src/kube/wait.js'

function deployment(replicas: number, generation: number, status: V1Deployment['status']): V1Deployment {
  return {metadata: {name: 'self-hosted-kube-scheduler', namespace: 'kube-system', generation}, spec: {replicas, selector: {}, template: {}}, status}
}

describe('kube/wait: rollout status', () => {
  const cases: Array<[string, V1Deployment, number | undefined, boolean, RegExp]> = [
    [
      'controller has not seen the change',
      deployment(3, 2, {observedGeneration: 1, replicas: 1, updatedReplicas: 1, readyReplicas: 1}),
      undefined,
      false,
      /waiting for the controller to see generation 2/,
    ],
    [
      'new replicas not ready yet',
      deployment(3, 2, {observedGeneration: 2, replicas: 3, updatedReplicas: 3, readyReplicas: 1}),
      undefined,
      false,
      /1\/3 ready, 3 updated, 3 existing/,
    ],
    [
      'all ready',
      deployment(3, 2, {observedGeneration: 2, replicas: 3, updatedReplicas: 3, readyReplicas: 3, availableReplicas: 3}),
      undefined,
      true,
      /3\/3 ready/,
    ],
    [
      'scale-down still has extra pods',
      deployment(1, 3, {observedGeneration: 3, replicas: 3, updatedReplicas: 3, readyReplicas: 3}),
      undefined,
      false,
      /3\/1 ready, 3 updated, 3 existing/,
    ],
    ['scaled to zero', deployment(0, 4, {observedGeneration: 4}), undefined, true, /0\/0 ready/],
    [
      'fewer can be ready than asked: target reached',
      deployment(5, 2, {observedGeneration: 2, replicas: 5, updatedReplicas: 5, readyReplicas: 3}),
      3,
      true,
      /3\/5 ready.*\(3 can be ready\)/,
    ],
  ]
  for (const [name, d, target, done, progress] of cases) {
    it(name, () => {
      const status = deploymentRollout(d, target)
      assert.equal(status.done, done)
      assert.match(status.progress, progress)
    })
  }

  it('fails fast when the Deployment exceeded its progress deadline', () => {
    const d = deployment(3, 2, {
      observedGeneration: 2,
      conditions: [{type: 'Progressing', status: 'False', reason: 'ProgressDeadlineExceeded', message: 'ReplicaSet "x" has timed out progressing.'}],
    })
    assert.throws(() => deploymentRollout(d), /stopped progressing: ReplicaSet "x" has timed out progressing/)
  })

  it('reads DaemonSet status', () => {
    const ds = {
      metadata: {generation: 2},
      status: {
        observedGeneration: 2,
        desiredNumberScheduled: 3,
        currentNumberScheduled: 3,
        numberMisscheduled: 0,
        updatedNumberScheduled: 3,
        numberReady: 2,
        numberAvailable: 2,
      },
    }
    assert.equal(daemonSetRollout(ds).done, false)
    assert.equal(daemonSetRollout({...ds, status: {...ds.status, numberReady: 3, numberAvailable: 3}}).done, true)
  })
})

describe('kube/wait: polling', () => {
  it('polls until done, reporting each change of progress once', async () => {
    let clock = 0
    const seen: string[] = []
    const answers = [
      deployment(3, 2, {observedGeneration: 1}),
      deployment(3, 2, {observedGeneration: 2, replicas: 3, updatedReplicas: 3, readyReplicas: 1}),
      deployment(3, 2, {observedGeneration: 2, replicas: 3, updatedReplicas: 3, readyReplicas: 1}),
      deployment(3, 2, {observedGeneration: 2, replicas: 3, updatedReplicas: 3, readyReplicas: 3}),
    ]
    let calls = 0
    const api = {getDeployment: async () => answers[calls++], getDaemonSet: async () => assert.fail('not a DaemonSet')}
    const status = await waitForRollout(
      api,
      {kind: 'Deployment', namespace: 'kube-system', name: 'x'},
      {
        timeoutMs: 60_000,
        onProgress: (line) => seen.push(line),
        now: () => clock,
        sleep: async (ms) => {
          clock += ms
        },
      },
    )
    assert.equal(status.ready, 3)
    assert.equal(calls, 4)
    assert.equal(clock, 3000)
    assert.deepEqual(seen, ['waiting for the controller to see generation 2', '1/3 ready, 3 updated, 3 existing', '3/3 ready, 3 updated, 3 existing'])
  })

  it("waits through an API that does not answer only when asked to, and through a starting apiserver's 403/5xx only after an outage", async () => {
    const unreachable = new ApiUnreachableError(
      'cannot reach the API server at https://cp-1:6443: connection refused; is the cluster running and is the context right?',
    )
    const forbidden = new ApiStatusError('get daemonsets failed (403 Forbidden)', 403)
    const answers = (...errors: Error[]) => {
      let calls = 0
      return async () => {
        if (calls < errors.length) throw errors[calls++]
        return {done: true, value: 'served', progress: 'ok'}
      }
    }
    const seen: string[] = []
    // Refused, then the 403 of an apiserver still starting, then served: one wait, one memory.
    assert.equal(
      await pollUntil(answers(unreachable, unreachable, forbidden), {
        timeoutMs: 60_000,
        intervalMs: 1,
        what: 'x',
        throughApiOutage: {},
        onProgress: (l) => seen.push(l),
      }),
      'served',
    )
    assert.match(seen[0], /^the API does not answer \(cannot reach the API server at https:\/\/cp-1:6443: connection refused/)
    assert.equal(seen[1], 'the API answers 403 after an outage (a starting apiserver); waiting for it')
    // An apiserver shutting down answers 503 before it stops listening: the outage has begun.
    const shuttingDown = new ApiStatusError('list pods in namespace "kube-system" failed (503 ServiceUnavailable): apiserver is shutting down', 503)
    seen.length = 0
    assert.equal(
      await pollUntil(answers(shuttingDown, forbidden), {timeoutMs: 60_000, intervalMs: 1, what: 'x', throughApiOutage: {}, onProgress: (l) => seen.push(l)}),
      'served',
    )
    assert.deepEqual(seen.slice(0, 2), [
      'the API answers 503 (an apiserver shutting down); waiting for it',
      'the API answers 403 after an outage (a starting apiserver); waiting for it',
    ])
    await assert.rejects(
      pollUntil(answers(new ApiStatusError('get pods failed (503 ServiceUnavailable): the server is busy', 503)), {
        timeoutMs: 60_000,
        intervalMs: 1,
        what: 'x',
        throughApiOutage: {},
      }),
      /server is busy/,
    )
    // Not asked: the outage ends the wait. A 403 with no outage before it is a real refusal.
    await assert.rejects(pollUntil(answers(unreachable), {timeoutMs: 60_000, intervalMs: 1, what: 'x'}), ApiUnreachableError)
    await assert.rejects(pollUntil(answers(forbidden), {timeoutMs: 60_000, intervalMs: 1, what: 'x', throughApiOutage: {}}), /403 Forbidden/)
    await assert.rejects(
      pollUntil(answers(new CliError('something else')), {timeoutMs: 60_000, intervalMs: 1, what: 'x', throughApiOutage: {}}),
      /something else/,
    )
    // Waits that share the memory share the outage; two minutes later a 403 is real again.
    let clock = 0
    const memory = {}
    const clocked = {
      intervalMs: 1,
      now: () => clock,
      sleep: async (ms: number) => {
        clock += ms
      },
    }
    assert.equal(await pollUntil(answers(unreachable), {...clocked, timeoutMs: 60_000, what: 'x', throughApiOutage: memory}), 'served')
    assert.equal(await pollUntil(answers(forbidden), {...clocked, timeoutMs: 60_000, what: 'y', throughApiOutage: memory}), 'served')
    clock += 120_000
    await assert.rejects(pollUntil(answers(forbidden), {...clocked, timeoutMs: 60_000, what: 'z', throughApiOutage: memory}), /403 Forbidden/)
    await assert.rejects(
      pollUntil(
        async () => {
          throw unreachable
        },
        {
          timeoutMs: 3000,
          what: 'the gate',
          throughApiOutage: {},
          now: () => clock,
          sleep: async (ms) => {
            clock += ms
          },
        },
      ),
      /^TimeoutError: timed out after 3s waiting for the gate \(the API does not answer/,
    )
  })

  it('waits through every failure but a 404 when asked to (a node task), and a deadline keeps the last failure', async () => {
    const failing = new ApiStatusError('get pods failed (500): etcd is sad', 500)
    let calls = 0
    const recovers = async () => {
      if (calls++ < 2) throw failing
      return {done: true, value: 'served', progress: 'ok'}
    }
    assert.equal(await pollUntil(recovers, {timeoutMs: 60_000, intervalMs: 1, what: 'x', throughApiOutage: {}, everyFailureIsOutage: true}), 'served')
    const notFound = new ApiStatusError('not found (404): pods "x"', 404)
    await assert.rejects(
      pollUntil(
        async () => {
          throw notFound
        },
        {timeoutMs: 60_000, intervalMs: 1, what: 'x', throughApiOutage: {}, everyFailureIsOutage: true},
      ),
      /not found/,
    )
    let clock = 0
    await assert.rejects(
      pollUntil(
        async () => {
          throw failing
        },
        {
          timeoutMs: 3000,
          what: 'the task',
          throughApiOutage: {},
          everyFailureIsOutage: true,
          now: () => clock,
          sleep: async (ms) => {
            clock += ms
          },
        },
      ),
      (err: unknown) =>
        err instanceof TimeoutError && err.lastFailure === failing && /the API fails \(get pods failed \(500\): etcd is sad\)/.test(err.message),
    )
  })

  it('stops at once when the signal aborted while the probe ran', async () => {
    const controller = new AbortController()
    const started = Date.now()
    const probe = async () => {
      controller.abort()
      return {done: false, value: 0, progress: 'running'}
    }
    await assert.rejects(pollUntil(probe, {timeoutMs: 60_000, intervalMs: 10_000, signal: controller.signal, what: 'x'}))
    assert.ok(Date.now() - started < 5000)
  })

  it('a long wait on a signal leaves no abort listener behind per poll (node warned past 10 on a real upgrade)', async () => {
    const controller = new AbortController()
    let polls = 0
    await pollUntil(async () => ({done: ++polls === 15, value: 0, progress: `poll ${polls}`}), {
      timeoutMs: 60_000,
      intervalMs: 1,
      signal: controller.signal,
      what: 'x',
    })
    assert.equal(polls, 15)
    assert.equal(getEventListeners(controller.signal, 'abort').length, 0)
  })

  it('turns a deadline into one line naming what it waited for and where it stood', async () => {
    let clock = 0
    await assert.rejects(
      pollUntil(async () => ({done: false, value: 0, progress: '1/3 ready'}), {
        timeoutMs: 5000,
        what: 'Deployment kube-system/x to roll out',
        now: () => clock,
        sleep: async (ms) => {
          clock += ms
        },
      }),
      (err: unknown) => err instanceof CliError && err.message === 'timed out after 5s waiting for Deployment kube-system/x to roll out (1/3 ready)',
    )
    assert.equal(clock, 5000)
  })
})
