import {spawn} from 'node:child_process'
import {readFileSync} from 'node:fs'

import {CliError} from '../errors.js'
import type {ClusterAccess, ExecConfig} from './credentials.js'

/** What one request carries to prove who it is: headers, and a client certificate for the TLS handshake. */
export interface RequestCredentials {
  headers: Array<[string, string]>
  clientCertificate?: Buffer
  clientKey?: Buffer
}

const EXEC_API_VERSIONS = ['client.authentication.k8s.io/v1', 'client.authentication.k8s.io/v1beta1']
/** client-go reads a token file again when its copy is older than this. */
const TOKEN_FILE_MAX_AGE_MS = 60_000

interface ExecCredentialStatus {
  token?: string
  clientCertificateData?: string
  clientKeyData?: string
  expirationTimestamp?: string
}

/**
 * Credentials for every request of one command, following client-go: tokens, token files
 * (re-read after a minute), basic auth, client certificates, impersonation, exec plugins
 * (run once and cached until the expiry they give, like kubectl) and the oidc auth-provider,
 * the only one for which @kubernetes/client-node is loaded.
 */
export class Authenticator {
  private exec?: {status: ExecCredentialStatus; expiresAt: number}
  private execRun?: Promise<ExecCredentialStatus>
  private tokenFile?: {token: string; readAt: number}
  private oidc?: Promise<string>

  constructor(
    private readonly access: ClusterAccess,
    private readonly stdinIsTerminal = Boolean(process.stdin.isTTY),
  ) {}

  async current(): Promise<RequestCredentials> {
    const {access} = this
    const credentials: RequestCredentials = {headers: [], clientCertificate: access.clientCertificate, clientKey: access.clientKey}
    const bearer = this.bearerToken()
    if (bearer) credentials.headers.push(['Authorization', `Bearer ${bearer}`])
    else if (access.basicAuth) {
      const {username, password} = access.basicAuth
      credentials.headers.push(['Authorization', `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`])
    }

    if (access.exec) {
      const status = await this.execCredential(access.exec)
      if (status.token) credentials.headers = [['Authorization', `Bearer ${status.token}`]]
      if (status.clientCertificateData && status.clientKeyData) {
        credentials.clientCertificate = Buffer.from(status.clientCertificateData)
        credentials.clientKey = Buffer.from(status.clientKeyData)
      }
    }

    if (access.authProvider) {
      // Kept until the server rejects it (401): refreshing it asks the identity provider.
      this.oidc ??= oidcAuthorization(access)
      credentials.headers = [['Authorization', await this.oidc]]
    }
    credentials.headers.push(...access.impersonation)
    return credentials
  }

  /** The API server rejected the credentials (401): a plugin's next run may get fresh ones, as client-go does. */
  forget(): void {
    this.exec = undefined
    this.tokenFile = undefined
    this.oidc = undefined
  }

  private bearerToken(): string | undefined {
    const {token, tokenFile} = this.access
    if (!tokenFile) return token
    const now = Date.now()
    if (!this.tokenFile || now - this.tokenFile.readAt > TOKEN_FILE_MAX_AGE_MS) {
      try {
        this.tokenFile = {token: readFileSync(tokenFile, 'utf8').trim(), readAt: now}
      } catch (error) {
        // client-go keeps the token it has (or the kubeconfig's token) when a re-read fails.
        if (!this.tokenFile && !token) throw new CliError(`cannot read tokenFile ${tokenFile}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`)
      }
    }

    return this.tokenFile?.token ?? token
  }

  private async execCredential(exec: ExecConfig): Promise<ExecCredentialStatus> {
    if (this.exec && this.exec.expiresAt > Date.now()) return this.exec.status
    // Requests sent at once (status sends its first ones together) wait for one run of the plugin.
    this.execRun ??= runExecPlugin(exec, this.access, this.stdinIsTerminal).finally(() => {
      this.execRun = undefined
    })
    const status = await this.execRun
    const expiresAt = status.expirationTimestamp ? Date.parse(status.expirationTimestamp) : Number.POSITIVE_INFINITY
    this.exec = {status, expiresAt: Number.isNaN(expiresAt) ? Number.POSITIVE_INFINITY : expiresAt}
    return status
  }
}

/**
 * Runs a client-go credential plugin as kubectl does (k8s.io/client-go/plugin/pkg/client/auth/exec):
 * the kubeconfig's env on top of ours, KUBERNETES_EXEC_INFO describing the request, the
 * user's terminal as stdin only when interactive, its stderr passed through to the user.
 */
