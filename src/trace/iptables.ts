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
  /** Every table's chains by name, in the order the dump declares them (built on first use: it makes an object per chain). */
  tables: Map<string, Map<string, IptablesChain>>
  /** A table's chains in declaration order, each made when the iteration reaches it; undefined when the dump has no such table. */
  chains(table: string): Iterable<IptablesChain> | undefined
  /** The iptables-save version in the header, when present (e.g. "v1.8.9 (nf_tables)"). */
  generator?: string
  /** What was assumed to read the input (e.g. an excerpt without table headers). */
  notes: string[]
  chain(table: string, name: string): IptablesChain | undefined
  /** Every interface name or wildcard the rules use (-i/-o), scanned once on first use. */
  interfaceNames(): Set<string>
}

// As int32: a loop whose hash starts as a double runs on doubles throughout.
const FNV_BASIS = 0x811c9dc5 | 0
const FNV_PRIME = 0x01000193

/** FNV-1a of text[start, end): a chain name is hashed where it stands in the dump. */
function hashOf(text: string, start: number, end: number): number {
  let hash = FNV_BASIS
  for (let i = start; i < end; i++) hash = Math.imul(hash ^ text.charCodeAt(i), FNV_PRIME)
  return hash
}

/** Where `code` first occurs in text[from, to), or -1: unlike indexOf, it never reads past the line. */
function indexWithin(text: string, code: number, from: number, to: number): number {
  for (let i = from; i < to; i++) if (text.charCodeAt(i) === code) return i
  return -1
}

/** Does text hold `prefix` at `at`? (String#startsWith at an offset costs far more in V8.) */
function startsWithAt(text: string, at: number, prefix: string): boolean {
  for (let k = 0; k < prefix.length; k++) if (text.charCodeAt(at + k) !== prefix.charCodeAt(k)) return false
  return true
}

/**
 * Do text[a, a + length) and text[b, b + length) hold the same characters? Compared from the end,
 * where kube-proxy's names differ. The character loops are small functions of their own: V8
 * optimizes those early and keeps them so, while their callers are still being recompiled.
 */
function sameFromEnd(text: string, a: number, b: number, length: number): boolean {
  for (let k = length - 1; k >= 0; k--) if (text.charCodeAt(a + k) !== text.charCodeAt(b + k)) return false
  return true
}

/** Does a[aStart, aEnd) hold the same characters as b[bStart, bEnd)? */
function sameText(a: string, aStart: number, aEnd: number, b: string, bStart: number, bEnd: number): boolean {
  if (aEnd - aStart !== bEnd - bStart) return false
  for (let i = 0; i < aEnd - aStart; i++) if (a.charCodeAt(aStart + i) !== b.charCodeAt(bStart + i)) return false
  return true
}

/**
 * Is the word at `at` of a rule line that ends at lineEnd the name of chain i (one of `size`),
 * named text[nameStart[i], nameEnd[i])? False for a chain whose name stands nowhere in the
 * dump (nameStart -1): TableChains.isNamedAt, on the general path, knows those. The names are
 * compared as two slices of the dump, which V8 compares natively: faster than a loop over their
 * characters, even with the two small strings made per rule. Their last characters first, where
 * kube-proxy's names differ, so a wrong guess seldom makes a slice.
 */
function namedAt(text: string, nameStart: Int32Array, nameEnd: Int32Array, size: number, i: number, at: number, lineEnd: number): boolean {
  if (i < 0 || i >= size) return false
  const from = nameStart[i]
  const length = nameEnd[i] - from
  const end = at + length
  if (from < 0 || length === 0 || end > lineEnd || (end < lineEnd && text.charCodeAt(end) !== 32)) return false
  return text.charCodeAt(end - 1) === text.charCodeAt(from + length - 1) && text.slice(from, from + length) === text.slice(at, end)
}

/** TableChains' flags. */
const IMPLICIT = 1
const OTHER_NAME = 2
const POLICY = 4

const grown = (column: Int32Array, size: number) => {
  const copy = new Int32Array(size)
  copy.set(column)
  return copy
}

/** Where the word at `start` of a line that ends at lineEnd ends: at a space or the line's end. */
function wordEnd(text: string, start: number, lineEnd: number): number {
  const space = indexWithin(text, 32, start, lineEnd)
  return space < 0 ? lineEnd : space
}

/** Where the line that starts at `start` ends: before its \n (or the text's end), and before a \r there. */
function lineEndAt(text: string, start: number): number {
  let end = text.indexOf('\n', start)
  if (end < 0) end = text.length
  return end > start && text.charCodeAt(end - 1) === 13 /* \r */ ? end - 1 : end
}

/**
 * The chains of one table, as columns of numbers over the dump's text. A big dump declares
 * 100,000 chains and has 400,000 rule lines: an object and a name string per chain, and a
 * string cut out of each rule line to look its chain up in a Map, cost more than the rest of
 * the parse (allocation, garbage collection, cache misses). A chain is numbered in declaration
 * order and becomes an IptablesChain when something asks for it.
 */
