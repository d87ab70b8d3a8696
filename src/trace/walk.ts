import {CliError} from '../errors.js'
import type {Action, Chain, ChainGraph, Condition, Rule} from './graph.js'
import {InterfaceSpace, Where} from './interfaces.js'
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
  /** The (in, out) interface pairs for which this outcome happens (see interfaces.ts); all when undefined. */
  where?: Where
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
  /** ACCEPT (or SNAT/MASQUERADE) ended this table's hook for the packet. */
  accepted?: boolean
  /** The (in, out) interface pairs this path applies to (see interfaces.ts). */
  where: Where
}

type Result = {state: State; returned: boolean}

const MASQUERADE_CHAINS = new Set(['KUBE-MARK-MASQ', 'mark-for-masquerade'])
/**
 * The kernel refuses cycles when rules are loaded, so a chain entered again while it is still
 * running is a loop in a dump that never was in a kernel. Depth alone is no loop: legacy
 * iptables accepts any acyclic depth; this limit only keeps the walk off the JS stack's edge.
 */
const MAX_DEPTH = 1000
/** Below this, a branch is a floating-point remnant, not traffic. */
const NEGLIGIBLE = 1e-12

type Evaluation = true | false | {probability: number} | {unknown: string}

export interface WalkOptions {
  /** Mark bit kube-proxy uses for masquerading (from KUBE-MARK-MASQ); default 0x4000. */
  masqueradeMark?: number
  /** The interface names of the rules, and which (in, out) pairs this packet can have. */
  interfaces?: {space: InterfaceSpace; start: Where}
}

/**
 * Follows one packet through a chain graph as the kernel would: jumps, gotos, RETURN,
 * falling off a chain, random choices (each splitting the packet's probability), marks.
 * What it cannot decide (an unknown source range) it splits into assumed branches;
 * interface conditions narrow each branch's set of possible interfaces instead, so branches
 * that cannot happen are dropped and branches that meet again with nothing else changed are
 * merged. Each chain is walked rule by rule with all the branches waiting at that rule, so
 * the work grows with the rules visited, not with the number of ways to reach them.
 */
export class Walker {
  private readonly masqueradeMark: number
  readonly space: InterfaceSpace
  readonly start: Where
  private readonly masks = new WeakMap<Rule, Where | null>()
  private readonly stepIds = new WeakMap<Step, number>()
  private nextStepId = 1

  constructor(
    private readonly graph: ChainGraph,
    private readonly packet: WalkPacket,
    options: WalkOptions = {},
  ) {
    this.masqueradeMark = options.masqueradeMark ?? 0x4000
    this.space = options.interfaces?.space ?? new InterfaceSpace([])
    this.start = options.interfaces?.start ?? this.space.full()
  }

  /**
   * Runs the packet through `entry` (chains run in order, as a hook runs its chains), from
   * scratch or continuing an outcome of an earlier table (nat, then filter). A built-in
   * chain's DROP policy applies to packets that fall off its end.
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
          where: from.where ?? this.start,
        }
      : {probability: 1, assumptions: [], steps: [], mark: 0, masqueradeWhen: [], affinity: [], where: this.start}
    let states: State[] = [start]
    for (const chainName of entry) {
      const chain = this.graph.chain(table, chainName)
      if (!chain) continue
      const next: State[] = []
      const running: State[] = []
      for (const state of states) (state.verdict || state.accepted ? next : running).push(state)
      if (running.length > 0) {
        for (const result of this.run(chain, 0, running, [])) {
          if (result.returned && chain.policy === 'DROP') {
            next.push({
              ...result.state,
              steps: [...result.state.steps, {table: chain.table, chain: chain.name, action: 'policy DROP'}],
              verdict: {kind: 'drop', chain: chain.name, comment: `the ${chain.name} chain's policy is DROP and no rule accepted the packet`},
            })
          } else next.push(result.state)
        }
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
      where: state.where,
    }
  }

  /** Says which interfaces a set of pairs stands for, relative to what the packet allows anyway. */
  describeWhere(where: Where): string {
    return this.space.describe(where, this.start)
  }

