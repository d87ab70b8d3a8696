import assert from 'node:assert/strict'
import {mkdtempSync, readFileSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {stringify as toYaml} from 'yaml'

import {Authenticator} from '../../../src/kube/auth.js'
import {kubeconfigFiles, mergeKubeconfigs, selectContext} from '../../../src/kube/config.js'
import {ClusterAccess, clusterAccess} from '../../../src/kube/credentials.js'

const dir = mkdtempSync(join(tmpdir(), 'selfhost-credentials-'))

function access(cluster: Record<string, unknown>, user: Record<string, unknown>, folder = mkdtempSync(join(dir, 'kc-'))): ClusterAccess {
  const file = join(folder, 'config')
  writeFileSync(
    file,
    toYaml({
      'current-context': 'c',
      clusters: [{name: 'c', cluster: {server: 'https://10.0.0.1:6443/', ...cluster}}],
      users: [{name: 'u', user}],
      contexts: [{name: 'c', context: {cluster: 'c', user: 'u', namespace: 'ops'}}],
    }),
  )
  const merged = mergeKubeconfigs(kubeconfigFiles(file))
  return clusterAccess(merged, selectContext(merged))
}

const b64 = (text: string) => Buffer.from(text).toString('base64')

describe('kubeconfig credentials (read as client-go reads them)', () => {
  it('takes the server without its trailing slash and the context namespace', () => {
    const a = access({}, {token: 't'})
    assert.equal(a.server, 'https://10.0.0.1:6443')
    assert.equal(a.namespace, 'ops')
  })

  it("reads relative files and an exec command given as a path against the kubeconfig's folder, a bare command from PATH", () => {
    const folder = mkdtempSync(join(dir, 'kc-'))
    writeFileSync(join(folder, 'ca.crt'), 'ca')
    const exec = {apiVersion: 'client.authentication.k8s.io/v1', interactiveMode: 'Never'}
    assert.equal(access({'certificate-authority': 'ca.crt'}, {exec: {...exec, command: './bin/plugin'}}, folder).exec?.command, join(folder, 'bin', 'plugin'))
    assert.equal(access({}, {exec: {...exec, command: 'aws'}}).exec?.command, 'aws')
  })

  it("hands an exec plugin the cluster (provideClusterInfo) in client-go's field names, with the extension config", () => {
    const a = access(
      {'certificate-authority-data': b64('CA'), 'tls-server-name': 'api', extensions: [{name: 'client.authentication.k8s.io/exec', extension: {k: 'v'}}]},
      {exec: {apiVersion: 'client.authentication.k8s.io/v1', command: 'p', interactiveMode: 'Never', provideClusterInfo: true}},
    )
    assert.deepEqual(a.execCluster, {server: 'https://10.0.0.1:6443', 'tls-server-name': 'api', 'certificate-authority-data': b64('CA'), config: {k: 'v'}})
  })

  it('refuses what kubectl refuses, in one line', () => {
    const cases: Array<[Record<string, unknown>, Record<string, unknown>, RegExp]> = [
      [{'insecure-skip-tls-verify': true, 'certificate-authority-data': b64('CA')}, {}, /both insecure-skip-tls-verify and a certificate authority/],
      [{}, {token: 't', username: 'u', password: 'p'}, /both a token and a username\/password/],
      [{}, {'client-certificate-data': b64('C')}, /certificate without a key/],
      [{}, {'client-certificate-data': 'not base64!'}, /not valid base64/],
      [{}, {exec: {command: 'p'}, 'auth-provider': {name: 'oidc'}}, /both exec and auth-provider/],
      [{server: ''}, {}, /has no server address/],
      [{'certificate-authority': '/ca.crt', 'certificate-authority-data': b64('CA')}, {}, /both certificate-authority-data and certificate-authority/],
    ]
    for (const [cluster, user, pattern] of cases) {
      assert.throws(
        () => access(cluster, user),
        (error: Error) => pattern.test(error.message) && !error.message.includes('\n'),
        `${JSON.stringify(user)}`,
      )
    }
  })
})

describe('Authenticator', () => {
  /** A plugin that counts its runs and returns a token that expired a second ago. */
  function expiringPlugin(): {command: string; runs: () => number} {
    const folder = mkdtempSync(join(dir, 'plugin-'))
    const log = join(folder, 'runs')
    writeFileSync(log, '')
    const script = join(folder, 'plugin.mjs')
    writeFileSync(
      script,
      `import {appendFileSync} from 'node:fs'
appendFileSync(${JSON.stringify(log)}, 'x')
console.log(JSON.stringify({kind: 'ExecCredential', apiVersion: 'client.authentication.k8s.io/v1', status: {token: 'old', expirationTimestamp: new Date(Date.now() - 1000).toISOString()}}))`,
    )
    return {command: script, runs: () => readFileSync(log, 'utf8').length}
  }

  it('runs an exec plugin again once the credential it returned has expired', async () => {
    const plugin = expiringPlugin()
    const auth = new Authenticator(
      access({}, {exec: {apiVersion: 'client.authentication.k8s.io/v1', command: process.execPath, args: [plugin.command], interactiveMode: 'Never'}}),
      false,
    )
    await auth.current()
    await auth.current()
    assert.equal(plugin.runs(), 2)
  })

  it('reads a token file once, and again after the server rejected it (401)', async () => {
    const tokenFile = join(mkdtempSync(join(dir, 'tok-')), 'token')
    writeFileSync(tokenFile, 'first\n')
    const auth = new Authenticator(access({}, {tokenFile}), false)
    assert.deepEqual((await auth.current()).headers, [['Authorization', 'Bearer first']])
    writeFileSync(tokenFile, 'second\n')
    assert.deepEqual((await auth.current()).headers, [['Authorization', 'Bearer first']], 'cached within the minute')
    auth.forget()
    assert.deepEqual((await auth.current()).headers, [['Authorization', 'Bearer second']])
  })

  it('refuses interactiveMode Always without a terminal, as kubectl does', async () => {
    const auth = new Authenticator(access({}, {exec: {apiVersion: 'client.authentication.k8s.io/v1', command: 'p', interactiveMode: 'Always'}}), false)
    await assert.rejects(auth.current(), /needs a terminal/)
  })
})