class TableChains {
  size = 0
  /** Where each chain's name stands in the dump; -1 when it does not (then it is in `otherNames`). */
  private nameStart = new Int32Array(16)
  private nameEnd = new Int32Array(16)
  private hashes = new Int32Array(16)
  private ruleCounts = new Int32Array(16)
  /** Each chain's first and last rule (numbers in the rule columns below); lastRule is -1 before its first. */
  private firstRule = new Int32Array(16)
  private lastRule = new Int32Array(16)
  /** What else a chain has (IMPLICIT, OTHER_NAME, POLICY): the Maps below are read only then. */
  private flags = new Uint8Array(16)
  /**
   * Every rule line of the table, in the dump's order: where it starts, its line number, and
   * the rule of the same chain before it (-1 for none). One set of columns for all chains keeps
   * a rule to three numbers, and adding one is the same few stores whatever came before.
   */
  private rules = 0
  private ruleStart = new Int32Array(64)
  private ruleLine = new Int32Array(64)
  private ruleBefore = new Int32Array(64)
  private readonly otherNames = new Map<number, string>()
  private readonly policies = new Map<number, string>()
  private readonly views = new Map<number, IptablesChain>()
  /** Each chain's runs of rule lines, told once (see runs). */
  private readonly runsOf = new Map<number, number[]>()
  /** Chains of no sampled kind, and the first few of each kind (see interfaceNamesOf): the chains whose rules name interfaces. */
  readonly unsampled: number[] = []
  readonly samples: number[][] = SAMPLED_PREFIXES.map(() => [])
  /** Open addressing: chain number + 1, 0 for an empty slot; at most half full. */
  private slots = new Int32Array(64)
  // The chain of the last rule, the one before it, and the one declared after the furthest a
  // rule has named lately. iptables-save writes the chains' rules in the order it declares the
  // chains, and restore input often interleaves a Service's chain with its endpoints': a rule's
  // chain is nearly always one of these, told by comparing its name in place, without a lookup.
  private lastIndex = -1
  private beforeLast = -1
  private successor = 0
  /** How many lines the last addGuessedRun took. */
  taken = 0

  constructor(
    readonly name: string,
    readonly text: string,
  ) {}

  /** The chain named text[start, end) (`hash` is hashOf of it), or -1. */
  find(text: string, start: number, end: number, hash = hashOf(text, start, end)): number {
    const index = this.slots[this.slotOf(text, start, end, hash)]
    return index - 1
  }

  /**
   * Declares a chain; its name is text[start, end) of the dump, or `name` when it stands nowhere
   * in it. A chain declared again keeps its first declaration, unless that was a built-in chain
   * the input had not declared and given no rule: then the new one takes its place (as Map.set
   * would). Returns the chain's number.
   */
  declare(start: number, end: number, name: string | undefined, policy: string | undefined, implicit: boolean, hash: number): number {
    const slot = name === undefined ? this.slotOf(this.text, start, end, hash) : this.slotOf(name, 0, name.length, hash)
    let i = this.slots[slot] - 1
    if (i >= 0 && !this.replaceable(i)) return i
    if (i < 0) {
      if (this.size === this.nameStart.length) this.grow()
      i = this.size++
      this.slots[slot] = i + 1
      const kind = name === undefined ? sampledKind(this.text, start, end) : sampledKind(name, 0, name.length)
      if (kind < 0) this.unsampled.push(i)
      else if (this.samples[kind].length < SAMPLES) this.samples[kind].push(i)
    } else {
      // Replaced: what the first declaration left goes.
      this.ruleCounts[i] = 0
      this.flags[i] = 0
      this.otherNames.delete(i)
      this.policies.delete(i)
      this.views.delete(i)
    }

    this.nameStart[i] = name === undefined ? start : -1
    this.nameEnd[i] = name === undefined ? end : -1
    this.hashes[i] = hash
    this.lastRule[i] = -1
    if (this.size * 2 > this.slots.length) this.rehash()
    let flags = implicit ? IMPLICIT : 0
    if (name !== undefined) {
      this.otherNames.set(i, name)
      flags |= OTHER_NAME
    }

    if (policy !== undefined) {
      this.policies.set(i, policy)
      flags |= POLICY
    }

    this.flags[i] = flags
    return i
  }

  /**
   * Declarations ":NAME - [packets:bytes]" of names not declared before, the usual kind, from
   * `start` on, in one loop over local variables: a big dump declares 100,000 chains together,
   * mostly before V8 has optimized anything, and the general path's calls cost more than the
   * work. Returns where the first line it does not take starts (the general path, the parser's
   * declaration, takes that one); each line it takes declares a chain.
   *
   * It makes room for more chains itself rather than return for it, so that one call takes the
   * whole run: V8 optimizes the loop while it runs, and would compile the function anew if it
   * were called again after running that long.
   */
  declareRun(start: number): number {
    const {text, unsampled, samples} = this
    let {slots, hashes, nameStart, nameEnd, lastRule, flags} = this
    const length = text.length
    lines: while (start <= length && text.charCodeAt(start) === 58 /* : */) {
      const size = this.size
      if (size === nameStart.length || (size + 1) * 2 > slots.length) {
        if (size === nameStart.length) this.grow()
        if ((size + 1) * 2 > slots.length) this.rehash()
        ;({slots, hashes, nameStart, nameEnd, lastRule, flags} = this)
      }

      let end = text.indexOf('\n', start)
      if (end < 0) end = length
      const lineEnd = end > start && text.charCodeAt(end - 1) === 13 /* \r */ ? end - 1 : end
      const space = text.indexOf(' ', start)
      if (space <= start + 1 || space + 4 > lineEnd || text.charCodeAt(space + 1) !== 45 /* - */ || text.charCodeAt(space + 2) !== 32) break
      if (text.charCodeAt(space + 3) !== 91 /* [ */ || text.charCodeAt(lineEnd - 1) !== 93 /* ] */ || indexWithin(text, 58 /* : */, space + 3, lineEnd) < 0)
        break
      const name = start + 1
      const hash = hashOf(text, name, space)
      const mask = slots.length - 1
      let slot = hash & mask
      for (let index = slots[slot]; index !== 0; index = slots[slot]) {
        // Declared before, or another name of the same hash (rare): the general path decides.
        if (hashes[index - 1] === hash) break lines
        slot = (slot + 1) & mask
      }

      // The count goes to its field at once, not after the loop: V8 optimizes this loop early on,
      // and code after it that it had not seen run by then would be thrown away at a mid-run exit.
      const i = this.size++
      slots[slot] = i + 1
      nameStart[i] = name
      nameEnd[i] = space
      hashes[i] = hash
      lastRule[i] = -1
      flags[i] = 0
      const kind = sampledKind(text, name, space)
      if (kind < 0) unsampled.push(i)
      else if (samples[kind].length < SAMPLES) samples[kind].push(i)
      start = end + 1
    }

    return start
  }

