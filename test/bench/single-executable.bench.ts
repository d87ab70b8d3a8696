import {spawnSync} from 'node:child_process'
import {existsSync, mkdtempSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {performance} from 'node:perf_hooks'

import {repoRoot} from '../helpers/build.js'
import {Benchmark, median, timeProcesses} from './lib.js'

const TARGET_RATIO = 2
const ROUNDS = 15
const arch = {x64: 'amd64', arm64: 'arm64'}[process.arch as string]
const exe = join(repoRoot, 'release', `linux-${arch}`, 'kubectl-selfhost')

/**
 * Start-up of the single executable (`npm run package`, what krew installs) against bare node:
 * the same 2x target as the npm install. Its first start unpacks the CLI into its cache
 * directory; that one-off cost is reported apart.
 */
const singleExecutable: Benchmark = {
  name: `single executable cold start (median of ${ROUNDS} interleaved runs each)`,
  async run() {
    // npm run bench has just built dist/: package that build (about a minute).
    const packaged = spawnSync(process.execPath, [join(repoRoot, 'bin', 'package.mjs')], {cwd: repoRoot, stdio: ['ignore', 'ignore', 'inherit']})
    if (packaged.status !== 0 || !existsSync(exe)) return {lines: [`npm run package failed (exit ${packaged.status})`], metTargets: false}

    const cache = mkdtempSync(join(tmpdir(), 'selfhost-bench-sea-'))
    const env = {KUBECTL_SELFHOST_CACHE_DIR: cache}
    const started = performance.now()
    spawnSync(exe, ['--help'], {env: {...process.env, ...env}, stdio: 'ignore'})
    const firstStart = performance.now() - started

    const cases = [
      {label: 'node -e 0', argv: [process.execPath, '-e', '0']},
      {label: 'kubectl-selfhost --help (executable)', argv: [exe, '--help'], env, target: true},
      {label: 'kubectl-selfhost status --help (executable)', argv: [exe, 'status', '--help'], env, target: true},
      {label: 'kubectl-selfhost status (executable, oclif path, no kubeconfig)', argv: [exe, 'status'], env: {...env, KUBECONFIG: '/nonexistent'}},
    ]
    const times = timeProcesses(cases, ROUNDS)
    const base = median(times.get('node -e 0')!.map((s) => s.ms))
    let metTargets = true
    const width = Math.max(...cases.map((c) => c.label.length))
    const lines = cases.map((c) => {
      const ms = median(times.get(c.label)!.map((s) => s.ms))
      const figure = `${c.label.padEnd(width)}  ${ms.toFixed(0).padStart(5)} ms`
      if (c.label === 'node -e 0') return figure
      const ratio = ms / base
      if (!('target' in c)) return `${figure}  ${ratio.toFixed(2)}x  (reference)`
      const ok = ratio <= TARGET_RATIO
      metTargets &&= ok
      return `${figure}  ${ratio.toFixed(2)}x  target <= ${TARGET_RATIO}x: ${ok ? 'met' : 'MISSED'}`
    })
    lines.push(`first start (unpacks into its cache directory, once per version): ${firstStart.toFixed(0)} ms`)
    return {lines, metTargets}
  },
}

export default singleExecutable
