import {strict as assert} from 'node:assert'
import {mkdtempSync, readdirSync, readFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import nock from 'nock'
import {parse as parseYaml} from 'yaml'

import type {V1DaemonSet, V1Deployment} from '../../src/kube/types.js'
import {type UpgradeResult, runUpgrade} from '../../src/upgrade/execute.js'
import type {UpgradePlan} from '../../src/upgrade/plan.js'
import type {UpgradeComponent} from '../../src/upgrade/skew.js'
import {parseTargetVersion} from '../../src/upgrade/versions.js'
import {ClusterShape, clusterInputs} from '../fixtures/upgrade/cluster.js'
import {withLeasesRenewedNow} from '../helpers/cluster-objects.js'
import {fakeApiServerSuite, serveDiscovery} from '../helpers/fake-api.js'
import {FAKE_SERVER, fakeClient} from '../helpers/fake-cluster.js'
import {runCommand} from '../helpers/run-command.js'

/**
 * The upgrade command against an HTTP fake of the API (nock) that plays the workload
 * controllers just enough: a patch bumps the generation and the status follows, Ready unless
 * the test says the new image never gets there. It proves our wiring (which requests, what
 * the patches say, the order, the rollback, the output, the exit codes); only
 * test/e2e/upgrade.e2e.test.ts proves the API and the real controllers go along.
 */

const KS = '/api/v1/namespaces/kube-system'
const APPS = '/apis/apps/v1/namespaces/kube-system'

interface FakeOptions {
  /** Components whose new image never becomes Ready. */
  neverReady?: UpgradeComponent[]
  /** What /version says after discovery (the apiserver behind the kubeconfig). */
  served?: string
  /** A component someone else changes between our read and our patch. */
  changedBehindOurBack?: UpgradeComponent
  /** Components whose new pods crash-loop (exit 1, restarted 3 times) instead of just not becoming Ready. */
  crashLoop?: UpgradeComponent[]
  /** For this long after the apiserver's patch, /version finds nothing listening (an apiserver going away, a checkpoint taking over). */
  versionOutageMs?: number
  /**
   * A power loss between two components: from the first read of this component's workload after
   * the apiserver's patch, nothing answers for `ms` (reads, patches, /version); then for
   * the next `forbiddenAnswers` workload requests answer 403, as an apiserver that has not loaded
   * its policy yet (counted, not timed: a slow poll cannot step over them).
   */
  outageBefore?: {component: UpgradeComponent; ms: number; forbiddenAnswers: number}
  /**
   * This component's first patch applies, but its answer is lost (the connection reset); then
   * nothing answers for `awayMs` (Infinity: for the rest of the test).
   */
  lostPatchAnswer?: {component: UpgradeComponent; awayMs: number}
  /** Leases read this many times with no holder first, as a leader that released its lock on shutdown leaves them. */
  releasedReads?: number
  /** A checkpoint copy of each component runs on cp-0 (a node back from a power loss) for this many reads of the copies. */
  checkpointCopyReads?: number
}

/** What the client gets when nothing listens on the API's port. */
const refused = () => Object.assign(new Error('connect ECONNREFUSED'), {code: 'ECONNREFUSED'})
/** What the client gets when the server goes away after taking the request. */
const reset = () => Object.assign(new Error('socket hang up'), {code: 'ECONNRESET'})

function serveUpgrade(shape: ClusterShape, fake: FakeOptions = {}) {
  const {raw, workloads} = clusterInputs(shape)
  serveDiscovery(withLeasesRenewedNow(raw))
  const patches: Array<{path: string; body: Record<string, any>}> = []
  const objects = new Map<string, V1DaemonSet | V1Deployment>()
  const original = new Map<string, string>()
  for (const [component, w] of Object.entries(workloads)) {
    const kind = w!.kind === 'DaemonSet' ? 'daemonsets' : 'deployments'
    const path = `${APPS}/${kind}/${w!.object.metadata!.name}`
    w!.object.metadata!.resourceVersion = '100'
    objects.set(path, w!.object)
    original.set(path, w!.object.spec!.template.spec!.containers[0].image!)
    ;(w!.object as {component?: string}).component = component
  }

  let apiserverPatchedAt: number | undefined
  let copyReads = 0
  let powerLossAt: number | undefined
  const sinceLoss = () => (powerLossAt === undefined ? Infinity : Date.now() - powerLossAt)
  const powerLost = () => sinceLoss() < (fake.outageBefore?.ms ?? 0)
  let answerLostAt: number | undefined
  const apiAway = () => powerLost() || (answerLostAt !== undefined && Date.now() - answerLostAt < fake.lostPatchAnswer!.awayMs)
  let forbiddenLeft = fake.outageBefore?.forbiddenAnswers ?? 0
  // Called from reply callbacks (once per request), never from matchers.
  const starting = () => powerLossAt !== undefined && !powerLost() && forbiddenLeft-- > 0
  const inOutage = () =>
    apiAway() || (fake.versionOutageMs !== undefined && apiserverPatchedAt !== undefined && Date.now() - apiserverPatchedAt < fake.versionOutageMs)
  const forbidden = {kind: 'Status', reason: 'Forbidden', message: 'User "kubernetes-admin" cannot get resource'}
  const scope = nock(FAKE_SERVER).persist()
  for (const [path, object] of objects) {
    const at = (uri: string) => uri.split('?')[0] === path
    // Matchers run once per request and interceptor: what they record is set once, whatever the count.
    const powerLossHere = (uri: string) => {
      if (at(uri) && apiserverPatchedAt !== undefined && (object as {component?: string}).component === fake.outageBefore?.component) powerLossAt ??= Date.now()
      return at(uri) && apiAway()
    }

    scope.get(powerLossHere).replyWithError(refused())
    scope.patch((uri) => at(uri) && apiAway()).replyWithError(refused())
    scope.get(path).reply(() => (starting() ? [403, forbidden] : [200, object]))
    scope
      .patch(path)
      .query(true)
      .reply((_uri, body) => {
        if (starting()) return [403, forbidden]
        // nock parses only application/json; a strategic merge patch arrives as text.
        const patch = (typeof body === 'string' ? JSON.parse(body) : body) as Record<string, any>
        patches.push({path, body: patch})
        if ((object as {component?: string}).component === fake.changedBehindOurBack) object.metadata!.resourceVersion = '999'
        if (patch.metadata?.resourceVersion && patch.metadata.resourceVersion !== object.metadata!.resourceVersion) {
          return [409, {kind: 'Status', reason: 'Conflict', message: 'the object has been modified'}]
        }

        const image = patch.spec?.template?.spec?.containers?.[0]?.image
        if (image && path.endsWith('/self-hosted-kube-apiserver')) apiserverPatchedAt ??= Date.now()
        if (image) object.spec!.template.spec!.containers[0].image = image
        if (patch.spec?.updateStrategy) (object as V1DaemonSet).spec!.updateStrategy = patch.spec.updateStrategy
        object.metadata!.generation = (object.metadata!.generation ?? 1) + 1
        object.metadata!.resourceVersion = String(Number(object.metadata!.resourceVersion) + 1)
        const component = (object as {component?: UpgradeComponent}).component!
        const ready = !([...(fake.neverReady ?? []), ...(fake.crashLoop ?? [])].includes(component) && image !== undefined && image !== original.get(path))
        const status = object.status as Record<string, number>
        status.observedGeneration = object.metadata!.generation
        if ('desiredNumberScheduled' in status) {
          Object.assign(status, {
            updatedNumberScheduled: status.desiredNumberScheduled,
            numberReady: ready ? status.desiredNumberScheduled : 0,
            numberAvailable: ready ? status.desiredNumberScheduled : 0,
          })
        } else {
          Object.assign(status, {updatedReplicas: status.replicas, readyReplicas: ready ? status.replicas : 0, availableReplicas: ready ? status.replicas : 0})
        }

        if (component === fake.lostPatchAnswer?.component && answerLostAt === undefined) {
          answerLostAt = Date.now()
          return Promise.reject(reset())
        }

        return [200, object]
      })
  }

  // Clusters up to 1.19 also keep leader records on Endpoints; these have none there.
  scope.get(`${KS}/endpoints`).reply(200, {items: []})
  scope.get('/readyz').query(true).reply(200, '[+]ping ok\nreadyz check passed')
  scope.get((uri) => uri === '/version' && inOutage()).replyWithError(refused())
  scope.get((uri) => uri === '/version' && !inOutage()).reply(200, {gitVersion: fake.served ?? shape.version})
  let renewals = 0
  for (const name of ['kube-controller-manager', 'kube-scheduler']) {
    let released = fake.releasedReads ?? 0
    scope
      .get(`/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/${name}`)
      .reply(() => [
        200,
        released-- > 0
          ? {metadata: {name}, spec: {holderIdentity: '', leaseDurationSeconds: 15}}
          : {metadata: {name}, spec: {holderIdentity: 'cp-0_1234', leaseDurationSeconds: 15, renewTime: new Date(Date.now() + renewals++).toISOString()}},
      ])
  }

  scope
    .get(`${KS}/pods`)
    .query(true)
    .reply((uri) => {
      // No checkpointers on this cluster: upgrade refreshes no checkpoints.
      if (decodeURIComponent(uri).includes('selfhost.kubectl.io/role=checkpointer')) return [200, {items: []}]
      const copyOf = /selfhost\.kubectl\.io\/checkpoint-of=([\w-]+)/.exec(decodeURIComponent(uri))?.[1]
      if (copyOf) {
        const copy = {metadata: {name: `${copyOf}-checkpoint-cp-0`, namespace: 'kube-system'}, spec: {nodeName: 'cp-0'}, status: {phase: 'Running'}}
        return [200, {items: copyReads++ < (fake.checkpointCopyReads ?? 0) ? [copy] : []}]
      }

      const app = decodeURIComponent(uri).match(/k8s-app=([\w-]+)/)![1]
      const object = [...objects.values()].find((o) => o.metadata!.name === app)!
      const container = object.spec!.template.spec!.containers[0]
      const component = (object as {component?: UpgradeComponent}).component!
      if (fake.crashLoop?.includes(component) && container.image !== original.get([...objects].find(([, o]) => o === object)![0])) {
        const crashing = {
          name: container.name,
          ready: false,
          restartCount: 3,
          image: container.image,
          imageID: '',
          state: {waiting: {reason: 'CrashLoopBackOff'}},
          lastState: {terminated: {exitCode: 1, reason: 'Error'}},
        }
        return [
          200,
          {
            items: [
              {
                metadata: {name: `${app}-new`, namespace: 'kube-system', labels: {'k8s-app': app}},
                spec: {nodeName: 'cp-0', hostNetwork: true, containers: [container]},
                status: {phase: 'Running', containerStatuses: [crashing]},
              },
            ],
          },
        ]
      }

      return [
        200,
        {
          items: [
            {
              metadata: {name: `${app}-abc`, namespace: 'kube-system', labels: {'k8s-app': app}},
              spec: {nodeName: 'cp-0', hostNetwork: true, containers: [container]},
              status: {phase: 'Running', conditions: [{type: 'Ready', status: 'True'}]},
            },
          ],
        },
      ]
    })
  return {patches, objects}
}

function assertOneLineError(stderr: string, pattern: RegExp) {
  const lines = stderr.trimEnd().split('\n')
  assert.equal(lines.length, 1, `expected one line, got:\n${stderr}`)
  assert.match(lines[0], /^error: /)
  assert.match(lines[0], pattern)
}

describe('upgrade command (HTTP fake)', function () {
  this.timeout(60_000)
  const kubeconfig = fakeApiServerSuite()
  let backupDir: string
  beforeEach(() => {
    backupDir = mkdtempSync(join(tmpdir(), 'selfhost-upgrade-test-'))
  })

  const upgrade = (...args: string[]) => runCommand(['upgrade', '--kubeconfig', kubeconfig, '--backup-dir', backupDir, ...args])

  for (const [args, pattern] of [
    [['--version', '1.15'], /^error: --version "1\.15" is not a Kubernetes version; use the form v1\.15\.0/],
    [['--version', 'v1.15.0', '--components', 'etcd'], /^error: --components: "etcd" is not one of kube-apiserver/],
    [['--version', 'v1.15.0', '--timeout', 'soon'], /^error: --timeout "soon" is not a duration/],
    [['--version', 'v1.15.0', '-o', 'wide'], /output format|Expected --output=wide to be one of/],
    [[], /^error: Missing required flag version/],
    [['--version'], /^error: Flag --version expects a value/],
  ] as Array<[string[], RegExp]>) {
    it(`bad input ${args.join(' ') || '(no flags)'}: one line, exit 1, no request`, async () => {
      const {stderr, exitCode} = await upgrade(...args)
      assert.equal(exitCode, 1)
      assertOneLineError(stderr, pattern)
    })
  }

  it('--dry-run on the user example (1.14 on k8s.gcr.io -> v1.15.0): the plan, no change', async () => {
    const fake = serveUpgrade({version: 'v1.14.10', registry: 'k8s.gcr.io'})
    const {stdout, stderr, exitCode} = await upgrade('--version', 'v1.15.0', '--dry-run')
    assert.equal(exitCode, 0, stderr)
    assert.equal(fake.patches.length, 0)
    assert.match(stdout, /^Upgrade plan: v1\.14\.10 -> v1\.15\.0 \(upgrade\)$/m)
    assert.match(
      stdout,
      /^1\s+kube-apiserver\s+DaemonSet\/self-hosted-kube-apiserver\s+v1\.14\.10\s+v1\.15\.0\s+k8s\.gcr\.io\/kube-apiserver:v1\.14\.10\s+k8s\.gcr\.io\/kube-apiserver:v1\.15\.0\s+temporary-instance\s+upgrade$/m,
    )
    assert.match(stdout, /^4\s+kube-proxy\s+DaemonSet\/kube-proxy\s/m)
    assert.match(stdout, /kube-apiserver: one control-plane node and no surge \(--permit-port-sharing needs 1\.19/)
    assert.match(stdout, /WARN {2}kube-proxy-matches-kubelets/)
    assert.match(stdout, /The plan can run\.$/m)
    assert.deepEqual(readdirSync(backupDir), [], 'a dry run backs nothing up')
  })

  it('--plan -o json prints the plan object', async () => {
    serveUpgrade({version: 'v1.36.4', portSharing: true})
    const {stdout, exitCode} = await upgrade('--version', 'v1.37.2', '--plan', '-o', 'json')
    assert.equal(exitCode, 0)
    const {plan} = JSON.parse(stdout) as {plan: UpgradePlan}
    assert.equal(plan.components[0].strategy, 'surge')
    assert.deepEqual(plan.order, ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kube-proxy'])
  })

  it('a refused dry run prints the plan and the refusal in one line, exit 1', async () => {
    serveUpgrade({version: 'v1.14.10'})
    const {stdout, stderr, exitCode} = await upgrade('--version', 'v1.16.0', '--dry-run')
    assert.equal(exitCode, 1)
    assert.match(stdout, /FAIL {2}no-skipped-minor/)
    assertOneLineError(stderr, /^error: refused by no-skipped-minor: .* at v1\.14\.10: v1\.16\.0 would skip 1 minor release\(s\)/)
  })

  it('refuses a static control plane with the hint to pivot, changing nothing', async () => {
    const fake = serveUpgrade({version: 'v1.30.2', staticComponents: ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler']})
    const {stderr, exitCode} = await upgrade('--version', 'v1.31.0')
    assert.equal(exitCode, 1)
    assertOneLineError(stderr, /refused by self-hosted: kube-apiserver runs as static pods: run "kubectl selfhost pivot" first/)
    assert.equal(fake.patches.length, 0)
  })

  it('upgrades every component in order, guarded by resourceVersion, with surge on one node, then restores the strategy', async () => {
    const fake = serveUpgrade({version: 'v1.36.4', portSharing: true}, {served: 'v1.37.2'})
    const {stdout, stderr, exitCode} = await upgrade('--version', 'v1.37.2', '--timeout', '10s')
    assert.equal(exitCode, 0, stderr)
    const order = fake.patches.map((p) => `${p.path.split('/').at(-1)} ${p.body.spec?.template?.spec?.containers?.[0]?.image ?? 'strategy'}`)
    assert.deepEqual(order, [
      'self-hosted-kube-apiserver registry.k8s.io/kube-apiserver:v1.37.2',
      'self-hosted-kube-apiserver strategy',
      'self-hosted-kube-controller-manager registry.k8s.io/kube-controller-manager:v1.37.2',
      'self-hosted-kube-scheduler registry.k8s.io/kube-scheduler:v1.37.2',
      'kube-proxy registry.k8s.io/kube-proxy:v1.37.2',
    ])
    assert.deepEqual(fake.patches[0].body, {
      metadata: {resourceVersion: '100'},
      spec: {
        template: {spec: {containers: [{name: 'kube-apiserver', image: 'registry.k8s.io/kube-apiserver:v1.37.2'}]}},
        updateStrategy: {type: 'RollingUpdate', rollingUpdate: {maxSurge: 1, maxUnavailable: 0}},
      },
    })
    assert.deepEqual(fake.patches[1].body, {spec: {updateStrategy: {type: 'RollingUpdate', rollingUpdate: {maxUnavailable: 1, maxSurge: 0}}}})
    assert.match(stderr, /^Upgrade plan: v1\.36\.4 -> v1\.37\.2/m, 'the plan is shown before the change')
    assert.match(stderr, /\[1\/4\] kube-apiserver: v1\.36\.4 -> v1\.37\.2 \(surge\)/)
    assert.match(stderr, /gate: \/version v1\.37\.2/)
    assert.match(stderr, /gate: leader cp-0 \(self-hosted-kube-scheduler-abc, registry\.k8s\.io\/kube-scheduler:v1\.37\.2\), renewed/)
    assert.match(
      stdout,
      /^kube-apiserver\s+registry\.k8s\.io\/kube-apiserver:v1\.36\.4\s+registry\.k8s\.io\/kube-apiserver:v1\.37\.2\s+registry\.k8s\.io\/kube-apiserver:v1\.37\.2\s+upgraded\s+\d+s/m,
    )
    assert.match(stdout, /Upgraded to v1\.37\.2\.$/m)
    // The backup holds each workload as it was before the change.
    const saved = parseYaml(readFileSync(join(backupDir, 'self-hosted-kube-apiserver.yaml'), 'utf8'))
    assert.equal(saved.spec.template.spec.containers[0].image, 'registry.k8s.io/kube-apiserver:v1.36.4')
  })

  it('a lease released by the old leader on its way out is waited on, not taken for "no leader election" (seen on a real node)', async () => {
    serveUpgrade({version: 'v1.36.4', portSharing: true}, {served: 'v1.37.2', releasedReads: 1})
    const {stdout, stderr, exitCode} = await upgrade('--version', 'v1.37.2', '--timeout', '10s')
    assert.equal(exitCode, 0, stderr)
    assert.match(stderr, /gate: lock released by the previous leader, no holder yet/)
    assert.match(stderr, /gate: leader cp-0 \(self-hosted-kube-scheduler-abc, registry\.k8s\.io\/kube-scheduler:v1\.37\.2\), renewed/)
    assert.doesNotMatch(stdout + stderr, /no leader record/)
  })

  it('a node back from a power loss runs its checkpoint copy: the gate waits for the copy to step aside before it judges the new version', async () => {
    serveUpgrade({version: 'v1.36.4', portSharing: true}, {served: 'v1.37.2', checkpointCopyReads: 2})
    const {stdout, stderr, exitCode} = await upgrade('--version', 'v1.37.2', '--timeout', '20s')
    assert.equal(exitCode, 0, stderr)
    const lines = stderr.split('\n')
    const copyLine = lines.findIndex((l) => /gate: the checkpoint copy of kube-apiserver still runs on cp-0/.test(l))
    assert.ok(copyLine >= 0, stderr)
    assert.ok(copyLine < lines.findIndex((l) => /gate: \/version v1\.37\.2/.test(l)), 'the copy is waited for first')
    assert.match(stdout, /Upgraded to v1\.37\.2\./)
  })

  it('an API that stops answering during the gates (the apiserver it replaces going away) is waited for within --timeout, not taken as a failure', async () => {
    serveUpgrade({version: 'v1.36.4', portSharing: true}, {served: 'v1.37.2', versionOutageMs: 2500})
    const {stdout, stderr, exitCode} = await upgrade('--version', 'v1.37.2', '--timeout', '20s')
    assert.equal(exitCode, 0, stderr)
    assert.match(stderr, /gate: the API does not answer \(cannot reach the API server at https:\/\/fake-cluster\.test:6443: connection refused/)
    assert.match(stderr, /gate: \/version v1\.37\.2/)
    assert.match(stdout, /Upgraded to v1\.37\.2\./)
  })

  it('a power loss between two components (reads and patches refused, then 403 from a starting apiserver) is waited for, and the run goes on', async () => {
    const fake = serveUpgrade(
      {version: 'v1.36.4', portSharing: true},
      {served: 'v1.37.2', outageBefore: {component: 'kube-controller-manager', ms: 2500, forbiddenAnswers: 2}},
    )
    const {stdout, stderr, exitCode} = await upgrade('--version', 'v1.37.2', '--timeout', '20s')
    assert.equal(exitCode, 0, stderr)
    const lines = stderr.split('\n')
    const away = lines.findIndex((l) =>
      /waiting: the API does not answer \(cannot reach the API server at https:\/\/fake-cluster\.test:6443: connection refused/.test(l),
    )
    const starting = lines.findIndex((l) => /waiting: the API answers 403 after an outage \(a starting apiserver\)/.test(l))
    const patched = lines.findIndex((l) =>
      /patched Deployment kube-system\/self-hosted-kube-controller-manager: kube-controller-manager=registry\.k8s\.io\/kube-controller-manager:v1\.37\.2/.test(
        l,
      ),
    )
    assert.ok(away > lines.findIndex((l) => /kube-apiserver upgraded in/.test(l)), stderr)
    assert.ok(away < starting && starting < patched, stderr)
    assert.match(stdout, /Upgraded to v1\.37\.2\./)
    const controllerManager = fake.patches.filter((p) => p.path.endsWith('/self-hosted-kube-controller-manager'))
    assert.deepEqual(
      controllerManager.map((p) => p.body.spec.template.spec.containers[0].image),
      ['registry.k8s.io/kube-controller-manager:v1.37.2'],
      'one patch, sent once the API answered again',
    )
  })

  it('a patch whose answer was lost is sent again once the API answers; the conflict with our own change counts as done', async () => {
    const fake = serveUpgrade(
      {version: 'v1.36.4', portSharing: true, versions: {'kube-apiserver': 'v1.37.2'}},
      {served: 'v1.37.2', lostPatchAnswer: {component: 'kube-scheduler', awayMs: 1500}},
    )
    const {stdout, stderr, exitCode} = await upgrade('--version', 'v1.37.2', '--timeout', '20s')
    assert.equal(exitCode, 0, stderr)
    assert.match(stderr, /waiting: the API does not answer \(the API server at https:\/\/fake-cluster\.test:6443 closed the connection/)
    const scheduler = fake.patches.filter((p) => p.path.endsWith('/self-hosted-kube-scheduler'))
    assert.deepEqual(
      scheduler.map((p) => p.body.metadata?.resourceVersion),
      ['100', '100'],
      'the same guarded patch twice: applied, then refused (409) because it had applied',
    )
    assert.doesNotMatch(stderr, /rolling kube-scheduler back/)
    assert.match(stdout, /Upgraded to v1\.37\.2\./)
  })

  it('a patch whose answer was lost and that no retry settles is reported as possibly applied, not as "nothing was changed"', async () => {
    serveUpgrade(
      {version: 'v1.36.4', portSharing: true, versions: {'kube-apiserver': 'v1.37.2'}},
      {served: 'v1.37.2', lostPatchAnswer: {component: 'kube-scheduler', awayMs: Infinity}},
    )
    const {stderr, exitCode} = await upgrade('--version', 'v1.37.2', '--timeout', '3s')
    assert.equal(exitCode, 1, stderr)
    assert.match(
      stderr.trimEnd().split('\n').at(-1)!,
      /^error: kube-scheduler: timed out after 3s waiting for the API to take the patch of Deployment kube-system\/self-hosted-kube-scheduler .*; its patch may have applied before the API went away \(the answer was lost\): check with `kubectl selfhost status`, then run the upgrade again \(kube-controller-manager already upgraded\)$/,
    )
  })

  it('a new pod that keeps crashing ends the wait at once, with its reason, and is rolled back (exit 3)', async () => {
    serveUpgrade({version: 'v1.36.4', portSharing: true}, {crashLoop: ['kube-apiserver'], served: 'v1.36.4'})
    const started = Date.now()
    const {stdout, stderr, exitCode} = await upgrade('--version', 'v1.37.2', '--timeout', '60s', '-o', 'json')
    assert.equal(exitCode, 3, stderr)
    assert.ok(Date.now() - started < 30_000, 'long before the 60s timeout')
    const {result} = JSON.parse(stdout) as {result: UpgradeResult}
    assert.deepEqual(
      result.components.map((c) => [c.component, c.result]),
      [
        ['kube-apiserver', 'rolled-back'],
        ['kube-controller-manager', 'not-started'],
        ['kube-scheduler', 'not-started'],
        ['kube-proxy', 'not-started'],
      ],
    )
    assert.match(
      result.failure!,
      /^kube-apiserver: DaemonSet kube-system\/self-hosted-kube-apiserver cannot roll out: pod self-hosted-kube-apiserver-new on cp-0: its kube-apiserver container keeps crashing \(3 restarts, last exit code 1 Error\); see kubectl -n kube-system logs self-hosted-kube-apiserver-new --previous$/,
    )
  })

  it('rolls a component back when its new pods never become Ready, stops, and exits 3', async () => {
    const fake = serveUpgrade(
      {version: 'v1.36.4', portSharing: true, versions: {'kube-apiserver': 'v1.37.2'}},
      {neverReady: ['kube-scheduler'], served: 'v1.37.2'},
    )
    const {stdout, stderr, exitCode} = await upgrade('--version', 'v1.37.2', '--timeout', '2s', '-o', 'json')
    assert.equal(exitCode, 3, stderr)
    const {result} = JSON.parse(stdout) as {result: UpgradeResult}
    assert.equal(result.outcome, 'rolled-back')
    assert.deepEqual(
      result.components.map((c) => [c.component, c.result]),
      [
        ['kube-apiserver', 'skipped'],
        ['kube-controller-manager', 'upgraded'],
        ['kube-scheduler', 'rolled-back'],
        ['kube-proxy', 'not-started'],
      ],
    )
    assert.match(
      result.failure!,
      /^kube-scheduler: timed out after 2s waiting for Deployment kube-system\/self-hosted-kube-scheduler to roll out \(0\/1 ready, 1 updated, 1 existing\)$/,
    )
    const scheduler = fake.patches.filter((p) => p.path.endsWith('self-hosted-kube-scheduler'))
    assert.deepEqual(
      scheduler.map((p) => p.body.spec.template.spec.containers[0].image),
      ['registry.k8s.io/kube-scheduler:v1.37.2', 'registry.k8s.io/kube-scheduler:v1.36.4'],
    )
    assert.equal(scheduler[1].body.metadata, undefined, 'a rollback is not guarded: it must apply')
    assert.ok(!fake.patches.some((p) => p.path.endsWith('/kube-proxy')), 'nothing after the failed component is touched')
    assert.match(stderr, /rolling kube-scheduler back to registry\.k8s\.io\/kube-scheduler:v1\.36\.4/)
    assert.match(stderr, /kube-scheduler is back on registry\.k8s\.io\/kube-scheduler:v1\.36\.4 and healthy/)
  })

  it('a patch refused because someone changed the workload meanwhile is not "rolled back" over their change', async () => {
    const fake = serveUpgrade({version: 'v1.36.4', versions: {'kube-apiserver': 'v1.37.2'}}, {changedBehindOurBack: 'kube-scheduler', served: 'v1.37.2'})
    const {stderr, exitCode} = await upgrade('--version', 'v1.37.2', '--timeout', '5s')
    assert.equal(exitCode, 1)
    assert.match(
      stderr.trimEnd().split('\n').at(-1)!,
      /^error: kube-scheduler: patch deployments "self-hosted-kube-scheduler" in namespace "kube-system" failed \(409 Conflict\): the object has been modified; nothing was changed on kube-scheduler \(kube-controller-manager already upgraded\)$/,
    )
    assert.equal(fake.patches.filter((p) => p.path.endsWith('self-hosted-kube-scheduler')).length, 1, 'no rollback patch over their change')
    assert.ok(!fake.patches.some((p) => p.path.endsWith('/kube-proxy')))
  })

  it('the apiserver /version gate: Ready pods serving another version are rolled back', async () => {
    const fake = serveUpgrade({version: 'v1.36.4', controlPlaneNodes: 3}, {served: 'v1.36.4'})
    const {stdout, exitCode} = await upgrade('--version', 'v1.37.2', '--components', 'apiserver', '--timeout', '2s')
    assert.equal(exitCode, 3)
    assert.match(stdout, /Stopped and rolled back: kube-apiserver: timed out after 2s waiting for \/version to report v1\.37\.2 \(\/version v1\.36\.4\)/)
    assert.deepEqual(
      fake.patches.map((p) => p.body.spec.template.spec.containers[0].image),
      ['registry.k8s.io/kube-apiserver:v1.37.2', 'registry.k8s.io/kube-apiserver:v1.36.4'],
    )
  })

  it('one old single node: a temporary apiserver stands by and is removed afterwards', async () => {
    const fake = serveUpgrade({version: 'v1.18.20', registry: 'k8s.gcr.io'}, {served: 'v1.19.0'})
    const temp = `${APPS}/daemonsets/selfhost-upgrade-temp-self-hosted-kube-apiserver`
    const applied: Array<Record<string, any>> = []
    let deleted = false
    nock(FAKE_SERVER)
      .patch(temp)
      .query({fieldManager: 'kubectl-selfhost', force: 'true'})
      .reply((_uri, body) => {
        applied.push((typeof body === 'string' ? JSON.parse(body) : body) as Record<string, any>)
        return [200, applied.at(-1)]
      })
      .get(temp)
      .reply(200, {status: {desiredNumberScheduled: 1, currentNumberScheduled: 1}})
      // The first removal meets the API away (the old pod gone, the new one not yet serving).
      .delete(temp)
      .replyWithError(refused())
      .delete(temp)
      .reply(() => {
        deleted = true
        return [200, {}]
      })
    const {stderr, exitCode} = await upgrade('--version', 'v1.19.0', '--components', 'apiserver', '--timeout', '5s')
    assert.equal(exitCode, 0, stderr)
    assert.equal(applied.length, 1)
    assert.equal(applied[0].spec.template.spec.containers[0].image, 'k8s.gcr.io/kube-apiserver:v1.18.20', 'the stand-in runs the old, known-good image')
    assert.deepEqual(applied[0].spec.selector.matchLabels, {'k8s-app': 'selfhost-upgrade-temp-self-hosted-kube-apiserver'})
    assert.equal(
      applied[0].spec.template.metadata.labels['k8s-app'],
      'selfhost-upgrade-temp-self-hosted-kube-apiserver',
      'the real DaemonSet must not adopt its pods',
    )
    assert.ok(deleted, 'removed once the API answered again')
    assert.match(
      stderr,
      /started temporary DaemonSet .*\n(.*\n)*.*patched DaemonSet kube-system\/self-hosted-kube-apiserver(.*\n)*.*waiting: the API does not answer(.*\n)*.*removed temporary DaemonSet/,
    )
    assert.equal(fake.patches[0].body.spec.template.spec.containers[0].image, 'k8s.gcr.io/kube-apiserver:v1.19.0')
  })
  it('a checkpoint refresh that failed is a warning until a later one succeeds; one that fails last stays', async () => {
    // The command wires the real refresher (node tasks on a cluster with checkpointers, none on
    // this fake); the rule about its warnings lives in the executor, driven here with a stand-in.
    serveUpgrade({version: 'v1.36.4', portSharing: true}, {served: 'v1.37.2'})
    const client = await fakeClient()
    const refreshed: string[] = []
    const failing = new Set(['kube-apiserver', 'kube-proxy'])
    const {result} = await runUpgrade(client, {
      target: parseTargetVersion('v1.37.2'),
      force: false,
      allowDowngrade: false,
      dryRun: false,
      execute: {
        timeoutMs: 10_000,
        backupDir,
        onProgress: () => undefined,
        refreshCheckpoints: async (component) => {
          refreshed.push(component)
          if (failing.has(component)) throw new Error('node cp-0 did not answer')
          return 'checkpoints refreshed on cp-0'
        },
      },
    })
    assert.equal(result?.outcome, 'upgraded')
    assert.deepEqual(refreshed, ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kube-proxy'])
    assert.deepEqual(
      result.warnings.filter((w) => /checkpoints were not refreshed/.test(w)),
      ['kube-proxy upgraded, but its checkpoints were not refreshed (node cp-0 did not answer); run `kubectl selfhost pivot` to rewrite them'],
      "the apiserver's failed refresh was made good by the controller-manager's",
    )
  })
})
