import {CliError} from '../errors.js'
import type {Action, Chain, ChainGraph, Condition, Rule} from './graph.js'
import {Cidr, cidrContains, cidrCovers, cidrsOverlap} from './ip.js'

/** Where a packet comes from; it decides the hook it enters by and what its source matches. */
export type Origin = 'pod' | 'node' | 'external'

export interface WalkPacket {
  protocol: string
  /** undefined: "an address of this node" whose value is unknown (NodePort traffic offline). */
  destination?: string
  destinationPort: number
  /** The destination is an address of this node (addrtype LOCAL). */
  destinationLocal: boolean
  origin: Origin
  /** The pod network (kube-proxy's cluster CIDR), when known; pods' addresses are inside it. */
  clusterCidrs: Cidr[]
}

export interface Step {
  table: string
  chain: string
  /** Line of the rule in the dump (undefined for a chain's policy or an implied entry). */
  line?: number
  /** What happened, briefly: "-> KUBE-SVC-X", "DNAT 10.0.0.1:80", "REJECT". */
  action: string
  comment?: string
  /** The probability this rule's own random choice took this branch (0..1), when it made one. */
  probability?: number
  /** A condition this tool could not decide and assumed true for this branch. */
  assumed?: string
}

export type Verdict =
  | {kind: 'dnat'; ip: string; port?: number}
  | {kind: 'reject' | 'drop'; chain: string; line?: number; comment?: string}
  /** Nothing in the rules changed or stopped the packet. */
  | {kind: 'unhandled'}
  /** A jump to a chain the dump does not hold: the dump is incomplete (the kernel refuses such rules). */
  | {kind: 'missing'; chain: string; line?: number}

export interface Outcome {
  /** Share of packets (0..1) that end here, among packets meeting `assumptions`. */
  probability: number
  /** Conditions the walker could not decide, assumed for this branch (e.g. a source range). */
  assumptions: string[]
  steps: Step[]
  verdict: Verdict
  /** The packet carries kube-proxy's masquerade mark: its source is rewritten to the node's. */
  masquerade: boolean
  /** Conditions under which it is masqueraded as well (e.g. hairpin from the endpoint itself). */
  masqueradeWhen: string[]
  /** Session affinity lists checked/set on the way (`-m recent` / nft affinity sets). */
  affinity: Array<{list: string; seconds?: number}>
  /** The packet's mark at the end (kube-proxy's masquerade and drop bits). */
  mark: number
}

interface State {
  probability: number
  assumptions: string[]
  steps: Step[]
  mark: number
  masqueradeWhen: string[]
  affinity: Array<{list: string; seconds?: number}>
  dnat?: {ip: string; port?: number}
  verdict?: Verdict
}

type Result = {state: State; returned: boolean}

const MASQUERADE_CHAINS = new Set(['KUBE-MARK-MASQ', 'mark-for-masquerade'])
const MAX_DEPTH = 64
/** Below this, a branch is a floating-point remnant, not traffic. */
const NEGLIGIBLE = 1e-12

type Evaluation = true | false | {probability: number} | {unknown: string}

export interface WalkOptions {
  /** Mark bit kube-proxy uses for masquerading (from KUBE-MARK-MASQ); default 0x4000. */
  masqueradeMark?: number
}

/**
 * Follows one packet through a chain graph as the kernel would: jumps, gotos, RETURN,
 * falling off a chain, random choices (each splitting the packet's probability), marks.
 * What it cannot decide (an unknown source range) it splits into assumed branches.
 */
export class Walker {
  private readonly masqueradeMark: number

  constructor(
    private readonly graph: ChainGraph,
    private readonly packet: WalkPacket,
    options: WalkOptions = {},
  ) {
    this.masqueradeMark = options.masqueradeMark ?? 0x4000
  }

