import {strict as assert} from 'node:assert'
import {mkdtempSync, readFileSync, readdirSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {parse as parseYaml, parseAllDocuments, stringify as toYaml} from 'yaml'

import {KubeClient} from '../../src/kube/client.js'
import {ensureBuilt, repoRoot} from '../helpers/build.js'
import type {TestCluster} from './cluster/harness.js'
import {eventually, runBuiltCli, startTestClusterOrSkip} from './support.js'

/**
 * The roles in manifests/rbac/ on the test cluster's real API server (RBAC authorizer): each
 * command run as a ServiceAccount bound only to the roles its manifests name for it works, and
 * with one verb it needs taken away it fails in one line naming that verb. test/unit/rbac.test.ts
 * holds the same roles to the requests the commands make, without a cluster.
 */

interface ClusterRole {
  apiVersion: string
  kind: 'ClusterRole'
  metadata: {name: string; annotations: Record<string, string>}
  rules: Array<{apiGroups?: string[]; resources?: string[]; nonResourceURLs?: string[]; verbs: string[]}>
}

const roles: ClusterRole[] = readdirSync(join(repoRoot, 'manifests/rbac'))
  .filter((f) => f.endsWith('.yaml'))
  .flatMap((f) => parseAllDocuments(readFileSync(join(repoRoot, 'manifests/rbac', f), 'utf8')).map((d) => d.toJS() as ClusterRole))
const rolesFor = (command: string) => roles.filter((r) => r.metadata.annotations['selfhost.kubectl.io/commands'].split(' ').includes(command))
const RBAC = 'rbac.authorization.k8s.io/v1'
const SUBJECT_NAMESPACE = 'default'

describe('RBAC roles (e2e): each command as a user bound only to its roles', function () {
  this.timeout(900_000)
  let cluster: TestCluster | undefined
  let admin: KubeClient
  const kubeconfigs: Record<'reader' | 'operator', string> = {reader: '', operator: ''}

  const selfhost = (who: 'reader' | 'operator', ...args: string[]) => runBuiltCli([...args, '--kubeconfig', kubeconfigs[who]])

  /** A ServiceAccount bound to the roles of `commands`, each as its selfhost.kubectl.io/bind says, and a kubeconfig with its token. */
  async function user(name: 'reader' | 'operator', commands: string[]): Promise<string> {
    await admin.apply('v1', 'serviceaccounts', {apiVersion: 'v1', kind: 'ServiceAccount', metadata: {name: `selfhost-${name}`, namespace: SUBJECT_NAMESPACE}})
    const subjects = [{kind: 'ServiceAccount', name: `selfhost-${name}`, namespace: SUBJECT_NAMESPACE}]
    for (const role of new Set(commands.flatMap(rolesFor))) {
      const roleRef = {apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role.metadata.name}
      const bindingName = `selfhost-${name}-${role.metadata.name}`
      if (role.metadata.annotations['selfhost.kubectl.io/bind'] === 'cluster') {
        await admin.apply(RBAC, 'clusterrolebindings', {apiVersion: RBAC, kind: 'ClusterRoleBinding', metadata: {name: bindingName}, roleRef, subjects})
      } else {
        // kube-system, and the node pods' namespace, which is kube-system by default.
        await admin.apply(RBAC, 'rolebindings', {
          apiVersion: RBAC,
          kind: 'RoleBinding',
          metadata: {name: bindingName, namespace: 'kube-system'},
          roleRef,
          subjects,
        })
      }
    }

    const token = await admin.request<{status: {token: string}}>('POST', `/api/v1/namespaces/${SUBJECT_NAMESPACE}/serviceaccounts/selfhost-${name}/token`, {
      body: {apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: {expirationSeconds: 3600}},
      intent: {verb: 'create', resource: 'serviceaccounts/token'},
    })
    const adminConfig = parseYaml(readFileSync(cluster!.kubeconfig, 'utf8'))
    const file = join(mkdtempSync(join(tmpdir(), `selfhost-rbac-${name}-`)), 'config')
    writeFileSync(
      file,
      toYaml({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: adminConfig.clusters,
        users: [{name, user: {token: token.status.token}}],
        contexts: [{name, context: {cluster: adminConfig.clusters[0].name, user: name}}],
        'current-context': name,
      }),
    )
    return file
  }

  /** Applies roles again without one verb, runs `check`, and puts the roles back. */
  async function withoutVerb(roleNames: string[], resource: string, verb: string, check: () => Promise<void>): Promise<void> {
    const originals = roleNames.map((name) => roles.find((r) => r.metadata.name === name)!)
    for (const role of originals) {
      const reduced = structuredClone(role)
      const rule = reduced.rules.find((r) => r.resources?.includes(resource))!
      reduced.rules = reduced.rules.filter((r) => r !== rule)
      const verbs = rule.verbs.filter((v) => v !== verb)
      if (verbs.length > 0) reduced.rules.push({...rule, resources: [resource], verbs})
      if (rule.resources!.length > 1) reduced.rules.push({...rule, resources: rule.resources!.filter((r) => r !== resource)})
      await admin.apply(RBAC, 'clusterroles', reduced)
    }

    try {
      await check()
    } finally {
      for (const role of originals) await admin.apply(RBAC, 'clusterroles', role)
    }
  }

  /**
   * The command fails (exit 1) with a stderr line saying what was refused, eventually (RBAC
   * changes reach the authorizer within a moment). `logs` reports each instance's refusal on its
   * own line and then that it read none.
   */
  async function refusedWith(run: () => ReturnType<typeof selfhost>, line: RegExp): Promise<void> {
    let last = ''
    await eventually(`a refusal matching ${line}`, 30_000, async () => {
      const result = await run()
      last = result.stderr
      return result.exitCode === 1 && result.stderr.split('\n').some((l) => line.test(l)) ? true : undefined
    }).catch((error) => {
      throw new Error(`${error.message}; last stderr:\n${last}`)
    })
  }

  before(async function () {
    await ensureBuilt()
    cluster = await startTestClusterOrSkip(this, 'rbac', {controlPlaneNodes: 1, workers: 1, kubeadmVersion: 'v1.36.4'})
    admin = await KubeClient.connect({kubeconfig: cluster.kubeconfig})
    for (const role of roles) await admin.apply(RBAC, 'clusterroles', role)
    // Tokens and node pods need the service-account machinery up.
    await eventually('the default service accounts', 60_000, async () => {
      const [a, b] = await Promise.all(
        [SUBJECT_NAMESPACE, 'kube-system'].map((ns) =>
          admin.raw('GET', `/api/v1/namespaces/${ns}/serviceaccounts/default`, {intent: {verb: 'get', resource: 'serviceaccounts'}}),
        ),
      )
      return a.status === 200 && b.status === 200 ? true : undefined
    })
    kubeconfigs.reader = await user('reader', ['status', 'logs', 'trace'])
    kubeconfigs.operator = await user('operator', ['pivot', 'revert', 'upgrade', 'scale'])
  })

  after(async () => {
    await cluster?.stop()
  })

  const assertNoRefusal = (what: string, result: {exitCode?: number; stderr: string}, exitCodes: number[]) => {
    assert.ok(exitCodes.includes(result.exitCode ?? -1), `${what}: exit ${result.exitCode}\n${result.stderr}`)
    assert.doesNotMatch(result.stderr, /forbidden|403/, what)
  }

  it('reader: status, logs and live trace work', async () => {
    assertNoRefusal('status', await selfhost('reader', 'status'), [0, 2])
    const logs = await selfhost('reader', 'logs', 'kube-apiserver', '--tail', '1')
    assertNoRefusal('logs', logs, [0])
    assert.match(logs.stdout, /^\[control-plane-1\/kube-apiserver-control-plane-1\] /m)
    const worker = cluster!.nodes.find((n) => n.role === 'worker')!.name
    assertNoRefusal('trace', await selfhost('reader', 'trace', 'svc/kubernetes', '-n', 'default', '--node', worker), [0, 2])
  })

  it('reader without one verb: one line naming it', async () => {
    await withoutVerb(['kubectl-selfhost-reader-control-plane'], 'leases', 'list', () =>
      refusedWith(() => selfhost('reader', 'status'), /^error: forbidden \(403\): you may not list leases\.coordination\.k8s\.io in namespace "kube-system"/),
    )
    // Both roles grant it in kube-system, where the node pods run by default.
    await withoutVerb(['kubectl-selfhost-reader-control-plane', 'kubectl-selfhost-node-tasks'], 'pods/log', 'get', () =>
      refusedWith(
        () => selfhost('reader', 'logs', 'kube-apiserver'),
        /forbidden \(403\): you may not get pods\/log "kube-apiserver-control-plane-1" in namespace "kube-system"/,
      ),
    )
    const worker = cluster!.nodes.find((n) => n.role === 'worker')!.name
    await withoutVerb(['kubectl-selfhost-node-tasks'], 'pods', 'create', () =>
      refusedWith(
        () => selfhost('reader', 'trace', 'svc/kubernetes', '-n', 'default', '--node', worker),
        /forbidden \(403\): you may not create pods in namespace "kube-system"/,
      ),
    )
  })

  it('operator: pivot, scale, upgrade and revert work', async () => {
    assertNoRefusal('pivot', await selfhost('operator', 'pivot', '--timeout', '3m'), [0])
    assertNoRefusal('scale', await selfhost('operator', 'scale', 'scheduler', '--replicas', '2', '--timeout', '2m'), [0])
    const backups = mkdtempSync(join(tmpdir(), 'selfhost-rbac-upgrade-'))
    assertNoRefusal('upgrade', await selfhost('operator', 'upgrade', '--version', 'v1.37.2', '--backup-dir', backups, '--timeout', '2m'), [0])
    assertNoRefusal('revert', await selfhost('operator', 'revert', '--timeout', '3m'), [0])
  })

  it('operator without one verb: one line naming it', async () => {
    // After revert the control plane is static again: pivot checks its permissions before changing anything.
    await withoutVerb(['kubectl-selfhost-operator-control-plane'], 'daemonsets', 'create', () =>
      refusedWith(() => selfhost('operator', 'pivot'), /not allowed to create daemonsets\.apps/),
    )
    // The node-task role grants it too (pivot looks for leftover node pods), in kube-system by default.
    await withoutVerb(['kubectl-selfhost-operator-control-plane', 'kubectl-selfhost-node-tasks'], 'pods', 'list', () =>
      refusedWith(
        () => selfhost('operator', 'upgrade', '--version', 'v1.37.2', '--dry-run'),
        /^error: forbidden \(403\): you may not list pods in namespace "kube-system"/,
      ),
    )
  })
})