  /**
   * Runs a chain from rule `from` for every state in `inputs`; every result either returned
   * (fell off/RETURN) or stopped. States waiting at the same rule that differ only in their
   * interfaces are merged first.
   */
  private run(chain: Chain, from: number, inputs: State[], stack: string[]): Result[] {
    if (stack.includes(chain.name))
      throw new CliError(
        `rules loop: chain ${chain.name} is entered again from itself (${[...stack, chain.name].join(' -> ')}); the kernel would refuse these rules`,
      )
    if (stack.length >= MAX_DEPTH) throw new CliError(`chain ${chain.name} is entered more than ${MAX_DEPTH} chains deep; trace does not follow deeper`)
    const inner = [...stack, chain.name]
    const results: Result[] = []
    const count = chain.ruleCount
    let pending = inputs
    for (let i = from; i < count && pending.length > 0; i++) {
      // Rules that name another single destination than every waiting state's pass them all by:
      // skip to the next one that may match (KUBE-SERVICES has a rule per Service port).
      if (chain.nextMayMatch) i = this.nextMayMatch(chain, i, pending)
      if (i >= count) break
      const here = pending.length > 1 ? this.merge(pending) : pending
      pending = []
      for (const state of here) this.visit(chain, i, state, inner, results, pending)
    }

    for (const state of pending.length > 1 ? this.merge(pending) : pending) results.push({state, returned: true})
    return results.length > 1 ? this.mergeResults(results) : results
  }

  /** The first rule from i on that may match one of the states' destinations. */
  private nextMayMatch(chain: Chain, i: number, states: State[]): number {
    let next = Infinity
    for (const state of states) {
      const destination = state.dnat?.ip ?? this.packet.destination
      if (destination === undefined) return i
      next = Math.min(next, chain.nextMayMatch!(i, destination))
    }

    return next
  }

  /** One state meets rule i: what matches is taken, what does not waits at rule i + 1 (`next`). */
  private visit(chain: Chain, i: number, input: State, stack: string[], results: Result[], next: State[]): void {
    let state = input
    const destination = state.dnat?.ip ?? this.packet.destination
    if (destination !== undefined && chain.mayMatchDestination && !chain.mayMatchDestination(i, destination)) {
      next.push(state)
      return
    }

    const rule = chain.rule(i)
    const affinityChecks = rule.conditions.filter((c): c is Extract<Condition, {kind: 'recent-check'}> => c.kind === 'recent-check')
    if (affinityChecks.length > 0) {
      // A client's first connection is on no recent-list yet, so it takes the random choice;
      // later ones stick to the endpoint they got (session affinity).
      next.push({...state, affinity: [...state.affinity, ...affinityChecks.map((c) => ({list: c.list, seconds: c.seconds}))]})
      return
    }

    const evaluation = this.evaluate(rule, state)
    if (evaluation === false) {
      next.push(state)
      return
    }

    const mask = this.maskOf(rule)
    if (mask) {
      const inside = this.space.and(state.where, mask)
      if (this.space.isEmpty(inside)) {
        next.push(state)
        return
      }

      const outside = this.space.andNot(state.where, mask)
      if (!this.space.isEmpty(outside)) {
        if (this.isMasquerade(rule) && evaluation === true) {
          // A masquerade mark for some interfaces only is noted, not branched on.
          next.push({...state, masqueradeWhen: [...state.masqueradeWhen, this.space.describe(inside, this.start) || 'always']})
          return
        }

        next.push({...state, where: outside})
        state = {...state, where: inside}
      }
    }

    if (evaluation === true) {
      this.take(chain, i, rule, state, stack, results, next)
      return
    }

    if ('probability' in evaluation) {
      const p = evaluation.probability
      if (p > NEGLIGIBLE) this.take(chain, i, rule, {...state, probability: state.probability * p}, stack, results, next, p)
      const rest = {...state, probability: state.probability * (1 - p)}
      if (rest.probability > NEGLIGIBLE) next.push(rest)
      return
    }

    // The same undecidable condition met again on one path has the answer assumed the first time.
    if (state.assumptions.includes(evaluation.unknown)) {
      this.take(chain, i, rule, state, stack, results, next)
      return
    }

    if (state.assumptions.includes(`not (${evaluation.unknown})`)) {
      next.push(state)
      return
    }

    // Undecidable: a masquerade mark under a condition is noted, not branched on.
    if (this.isMasquerade(rule)) {
      next.push({...state, masqueradeWhen: [...state.masqueradeWhen, evaluation.unknown]})
      return
    }

    this.take(chain, i, rule, {...state, assumptions: [...state.assumptions, evaluation.unknown]}, stack, results, next, undefined, evaluation.unknown)
    next.push({...state, assumptions: [...state.assumptions, `not (${evaluation.unknown})`]})
  }

