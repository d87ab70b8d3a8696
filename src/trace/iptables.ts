import {CliError} from '../errors.js'
import type {Action, Chain, ChainGraph, Condition, Rule} from './graph.js'
import {scanInterfaceNames} from './interfaces.js'
import {parseCidr, splitHostPort} from './ip.js'

/**
 * `iptables-save` output (or iptables-restore input): every table, with or without packet
 * counters. Rules are kept as text and compiled on first use, so a 400,000-line dump costs
 * little more than reading it; structure (tables, chain declarations, COMMIT) is checked
 * eagerly, so a truncated or garbled dump fails at once and names its line.
 */
export interface IptablesDump extends ChainGraph {
  mode: 'iptables'
  tables: Map<string, Map<string, IptablesChain>>
  /** The iptables-save version in the header, when present (e.g. "v1.8.9 (nf_tables)"). */
  generator?: string
  /** What was assumed to read the input (e.g. an excerpt without table headers). */
  notes: string[]
  /** Every interface name or wildcard the rules use (-i/-o), scanned once on first use. */
  interfaceNames(): Set<string>
}

export class IptablesChain implements Chain {
  /**
   * The chain's rules as runs of consecutive lines of the dump: [start, end, first line,
   * count] each. kube-proxy writes a chain's rules together, so a 400,000-rule dump costs a
   * few numbers per chain until a chain is used.
   */
  private readonly runs: number[] = []
  private count = 0
  private texts?: string[]
  private lineNumbers?: number[]
  private compiled?: Rule[]

  constructor(
    readonly name: string,
    readonly table: string,
    readonly policy: string | undefined,
    private readonly source: string,
    /** A built-in chain the input did not declare (iptables-restore does not require it). */
    readonly implicit = false,
  ) {}

  /** Adds the rule at [start, end) of the dump; `continues` when it directly follows this chain's previous rule. */
  add(start: number, end: number, line: number, continues: boolean): void {
    const runs = this.runs
    if (continues && runs.length > 0) {
      runs[runs.length - 3] = end
      runs[runs.length - 1]++
    } else runs.push(start, end, line, 1)
    this.count++
  }

  get ruleCount(): number {
    return this.count
  }

  private materialize(): void {
    if (this.texts) return
    const texts: string[] = []
    const lines: number[] = []
    const prefix = `-A ${this.name}`
    for (let r = 0; r < this.runs.length; r += 4) {
      const [start, end, firstLine, count] = this.runs.slice(r, r + 4)
      const rows = this.source.slice(start, end).split('\n')
      for (let k = 0; k < count; k++) {
        let row = rows[k]
        if (row.endsWith('\r')) row = row.slice(0, -1)
        if (row.charCodeAt(0) === 91 /* [ */) row = row.slice(row.indexOf('] ') + 2)
        texts.push(row.slice(prefix.length + 1))
        lines.push(firstLine + k)
      }
    }

    this.texts = texts
    this.lineNumbers = lines
  }

  /** The text of rule i after "-A CHAIN ". */
  text(i: number): string {
    this.materialize()
    return this.texts![i]
  }

  line(i: number): number {
    this.materialize()
    return this.lineNumbers![i]
  }

  /** Adds the interface names this chain's rules use (-i/-o) to `into`, from the raw text. */
  scanInterfaces(into: Set<string>): void {
    for (let r = 0; r < this.runs.length; r += 4) scanInterfaceNames(this.source.slice(this.runs[r], this.runs[r + 1]), into)
  }

  /** Compiles only the rules whose text contains `needle` (finding one Service in a big chain). */
  rulesMentioning(needle: string): Rule[] {
    this.materialize()
    return this.texts!.flatMap((text, i) => (text.includes(needle) ? [this.rule(i)] : []))
  }

  rules(): Rule[] {
    for (let i = 0; i < this.count; i++) this.rule(i)
    return this.compiled ?? []
  }

  rule(i: number): Rule {
    this.materialize()
    this.compiled ??= new Array<Rule>(this.count)
    this.compiled[i] ??= compileRule(this.texts![i], this.lineNumbers![i])
    return this.compiled[i]
  }

