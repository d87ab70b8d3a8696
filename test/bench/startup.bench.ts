import {spawnSync} from 'node:child_process'
import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {performance} from 'node:perf_hooks'

import {repoRoot} from '../helpers/build.js'
import {Benchmark, Case, LEGEND, baseline, compare, loadAverage, rounds, singleExecutable, timeProcesses} from './lib.js'

const ROUNDS = rounds(21)
const run = join(repoRoot, 'bin', 'run.js')
const node = process.execPath
const dump = join(repoRoot, 'test', 'fixtures', 'kube-proxy', 'captured-kube-proxy-v1.37.2-iptables.txt')

/**
 * Cold start without a cluster against bare node, for the npm install (node bin/run.js) and the
 * single executable (`npm run package`, what krew installs): help (answered without oclif) and
 * trace --from-file (through oclif, like every command). Target: 2x `node -e 0`. The executable's
 * first start unpacks the CLI into its cache directory; that one-off cost is reported apart.
 */
const startup: Benchmark = {
  name: `cold start without a cluster (median of ${ROUNDS} interleaved rounds; wall time, peak memory, CPU time)`,
  async run() {
    const exe = await singleExecutable()
    const cache = mkdtempSync(join(tmpdir(), 'selfhost-bench-sea-'))
    try {
      const exeEnv = {KUBECTL_SELFHOST_CACHE_DIR: cache}
      let firstStart = Number.NaN
      if (exe) {
        const started = performance.now()
        spawnSync(exe, ['--help'], {env: {...process.env, ...exeEnv}, stdio: 'ignore'})
        firstStart = performance.now() - started
      }

      const base: Case = {label: 'node -e 0', argv: [node, '-e', '0']}
      const trace = ['trace', '--from-file', dump, 'svc/default/kubernetes']
      const forms: Array<{suffix: string; argv: string[]; env: NodeJS.ProcessEnv}> = [
        {suffix: '', argv: [node, run], env: {}},
        ...(exe ? [{suffix: ' (single executable)', argv: [exe], env: exeEnv}] : []),
      ]
      const cases: Array<Case & {target?: number}> = forms.flatMap(({suffix, argv, env}) => [
        {label: `kubectl-selfhost --help${suffix}`, argv: [...argv, '--help'], env, target: 2},
        {label: `kubectl-selfhost status --help${suffix}`, argv: [...argv, 'status', '--help'], env, target: 2},
        {label: `kubectl-selfhost trace --from-file (121-line dump)${suffix}`, argv: [...argv, ...trace], env, expectExit: [0], target: 2},
        // For reference, no target: a cluster command through oclif that fails at once on the kubeconfig.
        {label: `kubectl-selfhost status (no kubeconfig)${suffix}`, argv: [...argv, 'status'], env: {...env, KUBECONFIG: '/nonexistent'}},
      ])
      const loadBefore = loadAverage()
      const samples = timeProcesses([base, ...cases], ROUNDS)
      const width = Math.max(...[base, ...cases].map((c) => c.label.length))
      const floor = samples.get(base.label)!
      let metTargets = exe !== undefined
      const lines = [baseline(base.label, width, floor)]
      for (const c of cases) {
        const {line, met} = compare(c.label, width, samples.get(c.label)!, floor, {ms: c.target})
        metTargets &&= met
        lines.push(c.target === undefined ? `${line}  (reference)` : line)
      }

      lines.push(
        exe
          ? `single executable's first start (unpacks into its cache directory, once per version): ${firstStart.toFixed(0)} ms`
          : 'single executable: npm run package failed (see above), not measured',
        `load average (1 min) ${loadBefore} before, ${loadAverage()} after`,
        LEGEND,
      )
      return {lines, metTargets}
    } finally {
      rmSync(cache, {recursive: true, force: true})
    }
  },
}

export default startup
