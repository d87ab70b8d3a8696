import assert from 'node:assert/strict'
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {CliError} from '../../../src/errors.js'
import {parseIptablesSave} from '../../../src/trace/iptables.js'
import {iptablesRuleSet} from '../../../src/trace/iptables-rules.js'
import {detectMode, splitSections} from '../../../src/trace/load.js'
import {clean, parseNftTable} from '../../../src/trace/nftables.js'
import {parseIpvs} from '../../../src/trace/ipvs.js'
import {traceDump, traceDumpFile} from '../../../src/trace/offline.js'
import {parseTraceTarget} from '../../../src/trace/target.js'
import {traceService} from '../../../src/trace/trace.js'

const fixture = (name: string) => readFileSync(new URL(`../../fixtures/kube-proxy/${name}`, import.meta.url), 'utf8')
const v129 = fixture('iptables-v1.29-counters.txt')

const timed = <T>(what: string, limitMs: number, work: () => T): T => {
  const started = performance.now()
  const result = work()
  const ms = performance.now() - started
  assert.ok(ms < limitMs, `${what}: ${ms.toFixed(0)} ms (limit ${limitMs})`)
  return result
}

const rejects = (work: () => unknown, pattern: RegExp) => assert.throws(work, (e: unknown) => e instanceof CliError && pattern.test(e.message))

describe('trace input: what iptables-restore accepts, trace accepts', () => {
  it('a UTF-8 byte order mark', () => {
    const rules = iptablesRuleSet(parseIptablesSave(`\uFEFF${v129}`))
    assert.ok(rules.findService('default', 'web'))
  })

  it('a file read from disk: ASCII, UTF-8 with a BOM and a non-ASCII comment, both give the same trace', () => {
    const dir = mkdtempSync(join(tmpdir(), 'trace-read-'))
    try {
      const web = {kind: 'service' as const, namespace: 'default', name: 'web'}
      const traced = (text: string) => {
        const file = join(dir, 'dump.txt')
        writeFileSync(file, text, 'utf8')
        return traceDumpFile(file, web, {namespace: 'default'})
      }

      for (const text of [v129, `\uFEFF# Sauvegardé sur le nœud\n${v129}`, `# Sauvegardé sur le nœud\n${v129}`]) {
        const fromFile = traced(text)
        assert.equal(fromFile[0].ports[0].frontends[0].endpoints.length, 3)
        assert.deepEqual(fromFile, traceDump(text, web, {namespace: 'default'}))
      }
    } finally {
      rmSync(dir, {recursive: true, force: true})
    }
  })

  it('tables without declarations of their built-in chains', () => {
    const bare = v129
      .split('\n')
      .filter((l) => !/^:(PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) /.test(l))
      .join('\n')
    const rules = iptablesRuleSet(parseIptablesSave(bare))
    const web = traceService(rules, rules.findService('default', 'web')!)
    assert.equal(web.ports[0].frontends[0].endpoints.length, 3)
  })

  it('a 70-deep acyclic chain of jumps is followed; a real cycle is a loop', () => {
    const depth = 70
    const chains = Array.from({length: depth}, (_, i) => `HOP-${i}`)
    const deep = (last: string) =>
      v129
        .replace(
          '-A KUBE-SERVICES -d 10.96.10.10/32',
          `-A KUBE-SERVICES -d 10.96.10.10/32 -p tcp -m tcp --dport 80 -j HOP-0\n${chains.map((c, i) => `-A ${c} -j ${i + 1 < depth ? chains[i + 1] : last}`).join('\n')}\n-A KUBE-SERVICES -d 10.96.10.10/32`,
        )
        .replace(':KUBE-SVC-25DWG537JSJ6MPWM - [0:0]', `:KUBE-SVC-25DWG537JSJ6MPWM - [0:0]\n${chains.map((c) => `:${c} - [0:0]`).join('\n')}`)
    const acyclic = iptablesRuleSet(parseIptablesSave(deep('RETURN')))
    const web = traceService(acyclic, acyclic.findService('default', 'web')!)
    assert.equal(web.ports[0].frontends[0].endpoints.length, 3)
    const cyclic = iptablesRuleSet(parseIptablesSave(deep('HOP-3')))
    rejects(() => traceService(cyclic, cyclic.findService('default', 'web')!), /rules loop: chain HOP-3/)
  })
})

