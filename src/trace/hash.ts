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

const hashOf = (input: string, length: number) => base32(sha256(input)).slice(0, length)

// prettier-ignore
const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
  0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
  0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
  0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
])

const rotr = (x: number, n: number) => (x >>> n) | (x << (32 - n))

/**
 * SHA-256 (FIPS 180-4) of a string's UTF-8 bytes. Written out rather than node:crypto's: the
 * names hashed here are a few dozen bytes, a handful per trace, and loading node:crypto (with
 * OpenSSL behind it) cost trace --from-file 3-5 ms of its start. test/unit/trace/hash.test.ts
 * holds it to node:crypto's digest.
 */
export function sha256(input: string): Uint8Array {
  const bytes = Buffer.from(input, 'utf8')
  // The bytes, 0x80, zeros, and the length in bits as a 64-bit big-endian number: whole 64-byte blocks.
  const padded = new Uint8Array(Math.ceil((bytes.length + 9) / 64) * 64)
  padded.set(bytes)
  padded[bytes.length] = 0x80
  const view = new DataView(padded.buffer)
  view.setUint32(padded.length - 8, Math.floor(bytes.length / 0x20000000))
  view.setUint32(padded.length - 4, (bytes.length * 8) >>> 0)
  const h = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19])
  const w = new Uint32Array(64)
  for (let block = 0; block < padded.length; block += 64) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(block + i * 4)
    for (let i = 16; i < 64; i++) {
      const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3)
      const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10)
      w[i] = w[i - 16] + s0 + w[i - 7] + s1
    }

    let [a, b, c, d, e, f, g, hh] = h
    for (let i = 0; i < 64; i++) {
      const t1 = (hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) | 0
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) | 0
      hh = g
      g = f
      f = e
      e = (d + t1) | 0
      d = c
      c = b
      b = a
      a = (t1 + t2) | 0
    }

    h[0] += a
    h[1] += b
    h[2] += c
    h[3] += d
    h[4] += e
    h[5] += f
    h[6] += g
    h[7] += hh
  }

  const digest = new Uint8Array(32)
  const out = new DataView(digest.buffer)
  for (let i = 0; i < 8; i++) out.setUint32(i * 4, h[i])
  return digest
}

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