  /**
   * Runs the packet through `entry` (chains run in order, as a hook runs its chains), from
   * scratch or continuing an outcome of an earlier table (nat, then filter).
   */
  walk(table: string, entry: string[], from?: Outcome): Outcome[] {
    const start: State = from
      ? {
          probability: from.probability,
          assumptions: from.assumptions,
          steps: from.steps,
          mark: from.mark,
          masqueradeWhen: from.masqueradeWhen,
          affinity: from.affinity,
          dnat: from.verdict.kind === 'dnat' ? {ip: from.verdict.ip, port: from.verdict.port} : undefined,
          verdict: from.verdict.kind === 'reject' || from.verdict.kind === 'drop' || from.verdict.kind === 'missing' ? from.verdict : undefined,
        }
      : {probability: 1, assumptions: [], steps: [], mark: 0, masqueradeWhen: [], affinity: []}
    let states: State[] = [start]
    for (const chainName of entry) {
      const chain = this.graph.chain(table, chainName)
      if (!chain) continue
      const next: State[] = []
      for (const state of states) {
        if (state.verdict) {
          next.push(state)
          continue
        }

        for (const result of this.run(chain, 0, state, 0)) next.push(result.state)
      }

      states = next
    }

    return states.map((s) => this.outcome(s))
  }

  outcome(state: State): Outcome {
    return {
      probability: state.probability,
      assumptions: state.assumptions,
      steps: state.steps,
      verdict: state.verdict ?? (state.dnat ? {kind: 'dnat', ...state.dnat} : {kind: 'unhandled'}),
      masquerade: (state.mark & this.masqueradeMark) !== 0,
      masqueradeWhen: state.masqueradeWhen,
      affinity: state.affinity,
      mark: state.mark,
    }
  }

  /** Runs a chain from rule `from`; every result either returned (fell off/RETURN) or stopped. */
  private run(chain: Chain, from: number, input: State, depth: number): Result[] {
    if (depth > MAX_DEPTH) throw new CliError(`rules loop: chain ${chain.name} is entered more than ${MAX_DEPTH} levels deep`)
    const results: Result[] = []
    let state = input
    const count = chain.ruleCount
    for (let i = from; i < count; i++) {
      const destination = state.dnat?.ip ?? this.packet.destination
      if (destination !== undefined && chain.mayMatchDestination && !chain.mayMatchDestination(i, destination)) continue
      const rule = chain.rule(i)
      const affinityChecks = rule.conditions.filter((c): c is Extract<Condition, {kind: 'recent-check'}> => c.kind === 'recent-check')
      if (affinityChecks.length > 0) {
        // A client's first connection is on no recent-list yet, so it takes the random choice;
        // later ones stick to the endpoint they got (session affinity).
        state = {...state, affinity: [...state.affinity, ...affinityChecks.map((c) => ({list: c.list, seconds: c.seconds}))]}
        continue
      }

      const evaluation = this.evaluate(rule, state)
      if (evaluation === false) continue
      if (evaluation === true) {
        this.take(chain, i, rule, state, depth, results)
        return results
      }

      if ('probability' in evaluation) {
        const p = evaluation.probability
        if (p > NEGLIGIBLE) this.take(chain, i, rule, {...state, probability: state.probability * p}, depth, results, p)
        state = {...state, probability: state.probability * (1 - p)}
        if (state.probability <= NEGLIGIBLE) return results
        continue
      }

      // Undecidable: a masquerade mark under a condition is noted, not branched on.
      if (rule.action.kind === 'jump' && MASQUERADE_CHAINS.has(rule.action.chain)) {
        state = {...state, masqueradeWhen: [...state.masqueradeWhen, evaluation.unknown]}
        continue
      }

      this.take(chain, i, rule, {...state, assumptions: [...state.assumptions, evaluation.unknown]}, depth, results, undefined, evaluation.unknown)
      state = {...state, assumptions: [...state.assumptions, `not (${evaluation.unknown})`]}
    }

    results.push({state, returned: true})
    return results
  }

  private step(chain: Chain, rule: Rule, action: string, probability?: number, assumed?: string): Step {
    return {table: chain.table, chain: chain.name, line: rule.line, action, comment: rule.comment, probability, assumed}
  }

