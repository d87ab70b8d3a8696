import {spawnSync} from 'node:child_process'
import {existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {loadavg, tmpdir} from 'node:os'
import {join} from 'node:path'
import {performance} from 'node:perf_hooks'

import {repoRoot} from '../helpers/build.js'

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

/** The value below which a fraction q of the values lie (linear between neighbours); q 0.5 is the median. */
export function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b)
  const at = (sorted.length - 1) * q
  const below = Math.floor(at)
  return below + 1 < sorted.length ? sorted[below] + (sorted[below + 1] - sorted[below]) * (at - below) : sorted[below]
}

export const median = (values: number[]): number => quantile(values, 0.5)

/**
 * Rounds for a benchmark: its default, or SELFHOST_BENCH_ROUNDS (more rounds, steadier medians
 * on a busy machine).
 */
export function rounds(fallback: number): number {
  const wanted = Number(process.env.SELFHOST_BENCH_ROUNDS)
  return Number.isInteger(wanted) && wanted > 0 ? wanted : fallback
}

/** The machine's 1-minute load average, printed beside the figures: they mean little without it. */
export const loadAverage = (): string => loadavg()[0].toFixed(1)

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

        const [rssKb, user, system] = wrap
          ? readFileSync(rssFile, 'utf8').trim().split('\n').at(-1)!.split(' ').map(Number)
          : [Number.NaN, Number.NaN, Number.NaN]
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

/**
 * The ratio of a case to its baseline, round by round: each round runs both within about a second,
 * so a burst of load from elsewhere hits both and mostly cancels out, where the ratio of two
 * medians can pair a quiet run of one with a loaded run of the other. Median and interquartile
 * range of those per-round ratios.
 */
export function pairedRatio(measured: Sample[], base: Sample[], value: (s: Sample) => number = (s) => s.ms): {median: number; low: number; high: number} {
  const ratios = measured.map((s, i) => value(s) / value(base[i]))
  return {median: median(ratios), low: quantile(ratios, 0.25), high: quantile(ratios, 0.75)}
}

/**
 * A figure against its baseline, with a verdict when it has a target ratio. The verdict is on the
 * median of the per-round ratios (pairedRatio), printed with their interquartile range.
 */
export function compare(
  label: string,
  width: number,
  measured: Sample[],
  base: Sample[],
  targets: {ms?: number; memory?: number} = {},
): {line: string; met: boolean} {
  const m = medians(measured)
  const b = medians(base)
  const ms = pairedRatio(measured, base)
  const memory = m.maxRssMb / b.maxRssMb
  let met = true
  const verdict = (ratio: number, target: number | undefined) => {
    if (target === undefined) return ''
    met &&= ratio <= target
    return ` (<= ${target}x ${ratio <= target ? 'met' : 'MISSED'})`
  }

  const time = `${m.ms.toFixed(0).padStart(5)} ms ${ms.median.toFixed(2)}x [${ms.low.toFixed(2)}-${ms.high.toFixed(2)}]${verdict(ms.median, targets.ms)}`
  const rss = Number.isNaN(memory) ? '' : `  ${m.maxRssMb.toFixed(0).padStart(4)} MB ${memory.toFixed(2)}x${verdict(memory, targets.memory)}`
  const cpu = Number.isNaN(m.cpuMs) ? '' : `  cpu ${m.cpuMs.toFixed(0)} ms ${pairedRatio(measured, base, (s) => s.cpuMs).median.toFixed(2)}x`
  return {line: `${label.padEnd(width)}  ${time}${rss}${cpu}`, met}
}

/** A baseline's own figure line: median wall time, and the spread (interquartile range) of its runs. */
export function baseline(label: string, width: number, samples: Sample[]): string {
  const sample = medians(samples)
  const ms = samples.map((s) => s.ms)
  const rss = Number.isNaN(sample.maxRssMb) ? '' : `  ${sample.maxRssMb.toFixed(0).padStart(4)} MB`
  const cpu = Number.isNaN(sample.cpuMs) ? '' : `  cpu ${sample.cpuMs.toFixed(0)} ms`
  return `${label.padEnd(width)}  ${sample.ms.toFixed(0).padStart(5)} ms (baseline; runs ${quantile(ms, 0.25).toFixed(0)}-${quantile(ms, 0.75).toFixed(0)} ms)${rss}${cpu}`
}

/** How to read compare()'s lines; printed once under each table. */
export const LEGEND =
  'ms: median wall time; Nx [a-b]: median and interquartile range of the per-round ratios to the baseline (the verdict is on the median); MB: median peak RSS and its ratio; cpu: median user+system time and its per-round ratio'

const SEA_ARCH = {x64: 'amd64', arm64: 'arm64'}[process.arch as string]
/** Where `npm run package` leaves this machine's single executable. */
export const SINGLE_EXECUTABLE = join(repoRoot, 'release', `linux-${SEA_ARCH}`, 'kubectl-selfhost')
let packaged: Promise<string | undefined> | undefined

/**
 * The single executable (`npm run package`, what krew installs) of the build `npm run bench`
 * has just made, packaged once per bench run (about a minute) for every benchmark that times
 * it; undefined when packaging fails (its output went to stderr).
 */
export function singleExecutable(): Promise<string | undefined> {
  packaged ??= new Promise((resolve) => {
    // Packaging also rewrites the committed krew manifest (new sha256s): a benchmark leaves the checkout as it was.
    const krew = join(repoRoot, 'manifests', 'krew', 'selfhost.yaml')
    const committed = existsSync(krew) ? readFileSync(krew) : undefined
    try {
      const result = spawnSync(process.execPath, [join(repoRoot, 'bin', 'package.mjs')], {cwd: repoRoot, stdio: ['ignore', 'ignore', 'inherit']})
      resolve(result.status === 0 && existsSync(SINGLE_EXECUTABLE) ? SINGLE_EXECUTABLE : undefined)
    } finally {
      if (committed) writeFileSync(krew, committed)
    }
  })
  return packaged
}
