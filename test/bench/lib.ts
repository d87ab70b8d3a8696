import {spawnSync} from 'node:child_process'
import {existsSync, mkdtempSync, readFileSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {performance} from 'node:perf_hooks'

/**
 * A benchmark run by `npm run bench` (test/bench/run.ts imports every test/bench/*.bench.ts
 * and runs its default export). Benchmarks measure and report; they are not tests.
 */
export interface Benchmark {
  name: string
  run(): Promise<BenchReport>
}

export interface BenchReport {
  lines: string[]
  /** Whether every figure with a target met it; undefined when there is no target. */
  metTargets?: boolean
}

export interface Case {
  label: string
  argv: string[]
  env?: NodeJS.ProcessEnv
  /** Fail the benchmark when the command exits otherwise: a fast failure is no result. */
  expectExit?: number[]
}

export const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

export interface Sample {
  ms: number
  /** Peak resident memory of the process, in MB; NaN where GNU time (/usr/bin/time) is missing. */
  maxRssMb: number
  /**
   * CPU time (user + system), in ms; NaN without GNU time. Steadier than wall time on a busy
   * machine, so it is shown beside it; the targets stay on wall time.
   */
  cpuMs: number
}

const GNU_TIME = '/usr/bin/time'

/**
 * Wall time and peak memory of each command as a fresh process. Cases run interleaved, round
 * after round, so load from elsewhere on the machine hits all of them alike; warm-up rounds
 * fill the OS file cache first. Peak memory comes from GNU time, which wraps every case alike.
 */
export function timeProcesses(cases: Case[], rounds: number, warmups = 2): Map<string, Sample[]> {
  const samples = new Map<string, Sample[]>(cases.map((c) => [c.label, []]))
  const dir = mkdtempSync(join(tmpdir(), 'selfhost-bench-'))
  const rssFile = join(dir, 'rss')
  const wrap = existsSync(GNU_TIME)
  try {
    for (let round = 0; round < warmups + rounds; round++) {
      // Rotate the order so no case always runs right after another particular one.
      const order = cases.map((_, i) => cases[(i + round) % cases.length])
      for (const c of order) {
        const argv = wrap ? [GNU_TIME, '-f', '%M %U %S', '-o', rssFile, ...c.argv] : c.argv
        const started = performance.now()
        const result = spawnSync(argv[0], argv.slice(1), {env: {...process.env, ...c.env}, stdio: ['ignore', 'ignore', 'pipe']})
        const elapsed = performance.now() - started
        if (result.error) throw result.error
        if (c.expectExit && !c.expectExit.includes(result.status ?? -1)) {
          throw new Error(`${c.label}: exit ${result.status}, expected ${c.expectExit.join(' or ')}: ${result.stderr.toString().trim()}`)
        }

        const [rssKb, user, system] = wrap ? readFileSync(rssFile, 'utf8').trim().split('\n').at(-1)!.split(' ').map(Number) : [Number.NaN, Number.NaN, Number.NaN]
        if (round >= warmups) samples.get(c.label)!.push({ms: elapsed, maxRssMb: rssKb / 1024, cpuMs: (user + system) * 1000})
      }
    }
  } finally {
    rmSync(dir, {recursive: true, force: true})
  }

  return samples
}

/** Median wall time and median peak memory of a case's samples. */
export function medians(samples: Sample[]): Sample {
  return {ms: median(samples.map((s) => s.ms)), maxRssMb: median(samples.map((s) => s.maxRssMb)), cpuMs: median(samples.map((s) => s.cpuMs))}
}

/** A figure against its baseline, with a verdict when it has a target ratio. */
export function compare(label: string, width: number, measured: Sample, base: Sample, targets: {ms?: number; memory?: number} = {}): {line: string; met: boolean} {
  const ms = measured.ms / base.ms
  const memory = measured.maxRssMb / base.maxRssMb
  let met = true
  const verdict = (ratio: number, target: number | undefined) => {
    if (target === undefined) return ''
    met &&= ratio <= target
    return ` (<= ${target}x ${ratio <= target ? 'met' : 'MISSED'})`
  }

  const time = `${measured.ms.toFixed(0).padStart(5)} ms ${ms.toFixed(2)}x${verdict(ms, targets.ms)}`
  const rss = Number.isNaN(memory) ? '' : `  ${measured.maxRssMb.toFixed(0).padStart(4)} MB ${memory.toFixed(2)}x${verdict(memory, targets.memory)}`
  const cpu = Number.isNaN(measured.cpuMs) ? '' : `  cpu ${measured.cpuMs.toFixed(0)} ms ${(measured.cpuMs / base.cpuMs).toFixed(2)}x`
  return {line: `${label.padEnd(width)}  ${time}${rss}${cpu}`, met}
}

/** A baseline's own figure line. */
export function baseline(label: string, width: number, sample: Sample): string {
  const rss = Number.isNaN(sample.maxRssMb) ? '' : `  ${sample.maxRssMb.toFixed(0).padStart(4)} MB  (baseline)`
  const cpu = Number.isNaN(sample.cpuMs) ? '' : `  cpu ${sample.cpuMs.toFixed(0)} ms`
  return `${label.padEnd(width)}  ${sample.ms.toFixed(0).padStart(5)} ms  (baseline)${rss}${cpu}`
}
