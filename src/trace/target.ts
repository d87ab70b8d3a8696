import {CliError} from '../errors.js'
import {isIPv4, splitHostPort} from './ip.js'

export type TraceTarget = {kind: 'service'; namespace?: string; name: string} | {kind: 'address'; ip: string; port?: number}

const KINDS = new Set(['svc', 'service', 'services'])
const NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/

/** "svc/NAME", "NAME", "svc/NAMESPACE/NAME" or (offline) "IP[:PORT]". */
export function parseTraceTarget(text: string): TraceTarget {
  const parts = text.split('/')
  const {ip, port} = splitHostPort(text)
  if (isIPv4(ip) || ip.includes(':')) {
    if (port !== undefined && (!Number.isInteger(port) || port <= 0 || port > 65_535)) throw new CliError(`"${text}": the port must be 1-65535`)
    return {kind: 'address', ip, port}
  }

  let namespace: string | undefined
  let name: string
  if (parts.length === 1) name = parts[0]
  else if (parts.length === 2 && KINDS.has(parts[0])) name = parts[1]
  else if (parts.length === 3 && KINDS.has(parts[0])) [, namespace, name] = parts
  else throw new CliError(`"${text}" is not a Service: use svc/NAME, NAME or svc/NAMESPACE/NAME`)
  if (!NAME.test(name) || (namespace !== undefined && !NAME.test(namespace))) {
    throw new CliError(`"${text}" is not a valid Service name (lowercase letters, digits and "-")`)
  }

  return {kind: 'service', namespace, name}
}
