import {join} from 'node:path'

import {repoRoot} from '../helpers/build.js'
import {Benchmark, median, timeProcesses} from './lib.js'

const TARGET_RATIO = 2
const ROUNDS = 15
const run = join(repoRoot, 'bin', 'run.js')
const node = process.execPath

/** Cold start of the CLI against bare node: the target is both help calls within 2x. */
const startup: Benchmark = {
  name: `cold start (median of ${ROUNDS} interleaved runs each)`,
  async run() {
    const cases = [
      {label: 'node -e 0', argv: [node, '-e', '0']},
      {label: 'kubectl-selfhost --help', argv: [node, run, '--help'], target: true},
      {label: 'kubectl-selfhost status --help', argv: [node, run, 'status', '--help'], target: true},
      // For reference, no target: a real command loads oclif, then fails at once on the kubeconfig.
      {label: 'kubectl-selfhost status (oclif path, no kubeconfig)', argv: [node, run, 'status'], env: {KUBECONFIG: '/nonexistent'}},
    ]
    const times = timeProcesses(cases, ROUNDS)
    const base = median(times.get('node -e 0')!)
    let metTargets = true
    const width = Math.max(...cases.map((c) => c.label.length))
    const lines = cases.map((c) => {
      const ms = median(times.get(c.label)!)
      const ratio = ms / base
      const figure = `${c.label.padEnd(width)}  ${ms.toFixed(0).padStart(5)} ms`
      if (c.label === 'node -e 0') return figure
      if (!('target' in c)) return `${figure}  ${ratio.toFixed(2)}x  (reference)`
      const ok = ratio <= TARGET_RATIO
      metTargets &&= ok
      return `${figure}  ${ratio.toFixed(2)}x  target <= ${TARGET_RATIO}x: ${ok ? 'met' : 'MISSED'}`
    })
    return {lines, metTargets}
  },
}

export default startup
