import {strict as assert} from 'node:assert'

import {PREVIOUS_REPLICAS_ANNOTATION} from '../../src/scale/execute.js'
import {fakeApiServerSuite} from '../helpers/fake-api.js'
import {serveCluster} from '../helpers/scale-cluster.js'
import {runCommand} from '../helpers/run-command.js'

/**
 * The scale command against an HTTP fake of the API (nock). It proves our wiring: which
 * requests go out in which order, what the patch says, how the outcome is printed. It
 * cannot prove the API accepts the patch: test/e2e/scale.e2e.test.ts does that.
 */

describe('scale command (HTTP fake)', function () {
  this.timeout(30_000)
  const kubeconfig = fakeApiServerSuite()

  it('--dry-run shows the change, the leader and the standbys to be, and writes nothing', async () => {
    const fake = serveCluster(1)
    const {stdout, stderr, exitCode} = await runCommand(['scale', 'scheduler', '--replicas', '3', '--dry-run', '--kubeconfig', kubeconfig])
    assert.equal(exitCode, 0, stderr)
    assert.equal(fake.patches.length, 0)
    assert.match(stdout, /scale Deployment kube-system\/self-hosted-kube-scheduler from 1 to 3 replicas \(dry run: nothing changed\)/)
    assert.match(stdout, /nodes it can run on: cp-1, cp-2, cp-3/)
    assert.match(stdout, /leader now: +cp-1 \(pod self-hosted-kube-scheduler-\S+ on cp-1\)/)
    assert.match(stdout, /effect: +self-hosted-kube-scheduler-\S+ keeps leading; the 2 new replicas join as standbys/)
    assert.match(stdout, /standbys, not throughput/)
  })

  it('scales 1 -> 3: patches with the version it planned from, waits, shows one leader and two standbys, sees the lease renewed', async () => {
    const fake = serveCluster(1)
    const {stdout, stderr, exitCode} = await runCommand(['scale', 'kube-scheduler', '--replicas', '3', '--kubeconfig', kubeconfig])
    assert.equal(exitCode, 0, stderr)
    assert.deepEqual(fake.patches, [{metadata: {resourceVersion: '100', annotations: {[PREVIOUS_REPLICAS_ANNOTATION]: '1'}}, spec: {replicas: 3}}])
    assert.match(stderr, /waiting for the controller to see generation 2/)
    assert.match(stdout, /\n\n3\/3 replicas ready\n/)
    const roles = stdout.split('\n').filter((l) => /^(leader|standby) /.test(l))
    assert.equal(roles.length, 3)
    assert.match(roles[0], /^leader +self-hosted-kube-scheduler-\S+ +cp-1 +true$/)
    assert.match(roles[1], /^standby +\S+ +cp-2 +true$/)
    assert.match(roles[2], /^standby +\S+ +cp-3 +true$/)
    assert.match(stdout, /lease kube-system\/kube-scheduler renewed by cp-1 \d+\.\ds after the change \(allowed: 17s\)/)
  })

  it('scales 3 -> 1 with -o json: the result object holds plan, rollout, leadership and renewal', async () => {
    serveCluster(3)
    const {stdout, stderr, exitCode} = await runCommand(['scale', 'scheduler', '--replicas', '1', '-o', 'json', '--kubeconfig', kubeconfig])
    assert.equal(exitCode, 0, stderr)
    const result = JSON.parse(stdout)
    assert.equal(result.plan.change, 'down')
    assert.deepEqual(result.plan.leadership.expectedRemovals, result.plan.leadership.standbys.slice().reverse())
    assert.equal(result.plan.leadership.possibleRemovals, undefined)
    assert.deepEqual(result.rollout, {desired: 1, ready: 1, updated: 1, current: 1})
    assert.equal(result.leadership.leader.node, 'cp-1')
    assert.deepEqual(result.leadership.standbys, [])
    assert.equal(result.renewal.renewed, true)
  })

  it('follows the lock named by --leader-elect-resource-name, not the default one', async () => {
    serveCluster(1, {leaseName: 'scheduler-blue'})
    const {stdout, stderr, exitCode} = await runCommand(['scale', 'scheduler', '--replicas', '2', '-o', 'json', '--kubeconfig', kubeconfig])
    assert.equal(exitCode, 0, stderr)
    const result = JSON.parse(stdout)
    assert.deepEqual(result.plan.leaderElection.lease, {namespace: 'kube-system', name: 'scheduler-blue'})
    assert.equal(result.plan.leadership.leader.holder, 'cp-1')
    assert.equal(result.leadership.leader.holder, 'cp-1')
    assert.equal(result.renewal.lease, 'kube-system/scheduler-blue')
    assert.equal(result.renewal.renewed, true)
  })

  it('rolls back when the new replicas never get Ready, and exits 3', async () => {
    const fake = serveCluster(1)
    fake.newPodsNeverReady = true
    const {stdout, stderr, exitCode} = await runCommand(['scale', 'scheduler', '--replicas', '3', '--timeout', '2s', '--kubeconfig', kubeconfig])
    assert.equal(exitCode, 3)
    // The plan was shown before the change, so what was attempted is on screen.
    assert.match(stdout, /^scale Deployment kube-system\/self-hosted-kube-scheduler from 1 to 3 replicas\n/)
    assert.equal(fake.patches.length, 2)
    assert.deepEqual((fake.patches[1] as {spec: unknown}).spec, {replicas: 1})
    assert.match(stderr, /error: the 3 replicas did not get Ready: timed out after 2s .*; rolled back to 1 replica, Ready again\n$/)
  })

  it('refuses bad input in one line before connecting', async () => {
    for (const [argv, message] of [
      [['scale', 'scheduler', '--replicas=-1'], /^error: --replicas -1: a replica count cannot be negative; use 0 or more\n$/],
      [['scale', 'scheduler', '--replicas', '1.5'], /^error: --replicas "1.5" is not a whole number; use 0, 1, 2, \.\.\.\n$/],
      [['scale', 'schedular', '--replicas', '2'], /^error: unknown component "schedular"; known: kube-scheduler, scheduler, /],
      [['scale', 'scheduler'], /^error: Missing required flag replicas \(see --help\)\n$/],
    ] as const) {
      const {stderr, exitCode} = await runCommand([...argv, '--kubeconfig', kubeconfig])
      assert.equal(exitCode, 1)
      assert.match(stderr, message)
    }
  })

  it('refuses 0 without --force, saying what would break', async () => {
    const fake = serveCluster(1)
    const {stderr, exitCode} = await runCommand(['scale', 'scheduler', '--replicas', '0', '--kubeconfig', kubeconfig])
    assert.equal(exitCode, 1)
    assert.equal(fake.patches.length, 0)
    assert.match(stderr, /^error: refusing to scale kube-scheduler to 0: .*nothing schedules pods.*add --force if you mean it\n$/)
  })

  it('explains the apiserver instead of scaling it', async () => {
    serveCluster(1)
    const {stderr, exitCode} = await runCommand(['scale', 'apiserver', '--replicas', '5', '--kubeconfig', kubeconfig])
    assert.equal(exitCode, 1)
    assert.match(stderr, /^error: kube-apiserver runs as static pods on cp-1, cp-2, cp-3 from \/etc\/kubernetes\/manifests, .*pivot/)
  })
})
