import {CliError} from '../errors.js'

/** What a request was trying to do, so a failure can name it. */
export interface RequestIntent {
  verb: string
  resource: string
  namespace?: string
  name?: string
}

/** The intent of GET /version, named in errors. */
export const SERVER_VERSION = 'the server version'

/** An HTTP error status from the API server, with the server's own message. */
export class ApiStatusError extends CliError {
  constructor(
    message: string,
    readonly status: number,
    readonly reason?: string,
  ) {
    super(message)
    this.name = 'ApiStatusError'
  }
}

export function isNotFound(err: unknown): boolean {
  return err instanceof ApiStatusError && err.status === 404
}

export function isConflict(err: unknown): boolean {
  return err instanceof ApiStatusError && err.status === 409
}

function describeTarget(intent: RequestIntent): string {
  const what = intent.name ? `${intent.resource} "${intent.name}"` : intent.resource
  return intent.namespace ? `${what} in namespace "${intent.namespace}"` : what
}

/** Turns an HTTP error response into one clear line. */
export function apiStatusError(status: number, body: string, intent: RequestIntent, server: string): ApiStatusError {
  let message = ''
  let reason: string | undefined
  try {
    const parsed = JSON.parse(body) as {message?: string; reason?: string}
    message = parsed.message ?? ''
    reason = parsed.reason
  } catch {
    message = body.trim().split('\n')[0] ?? ''
  }

  switch (status) {
    case 401:
      return new ApiStatusError(`unauthorized (401) by ${server}: the credentials were rejected; refresh them or check --kubeconfig/--context`, status, reason)
    case 403:
      // Every user may read /version (the default policy grants it to all, signed in or not): an
      // apiserver that refuses it has not loaded its authorization policy yet, as after a restart.
      if (intent.resource === SERVER_VERSION) {
        return new ApiStatusError(
          `${server} refuses even /version, which every user may read (${message || 'forbidden'}): the API server is most likely still starting; try again in a minute`,
          status,
          reason,
        )
      }

      return new ApiStatusError(
        `forbidden (403): you may not ${intent.verb} ${describeTarget(intent)}${message ? ` (${message})` : ''}; ask an admin for that permission`,
        status,
        reason,
      )
    case 404:
      return new ApiStatusError(`not found (404): ${describeTarget(intent)}${message ? ` (${message})` : ''}`, status, reason)
    default:
      return new ApiStatusError(
        `${intent.verb} ${describeTarget(intent)} failed (${status}${reason ? ` ${reason}` : ''}): ${message || 'no message from the server'}`,
        status,
        reason,
      )
  }
}

/**
 * The API server did not answer at all (refused, reset, timed out, no route): what an apiserver
 * that restarts looks like from outside. Waits that span a restart wait through it by type.
 */
export class ApiUnreachableError extends CliError {
  /**
   * @param mayHaveArrived the request may have reached the server and only its answer was lost
   * (a timeout or a reset connection, unlike a refused one): a write may have applied.
   */
  constructor(
    message: string,
    readonly mayHaveArrived = false,
  ) {
    super(message)
    this.name = 'ApiUnreachableError'
  }
}

/** Turns a network-level failure (no HTTP response) into one clear line. */
export function transportError(err: unknown, server: string, timeoutMs: number): CliError {
  const e = err as {code?: string; name?: string; message?: string}
  if (e?.name === 'AbortError' || e?.name === 'TimeoutError' || e?.code === 'ETIMEDOUT' || e?.code === 'ESOCKETTIMEDOUT') {
    return new ApiUnreachableError(`request to ${server} timed out after ${timeoutMs / 1000}s; raise --request-timeout or check the server`, true)
  }

  switch (e?.code) {
    case 'ECONNREFUSED':
      return new ApiUnreachableError(`cannot reach the API server at ${server}: connection refused; is the cluster running and is the context right?`)
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new CliError(`cannot resolve the API server's host in ${server}; check the server address in your kubeconfig`)
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return new ApiUnreachableError(`cannot reach the API server at ${server}: no route to host`)
    case 'ECONNRESET':
      return new ApiUnreachableError(`the API server at ${server} closed the connection; try again or check the server`, true)
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
    case 'CERT_HAS_EXPIRED':
      return new CliError(`TLS verification of ${server} failed (${e.code}); check certificate-authority in your kubeconfig`)
    default:
      return new CliError(`request to ${server} failed: ${e?.message ?? String(err)}`)
  }
}