  mayMatchDestination(i: number, destination: string): boolean {
    this.materialize()
    const text = this.texts![i]
    // "-d ADDR" at the start or after a space; "! -d" and anything but a /32 need the full match.
    const atStart = text.startsWith('-d ')
    const space = atStart ? -1 : text.indexOf(' -d ')
    if ((!atStart && space < 0) || (space >= 1 && text.charCodeAt(space - 1) === 33 /* ! */)) return true
    const end = text.indexOf(' ', space + 4)
    const address = text.slice(space + 4, end < 0 ? text.length : end)
    if (!address.endsWith('/32')) return true
    return address.length - 3 === destination.length && address.startsWith(destination)
  }
}

/** kube-proxy's chains that live only in the filter table (for excerpts without table headers). */
const EXCERPT_FILTER_CHAINS = new Set(['FORWARD', 'KUBE-FORWARD', 'KUBE-FIREWALL', 'KUBE-PROXY-FIREWALL', 'KUBE-EXTERNAL-SERVICES', 'KUBE-NODE-PORT', 'KUBE-PROXY-CANARY', 'KUBE-KUBELET-CANARY'])

/** The chains each table has in the kernel before any rule is loaded. */
const BUILTIN_CHAINS: Record<string, string[]> = {
  filter: ['INPUT', 'FORWARD', 'OUTPUT'],
  nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'],
  mangle: ['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'],
  raw: ['PREROUTING', 'OUTPUT'],
  security: ['INPUT', 'FORWARD', 'OUTPUT'],
}

const dumpError = (line: number, what: string) => new CliError(`iptables dump, line ${line}: ${what}`)