export async function runExecPlugin(exec: ExecConfig, access: ClusterAccess, stdinIsTerminal: boolean): Promise<ExecCredentialStatus> {
  const apiVersion = exec.apiVersion ?? ''
  const name = `exec credential plugin "${exec.command}"`
  if (!EXEC_API_VERSIONS.includes(apiVersion)) {
    throw new CliError(`${name} has apiVersion "${apiVersion}"; kubectl supports ${EXEC_API_VERSIONS.join(' and ')}`)
  }

  const mode = exec.interactiveMode ?? (apiVersion.endsWith('/v1beta1') ? 'IfAvailable' : undefined)
  if (!mode) throw new CliError(`${name} must set interactiveMode (Never, IfAvailable or Always) for ${apiVersion}`)
  const interactive = mode !== 'Never' && stdinIsTerminal
  if (mode === 'Always' && !interactive) throw new CliError(`${name} needs a terminal (interactiveMode: Always), and standard input is not one`)
  const info = {
    kind: 'ExecCredential',
    apiVersion,
    spec: {...(access.execCluster ? {cluster: access.execCluster} : {}), interactive},
  }
  const env: NodeJS.ProcessEnv = {...process.env}
  for (const {name: key, value} of exec.env ?? []) env[key] = value
  env.KUBERNETES_EXEC_INFO = JSON.stringify(info)

  const stdout = await new Promise<string>((resolve, reject) => {
    const child = spawn(exec.command, exec.args ?? [], {env, stdio: [interactive ? 'inherit' : 'ignore', 'pipe', 'inherit']})
    const chunks: Buffer[] = []
    child.stdout.on('data', (c: Buffer) => chunks.push(c))
    child.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') {
        reject(new CliError(`${name} is not installed (not found on PATH)${exec.installHint ? `: ${exec.installHint.trim().replace(/\s*\n\s*/g, ' ')}` : ''}`))
      } else reject(new CliError(`${name} could not start: ${error.message}`))
    })
    child.on('close', (code, signal) => {
      if (code === 0) resolve(Buffer.concat(chunks).toString('utf8'))
      else reject(new CliError(`${name} failed (${signal ? `signal ${signal}` : `exit code ${code}`}); its message, if any, is above`))
    })
  })

  let credential: {kind?: string; apiVersion?: string; status?: ExecCredentialStatus}
  try {
    credential = JSON.parse(stdout) as typeof credential
  } catch {
    throw new CliError(`${name} printed something that is not an ExecCredential (JSON expected)`)
  }

  if (credential.kind !== 'ExecCredential' || credential.apiVersion !== apiVersion) {
    throw new CliError(`${name} is configured for ${apiVersion} but returned ${credential.apiVersion ?? 'no apiVersion'} ${credential.kind ?? ''}`.trimEnd())
  }

  const status = credential.status
  const pair = Boolean(status?.clientCertificateData) && Boolean(status?.clientKeyData)
  const half = Boolean(status?.clientCertificateData) !== Boolean(status?.clientKeyData)
  if (!status || half || (!status.token && !pair)) throw new CliError(`${name} returned neither a token nor a client certificate and key`)
  return status
}

/**
 * The oidc auth-provider, still supported by kubectl: uses the id-token until it expires,
 * then refreshes it with the refresh-token. client-node does this (with openid-client);
 * it is loaded here and nowhere else.
 */
async function oidcAuthorization(access: ClusterAccess): Promise<string> {
  const {KubeConfig} = await import('@kubernetes/client-node')
  const kc = new KubeConfig()
  kc.loadFromOptions({
    clusters: [{name: 'cluster', server: access.server, skipTLSVerify: true}],
    users: [{name: 'user', authProvider: {name: 'oidc', config: access.authProvider?.config}}],
    contexts: [{name: 'context', cluster: 'cluster', user: 'user'}],
    currentContext: 'context',
  })
  const opts: {headers?: Record<string, string>} = {}
  try {
    await kc.applyToHTTPSOptions(opts)
  } catch (error) {
    throw new CliError(`the oidc auth-provider could not get a token: ${(error as Error).message}`)
  }

  const header = opts.headers?.Authorization
  if (!header) throw new CliError('the oidc auth-provider gave no token: check id-token, refresh-token and idp-issuer-url in the kubeconfig')
  return header
}
