import nock from 'nock'

import type {DiscoveryInputs} from '../../src/controlplane/discover.js'
import {FAKE_SERVER, writeFakeKubeconfig} from './fake-cluster.js'

const KS = '/api/v1/namespaces/kube-system'

/**
 * Serves a cluster's objects over HTTP with nock, each discovery request answered exactly
 * once: a request discovery should not make finds no interceptor and fails the command, and
 * `scope.isDone()` proves every expected one was made.
 */
export function serveDiscovery(inputs: DiscoveryInputs, server = FAKE_SERVER): nock.Scope {
  const minor = Number(/^v?\d+\.(\d+)/.exec(inputs.version.gitVersion)?.[1] ?? 99)
  const scope = nock(server)
    .get('/version')
    .reply(200, inputs.version)
    .get(`${KS}/pods`)
    .reply(200, {kind: 'PodList', items: inputs.pods})
    .get('/api/v1/nodes')
    .reply(200, {kind: 'NodeList', items: inputs.nodes})
    .get('/apis/apps/v1/namespaces/kube-system/daemonsets')
    .reply(200, {kind: 'DaemonSetList', items: inputs.daemonSets})
    .get('/apis/apps/v1/namespaces/kube-system/deployments')
    .reply(200, {kind: 'DeploymentList', items: inputs.deployments})
    .get('/apis/coordination.k8s.io/v1/namespaces/kube-system/leases')
    .reply(200, {kind: 'LeaseList', items: inputs.leases ?? []})
  if (minor < 16) {
    scope.get('/healthz').query({verbose: 'true'}).reply(inputs.readyz.status, inputs.readyz.body)
  } else {
    scope.get('/readyz').query({verbose: 'true'}).reply(inputs.readyz.status, inputs.readyz.body)
    scope.get('/livez').query({verbose: 'true'}).reply(inputs.livez.status, inputs.livez.body)
  }

  if (inputs.endpoints && inputs.endpoints.length > 0) {
    scope.get(`${KS}/endpoints`).reply(200, {kind: 'EndpointsList', items: inputs.endpoints})
  }

  return scope
}

/** Counts the requests a scope answers and the ones nothing answered. */
export function countRequests(scope: nock.Scope): {answered: () => number; unmatched: () => string[]; stop: () => void} {
  let answered = 0
  const unmatched: string[] = []
  const onAnswered = () => answered++
  const onUnmatched = (req: {method?: string; path?: string; href?: string}) => unmatched.push(`${req.method} ${req.path ?? req.href}`)
  scope.on('request', onAnswered)
  nock.emitter.on('no match', onUnmatched)
  return {
    answered: () => answered,
    unmatched: () => unmatched,
    stop: () => {
      scope.removeListener('request', onAnswered)
      nock.emitter.removeListener('no match', onUnmatched)
    },
  }
}

/**
 * Sets up the mocha suite it is called in to run against the nock fake: no real network while
 * the suite runs, every interceptor dropped after each test. Returns a kubeconfig for it, whose
 * context uses `namespace`.
 */
export function fakeApiServerSuite(namespace = 'default'): string {
  before(() => nock.disableNetConnect())
  afterEach(() => nock.cleanAll())
  after(() => nock.enableNetConnect())
  return writeFakeKubeconfig(FAKE_SERVER, namespace)
}