/** Parses iptables-save text; throws a CliError naming the line of the first problem. */
export function parseIptablesSave(text: string): IptablesDump {
  const tables = new Map<string, Map<string, IptablesChain>>()
  let generator: string | undefined
  let current: Map<string, IptablesChain> | undefined
  let currentName = ''
  let openedAt = 0
  let lineNo = 0
  let lastContentLine = 0
  let start = 0
  // Without any "*table" line the input is an excerpt (`iptables-save | grep NAME`).
  let excerpt = false
  let excerptRules = false
  let excerptStart: {line: number; text: string} | undefined
  /** The chain an excerpt's rule belongs to: kube-proxy's verdict rules and filter chains in filter, the rest in nat. */
  const excerptChain = (name: string, rest: string): IptablesChain => {
    const verdict = / -j (REJECT|DROP|ACCEPT)( |$)/.test(rest)
    const table = EXCERPT_FILTER_CHAINS.has(name) || ((name === 'KUBE-SERVICES' || name === 'KUBE-NODEPORTS') && verdict) ? 'filter' : 'nat'
    const chains = tables.get(table) ?? new Map<string, IptablesChain>()
    tables.set(table, chains)
    let chain = chains.get(name)
    if (!chain) {
      chain = new IptablesChain(name, table, BUILTIN_CHAINS[table]?.includes(name) ? 'ACCEPT' : undefined, text, true)
      chains.set(name, chain)
    }

    return chain
  }

  // Rules of one chain come together: remember the last chain looked up.
  let lastChain: IptablesChain | undefined
  let previousWasRule = false
  const length = text.length
  // iptables-restore reads past a UTF-8 byte order mark, as editors on other systems write one.
  if (text.charCodeAt(0) === 0xfeff) start = 1
  while (start <= length) {
    let end = text.indexOf('\n', start)
    if (end < 0) end = length
    lineNo++
    const lineStart = start
    let lineEnd = end
    start = end + 1
    if (lineEnd > lineStart && text.charCodeAt(lineEnd - 1) === 13 /* \r */) lineEnd--
    if (lineEnd === lineStart) {
      previousWasRule = false
      continue
    }

    const first = text.charCodeAt(lineStart)

    // Rules are nearly every line of a large dump: handled on offsets, without a line string.
    let ruleStart = lineStart
    if (first === 91 /* [ */) {
      // Counters ("[packets:bytes] -A ...") come first when the dump was saved with -c.
      const close = text.indexOf('] ', lineStart)
      if (close < 0 || close > lineEnd) throw dumpError(lineNo, `malformed counters in "${shorten(text.slice(lineStart, lineEnd))}"`)
      ruleStart = close + 2
    }

    if ((first === 45 /* - */ || first === 91) && text.startsWith('-A ', ruleStart)) {
      if (!current && tables.size === 0) excerpt = true
      if (!current && !excerpt) throw dumpError(lineNo, `"${shorten(text.slice(lineStart, lineEnd))}" is outside any table (expected a "*table" line first)`)
      lastContentLine = lineNo
      const nameStart = ruleStart + 3
      let chain = lastChain
      const sameChain =
        !excerpt && chain !== undefined && text.startsWith(chain.name, nameStart) && (nameStart + chain.name.length === lineEnd || text.charCodeAt(nameStart + chain.name.length) === 32)
      if (!sameChain) {
        let nameEnd = text.indexOf(' ', nameStart)
        if (nameEnd < 0 || nameEnd > lineEnd) nameEnd = lineEnd
        const chainName = text.slice(nameStart, nameEnd)
        if (current) {
          chain = current.get(chainName)
          if (!chain) throw dumpError(lineNo, `rule for chain ${chainName}, which table ${currentName} does not declare`)
        } else {
          chain = excerptChain(chainName, text.slice(nameEnd, lineEnd))
          excerptRules = true
        }
        lastChain = chain
      }

      chain!.add(lineStart, lineEnd, lineNo, sameChain && previousWasRule)
      previousWasRule = true
      continue
    }

    previousWasRule = false
    const line = text.slice(lineStart, lineEnd)
    if ((first === 32 || first === 9) && /^\s+$/.test(line)) continue
    lastContentLine = lineNo
    if (first === 35 /* # */) {
      generator ??= /^# Generated by (?:iptables|ip6tables)[\w-]* (v\S+(?: \([^)]*\))?)/.exec(line)?.[1]
      continue
    }

    if (first === 42 /* * */) {
      if (current) throw dumpError(lineNo, `table "${line.slice(1)}" starts before table "${currentName}" (line ${openedAt}) has its COMMIT`)
      currentName = line.slice(1).trim()
      if (!/^[a-z]+$/.test(currentName)) throw dumpError(lineNo, `"${line}" is not a table name`)
      current = tables.get(currentName) ?? new Map()
      tables.set(currentName, current)
      // Built-in chains exist in the kernel whether or not the input declares them.
      for (const builtin of BUILTIN_CHAINS[currentName] ?? []) {
        if (!current.has(builtin)) current.set(builtin, new IptablesChain(builtin, currentName, 'ACCEPT', text, true))
      }

      lastChain = undefined
      openedAt = lineNo
      continue
    }

    if (line === 'COMMIT') {
      if (!current) throw dumpError(lineNo, 'COMMIT outside a table')
      current = undefined
      lastChain = undefined
      continue
    }

    if (!current && first === 58 && tables.size === 0 && !excerpt) {
      excerpt = true
      excerptStart = {line: lineNo, text: line}
    }

    if (!current && excerpt && first === 58) {
      // A declaration an excerpt kept (grep matches ":KUBE-SVC-... - [0:0]" too).
      const space = line.indexOf(' ')
      excerptChain(line.slice(1, space < 0 ? line.length : space), '')
      continue
    }

    if (!current) throw dumpError(lineNo, `"${shorten(line)}" is outside any table (expected a "*table" line first)`)
    if (first === 58 /* : */) {
      // ":NAME POLICY [packets:bytes]"
      const space = line.indexOf(' ')
      const policyEnd = space > 1 ? line.indexOf(' ', space + 1) : -1
      const policy = space > 1 ? line.slice(space + 1, policyEnd < 0 ? line.length : policyEnd) : ''
      const counters = policyEnd < 0 || (line.charCodeAt(policyEnd + 1) === 91 && line.endsWith(']') && line.includes(':', policyEnd))
      if (!policy || !counters) throw dumpError(lineNo, `malformed chain declaration "${shorten(line)}"`)
      const name = line.slice(1, space)
      const existing = current.get(name)
      if (!existing || (existing.implicit && existing.ruleCount === 0)) current.set(name, new IptablesChain(name, currentName, policy === '-' ? undefined : policy, text))
      continue
    }

    if (first === 45 /* - */ && (line.startsWith('-N ') || line.startsWith('-P '))) {
      // `iptables -S CHAIN` declares chains this way: "-N NAME", "-P BUILTIN POLICY".
      const [option, name, policy] = line.split(' ')
      if (!name || (option === '-P' && !policy)) throw dumpError(lineNo, `malformed chain declaration "${shorten(line)}"`)
      const existing = current.get(name)
      if (!existing || (existing.implicit && existing.ruleCount === 0)) current.set(name, new IptablesChain(name, currentName, option === '-P' ? policy : undefined, text))
      continue
    }

    throw dumpError(lineNo, `"${shorten(line)}" is not a table, chain, rule or COMMIT line`)
  }

  if (excerpt && !excerptRules && excerptStart) throw dumpError(excerptStart.line, `"${shorten(excerptStart.text)}" is outside any table (expected a "*table" line first)`)
  if (current) throw dumpError(lastContentLine, `the dump ends inside table "${currentName}" (opened at line ${openedAt}) without COMMIT: it looks truncated`)
  if (tables.size === 0) throw new CliError('iptables dump: no "*table" line found; this is not iptables-save output')
  let interfaces: Set<string> | undefined
  return {
    mode: 'iptables',
    tables,
    generator,
    notes: excerpt
      ? [
          'the input has no "*table" line (an excerpt, e.g. `iptables-save | grep`): its rules were read as the nat table (kube-proxy\'s filter chains and REJECT/DROP/ACCEPT rules of KUBE-SERVICES as the filter table), with a chain\'s rules in the order given; a jump to a chain the excerpt leaves out shows as missing',
        ]
      : [],
    chain: (table, name) => tables.get(table)?.get(name),
    interfaceNames: () => (interfaces ??= interfaceNamesOf(tables)),
  }
}

