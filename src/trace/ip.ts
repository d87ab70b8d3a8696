/** IPv4 helpers for matching rule addresses; IPv6 is compared textually (see isIPv4 callers). */

export interface Cidr {
  /** Network address as an unsigned 32-bit number; undefined for addresses we cannot parse (IPv6). */
  base?: number
  bits: number
  text: string
}

export function parseIPv4(text: string): number | undefined {
  // Hand-rolled: rule matching parses an address per rule, in dumps of 400,000 rules.
  let value = 0
  let octet = 0
  let digits = 0
  let dots = 0
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c >= 48 && c <= 57) {
      octet = octet * 10 + (c - 48)
      if (++digits > 3 || octet > 255) return undefined
    } else if (c === 46 && digits > 0 && dots < 3) {
      value = value * 256 + octet
      octet = 0
      digits = 0
      dots++
    } else return undefined
  }

  return dots === 3 && digits > 0 ? value * 256 + octet : undefined
}

export function isIPv4(text: string): boolean {
  return parseIPv4(text) !== undefined
}

const maskOf = (bits: number) => (bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0)

export function parseCidr(text: string): Cidr {
  const [addr, bitsText] = text.split('/')
  const ip = parseIPv4(addr)
  if (ip === undefined) return {bits: bitsText ? Number(bitsText) : 128, text}
  const bits = bitsText === undefined ? 32 : Number(bitsText)
  return {base: (ip & maskOf(bits)) >>> 0, bits, text}
}

export function cidrContains(cidr: Cidr, ip: string): boolean | undefined {
  const value = parseIPv4(ip)
  if (cidr.base === undefined || value === undefined) return cidr.text === ip ? true : undefined
  return (value & maskOf(cidr.bits)) >>> 0 === cidr.base
}

/** outer contains every address of inner. */
export function cidrCovers(outer: Cidr, inner: Cidr): boolean | undefined {
  if (outer.base === undefined || inner.base === undefined) return undefined
  return outer.bits <= inner.bits && (inner.base & maskOf(outer.bits)) >>> 0 === outer.base
}

export function cidrsOverlap(a: Cidr, b: Cidr): boolean | undefined {
  if (a.base === undefined || b.base === undefined) return undefined
  return Boolean(cidrCovers(a, b) || cidrCovers(b, a))
}

/** "10.0.0.1:80" or "[fd00::1]:80" -> {ip, port}. */
export function splitHostPort(text: string): {ip: string; port?: number} {
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(text)
  if (v6) return {ip: v6[1], port: v6[2] ? Number(v6[2]) : undefined}
  const colon = text.lastIndexOf(':')
  if (colon > 0 && text.indexOf(':') === colon) return {ip: text.slice(0, colon), port: Number(text.slice(colon + 1))}
  return {ip: text}
}
