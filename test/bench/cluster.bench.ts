import {execFileSync} from 'node:child_process'
import {existsSync} from 'node:fs'
import {dirname, join} from 'node:path'

import {startTestCluster} from '../e2e/cluster/harness.js'
import {repoRoot} from '../helpers/build.js'
import {Benchmark, Case, baseline, compare, medians, timeProcesses} from './lib.js'

const ROUNDS = 9
const run = join(repoRoot, 'bin', 'run.js')
const node = process.execPath
/** Issue 16's targets: at most 3x the kubectl command doing the nearest job, and 2x its peak memory. */
const TARGETS = {ms: 3, memory: 2}

/**
 * Commands that talk to a cluster, each against the kubectl command nearest to its job, on the
 * same sandbox in the same run. SELFHOST_BENCH_KUBECONFIG (with SELFHOST_BENCH_KUBECTL, default
 * the kubectl next to the sandbox's binaries) points it at a running sandbox; otherwise it
 * starts one for the run and stops it afterwards.
 */
const cluster: Benchmark = {
  name: `cluster commands against kubectl on the sandbox (median of ${ROUNDS} interleaved runs each; wall time, peak memory, CPU time)`,
  async run() {
    let kubeconfig = process.env.SELFHOST_BENCH_KUBECONFIG
    let kubectl = process.env.SELFHOST_BENCH_KUBECTL
    let stop = async () => {}
    if (!kubeconfig) {
      const sandbox = await startTestCluster({controlPlaneNodes: 3, workers: 1, buildProgress: 'quiet'})
      kubeconfig = sandbox.kubeconfig
      kubectl ??= join(sandbox.binDir, 'kubectl')
      stop = () => sandbox.stop()
    }

    kubectl ??= join(dirname(kubeconfig), 'kubectl')
    if (!existsSync(kubectl)) kubectl = 'kubectl'
    try {
      const env = {KUBECONFIG: kubeconfig}
      const apiserverPod = execFileSync(kubectl, ['get', 'pods', '-n', 'kube-system', '-l', 'component=kube-apiserver', '-o', 'jsonpath={.items[0].metadata.name}'], {env: {...process.env, ...env}, encoding: 'utf8'})
      const pairs: Array<{kubectl: Case; ours: Case}> = [
        {
          kubectl: {label: 'kubectl get pods -n kube-system -o wide', argv: [kubectl, 'get', 'pods', '-n', 'kube-system', '-o', 'wide'], env, expectExit: [0]},
          ours: {label: 'kubectl-selfhost status', argv: [node, run, 'status'], env, expectExit: [0, 2]},
        },
        {
          kubectl: {label: `kubectl logs -n kube-system ${apiserverPod} --tail 1`, argv: [kubectl, 'logs', '-n', 'kube-system', apiserverPod, '--tail', '1'], env, expectExit: [0]},
          ours: {label: 'kubectl-selfhost logs kube-apiserver --tail 1', argv: [node, run, 'logs', 'kube-apiserver', '--tail', '1'], env, expectExit: [0]},
        },
      ]
      const cases = pairs.flatMap((p) => [p.kubectl, p.ours])
      const samples = timeProcesses(cases, ROUNDS)
      const width = Math.max(...cases.map((c) => c.label.length))
      let metTargets = true
      const lines: string[] = []
      for (const pair of pairs) {
        const base = medians(samples.get(pair.kubectl.label)!)
        const {line, met} = compare(pair.ours.label, width, medians(samples.get(pair.ours.label)!), base, TARGETS)
        metTargets &&= met
        lines.push(baseline(pair.kubectl.label, width, base), line)
      }

      return {lines, metTargets}
    } finally {
      await stop()
    }
  },
}

export default cluster
