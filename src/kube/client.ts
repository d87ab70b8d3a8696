import http from 'node:http'
import https from 'node:https'

import type {
  CoreV1EventList,
  V1ConfigMap,
  V1DaemonSet,
  V1DaemonSetList,
  V1Deployment,
  V1DeploymentList,
  V1Endpoints,
  V1Lease,
  V1LeaseList,
  V1NodeList,
  V1Pod,
  V1PodList,
  V1Service,
  V1ServiceList,
  V1EndpointSliceList,
} from './types.js'
import {CliError} from '../errors.js'
import {Authenticator, RequestCredentials} from './auth.js'
import {ClusterTarget, kubeconfigFiles, mergeKubeconfigs, selectContext} from './config.js'
import {ClusterAccess, clusterAccess} from './credentials.js'
import {RequestIntent, SERVER_VERSION, apiStatusError, isNotFound, transportError} from './errors.js'

export const FIELD_MANAGER = 'kubectl-selfhost'
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000
/**
 * Kept-alive connections a command's requests share. HTTP/1.1 answers one request at a time per
 * connection, so status's 7 concurrent requests wait in line on one; a second connection costs
 * a TLS handshake but halves the line. Measured on the kwok sandbox, 2-core machine under load
 * (median of 30-40 interleaved runs of `status`): 2 connections beat 1 by 15-27 ms of wall time
 * and used no more CPU; 4 were slower than 2. A command that sends one request at a time opens one.
 */
export const REQUEST_CONNECTIONS = 2

export type Query = Record<string, string | number | boolean | undefined>

export interface RequestOptions {
  query?: Query
  body?: unknown
  contentType?: string
  intent: RequestIntent
  /** Overrides --request-timeout; 0 means none (streams). */
  timeoutMs?: number
  signal?: AbortSignal
}

export interface RawResponse {
  status: number
  body: string
}

export interface VersionInfo {
  gitVersion: string
  major?: string
  minor?: string
}

/** Resource paths: core group under /api/v1, the rest under /apis/<group>/<version>. */
export function resourcePath(groupVersion: string, resource: string, namespace?: string, name?: string, sub?: string): string {
  const base = groupVersion === 'v1' ? '/api/v1' : `/apis/${groupVersion}`
  const ns = namespace ? `/namespaces/${encodeURIComponent(namespace)}` : ''
  const n = name ? `/${encodeURIComponent(name)}` : ''
  return `${base}${ns}/${resource}${n}${sub ? `/${sub}` : ''}`
}

function withQuery(path: string, query?: Query): string {
  if (!query) return path
  const params = new URLSearchParams()
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') params.set(k, String(v))
  const qs = params.toString()
  return qs ? `${path}?${qs}` : path
}

/**
 * The one way this tool talks to a cluster. A hand-written HTTP layer on node:https, not
 * client-node's generated APIs, because loading @kubernetes/client-node costs several times
 * node's own start-up, which kubectl users would feel on every `status`; and because server-side
 * apply, log streams and raw paths (/readyz) are plain requests anyway. So every call shares one
 * error mapper, one timeout and one request counter. Answers are parsed JSON, typed with
 * ./types.ts (client-node's names, timestamps as the strings they are).
 * Credentials come from the kubeconfig with kubectl's rules (./credentials.ts, ./auth.ts).
 * A command's requests share at most two kept-alive TLS connections (REQUEST_CONNECTIONS); log streams, which hold
 * theirs open, get their own.
 */
export class KubeClient {
  /** Number of HTTP requests sent, so tests can hold `status` to a fixed budget. */
  requestCount = 0
  /** A promise, so requests sent at once before the first agent exists share it rather than each making its own. */
  private agents?: {key: string; made: Promise<{requests: http.Agent; streams: http.Agent}>}

  private constructor(
    readonly server: string,
    readonly contextName: string,
    readonly namespace: string,
    private readonly requestTimeoutMs: number,
    private readonly access: ClusterAccess,
    private readonly auth: Authenticator,
  ) {}

