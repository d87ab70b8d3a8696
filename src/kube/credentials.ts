import {readFileSync} from 'node:fs'

import {CliError} from '../errors.js'
import {MergedKubeconfig, Named} from './config.js'

/** `users[].user.exec` of a kubeconfig: a client-go credential plugin. */
export interface ExecConfig {
  apiVersion?: string
  command: string
  args?: string[]
  env?: Array<{name: string; value: string}>
  installHint?: string
  provideClusterInfo?: boolean
  interactiveMode?: 'Never' | 'IfAvailable' | 'Always'
}

/** What client-go hands an exec plugin with provideClusterInfo (KUBERNETES_EXEC_INFO spec.cluster). */
export interface ExecClusterInfo {
  server: string
  'tls-server-name'?: string
  'insecure-skip-tls-verify'?: boolean
  'certificate-authority-data'?: string
  'proxy-url'?: string
  'disable-compression'?: boolean
  config?: unknown
}

/**
 * Everything needed to reach and authenticate to the selected context's cluster, read from
 * the kubeconfig with kubectl's rules. Files named in it are read here, once, so a missing
 * or unreadable one fails before any request, as in kubectl.
 */
export interface ClusterAccess {
  contextName: string
  server: string
  namespace?: string
  /** Trusted CAs; undefined means the system's. */
  ca?: Buffer
  insecureSkipTlsVerify: boolean
  tlsServerName?: string
  proxyUrl?: string
  clientCertificate?: Buffer
  clientKey?: Buffer
  token?: string
  /** Read again when older than a minute, as client-go does, so a rotated token is picked up. */
  tokenFile?: string
  basicAuth?: {username: string; password: string}
  /** Impersonate-User, Impersonate-Uid, Impersonate-Group, Impersonate-Extra-* headers. */
  impersonation: Array<[string, string]>
  exec?: ExecConfig
  execCluster?: ExecClusterInfo
  authProvider?: {name: string; config: Record<string, string>}
}

type Body = Record<string, unknown>

const str = (value: unknown): string | undefined => (typeof value === 'string' && value !== '' ? value : undefined)

function readFileField(path: string, what: string, owner: string): Buffer {
  try {
    return readFileSync(path)
  } catch (error) {
    throw new CliError(`cannot read ${what} ${path} of ${owner}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`)
  }
}

/** kubeconfig *-data fields are base64 (kubectl fails to load a config whose data is not). */
function decodeData(value: string, what: string, owner: string): Buffer {
  const compact = value.replace(/\s+/g, '')
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(compact)) throw new CliError(`${what} of ${owner} is not valid base64`)
  return Buffer.from(compact, 'base64')
}

/** A PEM value from `<field>-data` (base64) or `<field>` (a file); kubectl refuses both at once. */
function pem(body: Body, field: string, owner: string): Buffer | undefined {
  const data = str(body[`${field}-data`])
  const file = str(body[field])
  if (data && file) throw new CliError(`${owner} sets both ${field}-data and ${field}; kubectl refuses that too: keep one`)
  if (data) return decodeData(data, `${field}-data`, owner)
  return file ? readFileField(file, field, owner) : undefined
}

/** The auth-providers kubectl dropped, with the plugin it points users to instead. */
const REMOVED_AUTH_PROVIDERS: Record<string, string> = {
  gcp: 'the gcp auth plugin has been removed from kubectl and client libraries; use the "gke-gcloud-auth-plugin" exec credential plugin instead (https://cloud.google.com/blog/products/containers-kubernetes/kubectl-auth-changes-in-gke)',
  azure: 'the azure auth plugin has been removed from kubectl and client libraries; use the https://github.com/Azure/kubelogin exec credential plugin instead',
}