  /** Jumps to kube-proxy's masquerade chain, or sets its mark bit directly (older kube-proxy). */
  private isMasquerade(rule: Rule): boolean {
    const a = rule.action
    return (
      (a.kind === 'jump' && MASQUERADE_CHAINS.has(a.chain)) ||
      (a.kind === 'mark' && (a.xor & this.masqueradeMark) !== 0 && (a.clear & ~this.masqueradeMark) === 0)
    )
  }

  /** The interface pairs a rule's -i/-o conditions allow; null when it has none the space knows. */
  private maskOf(rule: Rule): Where | null {
    let mask = this.masks.get(rule)
    if (mask !== undefined) return mask
    mask = null
    for (const c of rule.conditions) {
      if (c.kind !== 'interface' || !this.space.knows(c.name)) continue
      const set = this.space.condition(c.field, c.name, c.negated)
      mask = mask ? this.space.and(mask, set) : set
    }

    this.masks.set(rule, mask)
    return mask
  }

  private stepKey(steps: Step[]): string {
    let key = ''
    for (const step of steps) {
      let id = this.stepIds.get(step)
      if (id === undefined) {
        id = this.nextStepId++
        this.stepIds.set(step, id)
      }

      key += `${id},`
    }

    return key
  }

  /** Everything about a state except its interfaces: states with equal keys may merge. */
  private stateKey(s: State): string {
    const v = s.verdict
    return [
      this.stepKey(s.steps),
      s.probability,
      s.mark,
      s.accepted ? 1 : 0,
      s.dnat ? `${s.dnat.ip}|${s.dnat.port}` : '',
      v ? `${v.kind}|${'chain' in v ? v.chain : ''}|${'line' in v ? v.line : ''}` : '',
      s.assumptions.join('\u0001'),
      s.masqueradeWhen.join('\u0001'),
      s.affinity.map((a) => `${a.list}/${a.seconds}`).join(','),
    ].join('\u0000')
  }

  /** Unites states that differ only in interfaces (they are disjoint cases of one path). */
  private merge(states: State[]): State[] {
    const byKey = new Map<string, State>()
    for (const s of states) {
      const key = this.stateKey(s)
      const seen = byKey.get(key)
      byKey.set(key, seen ? {...seen, where: this.space.or(seen.where, s.where)} : s)
    }

    return byKey.size === states.length ? states : [...byKey.values()]
  }

  private mergeResults(results: Result[]): Result[] {
    const byKey = new Map<string, Result>()
    for (const r of results) {
      const key = `${r.returned ? 1 : 0}\u0000${this.stateKey(r.state)}`
      const seen = byKey.get(key)
      byKey.set(key, seen ? {returned: seen.returned, state: {...seen.state, where: this.space.or(seen.state.where, r.state.where)}} : r)
    }

    return byKey.size === results.length ? results : [...byKey.values()]
  }