  /**
   * Rule lines ("-A NAME ...", without counters) from `start` on, in one loop over local
   * variables: nearly every line of a big dump. A rule's chain is nearly always one of the
   * guessed ones, else it is looked up by name. Returns where the first line it does not take
   * starts (the general path, the parser's rule, takes that one: another kind of line, or a rule
   * of a chain the table does not declare); `taken` says how many it took; `line` is the number
   * of the first. Does what addRule does (keep them in step), without its calls, and makes room
   * itself (see declareRun).
   *
   * Every line runs the same code, whichever guess it matches: V8 optimizes this loop while the
   * dump's first chains take rule after rule (KUBE-SERVICES takes thousands), and a call or a
   * comparison it has not seen run by then would make it throw that code away and start over.
   */
  addGuessedRun(start: number, line: number): number {
    const {text, nameStart, nameEnd, ruleCounts, firstRule, lastRule} = this
    let {ruleStart, ruleLine, ruleBefore} = this
    const length = text.length
    const size = this.size
    let rules = this.rules
    let last = this.lastIndex
    let beforeLast = this.beforeLast
    let successor = this.successor
    let taken = 0
    while (start <= length && text.charCodeAt(start) === 45 /* - */ && text.charCodeAt(start + 1) === 65 /* A */ && text.charCodeAt(start + 2) === 32) {
      let end = text.indexOf('\n', start)
      if (end < 0) end = length
      const lineEnd = end > start && text.charCodeAt(end - 1) === 13 /* \r */ ? end - 1 : end
      const isLast = namedAt(text, nameStart, nameEnd, size, last, start + 3, lineEnd)
      const isBeforeLast = namedAt(text, nameStart, nameEnd, size, beforeLast, start + 3, lineEnd)
      const isSuccessor = namedAt(text, nameStart, nameEnd, size, successor, start + 3, lineEnd)
      let i = isLast ? last : isBeforeLast ? beforeLast : isSuccessor ? successor : -1
      // Not guessed: looked up by name. Not declared: the general path says so.
      if (i < 0) i = this.find(text, start + 3, wordEnd(text, start + 3, lineEnd))
      if (i < 0) break
      if (rules === ruleStart.length) {
        this.growRules()
        ;({ruleStart, ruleLine, ruleBefore} = this)
      }

      const before = lastRule[i]
      ruleStart[rules] = start
      ruleLine[rules] = line + taken
      ruleBefore[rules] = before
      firstRule[i] = before < 0 ? rules : firstRule[i]
      lastRule[i] = rules++
      ruleCounts[i]++
      beforeLast = i === last ? beforeLast : last
      last = i
      successor = Math.max(successor, i + 1)
      taken++
      start = end + 1
    }

    this.rules = rules
    this.lastIndex = last
    this.beforeLast = beforeLast
    this.successor = successor
    this.taken = taken
    return start
  }

  /**
   * "-A NAME ..." at text[lineStart, lineEnd) with NAME at `at`: when NAME is one of the guessed
   * chains, adds the rule and returns true; false, with nothing done, otherwise (then the general
   * path looks the name up).
   */
  addGuessed(at: number, lineStart: number, lineEnd: number, line: number): boolean {
    const last = this.lastIndex
    const i = this.isNamedAt(last, at, lineEnd)
      ? last
      : this.isNamedAt(this.beforeLast, at, lineEnd)
        ? this.beforeLast
        : this.isNamedAt(this.successor, at, lineEnd)
          ? this.successor
          : -1
    if (i < 0) return false
    this.addRule(i, lineStart, line)
    return true
  }

  /** Adds the rule whose line starts at `start` of the dump to chain i, and moves the guesses on. */
  addRule(i: number, start: number, line: number): void {
    if (this.rules === this.ruleStart.length) this.growRules()
    const rule = this.rules++
    this.ruleStart[rule] = start
    this.ruleLine[rule] = line
    this.ruleBefore[rule] = this.lastRule[i]
    if (this.lastRule[i] < 0) this.firstRule[i] = rule
    this.lastRule[i] = rule
    this.ruleCounts[i]++
    if (i !== this.lastIndex) {
      this.beforeLast = this.lastIndex
      this.lastIndex = i
    }

    if (i >= this.successor) this.successor = i + 1
  }

  /** A chain that may be declared again: a built-in one the input has not declared and given no rule yet. */
  private replaceable(i: number): boolean {
    return (this.flags[i] & IMPLICIT) !== 0 && this.ruleCounts[i] === 0
  }

  ruleCount(i: number): number {
    return this.ruleCounts[i]
  }

  /** Chain i's runs of consecutive rule lines: [start, end, first line, count] each (asked for once the parse is done). */
  runs(i: number): number[] {
    let runs = this.runsOf.get(i)
    if (!runs) {
      runs = this.runsFromRules(i)
      this.runsOf.set(i, runs)
    }

    return runs
  }

  private runsFromRules(i: number): number[] {
    const count = this.ruleCounts[i]
    if (count === 0) return []
    const {text, ruleStart, ruleLine, ruleBefore} = this
    const last = this.lastRule[i]
    const first = this.firstRule[i]
    // Every line from the first rule's to the last's is one of them: one run, told without visiting each.
    if (ruleLine[last] - ruleLine[first] + 1 === count) return [ruleStart[first], lineEndAt(text, ruleStart[last]), ruleLine[first], count]
    const runs: number[][] = []
    for (let rule = last; rule >= 0;) {
      // The run that ends at `rule`: back over the rules on the lines just before it.
      let start = rule
      while (ruleBefore[start] >= 0 && ruleLine[ruleBefore[start]] === ruleLine[start] - 1) start = ruleBefore[start]
      runs.push([ruleStart[start], lineEndAt(text, ruleStart[rule]), ruleLine[start], ruleLine[rule] - ruleLine[start] + 1])
      rule = ruleBefore[start]
    }

    return runs.reverse().flat()
  }

