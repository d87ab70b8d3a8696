import {spawnSync} from 'node:child_process'
import {mkdtempSync, readFileSync, rmSync, statSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {performance} from 'node:perf_hooks'
import {fileURLToPath, pathToFileURL} from 'node:url'

import {parseIptablesSave} from '../../src/trace/iptables.js'
import {iptablesRuleSet} from '../../src/trace/iptables-rules.js'
import {traceDumpFile} from '../../src/trace/offline.js'
import {traceService} from '../../src/trace/trace.js'
import {withHostRules} from '../fixtures/kube-proxy/host-rules.js'
import {generateServices, iptablesSaveOf} from '../helpers/kube-proxy-dump.js'
import {Benchmark, loadAverage, median, quantile, rounds} from './lib.js'

const SERVICES = 10_000
const ENDPOINTS = 10
/** Eleven: with five, two runs of the same code on a busy shared machine gave median ratios up to 0.25 apart. */
const ROUNDS = rounds(11)
/** Rounds run first and thrown away: the OS file cache and the machine settle. */
const WARMUPS = 1
const TARGET_MS = 1000
const TARGET_MB = 300
/** trace --from-file's work (read, parse, trace) against a bare read-and-split of the same file, in the same run (issue 13). */
const TARGET_RATIO = 1.5
const TARGET_MEMORY_RATIO = 1.2
/** Docker's FORWARD rules with 16 bridge networks (issue 13): under 1 s and 300 MB. */
const DOCKER_NETWORKS = 16
const self = fileURLToPath(import.meta.url)

/**
 * trace-all: the first 100 Services, a reference for repeated traces over one parse.
 * docker: the hand-written v1.29 node with Docker's rules for 16 bridge networks and flannel's;
 * docker-unplaced: the same with Docker's chains renamed, so no interface is known to be Docker's
 * and every -i/-o condition is an open question (the interface algebra's worst case here).
 */
type Work = 'baseline' | 'trace' | 'trace-all' | 'docker' | 'docker-unplaced'

/** One measured piece of work, in this (child) process: elapsed ms and peak RSS. */
function measure(work: Work, file: string): {ms: number; maxRssMb: number; detail: string} {
  // Named before the clock starts: generating the Services is not part of parse and trace.
  const last = generateServices(SERVICES, 1).at(-1)!
  const started = performance.now()
  let detail = ''
  if (work === 'docker' || work === 'docker-unplaced') {
    const base = readFileSync(new URL('../fixtures/kube-proxy/iptables-v1.29-counters.txt', import.meta.url), 'utf8')
    let text = withHostRules(base, {dockerNetworks: DOCKER_NETWORKS, flannel: {podCidr: '10.244.0.0/16'}})
    if (work === 'docker-unplaced') text = text.replaceAll('DOCKER', 'ISOLATE').replace(/-A FLANNEL-FWD .*\n/g, '')
    const rules = iptablesRuleSet(parseIptablesSave(text))
    const result = traceService(rules, rules.findService('default', 'web')!)
    detail = `${result.ports[0].frontends.length} results, ${JSON.stringify(result).length} bytes of JSON`
  } else if (work === 'baseline') {
    // The floor: read the file and split it into lines, nothing else.
    const lines = readFileSync(file, 'utf8').split('\n')
    detail = `${lines.length} lines`
  } else if (work === 'trace') {
    // What `trace --from-file DUMP svc/NAME` does after the CLI has started: read the file, find
    // the listing in it, parse, trace. The last Service: its rule is the last in KUBE-SERVICES,
    // the worst case for a packet.
    const [result] = traceDumpFile(file, {kind: 'service', namespace: last.namespace, name: last.name}, {namespace: 'default'})
    detail = `1 Service, ${result.ports[0].frontends[0].endpoints.length} endpoints reached`
  } else {
    const rules = iptablesRuleSet(parseIptablesSave(readFileSync(file, 'utf8')))
    let endpoints = 0
    for (const key of rules.serviceNames().slice(0, 100)) {
      const [namespace, name] = key.split('/')
      const result = traceService(rules, rules.findService(namespace, name)!)
      endpoints += result.ports[0].frontends[0].endpoints.length
    }

    detail = `100 Services, ${endpoints} endpoints reached`
  }

  const ms = performance.now() - started
  return {ms, maxRssMb: process.resourceUsage().maxRSS / 1024, detail}
}

/** Runs one piece of work in a fresh process, so its peak memory is its own. */
function inChild(work: Work, file: string): {ms: number; maxRssMb: number; detail: string} {
  const result = spawnSync(process.execPath, ['--import', 'tsx', self, '--child', work, file], {encoding: 'utf8', maxBuffer: 1 << 20})
  if (result.status !== 0) throw new Error(`bench child ${work} failed: ${result.stderr}`)
  return JSON.parse(result.stdout)
}

const bench: Benchmark = {
  name: `trace: parse + trace of a generated dump, ${SERVICES.toLocaleString('en')} Services x ${ENDPOINTS} endpoints (${ROUNDS} rounds of fresh processes)`,
  async run() {
    const dir = mkdtempSync(join(tmpdir(), 'trace-bench-'))
    try {
      const file = join(dir, 'iptables-save.txt')
      writeFileSync(file, iptablesSaveOf(generateServices(SERVICES, ENDPOINTS)))
      const sizeMb = statSync(file).size / 1024 / 1024
      const runs: Record<Work, Array<ReturnType<typeof inChild>>> = {baseline: [], trace: [], 'trace-all': [], docker: [], 'docker-unplaced': []}
      for (let round = 0; round < WARMUPS + ROUNDS; round++) {
        // Interleaved, so load from elsewhere on the machine hits both alike; the baseline and
        // the trace swap places every round, so neither always runs right after the other.
        const order: Work[] = round % 2 === 0 ? ['baseline', 'trace', 'docker', 'docker-unplaced'] : ['trace', 'baseline', 'docker', 'docker-unplaced']
        const measured = order.map((work) => [work, inChild(work, file)] as const)
        if (round < WARMUPS) continue
        for (const [work, result] of measured) runs[work].push(result)
      }

      runs['trace-all'].push(inChild('trace-all', file))
      const ms = (w: Work) => median(runs[w].map((r) => r.ms))
      const mb = (w: Work) => Math.max(...runs[w].map((r) => r.maxRssMb))
      // The verdicts are on the median of per-round ratios: a round runs both within a second or
      // so, so a burst of load hits both, where a ratio of medians can pair a quiet run with a busy one.
      const perRound = (value: (r: ReturnType<typeof inChild>) => number) => runs.trace.map((r, i) => value(r) / value(runs.baseline[i]))
      const timeRatios = perRound((r) => r.ms)
      const memoryRatios = perRound((r) => r.maxRssMb)
      const ratio = median(timeRatios)
      const memoryRatio = median(memoryRatios)
      const spread = (ratios: number[]) => `[${quantile(ratios, 0.25).toFixed(2)}-${quantile(ratios, 0.75).toFixed(2)}]`
      const timeOk = ms('trace') < TARGET_MS
      const memoryOk = mb('trace') < TARGET_MB
      const ratioOk = ratio <= TARGET_RATIO
      const memoryRatioOk = memoryRatio <= TARGET_MEMORY_RATIO
      const dockerOk = (w: Work) => ms(w) < TARGET_MS && mb(w) < TARGET_MB
      const verdict = (ok: boolean) => (ok ? 'met' : 'MISSED')
      return {
        lines: [
          `dump: ${sizeMb.toFixed(1)} MB, ${runs.baseline[0].detail}`,
          `read + split (baseline)  ${ms('baseline').toFixed(0).padStart(5)} ms  peak RSS ${mb('baseline').toFixed(0)} MB`,
          `trace --from-file's work ${ms('trace').toFixed(0).padStart(5)} ms  peak RSS ${mb('trace').toFixed(0)} MB  (${runs.trace[0].detail})`,
          `  time   ${ms('trace').toFixed(0)} ms, target < ${TARGET_MS} ms: ${verdict(timeOk)} (${(ms('trace') / TARGET_MS).toFixed(2)} of target)`,
          `  memory ${mb('trace').toFixed(0)} MB, target < ${TARGET_MB} MB: ${verdict(memoryOk)} (${(mb('trace') / TARGET_MB).toFixed(2)} of target)`,
          `  ratio  ${ratio.toFixed(2)}x ${spread(timeRatios)} the baseline's time, target <= ${TARGET_RATIO}x: ${verdict(ratioOk)}`,
          `  memory ${memoryRatio.toFixed(2)}x ${spread(memoryRatios)} the baseline's peak RSS, target <= ${TARGET_MEMORY_RATIO}x: ${verdict(memoryRatioOk)}`,
          `  (ratios: median and interquartile range of ${ROUNDS} rounds after ${WARMUPS} warm-up; load average ${loadAverage()})`,
          `parse + trace 100 Services ${ms('trace-all').toFixed(0)} ms  peak RSS ${mb('trace-all').toFixed(0)} MB  (reference, no target; ${runs['trace-all'][0].detail})`,
          `Docker, ${DOCKER_NETWORKS} bridge networks + flannel     ${ms('docker').toFixed(0).padStart(5)} ms  peak RSS ${mb('docker').toFixed(0)} MB (${runs.docker[0].detail}); target < ${TARGET_MS} ms and < ${TARGET_MB} MB: ${verdict(dockerOk('docker'))}`,
          `same, no interface known as Docker's ${ms('docker-unplaced').toFixed(0).padStart(5)} ms  peak RSS ${mb('docker-unplaced').toFixed(0)} MB (${runs['docker-unplaced'][0].detail}); target < ${TARGET_MS} ms and < ${TARGET_MB} MB: ${verdict(dockerOk('docker-unplaced'))}`,
        ],
        metTargets: timeOk && memoryOk && ratioOk && memoryRatioOk && dockerOk('docker') && dockerOk('docker-unplaced'),
      }
    } finally {
      rmSync(dir, {recursive: true, force: true})
    }
  },
}

export default bench

export async function run(): Promise<void> {
  const report = await bench.run()
  console.log(bench.name)
  for (const line of report.lines) console.log(`  ${line}`)
}

const childAt = process.argv.indexOf('--child')
if (childAt >= 0) {
  process.stdout.write(JSON.stringify(measure(process.argv[childAt + 1] as Work, process.argv[childAt + 2])))
} else if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await run()
}
