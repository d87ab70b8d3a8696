import assert from 'node:assert/strict'
import {mkdtempSync, readFileSync, readdirSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {dirname, join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'

import {execa} from 'execa'
import nock from 'nock'
import {parseAllDocuments} from 'yaml'

import {type NodeTask, deleteFinishedNodeTasks} from '../../src/node/runner.js'
import type {PivotClusterApi} from '../../src/pivot/cluster.js'
import {PivotRunner} from '../../src/pivot/execute.js'
import {FAKE_SERVER, fakeClient} from '../helpers/fake-cluster.js'
import {RecordedRequest, interceptRequests} from '../helpers/request-recorder.js'
import {FakeControlPlane} from './pivot/fake-control-plane.js'

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const SYSTEM_NAMESPACE = 'kube-system'

/**
 * Rules the code needs that no test without a cluster exercises yet, each with the reason. The
 * e2e suite (test/e2e/rbac.e2e.test.ts) runs the commands under these roles for real. Once a
 * test reaches one, this test fails until it is taken off the list.
 */
const NOT_YET_EXERCISED: Record<string, string> = {
  'kubectl-selfhost-reader-control-plane list configmaps':
    'status on clusters whose leader lock is a ConfigMap (--leader-elect-resource-lock=configmaps), which no command test builds',
}

interface Rule {
  apiGroups?: string[]
  resources?: string[]
  nonResourceURLs?: string[]
  verbs: string[]
}

interface Role {
  name: string
  commands: string[]
  bind: 'cluster' | 'kube-system' | 'node-task-namespace'
  rules: Rule[]
}

/** What RBAC sees of a request: as the API server's request-info parser derives it. */
interface Attributes {
  verb: string
  group?: string
  resource?: string
  namespace?: string
  url?: string
}

function loadRoles(): Role[] {
  const dir = join(repoRoot, 'manifests', 'rbac')
  return readdirSync(dir)
    .filter((f) => f.endsWith('.yaml'))
    .flatMap((f) => parseAllDocuments(readFileSync(join(dir, f), 'utf8')).map((d) => d.toJS()))
    .map((doc) => {
      assert.equal(doc.kind, 'ClusterRole', `${doc.metadata?.name}: every role is a ClusterRole; bindings give the scope`)
      const annotations = doc.metadata.annotations ?? {}
      return {
        name: doc.metadata.name,
        commands: String(annotations['selfhost.kubectl.io/commands'] ?? '')
          .split(/\s+/)
          .filter(Boolean),
        bind: annotations['selfhost.kubectl.io/bind'],
        rules: doc.rules,
      }
    })
}

/** The verbs RBAC checks for one request (a server-side apply may create, so it needs both). */
export function attributesOf(request: Pick<RecordedRequest, 'method' | 'path' | 'contentType'>): Attributes[] {
  const match = /^\/api\/v1(\/.*)?$/.exec(request.path) ?? /^\/apis\/([^/]+)\/[^/]+(\/.*)?$/.exec(request.path)
  if (!match) return [{verb: request.method.toLowerCase(), url: request.path}]
  const group = request.path.startsWith('/api/') ? '' : match[1]
  let parts = (match.at(-1) ?? '').split('/').filter(Boolean).map(decodeURIComponent)
  let namespace: string | undefined
  if (parts[0] === 'namespaces' && parts.length >= 3) {
    namespace = parts[1]
    parts = parts.slice(2)
  } else if (parts[0] === 'namespaces' && parts.length === 2) {
    // The API server files a namespace object under its own namespace: a Role there reaches it.
    namespace = parts[1]
  }

  const [resource, name, sub] = parts
  const full = sub ? `${resource}/${sub}` : resource
  const verbs = {
    GET: [name ? 'get' : 'list'],
    POST: ['create'],
    PUT: ['update'],
    PATCH: request.contentType === 'application/apply-patch+yaml' ? ['patch', 'create'] : ['patch'],
    DELETE: [name ? 'delete' : 'deletecollection'],
  }[request.method]
  assert.ok(verbs, `unknown method ${request.method}`)
  return verbs.map((verb) => ({verb, group, resource: full, namespace}))
}

const describeAttributes = (a: Attributes) =>
  a.url ? `${a.verb} ${a.url}` : `${a.verb} ${a.group ? `${a.resource}.${a.group}` : a.resource}${a.namespace ? ` in ${a.namespace}` : ''}`

function ruleAllows(rule: Rule, a: Attributes): boolean {
  if (!rule.verbs.includes(a.verb)) return false
  if (a.url) return rule.nonResourceURLs?.includes(a.url) ?? false
  return (rule.apiGroups?.includes(a.group!) ?? false) && (rule.resources?.includes(a.resource!) ?? false)
}

function inScope(role: Role, a: Attributes, nodeTaskNamespaces: Set<string>): boolean {
  if (role.bind === 'cluster') return true
  if (a.url || !a.namespace) return false
  return role.bind === 'kube-system' ? a.namespace === SYSTEM_NAMESPACE : nodeTaskNamespaces.has(a.namespace)
}

/** The requests of each command's tests (test/commands, run again with a recorder), and the node task runner's. */
async function recordCommandTests(): Promise<RecordedRequest[]> {
  const out = join(mkdtempSync(join(tmpdir(), 'selfhost-rbac-')), 'requests.jsonl')
  const files = readdirSync(join(repoRoot, 'test/commands'))
    .filter((f) => f.endsWith('.test.ts'))
    .map((f) => `test/commands/${f}`)
  const run = await execa(
    join(repoRoot, 'node_modules/.bin/mocha'),
    ['--reporter', 'dot', '--require', 'test/helpers/request-recorder.ts', ...files, 'test/unit/node/runner.test.ts'],
    {
      cwd: repoRoot,
      env: {SELFHOST_RECORD_REQUESTS: out},
      reject: false,
      all: true,
    },
  )
  assert.equal(run.exitCode, 0, `the command tests must pass to be recorded:\n${run.all?.slice(-3000)}`)
  return readFileSync(out, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as RecordedRequest)
}

/** Where the recorded pivot and revert run their node pods: not kube-system, whose other roles would hide what the node-task role lacks. */
const PIVOT_TASK_NAMESPACE = 'node-tasks'

/**
 * pivot and revert have no HTTP-level command test: their executor runs against a fake control
 * plane. Each call it makes on that fake is made again on a real KubeClient (answered by nock) so
 * the request it becomes is recorded; a node task stands for the node runner's requests, made in
 * PIVOT_TASK_NAMESPACE.
 */
async function recordPivotAndRevert(): Promise<{requests: RecordedRequest[]; nodeTasks: Set<string>}> {
  const requests: RecordedRequest[] = []
  const nodeTasks = new Set<string>()
  let source = ''
  const client = await fakeClient()
  nock.disableNetConnect()
  nock.enableNetConnect('127.0.0.1')
  for (const method of ['GET', 'POST', 'PATCH', 'DELETE']) nock(FAKE_SERVER).persist().intercept(/.*/, method).reply(200, '{}')
  const stop = interceptRequests((r) => {
    if (source) requests.push({source, ...r})
  })
  const fake = new FakeControlPlane(['cp-1', 'cp-2'])
  fake.install(join(repoRoot, 'test/fixtures/kubeadm/v1.29.4'), '10.0.0.10')
  try {
    const api = new Proxy(fake.api, {
      get(target, property: keyof PivotClusterApi) {
        const call = target[property] as unknown
        if (typeof call !== 'function') return call
        return async (...args: unknown[]) => {
          const result = await (call as (...a: unknown[]) => Promise<unknown>).apply(target, args)
          await ((client as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[property] as (...a: unknown[]) => Promise<unknown>)
            .apply(client, args)
            .catch(() => undefined)
          return result
        }
      },
    }) as PivotClusterApi
    const runner = () =>
      new PivotRunner(
        {
          api,
          runTask: (task: NodeTask, opts?: {signal?: AbortSignal}) => {
            nodeTasks.add(source)
            return fake.runTask(task, opts)
          },
          cleanupTasks: (namespace) => deleteFinishedNodeTasks(api, namespace),
          log: () => undefined,
          sleep: () => new Promise((r) => setImmediate(r)),
        },
        {image: 'alpine', pollMs: 1, timeoutMs: 1500, handoffDeadlineSeconds: 3, handoffSettleSeconds: 0, namespace: PIVOT_TASK_NAMESPACE},
      )
    source = 'pivot'
    assert.equal((await runner().pivot()).outcome, 'completed')
    source = 'revert'
    assert.equal((await runner().revert()).exitCode, 0)
  } finally {
    source = ''
    stop()
    nock.cleanAll()
    nock.enableNetConnect()
  }

  return {requests, nodeTasks}
}

describe('RBAC roles (manifests/rbac/) against the requests each command makes', function () {
  this.timeout(240_000)
  const roles = loadRoles()
  /** command -> every RBAC check its requests need. */
  const needs = new Map<string, Attributes[]>()
  let nodeTaskNamespaces = new Set<string>()

  before(async () => {
    const [recorded, pivot] = await Promise.all([recordCommandTests(), recordPivotAndRevert()])
    const runnerRequests = recorded.filter((r) => r.source === 'file:runner.test.ts')
    const add = (command: string, attributes: Attributes[]) => needs.set(command, [...(needs.get(command) ?? []), ...attributes])
    for (const r of [...recorded, ...pivot.requests]) if (!r.source.startsWith('file:')) add(r.source === 'health' ? 'status' : r.source, attributesOf(r))
    const inTaskNamespace = (a: Attributes) => (a.namespace === SYSTEM_NAMESPACE ? {...a, namespace: PIVOT_TASK_NAMESPACE} : a)
    for (const command of pivot.nodeTasks) add(command, runnerRequests.flatMap(attributesOf).map(inTaskNamespace))
    nodeTaskNamespaces = new Set(
      [...needs.values()]
        .flat()
        .filter((a) => a.verb === 'create' && a.resource === 'pods')
        .map((a) => a.namespace!),
    )
  })

  it('recorded every command that talks to a cluster', () => {
    assert.deepEqual([...needs.keys()].sort(), ['logs', 'pivot', 'revert', 'scale', 'status', 'trace', 'upgrade'])
  })

  it('uses no wildcard and names the commands and scope of every role', () => {
    for (const role of roles) {
      assert.ok(role.commands.length > 0, `${role.name}: no selfhost.kubectl.io/commands`)
      assert.ok(['cluster', 'kube-system', 'node-task-namespace'].includes(role.bind), `${role.name}: selfhost.kubectl.io/bind`)
      for (const rule of role.rules) {
        for (const value of [...(rule.apiGroups ?? []), ...(rule.resources ?? []), ...(rule.nonResourceURLs ?? []), ...rule.verbs]) {
          assert.ok(!value.includes('*'), `${role.name}: wildcard ${value}`)
        }
      }
    }
  })

  it("allows every request of each command through that command's roles alone", () => {
    const refused: string[] = []
    for (const [command, attributes] of needs) {
      const mine = roles.filter((r) => r.commands.includes(command))
      assert.ok(mine.length > 0, `no role names the command ${command}`)
      for (const a of attributes) {
        if (!mine.some((role) => inScope(role, a, nodeTaskNamespaces) && role.rules.some((rule) => ruleAllows(rule, a))))
          refused.push(`${command}: ${describeAttributes(a)}`)
      }
    }

    assert.deepEqual([...new Set(refused)].sort(), [])
  })

  it('grants nothing that none of its commands uses', () => {
    const unused: string[] = []
    const exercised: string[] = []
    for (const role of roles) {
      const attributes = role.commands.flatMap((c) => needs.get(c) ?? []).filter((a) => inScope(role, a, nodeTaskNamespaces))
      for (const rule of role.rules) {
        const grants: Attributes[] = rule.nonResourceURLs
          ? rule.nonResourceURLs.flatMap((url) => rule.verbs.map((verb) => ({verb, url})))
          : rule.apiGroups!.flatMap((group) => rule.resources!.flatMap((resource) => rule.verbs.map((verb) => ({verb, group, resource}))))
        for (const grant of grants) {
          const key = `${role.name} ${grant.verb} ${grant.url ?? (grant.group ? `${grant.resource}.${grant.group}` : grant.resource)}`
          const used = attributes.some(
            (a) => a.verb === grant.verb && (grant.url ? a.url === grant.url : a.group === grant.group && a.resource === grant.resource),
          )
          if (used && key in NOT_YET_EXERCISED) exercised.push(key)
          if (!used && !(key in NOT_YET_EXERCISED)) unused.push(key)
        }
      }
    }

    assert.deepEqual(unused, [], 'rules no command needs: remove them')
    assert.deepEqual(exercised, [], 'now exercised by a test: take them off NOT_YET_EXERCISED')
  })

  it('derives RBAC verbs from requests as the API server does', () => {
    assert.deepEqual(attributesOf({method: 'GET', path: '/api/v1/namespaces/kube-system/pods/p1/log'}), [
      {verb: 'get', group: '', resource: 'pods/log', namespace: 'kube-system'},
    ])
    assert.deepEqual(attributesOf({method: 'GET', path: '/apis/apps/v1/namespaces/kube-system/daemonsets'}), [
      {verb: 'list', group: 'apps', resource: 'daemonsets', namespace: 'kube-system'},
    ])
    assert.deepEqual(
      attributesOf({method: 'PATCH', path: '/apis/apps/v1/namespaces/kube-system/daemonsets/x', contentType: 'application/apply-patch+yaml'}).map(
        (a) => a.verb,
      ),
      ['patch', 'create'],
    )
    assert.deepEqual(attributesOf({method: 'GET', path: '/api/v1/nodes'}), [{verb: 'list', group: '', resource: 'nodes', namespace: undefined}])
    assert.deepEqual(attributesOf({method: 'GET', path: '/readyz'}), [{verb: 'get', url: '/readyz'}])
  })
})
