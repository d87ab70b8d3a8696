/**
 * A small algebra for interface conditions (`-i`/`-o`). The names the rules mention cut each
 * field's values into atoms: every exact name, every wildcard (`br-+`: the names it matches
 * that no other atom claims), "another interface" (a name no rule mentions) and, for the
 * incoming side, "no interface" (a packet the node itself sends). A condition on interfaces
 * is then a set of (in, out) atom pairs, kept as a bitset: conjunction, negation and "can
 * this still happen?" cost a few machine words, so contradictions are pruned on the spot and
 * paths that differ only in interfaces merge back into one.
 */

export type Where = Uint32Array

/** Atom 0: no interface at all (locally generated packets have no incoming interface). */
const NONE = 0
/** Atom 1: an interface whose name no rule mentions. */
const OTHER = 1

export type InterfaceField = 'in' | 'out'

const popcount = (x: number) => {
  x -= (x >>> 1) & 0x55555555
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333)
  return (((x + (x >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24
}

export class InterfaceSpace {
  /** Atom names: "" (none), "*" (another), then the names and wildcards the rules use. */
  readonly atoms: string[]
  readonly size: number
  private readonly words: number
  private readonly cache = new Map<string, Where>()

  constructor(names: Iterable<string>) {
    const mentioned = new Set<string>()
    for (const name of names) if (name) mentioned.add(name)
    this.atoms = ['', '*', ...[...mentioned].sort()]
    this.size = this.atoms.length
    this.words = Math.ceil((this.size * this.size) / 32)
  }

  knows(name: string): boolean {
    return name === '+' || this.atoms.indexOf(name, 2) >= 2
  }

  /** Does every name of atom `atom` match `pattern` (an exact name or a `prefix+` wildcard)? */
  atomMatches(atom: number, pattern: string): boolean {
    if (atom === NONE) return false
    const wildcard = pattern.endsWith('+')
    const prefix = wildcard ? pattern.slice(0, -1) : pattern
    if (atom === OTHER) return wildcard && prefix === ''
    const name = this.atoms[atom]
    if (name.endsWith('+')) return wildcard && name.slice(0, -1).startsWith(prefix)
    return wildcard ? name.startsWith(prefix) : name === pattern
  }

  empty(): Where {
    return new Uint32Array(this.words)
  }

  /** Pairs whose `in` atom is in `ins` and `out` atom in `outs`. */
  product(ins: (atom: number) => boolean, outs: (atom: number) => boolean): Where {
    const set = this.empty()
    for (let i = 0; i < this.size; i++) {
      if (!ins(i)) continue
      for (let o = 0; o < this.size; o++) if (outs(o)) set[(i * this.size + o) >>> 5] |= 1 << ((i * this.size + o) & 31)
    }

    return set
  }

  full(): Where {
    return this.product(
      () => true,
      () => true,
    )
  }

  /** The pairs a `[!] -i/-o pattern` condition matches. */
  condition(field: InterfaceField, pattern: string, negated: boolean): Where {
    const key = `${field}${negated ? '!' : ''} ${pattern}`
    let set = this.cache.get(key)
    if (!set) {
      const test = (atom: number) => this.atomMatches(atom, pattern) !== negated
      set = field === 'in' ? this.product(test, () => true) : this.product(() => true, test)
      this.cache.set(key, set)
    }

    return set
  }

  and(a: Where, b: Where): Where {
    const r = new Uint32Array(this.words)
    for (let k = 0; k < this.words; k++) r[k] = a[k] & b[k]
    return r
  }

  or(a: Where, b: Where): Where {
    const r = new Uint32Array(this.words)
    for (let k = 0; k < this.words; k++) r[k] = a[k] | b[k]
    return r
  }

  andNot(a: Where, b: Where): Where {
    const r = new Uint32Array(this.words)
    for (let k = 0; k < this.words; k++) r[k] = a[k] & ~b[k]
    return r
  }

  isEmpty(a: Where): boolean {
    for (let k = 0; k < this.words; k++) if (a[k] !== 0) return false
    return true
  }

  equal(a: Where, b: Where): boolean {
    for (let k = 0; k < this.words; k++) if (a[k] !== b[k]) return false
    return true
  }

  count(a: Where): number {
    let n = 0
    for (let k = 0; k < this.words; k++) n += popcount(a[k])
    return n
  }

  has(a: Where, pair: number): boolean {
    return (a[pair >>> 5] & (1 << (pair & 31))) !== 0
  }

  /** Every pair of `set`, in order. */
  *pairs(set: Where): Generator<number> {
    for (let k = 0; k < this.words; k++) {
      let word = set[k]
      while (word !== 0) {
        const bit = 31 - Math.clz32(word & -word)
        yield k * 32 + bit
        word &= word - 1
      }
    }
  }

  /**
   * Says in words which interfaces `set` allows, relative to `base` (what the packet's origin
   * allows anyway): "" when it is all of base.
   */
  describe(set: Where, base: Where): string {
    if (this.equal(set, base)) return ''
    const n = this.size
    const rows = new Map<string, {ins: number[]; outs: number[]}>()
    const baseIns = new Set<number>()
    const baseOuts = new Set<number>()
    for (const pair of this.pairs(base)) {
      baseIns.add(Math.floor(pair / n))
      baseOuts.add(pair % n)
    }

    for (let i = 0; i < n; i++) {
      const outs: number[] = []
      for (let o = 0; o < n; o++) if (this.has(set, i * n + o)) outs.push(o)
      if (outs.length === 0) continue
      const key = outs.join(',')
      const row = rows.get(key) ?? {ins: [], outs}
      row.ins.push(i)
      rows.set(key, row)
    }

    const parts = [...rows.values()].map(({ins, outs}) =>
      [this.describeAtoms('in', ins, baseIns), this.describeAtoms('out', outs, baseOuts)].filter(Boolean).join(' and '),
    )
    if (parts.length === 1) return parts[0]
    return parts.map((p) => (p.includes(' and ') ? `(${p})` : p)).join(' or ')
  }

  private describeAtoms(field: InterfaceField, atoms: number[], universe: Set<number>): string {
    const chosen = new Set(atoms)
    if ([...universe].every((a) => chosen.has(a))) return ''
    const excluded = [...universe].filter((a) => !chosen.has(a))
    const name = (a: number) => {
      if (a === NONE) return '(none: sent by the node)'
      if (a === OTHER) return 'an interface no rule names'
      const atom = this.atoms[a]
      // A wildcard atom leaves out the names other atoms hold: say so.
      const narrower = atom.endsWith('+') && this.atoms.some((other, k) => k > OTHER && other !== atom && this.atomMatches(k, atom))
      return narrower ? `other ${atom}` : atom
    }
    const list = (names: number[]) =>
      names.length <= 4 ? names.map(name).join('|') : `one of ${names.length} (${names.slice(0, 3).map(name).join(', ')}, ...)`
    const positive = atoms.filter((a) => a !== OTHER)
    if (atoms.includes(OTHER) || excluded.length < positive.length) return `${field} not via ${list(excluded)}`
    return `${field} via ${list(positive)}`
  }
}

/** Interface names (and wildcards) in iptables rule text: the words after -i/-o/--in-interface/--out-interface. */
export function scanInterfaceNames(text: string, into = new Set<string>()): Set<string> {
  for (const option of [' -i ', ' -o ', ' --in-interface ', ' --out-interface ']) {
    let at = text.indexOf(option)
    while (at >= 0) {
      const start = at + option.length
      let end = start
      while (end < text.length) {
        const c = text.charCodeAt(end)
        if (c === 32 || c === 10 || c === 13 || c === 9) break
        end++
      }

      if (end > start) into.add(text.slice(start, end))
      at = text.indexOf(option, end)
    }
  }

  return into
}