  /**
   * Is chain i's name the whole word at `start` of a rule line that ends at lineEnd? Compared
   * character by character, from the end (where kube-proxy's names differ): String#startsWith
   * at an offset was the parse's biggest cost.
   */
  isNamedAt(i: number, start: number, lineEnd: number): boolean {
    if (i < 0 || i >= this.size) return false
    const text = this.text
    if ((this.flags[i] & OTHER_NAME) !== 0) {
      const name = this.otherNames.get(i)!
      return (
        (start + name.length === lineEnd || text.charCodeAt(start + name.length) === 32) && start + name.length <= lineEnd && startsWithAt(text, start, name)
      )
    }

    const from = this.nameStart[i]
    const length = this.nameEnd[i] - from
    const end = start + length
    if (length === 0 || end > lineEnd || (end < lineEnd && text.charCodeAt(end) !== 32)) return false
    return sameFromEnd(text, from, start, length)
  }

  nameOf(i: number): string {
    return (this.flags[i] & OTHER_NAME) !== 0 ? this.otherNames.get(i)! : this.text.slice(this.nameStart[i], this.nameEnd[i])
  }

  /** Adds the interface names chain i's rules use (-i/-o) to `into`, from the raw text. */
  scanInterfaces(i: number, into: Set<string>): void {
    const runs = this.runs(i)
    for (let r = 0; r < runs.length; r += 4) scanInterfaceNames(this.text.slice(runs[r], runs[r + 1]), into)
  }

  /** Chain i as an object, made once. */
  chain(i: number): IptablesChain {
    let chain = this.views.get(i)
    if (!chain) {
      const policy = (this.flags[i] & POLICY) !== 0 ? this.policies.get(i) : undefined
      chain = new IptablesChain(this.nameOf(i), this.name, policy, this, i, (this.flags[i] & IMPLICIT) !== 0)
      this.views.set(i, chain)
    }

    return chain
  }

  get(name: string): IptablesChain | undefined {
    const i = this.find(name, 0, name.length)
    return i < 0 ? undefined : this.chain(i)
  }

  *[Symbol.iterator](): Iterator<IptablesChain> {
    for (let i = 0; i < this.size; i++) yield this.chain(i)
  }

  private nameIs(i: number, text: string, start: number, end: number): boolean {
    if ((this.flags[i] & OTHER_NAME) === 0) return sameText(this.text, this.nameStart[i], this.nameEnd[i], text, start, end)
    const other = this.otherNames.get(i)!
    return sameText(other, 0, other.length, text, start, end)
  }

  /** The slot of the chain named text[start, end), or the empty slot where it would go. */
  private slotOf(text: string, start: number, end: number, hash: number): number {
    const mask = this.slots.length - 1
    for (let slot = hash & mask; ; slot = (slot + 1) & mask) {
      const index = this.slots[slot]
      if (index === 0 || (this.hashes[index - 1] === hash && this.nameIs(index - 1, text, start, end))) return slot
    }
  }

  private grow(): void {
    // Fourfold: a big dump's 100,000 chains are copied a few times rather than a dozen.
    const size = this.nameStart.length * 4
    this.nameStart = grown(this.nameStart, size)
    this.nameEnd = grown(this.nameEnd, size)
    this.hashes = grown(this.hashes, size)
    this.ruleCounts = grown(this.ruleCounts, size)
    this.firstRule = grown(this.firstRule, size)
    this.lastRule = grown(this.lastRule, size)
    const flags = new Uint8Array(size)
    flags.set(this.flags)
    this.flags = flags
  }

  private growRules(): void {
    // Twofold: a big dump has 400,000 rules, and room for four times as many would cost more memory than the copies.
    const size = this.ruleStart.length * 2
    this.ruleStart = grown(this.ruleStart, size)
    this.ruleLine = grown(this.ruleLine, size)
    this.ruleBefore = grown(this.ruleBefore, size)
  }

  private rehash(): void {
    const slots = new Int32Array(this.slots.length * 4)
    const mask = slots.length - 1
    for (let i = 0; i < this.size; i++) {
      let slot = this.hashes[i] & mask
      while (slots[slot] !== 0) slot = (slot + 1) & mask
      slots[slot] = i + 1
    }

    this.slots = slots
  }
}

export class IptablesChain implements Chain {
  /** Where each rule's text (after "-A CHAIN ") starts and ends in the dump, and its line: found on first use, without a string per rule. */
  private starts?: Int32Array
  private ends?: Int32Array
  private lineNumbers?: Int32Array
  private compiled?: Rule[]
  private destinations?: DestinationIndex

  constructor(
    readonly name: string,
    readonly table: string,
    readonly policy: string | undefined,
    private readonly chains: TableChains,
    private readonly index: number,
    /** A built-in chain the input did not declare (iptables-restore does not require it). */
    readonly implicit = false,
  ) {}

  get ruleCount(): number {
    return this.chains.ruleCount(this.index)
  }

