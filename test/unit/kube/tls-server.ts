import {execFileSync} from 'node:child_process'
import {mkdtempSync, readFileSync, writeFileSync} from 'node:fs'
import https from 'node:https'
import type {AddressInfo} from 'node:net'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import type {TLSSocket} from 'node:tls'

/** PEM files made with openssl for one test run: a CA, a server certificate it signed, client certificates. */
export interface TestPki {
  dir: string
  caCert: string
  otherCaCert: string
  serverCert: string
  serverKey: string
  clientCert: (name: string) => {cert: string; key: string}
}

function openssl(dir: string, ...args: string[]): void {
  execFileSync('openssl', args, {cwd: dir, stdio: 'ignore'})
}

/** EC P-256 keys: made in milliseconds, accepted by Go (kubectl) and node alike. */
function keyAndRequest(dir: string, name: string, subject: string): void {
  openssl(
    dir,
    'req',
    '-new',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.csr`,
    '-subj',
    subject,
  )
}

function signed(dir: string, name: string, extensions: string): void {
  writeFileSync(join(dir, `${name}.ext`), extensions)
  openssl(
    dir,
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    'ca.crt',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    `${name}.crt`,
    '-days',
    '2',
    '-extfile',
    `${name}.ext`,
  )
}

export function makePki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'selfhost-pki-'))
  for (const ca of ['ca', 'other-ca']) {
    openssl(
      dir,
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      `${ca}.key`,
      '-out',
      `${ca}.crt`,
      '-subj',
      `/CN=${ca}`,
      '-days',
      '2',
    )
  }

  keyAndRequest(dir, 'server', '/CN=kube-apiserver')
  signed(dir, 'server', 'subjectAltName=IP:127.0.0.1,DNS:apiserver.test\nextendedKeyUsage=serverAuth\n')
  const clients = new Map<string, {cert: string; key: string}>()
  return {
    dir,
    caCert: join(dir, 'ca.crt'),
    otherCaCert: join(dir, 'other-ca.crt'),
    serverCert: join(dir, 'server.crt'),
    serverKey: join(dir, 'server.key'),
    clientCert(name) {
      if (!clients.has(name)) {
        keyAndRequest(dir, name, `/O=devs/CN=${name}`)
        signed(dir, name, 'extendedKeyUsage=clientAuth\n')
        clients.set(name, {cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`)})
      }

      return clients.get(name)!
    },
  }
}

/** What the server saw of one request: enough to tell which credentials were sent. */
export interface SeenRequest {
  path: string
  authorization?: string
  impersonation: Record<string, string | string[] | undefined>
  /** Common name of a verified client certificate. */
  clientCertificate?: string
  connection: number
}

/**
 * A TLS API server stand-in on 127.0.0.1 that records every request and counts connections:
 * the same server answers kubectl and our client, so their credentials can be compared.
 */
export class RecordingServer {
  readonly requests: SeenRequest[] = []
  connections = 0
  private server?: https.Server

  constructor(private readonly pki: TestPki) {}

  get url(): string {
    return `https://127.0.0.1:${(this.server!.address() as AddressInfo).port}`
  }

  async start(): Promise<void> {
    const ids = new WeakMap<object, number>()
    this.server = https.createServer(
      {
        cert: readFileSync(this.pki.serverCert),
        key: readFileSync(this.pki.serverKey),
        ca: readFileSync(this.pki.caCert),
        requestCert: true,
        rejectUnauthorized: false,
      },
      (req, res) => {
        const socket = req.socket as TLSSocket
        const peer = socket.authorized ? socket.getPeerCertificate() : undefined
        const impersonation = Object.fromEntries(Object.entries(req.headers).filter(([name]) => name.startsWith('impersonate-')))
        this.requests.push({
          path: req.url ?? '',
          authorization: req.headers.authorization,
          impersonation,
          clientCertificate: peer?.subject?.CN as string | undefined,
          connection: ids.get(socket) ?? -1,
        })
        res.setHeader('Content-Type', 'application/json')
        res.end(JSON.stringify(req.url === '/version' ? {major: '1', minor: '37', gitVersion: 'v1.37.2'} : {kind: 'List', apiVersion: 'v1', items: []}))
      },
    )
    this.server.on('secureConnection', (socket) => ids.set(socket, ++this.connections))
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve))
  }

  reset(): void {
    this.requests.length = 0
    this.connections = 0
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections()
    await new Promise<void>((resolve) => this.server?.close(() => resolve()))
  }
}
