import assert from 'node:assert/strict'
import {copyFileSync, mkdtempSync, readFileSync, writeFileSync} from 'node:fs'
import http from 'node:http'
import {type AddressInfo, type Socket, connect} from 'node:net'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {execa} from 'execa'
import nock from 'nock'
import {stringify as toYaml} from 'yaml'

import {KubeClient, REQUEST_CONNECTIONS} from '../../../src/kube/client.js'
import {ensureBinaries} from '../../e2e/cluster/binaries.js'
import {inCI} from '../../helpers/ci.js'
import {onPath} from '../../helpers/build.js'
import {RecordingServer, SeenRequest, TestPki, makePki} from './tls-server.js'

/** A fake credential plugin: logs what it was given (KUBERNETES_EXEC_INFO, env, args), prints an ExecCredential. */
const PLUGIN = `
import {appendFileSync, readFileSync} from 'node:fs'
const [log, apiVersion, mode, cert, key] = process.argv.slice(2)
appendFileSync(log, JSON.stringify({info: JSON.parse(process.env.KUBERNETES_EXEC_INFO ?? 'null'), extra: process.env.PLUGIN_EXTRA}) + '\\n')
if (mode === 'fail') { console.error('plugin: no credentials for you'); process.exit(3) }
const status = mode === 'cert' ? {clientCertificateData: readFileSync(cert, 'utf8'), clientKeyData: readFileSync(key, 'utf8')} : {token: 'exec-token', expirationTimestamp: '2999-01-01T00:00:00Z'}
console.log(JSON.stringify({kind: 'ExecCredential', apiVersion, status}))
`