  private locate(): void {
    if (this.starts) return
    const count = this.ruleCount
    const starts = new Int32Array(count)
    const ends = new Int32Array(count)
    const lines = new Int32Array(count)
    const text = this.chains.text
    const prefix = `-A ${this.name} `.length
    const runs = this.chains.runs(this.index)
    let i = 0
    for (let r = 0; r < runs.length; r += 4) {
      const [runStart, runEnd, firstLine, runCount] = runs.slice(r, r + 4)
      let lineStart = runStart
      for (let k = 0; k < runCount; k++, i++) {
        // The run's end already leaves out the last line's \r; the other lines end at their \n.
        const lineEnd = k + 1 < runCount ? text.indexOf('\n', lineStart) : runEnd
        const end = lineEnd > lineStart && text.charCodeAt(lineEnd - 1) === 13 /* \r */ ? lineEnd - 1 : lineEnd
        const ruleStart = text.charCodeAt(lineStart) === 91 /* [ */ ? text.indexOf('] ', lineStart) + 2 : lineStart
        starts[i] = Math.min(ruleStart + prefix, end)
        ends[i] = end
        lines[i] = firstLine + k
        lineStart = lineEnd + 1
      }
    }

    this.starts = starts
    this.ends = ends
    this.lineNumbers = lines
  }

  /** The text of rule i after "-A CHAIN ". */
  text(i: number): string {
    this.locate()
    return this.chains.text.slice(this.starts![i], this.ends![i])
  }

  line(i: number): number {
    this.locate()
    return this.lineNumbers![i]
  }

  /** Adds the interface names this chain's rules use (-i/-o) to `into`, from the raw text. */
  scanInterfaces(into: Set<string>): void {
    this.chains.scanInterfaces(this.index, into)
  }

  /**
   * Compiles only the rules whose text contains `needle` (finding one Service in a big chain).
   * The needle is looked for in the dump's text itself, so the other rules cost no string.
   */
  rulesMentioning(needle: string): Rule[] {
    this.locate()
    const starts = this.starts!
    const ends = this.ends!
    const found: Rule[] = []
    const runs = this.chains.runs(this.index)
    let first = 0
    for (let r = 0; r < runs.length; r += 4) {
      const offset = runs[r]
      const last = first + runs[r + 3] - 1
      // A string of the run alone, so that a search never runs on into the rest of the dump.
      const region = this.chains.text.slice(offset, runs[r + 1])
      let i = first
      let at = region.indexOf(needle)
      while (at >= 0) {
        const position = offset + at
        while (i < last && ends[i] < position) i++
        if (position < starts[i]) {
          // Found in "-A CHAIN ", which is no part of the rule's text: look again in the text.
          at = region.indexOf(needle, starts[i] - offset)
          continue
        }

        if (position + needle.length <= ends[i]) found.push(this.rule(i))
        if (i === last) break
        i++
        at = region.indexOf(needle, starts[i] - offset)
      }

      first = last + 1
    }

    return found
  }

  rules(): Rule[] {
    for (let i = 0; i < this.ruleCount; i++) this.rule(i)
    return this.compiled ?? []
  }

  rule(i: number): Rule {
    this.compiled ??= new Array<Rule>(this.ruleCount)
    this.compiled[i] ??= compileRule(this.text(i), this.line(i))
    return this.compiled[i]
  }

  mayMatchDestination(i: number, destination: string): boolean {
    const needed = this.destinationIndex().needed[i]
    return needed === undefined || needed === destination
  }

  nextMayMatch(from: number, destination: string): number {
    const index = this.destinationIndex()
    const rules = index.byAddress.get(destination)
    const next = typeof rules === 'number' ? (rules >= from ? rules : Infinity) : firstFrom(rules, from)
    return Math.min(next, firstFrom(index.open, from), this.ruleCount)
  }

  /**
   * Each rule's single destination address ("-d A/32", at the start or after a space, not
   * negated), read once per chain rather than once per packet and rule, from the dump's text:
   * a string is cut only for the address itself.
   */
  private destinationIndex(): DestinationIndex {
    if (this.destinations) return this.destinations
    this.locate()
    const starts = this.starts!
    const ends = this.ends!
    const needed: Array<string | undefined> = []
    const byAddress = new Map<string, number | number[]>()
    const open: number[] = []
    const runs = this.chains.runs(this.index)
    let i = 0
    for (let r = 0; r < runs.length; r += 4) {
      const offset = runs[r]
      // A string of the run alone, so that no search runs on into the rest of the dump.
      const region = this.chains.text.slice(offset, runs[r + 1])
      // The next " -d " at or after the current rule's start (the region's length when none): searches only move forward.
      let option = -1
      for (let k = 0; k < runs[r + 3]; k++, i++) {
        const start = starts[i] - offset
        const end = ends[i] - offset
        let address = -1
        if (end - start >= 3 && startsWithAt(region, start, '-d ')) address = start + 3
        else {
          if (option < start) {
            option = region.indexOf(' -d ', start)
            if (option < 0) option = region.length
          }

          if (option + 4 <= end && !(option > start && region.charCodeAt(option - 1) === 33)) /* ! */ address = option + 4
        }

        const found = address < 0 ? -1 : region.indexOf(' ', address)
        const addressEnd = found < 0 || found > end ? end : found
        const single =
          address >= 0 && addressEnd - address >= 3 && startsWithAt(region, addressEnd - 3, '/32') ? region.slice(address, addressEnd - 3) : undefined
        needed.push(single)
        if (single === undefined) open.push(i)
        else {
          const rules = byAddress.get(single)
          if (rules === undefined) byAddress.set(single, i)
          else if (typeof rules === 'number') byAddress.set(single, [rules, i])
          else rules.push(i)
        }
      }
    }

    this.destinations = {needed, byAddress, open}
    return this.destinations
  }
}

interface DestinationIndex {
  /** Per rule: the one address it needs as destination, or undefined when it may match any. */
  needed: Array<string | undefined>
  /** The rule (or rules, in order) needing each address. */
  byAddress: Map<string, number | number[]>
  /** The rules that may match any destination, in order. */
  open: number[]
}

/** The first of the sorted numbers that is at least `from` (Infinity when none). */
function firstFrom(sorted: number[] | undefined, from: number): number {
  if (!sorted) return Infinity
  let low = 0
  let high = sorted.length
  while (low < high) {
    const middle = (low + high) >>> 1
    if (sorted[middle] < from) low = middle + 1
    else high = middle
  }

  return low < sorted.length ? sorted[low] : Infinity
}