  static async connect(target: ClusterTarget): Promise<KubeClient> {
    const merged = mergeKubeconfigs(kubeconfigFiles(target.kubeconfig))
    const context = selectContext(merged, target.context)
    const access = clusterAccess(merged, context)
    if (!/^https?:\/\//.test(access.server)) throw new CliError(`the server address of context "${context.name}" (${access.server}) is not an http(s) URL`)
    return new KubeClient(
      access.server,
      context.name,
      target.namespace || access.namespace || 'default',
      target.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
      access,
      new Authenticator(access),
    )
  }

  /** TLS sockets pooled with keep-alive; made again only when an exec plugin hands out a new client certificate. */
  private agentsFor(credentials: RequestCredentials): Promise<{requests: http.Agent; streams: http.Agent}> {
    const key = `${credentials.clientCertificate?.toString('base64') ?? ''}/${credentials.clientKey?.toString('base64') ?? ''}`
    if (this.agents?.key !== key) this.agents = {key, made: this.makeAgents(credentials)}
    return this.agents.made
  }

  private async makeAgents(credentials: RequestCredentials): Promise<{requests: http.Agent; streams: http.Agent}> {
    const {access} = this
    // PEM as strings: node's agent names its socket pool from these on every request and
    // would decode buffers each time.
    const tls: https.AgentOptions = {
      ca: access.ca?.toString(),
      cert: credentials.clientCertificate?.toString(),
      key: credentials.clientKey?.toString(),
      rejectUnauthorized: !access.insecureSkipTlsVerify,
      servername: access.tlsServerName,
    }
    const make = async (options: https.AgentOptions): Promise<http.Agent> => {
      if (access.proxyUrl) return proxyAgent(access, {...tls, ...options})
      return this.server.startsWith('http:') ? new http.Agent(options) : new https.Agent({...tls, ...options})
    }

    // Requests queue on a few kept-alive sockets instead of each paying a TLS handshake.
    const requests = await make({keepAlive: true, maxSockets: REQUEST_CONNECTIONS})
    const streams = await make({keepAlive: false})
    return {requests, streams}
  }

  /** Sends one request and returns status and body without judging the status. */
  async raw(method: string, path: string, options: RequestOptions): Promise<RawResponse> {
    const chunks: Buffer[] = []
    const status = await this.send(method, path, options, (res) => {
      res.on('data', (c: Buffer) => chunks.push(c))
    })
    return {status, body: Buffer.concat(chunks).toString('utf8')}
  }

  /** Sends a request and parses its JSON answer; HTTP errors become one clear line. */
  async request<T>(method: string, path: string, options: RequestOptions): Promise<T> {
    const res = await this.raw(method, path, options)
    if (res.status >= 400) throw apiStatusError(res.status, res.body, options.intent, this.server)
    return (res.body ? JSON.parse(res.body) : undefined) as T
  }

  /** A GET whose 404 means "there is none": undefined instead of an error. */
  private async getUnlessNotFound<T>(path: string, intent: RequestIntent): Promise<T | undefined> {
    try {
      return await this.request<T>('GET', path, {intent})
    } catch (error) {
      if (isNotFound(error)) return undefined
      throw error
    }
  }

  /**
   * Streams a response line by line (logs, watches) until the server ends it or the signal
   * aborts. HTTP errors become one clear line.
   */
  async stream(path: string, options: RequestOptions, onLine: (line: string) => void): Promise<void> {
    let errorBody = ''
    const onResponse = (res: http.IncomingMessage) => {
      let pending = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        if ((res.statusCode ?? 0) >= 400) {
          errorBody += chunk
          return
        }

        pending += chunk
        let nl = pending.indexOf('\n')
        while (nl >= 0) {
          onLine(pending.slice(0, nl))
          pending = pending.slice(nl + 1)
          nl = pending.indexOf('\n')
        }
      })
      res.on('end', () => {
        if (pending && (res.statusCode ?? 0) < 400) onLine(pending)
      })
    }