/**
 * kube-proxy's per-Service and per-endpoint chains are nearly all of a big dump; endpoint chains
 * name no interface and Service chains all name the same ones (--detect-local-mode), so a few
 * of each kind stand for the rest. A name missed this way is still traced, as an open condition.
 */
const SAMPLED_CHAINS = /^KUBE-(SEP|SVC|SVL|EXT|FW|XLB)-/
const SAMPLES = 5

function interfaceNamesOf(tables: Map<string, Map<string, IptablesChain>>): Set<string> {
  const names = new Set<string>()
  const sampled = new Map<string, number>()
  for (const chains of tables.values()) {
    for (const [name, chain] of chains) {
      const kind = SAMPLED_CHAINS.exec(name)?.[1]
      if (kind) {
        const seen = sampled.get(kind) ?? 0
        if (seen >= SAMPLES) continue
        sampled.set(kind, seen + 1)
      }

      chain.scanInterfaces(names)
    }
  }

  return names
}

function shorten(line: string): string {
  return line.length > 60 ? `${line.slice(0, 57)}...` : line
}

/** Splits a rule into words the way iptables-save quotes them ("..." with \" escapes). */
export function tokenizeRule(text: string, lineNo: number): string[] {
  if (!text.includes('"')) return text.split(' ').filter(Boolean)
  const tokens: string[] = []
  let i = 0
  const length = text.length
  while (i < length) {
    if (text.charCodeAt(i) === 32) {
      i++
      continue
    }

    if (text.charCodeAt(i) === 34 /* " */) {
      // Find the closing quote, stepping over \" escapes.
      let close = text.indexOf('"', i + 1)
      while (close > 0 && text.charCodeAt(close - 1) === 92 /* \\ */) close = text.indexOf('"', close + 1)
      if (close < 0) throw dumpError(lineNo, 'a quoted string never ends (truncated line?)')
      const word = text.slice(i + 1, close)
      tokens.push(word.includes('\\') ? word.replace(/\\(.)/g, '$1') : word)
      i = close + 1
      continue
    }

    let end = text.indexOf(' ', i)
    if (end < 0) end = length
    tokens.push(text.slice(i, end))
    i = end
  }

  return tokens
}

function parsePortRanges(text: string): Array<[number, number]> {
  return text.split(',').map((part) => {
    const [lo, hi] = part.split(':').map(Number)
    return [lo, hi ?? lo] as [number, number]
  })
}

function parseMarkSpec(text: string): {value: number; mask: number} {
  const [value, mask] = text.split('/')
  return {value: Number(value), mask: mask === undefined ? 0xffffffff : Number(mask)}
}