/** kube-proxy's chains that live only in the filter table (for excerpts without table headers). */
const EXCERPT_FILTER_CHAINS = new Set([
  'FORWARD',
  'KUBE-FORWARD',
  'KUBE-FIREWALL',
  'KUBE-PROXY-FIREWALL',
  'KUBE-EXTERNAL-SERVICES',
  'KUBE-NODE-PORT',
  'KUBE-PROXY-CANARY',
  'KUBE-KUBELET-CANARY',
])

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
  const parser = new IptablesParser(text)
  parser.parse()
  const {tables, excerpt} = parser
  let interfaces: Set<string> | undefined
  let byName: Map<string, Map<string, IptablesChain>> | undefined
  return {
    mode: 'iptables',
    get tables() {
      byName ??= new Map([...tables].map(([table, chains]) => [table, new Map([...chains].map((c) => [c.name, c]))]))
      return byName
    },
    generator: parser.generator,
    notes: excerpt
      ? [
          'the input has no "*table" line (an excerpt, e.g. `iptables-save | grep`): its rules were read as the nat table (kube-proxy\'s filter chains and REJECT/DROP/ACCEPT rules of KUBE-SERVICES as the filter table), with a chain\'s rules in the order given; a jump to a chain the excerpt leaves out shows as missing',
        ]
      : [],
    chains: (table) => tables.get(table),
    chain: (table, name) => tables.get(table)?.get(name),
    interfaceNames: () => (interfaces ??= interfaceNamesOf(tables)),
  }
}

/**
 * One pass over iptables-save text. Each kind of line has a small method of its own: V8
 * optimizes small functions quickly, where one long loop was compiled again (for 100 ms on a
 * busy machine, running slowly meanwhile) each time the dump went on to a new kind of line.
 */
class IptablesParser {
  readonly tables = new Map<string, TableChains>()
  generator: string | undefined
  /** Without any "*table" line the input is an excerpt (`iptables-save | grep NAME`). */
  excerpt = false
  private excerptRules = false
  private excerptStart: {line: number; text: string} | undefined
  private current: TableChains | undefined
  private openedAt = 0
  private lineNo = 0
  private lastContentLine = 0
  /** hashOf the name nameEnd() has just found the end of. */
  private nameHash = 0

  constructor(private readonly text: string) {}

  parse(): void {
    const text = this.text
    const length = text.length
    // iptables-restore reads past a UTF-8 byte order mark, as editors on other systems write one.
    let start = text.charCodeAt(0) === 0xfeff ? 1 : 0
    while (start <= length) {
      // Runs of declarations and runs of rules, nearly all of a big dump, each have a loop of
      // their own: V8 optimizes a loop for what it has seen run, and one loop for both was
      // thrown away and compiled again when the declarations gave way to the rules.
      const first = text.charCodeAt(start)
      if (this.current && first === 58 /* : */) start = this.declarations(start)
      else if (this.current && first === 45 /* - */ && text.charCodeAt(start + 1) === 65 /* A */ && text.charCodeAt(start + 2) === 32) start = this.rules(start)
      else start = this.otherLines(start)
    }

    const {excerptStart, current} = this
    if (this.excerpt && !this.excerptRules && excerptStart)
      throw dumpError(excerptStart.line, `"${shorten(excerptStart.text)}" is outside any table (expected a "*table" line first)`)
    if (current)
      throw dumpError(this.lastContentLine, `the dump ends inside table "${current.name}" (opened at line ${this.openedAt}) without COMMIT: it looks truncated`)
    if (this.tables.size === 0) throw new CliError('iptables dump: no "*table" line found; this is not iptables-save output')
  }

  /** Where the line at `start` ends (before a \r) and the next one starts; counts the line. */
  private lineEnd = 0

  private nextLine(start: number): number {
    const text = this.text
    let end = text.indexOf('\n', start)
    if (end < 0) end = text.length
    this.lineNo++
    this.lineEnd = end > start && text.charCodeAt(end - 1) === 13 /* \r */ ? end - 1 : end
    return end + 1
  }

  /** Declarations (":NAME ...") from `start` on, inside a table; returns where the first other line starts. */
  private declarations(start: number): number {
    const {text, current} = this
    const length = text.length
    while (start <= length && text.charCodeAt(start) === 58 /* : */) {
      const declared = current!.size
      start = current!.declareRun(start)
      this.lineNo += current!.size - declared
      this.lastContentLine = this.lineNo
      if (start > length || text.charCodeAt(start) !== 58) break
      // One the loop did not take: a policy, a name declared before, a malformed line, or one that needs room.
      const next = this.nextLine(start)
      this.lastContentLine = this.lineNo
      this.declaration(current!, start, this.lineEnd)
      start = next
    }

    return start
  }

  /** Rules ("-A CHAIN ...") from `start` on, inside a table; returns where the first other line starts. */
  private rules(start: number): number {
    const {text, current} = this
    const length = text.length
    while (start <= length && text.charCodeAt(start) === 45 /* - */ && text.charCodeAt(start + 1) === 65 /* A */ && text.charCodeAt(start + 2) === 32) {
      start = current!.addGuessedRun(start, this.lineNo + 1)
      if (current!.taken > 0) {
        this.lineNo += current!.taken
        this.lastContentLine = this.lineNo
      }

      if (start > length || text.charCodeAt(start) !== 45 || text.charCodeAt(start + 1) !== 65 || text.charCodeAt(start + 2) !== 32) break
      // A rule of a chain not guessed: the general path looks the name up.
      const next = this.nextLine(start)
      this.rule(start, this.lineEnd, start + 3)
      start = next
    }

    return start
  }

  /** One line of any other kind; returns where the next line starts. */
  private otherLines(start: number): number {
    const next = this.nextLine(start)
    this.line(start, this.lineEnd)
    return next
  }

