import {request} from 'node:https'
import {readFileSync} from 'node:fs'

import {parse as parseYaml} from 'yaml'

/**
 * A client that asks the API every 100 ms, as cluster-admin, for /readyz, for a ConfigMap (an
 * authenticated, authorized read that reaches etcd) and for /version (which instance answered),
 * in turn, through the cluster's API address.
 * Every answer other than 200, and every connection failure, counts; so does the longest time
 * between two successful answers. New connections every time, so each request may meet a
 * different apiserver instance (SO_REUSEPORT spreads connections over them).
 */
export interface PollerReport {
  requests: number
  failures: number
  /** Failures by kind: "status 403", "ECONNREFUSED", ... */
  byKind: Record<string, number>
  longestGapMs: number
  /** When the first failure of each kind happened, relative to start. */
  firstAtMs: Record<string, number>
  /** Every failure, with its time (epoch milliseconds), the path asked and, for /readyz, the checks that failed. */
  events: Array<{at: number; kind: string; path: string; failed?: string}>
  /** When the first request succeeded (epoch milliseconds), if one did. */
  firstOkAt?: number
  /** Every time over a second passed between two successful answers: from the last success before to the next (epoch ms). */
  gaps: Array<{from: number; to: number}>
  /** Each successful /version answer: when, and the gitVersion served. */
  versions: Array<{at: number; version: string}>
}

/**
 * The longest gap between answers that the real suites still call "the API stays". What it tells
 * apart: the one restart of a node's only apiserver keeps clients out for 40–46 s on these
 * machines; a hand-off with port sharing, a balancer taking a restarting node out, or a
 * checkpoint handing over, for a few seconds, plus a run of 2 s request timeouts when the machine
 * is loaded. Usual gaps were 3–5 s; on a slower machine, in CI with three real clusters at once,
 * 10.1 and 12.9 s.
 */
export const NO_OUTAGE_MS = 20_000

/**
 * The same for the minutes after a node is back from a power loss, from the checkpoint copy's
 * first answer on, while an upgrade goes on: the node starts every container at once, etcd
 * replays its log, and the one apiserver answers slowly (runs of 2 s timeouts and 500s). Usual
 * gaps were 1.6–4.2 s; on the slower machine 11.6–20.3 s. Still short of an apiserver's restart
 * (40–46 s), and far from a copy and a pod fighting over the port (a crash loop of minutes).
 */
export const RECOVERY_NO_OUTAGE_MS = 30_000

/** The longest time between two successful answers, among the gaps that began at or after `from` and ended before `until` (epoch ms). */
export function longestGapWithin(report: PollerReport, from: number, until = Infinity): number {
  return Math.max(0, ...report.gaps.filter((g) => g.from >= from && g.to < until).map((g) => g.to - g.from))
}

export function startApiPoller(
  kubeconfigPath: string,
  opts: {intervalMs?: number; configMap?: string} = {},
): {stop: () => Promise<PollerReport>; peek: () => Promise<PollerReport>} {
  const kc = parseYaml(readFileSync(kubeconfigPath, 'utf8')) as {
    clusters: Array<{cluster: {server: string; 'certificate-authority-data': string}}>
    users: Array<{user: {'client-certificate-data': string; 'client-key-data': string}}>
  }
  const server = new URL(kc.clusters[0].cluster.server)
  const ca = Buffer.from(kc.clusters[0].cluster['certificate-authority-data'], 'base64')
  const cert = Buffer.from(kc.users[0].user['client-certificate-data'], 'base64')
  const key = Buffer.from(kc.users[0].user['client-key-data'], 'base64')
  const paths = ['/readyz?verbose', `/api/v1/namespaces/kube-system/configmaps/${opts.configMap ?? 'kubeadm-config'}`, '/version']
  const report: PollerReport = {requests: 0, failures: 0, byKind: {}, longestGapMs: 0, firstAtMs: {}, events: [], gaps: [], versions: []}
  const started = Date.now()
  let lastOk = Date.now()
  let stopped = false
  const fail = (kind: string, path: string, body = '') => {
    report.failures++
    report.byKind[kind] = (report.byKind[kind] ?? 0) + 1
    report.firstAtMs[kind] ??= Date.now() - started
    // "[-]poststarthook/rbac/bootstrap-roles failed: ..." names what an unready instance lacks.
    const failed = [...body.matchAll(/^\[-\](\S+) failed/gm)].map((m) => m[1]).join(',')
    report.events.push({at: Date.now(), kind, path, ...(failed ? {failed} : {})})
  }

  const once = (path: string) =>
    new Promise<void>((resolve) => {
      report.requests++
      const req = request({host: server.hostname, port: server.port, path, ca, cert, key, agent: false, timeout: 2000}, (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => (body += chunk))
        res.on('end', () => {
          if (res.statusCode === 200) {
            const now = Date.now()
            report.firstOkAt ??= now
            report.longestGapMs = Math.max(report.longestGapMs, now - lastOk)
            if (now - lastOk > 1000) report.gaps.push({from: lastOk, to: now})
            lastOk = now
            const version = path === '/version' ? /"gitVersion":\s*"([^"]+)"/.exec(body)?.[1] : undefined
            if (version) report.versions.push({at: now, version})
          } else fail(`status ${res.statusCode}`, path, body)
          resolve()
        })
      })
      req.on('timeout', () => req.destroy(new Error('timeout')))
      req.on('error', (error: NodeJS.ErrnoException) => {
        fail(error.code ?? error.message, path)
        resolve()
      })
      req.end()
    })

  const loop = (async () => {
    let i = 0
    while (!stopped) {
      const tick = Date.now()
      await once(paths[i++ % paths.length])
      await new Promise((r) => setTimeout(r, Math.max(0, (opts.intervalMs ?? 100) - (Date.now() - tick))))
    }
  })()
  return {
    /** The report so far, the poller still running. */
    peek: async () => ({...report}),
    async stop() {
      stopped = true
      await loop
      report.longestGapMs = Math.max(report.longestGapMs, Date.now() - lastOk)
      return report
    },
  }
}