describe('trace input: what iptables-restore refuses, trace refuses with the line', () => {
  const withProbability = (p: string) => v129.replace('--probability 0.33333333333', `--probability ${p}`)
  const line = v129.split('\n').findIndex((l) => l.includes('--probability 0.33333333333')) + 1
  for (const p of ['-0.5', 'abc', '1.5', 'NaN']) {
    it(`--probability ${p}`, () => {
      const rules = iptablesRuleSet(parseIptablesSave(withProbability(p)))
      rejects(() => traceService(rules, rules.findService('default', 'web')!), new RegExp(`line ${line}: --probability "${p}" is not a number from 0 to 1`))
    })
  }

  it('traffic reaching a chain that is not there is a finding', () => {
    const cut = v129
      .split('\n')
      .filter((l) => !l.includes('-A KUBE-SVC-CDGGSHYLG3RE2FKL') && !l.includes(':KUBE-SVC-CDGGSHYLG3RE2FKL'))
      .join('\n')
    const rules = iptablesRuleSet(parseIptablesSave(cut))
    const result = traceService(rules, rules.findService('default', 'web')!)
    assert.ok(
      result.findings.some((f) => f.kind === 'missing-chain' && f.message.includes('KUBE-SVC-CDGGSHYLG3RE2FKL')),
      JSON.stringify(result.findings),
    )
  })
})

describe('telling listings apart', () => {
  it('iptables-save output is parsed once, while it is told apart; other listings and broken dumps are not taken for it', () => {
    const iptables = splitSections(v129)
    assert.ok(iptables.iptablesDump, 'kept for ruleSetFor')
    assert.equal(detectMode(iptables), 'iptables')
    const nft = splitSections(fixture('nftables-v1.33-node.txt'))
    assert.deepEqual([nft.nft !== undefined, nft.iptables, nft.iptablesDump], [true, undefined, undefined])
    const ipvs = splitSections(fixture('ipvs-v1.28-node.txt'))
    assert.deepEqual([ipvs.ipvs !== undefined, ipvs.iptablesDump], [true, undefined])
    assert.equal(detectMode(ipvs), 'ipvs')
    // A dump the parser refuses is still iptables-save output: tracing it gives the parser's error.
    const broken = splitSections(v129.replace('COMMIT', 'TCP 10.0.0.1:80 rr'))
    assert.deepEqual([broken.iptables !== undefined, broken.iptablesDump], [true, undefined])
    rejects(() => traceDump(v129.replace('COMMIT', 'TCP 10.0.0.1:80 rr'), {kind: 'service', name: 'web'}, {namespace: 'default'}), /^iptables dump, line \d+/)
  })
})

describe('trace targets', () => {
  it('10.108.64.11:8080:1 is no address (and no IPv6)', () => {
    rejects(() => parseTraceTarget('10.108.64.11:8080:1'), /port must be a number/)
    assert.deepEqual(parseTraceTarget('fd00::10'), {kind: 'address', ip: 'fd00::10', port: undefined})
    assert.deepEqual(parseTraceTarget('[fd00::10]:53'), {kind: 'address', ip: 'fd00::10', port: 53})
    assert.deepEqual(parseTraceTarget('10.96.0.10:53'), {kind: 'address', ip: '10.96.0.10', port: 53})
  })

  it('Service names are DNS-1035 labels of at most 63 characters', () => {
    rejects(() => parseTraceTarget(`svc/${'a'.repeat(300)}`), /not a valid Service name.*at most 63/)
    rejects(() => parseTraceTarget('svc/1web'), /not a valid Service name/)
    assert.equal((parseTraceTarget(`svc/${'a'.repeat(63)}`) as {name: string}).name.length, 63)
    rejects(() => parseTraceTarget(`svc/${'n'.repeat(64)}/web`), /not a valid namespace/)
  })
})