/** Reads the selected context's cluster and user the way kubectl does. */
export function clusterAccess(merged: MergedKubeconfig, context: Named): ClusterAccess {
  const contextBody = (context.context ?? {}) as {cluster?: string; user?: string; namespace?: string}
  const clusterEntry = merged.clusters.find((c) => c.name === contextBody.cluster)
  const cluster = (clusterEntry?.cluster ?? {}) as Body
  const server = str(cluster.server)
  if (!server) throw new CliError(`context "${context.name}" has no server address`)
  // A context may name no user (anonymous access); a user it names must exist, as kubectl insists.
  const userEntry = contextBody.user ? merged.users.find((u) => u.name === contextBody.user) : undefined
  if (contextBody.user && !userEntry) {
    throw new CliError(`context "${context.name}" refers to user "${contextBody.user}", which is not defined in the kubeconfig`)
  }

  const user = (userEntry?.user ?? {}) as Body
  const clusterOwner = `cluster "${clusterEntry?.name}"`
  const userOwner = `user "${userEntry?.name}"`
  const ca = pem(cluster, 'certificate-authority', clusterOwner)
  const insecureSkipTlsVerify = cluster['insecure-skip-tls-verify'] === true
  if (insecureSkipTlsVerify && ca) {
    throw new CliError(`${clusterOwner} sets both insecure-skip-tls-verify and a certificate authority; kubectl refuses that too: drop one`)
  }

  const access: ClusterAccess = {
    contextName: context.name,
    server: server.replace(/\/+$/, ''),
    namespace: str(contextBody.namespace),
    ca,
    insecureSkipTlsVerify,
    tlsServerName: str(cluster['tls-server-name']),
    proxyUrl: str(cluster['proxy-url']),
    clientCertificate: pem(user, 'client-certificate', userOwner),
    clientKey: pem(user, 'client-key', userOwner),
    token: str(user.token),
    tokenFile: str(user.tokenFile),
    impersonation: impersonationHeaders(user),
  }
  if (Boolean(access.clientCertificate) !== Boolean(access.clientKey)) {
    throw new CliError(`${userOwner} has a client certificate without a key or a key without a certificate; kubectl needs both`)
  }

  // client-go reads the token file when it loads the config: a missing one fails at once.
  if (access.tokenFile && !access.token) access.token = readFileField(access.tokenFile, 'tokenFile', userOwner).toString('utf8').trim()
  const username = str(user.username)
  const password = str(user.password)
  if (username || password) {
    if (access.token || access.tokenFile) throw new CliError(`${userOwner} has both a token and a username/password; kubectl allows only one of them`)
    access.basicAuth = {username: username ?? '', password: password ?? ''}
  }

  const exec = user.exec as ExecConfig | undefined
  const provider = user['auth-provider'] as {name?: string; config?: Record<string, string>} | undefined
  if (exec && provider) throw new CliError(`${userOwner} has both exec and auth-provider; kubectl allows only one of them`)
  if (exec) {
    if (!str(exec.command)) throw new CliError(`the exec credential plugin of ${userOwner} names no command`)
    access.exec = exec
    if (exec.provideClusterInfo) access.execCluster = execClusterInfo(access, cluster)
  }

  if (provider) {
    const name = str(provider.name) ?? ''
    if (REMOVED_AUTH_PROVIDERS[name]) throw new CliError(`${userOwner}: ${REMOVED_AUTH_PROVIDERS[name]}`)
    if (name !== 'oidc') throw new CliError(`${userOwner} uses auth-provider "${name}", which kubectl does not know either; use an exec credential plugin`)
    access.authProvider = {name, config: provider.config ?? {}}
  }

  return access
}

function impersonationHeaders(user: Body): Array<[string, string]> {
  const headers: Array<[string, string]> = []
  const as = str(user.as)
  if (as) headers.push(['Impersonate-User', as])
  const uid = str(user['as-uid'])
  if (uid) headers.push(['Impersonate-Uid', uid])
  for (const group of (user['as-groups'] as string[] | undefined) ?? []) headers.push(['Impersonate-Group', group])
  const extra = (user['as-user-extra'] as Record<string, string[]> | undefined) ?? {}
  for (const [key, values] of Object.entries(extra)) {
    for (const value of values ?? []) headers.push([`Impersonate-Extra-${encodeURIComponent(key)}`, value])
  }

  return headers
}

/** Cluster details an exec plugin asked for (provideClusterInfo), in client-go's field names. */
function execClusterInfo(access: ClusterAccess, cluster: Body): ExecClusterInfo {
  const extensions = (cluster.extensions as Array<{name?: string; extension?: unknown}> | undefined) ?? []
  const config = extensions.find((e) => e?.name === 'client.authentication.k8s.io/exec')?.extension
  return {
    server: access.server,
    ...(access.tlsServerName ? {'tls-server-name': access.tlsServerName} : {}),
    ...(access.insecureSkipTlsVerify ? {'insecure-skip-tls-verify': true} : {}),
    ...(access.ca ? {'certificate-authority-data': access.ca.toString('base64')} : {}),
    ...(access.proxyUrl ? {'proxy-url': access.proxyUrl} : {}),
    ...(cluster['disable-compression'] === true ? {'disable-compression': true} : {}),
    ...(config === undefined ? {} : {config}),
  }
}