  /** Applies a matched rule's action, then continues wherever the kernel would. */
  private take(chain: Chain, index: number, rule: Rule, state: State, depth: number, results: Result[], probability?: number, assumed?: string): void {
    const action: Action = rule.action
    const recorded = (text: string) => [...state.steps, this.step(chain, rule, text, probability, assumed)]
    const continueAfter = (s: State) => {
      for (const r of this.run(chain, index + 1, s, depth)) results.push(r)
    }

    const withSetAffinity = (s: State): State => {
      const sets = rule.conditions.filter((c): c is Extract<Condition, {kind: 'recent-set'}> => c.kind === 'recent-set')
      return sets.length === 0 ? s : {...s, affinity: [...s.affinity, ...sets.map((c) => ({list: c.list}))]}
    }

    switch (action.kind) {
      case 'jump':
      case 'goto': {
        const target = this.graph.chain(chain.table, action.chain)
        if (!target) {
          results.push({state: {...state, steps: recorded(`-> ${action.chain} (not in the dump)`), verdict: {kind: 'missing', chain: action.chain, line: rule.line}}, returned: false})
          return
        }

        const state0 = state
        const entered = withSetAffinity(MASQUERADE_CHAINS.has(action.chain) ? state : {...state, steps: recorded(`${action.kind === 'goto' ? 'goto' : '->'} ${action.chain}`)})
        for (const r of this.run(target, 0, entered, depth + 1)) {
          // A detour that returned having done nothing (no step, no random choice) leaves no trace in the path.
          const state = r.returned && r.state.steps.length === entered.steps.length && r.state.probability === entered.probability ? {...r.state, steps: state0.steps} : r.state
          if (!r.returned) results.push(r)
          else if (action.kind === 'goto') results.push({...r, state})
          else continueAfter(state)
        }

        return
      }

      case 'choose':
        for (const target of action.targets) {
          const chosen = this.graph.chain(chain.table, target.chain)
          const s: State = {...state, probability: state.probability * target.weight, steps: [...state.steps, this.step(chain, rule, `${action.goto ? 'goto' : '->'} ${target.chain}`, target.weight, assumed)]}
          if (!chosen) {
            results.push({state: {...s, verdict: {kind: 'missing', chain: target.chain, line: rule.line}}, returned: false})
            continue
          }

          for (const r of this.run(chosen, 0, s, depth + 1)) {
            if (!r.returned || action.goto) results.push(r)
            else continueAfter(r.state)
          }
        }

        return
      case 'return':
        results.push({state: probability === undefined && !assumed ? state : {...state, steps: recorded('RETURN')}, returned: true})
        return
      case 'dnat': {
        const s = withSetAffinity(state)
        results.push({state: {...s, steps: [...s.steps, this.step(chain, rule, `DNAT ${formatHostPort(action.ip, action.port)}`, probability, assumed)], dnat: {ip: action.ip, port: action.port}}, returned: false})
        return
      }

      case 'reject':
      case 'drop':
        results.push({
          state: {...state, steps: recorded(action.kind.toUpperCase()), verdict: {kind: action.kind, chain: chain.name, line: rule.line, comment: rule.comment ?? viaComment(action.kind, chain.name, state.steps)}},
          returned: false,
        })
        return
      case 'accept':
      case 'masquerade':
      case 'snat':
        // Terminal for this table: later tables still see the packet.
        results.push({state, returned: false})
        return
      case 'mark':
        continueAfter({...state, mark: ((state.mark & ~action.clear) ^ action.xor) >>> 0})
        return
      case 'none':
      case 'other':
        continueAfter(withSetAffinity(state))
    }
  }

  private evaluate(rule: Rule, state: State): Evaluation {
    let probability: number | undefined
    const unknown: string[] = []
    for (const condition of rule.conditions) {
      const result = this.condition(condition, state)
      if (result === false) return false
      if (result === true) continue
      if ('probability' in result) probability = result.probability
      else unknown.push(result.unknown)
    }

    if (unknown.length > 0) return {unknown: unknown.join(' and ')}
    if (probability !== undefined) return probability >= 1 ? true : {probability}
    return true
  }

