import {isIPv6} from 'node:net'

import {CliError} from '../errors.js'
import {isIPv4} from './ip.js'
import type {ServiceInfo, ServicePortInfo} from './model.js'

export type TraceTarget = {kind: 'service'; namespace?: string; name: string} | {kind: 'address'; ip: string; port?: number}

const KINDS = new Set(['svc', 'service', 'services'])
/** A Service name is a DNS-1035 label: a letter first, at most 63 characters. */
const SERVICE_NAME = /^[a-z]([-a-z0-9]*[a-z0-9])?$/
/** A namespace is a DNS-1123 label. */
const NAMESPACE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/
const LABEL_MAX = 63

/** "10.0.0.1", "10.0.0.1:80", "fd00::1", "[fd00::1]:80"; undefined when the text is no address. */
function parseAddress(text: string): {ip: string; port?: string} | undefined {
  if (text.startsWith('[')) {
    const close = text.indexOf(']')
    const ip = text.slice(1, close)
    if (close < 0 || !isIPv6(ip)) return undefined
    const rest = text.slice(close + 1)
    if (rest === '') return {ip}
    return rest.startsWith(':') ? {ip, port: rest.slice(1)} : undefined
  }

  // Only text with two colons can be IPv6: node compiles its IPv6 pattern on the first call (5 ms of a start-up).
  if (text.indexOf(':') !== text.lastIndexOf(':') && isIPv6(text)) return {ip: text}
  const colon = text.indexOf(':')
  const ip = colon < 0 ? text : text.slice(0, colon)
  if (!isIPv4(ip)) return undefined
  return colon < 0 ? {ip} : {ip, port: text.slice(colon + 1)}
}

/** "svc/NAME", "NAME", "svc/NAMESPACE/NAME" or (offline) "IP[:PORT]". */
export function parseTraceTarget(text: string): TraceTarget {
  const address = parseAddress(text)
  if (address) {
    if (address.port === undefined) return {kind: 'address', ip: address.ip, port: undefined}
    if (!/^\d{1,5}$/.test(address.port) || Number(address.port) < 1 || Number(address.port) > 65_535) {
      throw new CliError(`"${text}": the port must be a number from 1 to 65535`)
    }

    return {kind: 'address', ip: address.ip, port: Number(address.port)}
  }

  if (/^[0-9.:[\]]+$/.test(text) && /[.:]/.test(text)) throw new CliError(`"${text}" is not an address: use IP, IP:PORT or [IPv6]:PORT`)
  const parts = text.split('/')
  let namespace: string | undefined
  let name: string
  if (parts.length === 1) name = parts[0]
  else if (parts.length === 2 && KINDS.has(parts[0])) name = parts[1]
  else if (parts.length === 3 && KINDS.has(parts[0])) [, namespace, name] = parts
  else throw new CliError(`"${text}" is not a Service: use svc/NAME, NAME or svc/NAMESPACE/NAME`)
  if (name.length > LABEL_MAX || !SERVICE_NAME.test(name)) {
    throw new CliError(
      `"${shorten(name)}" is not a valid Service name (a DNS-1035 label: lowercase letters, digits and "-", starting with a letter, at most ${LABEL_MAX} characters)`,
    )
  }

  if (namespace !== undefined && (namespace.length > LABEL_MAX || !NAMESPACE.test(namespace))) {
    throw new CliError(`"${shorten(namespace)}" is not a valid namespace (lowercase letters, digits and "-", at most ${LABEL_MAX} characters)`)
  }

  return {kind: 'service', namespace, name}
}

const shorten = (text: string) => (text.length > 70 ? `${text.slice(0, 67)}...` : text)

/** The ports of a Service to trace: all of them, or those --port names (by name or number). */
export function selectPorts(service: ServiceInfo, wanted?: string): ServicePortInfo[] {
  if (wanted === undefined) return service.ports
  const ports = service.ports.filter((p) => p.name === wanted || String(p.port) === wanted)
  if (ports.length === 0) {
    const known = service.ports.map((p) => (p.name ? `${p.name} (${p.port})` : String(p.port))).join(', ')
    throw new CliError(`svc/${service.name} has no port "${wanted}"; its ports: ${known || 'none'}`)
  }

  return ports
}