  private line(lineStart: number, lineEnd: number): void {
    if (lineEnd === lineStart) return

    const text = this.text
    const first = text.charCodeAt(lineStart)
    // Rules are nearly every line of a large dump: handled on offsets, without a line string.
    let ruleStart = lineStart
    if (first === 91 /* [ */) {
      // Counters ("[packets:bytes] -A ...") come first when the dump was saved with -c.
      const close = text.indexOf('] ', lineStart)
      if (close < 0 || close > lineEnd) throw dumpError(this.lineNo, `malformed counters in "${shorten(text.slice(lineStart, lineEnd))}"`)
      ruleStart = close + 2
    }

    if (
      (first === 45 /* - */ || first === 91) &&
      text.charCodeAt(ruleStart) === 45 &&
      text.charCodeAt(ruleStart + 1) === 65 /* A */ &&
      text.charCodeAt(ruleStart + 2) === 32
    ) {
      this.rule(lineStart, lineEnd, ruleStart + 3)
      return
    }

    if (first === 58 /* : */ && this.current) {
      this.lastContentLine = this.lineNo
      this.declaration(this.current, lineStart, lineEnd)
      return
    }

    this.otherLine(first, text.slice(lineStart, lineEnd))
  }

  /** The end of the chain name at `start` (a space or the line's end); its hash goes to nameHash. */
  private nameEnd(start: number, lineEnd: number): number {
    const text = this.text
    let hash = FNV_BASIS
    let end = start
    for (; end < lineEnd; end++) {
      const c = text.charCodeAt(end)
      if (c === 32) break
      hash = Math.imul(hash ^ c, FNV_PRIME)
    }

    this.nameHash = hash
    return end
  }

  /** "-A CHAIN ..." with the chain's name at nameStart (lines the parse loop did not take: counters, a new chain, an excerpt). */
  private rule(lineStart: number, lineEnd: number, nameStart: number): void {
    const {text, current} = this
    if (!current && this.tables.size === 0) this.excerpt = true
    if (!current && !this.excerpt)
      throw dumpError(this.lineNo, `"${shorten(text.slice(lineStart, lineEnd))}" is outside any table (expected a "*table" line first)`)
    this.lastContentLine = this.lineNo
    let chains: TableChains
    let i = -1
    if (current && current.addGuessed(nameStart, lineStart, lineEnd, this.lineNo)) return

    const nameEnd = this.nameEnd(nameStart, lineEnd)
    if (current) {
      chains = current
      i = chains.find(text, nameStart, nameEnd, this.nameHash)
      if (i < 0) throw dumpError(this.lineNo, `rule for chain ${text.slice(nameStart, nameEnd)}, which table ${chains.name} does not declare`)
    } else {
      ;[chains, i] = this.excerptChain(text.slice(nameStart, nameEnd), text.slice(nameEnd, lineEnd))
      this.excerptRules = true
    }

    chains.addRule(i, lineStart, this.lineNo)
  }

  /** ":NAME POLICY [packets:bytes]" at text[lineStart, lineEnd), read on offsets: a big dump declares 100,000 chains. */
  private declaration(chains: TableChains, lineStart: number, lineEnd: number): void {
    const text = this.text
    // A declaration without a space is an error, so this search runs past the line at most once.
    const found = text.indexOf(' ', lineStart)
    const space = found > lineEnd ? -1 : found
    const policyStart = space + 1
    const policyEnd = space > lineStart + 1 ? indexWithin(text, 32, policyStart, lineEnd) : -1
    const policyStop = policyEnd < 0 ? lineEnd : policyEnd
    const hasPolicy = space > lineStart + 1 && policyStop > policyStart
    const counters =
      policyEnd < 0 || (text.charCodeAt(policyEnd + 1) === 91 && text.charCodeAt(lineEnd - 1) === 93 && indexWithin(text, 58, policyEnd, lineEnd) >= 0)
    if (!hasPolicy || !counters) throw dumpError(this.lineNo, `malformed chain declaration "${shorten(text.slice(lineStart, lineEnd))}"`)
    const policy = policyStop - policyStart === 1 && text.charCodeAt(policyStart) === 45 /* - */ ? undefined : text.slice(policyStart, policyStop)
    this.declare(chains, lineStart + 1, space, undefined, policy)
  }

  /** A declaration of text[nameStart, nameEnd) (or `name`): a second one of a chain is ignored, unless the first was implicit. */
  private declare(chains: TableChains, nameStart: number, nameEnd: number, name: string | undefined, policy: string | undefined): void {
    chains.declare(nameStart, nameEnd, name, policy, false, name === undefined ? hashOf(this.text, nameStart, nameEnd) : hashOf(name, 0, name.length))
  }

  private tableOf(name: string): TableChains {
    let chains = this.tables.get(name)
    if (!chains) {
      chains = new TableChains(name, this.text)
      this.tables.set(name, chains)
    }

    return chains
  }

  /** The chain an excerpt's rule belongs to: kube-proxy's verdict rules and filter chains in filter, the rest in nat. */
  private excerptChain(name: string, rest: string): [TableChains, number] {
    const verdict = / -j (REJECT|DROP|ACCEPT)( |$)/.test(rest)
    const chains = this.tableOf(EXCERPT_FILTER_CHAINS.has(name) || ((name === 'KUBE-SERVICES' || name === 'KUBE-NODEPORTS') && verdict) ? 'filter' : 'nat')
    const hash = hashOf(name, 0, name.length)
    const i = chains.find(name, 0, name.length, hash)
    return [chains, i >= 0 ? i : chains.declare(0, 0, name, BUILTIN_CHAINS[chains.name]?.includes(name) ? 'ACCEPT' : undefined, true, hash)]
  }