describe('trace parsers stay linear on hostile lines', () => {
  const blanks = ' '.repeat(200_000)
  it("nft's handle annotations (100k blanks, 1 MB line)", () => {
    timed('clean', 200, () => clean(`${blanks}x${blanks}`))
    timed('clean 1MB', 200, () => clean(`${' '.repeat(1_000_000)}# handle x`))
    assert.equal(clean('  ip daddr 10.0.0.1 # handle 12  '), 'ip daddr 10.0.0.1')
    timed('nft', 1000, () => parseNftTable(`table ip kube-proxy {\n${blanks}\n chain a {\n${blanks}x # handle 1${blanks}\n}\n}\n`))
  })

  it('mode detection, iptables, ipvs (100k blank lines, 200k blanks, repeated openers)', () => {
    const newlines = '\n'.repeat(100_000)
    timed('detectMode', 500, () => detectMode(splitSections(`${newlines}x`)))
    timed('detectMode ipvs', 500, () => detectMode({ipvs: `${'\n \t'.repeat(100_000)}x`, nft: `${'\n \t'.repeat(100_000)}x`}))
    timed('iptables', 500, () => assert.throws(() => parseIptablesSave(`*nat\n${blanks}x\nCOMMIT\n`), /line 2/))
    timed('ipvs', 500, () => assert.throws(() => parseIpvs(`TCP  10.0.0.1:80 rr${blanks}\n  -> ${'1 '.repeat(100_000)}\n`), /line 2/))
    timed('nft comments', 1000, () => parseNftTable(`table ip kube-proxy {\n map m {\n elements = { a${' comment "'.repeat(50_000)} }\n }\n}\n`))
  })
})

/** A seeded generator: the same mutations on every run, so a failure can be replayed. */
function random(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state * 1_664_525 + 1_013_904_223) >>> 0
    return state / 2 ** 32
  }
}

type Mutation = (lines: string[], rnd: () => number) => string

const pick = <T>(items: T[], rnd: () => number) => items[Math.floor(rnd() * items.length)]
const MUTATIONS: Record<string, Mutation> = {
  truncate: (lines, rnd) => lines.join('\n').slice(0, Math.floor(rnd() * lines.join('\n').length)),
  'delete lines': (lines, rnd) => lines.filter(() => rnd() > 0.1).join('\n'),
  'duplicate lines': (lines, rnd) => lines.flatMap((l) => (rnd() < 0.1 ? [l, l] : [l])).join('\n'),
  'swap lines': (lines, rnd) => {
    const copy = [...lines]
    for (let k = 0; k < 10; k++) {
      const a = Math.floor(rnd() * copy.length)
      const b = Math.floor(rnd() * copy.length)
      ;[copy[a], copy[b]] = [copy[b], copy[a]]
    }

    return copy.join('\n')
  },
  'random bytes': (lines, rnd) => {
    const chars = [...lines.join('\n')]
    for (let k = 0; k < 20; k++) chars[Math.floor(rnd() * chars.length)] = String.fromCharCode(Math.floor(rnd() * 256))
    return chars.join('')
  },
  CRLF: (lines) => lines.join('\r\n'),
  'huge line': (lines, rnd) => {
    const copy = [...lines]
    copy.splice(Math.floor(rnd() * copy.length), 0, pick([' ', 'x', '-A KUBE-SERVICES -j ', '"', '# handle 1 '], rnd).repeat(100_000))
    return copy.join('\n')
  },
  BOM: (lines) => `\uFEFF${lines.join('\n')}`,
  cycle: (lines) => {
    // KUBE-SERVICES jumps back into itself at its end (in a dump no kernel would load).
    const i = lines.reduce((last, l, k) => (l.includes('-A KUBE-SERVICES ') ? k : last), -1)
    const copy = [...lines]
    if (i >= 0) copy.splice(i, 0, '-A KUBE-SVC-CDGGSHYLG3RE2FKL -j KUBE-SERVICES')
    return copy.join('\n')
  },
}

