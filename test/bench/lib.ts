import {spawnSync} from 'node:child_process'
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
}

export const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

/**
 * Wall time of each command as a fresh process, in ms. Cases run interleaved, round after
 * round, so load from elsewhere on the machine hits all of them alike; warm-up rounds fill the
 * OS file cache first.
 */
export function timeProcesses(cases: Case[], rounds: number, warmups = 2): Map<string, number[]> {
  const times = new Map<string, number[]>(cases.map((c) => [c.label, []]))
  for (let round = 0; round < warmups + rounds; round++) {
    // Rotate the order so no case always runs right after another particular one.
    const order = cases.map((_, i) => cases[(i + round) % cases.length])
    for (const c of order) {
      const started = performance.now()
      const result = spawnSync(c.argv[0], c.argv.slice(1), {env: {...process.env, ...c.env}, stdio: ['ignore', 'ignore', 'pipe']})
      const elapsed = performance.now() - started
      if (result.error) throw result.error
      if (round >= warmups) times.get(c.label)!.push(elapsed)
    }
  }

  return times
}
