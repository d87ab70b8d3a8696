import {createHash} from 'node:crypto'

const BASE32_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'

/** RFC 4648 base32 without padding, as Go's base32.StdEncoding prints the leading characters. */
function base32(bytes: Uint8Array): string {
  let out = ''
  let bits = 0
  let value = 0
  for (const byte of bytes) {
    value = ((value << 8) | byte) & 0xffff
    bits += 8
    while (bits >= 5) {
      out += BASE32_ALPHABET[(value >>> (bits - 5)) & 31]
      bits -= 5
    }
  }

  if (bits > 0) out += BASE32_ALPHABET[(value << (5 - bits)) & 31]
  return out
}

const hashOf = (input: string, length: number) => base32(createHash('sha256').update(input).digest()).slice(0, length)

/** kube-proxy's ServicePortName string: "ns/name:port", or "ns/name" for an unnamed port. */
export function servicePortName(namespace: string, name: string, portName: string): string {
  return `${namespace}/${name}${portName ? `:${portName}` : ''}`
}

/** iptables mode: the 16-character hash shared by KUBE-SVC/SVL/EXT/FW/XLB chains of one service port. */
export function servicePortHash(namespace: string, name: string, portName: string, protocol: string): string {
  return hashOf(servicePortName(namespace, name, portName) + protocol.toLowerCase(), 16)
}

export interface ServicePortChains {
  svc: string
  svl: string
  ext: string
  fw: string
  /** Before ~1.24, externalTrafficPolicy Local used KUBE-XLB- where newer versions use KUBE-EXT-. */
  xlb: string
}

export function servicePortChains(namespace: string, name: string, portName: string, protocol: string): ServicePortChains {
  const hash = servicePortHash(namespace, name, portName, protocol)
  return {svc: `KUBE-SVC-${hash}`, svl: `KUBE-SVL-${hash}`, ext: `KUBE-EXT-${hash}`, fw: `KUBE-FW-${hash}`, xlb: `KUBE-XLB-${hash}`}
}

/** iptables mode: the KUBE-SEP chain of one endpoint ("ip:port") of a service port. */
export function endpointChainName(namespace: string, name: string, portName: string, protocol: string, endpoint: string): string {
  return `KUBE-SEP-${hashOf(servicePortName(namespace, name, portName) + protocol.toLowerCase() + endpoint, 16)}`
}

/** nftables mode: "ns/name/proto/port", the readable tail of service and endpoint chain names. */
export function nftServicePortBase(namespace: string, name: string, portName: string, protocol: string): string {
  return `${namespace}/${name}/${protocol.toLowerCase()}/${portName}`
}

/** nftables mode: service-, external- and firewall- chains share one 8-character hash. */
export function nftServiceChains(
  namespace: string,
  name: string,
  portName: string,
  protocol: string,
): {service: string; external: string; local: string; firewall: string} {
  const base = nftServicePortBase(namespace, name, portName, protocol)
  const hash = hashOf(base, 8)
  return {service: `service-${hash}-${base}`, external: `external-${hash}-${base}`, local: `local-${hash}-${base}`, firewall: `firewall-${hash}-${base}`}
}

/** nftables mode: the endpoint chain of "ip" and port of a service port. */
export function nftEndpointChain(namespace: string, name: string, portName: string, protocol: string, ip: string, port: number): string {
  const base = `${nftServicePortBase(namespace, name, portName, protocol)}__${ip}/${port}`
  return `endpoint-${hashOf(base, 8)}-${base}`
}
