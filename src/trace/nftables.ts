import {CliError} from '../errors.js'
import type {Action, Chain, ChainGraph, Condition, PacketView, Rule} from './graph.js'
import {cidrContains, parseCidr, splitHostPort} from './ip.js'

/**
 * `nft list table ip kube-proxy` (with or without `-a` handles). Sets and verdict maps are
 * read with their elements; a rule that looks a packet up in a verdict map becomes one rule
 * per element, so one walker serves iptables and nftables alike.
 */
export interface NftTable extends ChainGraph {
  mode: 'nftables'
  family: string
  name: string
  chains: Map<string, NftChain>
  sets: Map<string, NftSet>
  /** Set when the listing stops before the table's closing brace (cut short). */
  truncatedAt?: number
}

export interface NftElement {
  key: string
  value?: string
  comment?: string
}

export interface NftSet {
  name: string
  isMap: boolean
  type: string
  elements: NftElement[]
  line: number
  /** Element lifetime ("timeout 3h"): kube-proxy's session affinity timeout. */
  timeoutSeconds?: number
}

export interface NftHook {
  type: string
  hook: string
  priority: number
}

const PRIORITY_NAMES: Record<string, number> = {raw: -300, mangle: -150, dstnat: -100, filter: 0, security: 50, srcnat: 100, out: 100}

export class NftChain implements Chain {
  readonly rawRules: Array<{line: number; text: string}> = []
  hook?: NftHook
  private compiled?: Rule[]

  constructor(
    readonly name: string,
    readonly table: string,
    private readonly owner: () => NftTable,
  ) {}

  get policy(): string | undefined {
    return this.hook ? 'accept' : undefined
  }

  get ruleCount(): number {
    return this.rules().length
  }

  rules(): Rule[] {
    this.compiled ??= this.rawRules.flatMap((r) => compileNftRule(r.text, r.line, this.owner()))
    return this.compiled
  }

  rule(i: number): Rule {
    return this.rules()[i]
  }
}

const nftError = (line: number, what: string) => new CliError(`nftables listing, line ${line}: ${what}`)

/**
 * Removes nft's "# handle N" annotation and surrounding blanks. Plain string work: a regex
 * with blanks on both sides of the annotation retries at every blank of a long line.
 */
export function clean(line: string): string {
  const text = line.trim()
  const at = text.lastIndexOf('# handle ')
  if (at < 0) return text
  const digits = text.slice(at + 9)
  if (digits.length === 0) return text
  for (let i = 0; i < digits.length; i++) {
    const c = digits.charCodeAt(i)
    if (c < 48 || c > 57) return text
  }

  return text.slice(0, at).trim()
}