/** A JWT whose exp is in the year 2100: a valid-looking oidc id-token that needs no refresh. */
const ID_TOKEN = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from('{"exp":4102444800,"sub":"alice"}').toString('base64url')}.c2ln`

interface Outcome {
  ok: boolean
  message: string
  /** The credentials the server saw on the /version request. */
  seen?: Pick<SeenRequest, 'authorization' | 'impersonation' | 'clientCertificate'>
}

/** The kubectl to compare with: the one build.sh builds (the pinned release), else any on PATH. */
let kubectl: string | undefined

describe('cluster credentials, compared with kubectl against one TLS server', function () {
  this.timeout(60_000)
  let pki: TestPki
  let server: RecordingServer
  let dir: string
  let pluginLog: string
  let nockWasActive = false

  // nock, which other suites of the same mocha run load, replaces node's HTTP client wholesale
  // (sockets of its own, no agents, no proxies): connections are counted on the real one.
  before(() => {
    nockWasActive = nock.isActive()
    if (nockWasActive) nock.restore()
  })
  after(() => {
    if (nockWasActive) nock.activate()
  })

  before(async function () {
    kubectl = await ensureBinaries().then(
      (dir) => join(dir, 'kubectl'),
      () => onPath('kubectl'),
    )
    if (!kubectl) {
      if (inCI()) throw new Error('no kubectl (test/e2e/cluster/build.sh builds one): these tests compare with it')
      this.skip()
    }

    pki = makePki()
    server = new RecordingServer(pki)
    await server.start()
    dir = mkdtempSync(join(tmpdir(), 'selfhost-auth-'))
    writeFileSync(join(dir, 'plugin.mjs'), PLUGIN)
    pluginLog = join(dir, 'plugin.log')
  })
  after(async () => server?.stop())

  function kubeconfig(cluster: Record<string, unknown>, user: Record<string, unknown>, folder = mkdtempSync(join(dir, 'kc-'))): string {
    const file = join(folder, 'config')
    writeFileSync(
      file,
      toYaml({
        apiVersion: 'v1',
        kind: 'Config',
        'current-context': 'test',
        clusters: [{name: 'test', cluster: {server: server.url, ...cluster}}],
        users: [{name: 'tester', user}],
        contexts: [{name: 'test', context: {cluster: 'test', user: 'tester'}}],
      }),
    )
    return file
  }

  const trusted = () => ({'certificate-authority': pki.caCert})

  function seenOnVersion(): Outcome['seen'] {
    const request = server.requests.find((r) => r.path === '/version')
    return request && {authorization: request.authorization, impersonation: request.impersonation, clientCertificate: request.clientCertificate}
  }

  /** Runs kubectl without blocking: the server it talks to lives in this process. */
  async function viaKubectl(file: string): Promise<Outcome> {
    server.reset()
    const home = mkdtempSync(join(dir, 'home-'))
    const result = await execa(kubectl!, ['--kubeconfig', file, 'get', '--raw', '/version'], {
      env: {PATH: process.env.PATH, HOME: home},
      extendEnv: false,
      reject: false,
      stdin: 'ignore',
    })
    return {ok: result.exitCode === 0, message: result.stderr, seen: seenOnVersion()}
  }

  async function viaClient(file: string): Promise<Outcome> {
    server.reset()
    try {
      const client = await KubeClient.connect({kubeconfig: file, requestTimeoutMs: 10_000})
      await client.version()
      return {ok: true, message: '', seen: seenOnVersion()}
    } catch (error) {
      return {ok: false, message: (error as Error).message, seen: seenOnVersion()}
    }
  }

  /** Both succeed and the server saw the same credentials from each, or both fail. */
  async function sameAsKubectl(file: string): Promise<{kubectl: Outcome; ours: Outcome}> {
    const theirs = await viaKubectl(file)
    const ours = await viaClient(file)
    assert.equal(
      ours.ok,
      theirs.ok,
      `kubectl ${theirs.ok ? 'succeeded' : `failed: ${theirs.message}`}; we ${ours.ok ? 'succeeded' : `failed: ${ours.message}`}`,
    )
    if (theirs.ok) assert.deepEqual(ours.seen, theirs.seen)
    return {kubectl: theirs, ours}
  }

  const pluginRuns = () =>
    readFileSync(pluginLog, 'utf8')
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as {info: unknown; extra?: string})

  describe('credentials that work', () => {
    it('token', async () => {
      const {ours} = await sameAsKubectl(kubeconfig(trusted(), {token: 'abc'}))
      assert.equal(ours.seen?.authorization, 'Bearer abc')
    })

    it('tokenFile (surrounding whitespace dropped)', async () => {
      const tokenFile = join(dir, 'token')
      writeFileSync(tokenFile, '  from-file\n')
      const {ours} = await sameAsKubectl(kubeconfig(trusted(), {tokenFile}))
      assert.equal(ours.seen?.authorization, 'Bearer from-file')
    })

    it('token and tokenFile together: the file wins', async () => {
      const tokenFile = join(dir, 'token-both')
      writeFileSync(tokenFile, 'file-token\n')
      const {ours} = await sameAsKubectl(kubeconfig(trusted(), {token: 'inline', tokenFile}))
      assert.equal(ours.seen?.authorization, 'Bearer file-token')
    })

    it('client certificate from files, relative to the kubeconfig', async () => {
      const {cert, key} = pki.clientCert('alice')
      const folder = mkdtempSync(join(dir, 'kc-'))
      copyFileSync(cert, join(folder, 'alice.crt'))
      copyFileSync(key, join(folder, 'alice.key'))
      const {ours} = await sameAsKubectl(kubeconfig(trusted(), {'client-certificate': 'alice.crt', 'client-key': 'alice.key'}, folder))
      assert.equal(ours.seen?.clientCertificate, 'alice')
      assert.equal(ours.seen?.authorization, undefined)
    })

    it('client certificate and CA as base64 data', async () => {
      const {cert, key} = pki.clientCert('bob')
      const b64 = (file: string) => readFileSync(file).toString('base64')
      const {ours} = await sameAsKubectl(
        kubeconfig({'certificate-authority-data': b64(pki.caCert)}, {'client-certificate-data': b64(cert), 'client-key-data': b64(key)}),
      )
      assert.equal(ours.seen?.clientCertificate, 'bob')
    })

    it('client certificate and token together: both are sent', async () => {
      const {cert, key} = pki.clientCert('alice')
      const {ours} = await sameAsKubectl(kubeconfig(trusted(), {'client-certificate': cert, 'client-key': key, token: 't'}))
      assert.equal(ours.seen?.clientCertificate, 'alice')
      assert.equal(ours.seen?.authorization, 'Bearer t')
    })

    it('basic auth (username/password)', async () => {
      const {ours} = await sameAsKubectl(kubeconfig(trusted(), {username: 'admin', password: 's3cret'}))
      assert.equal(ours.seen?.authorization, `Basic ${Buffer.from('admin:s3cret').toString('base64')}`)
    })

    it('impersonation (as, as-groups, as-uid, as-user-extra)', async () => {
      const {ours} = await sameAsKubectl(
        kubeconfig(trusted(), {token: 't', as: 'jane', 'as-uid': '42', 'as-groups': ['ops', 'dev'], 'as-user-extra': {scopes: ['view']}}),
      )
      assert.deepEqual(ours.seen?.impersonation, {
        'impersonate-user': 'jane',
        'impersonate-uid': '42',
        // node joins a repeated header on receipt: two Impersonate-Group headers were sent.
        'impersonate-group': 'ops, dev',
        'impersonate-extra-scopes': 'view',
      })
    })

    it('exec plugin (v1) returning a token: same KUBERNETES_EXEC_INFO, env and token as kubectl', async () => {
      writeFileSync(pluginLog, '')
      const file = kubeconfig(
        {...trusted(), 'tls-server-name': 'apiserver.test', extensions: [{name: 'client.authentication.k8s.io/exec', extension: {audience: 'k8s'}}]},
        {
          exec: {
            apiVersion: 'client.authentication.k8s.io/v1',
            command: process.execPath,
            args: [join(dir, 'plugin.mjs'), pluginLog, 'client.authentication.k8s.io/v1', 'token'],
            env: [{name: 'PLUGIN_EXTRA', value: 'from-kubeconfig'}],
            interactiveMode: 'Never',
            provideClusterInfo: true,
          },
        },
      )
      const {ours} = await sameAsKubectl(file)
      assert.equal(ours.seen?.authorization, 'Bearer exec-token')
      const [theirs, mine] = pluginRuns()
      assert.deepEqual(mine, theirs)
      assert.equal(mine.extra, 'from-kubeconfig')
      assert.deepEqual((mine.info as {spec: {cluster: {config: unknown}}}).spec.cluster.config, {audience: 'k8s'})
    })

    it('exec plugin (v1beta1) returning a client certificate', async () => {
      writeFileSync(pluginLog, '')
      const {cert, key} = pki.clientCert('carol')
      const args = [join(dir, 'plugin.mjs'), pluginLog, 'client.authentication.k8s.io/v1beta1', 'cert', cert, key]
      const {ours} = await sameAsKubectl(kubeconfig(trusted(), {exec: {apiVersion: 'client.authentication.k8s.io/v1beta1', command: process.execPath, args}}))
      assert.equal(ours.seen?.clientCertificate, 'carol')
      const [theirs, mine] = pluginRuns()
      assert.deepEqual(mine, theirs)
    })

    it('oidc auth-provider with an id-token that has not expired', async () => {
      const provider = {name: 'oidc', config: {'client-id': 'k8s', 'id-token': ID_TOKEN, 'idp-issuer-url': 'https://issuer.invalid'}}
      const {ours} = await sameAsKubectl(kubeconfig(trusted(), {'auth-provider': provider}))
      assert.equal(ours.seen?.authorization, `Bearer ${ID_TOKEN}`)
    })

    it('insecure-skip-tls-verify', async () => {
      await sameAsKubectl(kubeconfig({'insecure-skip-tls-verify': true}, {token: 't'}))
    })

    it('proxy-url (an HTTP CONNECT proxy)', async () => {
      const tunnels: string[] = []
      const proxy = http.createServer()
      proxy.on('connect', (req, client: Socket, head: Buffer) => {
        tunnels.push(req.url ?? '')
        const [host, port] = (req.url ?? '').split(':')
        const upstream = connect(Number(port), host, () => {
          client.write('HTTP/1.1 200 Connection Established\r\n\r\n')
          upstream.write(head)
          upstream.pipe(client)
          client.pipe(upstream)
        })
        upstream.on('error', () => client.destroy())
        client.on('error', () => upstream.destroy())
      })
      await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve))
      try {
        const proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`
        const file = kubeconfig({...trusted(), 'proxy-url': proxyUrl}, {token: 't'})
        const {ours} = await sameAsKubectl(file)
        assert.equal(ours.seen?.authorization, 'Bearer t')
        assert.deepEqual(new Set(tunnels), new Set([new URL(server.url).host]))
        tunnels.length = 0
        const client = await KubeClient.connect({kubeconfig: file})
        // One after another: node's agent opens a tunnel per request while the first is still being set up.
        await client.version()
        await client.listNodes()
        await client.listPods('kube-system')
        assert.deepEqual(tunnels, [new URL(server.url).host], 'our requests share one tunnel')
      } finally {
        proxy.closeAllConnections()
        proxy.close()
      }
    })

    it('tls-server-name that the server certificate names', async () => {
      await sameAsKubectl(kubeconfig({...trusted(), 'tls-server-name': 'apiserver.test'}, {token: 't'}))
    })
  })

  describe('configurations both refuse', () => {
    const refused = async (file: string, pattern: RegExp) => {
      const {ours} = await sameAsKubectl(file)
      assert.equal(ours.ok, false)
      assert.match(ours.message, pattern)
      assert.doesNotMatch(ours.message, /\n/, 'one line')
    }

    it('a server certificate from an untrusted CA', async () => {
      await refused(kubeconfig({'certificate-authority': pki.otherCaCert}, {token: 't'}), /TLS verification/)
    })

    it('the system CAs only, for a private CA', async () => {
      await refused(kubeconfig({}, {token: 't'}), /TLS verification/)
    })

    it('a tls-server-name the certificate does not name', async () => {
      await refused(kubeconfig({...trusted(), 'tls-server-name': 'other.test'}, {token: 't'}), /TLS verification/)
    })

    it('a certificate authority given both as a file and as data', async () => {
      const data = readFileSync(pki.caCert).toString('base64')
      await refused(kubeconfig({...trusted(), 'certificate-authority-data': data}, {token: 't'}), /both certificate-authority-data and certificate-authority/)
    })

    it('a missing tokenFile', async () => {
      await refused(kubeconfig(trusted(), {tokenFile: join(dir, 'no-such-token')}), /tokenFile .*no-such-token/)
    })

    it('a missing client certificate file', async () => {
      await refused(kubeconfig(trusted(), {'client-certificate': join(dir, 'none.crt'), 'client-key': join(dir, 'none.key')}), /client-certificate .*none\.crt/)
    })

    it('the gcp and azure auth-providers, pointing to their exec plugins', async () => {
      await refused(kubeconfig(trusted(), {'auth-provider': {name: 'gcp', config: {}}}), /gke-gcloud-auth-plugin/)
      await refused(kubeconfig(trusted(), {'auth-provider': {name: 'azure', config: {}}}), /kubelogin/)
    })

    it('an auth-provider nobody knows', async () => {
      await refused(kubeconfig(trusted(), {'auth-provider': {name: 'acme', config: {}}}), /auth-provider "acme"/)
    })

    it('an exec plugin that fails', async () => {
      writeFileSync(pluginLog, '')
      const args = [join(dir, 'plugin.mjs'), pluginLog, 'client.authentication.k8s.io/v1', 'fail']
      const exec = {apiVersion: 'client.authentication.k8s.io/v1', command: process.execPath, args, interactiveMode: 'Never'}
      await refused(kubeconfig(trusted(), {exec}), /exec credential plugin .* failed \(exit code 3\)/)
    })

    it('an exec plugin that is not installed, with its install hint', async () => {
      const exec = {
        apiVersion: 'client.authentication.k8s.io/v1',
        command: 'no-such-plugin',
        interactiveMode: 'Never',
        installHint: 'brew install no-such-plugin',
      }
      await refused(kubeconfig(trusted(), {exec}), /"no-such-plugin" is not installed.*brew install no-such-plugin/)
    })

    it('an exec plugin without an apiVersion', async () => {
      await refused(kubeconfig(trusted(), {exec: {command: process.execPath}}), /apiVersion/)
    })
  })

  describe('connections', () => {
    it("sends all of a command's requests, even concurrent ones, over at most REQUEST_CONNECTIONS kept-alive TLS connections, running an exec plugin once", async () => {
      writeFileSync(pluginLog, '')
      const args = [join(dir, 'plugin.mjs'), pluginLog, 'client.authentication.k8s.io/v1', 'token']
      const file = kubeconfig(trusted(), {exec: {apiVersion: 'client.authentication.k8s.io/v1', command: process.execPath, args, interactiveMode: 'Never'}})
      server.reset()
      const client = await KubeClient.connect({kubeconfig: file})
      // The very first requests go out together, as status sends them: no connection (and no plugin run) exists yet.
      await Promise.all([
        client.version(),
        client.listPods('kube-system'),
        client.listNodes(),
        client.listDaemonSets('kube-system'),
        client.listDeployments('kube-system'),
      ])
      await Promise.all([client.listLeases('kube-system'), client.raw('GET', '/readyz', {intent: {verb: 'get', resource: '/readyz'}})])
      assert.equal(client.requestCount, 7)
      assert.equal(server.requests.length, 7)
      // Five at once fill every allowed connection; the later requests reuse them.
      assert.equal(server.connections, REQUEST_CONNECTIONS)
      assert.equal(pluginRuns().length, 1)
    })

    it('opens a single connection for requests sent one after another', async () => {
      server.reset()
      const client = await KubeClient.connect({kubeconfig: kubeconfig(trusted(), {token: 't'})})
      await client.version()
      await client.listNodes()
      await client.listPods('kube-system')
      assert.equal(server.requests.length, 3)
      assert.equal(server.connections, 1)
    })

    it('gives a log stream a connection of its own, so requests do not wait behind it', async () => {
      server.reset()
      const client = await KubeClient.connect({kubeconfig: kubeconfig(trusted(), {token: 't'})})
      const lines: string[] = []
      await client.stream('/api/v1/namespaces/kube-system/pods/p/log', {intent: {verb: 'get', resource: 'pods/log'}}, (line) => lines.push(line))
      await Promise.all([client.version(), client.listNodes()])
      // The stream's own, then the requests' (two sent at once: as many as they may open).
      assert.equal(server.connections, 1 + REQUEST_CONNECTIONS)
      assert.equal(lines.length, 1)
    })
  })
})