/** Options (match or target) whose value is not another option; they take exactly one word. */
const NO_VALUE_OPTIONS = new Set(['--rcheck', '--update', '--set', '--remove', '--reap', '--rsource', '--rdest', '--random', '--random-fully', '--persistent', '--limit-iface-in', '--limit-iface-out', '--physdev-is-in', '--physdev-is-out', '--physdev-is-bridged', '-f', '--fragment'])

/** Compiles one rule's text (after "-A CHAIN ") into conditions and an action. */
export function compileRule(text: string, lineNo: number): Rule {
  const words = tokenizeRule(text, lineNo)
  const conditions: Condition[] = []
  let action: Action = {kind: 'none'}
  let comment: string | undefined
  let module = ''
  let recent: {list: string; check: boolean; set: boolean; seconds?: number} | undefined
  let target: string | undefined
  const targetOptions: Record<string, string> = {}
  let probability: number | undefined
  let i = 0
  const value = (option: string) => {
    const v = words[++i]
    if (v === undefined) throw dumpError(lineNo, `option ${option} has no value (truncated line?)`)
    return v
  }

  while (i < words.length) {
    let negated = false
    let word = words[i]
    if (word === '!') {
      negated = true
      word = words[++i]
      if (word === undefined) throw dumpError(lineNo, '"!" at the end of the rule')
    }

    if (target !== undefined) {
      // Everything after -j belongs to the target.
      if (word.startsWith('-')) targetOptions[word] = NO_VALUE_OPTIONS.has(word) || words[i + 1]?.startsWith('--') || words[i + 1] === undefined ? '' : value(word)
      i++
      continue
    }

    switch (word) {
      case '-s':
      case '--source':
        conditions.push({kind: 'address', field: 'source', cidr: parseCidr(value(word)), negated})
        break
      case '-d':
      case '--destination':
        conditions.push({kind: 'address', field: 'destination', cidr: parseCidr(value(word)), negated})
        break
      case '-p':
      case '--protocol':
        conditions.push({kind: 'protocol', protocol: value(word).toLowerCase(), negated})
        break
      case '-i':
      case '--in-interface':
        conditions.push({kind: 'interface', field: 'in', name: value(word), negated})
        break
      case '-o':
      case '--out-interface':
        conditions.push({kind: 'interface', field: 'out', name: value(word), negated})
        break
      case '-m':
      case '--match':
        module = value(word)
        break
      case '--comment':
        comment = value(word)
        break
      case '--dport':
      case '--destination-port':
      case '--dports':
      case '--destination-ports':
        conditions.push({kind: 'port', field: 'destination', ranges: parsePortRanges(value(word)), negated})
        break
      case '--sport':
      case '--source-port':
      case '--sports':
      case '--source-ports':
        conditions.push({kind: 'port', field: 'source', ranges: parsePortRanges(value(word)), negated})
        break
      case '--src-type':
        conditions.push({kind: 'addrtype', field: 'source', type: value(word), negated})
        break
      case '--dst-type':
        conditions.push({kind: 'addrtype', field: 'destination', type: value(word), negated})
        break
      case '--mark': {
        const {value: markValue, mask} = parseMarkSpec(value(word))
        conditions.push({kind: 'mark', value: markValue, mask, negated})
        break
      }

      case '--ctstate':
      case '--state':
        conditions.push({kind: 'ctstate', states: value(word).split(','), negated})
        break
      case '--mode': {
        const mode = value(word)
        if (mode !== 'random') conditions.push({kind: 'opaque', text: `statistic --mode ${mode}`})
        break
      }

      case '--probability': {
        // iptables refuses anything but a number from 0 to 1.
        const text = value(word)
        probability = Number(text)
        if (text.trim() === '' || !Number.isFinite(probability) || probability < 0 || probability > 1) {
          throw dumpError(lineNo, `--probability "${shorten(text)}" is not a number from 0 to 1`)
        }

        break
      }
      case '--name':
        recent = {...(recent ?? {check: false, set: false}), list: value(word)}
        break
      case '--rcheck':
      case '--update':
        recent = {...(recent ?? {list: 'DEFAULT', set: false}), check: true}
        break
      case '--set':
        recent = {...(recent ?? {list: 'DEFAULT', check: false}), set: true}
        break
      case '--seconds':
        recent = {...(recent ?? {list: 'DEFAULT', check: false, set: false}), seconds: Number(value(word))}
        break
      case '--mask':
        // recent's address mask: affinity is per client address, which is all we report.
        if (module === 'recent') {
          value(word)
          break
        }

        conditions.push({kind: 'opaque', text: `-m ${module} --mask ${value(word)}`})
        break
      case '--nfacct-name':
        // Accounting only (kube-proxy counts some packets with nfacct): it always matches.
        value(word)
        break
      case '--match-set': {
        const name = value(word)
        const flags = value(word)
        conditions.push({kind: 'set', name: `${name} ${flags}`, negated})
        break
      }

      case '-j':
      case '--jump':
        target = value(word)
        break
      case '-g':
      case '--goto':
        action = {kind: 'goto', chain: value(word)}
        break
      default:
        if (NO_VALUE_OPTIONS.has(word)) break
        if (!word.startsWith('-')) throw dumpError(lineNo, `unexpected word "${word}" in rule`)
        // An option of a match we do not model: keep it visible, never guess its meaning.
        conditions.push({kind: 'opaque', text: `${negated ? '! ' : ''}${module ? `-m ${module} ` : ''}${word}${words[i + 1] && !words[i + 1].startsWith('-') ? ` ${value(word)}` : ''}`})
    }

    i++
  }

  if (probability !== undefined) conditions.push({kind: 'probability', probability})
  if (recent?.check) conditions.push({kind: 'recent-check', list: recent.list, seconds: recent.seconds})
  if (recent?.set) conditions.push({kind: 'recent-set', list: recent.list})
  if (target !== undefined) action = targetAction(target, targetOptions, lineNo)
  return {line: lineNo, text, comment, conditions, action}
}

