import {resourcePath} from '../kube/client.js'
import type {KubeClient, Query} from '../kube/client.js'
import {apiStatusError} from '../kube/errors.js'
import type {LogTarget} from './plan.js'

export type LogsApi = Pick<KubeClient, 'raw' | 'stream' | 'server'>

export interface LogReadOptions {
  follow: boolean
  /** Lines from the end of each log; undefined reads all. */
  tailLines?: number
  sinceSeconds?: number
  previous: boolean
  timestamps: boolean
  /** Ends every stream (Ctrl-C); an abort is a clean end, not a failure. */
  signal?: AbortSignal
}

/** Where log lines and per-instance failures go; the command decides how they look. */
export interface LogSink {
  line(target: LogTarget, text: string): void
  /** One instance's log could not be read, or its stream ended while following. */
  notice(target: LogTarget, message: string): void
}

export interface LogsResult {
  /** Instances whose log was read (or followed until the end). */
  read: number
  failed: number
}

function logQuery(target: LogTarget, opts: LogReadOptions): Query {
  return {
    container: target.container,
    follow: opts.follow || undefined,
    tailLines: opts.tailLines,
    sinceSeconds: opts.sinceSeconds,
    previous: opts.previous || undefined,
    timestamps: opts.timestamps || undefined,
  }
}

const logPath = (t: LogTarget) => resourcePath('v1', 'pods', t.namespace, t.pod, 'log')
const logIntent = (t: LogTarget) => ({verb: 'get', resource: 'pods/log', namespace: t.namespace, name: t.pod})

/** Splits a log body into lines, dropping the empty piece after the final newline. */
function bodyLines(body: string): string[] {
  const lines = body.split('\n')
  if (lines.at(-1) === '') lines.pop()
  return lines
}

/**
 * Reads the logs of every target. Without --follow all are fetched at once and printed one
 * instance after another, so each instance's lines stay together; with --follow all streams
 * run concurrently and lines interleave as they arrive, each with its prefix. One instance's
 * failure is reported and the others go on.
 */
export async function readLogs(api: LogsApi, targets: LogTarget[], opts: LogReadOptions, sink: LogSink): Promise<LogsResult> {
  if (opts.follow) return followLogs(api, targets, opts, sink)

  const fetched = await Promise.allSettled(
    targets.map(async (target) => {
      const res = await api.raw('GET', logPath(target), {query: logQuery(target, opts), intent: logIntent(target), signal: opts.signal})
      if (res.status >= 400) throw apiStatusError(res.status, res.body, logIntent(target), api.server)
      return res.body
    }),
  )
  let failed = 0
  for (const [i, outcome] of fetched.entries()) {
    if (outcome.status === 'fulfilled') {
      for (const line of bodyLines(outcome.value)) sink.line(targets[i], line)
    } else if (!opts.signal?.aborted) {
      failed++
      sink.notice(targets[i], (outcome.reason as Error).message)
    }
  }

  return {read: targets.length - failed, failed}
}

async function followLogs(api: LogsApi, targets: LogTarget[], opts: LogReadOptions, sink: LogSink): Promise<LogsResult> {
  let failed = 0
  await Promise.all(
    targets.map(async (target) => {
      try {
        await api.stream(logPath(target), {query: logQuery(target, opts), intent: logIntent(target), signal: opts.signal}, (line) => sink.line(target, line))
        // The server ends a followed log when the container stops or the pod goes away.
        if (!opts.signal?.aborted) sink.notice(target, 'log stream ended (container stopped or pod deleted)')
      } catch (error) {
        if (opts.signal?.aborted) return
        failed++
        sink.notice(target, (error as Error).message)
      }
    }),
  )
  return {read: targets.length - failed, failed}
}