    // A stream holds its connection open: it gets one of its own, so other requests do not wait behind it.
    const status = await this.send('GET', path, {...options, timeoutMs: options.timeoutMs ?? 0}, onResponse, true)
    if (status >= 400) throw apiStatusError(status, errorBody, options.intent, this.server)
  }

  private async send(
    method: string,
    path: string,
    options: RequestOptions,
    onResponse: (res: http.IncomingMessage) => void,
    streaming = false,
  ): Promise<number> {
    const url = new URL(this.server + withQuery(path, options.query))
    const credentials = await this.auth.current()
    const agents = await this.agentsFor(credentials)
    const headers: http.OutgoingHttpHeaders = {Accept: 'application/json'}
    for (const [name, value] of credentials.headers) {
      const previous = headers[name]
      headers[name] = previous === undefined ? value : [...(Array.isArray(previous) ? previous : [String(previous)]), value]
    }

    let payload: string | undefined
    if (options.body !== undefined) {
      payload = typeof options.body === 'string' ? options.body : JSON.stringify(options.body)
      headers['Content-Type'] = options.contentType ?? 'application/json'
      headers['Content-Length'] = String(Buffer.byteLength(payload))
    }

    const timeoutMs = options.timeoutMs ?? this.requestTimeoutMs
    const signals = [options.signal, timeoutMs > 0 ? AbortSignal.timeout(timeoutMs) : undefined].filter(Boolean) as AbortSignal[]
    const signal = signals.length > 0 ? AbortSignal.any(signals) : undefined
    const lib = url.protocol === 'http:' ? http : https
    const agent = streaming ? agents.streams : agents.requests
    this.requestCount++
    const attempt = (retried: boolean): Promise<number> =>
      new Promise<number>((resolvePromise, reject) => {
        const req = lib.request(url, {method, headers, agent, signal}, (res) => {
          if (res.statusCode === 401) this.auth.forget()
          onResponse(res)
          res.on('end', () => resolvePromise(res.statusCode ?? 0))
          res.on('error', (err) => reject(this.failure(err, signal, options, timeoutMs)))
        })
        req.on('error', (err: NodeJS.ErrnoException) => {
          // The server may close a kept-alive socket just as we reuse it; like Go's client,
          // send again once on a fresh one (the server never saw the request).
          if (!retried && req.reusedSocket && (err.code === 'ECONNRESET' || err.code === 'EPIPE') && !signal?.aborted) {
            attempt(true).then(resolvePromise, reject)
            return
          }

          reject(this.failure(err, signal, options, timeoutMs))
        })
        if (payload !== undefined) req.write(payload)
        req.end()
      })
    return attempt(false)
  }

  private failure(err: unknown, signal: AbortSignal | undefined, options: RequestOptions, timeoutMs: number): Error {
    // A caller's own abort (Ctrl-C, end of --follow) is not a failure to explain.
    if (options.signal?.aborted) return options.signal.reason instanceof Error ? options.signal.reason : new Error('aborted')
    if (signal?.aborted) return transportError({name: 'TimeoutError'}, this.server, timeoutMs)
    return transportError(err, this.server, timeoutMs)
  }

  // Typed calls: each names its intent so a 403 can say exactly what is missing.

  version(): Promise<VersionInfo> {
    return this.request('GET', '/version', {intent: {verb: 'get', resource: SERVER_VERSION}})
  }

  listNodes(labelSelector?: string): Promise<V1NodeList> {
    return this.request('GET', resourcePath('v1', 'nodes'), {query: {labelSelector}, intent: {verb: 'list', resource: 'nodes'}})
  }

  listPods(namespace: string | undefined, selectors: {labelSelector?: string; fieldSelector?: string} = {}): Promise<V1PodList> {
    return this.request('GET', resourcePath('v1', 'pods', namespace), {query: selectors, intent: {verb: 'list', resource: 'pods', namespace}})
  }

  getPod(namespace: string, name: string): Promise<V1Pod> {
    return this.request('GET', resourcePath('v1', 'pods', namespace, name), {intent: {verb: 'get', resource: 'pods', namespace, name}})
  }

  /** The whole log of one container, as text (not JSON). */
  async readPodLog(namespace: string, name: string, container?: string): Promise<string> {
    const intent = {verb: 'get', resource: 'pods/log', namespace, name}
    const res = await this.raw('GET', resourcePath('v1', 'pods', namespace, name, 'log'), {query: {container}, intent})
    if (res.status >= 400) throw apiStatusError(res.status, res.body, intent, this.server)
    return res.body
  }

  createPod(namespace: string, pod: V1Pod): Promise<V1Pod> {
    return this.request('POST', resourcePath('v1', 'pods', namespace), {body: pod, intent: {verb: 'create', resource: 'pods', namespace}})
  }

  async deletePod(namespace: string, name: string, gracePeriodSeconds = 0): Promise<void> {
    try {
      await this.request('DELETE', resourcePath('v1', 'pods', namespace, name), {
        body: {kind: 'DeleteOptions', apiVersion: 'v1', gracePeriodSeconds},
        intent: {verb: 'delete', resource: 'pods', namespace, name},
      })
    } catch (error) {
      if (!isNotFound(error)) throw error
    }
  }

  listDaemonSets(namespace: string | undefined, labelSelector?: string): Promise<V1DaemonSetList> {
    return this.request('GET', resourcePath('apps/v1', 'daemonsets', namespace), {
      query: {labelSelector},
      intent: {verb: 'list', resource: 'daemonsets.apps', namespace},
    })
  }

  listDeployments(namespace: string | undefined, labelSelector?: string): Promise<V1DeploymentList> {
    return this.request('GET', resourcePath('apps/v1', 'deployments', namespace), {
      query: {labelSelector},
      intent: {verb: 'list', resource: 'deployments.apps', namespace},
    })
  }

  getDaemonSet(namespace: string, name: string): Promise<V1DaemonSet> {
    return this.request('GET', resourcePath('apps/v1', 'daemonsets', namespace, name), {
      intent: {verb: 'get', resource: 'daemonsets.apps', namespace, name},
    })
  }

  getDeployment(namespace: string, name: string): Promise<V1Deployment> {
    return this.request('GET', resourcePath('apps/v1', 'deployments', namespace, name), {
      intent: {verb: 'get', resource: 'deployments.apps', namespace, name},
    })
  }

  /** Lists Leases; undefined on clusters that have no coordination.k8s.io/v1 (< 1.14). */
  listLeases(namespace: string): Promise<V1LeaseList | undefined> {
    return this.getUnlessNotFound(resourcePath('coordination.k8s.io/v1', 'leases', namespace), {
      verb: 'list',
      resource: 'leases.coordination.k8s.io',
      namespace,
    })
  }

  getLease(namespace: string, name: string): Promise<V1Lease | undefined> {
    return this.getUnlessNotFound(resourcePath('coordination.k8s.io/v1', 'leases', namespace, name), {
      verb: 'get',
      resource: 'leases.coordination.k8s.io',
      namespace,
      name,
    })
  }

  listEndpoints(namespace: string): Promise<{items: V1Endpoints[]}> {
    return this.request('GET', resourcePath('v1', 'endpoints', namespace), {intent: {verb: 'list', resource: 'endpoints', namespace}})
  }

  listConfigMaps(namespace: string): Promise<{items: V1ConfigMap[]}> {
    return this.request('GET', resourcePath('v1', 'configmaps', namespace), {intent: {verb: 'list', resource: 'configmaps', namespace}})
  }

  getConfigMap(namespace: string, name: string): Promise<V1ConfigMap | undefined> {
    return this.getUnlessNotFound(resourcePath('v1', 'configmaps', namespace, name), {verb: 'get', resource: 'configmaps', namespace, name})
  }

  getService(namespace: string, name: string): Promise<V1Service> {
    return this.request('GET', resourcePath('v1', 'services', namespace, name), {intent: {verb: 'get', resource: 'services', namespace, name}})
  }

  listServices(namespace: string | undefined): Promise<V1ServiceList> {
    return this.request('GET', resourcePath('v1', 'services', namespace), {intent: {verb: 'list', resource: 'services', namespace}})
  }

  listEndpointSlices(namespace: string, labelSelector?: string): Promise<V1EndpointSliceList> {
    return this.request('GET', resourcePath('discovery.k8s.io/v1', 'endpointslices', namespace), {
      query: {labelSelector},
      intent: {verb: 'list', resource: 'endpointslices.discovery.k8s.io', namespace},
    })
  }

  listEvents(namespace: string, fieldSelector?: string): Promise<CoreV1EventList> {
    return this.request('GET', resourcePath('v1', 'events', namespace), {query: {fieldSelector}, intent: {verb: 'list', resource: 'events', namespace}})
  }

  /**
   * Server-side apply with our field manager: idempotent, so a re-run after an interruption
   * converges instead of failing on "already exists".
   */
  apply<T extends {apiVersion?: string; kind?: string; metadata?: {name?: string; namespace?: string}}>(
    groupVersion: string,
    resource: string,
    object: T,
  ): Promise<T> {
    const namespace = object.metadata?.namespace
    const name = object.metadata?.name
    return this.request('PATCH', resourcePath(groupVersion, resource, namespace, name), {
      query: {fieldManager: FIELD_MANAGER, force: true},
      body: object,
      contentType: 'application/apply-patch+yaml',
      intent: {verb: 'apply', resource, namespace, name},
    })
  }

  /** A strategic-merge or JSON merge patch of one object. */
  patch<T>(
    groupVersion: string,
    resource: string,
    namespace: string | undefined,
    name: string,
    patch: unknown,
    contentType = 'application/strategic-merge-patch+json',
  ): Promise<T> {
    return this.request('PATCH', resourcePath(groupVersion, resource, namespace, name), {
      query: {fieldManager: FIELD_MANAGER},
      body: patch,
      contentType,
      intent: {verb: 'patch', resource, namespace, name},
    })
  }

  async delete(groupVersion: string, resource: string, namespace: string | undefined, name: string): Promise<void> {
    try {
      await this.request('DELETE', resourcePath(groupVersion, resource, namespace, name), {
        body: {kind: 'DeleteOptions', apiVersion: 'v1', propagationPolicy: 'Background'},
        intent: {verb: 'delete', resource, namespace, name},
      })
    } catch (error) {
      if (!isNotFound(error)) throw error
    }
  }

  /** Asks the server whether the current user may do something (SelfSubjectAccessReview); subresource e.g. `log` for pods/log. */
  async canI(verb: string, resource: string, namespace?: string, group = '', subresource?: string): Promise<boolean> {
    const review = await this.request<{status?: {allowed?: boolean}}>('POST', '/apis/authorization.k8s.io/v1/selfsubjectaccessreviews', {
      body: {
        apiVersion: 'authorization.k8s.io/v1',
        kind: 'SelfSubjectAccessReview',
        spec: {resourceAttributes: {verb, resource, namespace, group, ...(subresource ? {subresource} : {})}},
      },
      intent: {verb: 'create', resource: 'selfsubjectaccessreviews.authorization.k8s.io'},
    })
    return review.status?.allowed === true
  }
}

/**
 * An agent that reaches the API server through the cluster's proxy-url (http, https or socks,
 * as kubectl allows). Rare enough that @kubernetes/client-node, which has the proxy agents,
 * is loaded for it.
 */
async function proxyAgent(access: ClusterAccess, options: https.AgentOptions): Promise<http.Agent> {
  const {KubeConfig} = await import('@kubernetes/client-node')
  // createAgent is not in client-node's typings, but it is the code that picks the proxy agent.
  const kc = new KubeConfig() as unknown as {createAgent(cluster: {server: string; proxyUrl: string}, options: https.AgentOptions): http.Agent}
  return kc.createAgent({server: access.server, proxyUrl: access.proxyUrl!}, options)
}
