import {appendFileSync} from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import {basename} from 'node:path'

import {Config} from '@oclif/core'

/** One HTTP request a command (or, outside a command, a test file) sent. */
export interface RecordedRequest {
  /** The oclif command id, or `file:<test file>` outside a command. */
  source: string
  method: string
  /** Without the query. */
  path: string
  contentType?: string
}

/**
 * Calls `onRequest` for every request sent through node's http/https modules until the returned
 * function is called. It wraps those modules rather than KubeClient because under tsx
 * src/kube/client.ts can be loaded more than once (as an ES module and as CommonJS, which oclif's
 * command loading uses); installed after nock, it wraps nock's interceptor.
 */
export function interceptRequests(onRequest: (request: Omit<RecordedRequest, 'source'>) => void): () => void {
  const libs = [http, https] as Array<{request: typeof http.request}>
  const originals = libs.map((lib) => lib.request)
  libs.forEach((lib, i) => {
    const request = originals[i] as (...args: unknown[]) => http.ClientRequest
    lib.request = function (this: unknown, ...args: unknown[]) {
      const url = args[0] instanceof URL || typeof args[0] === 'string' ? new URL(String(args[0])) : undefined
      const options = (url ? args[1] : args[0]) as http.RequestOptions | undefined
      const contentType = (options?.headers as Record<string, string> | undefined)?.['Content-Type']
      onRequest({
        method: options?.method ?? 'GET',
        path: url ? url.pathname : (options?.path ?? '/').split('?')[0],
        ...(contentType ? {contentType} : {}),
      })
      return request.apply(this, args)
    } as typeof http.request
  })
  return () => libs.forEach((lib, i) => (lib.request = originals[i]))
}

const target = process.env.SELFHOST_RECORD_REQUESTS
let command: string | undefined
let file = ''

/**
 * A mocha root-hook plugin: `SELFHOST_RECORD_REQUESTS=out.jsonl mocha --require
 * test/helpers/request-recorder.ts ...` writes one JSON line per request, naming the command that
 * sent it. test/unit/rbac.test.ts runs the command tests with it and holds manifests/rbac/ to
 * what they send. Without the variable it does nothing.
 */
export const mochaHooks = {
  beforeAll() {
    if (!target) return
    interceptRequests((request) => appendFileSync(target, `${JSON.stringify({source: command ?? `file:${file}`, ...request})}\n`))
    const runCommand = Config.prototype.runCommand as (this: Config, ...args: unknown[]) => Promise<unknown>
    Config.prototype.runCommand = async function (this: Config, id: string, ...rest: unknown[]) {
      command = id
      try {
        return await runCommand.call(this, id, ...rest)
      } finally {
        command = undefined
      }
    } as typeof Config.prototype.runCommand
  },
  beforeEach(this: Mocha.Context) {
    file = basename(this.currentTest?.file ?? '')
  },
}
