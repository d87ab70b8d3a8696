import type {Cidr} from './ip.js'

/**
 * A mode-neutral picture of packet-processing rules: chains of rules, each a list of
 * conditions and one action. The iptables and nftables parsers compile into it and one
 * walker follows packets through it.
 */

export type Condition =
  | {kind: 'protocol'; protocol: string; negated: boolean}
  | {kind: 'address'; field: 'source' | 'destination'; cidr: Cidr; negated: boolean}
  | {kind: 'port'; field: 'source' | 'destination'; ranges: Array<[number, number]>; negated: boolean}
  | {kind: 'addrtype'; field: 'source' | 'destination'; type: string; negated: boolean}
  | {kind: 'mark'; value: number; mask: number; negated: boolean}
  | {kind: 'interface'; field: 'in' | 'out'; name: string; negated: boolean}
  | {kind: 'probability'; probability: number}
  /** Session affinity: a check of a recent-client list (false for a client's first connection). */
  | {kind: 'recent-check'; list: string; seconds?: number}
  /** Session affinity: remember this client for the list (always matches). */
  | {kind: 'recent-set'; list: string}
  | {kind: 'ctstate'; states: string[]; negated: boolean}
  /** Membership of a named set; `test` answers for a packet when the set's content is known. */
  | {kind: 'set'; name: string; negated: boolean; test?: (packet: PacketView) => boolean | undefined}
  /** A condition this tool cannot evaluate; shown to the user as written. */
  | {kind: 'opaque'; text: string}

export interface ChoiceTarget {
  chain: string
  /** Fraction of packets sent there (0..1). */
  weight: number
}

export type Action =
  | {kind: 'jump'; chain: string}
  | {kind: 'goto'; chain: string}
  | {kind: 'return'}
  | {kind: 'dnat'; ip: string; port?: number}
  /** MARK: mark = (mark & ~clear) ^ xor, covering --set-xmark, --or-mark, --xor-mark, --and-mark. */
  | {kind: 'mark'; clear: number; xor: number}
  | {kind: 'accept'}
  | {kind: 'drop'}
  | {kind: 'reject'}
  | {kind: 'masquerade'}
  | {kind: 'snat'}
  /** nftables `numgen random mod N vmap {...}`: a random choice among chains. */
  | {kind: 'choose'; targets: ChoiceTarget[]; goto: boolean}
  /** No verdict (counting rules, LOG, comment-only). */
  | {kind: 'none'}
  | {kind: 'other'; name: string}

export interface Rule {
  /** 1-based line in the dump the rule came from. */
  line: number
  /** The rule as the tool printed it, for display. */
  text: string
  comment?: string
  conditions: Condition[]
  action: Action
}

export interface Chain {
  name: string
  table: string
  /** Built-in chains have a policy (ACCEPT/DROP); user chains return to their caller. */
  policy?: string
  rules(): Rule[]
  ruleCount: number
  /** Rule i, compiled on first use (a walk touches few rules of a large chain). */
  rule(i: number): Rule
  /**
   * A cheap look at rule i's text before compiling it: false when it cannot match a packet
   * to `destination` (it names another single address). Undefined: no such shortcut.
   */
  mayMatchDestination?(i: number, destination: string): boolean
  /** The first rule from `from` on for which mayMatchDestination may be true (ruleCount when none). */
  nextMayMatch?(from: number, destination: string): number
}

/** What a condition may ask about the packet being walked. */
export interface PacketView {
  protocol: string
  destination?: string
  destinationPort: number
}

export interface ChainGraph {
  mode: 'iptables' | 'nftables'
  chain(table: string, name: string): Chain | undefined
}