  /** Every line but a rule or a declaration inside a table: rare, so it may cut a string. */
  private otherLine(first: number, line: string): void {
    const lineNo = this.lineNo
    if ((first === 32 || first === 9) && /^\s+$/.test(line)) return
    this.lastContentLine = lineNo
    if (first === 35 /* # */) {
      this.generator ??= /^# Generated by (?:iptables|ip6tables)[\w-]* (v\S+(?: \([^)]*\))?)/.exec(line)?.[1]
      return
    }

    const current = this.current
    if (first === 42 /* * */) {
      if (current) throw dumpError(lineNo, `table "${line.slice(1)}" starts before table "${current.name}" (line ${this.openedAt}) has its COMMIT`)
      const name = line.slice(1).trim()
      if (!/^[a-z]+$/.test(name)) throw dumpError(lineNo, `"${line}" is not a table name`)
      const chains = this.tableOf(name)
      // Built-in chains exist in the kernel whether or not the input declares them.
      for (const builtin of BUILTIN_CHAINS[name] ?? []) {
        const hash = hashOf(builtin, 0, builtin.length)
        if (chains.find(builtin, 0, builtin.length, hash) < 0) chains.declare(0, 0, builtin, 'ACCEPT', true, hash)
      }

      this.current = chains
      this.openedAt = lineNo
      return
    }

    if (line === 'COMMIT') {
      if (!current) throw dumpError(lineNo, 'COMMIT outside a table')
      this.current = undefined
      return
    }

    if (!current && first === 58 && this.tables.size === 0 && !this.excerpt) {
      this.excerpt = true
      this.excerptStart = {line: lineNo, text: line}
    }

    if (!current && this.excerpt && first === 58) {
      // A declaration an excerpt kept (grep matches ":KUBE-SVC-... - [0:0]" too).
      const space = line.indexOf(' ')
      this.excerptChain(line.slice(1, space < 0 ? line.length : space), '')
      return
    }

    if (!current) throw dumpError(lineNo, `"${shorten(line)}" is outside any table (expected a "*table" line first)`)
    if (first === 45 /* - */ && (line.startsWith('-N ') || line.startsWith('-P '))) {
      // `iptables -S CHAIN` declares chains this way: "-N NAME", "-P BUILTIN POLICY".
      const [option, name, policy] = line.split(' ')
      if (!name || (option === '-P' && !policy)) throw dumpError(lineNo, `malformed chain declaration "${shorten(line)}"`)
      this.declare(current, 0, 0, name, option === '-P' ? policy : undefined)
      return
    }

    throw dumpError(lineNo, `"${shorten(line)}" is not a table, chain, rule or COMMIT line`)
  }
}

/**
 * kube-proxy's per-Service and per-endpoint chains are nearly all of a big dump; endpoint chains
 * name no interface and Service chains all name the same ones (--detect-local-mode), so a few
 * of each kind stand for the rest. A name missed this way is still traced, as an open condition.
 */
const SAMPLED_PREFIXES = ['KUBE-SEP-', 'KUBE-SVC-', 'KUBE-SVL-', 'KUBE-EXT-', 'KUBE-FW-', 'KUBE-XLB-']
/** What follows "KUBE-" in each. */
const SAMPLED_KINDS = SAMPLED_PREFIXES.map((prefix) => prefix.slice('KUBE-'.length))
const SAMPLES = 5

/** Which of SAMPLED_PREFIXES the name text[start, end) starts with (its position), or -1. Asked of every chain declared. */
function sampledKind(text: string, start: number, end: number): number {
  if (end - start < 8 || !startsWithAt(text, start, 'KUBE-')) return -1
  for (let k = 0; k < SAMPLED_KINDS.length; k++) if (end - start >= 5 + SAMPLED_KINDS[k].length && startsWithAt(text, start + 5, SAMPLED_KINDS[k])) return k
  return -1
}

/** The interface names of every chain of no sampled kind and of the first SAMPLES chains (in the dump's order) of each kind. */
function interfaceNamesOf(tables: Map<string, TableChains>): Set<string> {
  const names = new Set<string>()
  const taken = SAMPLED_PREFIXES.map(() => 0)
  for (const chains of tables.values()) {
    for (const i of chains.unsampled) chains.scanInterfaces(i, names)
    chains.samples.forEach((sample, kind) => {
      for (const i of sample.slice(0, SAMPLES - taken[kind])) chains.scanInterfaces(i, names)
      taken[kind] = Math.min(SAMPLES, taken[kind] + sample.length)
    })
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
const NO_VALUE_OPTIONS = new Set([
  '--rcheck',
  '--update',
  '--set',
  '--remove',
  '--reap',
  '--rsource',
  '--rdest',
  '--random',
  '--random-fully',
  '--persistent',
  '--limit-iface-in',
  '--limit-iface-out',
  '--physdev-is-in',
  '--physdev-is-out',
  '--physdev-is-bridged',
  '-f',
  '--fragment',
])

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
      if (word.startsWith('-'))
        targetOptions[word] = NO_VALUE_OPTIONS.has(word) || words[i + 1]?.startsWith('--') || words[i + 1] === undefined ? '' : value(word)
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
        conditions.push({
          kind: 'opaque',
          text: `${negated ? '! ' : ''}${module ? `-m ${module} ` : ''}${word}${words[i + 1] && !words[i + 1].startsWith('-') ? ` ${value(word)}` : ''}`,
        })
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
const BUILTIN_TARGETS = new Set([
  'TPROXY',
  'REDIRECT',
  'TCPMSS',
  'CLASSIFY',
  'DSCP',
  'TOS',
  'TTL',
  'HL',
  'SET',
  'AUDIT',
  'CHECKSUM',
  'TEE',
  'SECMARK',
  'CONNSECMARK',
  'NETMAP',
  'NFQUEUE',
  'QUEUE',
  'IDLETIMER',
  'LED',
  'RATEEST',
  'SYNPROXY',
  'TRACE',
  'ULOG',
])