/** Parses the text of one kube-proxy nftables table. */
export function parseNftTable(text: string): NftTable {
  const lines = text.split('\n')
  const chains = new Map<string, NftChain>()
  const sets = new Map<string, NftSet>()
  let family = ''
  let tableName = ''
  let depth = 0
  let chain: NftChain | undefined
  let set: NftSet | undefined
  let elements: string | undefined
  let elementsLine = 0
  let truncatedAt: number | undefined
  let lastContent = 0
  const table: NftTable = {
    mode: 'nftables',
    family: '',
    name: '',
    chains,
    sets,
    chain: (_t, name) => chains.get(name),
  }

  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1
    const line = clean(lines[i])
    if (line === '') continue
    lastContent = lineNo
    if (elements !== undefined) {
      elements += ` ${line}`
      if (line.includes('}')) {
        set!.elements = parseElements(elements, elementsLine)
        elements = undefined
      }

      continue
    }

    if (depth === 0) {
      const header = /^table (\S+) (\S+) \{$/.exec(line)
      if (header) {
        ;[, family, tableName] = header
        depth = 1
        continue
      }

      if (/^#/.test(line)) continue
      throw nftError(lineNo, `expected "table <family> <name> {", found "${line.slice(0, 60)}"`)
    }

    if (depth === 1) {
      if (line === '}') {
        depth = 0
        continue
      }

      const opening = /^(chain|set|map|flowtable|counter|quota|ct helper|limit) (\S+) \{$/.exec(line)
      if (opening) {
        depth = 2
        if (opening[1] === 'chain') chain = new NftChain(opening[2], tableName, () => table)
        else if (opening[1] === 'set' || opening[1] === 'map') set = {name: opening[2], isMap: opening[1] === 'map', type: '', elements: [], line: lineNo}
        if (chain) chains.set(chain.name, chain)
        if (set) sets.set(set.name, set)
        continue
      }

      if (/^comment "/.test(line) || /^flags /.test(line)) continue
      if (/^\.+$/.test(line)) {
        // Someone cut the listing short ("...."): keep what is there, say so.
        truncatedAt = lineNo
        break
      }

      throw nftError(lineNo, `unexpected "${line.slice(0, 60)}" in table ${tableName}`)
    }

    // depth 2: inside a chain, set or map
    if (line === '}') {
      depth = 1
      chain = undefined
      set = undefined
      continue
    }

    if (set) {
      const type = /^type (.+)$/.exec(line)
      const timeout = /^timeout (\d+)([smhd])$/.exec(line)
      if (type) set.type = type[1]
      else if (timeout) set.timeoutSeconds = Number(timeout[1]) * {s: 1, m: 60, h: 3600, d: 86_400}[timeout[2] as 's' | 'm' | 'h' | 'd']
      else if (line.startsWith('elements = {')) {
        elements = line.slice('elements = '.length)
        elementsLine = lineNo
        if (line.includes('}')) {
          set.elements = parseElements(elements, lineNo)
          elements = undefined
        }
      }

      continue
    }

    if (chain) {
      const hook = /^type (\w+) hook (\w+)(?: device \S+)? priority ([^;]+);/.exec(line)
      if (hook) {
        chain.hook = {type: hook[1], hook: hook[2], priority: parsePriority(hook[3])}
        continue
      }

      if (/^(policy \w+;|comment ".*")$/.test(line)) continue
      chain.rawRules.push({line: lineNo, text: line})
    }
  }

  if (!tableName) throw new CliError('nftables listing: no "table" line found; this is not `nft list table` output')
  if (elements !== undefined) throw nftError(elementsLine, `the elements of ${set?.name} never end: the listing looks truncated`)
  if (depth > 0 && truncatedAt === undefined) truncatedAt = lastContent + 1
  table.family = family
  table.name = tableName
  table.truncatedAt = truncatedAt
  return table
}

function parsePriority(text: string): number {
  const match = /^(\w+)\s*(?:([+-])\s*(\d+))?$/.exec(text.trim())
  if (!match) return Number(text) || 0
  const base = PRIORITY_NAMES[match[1]] ?? Number(match[1])
  const offset = match[3] ? Number(match[3]) * (match[2] === '-' ? -1 : 1) : 0
  return (Number.isNaN(base) ? 0 : base) + offset
}

/** "{ a : goto x, b comment "c" : drop }" -> elements. */
function parseElements(text: string, line: number): NftElement[] {
  const inner = text.trim().replace(/^\{/, '').replace(/\}$/, '').trim()
  if (inner === '') return []
  return splitTopLevel(inner, ',').map((part) => {
    const item = part.trim()
    let comment: string | undefined
    // indexOf, not a regex: a regex would rescan the rest of the item from every " comment \"".
    let withoutComment = item
    const at = item.indexOf(' comment "')
    if (at >= 0) {
      let end = at + 10
      while (end < item.length && item.charCodeAt(end) !== 34) end += item.charCodeAt(end) === 92 ? 2 : 1
      if (end < item.length) {
        comment = item.slice(at + 10, end)
        withoutComment = item.slice(0, at) + item.slice(end + 1)
      }
    }
    const colon = withoutComment.indexOf(' : ')
    if (colon < 0) return {key: withoutComment.trim(), comment}
    const key = withoutComment.slice(0, colon).trim()
    const value = withoutComment.slice(colon + 3).trim()
    if (!key || !value) throw nftError(line, `malformed map element "${item}"`)
    return {key, value, comment}
  })
}

function splitTopLevel(text: string, separator: string): string[] {
  const parts: string[] = []
  let depth = 0
  let quoted = false
  let current = ''
  for (const c of text) {
    if (c === '"') quoted = !quoted
    if (!quoted && c === '{') depth++
    if (!quoted && c === '}') depth--
    if (!quoted && depth === 0 && c === separator) {
      parts.push(current)
      current = ''
    } else current += c
  }

  if (current.trim()) parts.push(current)
  return parts
}

/** Words of a rule; `{ ... }` groups and quoted strings stay whole. */
function words(text: string): string[] {
  const out: string[] = []
  let i = 0
  while (i < text.length) {
    const c = text[i]
    if (c === ' ') {
      i++
      continue
    }

    if (c === '{' || c === '"') {
      const close = c === '{' ? '}' : '"'
      let depth = 0
      let j = i
      for (; j < text.length; j++) {
        if (c === '{' && text[j] === '{') depth++
        if (text[j] === close && (c === '"' ? j > i : --depth === 0)) break
      }

      out.push(text.slice(i, j + 1))
      i = j + 1
      continue
    }

    let end = text.indexOf(' ', i)
    if (end < 0) end = text.length
    out.push(text.slice(i, end))
    i = end
  }

  return out
}

const PROTOCOLS = new Set(['tcp', 'udp', 'sctp'])
const LOOKUP_FIELD = /^(ip6? [ds]addr|meta l4proto|(th|tcp|udp|sctp) [ds]port)$/

/** Answers "is this packet's value in the set" when the set's key is one kube-proxy uses. */
function setTest(set: NftSet | undefined, selector: string): ((p: PacketView) => boolean | undefined) | undefined {
  if (!set) return undefined
  const keys = new Set(set.elements.map((e) => e.key))
  if (selector === 'ip daddr' || selector === 'ip6 daddr') {
    return (p) => {
      // NodePort traffic offline: the destination is "this node", which nodeport-ips lists.
      if (p.destination === undefined) return set.name === 'nodeport-ips' ? true : undefined
      return keys.has(p.destination) || set.elements.some((e) => e.key.includes('/') && cidrContains(parseCidr(e.key), p.destination!))
    }
  }

  return undefined
}

/** The key a verdict map lookup builds from a packet, for the selectors kube-proxy uses. */
function mapKeyConditions(selector: string[], key: string): Condition[] | undefined {
  const parts = key.split(' . ').map((s) => s.trim())
  if (parts.length !== selector.length) return undefined
  const conditions: Condition[] = []
  for (const [i, field] of selector.entries()) {
    const value = parts[i]
    if (field === 'ip daddr' || field === 'ip6 daddr') conditions.push({kind: 'address', field: 'destination', cidr: parseCidr(value), negated: false})
    else if (field === 'ip saddr' || field === 'ip6 saddr') conditions.push({kind: 'address', field: 'source', cidr: parseCidr(value), negated: false})
    else if (field === 'meta l4proto') conditions.push({kind: 'protocol', protocol: value, negated: false})
    else if (/^(th|tcp|udp|sctp) dport$/.test(field)) {
      const [lo, hi] = value.split('-').map(Number)
      conditions.push({kind: 'port', field: 'destination', ranges: [[lo, hi ?? lo]], negated: false})
    } else return undefined
  }

  return conditions
}

function verdictAction(verdict: string): Action {
  const [word, target] = verdict.trim().split(/\s+/)
  switch (word) {
    case 'goto':
      return {kind: 'goto', chain: target}
    case 'jump':
      return {kind: 'jump', chain: target}
    case 'drop':
      return {kind: 'drop'}
    case 'accept':
      return {kind: 'accept'}
    case 'return':
      return {kind: 'return'}
    default:
      return {kind: 'other', name: verdict}
  }
}

const OPAQUE_MAX = 200

/** Compiles one nft rule of kube-proxy's vocabulary; a vmap lookup yields one rule per element. */
export function compileNftRule(text: string, line: number, table: NftTable): Rule[] {
  const w = words(text)
  const conditions: Condition[] = []
  let action: Action = {kind: 'none'}
  let comment: string | undefined
  const perElement: Rule[] = []
  let i = 0
  const negation = () => {
    if (w[i] === '!=') {
      i++
      return true
    }

    if (w[i] === '==') i++
    return false
  }

  // The next "vmap" word, found once per stretch of words rather than once per word.
  let dot = -1
  let opaqueEnd = -1
  while (i < w.length) {
    const word = w[i]
    const next = w[i + 1]
    // "a . b . c vmap @map": a concatenated lookup (a few fields, so a few words before "vmap").
    if (dot !== Infinity && dot < i) {
      const found = w.indexOf('vmap', i)
      dot = found < 0 ? Infinity : found
    }
    const selector = dot !== Infinity && dot > i && dot - i <= 24 ? w.slice(i, dot).join(' ').split(' . ') : []
    if (selector.length > 1 && selector.every((f) => LOOKUP_FIELD.test(f)) && w[dot + 1]?.startsWith('@')) {
      const map = table.sets.get(w[dot + 1].slice(1))
      for (const element of map?.elements ?? []) {
        const keyConditions = mapKeyConditions(selector, element.key)
        if (!keyConditions || !element.value) continue
        perElement.push({line, text, comment: element.comment, conditions: [...conditions, ...keyConditions], action: verdictAction(element.value)})
      }

      i = dot + 2
      continue
    }

    if ((word === 'ip' || word === 'ip6') && (next === 'daddr' || next === 'saddr')) {
      i += 2
      const negated = negation()
      const value = w[i]
      const field = next === 'daddr' ? 'destination' : 'source'
      if (value.startsWith('@')) {
        const name = value.slice(1)
        if (name.startsWith('affinity-')) {
          // Session affinity: a client seen recently goes back to its endpoint.
          conditions.push(
            negated ? {kind: 'opaque', text: `not in ${name}`} : {kind: 'recent-check', list: name, seconds: table.sets.get(name)?.timeoutSeconds},
          )
        } else conditions.push({kind: 'set', name, negated, test: setTest(table.sets.get(name), `${word} ${next}`)})
      } else if (value.startsWith('{')) conditions.push({kind: 'opaque', text: `${word} ${next} ${negated ? '!= ' : ''}${value}`})
      else conditions.push({kind: 'address', field, cidr: parseCidr(value), negated})
      i++
      continue
    }

    if (word === 'meta' && next === 'l4proto') {
      i += 2
      const negated = negation()
      conditions.push(w[i].startsWith('{') ? {kind: 'opaque', text: `meta l4proto ${w[i]}`} : {kind: 'protocol', protocol: w[i], negated})
      i++
      continue
    }

    if ((PROTOCOLS.has(word) || word === 'th') && (next === 'dport' || next === 'sport')) {
      i += 2
      const negated = negation()
      if (PROTOCOLS.has(word)) conditions.push({kind: 'protocol', protocol: word, negated: false})
      const [lo, hi] = w[i].split('-').map(Number)
      conditions.push(
        Number.isNaN(lo)
          ? {kind: 'opaque', text: `${word} ${next} ${w[i]}`}
          : {kind: 'port', field: next === 'dport' ? 'destination' : 'source', ranges: [[lo, hi ?? lo]], negated},
      )
      i++
      continue
    }

    if (word === 'fib' && (next === 'saddr' || next === 'daddr') && w[i + 2] === 'type') {
      i += 3
      const negated = negation()
      conditions.push({kind: 'addrtype', field: next === 'saddr' ? 'source' : 'destination', type: w[i].toUpperCase(), negated})
      i++
      continue
    }

    if (word === 'ct' && next === 'state') {
      i += 2
      const negated = negation()
      conditions.push({
        kind: 'ctstate',
        states: w[i]
          .replace(/[{}]/g, '')
          .split(',')
          .map((s) => s.trim().toUpperCase())
          .filter(Boolean),
        negated,
      })
      i++
      continue
    }

    if (word === 'meta' && next === 'mark' && w[i + 2] === 'set') {
      // "meta mark set meta mark | 0x4000" / "^ 0x4000" / "set 0x4000"
      const op = w[i + 5]
      const value = Number(w[i + 6] ?? w[i + 3])
      if (w[i + 3] === 'meta' && op === '|') action = {kind: 'mark', clear: value, xor: value}
      else if (w[i + 3] === 'meta' && op === '^') action = {kind: 'mark', clear: 0, xor: value}
      else if (w[i + 3] === 'meta' && op === '&') action = {kind: 'mark', clear: ~value >>> 0, xor: 0}
      else action = {kind: 'mark', clear: 0xffffffff, xor: Number(w[i + 3])}
      i += w[i + 3] === 'meta' ? 7 : 4
      continue
    }

    if ((word === 'meta' && next === 'mark') || word === 'mark') {
      // "meta mark & 0x4000 == 0" / "mark and 0x4000 != 0"
      i += word === 'meta' ? 2 : 1
      let mask = 0xffffffff
      if (w[i] === '&' || w[i] === 'and') {
        mask = Number(w[i + 1])
        i += 2
      }

      const negated = negation()
      conditions.push({kind: 'mark', value: Number(w[i]), mask, negated})
      i++
      continue
    }

    if (word === 'numgen' && next === 'random' && w[i + 2] === 'mod' && w[i + 4] === 'vmap') {
      const modulus = Number(w[i + 3])
      const body = w[i + 5]
      const counts = new Map<string, number>()
      let isGoto = true
      for (const part of splitTopLevel(body.slice(1, -1), ',')) {
        const [keys, verdict] = part.split(' : ').map((s) => s.trim())
        const [kind, target] = verdict.split(/\s+/)
        isGoto &&= kind === 'goto'
        const [lo, hi] = keys.split('-').map(Number)
        counts.set(target, (counts.get(target) ?? 0) + (hi === undefined ? 1 : hi - lo + 1))
      }

      action = {kind: 'choose', goto: isGoto, targets: [...counts].map(([chain, n]) => ({chain, weight: n / modulus}))}
      i += 6
      continue
    }

    if (word === 'update' || word === 'add') {
      // "update @affinity-X { ip saddr }": remember the client for session affinity.
      conditions.push({kind: 'recent-set', list: (next ?? '').replace(/^@/, '')})
      i += 3
      continue
    }

    if (word === 'dnat') {
      let j = i + 1
      if (w[j] === 'ip' || w[j] === 'ip6') j++
      if (w[j] !== 'to') throw nftError(line, `cannot read "${text}"`)
      const {ip, port} = splitHostPort(w[j + 1])
      action = {kind: 'dnat', ip, port}
      i = j + 2
      continue
    }

    if (word === 'jump' || word === 'goto') {
      action = {kind: word, chain: next}
      i += 2
      continue
    }

    if (word === 'comment') {
      comment = next?.replace(/^"|"$/g, '')
      i += 2
      continue
    }

    if (word === 'counter') {
      i += next === 'packets' ? 5 : 1
      continue
    }

    const verdicts: Record<string, Action> = {
      drop: {kind: 'drop'},
      accept: {kind: 'accept'},
      return: {kind: 'return'},
      reject: {kind: 'reject'},
      masquerade: {kind: 'masquerade'},
    }
    if (verdicts[word]) {
      action = verdicts[word]
      // Verdict options ("reject with icmp type ...", "masquerade fully-random") end the rule.
      break
    }

    if (word === 'log' || word === 'notrack') break
    // Words we do not model, kept as written; a run of them is one condition (a long garbled
    // line must not become thousands of conditions).
    const unknownText = `${word}${next ? ` ${next}` : ''}`
    const last = conditions.at(-1)
    if (last?.kind === 'opaque' && opaqueEnd === i) {
      if (last.text.length < OPAQUE_MAX) last.text = `${last.text} ${unknownText}`
    } else conditions.push({kind: 'opaque', text: unknownText})
    i += 2
    opaqueEnd = i
  }

  for (const c of conditions) if (c.kind === 'opaque' && c.text.length > OPAQUE_MAX) c.text = `${c.text.slice(0, OPAQUE_MAX)}...`
  if (perElement.length > 0) return perElement
  return [{line, text, comment, conditions, action}]
}