function targetAction(target: string, options: Record<string, string>, lineNo: number): Action {
  switch (target) {
    case 'ACCEPT':
      return {kind: 'accept'}
    case 'DROP':
      return {kind: 'drop'}
    case 'REJECT':
      return {kind: 'reject'}
    case 'RETURN':
      return {kind: 'return'}
    case 'MASQUERADE':
      return {kind: 'masquerade'}
    case 'SNAT':
      return {kind: 'snat'}
    case 'DNAT': {
      const to = options['--to-destination']
      if (!to) throw dumpError(lineNo, 'DNAT without --to-destination')
      const {ip, port} = splitHostPort(to)
      return {kind: 'dnat', ip, port}
    }

    case 'MARK': {
      if (options['--set-xmark'] !== undefined) {
        const {value, mask} = parseMarkSpec(options['--set-xmark'])
        return {kind: 'mark', clear: mask, xor: value}
      }

      if (options['--set-mark'] !== undefined) {
        const {value, mask} = parseMarkSpec(options['--set-mark'])
        return {kind: 'mark', clear: mask, xor: value}
      }

      if (options['--or-mark'] !== undefined) {
        const value = Number(options['--or-mark'])
        return {kind: 'mark', clear: value, xor: value}
      }

      if (options['--xor-mark'] !== undefined) return {kind: 'mark', clear: 0, xor: Number(options['--xor-mark'])}
      if (options['--and-mark'] !== undefined) return {kind: 'mark', clear: ~Number(options['--and-mark']) >>> 0, xor: 0}
      return {kind: 'other', name: 'MARK'}
    }

    case 'LOG':
    case 'NFLOG':
    case 'CONNMARK':
    case 'CT':
    case 'NOTRACK':
      return {kind: 'none'}
    default:
      // A name that is not a built-in target is a user chain.
      return BUILTIN_TARGETS.has(target) ? {kind: 'other', name: target} : {kind: 'jump', chain: target}
  }
}

/** Targets provided by kernel modules rather than chains (verdicts we do not model). */
const BUILTIN_TARGETS = new Set(['TPROXY', 'REDIRECT', 'TCPMSS', 'CLASSIFY', 'DSCP', 'TOS', 'TTL', 'HL', 'SET', 'AUDIT', 'CHECKSUM', 'TEE', 'SECMARK', 'CONNSECMARK', 'NETMAP', 'NFQUEUE', 'QUEUE', 'IDLETIMER', 'LED', 'RATEEST', 'SYNPROXY', 'TRACE', 'ULOG'])
