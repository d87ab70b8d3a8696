import {join} from 'node:path'

import {repoRoot} from '../helpers/build.js'
import {Benchmark, Case, baseline, compare, medians, timeProcesses} from './lib.js'

const ROUNDS = 15
const run = join(repoRoot, 'bin', 'run.js')
const node = process.execPath
const dump = join(repoRoot, 'test', 'fixtures', 'kube-proxy', 'captured-kube-proxy-v1.37.2-iptables.txt')

/**
 * Cold start of the CLI against bare node, for what needs no cluster: help (answered without
 * oclif) and trace --from-file (through oclif, like every command). Target: 2x `node -e 0`.
 */
const startup: Benchmark = {
  name: `cold start without a cluster (median of ${ROUNDS} interleaved runs each; wall time, peak memory, CPU time)`,
  async run() {
    const base: Case = {label: 'node -e 0', argv: [node, '-e', '0']}
    const cases: Array<Case & {target?: number}> = [
      {label: 'kubectl-selfhost --help', argv: [node, run, '--help'], target: 2},
      {label: 'kubectl-selfhost status --help', argv: [node, run, 'status', '--help'], target: 2},
      {label: 'kubectl-selfhost trace --from-file (121-line dump)', argv: [node, run, 'trace', '--from-file', dump, 'svc/default/kubernetes'], expectExit: [0], target: 2},
      // For reference, no target: a cluster command through oclif that fails at once on the kubeconfig.
      {label: 'kubectl-selfhost status (no kubeconfig)', argv: [node, run, 'status'], env: {KUBECONFIG: '/nonexistent'}},
    ]
    const samples = timeProcesses([base, ...cases], ROUNDS)
    const width = Math.max(...[base, ...cases].map((c) => c.label.length))
    const floor = medians(samples.get(base.label)!)
    let metTargets = true
    const lines = [baseline(base.label, width, floor)]
    for (const c of cases) {
      const {line, met} = compare(c.label, width, medians(samples.get(c.label)!), floor, {ms: c.target})
      metTargets &&= met
      lines.push(c.target === undefined ? `${line}  (reference)` : line)
    }

    return {lines, metTargets}
  },
}

export default startup