describe('fuzz: mutated fixture dumps end in a result or a line-numbered error, quickly', function () {
  this.timeout(120_000)
  const inputs: Array<{file: string; targets: string[]}> = [
    {file: 'iptables-v1.29-counters.txt', targets: ['svc/default/web', 'svc/default/shop', '10.96.10.10:80']},
    {file: 'iptables-v1.14-unnamed-port.txt', targets: ['svc/default/hostnames']},
    {file: 'iptables-v1.22-xlb.txt', targets: ['svc/old/local']},
    {file: 'nftables-v1.33-node.txt', targets: ['svc/default/web']},
    {file: 'ipvs-v1.28-node.txt', targets: ['10.96.30.1:80']},
  ]
  const ROUNDS = 12
  for (const {file, targets} of inputs) {
    for (const [name, mutate] of Object.entries(MUTATIONS)) {
      it(`${file}: ${name}`, () => {
        const lines = fixture(file).split('\n')
        const rnd = random(name.length * 7919 + file.length)
        for (let round = 0; round < ROUNDS; round++) {
          const text = mutate(lines, rnd)
          const target = parseTraceTarget(pick(targets, rnd))
          const started = performance.now()
          try {
            const results = traceDump(text, target, {namespace: 'default'})
            JSON.stringify(results)
          } catch (error) {
            if (!(error instanceof CliError)) throw new Error(`round ${round}: not a CliError: ${(error as Error).stack}`)
            assert.match(
              error.message,
              /line \d+|not in this|no Service at|holds no|no iptables-save|no `|not a table|no "\*table"|rules loop|IPVS listings/,
              error.message,
            )
          }

          const ms = performance.now() - started
          assert.ok(ms < 2000, `round ${round} took ${ms.toFixed(0)} ms`)
        }
      })
    }
  }
})

describe('pasted excerpts are traced with a note on what was assumed', () => {
  it('`iptables-save | grep web` (no *nat header, no declarations, counters and all)', () => {
    const excerpt = v129
      .split('\n')
      .filter((l) => l.includes('web'))
      .join('\n')
    const results = traceDump(excerpt, {kind: 'service', namespace: 'default', name: 'web'}, {namespace: 'default'})
    const pod = results[0].ports[0].frontends.find((f) => f.from === 'pod')!
    assert.deepEqual(
      pod.endpoints.map((e) => `${e.ip} ${e.share.toFixed(3)}`),
      ['10.244.1.5 0.333', '10.244.2.6 0.333', '10.244.3.7 0.333'],
    )
    assert.ok(
      results[0].notes.some((n) => n.includes('no "*table" line')),
      results[0].notes.join('\n'),
    )
    assert.equal(results[0].findings.length, 0)
  })

  it('an excerpt that cuts a chain the Service needs names it as missing (a finding)', () => {
    const excerpt = v129
      .split('\n')
      .filter((l) => l.includes('-A KUBE-SERVICES') && l.includes('default/web:http'))
      .join('\n')
    const [result] = traceDump(excerpt, {kind: 'service', namespace: 'default', name: 'web'}, {namespace: 'default'})
    assert.ok(result.findings.some((f) => f.kind === 'missing-chain' && f.message.includes('KUBE-SVC-CDGGSHYLG3RE2FKL')))
  })

  it('an `ipvsadm -Ln` listing with elided "..." lines and no header', () => {
    const ipvs = [
      'TCP  10.96.30.1:80 wrr',
      '  -> 10.244.1.5:8080              Masq    3      0          0',
      '  ...',
      'TCP  10.96.0.10:53 rr',
      '  -> 10.244.1.2:53                Masq    1      0          0',
    ].join('\n')
    const [result] = traceDump(ipvs, {kind: 'address', ip: '10.96.30.1', port: 80}, {namespace: 'default'})
    assert.equal(result.mode, 'ipvs')
    assert.deepEqual(
      result.ports[0].frontends[0].endpoints.map((e) => e.share),
      [1],
    )
    assert.ok(
      result.notes.some((n) => n.includes('leaves lines out')),
      result.notes.join('\n'),
    )
  })
})
