import assert from 'node:assert/strict'

import nock from 'nock'

import {FAKE_SERVER, fakeClient} from '../../helpers/fake-cluster.js'

describe('KubeClient.canI (SelfSubjectAccessReview)', () => {
  before(() => nock.disableNetConnect())
  afterEach(() => nock.cleanAll())
  after(() => nock.enableNetConnect())

  /** Answers one review with the verdict, keeping the resource attributes the client sent. */
  function review(allowed: boolean): Array<Record<string, unknown>> {
    const sent: Array<Record<string, unknown>> = []
    nock(FAKE_SERVER)
      .post('/apis/authorization.k8s.io/v1/selfsubjectaccessreviews')
      .reply(201, (_uri, body) => {
        sent.push((body as {spec: {resourceAttributes: Record<string, unknown>}}).spec.resourceAttributes)
        return {status: {allowed}}
      })
    return sent
  }

  it('asks about a subresource (pods/log) when given one', async () => {
    const client = await fakeClient()
    const sent = review(false)
    assert.equal(await client.canI('get', 'pods', 'kube-system', '', 'log'), false)
    assert.deepEqual(sent, [{verb: 'get', resource: 'pods', namespace: 'kube-system', group: '', subresource: 'log'}])
  })

  it('leaves subresource out otherwise, as before', async () => {
    const client = await fakeClient()
    const sent = review(true)
    assert.equal(await client.canI('patch', 'deployments', 'kube-system', 'apps'), true)
    assert.deepEqual(sent, [{verb: 'patch', resource: 'deployments', namespace: 'kube-system', group: 'apps'}])
  })
})