  private condition(c: Condition, state: State): Evaluation {
    const p = this.packet
    const negate = (r: Evaluation, negated: boolean): Evaluation => {
      if (!negated) return r
      if (r === true) return false
      if (r === false) return true
      return 'unknown' in r ? {unknown: `not ${r.unknown}`} : r
    }

    switch (c.kind) {
      case 'protocol':
        return negate(c.protocol === 'all' || c.protocol === p.protocol, c.negated)
      case 'port': {
        if (c.field === 'source') return {unknown: `source port ${describePorts(c.ranges, c.negated)}`}
        const port = state.dnat?.port ?? p.destinationPort
        return negate(
          c.ranges.some(([lo, hi]) => port >= lo && port <= hi),
          c.negated,
        )
      }

      case 'address':
        return c.field === 'destination' ? negate(this.destinationMatches(c.cidr, state), c.negated) : negate(this.sourceMatches(c.cidr), c.negated)
      case 'addrtype':
        if (c.type !== 'LOCAL') return {unknown: `${c.field} type ${c.negated ? 'not ' : ''}${c.type}`}
        return negate(c.field === 'source' ? p.origin === 'node' : state.dnat ? false : p.destinationLocal, c.negated)
      case 'mark':
        return negate(((state.mark & c.mask) >>> 0) === c.value, c.negated)
      case 'interface':
        // kube-proxy names interfaces only to tell pod traffic apart (--detect-local-mode).
        if (c.field === 'in') return negate(p.origin === 'pod', c.negated)
        return {unknown: `${c.negated ? 'not ' : ''}out via ${c.name}`}
      case 'probability':
        return {probability: c.probability}
      case 'recent-check':
        return false
      case 'recent-set':
        return true
      case 'ctstate': {
        const states = new Set(['NEW', ...(state.dnat ? ['DNAT'] : [])])
        return negate(
          c.states.some((s) => states.has(s)),
          c.negated,
        )
      }

      case 'set': {
        const answer = c.test?.({protocol: p.protocol, destination: state.dnat?.ip ?? p.destination, destinationPort: state.dnat?.port ?? p.destinationPort})
        return answer === undefined ? {unknown: `${c.negated ? 'not ' : ''}in set ${c.name}`} : negate(answer, c.negated)
      }

      case 'opaque':
        return {unknown: c.text}
    }
  }

  private destinationMatches(cidr: Cidr, state: State): boolean | {unknown: string} {
    const destination = state.dnat?.ip ?? this.packet.destination
    if (destination === undefined) return false
    return cidrContains(cidr, destination) ?? {unknown: `destination ${cidr.text}`}
  }

  /** What the packet's source matches, from where it comes and the pod network. */
  private sourceMatches(cidr: Cidr): boolean | {unknown: string} {
    const {origin, clusterCidrs} = this.packet
    const describe = () => (cidr.bits === 32 || !cidr.text.includes('/') ? `the client is ${cidr.text.replace(/\/32$/, '')}` : `source in ${cidr.text}`)
    if (clusterCidrs.length === 0) return {unknown: describe()}
    const insidePods = clusterCidrs.some((pods) => cidrCovers(pods, cidr))
    if (origin === 'pod') {
      const coversPods = clusterCidrs.some((pods) => cidrCovers(cidr, pods))
      const overlapsPods = clusterCidrs.some((pods) => cidrsOverlap(cidr, pods))
      if (coversPods) return true
      if (insidePods) return {unknown: cidr.bits === 32 ? `${describe()} (hairpin: an endpoint calling its own Service)` : describe()}
      return overlapsPods ? {unknown: describe()} : false
    }

    // Traffic from the node or from outside does not come from the pod network.
    if (cidr.bits === 0) return true
    if (insidePods) return false
    return {unknown: describe()}
  }
}

export function formatHostPort(ip: string, port?: number): string {
  const host = ip.includes(':') ? `[${ip}]` : ip
  return port === undefined ? host : `${host}:${port}`
}

function describePorts(ranges: Array<[number, number]>, negated: boolean): string {
  return `${negated ? 'not ' : ''}${ranges.map(([lo, hi]) => (lo === hi ? `${lo}` : `${lo}-${hi}`)).join(',')}`
}

/** A verdict rule without a comment (nft's shared reject-chain): name the rule that sent it there. */
function viaComment(kind: string, chain: string, steps: Step[]): string {
  const via = [...steps].reverse().find((s) => s.comment)?.comment
  return `${kind.toUpperCase()} in ${chain}${via ? ` (${via})` : ''}`
}