  private step(chain: Chain, rule: Rule, action: string, probability?: number, assumed?: string): Step {
    return {table: chain.table, chain: chain.name, line: rule.line, action, comment: rule.comment, probability, assumed}
  }

  /** Applies a matched rule's action, then continues wherever the kernel would. */
  private take(
    chain: Chain,
    index: number,
    rule: Rule,
    state: State,
    stack: string[],
    results: Result[],
    next: State[],
    probability?: number,
    assumed?: string,
  ): void {
    const action: Action = rule.action
    const recorded = (text: string) => [...state.steps, this.step(chain, rule, text, probability, assumed)]
    const continueAfter = (s: State) => {
      next.push(s)
    }

    const withSetAffinity = (s: State): State => {
      const sets = rule.conditions.filter((c): c is Extract<Condition, {kind: 'recent-set'}> => c.kind === 'recent-set')
      return sets.length === 0 ? s : {...s, affinity: [...s.affinity, ...sets.map((c) => ({list: c.list}))]}
    }

    switch (action.kind) {
      case 'jump':
      case 'goto': {
        const target = this.graph.chain(chain.table, action.chain)
        if (!target && MASQUERADE_CHAINS.has(action.chain)) {
          // kube-proxy's masquerade chain only sets its mark: an excerpt that left it out still means that.
          continueAfter({...state, mark: (state.mark | this.masqueradeMark) >>> 0})
          return
        }

        if (!target) {
          results.push({
            state: {...state, steps: recorded(`-> ${action.chain} (not in the dump)`), verdict: {kind: 'missing', chain: action.chain, line: rule.line}},
            returned: false,
          })
          return
        }

        const state0 = state
        const entered = withSetAffinity(
          MASQUERADE_CHAINS.has(action.chain) ? state : {...state, steps: recorded(`${action.kind === 'goto' ? 'goto' : '->'} ${action.chain}`)},
        )
        for (const r of this.run(target, 0, [entered], stack)) {
          // A detour that returned having done nothing (no step, no random choice) leaves no trace in the path.
          const state =
            r.returned && r.state.steps.length === entered.steps.length && r.state.probability === entered.probability
              ? {...r.state, steps: state0.steps}
              : r.state
          if (!r.returned) results.push(r)
          else if (action.kind === 'goto') results.push({...r, state})
          else continueAfter(state)
        }

        return
      }

      case 'choose':
        for (const target of action.targets) {
          const chosen = this.graph.chain(chain.table, target.chain)
          const s: State = {
            ...state,
            probability: state.probability * target.weight,
            steps: [...state.steps, this.step(chain, rule, `${action.goto ? 'goto' : '->'} ${target.chain}`, target.weight, assumed)],
          }
          if (!chosen) {
            results.push({state: {...s, verdict: {kind: 'missing', chain: target.chain, line: rule.line}}, returned: false})
            continue
          }

          for (const r of this.run(chosen, 0, [s], stack)) {
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
        results.push({
          state: {
            ...s,
            steps: [...s.steps, this.step(chain, rule, `DNAT ${formatHostPort(action.ip, action.port)}`, probability, assumed)],
            dnat: {ip: action.ip, port: action.port},
          },
          returned: false,
        })
        return
      }

      case 'reject':
      case 'drop':
        results.push({
          state: {
            ...state,
            steps: recorded(action.kind.toUpperCase()),
            verdict: {kind: action.kind, chain: chain.name, line: rule.line, comment: rule.comment ?? viaComment(action.kind, chain.name, state.steps)},
          },
          returned: false,
        })
        return
      case 'accept':
      case 'masquerade':
      case 'snat':
        // Terminal for this table: later tables still see the packet.
        results.push({state: {...state, accepted: true}, returned: false})
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
        return negate((state.mark & c.mask) >>> 0 === c.value, c.negated)
      case 'interface':
        // Names the interface space knows are decided by the rule's interface mask (see visit).
        if (this.space.knows(c.name)) return true
        return {unknown: `${c.negated ? 'not ' : ''}${c.field} via ${c.name}`}
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
